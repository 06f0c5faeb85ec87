"""What applying one batch did: :class:`BatchResult`, the worker's per-batch figures."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class BatchResult:
    """What one call of :meth:`BatchProcessor.process` did."""

    records: int = 0
    applied: int = 0
    redelivered: int = 0
    duplicates: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    users: int = 0
    vectors: int = 0
    new_items: int = 0
    version: str | None = None
    attempts: int = 0
    foldin_s: float = 0.0
    foldin_cpu_s: float = 0.0  # the fold-in's CPU time (this thread's), the solver's cost per batch
    batch_s: float = 0.0
    write_ms: int = 0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step of the successful attempt
    freshness_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def merge(self, part: BatchResult) -> None:
        """Add the figures of ``part`` (a sub-batch applied on its own) to this result."""
        for name in ("applied", "redelivered", "duplicates", "users", "vectors", "new_items", "attempts"):
            setattr(self, name, getattr(self, name) + getattr(part, name))
        for reason, n in part.dead_letters.items():
            self.dead_letters[reason] = self.dead_letters.get(reason, 0) + n
        for phase, seconds in part.phases.items():
            self.phases[phase] = self.phases.get(phase, 0.0) + seconds
        self.version = part.version or self.version
        self.foldin_s += part.foldin_s
        self.foldin_cpu_s += part.foldin_cpu_s
        self.write_ms = max(self.write_ms, part.write_ms)
        self.freshness_ms = np.concatenate([self.freshness_ms, part.freshness_ms])

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (freshness as p50/p99/max)."""
        f = self.freshness_ms
        q = np.percentile(f, [50, 99]).tolist() if len(f) else [None, None]
        return {"records": self.records, "applied": self.applied, "redelivered": self.redelivered,
                "duplicates": self.duplicates, "dead_letters": self.dead_letters, "users": self.users,
                "vectors": self.vectors, "new_items": self.new_items, "version": self.version,
                "attempts": self.attempts, "foldin_s": round(self.foldin_s, 6),
                "foldin_cpu_s": round(self.foldin_cpu_s, 6), "batch_s": round(self.batch_s, 6),
                "write_ms": self.write_ms, "phases": {k: round(v, 6) for k, v in self.phases.items()},
                "freshness_p50_ms": q[0], "freshness_p99_ms": q[1],
                "freshness_max_ms": int(f.max()) if len(f) else None}
