"""The demo's orchestration end to end (real pretrained MiniLM, one training step per phase)."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.demo import DemoSettings, run_demo


def test_demo_trains_both_models_and_writes_the_report(tmp_path: Path, minilm_path: Path):
    settings = DemoSettings(max_steps=1, depth=8, boot_group=4, boot_batch=2, lce_batch=2, student_group=4,
                            student_batch=2, max_length=96)
    config = tmp_path / "demo-small.toml"  # the demo preset, fewer candidates to rerank
    config.write_text('name = "demo-small"\npreset = "demo"\n[rerank]\ndepth = 10\nwarmup_queries = 1\n')
    lines: list[str] = []
    comparison = run_demo(output=tmp_path / "runs", models=tmp_path / "models", progress=False, log=lines.append,
                          settings=settings, config=config)
    teacher, student = comparison.teacher, comparison.pipeline("student-2L")
    assert Path(teacher.model).parent == tmp_path / "models"
    assert teacher.model_info["layers"] == 6 and student.model_info["layers"] == 2
    assert (Path(student.model) / "config.json").is_file()
    report = json.loads((tmp_path / "runs" / "report.json").read_text())
    assert [p["name"] for p in report["pipelines"]] == ["bm25", "teacher-6L", "student-2L"]
    assert (tmp_path / "runs" / "effectiveness_vs_speed.png").is_file()
    assert any("training queries" in line for line in lines)
    # A second run reuses the trained models and the cached BM25 run.
    lines.clear()
    again = run_demo(output=tmp_path / "runs", models=tmp_path / "models", progress=False, log=lines.append,
                     settings=settings, config=config)
    assert any(line.startswith("reusing the trained") for line in lines)
    assert again.bm25.timing["cached"] is True
