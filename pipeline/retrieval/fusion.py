"""Hybrid first stage: a sparse (BM25) and a dense ranking of each query fused into one.

Two fusions, both over each retriever's top ``depth``:

- ``interpolation``, as Pyserini's ``HybridSearcher`` with ``normalization=True``: a passage missing from one
  list takes that list's lowest score; each list's scores are normalised as ``(s - (min + max) / 2) /
  (max - min)`` (0 when all are equal); the fused score is ``fusion_weight * sparse + dense`` (``fusion_weight``
  weighs BM25 against the dense score, Pyserini's ``alpha``; 1 weighs them equally);
- ``rrf``, reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): ``sum 1 / (rrf_k + rank)`` over
  the lists that hold the passage, ranks from 1.

The fused list is sorted by score; ties keep the order in which passages first appear (the sparse list, then
the dense list's new ones), so a fusion is deterministic.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..defaults import DEFAULT_HITS
from ..errors import InputError
from ..io.runs import Ranking, Run

FUSIONS = ("interpolation", "rrf")
#: The interpolation's weight of the sparse score (Pyserini's ``alpha``); after normalisation 1 weighs the two equally.
DEFAULT_FUSION_WEIGHT = 1.0
#: The constant of reciprocal rank fusion, as in its paper and Pyserini's fusion.
DEFAULT_RRF_K = 60


def _order(lists: Sequence[Ranking]) -> list[str]:
    """Every docid of ``lists`` once, in order of first appearance."""
    return list(dict.fromkeys(docid for ranking in lists for docid, _ in ranking))


def _sorted(scores: dict[str, float]) -> Ranking:
    return sorted(scores.items(), key=lambda item: -item[1])  # stable: ties keep first appearance


def _normalised(ranking: Ranking) -> tuple[dict[str, float], float]:
    """Pyserini's normalisation of one list's scores, and the normalised score of a passage it lacks (its min)."""
    if not ranking:
        return {}, 0.0
    values = [s for _, s in ranking]
    low, high = min(values), max(values)
    if high == low:
        return {d: 0.0 for d, _ in ranking}, 0.0
    middle, span = (low + high) / 2, high - low
    return {d: (s - middle) / span for d, s in ranking}, (low - middle) / span


def interpolate(sparse: Ranking, dense: Ranking, fusion_weight: float = DEFAULT_FUSION_WEIGHT) -> Ranking:
    """``fusion_weight * sparse + dense`` over normalised scores (see the module docstring)."""
    sparse_scores, sparse_floor = _normalised(sparse)
    dense_scores, dense_floor = _normalised(dense)
    return _sorted({d: fusion_weight * sparse_scores.get(d, sparse_floor) + dense_scores.get(d, dense_floor)
                    for d in _order([sparse, dense])})


def reciprocal_rank(lists: Sequence[Ranking], rrf_k: int = DEFAULT_RRF_K) -> Ranking:
    """Reciprocal rank fusion of any number of rankings."""
    fused = dict.fromkeys(_order(lists), 0.0)
    for ranking in lists:
        for rank, (docid, _) in enumerate(ranking, 1):
            fused[docid] += 1.0 / (rrf_k + rank)
    return _sorted(fused)


class Hybrid:
    """BM25 and a dense retriever fused: ``Hybrid(BM25.msmarco(index), DenseRetriever(...), fusion="rrf")``, a
    ``Retriever`` over two others.

    Each retriever returns its top ``depth`` (default: the ``k`` asked for); the fused list is cut to ``k``.
    Passage text comes from the sparse retriever's docstore (the Lucene index stores it).
    """

    def __init__(self, sparse, dense, fusion: str = "interpolation", fusion_weight: float = DEFAULT_FUSION_WEIGHT,
                 rrf_k: int = DEFAULT_RRF_K, depth: int | None = None):
        if fusion not in FUSIONS:
            raise InputError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
        if rrf_k < 0 or fusion_weight < 0 or (depth is not None and depth < 1):
            raise InputError(f"fusion needs fusion_weight >= 0, rrf_k >= 0 and depth >= 1 (got {fusion_weight}, "
                             f"{rrf_k}, {depth})")
        sparse_count, dense_count = _count(sparse), _count(dense)
        if sparse_count is not None and dense_count is not None and sparse_count != dense_count:
            raise InputError(f"the BM25 index holds {sparse_count} passages and the dense index {dense_count}: "
                             "they were not built from the same collection")
        self.sparse, self.dense = sparse, dense
        self.fusion, self.fusion_weight, self.rrf_k, self.depth = fusion, float(fusion_weight), int(rrf_k), depth

    @property
    def docstore(self):
        return self.sparse.docstore

    def fuse(self, sparse: Ranking, dense: Ranking) -> Ranking:
        """One query's fused ranking (not cut)."""
        if self.fusion == "rrf":
            return reciprocal_rank([sparse, dense], self.rrf_k)
        return interpolate(sparse, dense, self.fusion_weight)

    def fuse_runs(self, sparse: Run, dense: Run, qids: Sequence[str], k: int) -> Run:
        """The fused top ``k`` of each query of ``qids`` (a query missing from a run has an empty list there)."""
        name = (f"hybrid-rrf{self.rrf_k}" if self.fusion == "rrf" else f"hybrid-interpolation{self.fusion_weight:g}")
        return Run({q: self.fuse(sparse.rankings.get(q, []), dense.rankings.get(q, []))[:k] for q in qids}, name)

    def search(self, query: str, k: int = DEFAULT_HITS) -> Ranking:
        """The fused top ``k`` of one query (each retriever's top ``depth`` fused)."""
        depth = self.depth or k
        return self.fuse(self.sparse.search(query, depth), self.dense.search(query, depth))[:k]

    def batch_search(self, topics: Mapping[str, str], k: int = DEFAULT_HITS, threads: int = 1,
                     progress: bool | None = None) -> Run:
        """The fused top ``k`` of every query of ``topics``."""
        depth = self.depth or k
        sparse = self.sparse.batch_search(dict(topics), k=depth, threads=threads, progress=progress)
        dense = self.dense.batch_search(dict(topics), k=depth, threads=threads, progress=progress)
        return self.fuse_runs(sparse, dense, list(topics), k)

    def __repr__(self) -> str:
        return f"Hybrid({self.sparse!r} + {self.dense!r}, fusion={self.fusion!r})"


def _count(retriever) -> int | None:
    """Passages a retriever searches, where it says (``count``, or a Lucene docstore's length)."""
    if hasattr(retriever, "count"):
        return int(retriever.count)
    store = getattr(retriever, "docstore", None)
    return len(store) if store is not None and hasattr(store, "__len__") else None
