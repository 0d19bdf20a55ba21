"""The contracts of the two stages, and the shape of a ranker's output.

A first stage is a ``Retriever`` (Pyserini's searchers' shape): ``search(query, k)`` for one query and
``batch_search(topics, k, threads) -> Run`` for many; ``BM25``, ``DenseRetriever``, ``PrebuiltDense`` and
``Hybrid`` implement it, and ``Pipeline`` takes any of them.

A reranker is a ``Ranker`` (the cross-encoder stage, the bi-encoder, the dense retriever): ``rerank(run, topics,
docstore, depth) -> (Run, StageTiming)`` over a run, and per query (rerankers' style) ``score(query, passages)``
with ``rank(query, passages, top_k)`` built on it, whose output (``ranked``) is sentence-transformers'
``CrossEncoder.rank``'s: ``[{"corpus_id": i, "score": s}, ...]`` best first, ties in input order.

Reranking keeps recall: the top ``depth`` candidates of each query are ranked by the ranker's score (ties
keep first-stage order); the candidates below ``depth`` follow in their first-stage order, with scores below
every reranked one (``merge``), so the first stage's recall at any cut-off is kept.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..defaults import DEFAULT_HITS, RERANK_DEPTH
from ..errors import InputError
from ..eval.timing import StageTiming
from ..io.runs import Ranking, Run


class Passages(Protocol):
    """Passage text by docid (``DocStore``, ``IndexDocStore``)."""

    def get_many(self, docids: Sequence[str]) -> list[str]:
        """The passages of ``docids``, in order."""

    def missing(self, docids: Sequence[str]) -> list[str]:
        """The docids of ``docids`` that have no passage."""


@runtime_checkable
class Retriever(Protocol):
    """A first stage: the top ``k`` passages of a query, or of every query of ``topics`` as a ``Run``."""

    def search(self, query: str, k: int = DEFAULT_HITS) -> Ranking:
        """The top ``k`` (docid, score) of one query, best first."""

    def batch_search(self, topics: Mapping[str, str], k: int = DEFAULT_HITS, threads: int = 1) -> Run:
        """The top ``k`` of every query of ``topics`` (qid -> text), searched on ``threads`` threads."""


class Ranker(ABC):
    """Reranks the top ``depth`` candidates of every query of a run, or one query's passages."""

    @abstractmethod
    def rerank(self, run: Run, topics: Mapping[str, str], docstore: Passages,
               depth: int = RERANK_DEPTH) -> tuple[Run, StageTiming]:
        """The reranked run (every candidate kept: see ``merge``) and what it cost."""

    @abstractmethod
    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """The scores of one query's ``passages`` (text), in input order."""

    def rank(self, query: str, passages: Sequence[str], top_k: int | None = None,
             return_documents: bool = False) -> list[dict[str, Any]]:
        """``passages`` ranked for ``query`` by ``score`` (see ``ranked``)."""
        return ranked(self.score(query, passages), passages if return_documents else None, top_k)


def ranked(scores: np.ndarray, documents: Sequence[str] | None = None,
           top_k: int | None = None) -> list[dict[str, Any]]:
    """``[{"corpus_id": i, "score": scores[i]}, ...]`` by score, best first (ties in input order), the first
    ``top_k`` (all when ``None``), each with ``"text": documents[i]`` when ``documents`` are given."""
    if top_k is not None and top_k < 0:
        raise InputError(f"top_k must be at least 0, got {top_k}")
    order = np.argsort(-np.asarray(scores), kind="stable")[:top_k]
    return [{"corpus_id": int(i), "score": float(scores[i]), **({} if documents is None else {"text": documents[i]})}
            for i in order]


def merge(head: Ranking, scores: np.ndarray, tail: Ranking) -> Ranking:
    """Head ranked by ``scores`` (stable: ties keep head order), then the tail in its order with lower scores."""
    order = np.argsort(-scores, kind="stable")
    ranked = [(head[i][0], float(scores[i])) for i in order]
    floor = ranked[-1][1] if ranked else 0.0
    return ranked + [(docid, floor - 1.0 - i) for i, (docid, _) in enumerate(tail)]
