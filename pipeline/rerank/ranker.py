"""The contract every reranker implements (the cross-encoder stage, the bi-encoder, later a dense retriever):
one method, ``rerank(run, topics, docstore, depth) -> (Run, StageTiming)``, and the shape of its output.

Reranking keeps recall: the top ``depth`` candidates of each query are ranked by the ranker's score (ties
keep first-stage order); the candidates below ``depth`` follow in their first-stage order, with scores below
every reranked one (``merge``), so the first stage's recall at any cut-off is kept.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from ..defaults import RERANK_DEPTH
from ..eval.timing import StageTiming
from ..io.runs import Run

Ranking = list[tuple[str, float]]


class Passages(Protocol):
    """Passage text by docid (``DocStore``, ``IndexDocStore``)."""

    def get_many(self, docids: Sequence[str]) -> list[str]:
        """The passages of ``docids``, in order."""

    def missing(self, docids: Sequence[str]) -> list[str]:
        """The docids of ``docids`` that have no passage."""


class Ranker(ABC):
    """Reranks the top ``depth`` candidates of every query of a run."""

    @abstractmethod
    def rerank(self, run: Run, topics: Mapping[str, str], docstore: Passages,
               depth: int = RERANK_DEPTH) -> tuple[Run, StageTiming]:
        """The reranked run (every candidate kept: see ``merge``) and what it cost."""


def merge(head: Ranking, scores: np.ndarray, tail: Ranking) -> Ranking:
    """Head ranked by ``scores`` (stable: ties keep head order), then the tail in its order with lower scores."""
    order = np.argsort(-scores, kind="stable")
    ranked = [(head[i][0], float(scores[i])) for i in order]
    floor = ranked[-1][1] if ranked else 0.0
    return ranked + [(docid, floor - 1.0 - i) for i, (docid, _) in enumerate(tail)]
