"""The speed benchmark runs against the library as it is (its smallest CPU rehearsal): a benchmark that calls
the library's internals breaks silently when they change, and is found broken only on the machine it was meant
for."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import ir_measures
import pytest

from pipeline.io.data import read_qrels
from pipeline.io.runs import Run

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_rerank_speed_cpu_rehearsal(tmp_path, texts):
    data = tmp_path / "data"
    data.mkdir()
    passages = texts(300, 1, 5, 90)
    (data / "collection.tsv").write_text("".join(f"{i}\t{p}\n" for i, p in enumerate(passages)))
    (data / "queries.tsv").write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(texts(20, 2, 2, 8))))
    out = tmp_path / "speed.json"
    done = run_benchmark("rerank_speed.py", "--data", str(data), "--pairs", "64", "--per-query", "16",
                         "--assembly-pairs", "320", "--assembly-repeats", "2", "--repeats", "2", "--threads", "1",
                         "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert results["cache_build"]["passages"] == 300
    for key in ("assembly", "end_to_end", "int8"):
        assert results[key]["ratio"]["rounds"] == 2 and results[key]["ratio"]["median"] > 0
    assert "| end to end |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("step", [[], ["--lm-distill"]], ids=["listwise-kl", "lm-distill"])
def test_train_speed_tiny(tmp_path, texts, step):
    data = tmp_path / "data"
    data.mkdir()
    (data / "collection.tsv").write_text("".join(f"{i}\t{p}\n" for i, p in enumerate(texts(60, 1, 5, 90))))
    (data / "queries.tsv").write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(texts(10, 2, 2, 8))))
    out = tmp_path / "train.json"
    done = run_benchmark("train_speed.py", "--data", str(data), "--layers", "1", "--groups", "2", "--group-size",
                         "4", "--steps", "1", "--rounds", "2", "--chunk-tokens", "128", "--threads", "1",
                         "--out", str(out), *step, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    (row,) = results["rows"]
    assert results["meta"]["step"] == ("LM distillation" if step else "listwise KL")
    assert row["layers"] == 1 and row["largest_difference"] < 1e-4 and 0 < row["padding_share"] < 1
    assert row["ratios"]["chunks of 128 tokens"]["rounds"] == 2
    assert set(row["pairs_per_s"]) == {"padded batch", "chunks of 128 tokens"}
    assert "| 1 |" in out.with_suffix(".md").read_text()


def test_rebuild_study_parses_and_asks_for_its_folder():
    script = str(ROOT / "benchmarks" / "rebuild_study.sh")
    assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0
    done = subprocess.run(["bash", script], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("usage: bash benchmarks/rebuild_study.sh ROOT")


def test_rebuild_study_refuses_an_unknown_teacher(tmp_path):
    script = str(ROOT / "benchmarks" / "rebuild_study.sh")
    done = subprocess.run(["bash", script, str(tmp_path / "root")], capture_output=True, text=True,
                          env={**os.environ, "TEACHER": "three-epoch"})
    assert done.returncode == 2 and done.stderr == "TEACHER=three-epoch: two-epoch or one-epoch\n"
    assert not (tmp_path / "root" / "code").exists()


def test_dense_speed_cpu_rehearsal(tmp_path, subset_dir):
    """Encode rate on real passages, then flat / HNSW / IVF-PQ (with and without exact re-scoring) over a few
    thousand synthetic vectors, each timed batched and one query at a time."""
    out = tmp_path / "dense.json"
    done = run_benchmark("dense_speed.py", "--encode-sample", "8", "--vectors", "3000", "--queries", "20",
                         "--ef-search", "100", "--ef-construction", "16", "--nlist", "16", "--nprobe", "4",
                         "--refine", "1", "4", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["indexes"]
    assert [r["index"] for r in rows] == ["flat", "hnsw", "ivfpq", "ivfpq"]
    assert all(r["qps"] > 0 and r["qps_one"] > 0 for r in rows) and rows[0]["recall@100"] == 1.0
    assert rows[3]["recall@100"] >= rows[2]["recall@100"]  # re-scoring 4 x 100 candidates exactly
    assert "one at a time q/s" in out.with_suffix(".md").read_text()


def test_check_cost_tiny(tmp_path, tiny_bert, tiny_data):
    """The integrity checks' cost, both arms side by side: a tiny model reranks 2 queries (2 chunks) in one round;
    the results name what was switched off, the machine and the load."""
    paths = tiny_data(tmp_path / "data", queries=2, per_query=12)
    model = tiny_bert(tmp_path / "model")
    out = tmp_path / "check_cost.json"
    done = run_benchmark("check_cost.py", "--model", str(model), "--data", str(tmp_path / "data"),
                         "--topics", str(paths["topics"]), "--run", str(paths["run"]), "--queries", "2",
                         "--depth", "8", "--chunk-pairs", "8", "--rounds", "1", "--repeats", "2", "--threads", "1",
                         "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["work"]["pairs"] == 16 and record["work"]["chunks"] == 2
    assert set(record["arms"]) == {"checked", "unchecked"}
    for rounds in record["arms"].values():
        assert len(rounds) == 1
        assert set(rounds[0]) == {"rerank", "resume", "restore", "docstore_open", "cache_open", "cache_open_touched"}
        assert rounds[0]["rerank"]["pairs"] == 16 and rounds[0]["rerank"]["seconds"] > 0
    checked, unchecked = (record["arms"][arm][0] for arm in ("checked", "unchecked"))
    assert checked["resume"]["checks"]["restored_records"]["calls"] == 2  # one record a chunk, checked
    assert checked["rerank"]["checks"]["journal_crc"]["calls"] == 2 and not unchecked["rerank"]["checks"]
    summary = record["summary"]["measurements"]
    assert all(set(r["seconds"]) == {"checked", "unchecked"} for r in summary.values())
    assert len(record["meta"]["load_start"]) == 3 and len(record["meta"]["load_end"]) == 3
    table = out.with_suffix(".md").read_text()
    assert "| token cache open after a touch (one open) |" in table and "`journal_crc`" in table
    assert record["meta"]["machine"]["cpu"] in table


def test_demo_student_rehearsal(tmp_path, minilm_path, private_cache):
    """The demo's student under each recipe, one step per phase: every recipe trains what it names from the
    demo's teacher, and one comparison ranks them all beside the demo's own student."""
    config = tmp_path / "demo-small.toml"  # the demo preset, fewer candidates to rerank
    config.write_text('name = "demo-small"\npreset = "demo"\n[rerank]\ndepth = 10\nwarmup_queries = 1\n')
    out, work = tmp_path / "demo_student.md", tmp_path / "work"
    done = run_benchmark("demo_student.py", "--rehearsal", "--config", str(config), "--models",
                         str(tmp_path / "models"), "--work", str(work), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    for name in ("student-2L", "student-2L-hidden-states", "student-2L-lm-distill+ranker-distill",
                 "student-2L-lm-distill+ranker-distill+hidden-states"):
        assert f"| {name} " in table
    info = json.loads((work / "lm-distill+ranker-distill+hidden-states" / "distilrank_train.json").read_text())
    assert (info["config"]["procedure"], info["config"]["init_from"], info["config"]["hidden_weight"]) == (
        "lm-distill+ranker-distill", "base", 1.0)
    assert set(info["summaries"]) == {"lm-distill", "ranker-distill"}
    own = json.loads((tmp_path / "models" / "demo-student-2L-ranker-distill" / "distilrank_train.json").read_text())
    assert (own["config"]["procedure"], own["config"]["hidden_weight"]) == ("ranker-distill", 0.0)


def test_interpolation_study_tiny(tmp_path, tiny_bert, tiny_data):
    """Two tiny rerankers weighed against BM25: W chosen on the labeled half, the held-out half's nDCG@10 at W = 0
    and W = 1 equal BM25's and the reranker's own run's; a second call reuses the runs; a bad model is one line."""
    paths = tiny_data(tmp_path / "data", queries=8, per_query=12)
    data = tmp_path / "data"
    (data / "queries.dl20.tsv").write_text(paths["topics"].read_text())
    (data / "qrels.dl20.tsv").write_text(paths["qrels"].read_text())
    held = tmp_path / "held.qids"
    held.write_text("100\n102\n104\n106\n")
    models = {"teacher": tiny_bert(tmp_path / "t", layers=2, seed=3), "small": tiny_bert(tmp_path / "s", seed=5)}
    out = tmp_path / "interp.json"
    args = ["--data", str(data), "--run", str(paths["run"]), "--heldout-qids", str(held), "--depth", "8",
            "--step", "0.25", "--device", "cpu", "--work", str(tmp_path / "work"), "--results", str(out),
            *(a for name, folder in models.items() for a in ("--model", f"{name}={folder}"))]
    done = run_benchmark("interpolation_study.py", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["grid"] == [0.0, 0.25, 0.5, 0.75, 1.0] and record["tune queries"] == 4
    qrels = {q: d for q, d in read_qrels(paths["qrels"]).items() if q in {"100", "102", "104", "106"}}
    ndcg = [ir_measures.parse_measure("nDCG@10")]
    bm25 = ir_measures.calc_aggregate(ndcg, qrels, Run.read(paths["run"]).subset(qrels).to_ir_measures())
    for name, m in record["models"].items():
        own = Run.read(tmp_path / "work" / f"{name}.heldout.d8.trec")
        alone = ir_measures.calc_aggregate(ndcg, qrels, own.to_ir_measures())
        assert m["held-out"]["0.0"] == pytest.approx(list(bm25.values())[0])
        assert m["held-out"]["1.0"] == pytest.approx(list(alone.values())[0]) == m["alone at depth"]["8"]
        assert m["held-out"][str(m["weight"])] == pytest.approx(m["vs bm25"]["mean_a"])
        assert set(m["leave-one-out weights"]) == set(qrels)
        assert all(m["tune"][str(w)] <= m["tune"][str(m["weight"])] for w in record["grid"])
    table = out.with_suffix(".md").read_text()
    assert "| small | " in table and "leave-one-out" in table
    timing = tmp_path / "work" / "small.tune.d8.trec.timing.json"
    before = timing.stat().st_mtime_ns
    again = run_benchmark("interpolation_study.py", *args, cwd=tmp_path)
    assert again.returncode == 0 and timing.stat().st_mtime_ns == before
    assert json.loads(out.read_text())["models"] == record["models"]
    bad = run_benchmark("interpolation_study.py", *args, "--model", f"x={tmp_path / 'nothing'}", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "nothing" in bad.stderr


def test_interpolation_study_ranks_as_rerank_does(tmp_path, tiny_bert, tiny_data):
    """The study's interpolation of cached scores is ``rerank --interpolation W``'s ranking, tail included."""
    from pipeline.io.data import DocStore, read_topics
    from pipeline.rerank.cross_encoder import CrossEncoder
    from pipeline.rerank.stage import rerank_run

    paths = tiny_data(tmp_path / "data", queries=3, per_query=12)
    first, topics, store = Run.read(paths["run"]), read_topics(paths["topics"]), DocStore(paths["collection"])
    encoder = CrossEncoder(tiny_bert(tmp_path / "m", seed=5), device="cpu")
    raw, _ = rerank_run(encoder, first, topics, store, depth=8)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        study = importlib.import_module("interpolation_study")
        for weight in (0.0, 0.3, 1.0):
            expected, _ = rerank_run(encoder, first, topics, store, depth=8, interpolation=weight)
            mine = study.interpolated(study.heads(raw, first, 8), weight)
            assert {q: [d for d, _ in r] for q, r in mine.items()} == {
                q: [d for d, _ in r] for q, r in expected.items()}
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        for name in ("interpolation_study", "common"):
            sys.modules.pop(name, None)
