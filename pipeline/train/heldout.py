"""Held-out effectiveness during training: a model in training reranks the top ``depth`` candidates of held-out
queries, scored by the same encoding rule and engine as any rerank, and the result is evaluated (the learning
curve of ``--eval-every``)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ..errors import InputError
from ..eval.evaluate import default_measures, evaluate
from ..io.data import read_qids, read_qrels, read_topics
from ..io.runs import Run
from ..rerank.cross_encoder import CrossEncoder
from ..rerank.engine import ScoringEngine


class HeldOut:
    """The held-out queries (those of ``qrels`` that the run ranks, optionally only ``qids``) with the text of
    their top-``depth`` candidates, read once; ``heldout(encoder)`` measures a ranker on them."""

    def __init__(self, run: Run, topics: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], docstore,
                 depth: int = 100, qids: Iterable[str] | None = None, measures: Iterable[str] | None = None):
        wanted = set(qids) if qids is not None else None
        chosen = [q for q in run if q in qrels and q in topics and (wanted is None or q in wanted)]
        if not chosen:
            raise InputError("no held-out query has a ranking, a text and judgments (check --eval-run, "
                             "--eval-topics, --eval-qrels and --eval-qids)")
        self.qrels = {q: dict(qrels[q]) for q in chosen}
        self.measures = tuple(measures or default_measures(self.qrels)[:2])
        self.lists = {q: [d for d, _ in run[q][:depth]] for q in chosen}
        self.queries = [topics[q] for q in chosen for _ in self.lists[q]]
        self.passages = docstore.get_many([d for q in chosen for d in self.lists[q]])

    @classmethod
    def load(cls, run: str | Path, topics: str | Path, qrels: str | Path, docstore, depth: int = 100,
             qids: str | Path | None = None) -> HeldOut:
        """From files: a run, topics, qrels and optionally a file of query ids."""
        return cls(Run.read(run), read_topics(topics), read_qrels(qrels), docstore, depth,
                   read_qids(qids) if qids else None)

    def __len__(self) -> int:
        return len(self.lists)

    def __call__(self, encoder: CrossEncoder) -> dict[str, float]:
        """The measures of ``encoder``'s ranking of the held-out candidates."""
        scores = ScoringEngine(encoder).score_pairs(self.queries, self.passages).tolist()
        ranked, at = {}, 0
        for qid, docids in self.lists.items():
            ranked[qid] = list(zip(docids, scores[at : at + len(docids)], strict=True))
            at += len(docids)
        return evaluate(Run.from_scores(ranked), self.qrels, self.measures)

    def evaluator(self, encoder: CrossEncoder, device: torch.device):
        """The Trainer's evaluator: the model in training (``modules["model"]``, fp32 on ``device``) scored with
        ``encoder``'s tokenizer and lengths."""

        def evaluate_modules(modules: dict[str, torch.nn.Module]) -> dict[str, float]:
            scorer = CrossEncoder.from_model(modules["model"], encoder.tokenizer, device=device, precision="fp32",
                                             max_length=encoder.max_length,
                                             query_max_length=encoder.query_max_length)
            return self(scorer)

        return evaluate_modules
