"""The demo's orchestration end to end (real pretrained MiniLM, one training step per phase)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.experiment.demo import SAMPLE_DIR as SAMPLE
from pipeline.experiment.demo import DemoSettings, run_demo
from pipeline.io.data import DocStore


def test_demo_trains_both_models_and_writes_the_report(tmp_path: Path, minilm_path: Path, private_cache: Path, caplog):
    settings = DemoSettings(max_steps=1, score_depth=8, boot_group=4, boot_batch=2, lce_batch=2, student_group=4,
                            student_batch=2, max_length=96)
    config = tmp_path / "demo-small.toml"  # the demo preset, fewer candidates to rerank
    config.write_text('name = "demo-small"\npreset = "demo"\n[rerank]\ndepth = 10\nwarmup_queries = 1\n')
    caplog.set_level(logging.INFO, logger="pipeline")
    comparison = run_demo(output=tmp_path / "runs", models=tmp_path / "models", progress=False, settings=settings,
                          config=config)
    teacher, student = comparison.teacher, comparison.pipeline("student-2L")
    assert Path(teacher.model).parent == tmp_path / "models"
    assert teacher.model_info["layers"] == 6 and student.model_info["layers"] == 2
    assert (Path(student.model) / "config.json").is_file()
    info = json.loads((Path(student.model) / "distilrank_train.json").read_text())
    assert info["config"]["random_negatives"] == 0  # the demo's measured choice (DemoSettings)
    report = json.loads((tmp_path / "runs" / "report.json").read_text())
    assert [p["name"] for p in report["pipelines"]] == ["bm25", "teacher-6L", "student-2L"]
    assert (tmp_path / "runs" / "effectiveness_vs_speed.png").is_file()
    assert any("training queries" in message for message in caplog.messages)
    store = DocStore(SAMPLE / "passages.tsv")
    assert store._cache_path().parent == private_cache and store._cache_path().is_file()  # not in ~/.cache
    # A second run reuses the trained models and the cached BM25 run.
    caplog.clear()
    again = run_demo(output=tmp_path / "runs", models=tmp_path / "models", progress=False, settings=settings,
                     config=config)
    assert any(message.startswith("reusing the trained") for message in caplog.messages)
    assert again.first_stage.timing.extra["cached"] is True
