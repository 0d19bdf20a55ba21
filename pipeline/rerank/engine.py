"""The scoring engine: fast because of how it batches, the same for the teacher and every student.

For each chunk of pairs (whole queries, about ``chunk_pairs`` pairs):

1. a background thread tokenizes the chunk (each distinct query once; passages come as token ids from the
   token cache, or as text tokenized in one parallel call of the Rust tokenizer), sorts the pairs by token
   length (longest first) and cuts batches by a token budget
   (``rows x padded length <= batch_tokens``, the length rounded up to ``pad_multiple``, rows at least
   ``1 - max_padding`` of the batch's longest), collating each into
   int32 tensors (pinned on CUDA) with vectorised numpy (no Python loop per pair); it runs up to
   ``prefetch`` batches ahead of the model;
2. the calling thread copies a batch to the device (``non_blocking``), where the cross-encoder builds the
   attention mask and token types from the row lengths (``CrossEncoderModel.score``), runs the model under
   ``torch.inference_mode`` and keeps the scores on the device: no synchronisation per batch. At the end of a
   chunk its scores are copied back without blocking and collected once the next chunk's first batch is queued,
   so the device never waits for the host;
3. the scores are put back in the chunk's original pair order.

Memory is bounded by the chunk size and the prefetch depth, never by the number of candidates. The pairs are
laid out by the cross-encoder's encoding rule (``CrossEncoderModel.pair_tokens``), the one training uses too.

Static shapes (``bucket``): lengths are rounded up to a multiple of ``bucket`` and a batch holds the pairs of
one rounded length, its rows padded (with copies of its first row, whose scores are dropped) up to the budget's
row count or the power of two below it that holds them: a few dozen shapes in all, so ``cuda_graphs`` (one CUDA
graph per shape, ``pipeline.cuda_graphs``) and ``torch.compile`` with static shapes compile each once.

CUDA out of memory while scoring halves the token budget for the batches still to be planned and scores the
failed batch in halves (one warning for the run); only a single pair that does not fit is an error.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .batching import GRAPH_BUCKET, MAX_PADDING, bucket_rows, default_batch_tokens, plan_batches, plan_buckets
from .cuda_graphs import GraphedForward
from .model import CrossEncoderModel, PairTokens
from .token_cache import PassageTokens

log = logging.getLogger(__name__)

#: Pairs per chunk when none is given: enough for homogeneous lengths, few enough to stay small in memory.
CPU_CHUNK_PAIRS = 4096
GPU_CHUNK_PAIRS = 32768


@dataclass
class PairChunk:
    """A group of (query, passage) pairs scored together; ``meta`` travels with it untouched.

    Passages are given as text (``passages``) or as token ids without special tokens (``passage_tokens``: from
    the token cache or ``CrossEncoderModel.tokenize_passages``).
    """

    queries: list[str]
    query_of_pair: Sequence[int]
    passages: Sequence[str] | None = None
    passage_tokens: PassageTokens | None = None
    meta: Any = None

    def __len__(self) -> int:
        return len(self.query_of_pair)


@dataclass
class Batch:
    """One model call: token ids (rows sorted by length, padded) and where each row goes in the chunk; rows past
    ``len(positions)`` only fill a static shape (``ScoringEngine(bucket=...)``) and their scores are dropped."""

    input_ids: torch.Tensor  # [rows, length] int32
    lengths: torch.Tensor  # [rows] int32: real tokens per row
    boundaries: torch.Tensor  # [rows] int32: first token of the passage segment
    positions: np.ndarray  # [pairs <= rows] the pair's index in the chunk
    padded: bool  # whether any row is shorter than the batch length

    @property
    def pairs(self) -> int:
        return len(self.positions)


@dataclass
class ChunkResult:
    """The scores of one chunk in its pair order, and the seconds it took (see ``ScoringEngine.stream``)."""

    chunk: PairChunk
    scores: np.ndarray
    seconds: float
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0


_END = object()


class _Pending:
    """A chunk whose scores are being copied to the host without blocking (pinned memory + an event on CUDA),
    so the device is never idle waiting for the host at a chunk boundary."""

    def __init__(self, chunk: PairChunk, outputs: list[torch.Tensor], positions: list[np.ndarray],
                 tokens: int, padded_tokens: int):
        self.chunk, self.batches, self.tokens, self.padded_tokens = chunk, len(outputs), tokens, padded_tokens
        self.positions = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
        self.event = None
        if not outputs:
            self.host = torch.zeros(0)
        elif outputs[0].device.type == "cuda":
            scores = torch.cat(outputs)
            self.host = torch.empty(scores.shape, dtype=scores.dtype, pin_memory=True)
            self.host.copy_(scores, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = torch.cat(outputs)

    def finish(self, since: float) -> ChunkResult:
        """Wait for the copy; the chunk's scores in its pair order."""
        if self.event is not None:
            self.event.synchronize()
        scores = np.empty(len(self.chunk), dtype=np.float32)
        scores[self.positions] = self.host.numpy()
        return ChunkResult(self.chunk, scores, time.perf_counter() - since, self.batches, self.tokens,
                           self.padded_tokens)


class ScoringEngine:
    """Scores pair chunks with a cross-encoder model: length-sorted token-budget batches, overlapped tokenization;
    ``bucket`` for static shapes, ``cuda_graphs`` to replay each shape from a CUDA graph (see the module
    docstring)."""

    def __init__(
        self,
        encoder: CrossEncoderModel,
        batch_tokens: int | None = None,
        chunk_pairs: int | None = None,
        pad_multiple: int | None = None,
        prefetch: int = 64,
        max_padding: float = MAX_PADDING,
        bucket: int | None = None,
        cuda_graphs: bool = False,
    ):
        self.encoder = encoder
        self.device = encoder.device
        cuda = self.device.type == "cuda"
        self.batch_tokens = int(batch_tokens or default_batch_tokens(encoder.device, encoder.hidden_size))
        if self.batch_tokens < encoder.max_length:
            raise InputError(f"batch_tokens {self.batch_tokens} is smaller than max_length {encoder.max_length}")
        self.chunk_pairs = int(chunk_pairs or (GPU_CHUNK_PAIRS if cuda else CPU_CHUNK_PAIRS))
        self.pad_multiple = int(pad_multiple or (8 if cuda else 1))
        self.prefetch = max(int(prefetch), 1)
        self.max_padding = float(max_padding)
        self.pin = cuda
        if cuda_graphs and not cuda:
            raise InputError(f"CUDA graphs need a CUDA device, not {self.device}")
        self.bucket = int(bucket or (GRAPH_BUCKET if cuda_graphs else 0)) or None
        if self.bucket is not None:
            if self.bucket < 1 or self.bucket > self.batch_tokens:
                raise InputError(f"bucket {self.bucket} must be between 1 and the token budget {self.batch_tokens}")
            self.pad_multiple = self.bucket
        self.graphed = GraphedForward(encoder.score, self.device) if cuda_graphs else None
        self.out_of_memory = False  # set (and warned about) on the first CUDA out-of-memory error

    def settings(self) -> dict[str, Any]:
        """Every option of the model (a fresh head's seed too) and the engine that can change the bits of a score
        (what a journal's header names, so that a resumed run scores as the killed one did)."""
        encoder = self.encoder
        return {"head": encoder.head_init, "precision": encoder.precision, "device": self.device.type,
                "max_length": encoder.max_length, "query_max_length": encoder.query_max_length,
                "attention": encoder.attention, "compile": encoder.compile, "batch_tokens": self.batch_tokens,
                "chunk_pairs": self.chunk_pairs, "bucket": self.bucket, "cuda_graphs": self.graphed is not None}

    # ---- host side: tokenize, sort, batch (background thread) --------------------------------

    def tokenize_chunk(self, chunk: PairChunk) -> PairTokens:
        """The chunk's pairs laid out by the encoding rule (one flat table of token ids)."""
        if chunk.passages is None and chunk.passage_tokens is None:
            raise ValueError("a PairChunk needs passages or passage_tokens")
        return self.encoder.pair_tokens(chunk.queries, chunk.query_of_pair, chunk.passages, chunk.passage_tokens)

    def width(self, longest: int) -> int:
        """The padded length of a batch whose longest row has ``longest`` tokens."""
        return -(-longest // self.pad_multiple) * self.pad_multiple

    def plan(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Pair indices of each batch (``batching.plan_batches`` with this engine's budget and padding rules);
        with ``bucket``, the pairs of one rounded length per batch (``batching.plan_buckets``)."""
        if self.bucket is not None:
            return plan_buckets(lengths, self.batch_tokens, self.bucket)
        return plan_batches(lengths, self.batch_tokens, self.pad_multiple, self.max_padding)

    def collate(self, tokens: PairTokens, index: np.ndarray) -> Batch:
        """Pad the pairs ``index`` into one int32 batch (pinned on CUDA), vectorised: no Python loop per pair.
        With ``bucket``, rows are added (copies of the first) up to ``bucket_rows``."""
        width = self.width(int(tokens.lengths[index].max()))
        rows = index
        if self.bucket is not None:
            filler = bucket_rows(len(index), width, self.batch_tokens) - len(index)
            rows = np.concatenate([index, np.repeat(index[:1], filler)])
        lens = tokens.lengths[rows]
        block = tokens.gather(rows, width)
        tensors = [torch.from_numpy(block), torch.from_numpy(lens), torch.from_numpy(tokens.boundaries[rows])]
        if self.pin:
            tensors = [t.pin_memory() for t in tensors]
        return Batch(*tensors, positions=index, padded=bool(lens.min() < width))

    def prepare(self, chunk: PairChunk) -> Iterator[Batch]:
        """Tokenize, sort and batch one chunk."""
        tokens = self.tokenize_chunk(chunk)
        for index in self.plan(tokens.lengths):
            yield self.collate(tokens, index)

    # ---- device side --------------------------------------------------------------------------

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores of one batch's pairs, left on the device (no synchronisation); on CUDA out of memory, see
        ``retry_in_halves``."""
        if self.graphed is None:
            return self.score(batch)
        try:  # one shape per bucket: always masked, so padding never adds a shape
            return self.graphed(batch.input_ids, batch.lengths, batch.boundaries, padded=True)[: batch.pairs]
        except torch.OutOfMemoryError:
            return self.retry_in_halves(batch)

    def score(self, batch: Batch) -> torch.Tensor:
        """The model's scores of a batch's pairs (host tensors copied to the device without blocking)."""
        dev, nb = self.device, self.pin
        try:
            return self.encoder.score(batch.input_ids.to(dev, non_blocking=nb), batch.lengths.to(dev, non_blocking=nb),
                                      batch.boundaries.to(dev, non_blocking=nb), batch.padded)[: batch.pairs]
        except torch.OutOfMemoryError:
            return self.retry_in_halves(batch)

    def retry_in_halves(self, batch: Batch) -> torch.Tensor:
        """After CUDA ran out of memory: halve the token budget (for the batches not yet planned; warned once)
        and score the batch's pairs in two halves (without CUDA graphs), each split again if it still fails."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        rows, width = batch.input_ids.shape
        self.batch_tokens = max(self.batch_tokens // 2, self.encoder.max_length, self.pad_multiple)
        if not self.out_of_memory:
            self.out_of_memory = True
            log.warning("CUDA out of memory on a batch of %d x %d tokens: the token budget is halved to %d and the "
                        "batch scored in halves", rows, width, self.batch_tokens)
        if batch.pairs == 1:
            raise InputError(f"CUDA out of memory scoring a single pair of {width} tokens; free GPU memory, or use "
                             "a shorter --max-length or a lower --precision")
        half = (batch.pairs + 1) // 2
        parts = []
        for part in (slice(0, half), slice(half, batch.pairs)):
            lengths = batch.lengths[part]
            narrow = self.width(int(lengths.max()))
            parts.append(self.score(Batch(batch.input_ids[part, :narrow], lengths, batch.boundaries[part],
                                          batch.positions[part], bool(int(lengths.min()) < narrow))))
        return torch.cat(parts)

    # ---- the stream -------------------------------------------------------------------------

    def stream(self, chunks: Iterable[PairChunk]) -> Iterator[ChunkResult]:
        """Score chunks in order. ``seconds`` of a chunk runs from the end of the previous one (or the start)
        to its scores being on the host, so the seconds of all chunks add up to the wall time."""
        items: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for chunk in chunks:
                    for batch in self.prepare(chunk):
                        if not put(batch):
                            return
                    if not put((_END, chunk)):
                        return
                put((_END, None))
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)

        worker = threading.Thread(target=produce, name="distilrank-tokenize", daemon=True)
        worker.start()
        try:
            last = time.perf_counter()
            outputs: list[torch.Tensor] = []
            positions: list[np.ndarray] = []
            tokens = padded_tokens = 0
            pending: _Pending | None = None
            while True:
                item = items.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Batch):
                    with torch.inference_mode():
                        outputs.append(self.forward(item))
                    positions.append(item.positions)
                    tokens += int(item.lengths[: item.pairs].sum())
                    padded_tokens += item.input_ids.numel()
                    if pending is not None:  # the device has queued work now: collect the previous chunk
                        result, last = pending.finish(last), time.perf_counter()
                        pending = None
                        yield result
                    continue
                if pending is not None:
                    result, last = pending.finish(last), time.perf_counter()
                    pending = None
                    yield result
                chunk = item[1]
                if chunk is None:
                    break
                pending = _Pending(chunk, outputs, positions, tokens, padded_tokens)
                outputs, positions, tokens, padded_tokens = [], [], 0, 0
        finally:
            stop.set()
            worker.join(timeout=10)

    def chunks_of_pairs(self, queries: Sequence[str], passages: Sequence[str]) -> Iterator[PairChunk]:
        """Cut a flat list of pairs into chunks (each pair's query tokenized on its own)."""
        for start in range(0, len(queries), self.chunk_pairs):
            qs = list(queries[start : start + self.chunk_pairs])
            yield PairChunk(qs, range(len(qs)), passages=list(passages[start : start + self.chunk_pairs]))

    def score_pairs(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """Scores of the pairs ``(queries[i], passages[i])`` in input order."""
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
        return self.scores(self.chunks_of_pairs(queries, passages))

    def score_query(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Scores of one query's ``passages`` in input order (the query tokenized once a chunk); the pairs are
        batched as the rerank stage batches a query's candidates, so the scores are the same."""
        step = self.chunk_pairs
        return self.scores(PairChunk([query], np.zeros(len(part), dtype=np.int64), passages=part)
                           for part in (list(passages[i : i + step]) for i in range(0, len(passages), step)))

    def scores(self, chunks: Iterable[PairChunk]) -> np.ndarray:
        """The scores of ``chunks``, concatenated in order."""
        parts = [r.scores for r in self.stream(chunks)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
