"""Ranking tasks for the Trainer: a cross-encoder trained on groups with LCE or a distillation loss.

Groups come from ``groups.LabeledGroups`` (LCE) or ``groups.ScoredGroups`` (teacher scores). Pairs are
encoded by ``CrossEncoder.encode``: the cross-encoder's one encoding rule, the one the scoring engine uses;
passages come from the token cache when the task has one (``token_cache``), else as text from the docstore. A
batch's pairs run sorted by length in chunks, each padded to its own longest pair (``length_chunks``).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..rerank.batching import plan_batches
from ..rerank.cross_encoder import CrossEncoder
from ..rerank.token_cache import TokenCache
from .groups import Group, shuffled
from .losses import lce_loss, listwise_kl_loss, margin_mse_loss, pointwise_mse_loss, soft_label_ce_loss
from .options import DISTILL_OBJECTIVES, SEED

log = logging.getLogger(__name__)

OBJECTIVES = ("lce", *DISTILL_OBJECTIVES)
#: Padded tokens of one chunk of a training batch: its pairs run sorted by length, each chunk padded to its own
#: longest pair, not the batch's (benchmarks/train_speed.py measures it).
CHUNK_TOKENS = 4096


def pair_inputs(encoder: CrossEncoder, groups: list[Group], docstore,
                token_cache: TokenCache | None = None) -> dict[str, torch.Tensor]:
    """The model inputs (CPU, padded to the longest) of the groups' pairs, group after group; passages from
    ``token_cache`` when given, else as text from ``docstore``."""
    size = len(groups[0].docids)
    if any(len(g.docids) != size for g in groups):
        raise ValueError("groups of one batch must have the same size")
    queries = [g.query for g in groups for _ in g.docids]
    docids = [d for g in groups for d in g.docids]
    if token_cache is not None:
        return encoder.encode(queries, passage_tokens=token_cache.get_many(docids, encoder.passage_limit))
    return encoder.encode(queries, docstore.get_many(docids))


def length_chunks(encoded: dict[str, torch.Tensor], device: torch.device,
                  chunk_tokens: int | None = CHUNK_TOKENS) -> list[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """A padded batch's pairs sorted by length in chunks of about ``chunk_tokens`` padded tokens: each chunk's rows
    (positions in the batch) and its inputs, padded to its own longest pair, on ``device`` (``None``: one chunk,
    the batch padded to its longest pair). Padding is masked, so a model gives the same outputs either way; the
    chunks skip the padding's work."""
    lengths = encoded["attention_mask"].sum(dim=1).numpy()
    plan = plan_batches(lengths, chunk_tokens) if chunk_tokens else [np.arange(len(lengths))]
    chunks = []
    for index in plan:
        rows, width = torch.from_numpy(index), int(lengths[index].max())
        chunks.append((index, {k: v[rows, :width].to(device, non_blocking=True) for k, v in encoded.items()}))
    return chunks


def in_batch_order(parts: list[torch.Tensor], chunks: list[tuple[np.ndarray, dict]]) -> torch.Tensor:
    """The chunks' results (``parts``, one a chunk, rows in the chunk's order) back in the batch's order."""
    back = torch.from_numpy(np.argsort(np.concatenate([index for index, _ in chunks])))
    return torch.cat(parts)[back.to(parts[0].device)]


def pair_scores(encoder: CrossEncoder, model: torch.nn.Module, groups: list[Group], docstore, device: torch.device,
                token_cache: TokenCache | None = None, chunk_tokens: int | None = CHUNK_TOKENS) -> torch.Tensor:
    """Scores ``(groups, group_size)`` of the model on the groups' pairs, run in ``length_chunks``."""
    chunks = length_chunks(pair_inputs(encoder, groups, docstore, token_cache), device, chunk_tokens)
    scores = [encoder.logits_to_scores(model(**chunk).logits) for _, chunk in chunks]
    return in_batch_order(scores, chunks).view(len(groups), -1)


class RankerTask:
    """Train ``encoder.model`` (a ``CrossEncoder``'s model) on groups with one objective.

    - ``lce``: softmax cross-entropy, positive at index 0 (labeled groups);
    - ``kl``: listwise KL to the teacher's scores (``temperature``, ``teacher_temperature``);
    - ``margin-mse``: margins to the group's first (teacher-best) candidate;
    - ``mse``: pointwise MSE to the teacher's scores.
    With ``label_weight`` > 0 and groups carrying labels, a label loss (cross-entropy to the relevant
    members) is added to a distillation objective. ``hidden`` (an ``lm_distill.HiddenMatcher``) adds
    hidden-state matching to a teacher on the same pairs. ``token_cache``: passages as token ids.
    """

    def __init__(self, name: str, encoder: CrossEncoder, source, docstore, objective: str = "lce", seed: int = SEED,
                 temperature: float = 1.0, teacher_temperature: float | None = None,
                 label_weight: float = 0.0, hidden=None, hidden_weight: float = 1.0,
                 token_cache: TokenCache | None = None):
        if objective not in OBJECTIVES:
            raise InputError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
        self.name, self.encoder, self.source, self.docstore = name, encoder, source, docstore
        self.token_cache = token_cache
        self.objective, self.seed = objective, seed
        self.temperature, self.teacher_temperature = temperature, teacher_temperature
        self.label_weight, self.hidden, self.hidden_weight = label_weight, hidden, hidden_weight
        self._count: int | None = None

    def build(self, device: torch.device) -> dict[str, torch.nn.Module]:
        modules = {"model": self.encoder.model.float().to(device)}
        if self.hidden is not None:
            modules.update(self.hidden.build(modules["model"], device))
        return modules

    def num_examples(self) -> int:
        if self._count is None:
            self._count = self.source.count()
            log.info("%s: %s", self.name, self.source.stats.summary())
        return self._count

    def examples(self, epoch: int) -> Iterator[Group]:
        return shuffled(self.source.iter_groups(epoch), self.seed, epoch)

    def loss(self, modules, groups: list[Group], device: torch.device) -> tuple[torch.Tensor, dict]:
        if self.hidden is not None:
            encoded = pair_inputs(self.encoder, groups, self.docstore, self.token_cache)
            hidden_loss, logits = self.hidden.match(modules, encoded, device)
            scores = self.encoder.logits_to_scores(logits).view(len(groups), -1)
        else:
            scores = pair_scores(self.encoder, modules["model"], groups, self.docstore, device, self.token_cache)
        metrics: dict[str, float] = {}
        if self.objective == "lce":
            loss = lce_loss(scores)
        else:
            teacher = torch.tensor([g.teacher for g in groups], device=device, dtype=torch.float32)
            if self.objective == "kl":
                loss = listwise_kl_loss(scores, teacher, self.temperature, self.teacher_temperature)
            elif self.objective == "margin-mse":
                loss = margin_mse_loss(scores, teacher)
            else:
                loss = pointwise_mse_loss(scores, teacher)
            if self.label_weight and groups[0].labels is not None:
                labels = torch.tensor([g.labels for g in groups], device=device)
                label_loss = soft_label_ce_loss(scores, labels)
                metrics["label_loss"] = float(label_loss.detach())
                loss = loss + self.label_weight * label_loss
        if self.hidden is not None:
            metrics["hidden_loss"] = float(hidden_loss.detach())
            loss = loss + self.hidden_weight * hidden_loss
        return loss, metrics

    def save(self, modules, path: Path) -> None:
        self.encoder.model = modules["model"]
        self.encoder.save_pretrained(path)
