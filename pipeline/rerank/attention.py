"""Attention implementations a ranker can run with, by name: transformers' own, or one that lets SDPA use its
fused kernels where the stock path cannot.

- ``sdpa``: transformers' SDPA attention (the default).
- ``sdpa-padded``: each head zero-padded to a multiple of ``HEAD_MULTIPLE`` before SDPA. The fused kernels
  (flash, memory-efficient) need head sizes that are multiples of 8; TinyBERT's 4L-312 has 12 heads of 26 and
  falls back to the slow math kernel. Zero columns add nothing to ``q . k`` (the scale stays that of the real
  head size) and give zero output columns, which are cut off: the scores are those of ``sdpa``. Heads that
  already fit run as ``sdpa``.

Both take the same masks (``sdpa_mask``: a boolean ``[rows, 1, 1, width]`` mask passes through untouched).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where attention runs, so configs can check names without it
    import torch

#: Names accepted by ``use_attention`` (and ``CrossEncoder(attention=...)``).
ATTENTION = ("sdpa", "sdpa-padded")
#: Head sizes the fused SDPA kernels take are multiples of this.
HEAD_MULTIPLE = 8


def padded_head_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, **kwargs):
    """transformers' SDPA attention on heads zero-padded to a multiple of ``HEAD_MULTIPLE`` (same result)."""
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    size = query.shape[-1]
    padded = -(-size // HEAD_MULTIPLE) * HEAD_MULTIPLE
    scaling = size**-0.5 if scaling is None else scaling
    if padded == size:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    pad = (0, padded - size)
    output, weights = sdpa_attention_forward(module, F.pad(query, pad), F.pad(key, pad), F.pad(value, pad),
                                             attention_mask, scaling=scaling, **kwargs)
    return output[..., :size], weights


def _register() -> None:
    """Make ``sdpa-padded`` known to transformers (attention and mask), once."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("sdpa-padded", padded_head_sdpa)
    AttentionMaskInterface.register("sdpa-padded", sdpa_mask)


def use_attention(model, name: str) -> None:
    """Run ``model`` (a transformers model) with the attention ``name`` (one of ``ATTENTION``)."""
    if name not in ATTENTION:
        raise ValueError(f"unknown attention {name!r}; expected one of {', '.join(ATTENTION)}")
    if name != "sdpa":
        _register()
    model.set_attn_implementation(name)


def takes_sdpa_mask(config) -> bool:
    """Whether the model's attention takes SDPA's boolean ``[rows, 1, 1, width]`` mask as it is."""
    return getattr(config, "_attn_implementation", None) in ATTENTION
