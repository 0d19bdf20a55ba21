"""``distilrank rerank`` end to end on a tiny model, and the real MiniLM on the shared MS MARCO subset."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.io.runs import Run


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_bert, texts) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    model = tiny_bert(root / "model")
    passages = texts(20, 20, 3, 80)
    (root / "collection.tsv").write_text("".join(f"p{i}\t{t}\n" for i, t in enumerate(passages)))
    (root / "topics.tsv").write_text("1\tcat dog river\n2\tmusic piano\n")
    first = Run({"1": [(f"p{i}", 20.0 - i) for i in range(10)], "2": [(f"p{i}", 9.0 - i) for i in range(5, 20)]})
    first.write(root / "bm25.trec")
    return {"root": root, "model": model, "collection": root / "collection.tsv", "topics": root / "topics.tsv",
            "run": root / "bm25.trec"}


def args(files, output: Path, *extra: str) -> list[str]:
    return ["rerank", "--run", str(files["run"]), "--model", str(files["model"]), "--output", str(output),
            "--topics", str(files["topics"]), "--collection", str(files["collection"]), "--device", "cpu",
            "--no-progress", *extra]


def test_rerank_cli_writes_run_and_timing(files, tmp_path, capsys):
    output = tmp_path / "out" / "tiny.trec"
    assert main(args(files, output, "--depth", "6", "--batch-tokens", "512")) == 0
    run, first = Run.read(output), Run.read(files["run"])
    assert list(run) == ["1", "2"] and run.num_pairs == first.num_pairs
    assert [d for d, _ in run["2"][6:]] == [d for d, _ in first["2"][6:]]
    timing = json.loads((tmp_path / "out" / "tiny.trec.timing.json").read_text())
    stage = timing["stages"][0]
    assert stage["stage"] == "rerank" and stage["pairs"] == 12 and stage["queries"] == 2
    assert stage["pairs_per_s"] > 0 and stage["latency_p50_ms"] > 0 and stage["batch_tokens"] == 512
    assert "pairs/s" in capsys.readouterr().out


def test_rerank_cli_msmarco_format_and_interpolation(files, tmp_path):
    output = tmp_path / "kept.tsv"
    assert main(args(files, output, "--interpolation", "0", "--format", "msmarco")) == 0
    lines = output.read_text().splitlines()
    assert lines[0].split("\t") == ["1", "p0", "1"]  # weight 0 keeps the first stage's order
    assert [line.split("\t")[1] for line in lines[:10]] == [f"p{i}" for i in range(10)]


def test_rerank_cli_refuses_the_old_flag_with_its_new_name(files, tmp_path, capsys):
    """``--alpha`` meant the BM25 weight on ``retrieve``: here it is ``--interpolation``, refused before any work."""
    output = tmp_path / "out.trec"
    assert main(args(files, output, "--alpha", "0")) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("distilrank: error: '--alpha' is now called '--interpolation': the cross-encoder's weight")
    assert not output.exists()


@pytest.mark.parametrize("change, message", [
    ({"run": "missing_doc"}, "not in the collection: ghost (query 1)"),
    ({"model": "nowhere"}, "model folder not found"),
    ({"topics": "short"}, "no text in the topics: 2"),
    ({"extra": ["--depth", "0"]}, "--depth must be at least 1"),
    ({"extra": ["--batch-tokens", "100"]}, "batch_tokens 100 is smaller than max_length"),
])
def test_rerank_cli_bad_input_exits_2_without_output(files, tmp_path, capsys, change, message):
    inputs = dict(files)
    if change.get("run"):
        bad = tmp_path / "bad.trec"
        bad.write_text(files["run"].read_text() + "1 Q0 ghost 11 0.5 bm25\n")
        inputs["run"] = bad
    if change.get("model"):
        inputs["model"] = tmp_path / "nowhere"
    if change.get("topics"):
        inputs["topics"] = tmp_path / "topics.tsv"
        inputs["topics"].write_text("1\tcat dog river\n")
    output = tmp_path / "out.trec"
    assert main(args(inputs, output, *change.get("extra", []))) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("distilrank: error: ") and message in last
    assert not output.exists() and not (tmp_path / "out.trec.timing.json").exists()


def test_rerank_cli_skip_missing_counts(files, tmp_path):
    bad = tmp_path / "bad.trec"
    bad.write_text(files["run"].read_text() + "1 Q0 ghost 11 0.5 bm25\n")
    output = tmp_path / "skip.trec"
    assert main(args({**files, "run": bad}, output, "--skip-missing")) == 0
    assert "ghost" not in output.read_text()
    assert json.loads((tmp_path / "skip.trec.timing.json").read_text())["stages"][0]["skipped_missing"] == 1


# ---- the real MiniLM on the shared subset ---------------------------------------------------


def judged_candidates(subset_dir: Path, queries: int = 3, per_query: int = 30) -> tuple[Run, dict, dict]:
    """A TREC-like candidate list for a few DL20 queries: judged passages present in the collection plus
    random others, shuffled, with BM25-like decreasing scores."""
    from pipeline.io.data import DocStore, read_qrels, read_topics

    qrels = read_qrels(subset_dir / "qrels.dl20.tsv")
    topics = read_topics(subset_dir / "queries.dl20.tsv")
    store = DocStore(subset_dir / "collection.tsv")
    rng = random.Random(0)
    rankings = {}
    for qid in sorted(q for q in qrels if q in topics)[:queries]:
        judged = [d for d in sorted(qrels[qid]) if d in store][: per_query - 10]
        others = [str(store.keys[rng.randrange(len(store))]) for _ in range(10)]
        docs = list(dict.fromkeys(judged + others))
        rng.shuffle(docs)
        rankings[qid] = [(d, 30.0 - i * 0.5) for i, d in enumerate(docs)]
    return Run(rankings, "judged"), {q: topics[q] for q in rankings}, qrels


@pytest.mark.slow
def test_minilm_loads_as_one_logit_ranker_and_reranks_subset_candidates(subset_dir, minilm_path, tmp_path):
    from pipeline.io.data import DocStore
    from pipeline.rerank.cross_encoder import CrossEncoder
    from pipeline.rerank.engine import ScoringEngine
    from pipeline.rerank.stage import rerank_run

    run, topics, _ = judged_candidates(subset_dir)
    store = DocStore(subset_dir / "collection.tsv")
    encoder = CrossEncoder(minilm_path, device="cpu")
    assert encoder.num_labels == 1 and encoder.new_head  # a plain BertModel: a fresh head
    reranked, timing = rerank_run(encoder, run, topics, store, depth=20)
    assert list(reranked) == list(run) and reranked.num_pairs == run.num_pairs
    assert timing.pairs == sum(min(len(r), 20) for r in run.rankings.values()) and timing.pairs_per_s > 0
    for qid, ranking in run.items():  # scores are the model's, tail in first-stage order
        docs = [d for d, _ in ranking[:20]]
        expected = ScoringEngine(encoder).score_pairs([topics[qid]] * len(docs), store.get_many(docs))
        got = dict(reranked[qid][:20])
        assert np.allclose([got[d] for d in docs], expected, atol=1e-5)
        assert [d for d, _ in reranked[qid][20:]] == [d for d, _ in ranking[20:]]
    saved = encoder.save_pretrained(tmp_path / "minilm-ranker")
    assert not CrossEncoder.from_pretrained(saved, device="cpu").new_head


@pytest.mark.slow
def test_minilm_cli_on_subset(subset_dir, minilm_path, tmp_path):
    run, topics, _ = judged_candidates(subset_dir, queries=2, per_query=16)
    run.write(tmp_path / "cands.trec")
    output = tmp_path / "minilm.trec"
    code = main(["rerank", "--run", str(tmp_path / "cands.trec"), "--model", str(minilm_path), "--output", str(output),
                 "--topics", str(subset_dir / "queries.dl20.tsv"), "--collection", str(subset_dir / "collection.tsv"),
                 "--depth", "10", "--device", "cpu", "--no-progress"])
    assert code == 0 and Run.read(output).num_pairs == run.num_pairs
    assert json.loads(Path(str(output) + ".timing.json").read_text())["stages"][0]["pairs"] == 20


@pytest.mark.slow
def test_pipeline_bm25_then_minilm_on_subset(subset_dir, subset_index, minilm_path):
    from pipeline.io.data import read_topics
    from pipeline.rerank.cross_encoder import CrossEncoder
    from pipeline.rerank.stage import Pipeline
    from pipeline.retrieval.bm25 import BM25

    topics = dict(list(read_topics(subset_dir / "queries.dl20.tsv").items())[:2])
    bm25 = BM25(subset_index)
    pipeline = Pipeline(bm25, CrossEncoder(minilm_path, device="cpu"), depth=10, k=50)
    run = pipeline.run(topics)  # passages from the index's stored raw text
    first = bm25.batch_search(topics, k=50)
    assert list(run) == list(first)
    for qid in topics:
        assert {d for d, _ in run[qid]} == {d for d, _ in first[qid]}  # R@50 kept
        assert [d for d, _ in run[qid][10:]] == [d for d, _ in first[qid][10:]]
    assert [t.stage for t in pipeline.timings] == ["first_stage", "rerank"]
    assert pipeline.timings[1].pairs == 20
