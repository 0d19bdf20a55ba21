"""Speedups over interleaved rounds: median, order-statistic interval, and the too-wide flag."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.eval.speedups import MAX_SPREAD, median_interval, speedup


def test_median_interval_uses_binomial_order_statistics():
    values = [float(v) for v in range(1, 11)]  # 10 rounds: [x(2), x(9)] covers 1 - 2 x 11/1024
    low, high, coverage = median_interval(values[::-1])
    assert (low, high) == (2.0, 9.0) and coverage == pytest.approx(1 - 22 / 1024)
    low, high, coverage = median_interval([3.0, 1.0, 2.0])  # too few for 95%: the range, at 75%
    assert (low, high, coverage) == (1.0, 3.0, 0.75)
    rng = np.random.default_rng(0)  # coverage holds in simulation: the interval holds the true median
    hits = sum(low <= 0.0 <= high for low, high, _ in (median_interval(rng.normal(size=20)) for _ in range(2000)))
    assert hits / 2000 >= 0.95 - 0.015


def test_speedup_from_rounds_and_the_too_wide_flag():
    ref_seconds = [2.0, 2.2, 1.9, 2.1, 2.0, 2.4, 1.8, 2.0, 2.1, 2.0]
    steady = speedup([100] * 10, [s / 3 for s in ref_seconds], [100] * 10, ref_seconds)
    assert steady.median == pytest.approx(3.0) and steady.low == pytest.approx(3.0) and not steady.too_wide
    assert "3.00x" in str(steady) and "10 rounds" in str(steady)
    # the same model twice on a machine whose load comes and goes: rounds between 0.5x and 1.3x
    noisy = speedup([100] * 10, [2.0, 4.0, 1.6, 3.5, 2.0, 1.5, 3.8, 2.2, 1.7, 2.5], [100] * 10, [2.0] * 10)
    assert noisy.spread > MAX_SPREAD and noisy.too_wide and "too wide to call" in str(noisy)
    assert noisy.to_dict()["too_wide"] is True
    few = speedup([10, 10], [1.0, 1.0], [10, 10], [2.0, 2.0])
    assert few.median == 2.0 and few.too_wide  # two rounds cannot be called
    with pytest.raises(ValueError):
        speedup([0], [1.0], [5], [1.0])
    assert math.isinf(type(few)(1.0, 0.0, 2.0, 5, 0.9).spread)
