"""BM25 first stage on the real MS MARCO subset: effectiveness, determinism, CLI, bad input."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.eval.evaluate import evaluate
from pipeline.io.data import read_qrels, read_topics
from pipeline.io.runs import Run
from pipeline.retrieval.bm25 import BM25, IndexDocStore, build_index

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dl20(subset_dir: Path) -> tuple[dict, dict]:
    topics = read_topics(subset_dir / "queries.dl20.tsv")
    return topics, read_qrels(subset_dir / "qrels.dl20.tsv", topics)


def shuffled(run: Run, seed: int) -> Run:
    rng = random.Random(seed)
    return Run({q: rng.sample(r, len(r)) for q, r in run.items()})


def test_bm25_dl20_well_above_random_and_deterministic(subset_index: Path, dl20):
    topics, qrels = dl20
    bm25 = BM25(subset_index)
    run = bm25.batch_search(topics, k=1000, threads=2, progress=False)
    assert len(run) == 54
    ndcg = evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]
    random_ndcg = max(evaluate(shuffled(run, s), qrels, ["nDCG@10"])["nDCG@10"] for s in range(3))
    assert ndcg > 0.3 and ndcg > 2 * random_ndcg, (ndcg, random_ndcg)
    again = BM25(subset_index).batch_search(topics, k=1000, threads=1, progress=False)
    assert again.rankings == run.rankings
    # One query through the single-query path matches the batch path.
    qid = next(iter(topics))
    assert bm25.search(topics[qid], k=10) == run[qid][:10]


def test_msmarco_tuned_preset_and_docstore(subset_index: Path):
    tuned = BM25.msmarco(subset_index)
    assert (tuned.k1, tuned.b) == (0.82, 0.68)
    store = IndexDocStore.open(subset_index)
    assert store.get("421").startswith("Wi-Fi or WiFi")
    assert store.missing(["421", "no-such-doc"]) == ["no-such-doc"]
    assert len(store) == 31362


def test_missing_index_is_a_clear_error(tmp_path: Path):
    with pytest.raises(InputError, match="no Lucene index"):
        BM25(tmp_path / "nothing")


def test_index_refuses_duplicates_without_leaving_output(tmp_path: Path):
    collection = tmp_path / "c.tsv"
    collection.write_text("1\tfirst\n2\tsecond\n1\tagain\n")
    with pytest.raises(InputError, match="duplicate document id 1"):
        build_index(collection, tmp_path / "idx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tsv"]


def test_cli_retrieve_and_evaluate(subset_index: Path, subset_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "dl20.msmarco"
    assert main(["retrieve", "--index", str(subset_index), "--topics", str(subset_dir / "queries.dl20.tsv"),
                 "--output", str(out), "--hits", "100", "--msmarco-tuned", "--format", "msmarco",
                 "--threads", "2"]) == 0
    run = Run.read(out)
    assert len(run) == 54 and max(len(r) for r in run.rankings.values()) == 100
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--qrels", str(subset_dir / "qrels.dl20.tsv"),
                 "--metrics", "nDCG@10", "RR(rel=2)@10", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"nDCG@10", "RR(rel=2)@10"} and scores["nDCG@10"] > 0.3


def test_cli_index_on_a_small_collection(tmp_path: Path, capsys):
    collection = tmp_path / "c.jsonl"
    collection.write_text('{"id": "a", "contents": "the cat sat"}\n{"id": "b", "contents": "dogs bark loudly"}\n')
    assert main(["index", "--collection", str(collection), "--index", str(tmp_path / "idx")]) == 0
    assert BM25(tmp_path / "idx").search("dogs", k=5)[0][0] == "b"
    assert main(["index", "--collection", str(collection), "--index", str(tmp_path / "idx")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_bad_topics_exit_2_and_no_output(subset_index: Path, tmp_path: Path):
    topics = tmp_path / "q.tsv"
    topics.write_text("1\tfine\n2\t\n")
    out = tmp_path / "run.trec"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "retrieve", "--index", str(subset_index),
                           "--topics", str(topics), "--output", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"distilrank: error: {topics}:2: empty query for qid 2"]
    assert not out.exists()


def test_cli_help_is_complete():
    proc = subprocess.run([sys.executable, "-m", "pipeline", "retrieve", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--msmarco-tuned" in proc.stdout and "example:" in proc.stdout


def test_prebuilt_index_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    """Offline, Pyserini prints and returns None; we raise one clear error instead."""
    from pipeline.runtime.java import import_pyserini

    lucene = import_pyserini()
    monkeypatch.setattr(lucene.LuceneSearcher, "from_prebuilt_index", classmethod(lambda cls, name: None))
    with pytest.raises(InputError, match="could not be downloaded .* 'distilrank index'"):
        BM25.from_prebuilt("msmarco-v1-passage")


class FakeLucene:
    """A stand-in for Pyserini's LuceneSearcher: no Java, no network; it records the BM25 parameters it is given."""

    def __init__(self, index_dir: str | None = None):
        self.bm25: tuple[float, float] | None = None

    @classmethod
    def from_prebuilt_index(cls, name: str) -> FakeLucene:
        return cls()

    def set_bm25(self, k1: float, b: float) -> None:
        self.bm25 = (k1, b)


def test_prebuilt_bm25_defaults_to_the_local_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``BM25.from_prebuilt`` and ``BM25()`` share their k1/b (Pyserini's); ``msmarco_tuned`` gives the tuned ones."""
    from types import SimpleNamespace

    from pipeline.defaults import DEFAULT_B, DEFAULT_K1, MSMARCO_B, MSMARCO_K1
    from pipeline.retrieval import bm25

    monkeypatch.setattr(bm25, "import_pyserini", lambda *_: SimpleNamespace(LuceneSearcher=FakeLucene))
    (tmp_path / "segments_1").touch()  # a local index, as far as BM25() checks
    local, prebuilt = BM25(tmp_path), BM25.from_prebuilt("msmarco-v1-passage")
    assert local._searcher.bm25 == prebuilt._searcher.bm25 == (DEFAULT_K1, DEFAULT_B) == (prebuilt.k1, prebuilt.b)
    tuned = BM25.from_prebuilt("msmarco-v1-passage", msmarco_tuned=True)
    assert tuned._searcher.bm25 == BM25.msmarco(tmp_path)._searcher.bm25 == (MSMARCO_K1, MSMARCO_B)
    assert BM25.from_prebuilt("msmarco-v1-passage", k1=1.2, msmarco_tuned=True)._searcher.bm25 == (1.2, MSMARCO_B)


class StoredDoc:
    """A Lucene document as Pyserini returns it: its stored raw text and contents (None: not stored)."""

    def __init__(self, raw: str | None, contents: str | None):
        self._raw, self._contents = raw, contents

    def raw(self) -> str | None:
        return self._raw

    def contents(self) -> str | None:
        return self._contents


def test_index_docstore_names_its_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """An index's docstore is named after the index (its folder, a prebuilt index's name), so the errors and warnings
    about its passages name it; a passage the index stores no text for (a 'slim' index) is one line naming it."""
    from types import SimpleNamespace

    from pipeline.retrieval import bm25

    docs = {"1": StoredDoc('{"id": "1", "contents": "from raw"}', None), "2": StoredDoc(None, "from contents"),
            "3": StoredDoc(None, None)}
    monkeypatch.setattr(bm25, "import_pyserini", lambda *_: SimpleNamespace(LuceneSearcher=FakeLucene))
    monkeypatch.setattr(FakeLucene, "doc", lambda self, docid: docs.get(docid), raising=False)
    (tmp_path / "segments_1").touch()
    store = BM25(tmp_path).docstore
    assert store.path == IndexDocStore.open(tmp_path).path == tmp_path
    assert BM25.from_prebuilt("msmarco-v1-passage-slim").docstore.path == Path("msmarco-v1-passage-slim")
    assert store.get_many(["1", "2"]) == ["from raw", "from contents"] and store.missing(["1", "4"]) == ["4"]
    with pytest.raises(InputError) as err:
        store.get("3")
    assert str(err.value) == (f"{tmp_path}: passage 3 has no stored text in this index (build it with 'distilrank "
                              "index', which stores it)")
