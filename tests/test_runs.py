"""Run: reading and writing TREC and MS MARCO formats, ordering, atomic writes, bad input."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.io.runs import Run


def test_from_scores_sorts_descending_and_keeps_ties_in_input_order():
    run = Run.from_scores({"q1": [("a", 1.0), ("b", 3.0), ("c", 1.0), ("d", 2.0)]})
    assert [d for d, _ in run["q1"]] == ["b", "d", "a", "c"]


@pytest.mark.parametrize("fmt", ["trec", "msmarco"])
def test_write_then_read_round_trip(tmp_path: Path, fmt: str):
    run = Run.from_scores({"1": [("d1", 2.5), ("d2", 1.25)], "2": [("d3", 0.5)]})
    path = run.write(tmp_path / f"run.{fmt}", fmt=fmt, tag="t")
    back = Run.read(path)
    assert {q: [d for d, _ in r] for q, r in back.items()} == {"1": ["d1", "d2"], "2": ["d3"]}
    if fmt == "trec":
        assert back["1"] == [("d1", 2.5), ("d2", 1.25)]
        assert path.read_text().splitlines()[0] == "1 Q0 d1 1 2.500000 t"
    else:
        assert path.read_text().splitlines()[0] == "1\td1\t1"


def test_read_orders_by_rank_not_file_order(tmp_path: Path):
    path = tmp_path / "run.trec"
    path.write_text("q Q0 b 2 5.0 x\nq Q0 a 1 5.0 x\nq Q0 c 3 4.0 x\n")
    assert [d for d, _ in Run.read(path)["q"]] == ["a", "b", "c"]


def test_ties_evaluate_in_our_order(tmp_path: Path):
    """Tied scores must not be re-broken by the evaluation tool (trec_eval sorts ties by docid)."""
    run = Run({"q": [("a", 1.0), ("z", 1.0)]})
    encoded = run.to_ir_measures()["q"]
    assert encoded["a"] > encoded["z"]


@pytest.mark.parametrize(
    "content, message, line",
    [
        ("q Q0 a 1 1.0 x\nq Q0 a 2 0.5 x\n", "duplicate docid a", 2),
        ("q Q0 a 1 1.0\n", "TREC run format", 1),
        ("q Q0 a one 1.0 x\n", "not a number", 1),
        ("q\ta\t1\nq\tb\n", "MS MARCO run format", 2),
        ("q Q0 a 1 nan x\n", "NaN", 1),
    ],
)
def test_bad_runs_name_file_and_line(tmp_path: Path, content: str, message: str, line: int):
    path = tmp_path / "bad.trec"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        Run.read(path)
    assert message in str(err.value)
    assert f"{path}:{line}:" in str(err.value)


def test_missing_run_file(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        Run.read(tmp_path / "nope.trec")


def test_write_is_atomic_no_partial_file_on_nan(tmp_path: Path):
    run = Run({"q": [("a", 1.0), ("b", float("nan"))]})
    target = tmp_path / "out.trec"
    with pytest.raises(ValueError, match="NaN"):
        run.write(target)
    assert list(tmp_path.iterdir()) == []


def test_top_and_subset():
    run = Run({"1": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "2": [("d", 1.0)]})
    assert run.top(2)["1"] == [("a", 3.0), ("b", 2.0)]
    assert list(run.subset(["2", "9"])) == ["2"]
    assert run.num_pairs == 4


@pytest.mark.parametrize("fmt", ["trec", "msmarco"])
def test_a_run_scanned_in_byte_ranges_gives_the_spans_of_the_whole_file(tmp_path: Path, fmt: str):
    from pipeline.io.runs import iter_run_rows, join_spans, query_spans

    run = Run.from_scores({q: [(f"d{q}{i}", float(-i)) for i in range(n)] for q, n in (("7", 3), ("10", 1),
                                                                                        ("2", 4), ("31", 2))})
    path = run.write(tmp_path / "run.txt", fmt=fmt)
    path.write_text("\n" + path.read_text().replace("\n", "\n\n", 1))  # blank lines before and inside a query
    size = path.stat().st_size
    whole = join_spans([query_spans(path, 0, size)], path)
    assert whole[0] == 1 and [(s.qid, s.rows) for s in whole[1]] == [("7", 3), ("10", 1), ("2", 4), ("31", 2)]
    for parts in (2, 3, 7, size):  # cuts anywhere, mid-line included
        cuts = [size * i // parts for i in range(parts + 1)]
        assert join_spans([query_spans(path, cuts[i], cuts[i + 1]) for i in range(parts)], path) == whole
    lineno = 1 + whole[0]
    for span in whole[1]:  # each span read alone gives its query's rows, numbered as in the file
        rows = list(iter_run_rows(path, span.offset, lineno, span.lines))
        assert {r[1] for r in rows} == {span.qid} and len(rows) == span.rows and rows[0][0] == lineno
        lineno += span.lines
    path.write_text(path.read_text() + next(run.lines(fmt)))  # query 7 again at the end
    with pytest.raises(InputError, match="query 7 appears again"):
        join_spans([query_spans(path, 0, size // 2), query_spans(path, size // 2, path.stat().st_size)], path)


def test_ids_that_could_not_be_read_back_are_neither_read_nor_written(tmp_path: Path):
    path = tmp_path / "run.tsv"
    path.write_text("1\t7\t1\n1\t7 8\t2\n")  # MS MARCO fields are split at tabs: a docid could hold a space
    with pytest.raises(InputError, match=r"run.tsv:2: docid '7 8' holds whitespace"):
        Run.read(path)
    for qid, docid in (("q 1", "7"), ("1", "a\tb"), ("1", "")):
        with pytest.raises(ValueError, match="empty or holds whitespace"):
            Run({qid: [(docid, 1.0)]}).write(tmp_path / "out.trec")
    assert not (tmp_path / "out.trec").exists()
