"""The speed benchmark runs against the library as it is (its smallest CPU rehearsal): a benchmark that calls
the library's internals breaks silently when they change, and is found broken only on the machine it was meant
for."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
