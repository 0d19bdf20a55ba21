"""Dense first stages: a query's bi-encoder embedding searched in a faiss index of passage embeddings.

``DenseRetriever`` searches a local dense index (``distilrank encode``) with the encoder it was encoded with
(checked: another encoder is an ``InputError``). ``PrebuiltDense`` is a Pyserini prebuilt faiss index with a
Pyserini query encoder (downloaded: online only; offline it fails at once, in one line). Both are
``Retriever``s (``search``, ``batch_search(topics, k) -> Run``) as ``BM25`` is, so ``Pipeline``, ``Hybrid`` and
``compare`` take either.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from ..defaults import DEFAULT_HITS, RERANK_DEPTH
from ..errors import InputError, one_line
from ..eval.timing import StageTiming
from ..io.data import DocStore
from ..io.runs import Ranking, Run
from ..rerank.ranker import Passages, Ranker, merge
from ..runtime.hub import offline
from ..runtime.java import import_pyserini
from ..runtime.progress import bar as progress_bar
from .embeddings import DenseIndex, Encoder
from .faiss_index import KINDS, SEARCH_PARAMS, FaissParams, load, search

#: Queries embedded and searched together.
QUERY_BATCH = 256


class DenseRetriever(Ranker):
    """Search a dense index folder with its encoder: ``DenseRetriever("indexes/NAME", BiEncoder(...))``.

    ``faiss``: which saved index to search (``flat``, ``hnsw`` or ``ivfpq``; default the first saved of these,
    else an exact index built in memory); ``ef_search`` / ``nprobe`` / ``refine`` override the values it was
    built with (``refine``: the top ``k x refine`` hits re-scored with the stored embeddings, for IVF-PQ).
    As a ``Ranker`` it reranks any first stage's candidates by their stored embeddings (the bi-encoder's cosine,
    with no passage encoded again).
    """

    def __init__(self, index_dir: str | Path, encoder: Encoder, faiss: str | None = None,
                 ef_search: int | None = None, nprobe: int | None = None, refine: int | None = None):
        self.dense = DenseIndex.open(index_dir)
        self.dense.check_encoder(encoder)
        self.encoder = encoder
        built = self.dense.meta.get("faiss", {})
        self.kind = faiss or next((kind for kind in KINDS if kind in built), "flat")
        recorded = {key: value for key, value in built.get(self.kind, {}).items() if key in SEARCH_PARAMS}
        asked = {key: value for key, value in zip(SEARCH_PARAMS, (ef_search, nprobe, refine), strict=True)
                 if value is not None}
        self.params = FaissParams(**{**recorded, **asked}).resolve(self.dense.count, self.dense.dim)  # checked
        self.index = load(self.dense, self.kind)

    @property
    def count(self) -> int:
        """Passages in the index."""
        return self.dense.count

    @cached_property
    def docstore(self) -> DocStore:
        """Passage text from the collection the index was encoded from (where it was recorded)."""
        if not self.dense.collection.is_file():
            raise InputError(f"the collection it was encoded from ({self.dense.collection}) is gone; "
                             "give the pipeline a docstore", self.dense.path)
        return DocStore(self.dense.collection)

    def _search(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self.encoder.embed(texts).cpu().numpy().astype(np.float32)
        return search(self.index, self.kind, queries, min(int(k), self.count), self.params, self.dense.embeddings())

    def search(self, query: str, k: int = DEFAULT_HITS) -> Ranking:
        """The top ``k`` (docid, score) for one query."""
        scores, rows = self._search([query], k)
        return [(self.dense.docid(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]

    def batch_search(self, topics: Mapping[str, str], k: int = DEFAULT_HITS, threads: int | None = None,
                     progress: bool | None = None) -> Run:
        """Search every topic; ``threads`` sets faiss's OpenMP threads (default: all cores)."""
        if threads:
            import faiss

            faiss.omp_set_num_threads(int(threads))
        qids = list(topics)
        rankings: dict[str, Ranking] = {}
        with progress_bar(total=len(qids), desc=f"dense ({self.kind})", unit=" q", enabled=progress,
                          mininterval=1) as bar:
            for start in range(0, len(qids), QUERY_BATCH):
                chunk = qids[start : start + QUERY_BATCH]
                scores, rows = self._search([topics[q] for q in chunk], k)
                for qid, row_ids, row_scores in zip(chunk, rows, scores, strict=True):
                    rankings[qid] = [(self.dense.docid(r), float(s))
                                     for r, s in zip(row_ids, row_scores, strict=True) if r >= 0]
                bar.update(len(chunk))
        return Run(rankings, name=f"dense-{self.encoder.name}-{self.kind}")

    def rerank(self, run: Run, topics: Mapping[str, str], docstore: Passages | None = None,
               depth: int = RERANK_DEPTH) -> tuple[Run, StageTiming]:
        """Each query's top ``depth`` ranked by cosine with the stored passage embeddings, the rest kept in
        first-stage order (``ranker.merge``); a candidate the index lacks is an ``InputError``."""
        start = time.perf_counter()
        qids = [q for q in run if q in topics]
        queries = self.encoder.embed([topics[q] for q in qids]).cpu().numpy().astype(np.float32)
        matrix = self.dense.embeddings()
        rankings = {}
        for qid, query in zip(qids, queries, strict=True):
            head, tail = run[qid][:depth], run[qid][depth:]
            rows = self.dense.rows([d for d, _ in head])
            if (rows < 0).any():
                absent = [d for (d, _), r in zip(head, rows, strict=True) if r < 0]
                raise InputError(f"{len(absent)} candidates of query {qid} are not in the dense index "
                                 f"(e.g. {absent[:3]})", self.dense.path)
            rankings[qid] = merge(head, matrix[rows].astype(np.float32) @ query, tail)
        wall = time.perf_counter() - start
        pairs = sum(min(len(run[q]), depth) for q in qids)
        timing = StageTiming("rerank", wall, len(rankings), pairs, [wall / max(len(rankings), 1)] * len(rankings),
                             latency="mean", device=str(self.encoder.device),
                             extra={"model": f"{self.encoder.name} (stored embeddings)", "depth": depth})
        return Run(rankings, f"dense-rerank-{self.encoder.name}"), timing

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Cosines of ``query`` with each of ``passages``, the text embedded by the index's bi-encoder (the
        per-query ``Ranker`` call has no docids; ``rerank`` reads the stored embeddings of its candidates)."""
        return self.encoder.score(query, list(passages))

    def __repr__(self) -> str:
        return f"DenseRetriever({str(self.dense.path)!r}, {self.encoder.name!r}, faiss={self.kind!r})"


class PrebuiltDense:
    """A Pyserini prebuilt faiss index (e.g. ``msmarco-v1-passage.tct_colbert-v2-hnp``) and its query encoder
    (a Pyserini encoder name such as ``castorini/tct_colbert-v2-hnp-msmarco``): downloaded, so online only."""

    def __init__(self, name: str, searcher):
        self.name, self._searcher = name, searcher

    @classmethod
    def from_prebuilt(cls, name: str, query_encoder: str) -> PrebuiltDense:
        fix = ("offline, encode a collection with 'distilrank encode' and pass its folder "
               "(retrieve --dense indexes/NAME)")
        if offline():
            raise InputError(f"{name!r} is not a dense index folder, and as a Pyserini prebuilt dense index it "
                             f"needs the network (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set); {fix}")
        module = import_pyserini("pyserini.search.faiss")
        try:
            searcher = module.FaissSearcher.from_prebuilt_index(name, query_encoder)
        except Exception as exc:  # offline or unknown: urllib/HTTP/hub errors of many kinds
            raise InputError(f"could not load prebuilt dense index {name!r} with query encoder {query_encoder!r} "
                             f"({one_line(exc, 160)}); {fix}") from None
        if searcher is None:
            raise InputError(f"prebuilt dense index {name!r} is unknown to Pyserini; {fix}")
        return cls(name, searcher)

    @property
    def count(self) -> int:
        return int(self._searcher.num_docs)

    def search(self, query: str, k: int = DEFAULT_HITS) -> Ranking:
        """The top ``k`` (docid, score) for one query."""
        return [(h.docid, float(h.score)) for h in self._searcher.search(query, int(k))]

    def batch_search(self, topics: Mapping[str, str], k: int = DEFAULT_HITS, threads: int | None = None,
                     progress: bool | None = None) -> Run:
        qids = list(topics)
        hits = self._searcher.batch_search([topics[q] for q in qids], qids, int(k), int(threads or 1))
        return Run({q: [(h.docid, float(h.score)) for h in hits.get(q, [])] for q in qids}, name=f"dense-{self.name}")
