"""The first stage: Lucene indexes built with Pyserini, and BM25 search over them.

Pyserini is imported lazily (through ``pipeline.java``, which sets up Java 21 first), so the rest
of the pipeline runs where pyserini or Java are absent (e.g. a GPU box reranking a run file).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..defaults import DEFAULT_B, DEFAULT_HITS, DEFAULT_K1, MSMARCO_B, MSMARCO_K1
from ..errors import InputError, one_line
from ..io.data import iter_collection
from ..io.runs import Ranking, Run
from ..runtime.atomic import atomic_write, replace_dir, scratch_dir
from ..runtime.java import import_pyserini
from ..runtime.progress import bar as progress_bar


def index_present(index_dir: str | Path) -> bool:
    """Whether ``index_dir`` holds a complete Lucene index (a ``segments_N`` file)."""
    path = Path(index_dir)
    return path.is_dir() and any(path.glob("segments_*"))


def index_files(index_dir: str | Path) -> list[tuple[str, int]]:
    """The index's commit points (``segments_N`` names and sizes): they change whenever the index does."""
    return sorted((p.name, p.stat().st_size) for p in Path(index_dir).glob("segments_*"))


def _require_index(index_dir: str | Path) -> Path:
    path = Path(index_dir)
    if not index_present(path):
        raise InputError("no Lucene index in this directory (build one with 'distilrank index')", path)
    return path


def _write_json_collection(collection: Path, out_dir: Path) -> int:
    """Convert a TSV or JSONL collection to Pyserini's JsonCollection (validating ids); returns the count."""
    seen: set[str] = set()
    count = 0
    with atomic_write(out_dir / "docs.jsonl") as out:
        for docid, text in progress_bar(iter_collection(collection), desc="converting", unit=" docs", mininterval=2):
            if docid in seen:
                raise InputError(f"duplicate document id {docid}", collection)
            seen.add(docid)
            out.write(json.dumps({"id": docid, "contents": text}, ensure_ascii=False) + "\n")
            count += 1
    if not count:
        raise InputError("collection is empty", collection)
    return count


def build_index(collection: str | Path, index_dir: str | Path, threads: int = 1, force: bool = False) -> Path:
    """Index a collection (``collection.tsv``, a JSONL file or a folder of JSONL files) with Pyserini.

    Stores positions, document vectors and the raw JSON (so ``IndexDocStore`` can serve passage
    text). The index is built under a temporary name and renamed into place when complete.
    """
    collection, index_dir = Path(collection), Path(index_dir)
    if not collection.exists():
        raise InputError("collection not found", collection)
    if index_dir.exists() and not force:
        raise InputError("index directory already exists (pass --force to rebuild it)", index_dir)
    with scratch_dir(index_dir) as work:  # removed on failure, Ctrl-C and SIGTERM
        source = work / "json"  # always converted: validates ids and lines with clear errors
        source.mkdir()
        _write_json_collection(collection, source)
        built = work / "index"
        lucene = import_pyserini("pyserini.pyclass")
        args = [
            "-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
            "-input", str(source), "-index", str(built), "-threads", str(threads),
            "-storePositions", "-storeDocvectors", "-storeRaw", "-quiet",
        ]
        lucene.autoclass("io.anserini.index.IndexCollection").main(args)
        if not index_present(built):
            raise InputError("Pyserini produced no index (see the log above)", collection)
        replace_dir(built, index_dir)
    return index_dir


class IndexDocStore:
    """Passage text from a Lucene index's stored raw documents (same interface as ``DocStore``). ``path``: the
    index (its folder, or a prebuilt index's name), which errors and warnings about its passages name, as
    ``DocStore.path`` names the collection file."""

    def __init__(self, searcher, path: str | Path) -> None:
        self._searcher = searcher
        self.path = Path(path)

    @classmethod
    def open(cls, index_dir: str | Path) -> IndexDocStore:
        lucene = import_pyserini()
        return cls(lucene.LuceneSearcher(str(_require_index(index_dir))), index_dir)

    def _text(self, docid: str, doc) -> str:
        raw = doc.raw()
        try:
            return str(json.loads(raw)["contents"])
        except (json.JSONDecodeError, KeyError, TypeError):
            text = doc.contents() if raw is None else doc.contents() or raw
        if text is None:
            raise InputError(f"passage {docid} has no stored text in this index (build it with 'distilrank index', "
                             "which stores it)", self.path)
        return text

    def missing(self, docids: Sequence[str]) -> list[str]:
        return [d for d in docids if self._searcher.doc(d) is None]

    def get_many(self, docids: Sequence[str]) -> list[str]:
        texts = []
        for docid in docids:
            doc = self._searcher.doc(docid)
            if doc is None:
                raise KeyError(docid)
            texts.append(self._text(docid, doc))
        return texts

    def get(self, docid: str) -> str:
        return self.get_many([docid])[0]

    def __contains__(self, docid: str) -> bool:
        return self._searcher.doc(docid) is not None

    def __len__(self) -> int:
        return int(self._searcher.num_docs)


def bm25_parameters(k1: float | None = None, b: float | None = None,
                    msmarco_tuned: bool = False) -> tuple[float, float]:
    """BM25's ``(k1, b)``: Pyserini's defaults, or with ``msmarco_tuned`` Anserini's values tuned for MS MARCO
    passage; a ``k1`` or ``b`` given wins over either."""
    base_k1, base_b = (MSMARCO_K1, MSMARCO_B) if msmarco_tuned else (DEFAULT_K1, DEFAULT_B)
    return float(base_k1 if k1 is None else k1), float(base_b if b is None else b)


class BM25:
    """BM25 over a Lucene index (local folder or Pyserini prebuilt) with k1/b and batch search (a ``Retriever``)."""

    def __init__(self, index_dir: str | Path, k1: float | None = None, b: float | None = None, *,
                 msmarco_tuned: bool = False, _searcher=None):
        """``k1`` and ``b``: see ``bm25_parameters`` (by default Pyserini's)."""
        if _searcher is None:
            _searcher = import_pyserini().LuceneSearcher(str(_require_index(index_dir)))
        self.index = str(index_dir)
        self.k1, self.b = bm25_parameters(k1, b, msmarco_tuned)
        self._searcher = _searcher
        self._searcher.set_bm25(self.k1, self.b)

    @classmethod
    def msmarco(cls, index_dir: str | Path) -> BM25:
        """BM25 with the MS MARCO passage tuned parameters (k1=0.82, b=0.68)."""
        return cls(index_dir, msmarco_tuned=True)

    @classmethod
    def from_prebuilt(cls, name: str, k1: float | None = None, b: float | None = None, *,
                      msmarco_tuned: bool = False) -> BM25:
        """A Pyserini prebuilt index (e.g. ``msmarco-v1-passage``), downloaded on first use (needs network); ``k1``,
        ``b`` and ``msmarco_tuned`` as ``BM25()`` takes them."""
        lucene = import_pyserini()
        try:
            searcher = lucene.LuceneSearcher.from_prebuilt_index(name)
        except Exception as exc:  # offline: urllib/HTTP errors of many kinds
            raise InputError(f"could not load prebuilt index {name!r} ({one_line(exc, 160)}); "
                             "offline, build a local index with 'distilrank index' and pass --index") from None
        if searcher is None:
            raise InputError(f"prebuilt index {name!r} is unknown or could not be downloaded (no network?); "
                             "offline, build a local index with 'distilrank index' and pass --index")
        return cls(name, k1, b, msmarco_tuned=msmarco_tuned, _searcher=searcher)

    @property
    def docstore(self) -> IndexDocStore:
        """Passage text from this index's stored raw documents."""
        return IndexDocStore(self._searcher, self.index)

    def search(self, query: str, k: int = DEFAULT_HITS) -> Ranking:
        """The top ``k`` (docid, score) for one query."""
        return [(h.docid, float(h.score)) for h in self._searcher.search(query, int(k))]

    def batch_search(self, topics: Mapping[str, str], k: int = DEFAULT_HITS, threads: int = 1, batch_size: int = 512,
                     progress: bool | None = None) -> Run:
        """Search every topic (multi-threaded in Lucene, in batches for a progress bar); ranks as Lucene gives them."""
        qids = list(topics)
        rankings: dict[str, Ranking] = {}
        with progress_bar(total=len(qids), desc="BM25", unit=" q", enabled=progress, mininterval=1) as bar:
            for start in range(0, len(qids), batch_size):
                chunk = qids[start : start + batch_size]
                hits = self._searcher.batch_search([topics[q] for q in chunk], chunk, int(k), int(threads))
                for qid in chunk:
                    rankings[qid] = [(h.docid, float(h.score)) for h in hits.get(qid, [])]
                bar.update(len(chunk))
        return Run(rankings, name=f"bm25_k1={self.k1}_b={self.b}")
