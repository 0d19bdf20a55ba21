"""What a comparison measured: one ``PipelineResult`` per pipeline and the ``Comparison`` around them.

Plain values: ``pipeline.compare`` fills them, ``pipeline.report`` renders them; neither imports the other's
work through these types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..eval.significance import PairedTest
from ..eval.speedups import Speedup, speedup
from ..eval.timing import StageTiming
from .config import Config

KINDS = ("first_stage", "teacher", "student")


@dataclass
class PipelineResult:
    """One pipeline of the comparison: the first stage alone (BM25, dense or hybrid), it + the teacher, or it + a
    student."""

    name: str
    kind: str  # one of KINDS
    run_path: Path
    metrics: dict[str, float]  # measure -> mean over the queries
    per_query: dict[str, dict[str, float]] = field(repr=False)  # measure -> qid -> value
    timing: StageTiming  # the rerank stage, or the first stage's own
    model: str | None = None
    description: str = ""
    model_info: dict[str, Any] = field(default_factory=dict)
    interpolation: float | None = None  # the reranker's weight against the first stage (None: its score alone)

    @property
    def pairs_per_s(self) -> float | None:
        return None if self.kind == "first_stage" else self.timing.pairs_per_s


@dataclass
class Comparison:
    """Everything a report shows: pipelines, significance tests, stage times and the context."""

    config: Config
    measures: tuple[str, ...]
    plot_measure: str
    pipelines: list[PipelineResult]
    significance: dict[str, dict[str, dict[str, PairedTest]]]  # pipeline -> "teacher"/first stage -> measure -> test
    stages: list[StageTiming]
    num_queries: int
    output: Path
    started: str
    seconds: float = 0.0

    def pipeline(self, name: str) -> PipelineResult:
        return next(p for p in self.pipelines if p.name == name)

    @property
    def teacher(self) -> PipelineResult:
        return next(p for p in self.pipelines if p.kind == "teacher")

    @property
    def first_stage(self) -> PipelineResult:
        return next(p for p in self.pipelines if p.kind == "first_stage")

    def speedup(self, result: PipelineResult) -> float | None:
        """Pairs/s of ``result`` over the teacher's (same pairs, same engine, same rounds), pooled over rounds."""
        teacher = self.teacher.pairs_per_s
        if result.kind == "first_stage" or not teacher or result.pairs_per_s is None:
            return None
        return result.pairs_per_s / teacher

    def speedup_spread(self, result: PipelineResult) -> Speedup | None:
        """The speedup of ``result`` over the teacher round by round: median and interval (``pipeline.speedups``);
        ``None`` without per-round timings (the first stage has none: it is timed once, not in rounds)."""
        mine, teacher = result.timing.extra, self.teacher.timing.extra
        if "round_wall_s" not in mine or "round_wall_s" not in teacher:
            return None
        try:
            return speedup(mine["round_pairs"], mine["round_wall_s"], teacher["round_pairs"], teacher["round_wall_s"])
        except ValueError:  # no round where both scored pairs
            return None
