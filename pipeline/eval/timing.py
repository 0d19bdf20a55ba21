"""Per-stage timing that users can trust: wall time, pairs/s and per-query latency, saved as JSON.

Times are taken with ``time.perf_counter`` around the real work; on CUDA the device is synchronised
before reading the clock (``sync``), so queued kernels are never mistaken for finished ones.

Per-query latency: stages that score queries in chunks (the reranker) charge each query its share of the
chunk's time, in proportion to its pairs (``amortised``); with one query per chunk it is the query's own
latency. Stages that only report a total (BM25 ``batch_search``) charge every query the mean.
"""
from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.runs import Run
from ..runtime.atomic import atomic_write


def sync(device: torch.device | str | None) -> None:
    """Wait for queued CUDA work on ``device`` (a no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StageTiming:
    """What one stage cost: wall seconds, queries, pairs and per-query latencies (seconds)."""

    stage: str
    wall_s: float
    queries: int
    pairs: int
    latencies_s: list[float] = field(default_factory=list, repr=False)
    latency: str = "amortised"
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def queries_per_s(self) -> float:
        return self.queries / self.wall_s if self.wall_s > 0 else 0.0

    def latency_ms(self, percentile: float) -> float:
        """The ``percentile`` of per-query latency in milliseconds (0 without queries)."""
        if not self.latencies_s:
            return 0.0
        return float(np.percentile(np.asarray(self.latencies_s), percentile) * 1000.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "device": self.device,
            "wall_s": round(self.wall_s, 6),
            "queries": self.queries,
            "pairs": self.pairs,
            "pairs_per_s": round(self.pairs_per_s, 3),
            "queries_per_s": round(self.queries_per_s, 3),
            "latency_p50_ms": round(self.latency_ms(50), 3),
            "latency_p95_ms": round(self.latency_ms(95), 3),
            "latency": self.latency,
            **self.extra,
        }

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (f"{self.stage}: {self.queries} queries, {self.pairs} pairs in {self.wall_s:.2f}s "
                f"({self.pairs_per_s:,.0f} pairs/s; per query p50 {self.latency_ms(50):.1f} ms, "
                f"p95 {self.latency_ms(95):.1f} ms) on {self.device}")


def combine_ranks(timings: Sequence[StageTiming], summed: Iterable[str] = ()) -> StageTiming:
    """One stage's timing over the ranks of a distributed run (``timings`` in rank order): the slowest rank's
    wall time, every rank's queries, pairs and latencies, the ``summed`` extras added up, the other extras as
    rank 0 has them, plus ``world_size`` and ``ranks`` (each rank's queries, pairs, seconds and pairs/s)."""
    first, summed = timings[0], tuple(summed)
    ranks = [{"rank": r, "queries": t.queries, "pairs": t.pairs, "wall_s": round(t.wall_s, 6),
              "pairs_per_s": round(t.pairs_per_s, 3), **{k: t.extra.get(k, 0) for k in summed}}
             for r, t in enumerate(timings)]
    extra = {**first.extra, **{k: sum(t.extra.get(k, 0) for t in timings) for k in summed},
             "world_size": len(timings), "ranks": ranks}
    return StageTiming(first.stage, max(t.wall_s for t in timings), sum(t.queries for t in timings),
                       sum(t.pairs for t in timings), [x for t in timings for x in t.latencies_s], first.latency,
                       first.device, extra)


def timing_path(run_path: str | Path) -> Path:
    """Where the timing of a run file goes: ``RUN.timing.json`` beside it."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.name + ".timing.json")


def write_timings(path: str | Path, stages: Iterable[StageTiming], **meta: Any) -> Path:
    """Write the stages (and a total over them) as JSON, atomically."""
    stages = list(stages)
    total_wall = sum(s.wall_s for s in stages)
    record = {
        **meta,
        "host": platform.node(),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "stages": [s.to_dict() for s in stages],
        "total_wall_s": round(total_wall, 6),
    }
    path = Path(path)
    with atomic_write(path) as out:
        json.dump(record, out, indent=2)
        out.write("\n")
    return path


def search_timing(stage: str, wall_s: float, queries: int, pairs: int, **extra: Any) -> StageTiming:
    """A first stage's cost: searchers report one total, so every query is charged the mean."""
    return StageTiming(stage, wall_s, queries, pairs, [wall_s / queries] * queries if queries else [],
                       latency="mean", extra=extra)


def timed_search(searcher, topics: Mapping[str, str], k: int, stage: str = "first_stage",
                 **search: Any) -> tuple[Run, StageTiming]:
    """``searcher.batch_search(topics, k=k, **search)`` and what it cost."""
    start = time.perf_counter()
    run = searcher.batch_search(dict(topics), k=k, **search)
    wall = time.perf_counter() - start
    return run, search_timing(stage, wall, len(run), run.num_pairs, **search)
