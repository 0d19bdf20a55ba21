"""The distillation study's phases on a tiny 6-layer BERT and generated data: every phase writes its row into the
state, a second call skips what is finished, ``--budget`` stops between phases, the table is written, and the
packed state (what a later GPU call needs) unpacks to the same rows."""
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("distill_study", ROOT / "benchmarks" / "distill_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["distill_study"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["distill_study"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory, tiny_bert, tiny_data):
    """The subset's file layout (benchmarks/prepare_gpu_inputs.py) made of generated data: 8 labeled queries, 4 of
    them held out, and the same 8 again under other ids as the unlabeled dev queries."""
    root = tmp_path_factory.mktemp("study")
    made = tiny_data(root / "made", queries=8, per_query=12)
    data, runs = root / "data", root / "runs"
    data.mkdir()
    runs.mkdir()
    shutil.copy(made["collection"], data / "collection.tsv")
    shutil.copy(made["topics"], data / "queries.dl20.tsv")
    (data / "queries.dev.small.tsv").write_text("".join("9" + line + "\n" for line in
                                                         made["topics"].read_text().splitlines()))
    shutil.copy(made["qrels"], data / "qrels.dl20.tsv")
    (data / "heldout.qids").write_text("100\n102\n104\n106\n")
    shutil.copy(made["run"], runs / "dl20.bm25.trec")
    (runs / "dev.bm25.trec").write_text("".join("9" + line + "\n" for line in made["run"].read_text().splitlines()))
    base = tiny_bert(root / "base", layers=6, labels=None)
    return root, data, runs, base


def _args(layout, *extra: str) -> list[str]:
    root, data, runs, base = layout
    return ["--data", str(data), "--runs", str(runs), "--minilm", str(base), "--state", str(root / "state"),
            "--device", "cpu", "--sample-scale", "--max-length", "48", "--eval-every", "1", "--eval-depth", "6",
            *extra]


def test_phases_rows_skip_budget_table_and_pack(study, layout, capsys):
    root = layout[0]
    results = root / "results" / "study.md"
    students = "2L,2L-mean-head,2L-random-negatives,2L-fine-tune"
    assert study.main(_args(layout, "--phases", "speed,references,teacher,scores,students", "--students",
                            students)) == 0
    state = root / "state"
    rows = {p.stem for p in (state / "rows").glob("*.json")}
    assert {"speed", "ref-bm25", "ref-random", "ref-biencoder", "teacher", "scores", "student-2L",
            "student-2L-mean-head", "student-2L-random-negatives", "student-2L-fine-tune"} <= rows
    speed = json.loads((state / "rows" / "speed.json").read_text())
    assert set(speed["train pairs/s"]) == {"6", "3", "2"} and 0 <= speed["truncated share"]["48"] <= 1
    scores = json.loads((state / "rows" / "scores.json").read_text())
    assert scores["random_negatives"] == 2 and scores["queries"] == 8 + 4  # dev + labeled training queries
    assert not any((state / "work").iterdir())  # finished students leave only their row and log
    for log in ("2L", "teacher-bootstrap", "teacher-lce"):  # every ranking phase has its held-out curve
        records = [json.loads(line) for line in (state / "logs" / f"{log}.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if r.get("event") == "eval"][0] == 0
    capsys.readouterr()

    # a second call skips every finished phase; a budget of 0 s stops before the next one
    assert study.main(_args(layout, "--phases", "teacher,students", "--students", "2L,2L-bottom-layers",
                            "--budget", "0")) == 0
    out = capsys.readouterr().out
    assert "== teacher" not in out and "stopping before students 2L-bottom-layers" in out
    assert json.loads((state / "scale.json").read_text())["max_length"] == 48

    assert study.main(_args(layout, "--phases", "table", "--results", str(results))) == 0
    report = results.read_text()
    assert "2L-mean-head" in report and "Target: teacher >= BM25 + 0.10" in report
    assert (root / "results" / "study_levers.png").is_file()

    parts = root / "parts"
    assert study.main(["--state", str(state), "--pack", str(parts)]) == 0
    assert all(p.stat().st_size <= 15 * 2**20 for p in parts.iterdir())
    restored = root / "restored"
    assert study.main(["--state", str(restored), "--unpack", str(parts)]) == 0
    assert {p.name for p in (restored / "rows").iterdir()} == {p.name for p in (state / "rows").iterdir()}
    assert (restored / "teacher" / "model.safetensors").is_file() and (restored / "scores" / "teacher.scores").is_file()
    from pipeline.rerank.cross_encoder import CrossEncoder

    CrossEncoder(restored / "teacher", device="cpu")  # the bf16 teacher loads
