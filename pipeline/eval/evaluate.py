"""Evaluation with ir-measures: aggregate and per-query scores, and the official MS MARCO MRR@10.

Measures are named as ir-measures strings (``RR@10``, ``nDCG@10``, ``R@1000``, ``RR(rel=2)@10``).
Conventions: MS MARCO dev uses binary qrels and RR@10; TREC DL uses graded qrels where relevant
means grade >= 2 for RR, recall and MAP, and nDCG uses the grades.

A query in the qrels but absent from the run scores 0 (as in the official MS MARCO script): the
aggregate is the mean over the qrels' queries. Queries in the run without judgments are ignored.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import ir_measures

from ..errors import InputError
from ..io.data import is_graded
from ..io.runs import Run

BINARY_MEASURES = ("RR@10", "nDCG@10", "R@100", "R@1000", "AP")
GRADED_MEASURES = ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "R(rel=2)@1000", "AP(rel=2)")


def default_measures(qrels: Mapping[str, Mapping[str, int]]) -> tuple[str, ...]:
    """The standard measures for these qrels: ``rel=2`` variants when they are graded (TREC DL)."""
    return GRADED_MEASURES if is_graded(qrels) else BINARY_MEASURES


def parse_measures(measures: Iterable[str]) -> list:
    """The ir-measures objects of measure names; an unknown name is an ``InputError``."""
    parsed = []
    for name in measures:
        try:
            parsed.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, SyntaxError, TypeError):
            raise InputError(f"unknown measure {name!r} (ir-measures syntax, e.g. RR@10, nDCG@10, "
                             "RR(rel=2)@10)") from None
    return parsed


def evaluate_per_query(
    run: Run, qrels: Mapping[str, Mapping[str, int]], measures: Iterable[str] | None = None
) -> dict[str, dict[str, float]]:
    """measure name -> {qid -> value} over every query of the qrels (unranked queries score 0)."""
    names = list(measures or default_measures(qrels))
    parsed = parse_measures(names)
    qrels_dict = {q: dict(d) for q, d in qrels.items()}
    run_dict = {q: r for q, r in run.to_ir_measures().items() if q in qrels_dict}
    result: dict[str, dict[str, float]] = {name: {q: 0.0 for q in qrels_dict} for name in names}
    by_measure = {str(m): name for m, name in zip(parsed, names, strict=True)}
    for metric in ir_measures.iter_calc(parsed, qrels_dict, run_dict):
        name = by_measure[str(metric.measure)]
        if metric.query_id in result[name]:
            result[name][metric.query_id] = float(metric.value)
    return result


def mean_scores(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """measure name -> the mean of its per-query values (0 without queries): the one aggregation."""
    return {name: (sum(values.values()) / len(values) if values else 0.0) for name, values in per_query.items()}


def judged_only(run: Run, qrels: Mapping[str, Mapping[str, int]]) -> Run:
    """The run without its unjudged passages (Sakai's condensed lists, ``trec_eval -J``). Where judgments are
    incomplete, measures on it read unjudged passages optimistically (as if absent), the plain ones
    pessimistically (as not relevant)."""
    return Run({q: [(d, s) for d, s in ranking if d in qrels.get(q, {})] for q, ranking in run.rankings.items()},
               name=run.name)


def evaluate(
    run: Run, qrels: Mapping[str, Mapping[str, int]], measures: Iterable[str] | None = None
) -> dict[str, float]:
    """measure name -> mean over the qrels' queries (unranked queries count as 0)."""
    return mean_scores(evaluate_per_query(run, qrels, measures))


def msmarco_mrr10(run: Run, qrels: Mapping[str, Mapping[str, int]], min_grade: int = 1) -> float:
    """MRR@10 as the official MS MARCO script computes it.

    For each query with a relevant passage in the qrels, 1/rank of the first relevant passage in
    the top 10 of the run (0 if none or if the query is not ranked), averaged over the queries
    of the qrels.
    """
    relevant = {q: {d for d, g in docs.items() if g >= min_grade} for q, docs in qrels.items()}
    relevant = {q: docs for q, docs in relevant.items() if docs}
    if not relevant:
        return 0.0
    total = 0.0
    for qid, docs in relevant.items():
        for rank, (docid, _) in enumerate(run.rankings.get(qid, [])[:10], 1):
            if docid in docs:
                total += 1.0 / rank
                break
    return total / len(relevant)
