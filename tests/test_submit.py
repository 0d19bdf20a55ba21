"""Leaderboard submissions: the writer, the validator on good and broken runs, the official MRR@10."""
from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.eval.evaluate import evaluate
from pipeline.eval.submit import load_metadata, placeholder_fields, validate_run, write_submission
from pipeline.io.data import read_qrels
from pipeline.io.runs import Run

TOPICS = {"1": "first query", "2": "second query", "3": "third query"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def topics_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "topics.tsv", "".join(f"{q}\t{t}\n" for q, t in TOPICS.items()))


def _run(n: int = 5) -> Run:
    return Run({q: [(str(100 * int(q) + i), 10.0 - i) for i in range(n)] for q in TOPICS}, "r")


# ---- writer -----------------------------------------------------------------------------------------


def test_submission_is_bz2_msmarco_format_with_metadata(tmp_path: Path):
    meta = {"team": "Team X", "model_description": "BM25 + 2-layer student", "code": "https://example.org/code"}
    run_path, meta_path = write_submission(_run(), tmp_path / "sub", meta)
    assert run_path.name == "dev.txt.bz2"
    lines = bz2.decompress(run_path.read_bytes()).decode().splitlines()
    assert lines[:3] == ["1\t100\t1", "1\t101\t2", "1\t102\t3"]
    assert len(lines) == 15
    written = json.loads(meta_path.read_text())
    assert written == {"team": "Team X", "model_description": "BM25 + 2-layer student", "paper": "",
                       "code": "https://example.org/code", "type": "reranking"}
    assert validate_run(run_path, topics=TOPICS).valid


def test_submission_keeps_at_most_1000_passages_per_query(tmp_path: Path):
    run_path, _ = write_submission(_run(1200), tmp_path / "sub", split="eval")
    assert run_path.name == "eval.txt.bz2"
    result = validate_run(run_path)
    assert result.valid and result.num_rows == 3000


def test_default_metadata_has_placeholders_to_fill_in():
    meta = load_metadata(None)
    assert meta["type"] == "reranking"
    assert placeholder_fields(meta) == ["team", "model_description"]
    assert placeholder_fields(load_metadata('{"team": "T", "model_description": "M"}')) == []


def test_bad_metadata_is_refused_before_writing(tmp_path: Path):
    with pytest.raises(InputError, match="unknown metadata field"):
        write_submission(_run(), tmp_path / "sub", {"teem": "typo"})
    with pytest.raises(InputError, match="type must be one of"):
        write_submission(_run(), tmp_path / "sub", {"type": "dense"})
    bad = _write(tmp_path / "meta.json", '{"team": "x",\n  oops}')
    with pytest.raises(InputError, match=r"meta.json:2: not valid JSON"):
        load_metadata(bad)
    assert not (tmp_path / "sub").exists()


# ---- validator --------------------------------------------------------------------------------------


def test_every_problem_of_a_broken_run_is_reported(tmp_path: Path):
    rows = [
        "1\t100\t1", "1\t101\t2", "1\t100\t3",  # pid 100 twice
        "2\t200\t2", "2\t201\t3",  # starts at rank 2
        "4\t400\t1", "4\t401\t1", "4\t402\t4",  # rank 1 twice, gap 1 -> 4; query 4 not in the topics
        "x5\t500\t1",  # non-numeric qid
        "6 600 1",  # not tab-separated
    ]
    path = _write(tmp_path / "broken.tsv", "\n".join(rows) + "\n")
    result = validate_run(path, topics=TOPICS)
    assert not result.valid
    assert set(result.counts) == {
        "passage ranked twice for a query", "ranks do not start at 1", "rank used twice for a query",
        "gap in ranks", "query not in the topics", "query of the topics missing from the run",
        "non-numeric id or rank", "not 'qid<TAB>pid<TAB>rank'",
    }
    text = "\n".join(result.reasons())
    assert "query 1, pid 100" in text and "query 4: rank 1 then 4" in text and "query 3" in text
    assert "line 9" in text and "line 10" in text


def test_more_than_1000_passages_and_bz2_input(tmp_path: Path):
    path = tmp_path / "long.txt.bz2"
    path.write_bytes(bz2.compress("".join(f"1\t{i}\t{i + 1}\n" for i in range(1001)).encode()))
    result = validate_run(path)
    assert list(result.counts) == ["more than 1000 passages for a query"]


def test_official_mrr10_on_a_hand_made_example(tmp_path: Path):
    # Relevant passages: q1 -> 11 (ranked 1st), q2 -> 21, 22 (first found at rank 3), q3 -> 31 (ranked 11th:
    # outside the top 10), q4 -> 41 (query not in the run). Query 9 is ranked but has no judgments: ignored.
    # Official MRR@10 = (1 + 1/3 + 0 + 0) / 4 queries of the qrels.
    qrels_path = _write(tmp_path / "qrels.tsv", "1 0 11 1\n2 0 21 1\n2 0 22 1\n3 0 31 1\n4 0 41 1\n")
    rows = ["1\t11\t1", "1\t12\t2", "2\t23\t1", "2\t24\t2", "2\t22\t3", "2\t21\t4"]
    rows += [f"3\t{300 + r}\t{r}" for r in range(1, 11)] + ["3\t31\t11", "9\t91\t1"]
    path = _write(tmp_path / "run.tsv", "\n".join(rows) + "\n")
    qrels = read_qrels(qrels_path)
    result = validate_run(path, qrels=qrels)
    assert result.valid
    assert result.mrr10 == pytest.approx((1 + 1 / 3) / 4)
    # Binary qrels: the same as ir-measures' RR@10 over the qrels' queries (unranked queries count 0).
    assert evaluate(Run.read(path), qrels, ["RR@10"])["RR@10"] == pytest.approx(result.mrr10)


# ---- CLI ------------------------------------------------------------------------------------------------


def test_cli_submit_then_validate(tmp_path: Path, topics_file: Path, capsys):
    run_file = tmp_path / "run.trec"
    _run().write(run_file)
    qrels = _write(tmp_path / "qrels.tsv", "1 0 100 1\n2 0 202 1\n3 0 399 1\n")
    assert main(["submit", "--run", str(run_file), "--out", str(tmp_path / "sub")]) == 0
    out = capsys.readouterr().out
    assert "fill in team, model_description" in out
    assert main(["validate", "--run", str(tmp_path / "sub" / "dev.txt.bz2"), "--topics", str(topics_file),
                 "--qrels", str(qrels)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and f"MRR @10: {(1 + 1 / 3) / 3:.4f}" in out


def test_cli_validate_exits_2_with_reasons(tmp_path: Path, topics_file: Path, capsys):
    path = _write(tmp_path / "bad.tsv", "1\t100\t1\n1\t101\t3\n")
    assert main(["validate", "--run", str(path), "--topics", str(topics_file)]) == 2
    out = capsys.readouterr().out
    assert "INVALID" in out and "gap in ranks" in out and "query of the topics missing from the run x2" in out
