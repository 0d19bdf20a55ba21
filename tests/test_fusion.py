"""Hybrid first stage: fusion arithmetic against hand computations, the Hybrid stage, and BM25 + dense on the sample."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLE

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.eval.evaluate import evaluate
from pipeline.io.data import read_qrels, read_topics
from pipeline.io.runs import Run
from pipeline.retrieval.fusion import Hybrid, interpolate, reciprocal_rank

SPARSE = [("a", 10.0), ("b", 8.0), ("c", 6.0)]
DENSE = [("b", 0.9), ("d", 0.7), ("a", 0.5)]


def test_interpolation_by_hand():
    # sparse: min 6, max 10 -> (s - 8) / 4: a 0.5, b 0, c -0.5, and d (absent) takes the min: -0.5
    # dense: min 0.5, max 0.9 -> (s - 0.7) / 0.4: b 0.5, d 0, a -0.5, and c (absent) takes the min: -0.5
    fused = dict(interpolate(SPARSE, DENSE, fusion_weight=0.5))  # 0.5 x sparse + dense
    assert fused == pytest.approx({"a": 0.25 - 0.5, "b": 0.0 + 0.5, "c": -0.25 - 0.5, "d": -0.25 + 0.0})
    # a and d tie at -0.25: the tie keeps first appearance (the sparse list first)
    assert [d for d, _ in interpolate(SPARSE, DENSE, fusion_weight=0.5)] == ["b", "a", "d", "c"]
    assert [d for d, _ in interpolate(SPARSE, DENSE, fusion_weight=10.0)] == ["a", "b", "d", "c"]  # BM25 dominates
    assert [d for d, _ in interpolate(SPARSE, DENSE, fusion_weight=0.0)] == ["b", "d", "a", "c"]  # dense alone


def test_interpolation_edge_cases():
    assert dict(interpolate([], DENSE)) == pytest.approx({"b": 0.5, "d": 0.0, "a": -0.5})  # sparse side: 0
    assert dict(interpolate([("x", 3.0)], [("x", 1.0), ("y", 0.0)])) == {"x": 0.5, "y": -0.5}  # one hit: 0
    assert interpolate([], []) == []


def test_reciprocal_rank_fusion_by_hand():
    fused = dict(reciprocal_rank([SPARSE, DENSE], rrf_k=60))
    assert fused == pytest.approx({"a": 1 / 61 + 1 / 63, "b": 1 / 62 + 1 / 61, "c": 1 / 63, "d": 1 / 62})
    assert [d for d, _ in reciprocal_rank([SPARSE, DENSE])] == ["b", "a", "d", "c"]
    assert dict(reciprocal_rank([SPARSE, DENSE], rrf_k=0)) == pytest.approx(
        {"a": 1 + 1 / 3, "b": 1 / 2 + 1, "c": 1 / 3, "d": 1 / 2})


class Fixed:
    """A first stage that returns fixed rankings (cut at k) and says how many passages it searches."""

    def __init__(self, rankings: dict[str, list[tuple[str, float]]], count: int = 100):
        self.rankings, self.count, self.asked = rankings, count, []

    def batch_search(self, topics, k=1000, threads=1, progress=True):
        self.asked.append(k)
        return Run({q: self.rankings.get(q, [])[:k] for q in topics})


def test_hybrid_stage_fuses_each_query_and_cuts_at_k():
    sparse, dense = Fixed({"1": SPARSE, "2": [("z", 1.0)]}), Fixed({"1": DENSE})
    run = Hybrid(sparse, dense, fusion="rrf").batch_search({"1": "q one", "2": "q two"}, k=2)
    assert [d for d, _ in run["1"]] == ["b", "a"] and [d for d, _ in run["2"]] == ["z"]
    assert sparse.asked == dense.asked == [2]
    Hybrid(sparse, dense, depth=3).batch_search({"1": "q"}, k=2)
    assert sparse.asked[-1] == dense.asked[-1] == 3
    with pytest.raises(InputError, match="not built from the same collection"):
        Hybrid(Fixed({}, count=100), Fixed({}, count=99))
    with pytest.raises(InputError, match="unknown fusion"):
        Hybrid(sparse, dense, fusion="max")


def test_cli_hybrid_on_the_sample(sample_index: Path, sample_dense: Path, tmp_path: Path):
    """BM25 + the real MiniLM on the sample's 320 passages, fused both ways."""
    index = sample_index
    qrels = read_qrels(SAMPLE / "qrels.tsv")
    measures = ["nDCG@10", "R(rel=2)@10"]
    results = {}
    for name, extra in (("bm25", ["--index", str(index)]), ("dense", ["--dense", str(sample_dense)]),
                        ("interpolation", ["--hybrid", "--index", str(index), "--dense", str(sample_dense)]),
                        ("rrf", ["--hybrid", "--index", str(index), "--dense", str(sample_dense), "--fusion", "rrf"])):
        out = tmp_path / f"{name}.trec"
        assert main(["retrieve", *extra, "--topics", str(SAMPLE / "queries.tsv"), "--output", str(out),
                     "--hits", "50", "--msmarco-tuned", "--device", "cpu"]) == 0
        results[name] = evaluate(Run.read(out), qrels, measures)
    for fused in ("interpolation", "rrf"):
        assert results[fused]["R(rel=2)@10"] >= min(results["bm25"]["R(rel=2)@10"], results["dense"]["R(rel=2)@10"])
    assert all(r["nDCG@10"] > 0.5 for r in results.values()), results


def test_the_old_fusion_flag_is_refused_with_its_new_name(tmp_path: Path, capsys):
    """``--alpha`` was the BM25 weight here and the cross-encoder's weight on ``rerank``: now each has its own name."""
    out = tmp_path / "run.trec"
    code = main(["retrieve", "--hybrid", "--index", "idx", "--dense", "dense", "--topics", str(SAMPLE / "queries.tsv"),
                 "--output", str(out), "--alpha", "0.5"])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err.strip().splitlines() == [
        "distilrank: error: '--alpha' is now called '--fusion-weight': interpolation: the weight W of BM25's "
        "normalised score against the dense one's (default 1: equal weights)"]


def test_fused_run_names_its_fusion():
    sparse, dense = Fixed({"1": SPARSE}), Fixed({"1": DENSE})
    assert Hybrid(sparse, dense, fusion_weight=0.5).batch_search({"1": "q"}, k=2).name == "hybrid-interpolation0.5"
    assert Hybrid(sparse, dense, fusion="rrf").batch_search({"1": "q"}, k=2).name == "hybrid-rrf60"
    with pytest.raises(InputError, match="fusion_weight >= 0"):
        Hybrid(sparse, dense, fusion_weight=-1)


def test_a_pipeline_over_hybrid_candidates(sample_index: Path, sample_dense: Path, minilm_path: Path):
    """``Pipeline`` takes the Hybrid stage as its first stage (passages from the Lucene index), any Ranker after it."""
    from pipeline.rerank.stage import Pipeline
    from pipeline.retrieval.biencoder import BiEncoder
    from pipeline.retrieval.bm25 import BM25
    from pipeline.retrieval.dense import DenseRetriever

    dense = DenseRetriever(sample_dense, BiEncoder(minilm_path, device="cpu"))
    pipeline = Pipeline(Hybrid(BM25.msmarco(sample_index), dense, fusion="rrf"), dense, depth=20, k=50)
    topics = dict(list(read_topics(SAMPLE / "queries.tsv").items())[:5])
    run = pipeline.run(topics)
    assert list(run) == list(topics) and all(len(r) == 50 for r in run.rankings.values())
    assert [t.stage for t in pipeline.timings] == ["first_stage", "rerank"]
