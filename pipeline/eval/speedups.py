"""Speedups a noisy machine cannot fake: one ratio per interleaved round, their median and an interval.

``compare`` scores the same block of queries with every reranker in each round, so each round gives one
speed ratio of a reranker over the reference (the teacher) measured under the same load. The speedup reported
is the median of those ratios, with a distribution-free confidence interval of the median (order statistics of
the binomial: no assumption on how the machine's load varies). On a loaded machine two identical models have
measured 1.01x in one run and 0.51x in another: a spread wider than ``MAX_SPREAD`` (the interval's high end over
its low end), or fewer than ``MIN_ROUNDS`` rounds, is flagged too wide to call.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The interval's confidence that it holds the median ratio (or the most the rounds allow, when fewer).
CONFIDENCE = 0.95
#: A speedup whose interval spans more than this factor (high / low) is too wide to call.
MAX_SPREAD = 1.5
#: Fewer rounds than this give no interval worth reading.
MIN_ROUNDS = 3


@dataclass(frozen=True)
class Speedup:
    """The median of per-round speed ratios and an interval around it (``coverage``: its confidence)."""

    median: float
    low: float
    high: float
    rounds: int
    coverage: float

    @property
    def spread(self) -> float:
        """The interval's high end over its low end (1.0: every round agreed)."""
        return self.high / self.low if self.low > 0 else math.inf

    @property
    def too_wide(self) -> bool:
        """Whether the rounds disagree too much (or are too few) for the median to be called."""
        return self.rounds < MIN_ROUNDS or self.spread > MAX_SPREAD

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"median": round(self.median, 4), "low": round(self.low, 4), "high": round(self.high, 4),
                "rounds": self.rounds, "coverage": round(self.coverage, 4), "too_wide": self.too_wide}

    def __str__(self) -> str:
        text = (f"{self.median:.2f}x ({self.coverage:.0%} interval {self.low:.2f}x-{self.high:.2f}x over "
                f"{self.rounds} rounds)")
        return text + (" too wide to call" if self.too_wide else "")


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The narrowest order-statistic interval ``[x(k), x(n+1-k)]`` that holds the median of the distribution
    of ``values`` with probability at least ``confidence``; with too few values for that, their range (whose
    coverage is lower). Returns (low, high, coverage)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    tail, best = 0.0, 1  # tail: P(Binomial(n, 1/2) <= k - 1)
    for k in range(1, n // 2 + 1):
        tail += math.comb(n, k - 1) / 2**n
        if 1 - 2 * tail < confidence:
            break
        best = k
    coverage = 1 - 2 * sum(math.comb(n, i) for i in range(best)) / 2**n
    return float(x[best - 1]), float(x[n - best]), coverage


def speedup(pairs: Sequence[int], seconds: Sequence[float], reference_pairs: Sequence[int],
            reference_seconds: Sequence[float], confidence: float = CONFIDENCE) -> Speedup:
    """The speedup of a reranker over the reference from their rounds (pairs and seconds of each round, in the
    same order): per round the ratio of pairs/s, then ``median_interval``. Rounds without pairs are left out."""
    rounds = list(zip(pairs, seconds, reference_pairs, reference_seconds, strict=True))
    ratios = [(p / s) / (rp / rs) for p, s, rp, rs in rounds if min(p, s, rp, rs) > 0]  # rounds with work
    if not ratios:
        raise ValueError("speedup needs at least one round where both rerankers scored pairs")
    low, high, coverage = median_interval(ratios, confidence)
    return Speedup(float(np.median(ratios)), low, high, len(ratios), coverage)
