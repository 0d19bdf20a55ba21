"""Paired t-test and paired randomisation test on per-query scores."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pipeline.eval.significance import compare, paired_t_test, randomisation_test

A = np.array([0.50, 0.20, 0.90, 0.40, 0.70, 0.10, 0.30])
B = np.array([0.30, 0.25, 0.60, 0.40, 0.50, 0.20, 0.10])


def test_t_test_matches_the_textbook_formula():
    diff = A - B
    t_expected = diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff)))
    t, p = paired_t_test(A, B)
    assert t == pytest.approx(t_expected)
    assert 0.0 < p < 1.0
    assert paired_t_test(B, A)[0] == pytest.approx(-t_expected)
    assert paired_t_test(B, A)[1] == pytest.approx(p)


def test_identical_systems_are_not_different():
    assert paired_t_test(A, A) == (0.0, 1.0)
    assert randomisation_test(A, A) == 1.0


def test_randomisation_p_value_matches_exhaustive_enumeration():
    diff = A - B
    observed = abs(diff.mean())
    flips = [abs((np.array(signs) * diff).mean()) >= observed - 1e-12
             for signs in itertools.product((-1, 1), repeat=len(diff))]
    exact = float(np.mean(flips))  # 16/128 = 0.125 for these scores
    assert exact == pytest.approx(0.125)
    assert randomisation_test(A, B, permutations=20_000, seed=3) == pytest.approx(exact, abs=0.01)


def test_randomisation_is_seeded_and_two_sided():
    rng = np.random.default_rng(0)
    a = rng.random(40)
    b = a - 0.03 + rng.normal(0, 0.1, 40)
    p1 = randomisation_test(a, b, permutations=2000, seed=7)
    assert randomisation_test(a, b, permutations=2000, seed=7) == p1
    assert randomisation_test(b, a, permutations=2000, seed=7) == pytest.approx(p1, abs=0.02)


def test_a_large_consistent_difference_is_significant_at_the_resolution_of_the_test():
    a = np.linspace(0.5, 0.9, 30)
    b = a - 0.2 - np.linspace(0, 0.05, 30)
    assert randomisation_test(a, b, permutations=999, seed=0) == pytest.approx(1 / 1000)
    assert paired_t_test(a, b)[1] < 1e-10


def test_compare_aligns_queries_and_reports_both_tests():
    a = {str(i): float(v) for i, v in enumerate(A)}
    b = {str(i): float(v) for i, v in reversed(list(enumerate(B)))}  # order must not matter
    result = compare(a, b, permutations=5000, seed=1)
    assert result.n == len(A)
    assert result.delta == pytest.approx(float((A - B).mean()))
    assert result.p_ttest == pytest.approx(paired_t_test(A, B)[1])
    assert result.p_randomisation == pytest.approx(0.125, abs=0.02)
    assert set(result.as_dict()) >= {"p_ttest", "p_randomisation", "delta", "permutations", "seed"}


def test_compare_refuses_different_query_sets():
    with pytest.raises(ValueError, match="different queries"):
        compare({"1": 0.5, "2": 0.1}, {"1": 0.4, "3": 0.2})
