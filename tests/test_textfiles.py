"""The one text-reading rule: UTF-8, a byte-order mark dropped, CRLF handled, bad bytes located by line."""
from __future__ import annotations

import bz2
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.io.textfiles import iter_lines, read_text


def test_bom_dropped_and_crlf_handled_lone_cr_kept(tmp_path: Path):
    path = tmp_path / "q.tsv"
    path.write_bytes(b"\xef\xbb\xbf1\tfirst\r\n2\tsecond\rstill second\n\n3\tthird")
    assert list(iter_lines(path)) == [(1, "1\tfirst"), (2, "2\tsecond\rstill second"), (3, ""), (4, "3\tthird")]


def test_invalid_utf8_is_located_by_line_even_far_into_the_file(tmp_path: Path):
    path = tmp_path / "run.trec"
    path.write_bytes(b"".join(f"q Q0 d{i} {i} 1.0 t\n".encode() for i in range(1, 5000)) + b"q Q0 \xff 1 1.0 t\n")
    with pytest.raises(InputError) as err:
        list(iter_lines(path))
    assert str(err.value) == f"{path}:5000: line is not valid UTF-8"


def test_bz2_files_follow_the_same_rule(tmp_path: Path):
    path = tmp_path / "run.txt.bz2"
    path.write_bytes(bz2.compress(b"\xef\xbb\xbf1\t2\t1\r\n"))
    assert list(iter_lines(path, bz2.open)) == [(1, "1\t2\t1")]
    path.write_bytes(bz2.compress(b"1\t2\t1\n1\t\xe9\t2\n"))
    with pytest.raises(InputError, match=r"run.txt.bz2:2: line is not valid UTF-8"):
        list(iter_lines(path, bz2.open))


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "file not found"),
    (lambda p: p.mkdir(), "is a folder; expected a file"),
])
def test_missing_or_folder(tmp_path: Path, make, message: str):
    path = tmp_path / "x.tsv"
    make(path)
    with pytest.raises(InputError, match=message):
        list(iter_lines(path))
    with pytest.raises(InputError, match=message):
        read_text(path)


def test_read_text_whole_file(tmp_path: Path):
    path = tmp_path / "meta.json"
    path.write_bytes(b'\xef\xbb\xbf{"team": "x"}\r\n')
    assert read_text(path) == '{"team": "x"}\r\n'
    path.write_bytes(b'{\n"team":\n"\xe9"}\n')
    with pytest.raises(InputError, match=r"meta.json:3: line is not valid UTF-8"):
        read_text(path)


def test_an_id_is_one_token():
    from pipeline.io.textfiles import checked_id

    assert checked_id(" 7 ", "document id", "c.tsv", 3) == "7"
    for bad, message in (("7 8", r"c.tsv:3: document id '7 8' holds whitespace"), ("7\u00a08", "holds whitespace"),
                         ("  ", r"c.tsv:3: empty document id")):
        with pytest.raises(InputError, match=message):
            checked_id(bad, "document id", "c.tsv", 3)
