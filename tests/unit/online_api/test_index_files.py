"""The host's shared item index files: built once, mapped by every process, removed when nobody serves them.

flock locks belong to an open file, so two :class:`SharedIndexes` in one process contend exactly as two API
processes do; the last test runs the second one in a process of its own.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from models.ann import AnnParams, ItemIndexes
from online_api.index_build import IndexBuilder
from online_api.index_files import SharedIndexes
from streamrec.settings import Settings

DOT = AnnParams(factory="IVF16,Flat", search="nprobe=4", min_fetch=50, mips=True)
COS = AnnParams(factory="IVF8,Flat", search="nprobe=2", min_fetch=50)
PARAMS = (DOT, COS)


def _factors(seed: int = 0, n: int = 3_000) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)


class CountingBuild:
    """ItemIndexes.build, counting its calls (optionally slow, so a second process finds the build going on)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls, self.delay_s = 0, delay_s

    def __call__(self, factors: np.ndarray, dot: AnnParams, cosine: AnnParams) -> ItemIndexes:
        self.calls += 1
        time.sleep(self.delay_s)
        return ItemIndexes.build(factors, dot, cosine)


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_the_second_process_maps_what_the_first_built_and_answers_the_same(tmp_path: Path) -> None:
    y = _factors()
    build = CountingBuild()
    a, b = SharedIndexes(tmp_path, "shop"), SharedIndexes(tmp_path, "shop")
    first = a.get_or_build("v1", y, PARAMS, build)
    second = b.get_or_build("v1", y, PARAMS, build)
    assert build.calls == 1
    own = ItemIndexes.build(y, *PARAMS)  # the same build, never written anywhere
    for q in np.random.default_rng(1).standard_normal((20, 16)).astype(np.float32):
        expected = set(own.dot.search(q, 60).tolist())
        assert set(first.dot.search(q, 60).tolist()) == expected
        assert set(second.dot.search(q, 60).tolist()) == expected
        assert set(second.cosine.search(q / np.linalg.norm(q), 60).tolist()) == set(
            own.cosine.search(q / np.linalg.norm(q), 60).tolist())
    assert second.n_indexed == len(y)


def test_a_process_arriving_during_the_build_waits_for_it_instead_of_building_again(tmp_path: Path) -> None:
    y = _factors()
    build = CountingBuild(delay_s=0.5)
    got: list[ItemIndexes] = []
    builder = threading.Thread(target=lambda: got.append(SharedIndexes(tmp_path, "shop").get_or_build(
        "v1", y, PARAMS, build)))
    builder.start()
    time.sleep(0.1)  # inside the slow build, holding the version's lock
    late = SharedIndexes(tmp_path, "shop").get_or_build("v1", y, PARAMS, build)
    builder.join()
    assert build.calls == 1 and late.n_indexed == got[0].n_indexed == len(y)


def test_files_stay_while_a_process_serves_them_and_go_with_the_last_one(tmp_path: Path) -> None:
    y = _factors()
    a, b = SharedIndexes(tmp_path, "shop"), SharedIndexes(tmp_path, "shop")
    a.get_or_build("v1", y, PARAMS, CountingBuild())
    b.get_or_build("v1", y, PARAMS, CountingBuild())
    a.close()
    assert any(n.endswith(".dot.faiss") for n in _files(tmp_path))  # b still serves v1
    b.close()
    assert _files(tmp_path) == []


def test_a_new_version_releases_the_old_ones_files(tmp_path: Path) -> None:
    a = SharedIndexes(tmp_path, "shop")
    old = a.get_or_build("v1", _factors(0), PARAMS, CountingBuild())
    a.get_or_build("v2", _factors(1), PARAMS, CountingBuild())
    names = _files(tmp_path)
    assert names and all(".v2." in n for n in names)
    assert len(old.dot.search(_factors(2, 1)[0], 10)) == 10  # a mapping outlives its removed file


def test_what_a_killed_process_left_is_swept(tmp_path: Path) -> None:
    dead = SharedIndexes(tmp_path, "shop")
    dead.get_or_build("v1", _factors(), PARAMS, CountingBuild())
    for lock in dead._held.values():  # what the kernel does to a killed process's locks
        lock.close()
    other = SharedIndexes(tmp_path, "another-deployment")  # a sweep of any prefix removes it
    assert len(other.sweep()) == 1 and _files(tmp_path) == []


def test_a_lock_file_swept_between_open_and_lock_is_not_the_one_held(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from online_api import index_files

    real, swept = index_files._lock, []

    def lock_after_a_sweep(lock, mode, wait_s=index_files.LOCK_WAIT_S):  # type: ignore[no-untyped-def]
        if not swept:  # another process's sweep removes the file this one just opened
            swept.append(Path(lock.name))
            Path(lock.name).unlink()
        return real(lock, mode, wait_s)

    monkeypatch.setattr(index_files, "_lock", lock_after_a_sweep)
    a = SharedIndexes(tmp_path, "shop")
    a.get_or_build("v1", _factors(), PARAMS, CountingBuild())
    (held,) = a._held.values()
    assert swept and os.fstat(held.fileno()).st_ino == os.stat(swept[0]).st_ino  # the lock on the file in place


def test_other_settings_other_factors_and_other_prefixes_never_share_a_file(tmp_path: Path) -> None:
    y = _factors()
    build = CountingBuild()
    a = SharedIndexes(tmp_path, "shop")
    a.get_or_build("v1", y, PARAMS, build)
    SharedIndexes(tmp_path, "shop").get_or_build("v1", y, (DOT, AnnParams(factory="IVF4,Flat")), build)
    SharedIndexes(tmp_path, "shop").get_or_build("v1", _factors(5), PARAMS, build)
    SharedIndexes(tmp_path, "other-shop").get_or_build("v1", y, PARAMS, build)
    assert build.calls == 4


def test_the_builder_serves_its_own_index_when_the_directory_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings = Settings(api_index_dir=str(blocker / "indexes"), api_ann_min_items=100,
                        api_ann_index="IVF16,Flat", api_ann_similar_index="IVF8,Flat")
    builder = IndexBuilder(settings)
    assert builder.shared is None  # its parent is no directory: not shared, nothing to fail later
    y = _factors()
    assert builder.index_for("v1", y) == (None, False)
    deadline = time.monotonic() + 30
    while (got := builder.index_for("v1", y))[0] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got[0] is not None and got[0].n_indexed == len(y)


def _map_in_child(directory: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    build = CountingBuild()
    got = SharedIndexes(directory, "shop").get_or_build("v1", _factors(), PARAMS, build)
    out.put((build.calls, got.n_indexed))


@pytest.mark.timeout(120)
def test_another_process_maps_the_files(tmp_path: Path) -> None:
    a = SharedIndexes(tmp_path, "shop")
    a.get_or_build("v1", _factors(), PARAMS, CountingBuild())
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_map_in_child, args=(str(tmp_path), out))
    child.start()
    calls, n = out.get(timeout=100)
    child.join(timeout=20)
    assert (calls, n) == (0, 3_000)
    assert any(n.endswith(".dot.faiss") for n in _files(tmp_path))  # the child is gone, a still serves


def test_the_factors_are_shared_too_and_folded_in_rows_stay_the_processs_own(tmp_path: Path) -> None:
    from online_api.cache import build_model

    y = _factors()
    a, b = SharedIndexes(tmp_path, "shop"), SharedIndexes(tmp_path, "shop")
    ann = a.get_or_build("v1", y, PARAMS, CountingBuild())
    b.get_or_build("v1", y, PARAMS, CountingBuild())
    base_a, base_b = a.factors_for("v1"), b.factors_for("v1")
    assert base_a is not None and base_b is not None and a.factors_for("v2") is None
    file_before = base_a.path.read_bytes()
    new = {b"new-1": np.full(16, 0.5, dtype="<f4").tobytes(), b"new-2": np.full(16, -2.0, dtype="<f4").tobytes()}
    ids = [f"i{j}" for j in range(len(y))]
    shared = build_model("v1", {}, ids, y, y.T @ y, new, ann, base=base_a)
    own = build_model("v1", {}, ids, y, y.T @ y, new, ann)
    assert shared.base is base_a and own.base is None
    np.testing.assert_array_equal(shared.factors, own.factors)  # the same rows, new items appended alike
    np.testing.assert_array_equal(shared.factors_t, own.factors_t)
    np.testing.assert_array_equal(shared.norms, own.norms)
    assert not shared.factors.flags.writeable
    assert base_a.path.read_bytes() == file_before  # the folded-in rows went to this process's pages only
    np.testing.assert_array_equal(base_b.matrix([]), y)  # and another process maps the refit's rows alone
    assert base_a.matrix([np.zeros(16, dtype=np.float32)] * (base_a.capacity + 1)) is None  # beyond its room
    assert build_model("v1", {}, ids, y, y.T @ y, new, None, base=base_a).base is None  # the exact scan's own


def test_a_model_whose_factors_file_went_keeps_its_own_copy(tmp_path: Path) -> None:
    from online_api.cache import build_model

    y = _factors()
    a = SharedIndexes(tmp_path, "shop")
    ann = a.get_or_build("v1", y, PARAMS, CountingBuild())
    base = a.factors_for("v1")
    assert base is not None
    base.path.unlink()
    model = build_model("v1", {}, [f"i{j}" for j in range(len(y))], y, y.T @ y, {}, ann, base=base)
    assert model.base is None
    np.testing.assert_array_equal(model.factors, y)
