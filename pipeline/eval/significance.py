"""Paired significance tests on per-query scores: the paired t-test and the paired randomisation test.

Both compare two systems evaluated on the same queries (``qid -> score`` for each, e.g. the output of
``pipeline.evaluate.evaluate_per_query`` for one measure). The randomisation test (Fisher's
permutation test for paired data) flips the sign of each query's difference at random: under the
null hypothesis that the systems are exchangeable, every flip is equally likely. It is seeded, so a
report is reproducible; the p-value is two-sided, ``(extreme + 1) / (permutations + 1)``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_PERMUTATIONS = 10_000
DEFAULT_SEED = 0
#: Permutations drawn per block, so memory stays bounded (block x queries booleans) on 7,000 queries.
_BLOCK = 1000


@dataclass(frozen=True)
class PairedTest:
    """System A against system B on the same queries (A minus B)."""

    n: int
    mean_a: float
    mean_b: float
    delta: float
    t_statistic: float
    p_ttest: float
    p_randomisation: float
    permutations: int
    seed: int

    def as_dict(self) -> dict:
        return asdict(self)


def aligned(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The common query ids and the two score vectors in that order; different query sets are an error."""
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b))[:3], sorted(set(b) - set(a))[:3]
        raise ValueError(f"per-query scores cover different queries (only in A: {only_a}, only in B: {only_b})")
    qids = sorted(a)
    return qids, np.array([a[q] for q in qids], dtype=np.float64), np.array([b[q] for q in qids], dtype=np.float64)


def paired_t_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(t, p)`` of the two-sided paired t-test; identical systems give ``(0, 1)``."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.size < 2 or np.allclose(diff, diff[0]) and diff[0] == 0:
        return 0.0, 1.0
    if np.allclose(diff, diff[0]):  # a constant non-zero difference: infinitely significant
        return math.copysign(math.inf, diff[0]), 0.0
    from scipy import stats  # here: importing scipy.stats takes seconds, and configs read the defaults above

    result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def randomisation_test(
    a: np.ndarray, b: np.ndarray, permutations: int = DEFAULT_PERMUTATIONS, seed: int = DEFAULT_SEED
) -> float:
    """Two-sided p-value of the paired randomisation (sign-flip) test on the mean difference."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if permutations < 1:
        raise ValueError("permutations must be at least 1")
    if diff.size == 0 or not np.any(diff):
        return 1.0
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    extreme, done = 0, 0
    tolerance = 1e-12 * max(1.0, observed)  # equal means count as extreme despite rounding
    while done < permutations:
        block = min(_BLOCK, permutations - done)
        signs = rng.integers(0, 2, size=(block, diff.size), dtype=np.int8) * 2 - 1
        means = np.abs(signs @ diff) / diff.size
        extreme += int(np.count_nonzero(means >= observed - tolerance))
        done += block
    return (extreme + 1) / (permutations + 1)


def compare(
    a: Mapping[str, float], b: Mapping[str, float], permutations: int = DEFAULT_PERMUTATIONS, seed: int = DEFAULT_SEED
) -> PairedTest:
    """Both tests of system A against system B on per-query scores (``qid -> score``)."""
    _, x, y = aligned(a, b)
    t, p_t = paired_t_test(x, y)
    p_r = randomisation_test(x, y, permutations, seed)
    mean_a, mean_b = (float(x.mean()), float(y.mean())) if x.size else (0.0, 0.0)
    return PairedTest(len(x), mean_a, mean_b, mean_a - mean_b, t, p_t, p_r, permutations, seed)


def paired_tests(
    system: Mapping[str, Mapping[str, float]], baselines: Mapping[str, Mapping[str, Mapping[str, float]]],
    measures: Iterable[str], permutations: int = DEFAULT_PERMUTATIONS, seed: int = DEFAULT_SEED,
) -> dict[str, dict[str, PairedTest]]:
    """A system against each baseline on each measure (per-query scores: measure -> qid -> value):
    baseline label -> measure -> ``PairedTest``."""
    measures = list(measures)
    return {label: {m: compare(system[m], base[m], permutations, seed) for m in measures}
            for label, base in baselines.items()}
