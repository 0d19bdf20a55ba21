"""Length-sorted batching by a token budget, written once for the rerank engine and the bi-encoder; static
(bucketed) shapes for CUDA graphs and static compilation."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: No row of a batch shorter than this fraction of the batch's longest, so padding stays small.
MAX_PADDING = 0.1
#: Token budget per batch (padded tokens) when none is given: CPUs like small batches, GPUs large ones (scaled
#: by 768 / the model's hidden size, at least 128).
CPU_BATCH_TOKENS = 4096
GPU_BATCH_TOKENS = 65536
#: The length multiple of static shapes when CUDA graphs are asked for without a bucket.
GRAPH_BUCKET = 32


def default_batch_tokens(device: torch.device, hidden_size: int) -> int:
    """The token budget per batch of a model ``hidden_size`` wide on ``device``."""
    if device.type != "cuda":
        return CPU_BATCH_TOKENS
    return GPU_BATCH_TOKENS * 768 // max(int(hidden_size), 128)


def plan_batches(lengths: np.ndarray, batch_tokens: int, pad_multiple: int = 1,
                 max_padding: float = MAX_PADDING) -> list[np.ndarray]:
    """Indices of each batch: longest first, rows x padded length within ``batch_tokens``, and no row shorter
    than ``1 - max_padding`` of the batch's longest (the length rounded up to ``pad_multiple``)."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    ascending = lengths[order][::-1]  # for searchsorted
    batches, start, m, n = [], 0, int(pad_multiple), len(order)
    while start < n:
        longest = int(lengths[order[start]])
        width = -(-longest // m) * m
        shortest = int(np.ceil(longest * (1.0 - max_padding)))
        similar = n - int(np.searchsorted(ascending, shortest, side="left")) - start
        rows = max(min(int(batch_tokens) // max(width, 1), similar), 1)
        batches.append(order[start : start + rows])
        start += rows
    return batches


def plan_buckets(lengths: np.ndarray, batch_tokens: int, bucket: int) -> list[np.ndarray]:
    """Indices of each batch of static shapes: the pairs whose length rounds up to the same multiple of ``bucket``
    (the batch's width) together, longest first, at most ``batch_tokens // width`` a batch."""
    lengths = np.asarray(lengths)
    widths = -(-lengths // bucket) * bucket
    order = np.argsort(-widths, kind="stable")
    batches = []
    for group in np.split(order, np.flatnonzero(np.diff(widths[order])) + 1):
        if len(group):
            rows = max(int(batch_tokens) // int(widths[group[0]]), 1)
            batches.extend(group[i : i + rows] for i in range(0, len(group), rows))
    return batches


def bucket_rows(pairs: int, width: int, batch_tokens: int) -> int:
    """The rows of a static-shape batch of ``pairs`` pairs ``width`` long: the budget's row count, or the smallest
    power of two below it that holds them (so a few row counts serve every batch)."""
    most = max(int(batch_tokens) // width, 1)
    rows = 1 << max(pairs - 1, 0).bit_length()
    return rows if rows < most else most
