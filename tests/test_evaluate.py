"""Evaluation through ir-measures, cross-checked against the official MS MARCO MRR@10 definition."""
from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.eval.evaluate import default_measures, evaluate, evaluate_per_query, judged_only, msmarco_mrr10
from pipeline.io.runs import Run

QRELS = {"q1": {"a": 1}, "q2": {"x": 1, "y": 1}, "q3": {"m": 1}, "q4": {"z": 1}}
RUN = Run(
    {
        "q1": [("b", 3.0), ("a", 2.0)],  # first relevant at rank 2 -> 1/2
        "q2": [("y", 9.0), ("x", 1.0)],  # rank 1 -> 1
        "q3": [(f"d{i}", 20.0 - i) for i in range(10)] + [("m", 0.1)],  # rank 11 -> 0
        # q4 not ranked -> 0
        "q5": [("k", 1.0)],  # not judged -> ignored
    }
)


def test_rr10_equals_official_msmarco_mrr10():
    official = (1 / 2 + 1 + 0 + 0) / 4  # divided by the number of queries in the qrels
    assert msmarco_mrr10(RUN, QRELS) == pytest.approx(official)
    assert evaluate(RUN, QRELS, ["RR@10"])["RR@10"] == pytest.approx(official)


def test_per_query_values_cover_every_judged_query():
    per_query = evaluate_per_query(RUN, QRELS, ["RR@10"])["RR@10"]
    assert per_query == pytest.approx({"q1": 0.5, "q2": 1.0, "q3": 0.0, "q4": 0.0})


def test_graded_measures_use_rel_2():
    qrels = {"q": {"a": 1, "b": 2}}
    run = Run({"q": [("a", 2.0), ("b", 1.0)]})
    assert default_measures(qrels)[1] == "RR(rel=2)@10"
    scores = evaluate(run, qrels, ["RR@10", "RR(rel=2)@10"])
    assert scores == pytest.approx({"RR@10": 1.0, "RR(rel=2)@10": 0.5})


def test_unknown_measure():
    with pytest.raises(InputError, match="unknown measure"):
        evaluate(RUN, QRELS, ["Bogus@3"])


def test_judged_only_drops_unjudged_passages_as_trec_eval_j_does():
    """q1 ranks unjudged b over a; condensed, a moves to rank 1. Judged@10 counts the judged share of the top 10."""
    condensed = judged_only(RUN, QRELS)
    assert condensed["q1"] == [("a", 2.0)] and condensed["q3"] == [("m", 0.1)] and condensed["q5"] == []
    assert evaluate(condensed, QRELS, ["RR@10"])["RR@10"] == pytest.approx((1 + 1 + 1 + 0) / 4)
    judged = evaluate_per_query(RUN, QRELS, ["Judged@10"])["Judged@10"]
    assert judged["q1"] == pytest.approx(0.5) and judged["q3"] == pytest.approx(0.0)


def test_cli_judged_only(tmp_path, capsys):
    run, qrels = tmp_path / "run.trec", tmp_path / "qrels.txt"
    run.write_text("".join(f"{q} Q0 {d} {i + 1} {s} r\n" for q, ranking in RUN.rankings.items()
                           for i, (d, s) in enumerate(ranking)))
    qrels.write_text("".join(f"{q} 0 {d} {g}\n" for q, judged in QRELS.items() for d, g in judged.items()))
    for extra, expected in (([], (1 / 2 + 1) / 4), (["-J"], 3 / 4)):
        assert main(["evaluate", "--run", str(run), "--qrels", str(qrels), "--metrics", "RR@10", "--json",
                     *extra]) == 0
        assert json.loads(capsys.readouterr().out)["RR@10"] == pytest.approx(expected)
