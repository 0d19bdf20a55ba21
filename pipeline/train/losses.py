"""Ranking and distillation losses on score tensors.

Ranking losses take ``scores`` of shape ``(groups, group_size)``. Where a loss needs a positive, it
is at index 0 of each group (the layout the training groups produce).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def lce_loss(scores: torch.Tensor) -> torch.Tensor:
    """Localized Contrastive Estimation: softmax cross-entropy over each group, positive at index 0."""
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores.float(), target)


def soft_label_ce_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution over each group's relevant members (labels > 0).

    Groups with no relevant member contribute nothing; with none at all the loss is 0.
    """
    relevant = (labels > 0).float()
    counts = relevant.sum(-1)
    keep = counts > 0
    if not keep.any():
        return scores.sum() * 0.0
    target = relevant[keep] / counts[keep, None]
    return -(target * F.log_softmax(scores[keep].float(), dim=-1)).sum(-1).mean()


def listwise_kl_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
) -> torch.Tensor:
    """KL(teacher || student) between the softmax distributions over each group, averaged over groups.

    The student's scores are divided by ``temperature``, the teacher's by ``teacher_temperature``
    (default: the same ``temperature``). A low teacher temperature sharpens the teacher's
    distribution (0.1 for cosine-similarity teachers, whose scores lie in [-1, 1]).
    """
    t_temp = temperature if teacher_temperature is None else teacher_temperature
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / t_temp, dim=-1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()


def margin_mse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Margin-MSE: the student's margins ``s[0] - s[i]`` regress the teacher's ``t[0] - t[i]`` (i >= 1)."""
    s_margin = student[:, :1].float() - student[:, 1:].float()
    t_margin = teacher[:, :1].float() - teacher[:, 1:].float()
    return F.mse_loss(s_margin, t_margin)


def pointwise_mse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Pointwise MSE between the student's and the teacher's scores."""
    return F.mse_loss(student.float(), teacher.float())


def hidden_state_loss(
    student_states: list[torch.Tensor] | tuple[torch.Tensor, ...],
    teacher_states: list[torch.Tensor] | tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor,
    projection: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Mean over layer pairs of the MSE between (projected) student and teacher hidden states.

    States are ``(batch, seq, width)``; only positions where ``attention_mask`` is 1 count. The
    ``projection`` (a learned linear map, student width -> teacher width) is applied where widths differ.
    """
    mask = attention_mask[..., None].float()
    total = mask.sum()
    losses = []
    for s, t in zip(student_states, teacher_states, strict=True):
        s = projection(s.float()) if projection is not None else s.float()
        if s.shape[-1] != t.shape[-1]:
            raise ValueError(f"hidden widths differ ({s.shape[-1]} vs {t.shape[-1]}) and no projection was given")
        losses.append((((s - t.float()) ** 2) * mask).sum() / (total * s.shape[-1]))
    return torch.stack(losses).mean()


def attention_loss(
    student_maps: list[torch.Tensor] | tuple[torch.Tensor, ...],
    teacher_maps: list[torch.Tensor] | tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Mean over layer pairs of the MSE between attention maps ``(batch, heads, seq, seq)``.

    Only rows and columns of real (non-padding) tokens count. Where the head counts differ, the
    maps averaged over heads are compared.
    """
    mask = attention_mask.float()
    pair_mask = mask[:, None, :, None] * mask[:, None, None, :]
    losses = []
    for s, t in zip(student_maps, teacher_maps, strict=True):
        s, t = s.float(), t.float()
        if s.shape[1] != t.shape[1]:
            s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
        weight = pair_mask.expand(-1, s.shape[1], -1, -1)
        losses.append((((s - t) ** 2) * weight).sum() / weight.sum())
    return torch.stack(losses).mean()
