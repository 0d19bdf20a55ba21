"""Journals: finished chunks survive a kill (a torn last line is dropped), other inputs are refused."""
from __future__ import annotations

import pytest

from pipeline.errors import InputError
from pipeline.runtime.journal import Journal, identity, journal_path, open_journal


def test_records_come_back_in_order_and_a_torn_last_line_is_cut_off(tmp_path):
    path = tmp_path / "out.journal"
    journal = Journal(path, {"inputs": {"run": "abc"}, "depth": 3})
    journal.append({"chunk": 0, "x": [1.5, 0.1 + 0.2]})
    journal.append({"chunk": 1, "x": []})
    with open(path, "ab") as handle:  # killed while writing chunk 2
        handle.write(b'{"chunk":2,"x":[0.')
    again = Journal(path, {"inputs": {"run": "abc"}, "depth": 3}, resume=True)
    assert len(again) == 2
    assert [r["chunk"] for r in again] == [0, 1]
    assert next(iter(again))["x"] == [1.5, 0.1 + 0.2]  # floats round-trip exactly
    again.append({"chunk": 2, "x": [7]})
    assert [r["chunk"] for r in Journal(path, {"inputs": {"run": "abc"}, "depth": 3}, resume=True)] == [0, 1, 2]


def test_another_runs_journal_is_refused_naming_the_difference(tmp_path):
    path = tmp_path / "out.journal"
    Journal(path, {"inputs": {"run": {"sha1": "aaa"}}, "depth": 3})
    with pytest.raises(InputError, match=r"inputs\.run\.sha1: the journal has 'aaa', this run 'bbb'") as err:
        Journal(path, {"inputs": {"run": {"sha1": "bbb"}}, "depth": 3}, resume=True)
    assert err.value.line == 1
    with pytest.raises(InputError, match="--resume"):  # a fresh run never overwrites a journal
        Journal(path, {"inputs": {"run": {"sha1": "aaa"}}, "depth": 3})
    (tmp_path / "other.journal").write_text("qid\tdocid\n")
    with pytest.raises(InputError, match="not a distilrank journal"):
        Journal(tmp_path / "other.journal", {}, resume=True)


def test_resume_without_a_journal_starts_from_the_beginning(tmp_path):
    journal = Journal(tmp_path / "sub" / "out.journal", {"a": 1}, resume=True)
    assert len(journal) == 0 and list(journal) == []
    journal.remove()
    assert not (tmp_path / "sub" / "out.journal").exists()


def test_journals_of_another_number_of_processes_are_refused(tmp_path):
    output = tmp_path / "run.trec"
    assert journal_path(output) == tmp_path / "run.trec.journal"
    assert journal_path(output, 1, 2) == tmp_path / "run.trec.rank1-of-2.journal"
    open_journal(output, {"a": 1}, resume=False, rank=1, world_size=2)
    open_journal(output, {"a": 1}, resume=True, rank=0, world_size=2)  # its sibling: fine
    with pytest.raises(InputError, match=r"another number of processes.*rank0-of-2"):
        open_journal(output, {"a": 1}, resume=True)
    (tmp_path / "run.trec.rankings.journal").write_text("")  # another output's journal is not ours
    open_journal(output, {"a": 1}, resume=True, rank=0, world_size=2)


def test_identity_names_content_not_just_the_path(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "w.bin").write_bytes(b"\0" * 10)
    first = identity(tmp_path / "m")
    assert first["bytes"] == 12 and len(first["sha1"]) == 40
    (tmp_path / "m" / "w.bin").write_bytes(b"\1" * 10)
    assert identity(tmp_path / "m")["sha1"] != first["sha1"]
    with pytest.raises(InputError, match="not found"):
        identity(tmp_path / "absent.tsv")


def test_a_damaged_or_repeated_record_is_refused_by_line_and_the_journal_kept(tmp_path):
    path = tmp_path / "out.journal"
    journal = Journal(path, {"depth": 3})
    for chunk in range(3):
        journal.append({"chunk": chunk, "x": [chunk]})
    lines = path.read_bytes().splitlines(keepends=True)
    for damaged, line, message in [(lines[2].replace(b"[1]", b"[7]"), 3, "checksum does not match"),
                                   (lines[1], 3, "chunk 0 is recorded twice .first on line 2.")]:
        content = b"".join([*lines[:2], damaged, *lines[3:]])
        path.write_bytes(content)
        with pytest.raises(InputError, match=message) as err:
            Journal(path, {"depth": 3}, resume=True)
        assert err.value.line == line and "keep its first 2 lines" in str(err.value)
        assert path.read_bytes() == content  # nothing cut off


def test_bad_input_drops_the_journal_but_a_refusal_of_the_journal_keeps_it(tmp_path):
    journal = Journal(tmp_path / "out.journal", {})
    journal.append({"chunk": 0})
    with pytest.raises(InputError), journal.dropped_on_bad_input():
        raise journal.damaged(2, "chunk 0 is not one of this run's")
    assert journal.path.is_file()
    with pytest.raises(InputError), journal.dropped_on_bad_input():
        raise InputError("a bad input", tmp_path / "run.trec")
    assert not journal.path.exists()
