"""The scoring engine: fast because of how it batches, the same for the teacher and every student.

For each chunk of pairs (whole queries, about ``chunk_pairs`` pairs):

1. a background thread tokenizes the chunk (each distinct query once, passages in one parallel call of the
   Rust tokenizer), sorts the pairs by token length (longest first) and cuts batches by a token budget
   (``rows x padded length <= batch_tokens``, the length rounded up to ``pad_multiple``, rows at least
   ``1 - max_padding`` of the batch's longest), collating each into
   int32 tensors (pinned on CUDA) with vectorised numpy (no Python loop per pair); it runs up to
   ``prefetch`` batches ahead of the model;
2. the calling thread copies a batch to the device (``non_blocking``), builds the attention mask and token
   types there from the row lengths, runs the model under ``torch.inference_mode`` and keeps the scores on
   the device: no synchronisation per batch. At the end of a chunk its scores are copied back without
   blocking and collected once the next chunk's first batch is queued, so the device never waits for the host;
3. the scores are put back in the chunk's original pair order.

Memory is bounded by the chunk size and the prefetch depth, never by the number of candidates. With SDPA
attention, a batch without padding runs without a mask (letting PyTorch pick a flash kernel); a padded one
gets a boolean ``[rows, 1, 1, length]`` mask built on the device, so transformers never inspects it on the host.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from .rerank import CrossEncoder

#: Pairs per chunk when none is given: enough for homogeneous lengths, few enough to stay small in memory.
CPU_CHUNK_PAIRS = 4096
GPU_CHUNK_PAIRS = 32768


@dataclass
class PairChunk:
    """A group of (query, passage) pairs scored together; ``meta`` travels with it untouched.

    Passages are given as text (``passages``) or already tokenized without special tokens (``passage_ids``).
    """

    queries: list[str]
    query_of_pair: Sequence[int]
    passages: Sequence[str] | None = None
    passage_ids: Sequence[Sequence[int]] | None = None
    meta: Any = None

    def __len__(self) -> int:
        return len(self.query_of_pair)


@dataclass
class Batch:
    """One model call: token ids (rows sorted by length, padded) and where each row goes in the chunk."""

    input_ids: torch.Tensor  # [rows, length] int32
    lengths: torch.Tensor  # [rows] int32: real tokens per row
    boundaries: torch.Tensor  # [rows] int32: first token of the passage segment
    positions: np.ndarray  # [rows] the pair's index in the chunk
    padded: bool  # whether any row is shorter than the batch length


@dataclass
class ChunkResult:
    """The scores of one chunk in its pair order, and the seconds it took (see ``ScoringEngine.stream``)."""

    chunk: PairChunk
    scores: np.ndarray
    seconds: float
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0


@dataclass
class ChunkTokens:
    """A chunk's tokens as one flat table: specials (prefix, middle, suffix, pad), then the queries, then the
    passages; per pair the start of its query and passage in the table and how many tokens of each it uses."""

    table: np.ndarray  # int32
    query_start: np.ndarray  # [pairs] int64
    query_len: np.ndarray  # [pairs] int64
    passage_start: np.ndarray  # [pairs] int64
    passage_len: np.ndarray  # [pairs] int64 (truncated so the pair fits max_length)
    lengths: np.ndarray  # [pairs] int32: tokens of the whole pair
    boundaries: np.ndarray  # [pairs] int32: first token of the passage segment
    prefix: int
    middle: int
    suffix: int

    @classmethod
    def build(cls, encoder: "CrossEncoder", pad_id: int, query_tokens: Sequence[Sequence[int]],
              query_of_pair: np.ndarray, passage_tokens: Sequence[Sequence[int]]) -> "ChunkTokens":
        t = encoder.template
        specials = np.asarray(t.prefix + t.middle + t.suffix + [pad_id], dtype=np.int32)
        q_flat, q_off, q_len = _flatten(query_tokens, encoder.query_max_length)
        p_flat, p_off, p_len = _flatten(passage_tokens, None)
        lq = q_len[query_of_pair]
        lp = np.minimum(p_len, np.maximum(encoder.max_length - t.num_special - lq, 0))
        lengths = (t.num_special + lq + lp).astype(np.int32)
        boundaries = (len(t.prefix) + lq + len(t.middle)).astype(np.int32)
        table = np.concatenate([specials, q_flat, p_flat])
        return cls(table, len(specials) + q_off[query_of_pair], lq, len(specials) + len(q_flat) + p_off, lp,
                   lengths, boundaries, len(t.prefix), len(t.middle), len(t.suffix))

    def gather(self, index: np.ndarray, width: int) -> np.ndarray:
        """The ``[len(index), width]`` int32 ids of the pairs ``index``, padded (one ``np.select``)."""
        c = np.arange(width, dtype=np.int64)[None, :]
        lq, lp = self.query_len[index][:, None], self.passage_len[index][:, None]
        mid_start = self.prefix + lq
        p_start = mid_start + self.middle
        s_start = p_start + lp
        end = s_start + self.suffix
        pad = self.prefix + self.middle + self.suffix  # the pad id's place in the table
        source = np.select(
            [c < self.prefix, c < mid_start, c < p_start, c < s_start, c < end],
            [c, self.query_start[index][:, None] + c - self.prefix, self.prefix + c - mid_start,
             self.passage_start[index][:, None] + c - p_start, self.prefix + self.middle + c - s_start],
            default=pad,
        )
        return self.table[source]


def _flatten(token_lists: Sequence[Sequence[int]], limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated ids (each list cut to ``limit``), start offsets and lengths."""
    if limit is not None:
        token_lists = [ids[:limit] for ids in token_lists]
    lengths = np.fromiter((len(ids) for ids in token_lists), dtype=np.int64, count=len(token_lists))
    flat = np.fromiter(itertools.chain.from_iterable(token_lists), dtype=np.int32, count=int(lengths.sum()))
    offsets = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return flat, offsets, lengths


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
    """Scores pair chunks with a ``CrossEncoder``: length-sorted token-budget batches, overlapped tokenization."""

    def __init__(
        self,
        encoder: "CrossEncoder",
        batch_tokens: int | None = None,
        chunk_pairs: int | None = None,
        pad_multiple: int | None = None,
        prefetch: int = 64,
        max_padding: float = 0.1,
    ):
        self.encoder = encoder
        self.device = encoder.device
        cuda = self.device.type == "cuda"
        self.batch_tokens = int(batch_tokens or encoder.batch_tokens)
        if self.batch_tokens < encoder.max_length:
            raise ValueError(f"batch_tokens {self.batch_tokens} is smaller than max_length {encoder.max_length}")
        self.chunk_pairs = int(chunk_pairs or (GPU_CHUNK_PAIRS if cuda else CPU_CHUNK_PAIRS))
        self.pad_multiple = int(pad_multiple or (8 if cuda else 1))
        self.prefetch = max(int(prefetch), 1)
        self.max_padding = float(max_padding)
        self.pin = cuda
        self.pad_id = int(encoder.tokenizer.pad_token_id or 0)
        template = encoder.template
        self.first_type, self.second_type = template.first_type, template.second_type
        self.sdpa = getattr(encoder.model.config, "_attn_implementation", None) == "sdpa"
        self._aranges: dict[int, torch.Tensor] = {}

    # ---- host side: tokenize, sort, batch (background thread) --------------------------------

    def tokenize_chunk(self, chunk: PairChunk) -> "ChunkTokens":
        """Token ids of the chunk's queries and passages in one flat table, and each pair's layout in it."""
        enc = self.encoder
        query_tokens = enc.tokenize(chunk.queries, enc.query_max_length)
        if chunk.passage_ids is not None:
            passage_tokens = chunk.passage_ids
        elif chunk.passages is not None:
            passage_tokens = enc.tokenize(chunk.passages, enc.max_length - enc.template.num_special)
        else:
            raise ValueError("a PairChunk needs passages or passage_ids")
        if len(passage_tokens) != len(chunk.query_of_pair):
            raise ValueError(f"{len(chunk.query_of_pair)} pairs but {len(passage_tokens)} passages")
        return ChunkTokens.build(enc, self.pad_id, query_tokens, np.asarray(chunk.query_of_pair, dtype=np.int64),
                                 passage_tokens)

    def plan(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Pair indices of each batch: longest first, rows x padded length within the token budget, and no row
        shorter than ``1 - max_padding`` of the batch's longest (so padding stays small even in small chunks)."""
        order = np.argsort(-lengths, kind="stable")
        ascending = lengths[order][::-1]  # for searchsorted
        batches, start, m, n = [], 0, self.pad_multiple, len(order)
        while start < n:
            longest = int(lengths[order[start]])
            width = -(-longest // m) * m
            shortest = int(np.ceil(longest * (1.0 - self.max_padding)))
            similar = n - int(np.searchsorted(ascending, shortest, side="left")) - start
            rows = max(min(self.batch_tokens // width, similar), 1)
            batches.append(order[start : start + rows])
            start += rows
        return batches

    def collate(self, tokens: "ChunkTokens", index: np.ndarray) -> Batch:
        """Pad the pairs ``index`` into one int32 batch (pinned on CUDA), vectorised: no Python loop per pair."""
        lens = tokens.lengths[index]
        m = self.pad_multiple
        width = -(-int(lens.max()) // m) * m
        block = tokens.gather(index, width)
        tensors = [torch.from_numpy(block), torch.from_numpy(lens), torch.from_numpy(tokens.boundaries[index])]
        if self.pin:
            tensors = [t.pin_memory() for t in tensors]
        return Batch(*tensors, positions=index, padded=bool(lens.min() < width))

    def prepare(self, chunk: PairChunk) -> Iterator[Batch]:
        """Tokenize, sort and batch one chunk."""
        tokens = self.tokenize_chunk(chunk)
        for index in self.plan(tokens.lengths):
            yield self.collate(tokens, index)

    # ---- device side --------------------------------------------------------------------------

    def _arange(self, width: int) -> torch.Tensor:
        if width not in self._aranges:
            self._aranges[width] = torch.arange(width, device=self.device, dtype=torch.int32)
        return self._aranges[width]

    def forward(self, batch: Batch) -> torch.Tensor:
        """Scores of one batch, left on the device (no synchronisation)."""
        dev, nb = self.device, self.pin
        input_ids = batch.input_ids.to(dev, non_blocking=nb)
        width = input_ids.shape[1]
        positions = self._arange(width)[None, :]
        kwargs: dict[str, torch.Tensor | None] = {"input_ids": input_ids}
        if self.first_type != self.second_type or self.first_type != 0:
            boundaries = batch.boundaries.to(dev, non_blocking=nb)[:, None]
            kwargs["token_type_ids"] = torch.where(positions >= boundaries, self.second_type, self.first_type)
        if batch.padded:
            mask = positions < batch.lengths.to(dev, non_blocking=nb)[:, None]
            kwargs["attention_mask"] = mask[:, None, None, :] if self.sdpa else mask.long()
        logits = self.encoder.forward_model(**kwargs).logits
        return self.encoder.logits_to_scores(logits).float()

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
                    tokens += int(item.lengths.sum())
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
        parts = [r.scores for r in self.stream(self.chunks_of_pairs(queries, passages))]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
