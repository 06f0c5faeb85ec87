"""Every module of the project imports on its own, in a fresh interpreter.

An import cycle hides as long as something else happened to import the modules in a lucky order first
(`python -c "import online_api.cli"` once failed with "cannot import name 'register' from partially
initialized module"); a fresh subprocess per module shows it. import-linter (`make lint`) keeps the layers.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from streamrec.settings import REPO_ROOT

PACKAGES = ("models", "streamrec", "batch", "stream_processors", "online_api", "ops")


def modules() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def import_alone(module: str) -> tuple[str, int, str]:
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    return module, proc.returncode, proc.stderr[-2000:]


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    mods = modules()
    assert len(mods) > 80 and "ops.cli" in mods and "models" in mods
    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = [(m, err) for m, rc, err in pool.map(import_alone, mods) if rc != 0]
    assert not failed, "\n\n".join(f"import {m} failed:\n{err}" for m, err in failed)
