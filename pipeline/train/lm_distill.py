"""Language-model distillation (TinyBERT-style): the student matches a teacher encoder's hidden states
and attention maps on unlabeled text.

The text is (query, candidate passage) pairs from a run over the collection: the queries and
passages of the collection, encoded exactly as the ranker will see them. Student layer ``i`` is
matched to teacher layer ``layer_map[i]`` (the evenly spaced choice by default), the embedding
outputs to each other; a learned linear projection maps the student's width to the teacher's where
they differ. Matching needs the same tokenizer (the same token positions): otherwise it is refused.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import InputError
from ..rerank.cross_encoder import CrossEncoder
from .groups import Group, GroupStats, iter_run_lists, query_rng, shuffled
from .losses import attention_loss, hidden_state_loss
from .options import SEED
from .students import encoder_layers, evenly_spaced_layers
from .tasks import CHUNK_TOKENS, in_batch_order, length_chunks, pair_inputs

log = logging.getLogger(__name__)


def check_same_tokenizer(student_encoder: CrossEncoder, teacher_encoder: CrossEncoder) -> None:
    """Refuse hidden-state matching between models that tokenize differently."""
    same = (student_encoder.tokenizer.get_vocab() == teacher_encoder.tokenizer.get_vocab()
            and student_encoder.template == teacher_encoder.template)
    if not same:
        raise InputError(
            f"hidden-state matching needs the student to use the teacher's tokenizer, but {student_encoder.source} "
            f"and {teacher_encoder.source} tokenize differently; use score-only distillation "
            "(--procedure ranker-distill or fine-tune) across tokenizers")


class HiddenMatcher:
    """Hidden-state (+ attention) matching of a student to a frozen teacher on the same batch."""

    def __init__(self, teacher_encoder, student_encoder, layer_map: list[int] | None = None,
                 attention_weight: float = 1.0):
        check_same_tokenizer(student_encoder, teacher_encoder)
        self.teacher = teacher_encoder.model
        n_student = len(encoder_layers(student_encoder.model))
        n_teacher = len(encoder_layers(self.teacher))
        self.layer_map = layer_map or evenly_spaced_layers(n_teacher, n_student)
        if len(self.layer_map) != n_student:
            raise InputError(f"layer map {self.layer_map} does not have one entry per student layer ({n_student})")
        self.attention_weight = attention_weight
        self.s_width = student_encoder.model.config.hidden_size
        self.t_width = self.teacher.config.hidden_size

    def build(self, student: torch.nn.Module, device: torch.device) -> dict[str, torch.nn.Module]:
        """Move the teacher to ``device`` (frozen); the learned projection if widths differ."""
        self.teacher = self.teacher.float().to(device).eval().requires_grad_(False)
        if self.attention_weight:
            for model in (student, self.teacher):  # attention maps need the eager implementation
                model.set_attn_implementation("eager")
        if self.s_width != self.t_width:
            torch.manual_seed(0)
            return {"projection": torch.nn.Linear(self.s_width, self.t_width).to(device)}
        return {}

    def forward_kwargs(self) -> dict:
        return {"output_hidden_states": True, "output_attentions": bool(self.attention_weight)}

    def match(self, modules, encoded: dict[str, torch.Tensor], device: torch.device,
              chunk_tokens: int | None = CHUNK_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
        """The student (``modules["model"]``) on a padded batch in ``length_chunks``, matched to the teacher chunk
        by chunk: the batch's matching loss, and the student's logits in the batch's order. A chunk's hidden-state
        term weighs by its share of the batch's tokens, its attention term by its share of the token pairs: the
        loss of the batch run as one padded batch."""
        lengths = encoded["attention_mask"].sum(dim=1).double()
        chunks = length_chunks(encoded, device, chunk_tokens)
        loss, logits = torch.zeros((), device=device), []
        for index, chunk in chunks:
            output = modules["model"](**chunk, **self.forward_kwargs())
            mine = lengths[torch.from_numpy(index)]
            loss = loss + self._chunk_loss(modules, output, chunk, float(mine.sum() / lengths.sum()),
                                          float((mine**2).sum() / (lengths**2).sum()))
            logits.append(output.logits)
        return loss, in_batch_order(logits, chunks)

    def _chunk_loss(self, modules, student_output, batch: dict, token_share: float,
                    pair_share: float) -> torch.Tensor:
        """The matching loss on one batch: its hidden-state term times ``token_share``, its attention term times
        ``pair_share``."""
        with torch.no_grad():
            teacher_output = self.teacher(**batch, **self.forward_kwargs())
        t_states = [teacher_output.hidden_states[0]] + [teacher_output.hidden_states[i + 1] for i in self.layer_map]
        mask = batch["attention_mask"]
        loss = token_share * hidden_state_loss(student_output.hidden_states, t_states, mask, modules.get("projection"))
        if self.attention_weight:
            t_maps = [teacher_output.attentions[i] for i in self.layer_map]
            loss = loss + self.attention_weight * pair_share * attention_loss(student_output.attentions, t_maps, mask)
        return loss

    def restore(self, student: torch.nn.Module) -> None:
        """Back to the fast attention implementation once matching is over."""
        if self.attention_weight:
            student.set_attn_implementation("sdpa")


class PairSource:
    """Unlabeled (query, passage) pairs: ``per_query`` candidates drawn from each query's top-``depth``."""

    def __init__(self, topics: dict[str, str], run_path: str | Path, per_query: int, depth: int, seed: int = SEED):
        self.topics, self.run_path, self.per_query = topics, Path(run_path), per_query
        self.depth, self.seed = depth, seed
        self.stats = GroupStats()

    def iter_groups(self, epoch: int = 0) -> Iterator[Group]:
        stats = self.stats = GroupStats()
        for qid, ranking in iter_run_lists(self.run_path, self.depth):
            stats.queries += 1
            if qid not in self.topics:
                stats.not_in_topics += 1
                continue
            docids = [d for d, _ in ranking]
            for docid in query_rng(self.seed, epoch, qid).sample(docids, min(self.per_query, len(docids))):
                stats.groups += 1
                yield Group(qid, self.topics[qid], (docid,))

    def count(self) -> int:
        return sum(1 for _ in self.iter_groups(0))


class LMDistillTask:
    """Train a student cross-encoder's encoder to match a teacher encoder (no ranking loss)."""

    def __init__(self, name: str, student_encoder, teacher_encoder, source: PairSource, docstore,
                 attention_weight: float = 1.0, seed: int = SEED, layer_map: list[int] | None = None,
                 token_cache=None):
        self.name, self.encoder, self.source, self.docstore, self.seed = name, student_encoder, source, docstore, seed
        self.token_cache = token_cache  # passages as token ids (pipeline.token_cache), else text from the docstore
        self.matcher = HiddenMatcher(teacher_encoder, student_encoder, layer_map, attention_weight=attention_weight)
        self._count: int | None = None

    def build(self, device: torch.device) -> dict[str, torch.nn.Module]:
        """The student (only its embeddings and encoder layers trainable: no loss reaches its ranking head, and
        DistributedDataParallel needs every trainable parameter to get a gradient) and the projection."""
        model = self.encoder.model.float().to(device)
        model.requires_grad_(False)
        model.base_model.embeddings.requires_grad_(True)
        model.base_model.encoder.requires_grad_(True)
        modules = {"model": model}
        modules.update(self.matcher.build(model, device))
        return modules

    def num_examples(self) -> int:
        if self._count is None:
            self._count = self.source.count()
            log.info("%s: %s (pairs)", self.name, self.source.stats.summary())
        return self._count

    def examples(self, epoch: int) -> Iterator[Group]:
        return shuffled(self.source.iter_groups(epoch), self.seed, epoch)

    def loss(self, modules, groups: list[Group], device: torch.device) -> tuple[torch.Tensor, dict]:
        encoded = pair_inputs(self.encoder, groups, self.docstore, self.token_cache)
        return self.matcher.match(modules, encoded, device)[0], {}

    def save(self, modules, path: Path) -> None:
        self.encoder.model = modules["model"]
        self.matcher.restore(self.encoder.model)
        self.encoder.save_pretrained(path)
        if self.matcher.attention_weight:
            self.encoder.model.set_attn_implementation("eager")
