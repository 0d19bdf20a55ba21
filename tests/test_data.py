"""Topics, qrels and collection readers; the offset-indexed docstore."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.io.data import DocStore, is_graded, iter_collection, read_qrels, read_topics


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DISTILRANK_CACHE", str(tmp_path / "cache"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_topics(tmp_path: Path):
    topics = read_topics(write(tmp_path / "q.tsv", "1\twhat is bm25\n2\t  padded query \n"))
    assert topics == {"1": "what is bm25", "2": "padded query"}


@pytest.mark.parametrize(
    "content, message, line",
    [("1\tok\n2\t \n", "empty query", 2), ("1\ta\n1\tb\n", "duplicate query id 1", 2),
     ("no tab here\n", "qid<TAB>query", 1)],
)
def test_bad_topics(tmp_path: Path, content: str, message: str, line: int):
    path = write(tmp_path / "q.tsv", content)
    with pytest.raises(InputError) as err:
        read_topics(path)
    assert message in str(err.value) and f"{path}:{line}:" in str(err.value)


def test_read_qrels_graded_and_binary(tmp_path: Path):
    graded = read_qrels(write(tmp_path / "g.txt", "1 0 a 3\n1 0 b 0\n2 0 c 1\n"))
    assert graded == {"1": {"a": 3, "b": 0}, "2": {"c": 1}}
    assert is_graded(graded)
    assert not is_graded(read_qrels(write(tmp_path / "b.txt", "1 0 a 1\n")))


def test_qrels_naming_unknown_query(tmp_path: Path):
    path = write(tmp_path / "q.txt", "1 0 a 1\n7 0 b 1\n")
    with pytest.raises(InputError, match=r"q.txt:2: qrels name query 7"):
        read_qrels(path, topics={"1": "x"})


@pytest.mark.parametrize("content, message", [("1 0 a\n", "TREC qrels"), ("1 0 a x\n", "not an integer")])
def test_bad_qrels(tmp_path: Path, content: str, message: str):
    with pytest.raises(InputError, match=message):
        read_qrels(write(tmp_path / "q.txt", content))


def test_named_topics_fail_fast_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    import pipeline.io.data as data

    def offline(*_):
        raise InputError("could not load named topics 'dl20-passage'; offline, pass the file instead: queries.dl20.tsv")

    monkeypatch.setattr(data, "_pyserini_named", offline)
    with pytest.raises(InputError, match="queries.dl20.tsv"):
        read_topics("dl20-passage")


def test_docstore_tsv(tmp_path: Path):
    path = write(tmp_path / "c.tsv", "10\tten\n2\ttwo words\n007\tbond\n")
    with DocStore(path) as store:
        assert len(store) == 3
        assert store.get_many(["2", "10", "007"]) == ["two words", "ten", "bond"]
        assert "7" not in store and "007" in store
        assert store.missing(["2", "3", "x"]) == ["3", "x"]
        with pytest.raises(KeyError):
            store.get("3")


def test_docstore_string_ids_and_jsonl(tmp_path: Path):
    rows = [{"id": "doc-b", "contents": "bee"}, {"id": "doc-a", "contents": "ay\ttab"}]
    path = write(tmp_path / "c.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    store = DocStore(path)
    assert store.get_many(["doc-a", "doc-b"]) == ["ay\ttab", "bee"]
    assert list(iter_collection(path)) == [("doc-b", "bee"), ("doc-a", "ay\ttab")]


def test_docstore_index_is_cached_and_rebuilt_when_file_changes(tmp_path: Path):
    path = write(tmp_path / "c.tsv", "1\tone\n")
    DocStore(path)
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1
    write(path, "1\tone\n2\ttwo and more\n")
    assert DocStore(path).get("2") == "two and more"


@pytest.mark.parametrize(
    "content, message, line",
    [("1\ta\n2\tb\n1\tc\n", "duplicate document id 1 (first on line 1)", 3), ("1\ta\nbroken\n", "pid<TAB>passage", 2)],
)
def test_docstore_bad_collection(tmp_path: Path, content: str, message: str, line: int):
    path = write(tmp_path / "c.tsv", content)
    with pytest.raises(InputError) as err:
        DocStore(path)
    assert message in str(err.value) and f"{path}:{line}:" in str(err.value)


def test_jsonl_bad_line(tmp_path: Path):
    path = write(tmp_path / "c.jsonl", '{"id": "a", "contents": "x"}\n{"id": "b"}\n')
    with pytest.raises(InputError, match=r"c.jsonl:2: .*\"contents\""):
        list(iter_collection(path))


def test_docstore_on_the_real_subset(subset_dir: Path):
    store = DocStore(subset_dir / "collection.tsv")
    assert len(store) == 31362
    assert store.get("421").startswith("Wi-Fi or WiFi")


def test_read_qids_from_id_lists_and_tsv(tmp_path: Path):
    from pipeline.io.data import read_qids

    assert read_qids(write(tmp_path / "ids.txt", "# held out\n7\n3\n7\n\n")) == ["7", "3"]
    assert read_qids(write(tmp_path / "q.tsv", "5\tfirst query\n2\tsecond\n")) == ["5", "2"]
    with pytest.raises(InputError, match="no query ids"):
        read_qids(write(tmp_path / "empty.txt", "# nothing\n"))
