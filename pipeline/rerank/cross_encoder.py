"""``CrossEncoder``: the cross-encoder model (``pipeline.rerank.model``) with sentence-transformers' pair API.

``predict(pairs)`` and ``rank(query, documents, top_k)`` have the signatures and return shapes of
sentence-transformers' ``CrossEncoder`` and score through the scoring engine (``ScoringEngine``: length-sorted
token-budget batches), so they give the scores ``distilrank rerank`` and ``Reranker`` give. Differences:

- the score is the model's ranking score as everywhere in distilrank (the logit; monoBERT's log-probability
  of "relevant"), with no activation unless one is given: sentence-transformers applies a sigmoid to one-logit
  models by default (``activation_fn=torch.sigmoid`` gives its numbers); a two-logit model gives one score a
  pair, not both logits;
- ``batch_size`` (sentence-transformers: pairs a batch) sets the engine's token budget to ``batch_size x
  max_length`` padded tokens: a batch of full-length pairs holds ``batch_size`` of them (the memory of
  sentence-transformers' batch at its longest), a batch of shorter pairs more. ``None``: the engine's
  default budget for the device, the one ``Reranker`` uses.

The engine scores with the model, so the model sits below the engine and this class above it (no cycle).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .engine import ScoringEngine
from .model import CrossEncoderModel
from .ranker import ranked

Pair = tuple[str, str] | list[str]


class CrossEncoder(CrossEncoderModel):
    """A cross-encoder ranker: ``CrossEncoder(folder).predict([(query, passage), ...])`` or
    ``.rank(query, passages, top_k=10)`` (loading and options: ``CrossEncoderModel``)."""

    def scoring_engine(self, batch_size: int | None = None) -> ScoringEngine:
        """The engine ``predict`` and ``rank`` score with (``batch_size``: see the module docstring)."""
        if batch_size is None:
            return ScoringEngine(self)
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        return ScoringEngine(self, batch_tokens=int(batch_size) * self.max_length)

    def predict(self, inputs: Sequence[Pair] | Pair, batch_size: int | None = None,
                activation_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray | float:
        """The scores of (query, passage) pairs: a float32 array, one score a pair in input order (one pair
        given alone: its score, a float). ``activation_fn`` (e.g. ``torch.sigmoid``) maps the score tensor."""
        single = len(inputs) > 0 and isinstance(inputs[0], str)
        pairs = [inputs] if single else list(inputs)
        if any(len(pair) != 2 for pair in pairs):
            raise InputError("predict takes (query, passage) pairs")
        scores = self.scoring_engine(batch_size).score_pairs([q for q, _ in pairs], [p for _, p in pairs])
        scores = self._activate(scores, activation_fn)
        return float(scores[0]) if single else scores

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
             batch_size: int | None = None,
             activation_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[dict[str, Any]]:
        """``documents`` ranked for ``query``: ``[{"corpus_id": i, "score": s}, ...]`` (with ``"text"`` when
        ``return_documents``) by score, best first (ties in input order), the first ``top_k`` (all when
        ``None``); the scores ``predict`` gives."""
        scores = self._activate(self.scoring_engine(batch_size).score_query(query, documents), activation_fn)
        return ranked(scores, documents if return_documents else None, top_k)

    @staticmethod
    def _activate(scores: np.ndarray, activation_fn: Callable[[torch.Tensor], torch.Tensor] | None) -> np.ndarray:
        if activation_fn is None:
            return scores
        return activation_fn(torch.from_numpy(scores)).float().numpy()
