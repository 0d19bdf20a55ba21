"""``compare`` end to end on the embedded sample with tiny rerankers; the reports' numbers checked independently."""
from __future__ import annotations

import json
from pathlib import Path

import ir_measures
import pytest

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.eval.significance import compare as paired
from pipeline.experiment.compare import compare
from pipeline.io.data import DocStore, read_qrels, read_topics
from pipeline.io.runs import Run
from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.stage import rerank_run

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pipeline" / "resources" / "sample"
MEASURES = ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@30"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tiny_bert) -> dict[str, Path]:
    """A 2-layer two-logit 'teacher' and a 1-layer one-logit 'student' (random weights, 32 wide)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {"teacher": tiny_bert(root / "teacher", layers=2, labels=2, seed=7),
            "student": tiny_bert(root / "student", layers=1, labels=1, seed=7)}


def write_config(folder: Path, models: dict[str, Path], index: Path, **rerank) -> Path:
    extra = "".join(f"{k} = {v}\n" for k, v in rerank.items())
    text = f"""
name = "tiny"
[data]
collection = "{SAMPLE / 'passages.tsv'}"
topics = "{SAMPLE / 'queries.tsv'}"
qrels = "{SAMPLE / 'qrels.tsv'}"
[first_stage]
index = "{index}"
hits = 40
[rerank]
depth = 30
device = "cpu"
warmup_queries = 1
chunk_queries = 7
{extra}
[teacher]
name = "big"
model = "{models['teacher']}"
[[students]]
name = "small"
model = "{models['student']}"
[evaluation]
measures = {json.dumps(MEASURES)}
permutations = 2000
"""
    path = folder / "tiny.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def comparison(tmp_path_factory, tiny_models, sample_index):
    folder = tmp_path_factory.mktemp("compare")
    return compare(write_config(folder, tiny_models, sample_index), output=folder / "out", progress=False)


def test_reports_are_written_and_partial_files_removed(comparison):
    out = comparison.output
    for name in ("report.md", "report.json", "effectiveness_vs_speed.png", "bm25.trec", "big.trec", "small.trec",
                 "big.trec.timing.json", "small.trec.timing.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.tmp"))
    assert (out / "effectiveness_vs_speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| BM25 + small" in md and "Speedup vs teacher" in md and "differs significantly from the teacher" in md


def test_report_numbers_equal_ir_measures_on_the_written_run_files(comparison):
    report = json.loads((comparison.output / "report.json").read_text())
    qrels = read_qrels(SAMPLE / "qrels.tsv")
    parsed = [ir_measures.parse_measure(m) for m in MEASURES]
    assert [p["name"] for p in report["pipelines"]] == ["bm25", "big", "small"]
    for entry in report["pipelines"]:
        run = Run.read(comparison.output / entry["run_file"])  # our rank order, as written
        expected = ir_measures.calc_aggregate(parsed, qrels, run.to_ir_measures())
        for measure, name in zip(parsed, MEASURES, strict=True):
            assert entry["metrics"][name] == pytest.approx(expected[measure], abs=1e-9), (entry["name"], name)
        per_query = {m.query_id: m.value for m in ir_measures.iter_calc([parsed[0]], qrels, run.to_ir_measures())}
        for qid, value in report["per_query"][entry["name"]][MEASURES[0]].items():
            assert value == pytest.approx(per_query.get(qid, 0.0))
    # Significance in the report = the tests on the written runs' per-query scores.
    small = report["per_query"]["small"][MEASURES[0]]
    big = report["per_query"]["big"][MEASURES[0]]
    test = paired(small, big, permutations=2000, seed=0)
    against_teacher = report["significance"]["small"]["teacher"][MEASURES[0]]
    assert against_teacher["p_ttest"] == pytest.approx(test.p_ttest)
    assert against_teacher["p_randomisation"] == pytest.approx(test.p_randomisation)
    assert set(report["significance"]) == {"big", "small"} and set(report["significance"]["big"]) == {"bm25"}


def test_same_candidates_speed_and_context(comparison):
    report = json.loads((comparison.output / "report.json").read_text())
    bm25 = Run.read(comparison.output / "bm25.trec")
    timings = {p["name"]: p["timing"] for p in report["pipelines"]}
    for name in ("big", "small"):
        run = Run.read(comparison.output / f"{name}.trec")
        assert set(run) == set(bm25)
        for qid in run:  # the same candidates: top 30 reranked, the rest in BM25 order
            assert {d for d, _ in run[qid][:30]} == {d for d, _ in bm25[qid][:30]}
            assert [d for d, _ in run[qid][30:]] == [d for d, _ in bm25[qid][30:]]
        t = timings[name]
        assert t["pairs"] == sum(min(len(r), 30) for r in bm25.rankings.values())
        assert t["pairs_per_s"] > 0 and t["latency_p95_ms"] >= t["latency_p50_ms"] > 0
        assert t["rounds"] == 5  # 30 queries in rounds of 7, interleaved
    speedups = {p["name"]: p["speedup_vs_teacher"] for p in report["pipelines"]}
    assert speedups["big"] == pytest.approx(1.0)
    per_s = {name: t["pairs"] / t["wall_s"] for name, t in timings.items() if name != "bm25"}  # the JSON's are rounded
    assert speedups["small"] == pytest.approx(per_s["small"] / per_s["big"], rel=1e-5)
    spread = {p["name"]: p["speedup_rounds"] for p in report["pipelines"]}
    assert spread["bm25"] is None and spread["big"]["median"] == pytest.approx(1.0) and spread["big"]["low"] == 1.0
    small = spread["small"]
    assert small["rounds"] == 5 and small["low"] <= small["median"] <= small["high"]
    rounds = [timings[n][key] for n in ("small", "big") for key in ("round_pairs", "round_wall_s")]
    ratios = sorted((p / s) / (bp / bs) for p, s, bp, bs in zip(*rounds, strict=True))
    assert small["median"] == pytest.approx(ratios[2], rel=1e-4, abs=5e-5)  # 5 rounds: the middle; 4 decimals
    assert (small["low"], small["high"]) == pytest.approx((ratios[0], ratios[-1]), rel=1e-4, abs=5e-5)
    exact = comparison.speedup_spread(comparison.pipeline("small"))  # the JSON's values are rounded
    assert f"{exact.median:.2f}x [{exact.low:.2f}-{exact.high:.2f}]" in (comparison.output / "report.md").read_text()
    assert report["environment"]["versions"]["torch"] and report["environment"]["cpu_count"]
    assert report["config"]["rerank"]["depth"] == 30 and report["num_queries"] == 30
    assert report["significance_marks"]["significance_level"] == 0.05
    assert [p["model_info"].get("layers") for p in report["pipelines"]] == [None, 2, 1]


def test_bm25_is_cached_and_an_interruption_leaves_no_report(comparison, tiny_models, sample_index, monkeypatch):
    from pipeline.rerank.stage import Reranker

    out = comparison.output
    config = write_config(out.parent, tiny_models, sample_index)
    calls = {"n": 0}
    real = Reranker.rerank

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # warm-up x2, then round 1 of both rerankers, then round 2 of the first
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(Reranker, "rerank", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compare(config, output=out, progress=False)
    assert not any((out / name).exists() for name in ("report.md", "report.json", "effectiveness_vs_speed.png"))
    assert json.loads((out / "bm25.trec.json").read_text())["key"]["hits"] == 40  # the finished first stage stays
    partial = {p.name: Run.read(p) for p in out.glob("*.trec.partial")}
    assert set(partial) == {"big.trec.partial", "small.trec.partial"}
    assert all(len(run) == 7 for run in partial.values())  # the finished round, usable as a run
    monkeypatch.setattr(Reranker, "rerank", real)
    again = compare(config, output=out, progress=False)
    assert again.first_stage.timing.extra["cached"] is True
    assert again.first_stage.metrics == comparison.first_stage.metrics


def test_missing_model_fails_before_any_work(tmp_path: Path, tiny_models, sample_index, capsys):
    models = dict(tiny_models, student=tmp_path / "not-trained")
    config = write_config(tmp_path, models, tmp_path / "no-index-yet")
    with pytest.raises(InputError, match="model folder of 'small' not found"):
        compare(config, output=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "no-index-yet").exists()
    assert main(["compare", "--config", str(config), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model folder of 'small' not found" in err[0]


def test_precomputed_first_stage_run_needs_no_index(comparison, tiny_models, tmp_path: Path):
    """``first_stage.run``: rerank a given run file (e.g. made elsewhere) with passages from the collection."""
    config = write_config(tmp_path, tiny_models, tmp_path / "unused")
    text = config.read_text().replace(f'index = "{tmp_path / "unused"}"', f'run = "{comparison.output / "bm25.trec"}"')
    config.write_text(text)
    result = compare(config, output=tmp_path / "out", progress=False)
    assert not (tmp_path / "unused").exists()
    assert "First stage: the run file `bm25.trec`" in (tmp_path / "out" / "report.md").read_text()
    assert result.first_stage.metrics == comparison.first_stage.metrics
    reranked, bm25 = Run.read(tmp_path / "out" / "small.trec"), Run.read(comparison.output / "bm25.trec")
    assert reranked.rankings.keys() == bm25.rankings.keys()
    config.write_text(text.replace("hits = 40", f'hits = 40\nindex = "{tmp_path}"'))
    with pytest.raises(InputError, match="exactly one of 'index'"):
        compare(config, output=tmp_path / "out2", progress=False)


def test_a_student_weighed_against_the_first_stage(comparison, tiny_models, tmp_path: Path):
    """``interpolation = W`` in a model's table: its run is ``rerank --interpolation W`` of the same candidates,
    and the report says so; the other models keep their own scores."""
    config = write_config(tmp_path, tiny_models, tmp_path / "unused")
    bm25 = comparison.output / "bm25.trec"
    mixed_student = f'[[students]]\nname = "small-mixed"\nmodel = "{tiny_models["student"]}"\ninterpolation = 0.5\n'
    config.write_text(config.read_text().replace(f'index = "{tmp_path / "unused"}"', f'run = "{bm25}"') + mixed_student)
    compare(config, output=tmp_path / "out", progress=False)
    out = tmp_path / "out"
    first, topics, store = Run.read(bm25), read_topics(SAMPLE / "queries.tsv"), DocStore(SAMPLE / "passages.tsv")
    expected, _ = rerank_run(CrossEncoder(tiny_models["student"], device="cpu"), first, topics, store, depth=30,
                             interpolation=0.5)
    mixed = Run.read(out / "small-mixed.trec")
    assert {q: [d for d, _ in r] for q, r in mixed.items()} == {q: [d for d, _ in r] for q, r in expected.items()}
    assert Run.read(out / "small.trec").rankings == Run.read(comparison.output / "small.trec").rankings
    report = json.loads((out / "report.json").read_text())
    assert {p["name"]: p["interpolation"] for p in report["pipelines"]} == {
        "bm25": None, "big": None, "small": None, "small-mixed": 0.5}
    assert "| BM25 + small-mixed (W 0.5) |" in (out / "report.md").read_text()


def test_a_hybrid_first_stage_is_compared_like_bm25(tiny_models, sample_index, sample_dense, tmp_path: Path):
    """``first_stage.kind = "hybrid"``: the same comparison over BM25 + MiniLM candidates (RRF)."""
    config = write_config(tmp_path, tiny_models, sample_index)
    config.write_text(config.read_text().replace(
        "hits = 40", f'hits = 40\nkind = "hybrid"\ndense = "{sample_dense}"\nfusion = "rrf"'))
    result = compare(config, output=tmp_path / "out", progress=False)
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert [p["name"] for p in report["pipelines"]] == ["hybrid", "big", "small"]
    assert report["pipelines"][0]["kind"] == "first_stage" and report["pipelines"][0]["run_file"] == "hybrid.trec"
    assert set(report["significance"]["big"]) == {"hybrid"}
    assert set(report["significance"]["small"]) == {"hybrid", "teacher"}
    md = (out / "report.md").read_text()
    assert "| Hybrid + small" in md and "fused by rrf (k=60)" in md and "from Hybrid" in md
    hybrid = Run.read(out / "hybrid.trec")
    qrels = read_qrels(SAMPLE / "qrels.tsv")
    expected = ir_measures.calc_aggregate([ir_measures.parse_measure("nDCG@10")], qrels, hybrid.to_ir_measures())
    assert result.first_stage.metrics["nDCG@10"] == pytest.approx(list(expected.values())[0])
