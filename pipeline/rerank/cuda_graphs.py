"""CUDA graphs over a few batch shapes: a forward pass captured once per input shape and replayed.

A small ranker's batch is hundreds of short kernels; launched one by one from Python, the launches, not the
FLOPs, set its speed. ``GraphedForward`` captures the forward pass of each input shape it meets into a CUDA graph
(after warm-up runs on a side stream, all graphs in one shared memory pool) and replays it: one launch per batch.
The shapes must come from a small set (the engine's buckets, ``ScoringEngine(bucket=...)``); past ``MAX_GRAPHS``
shapes, new ones run uncaptured, with one warning. Inputs (on the host or the device) are copied into the graph's
static buffers; the output is cloned after the replay, since the next replay of that graph overwrites it.

CUDA only: no CPU test can run it; ``benchmarks/rerank_speed.py --device cuda`` measures it against the plain
path and checks the scores are the same.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

#: Most graphs kept (one per input shape); each holds its static inputs and output in the shared pool.
MAX_GRAPHS = 128
#: Uncaptured runs of a new shape before its capture (lazy initialisation, autotuning, allocator warm-up).
WARMUP_RUNS = 2


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]
    output: torch.Tensor


class GraphedForward:
    """``GraphedForward(forward, device)(*tensors, **options)``: ``forward``'s result, replayed from a CUDA graph
    captured for the tensors' shapes and dtypes and the (hashable) ``options``."""

    def __init__(self, forward: Callable[..., torch.Tensor], device: torch.device, max_graphs: int = MAX_GRAPHS):
        if torch.device(device).type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.forward, self.device, self.max_graphs = forward, torch.device(device), max_graphs
        self.graphs: dict[tuple, _Graph] = {}
        self.pool = None
        self.overflow = False

    def __call__(self, *inputs: torch.Tensor, **options: Any) -> torch.Tensor:
        key = tuple((tuple(t.shape), t.dtype) for t in inputs) + tuple(sorted(options.items()))
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                if not self.overflow:
                    log.warning("more than %d batch shapes: new shapes run without CUDA graphs", self.max_graphs)
                    self.overflow = True
                return self.forward(*(t.to(self.device, non_blocking=True) for t in inputs), **options)
            entry = self.graphs[key] = self._capture(inputs, options)
        for buffer, value in zip(entry.inputs, inputs, strict=True):
            buffer.copy_(value, non_blocking=True)
        entry.graph.replay()
        return entry.output.clone()

    def _capture(self, inputs: tuple[torch.Tensor, ...], options: dict[str, Any]) -> _Graph:
        buffers = tuple(torch.empty(t.shape, dtype=t.dtype, device=self.device) for t in inputs)
        for buffer, value in zip(buffers, inputs, strict=True):
            buffer.copy_(value, non_blocking=True)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.forward(*buffers, **options)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            output = self.forward(*buffers, **options)
        log.debug("captured a CUDA graph for %s", [tuple(t.shape) for t in inputs])
        return _Graph(graph, buffers, output)
