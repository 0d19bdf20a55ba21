"""The rerank stage and the two-stage ``Pipeline`` (first stage -> cross-encoder), both timed.

Reranking keeps recall: the top ``depth`` candidates of each query are scored by the cross-encoder and
ranked by that score (ties keep first-stage order); the candidates below ``depth`` follow in their
first-stage order, with scores below every reranked one, so R@1000 of the first stage is kept.

Interpolation (``alpha``): per query, both the cross-encoder scores and the first-stage scores of the
reranked candidates are min-max normalised to [0, 1] (all equal -> 0), and the final score is
``alpha * ce + (1 - alpha) * first_stage``: ``alpha=1`` is the cross-encoder alone, ``alpha=0`` the first stage.

Missing passages (docids the docstore lacks) are an ``InputError`` listing the first few, or, with
``skip_missing=True``, dropped from the output with a count in the timing. Empty passages (blank text) are
treated the same way: an error naming them, or skipped and counted. NaN scores are an error: no run is made.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from .engine import PairChunk, ScoringEngine
from .errors import InputError
from .runs import Run
from .timing import StageTiming, sync

if TYPE_CHECKING:
    from .rerank import CrossEncoder

log = logging.getLogger(__name__)
SHOW = 5  # how many offending ids an error lists


def _ids(items: list[str]) -> str:
    return ", ".join(items[:SHOW]) + (f", ... ({len(items)} in all)" if len(items) > SHOW else "")


def _minmax(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def combine(ce_scores: np.ndarray, first_scores: np.ndarray, alpha: float | None) -> np.ndarray:
    """The final scores of the reranked candidates of one query (see the module docstring for ``alpha``)."""
    if alpha is None:
        return ce_scores.astype(np.float64)
    return alpha * _minmax(ce_scores.astype(np.float64)) + (1 - alpha) * _minmax(first_scores.astype(np.float64))


def merge(head: list[tuple[str, float]], scores: np.ndarray, tail: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Head ranked by ``scores`` (stable: ties keep head order), then the tail in its order with lower scores."""
    order = np.argsort(-scores, kind="stable")
    ranked = [(head[i][0], float(scores[i])) for i in order]
    floor = ranked[-1][1] if ranked else 0.0
    return ranked + [(docid, floor - 1.0 - i) for i, (docid, _) in enumerate(tail)]


def check_inputs(run: Run, topics: Mapping[str, str], docstore, depth: int = 100,
                 skip_missing: bool = False) -> dict[str, set[str]]:
    """Queries without text are an ``InputError``; so are docids of the top ``depth`` that the docstore lacks,
    unless ``skip_missing``: then they are returned per query."""
    no_text = [qid for qid in run if qid not in topics]
    if no_text:
        raise InputError(f"{len(no_text)} queries of the run have no text in the topics: {_ids(no_text)}")
    missing: dict[str, set[str]] = {}
    examples: list[str] = []
    count = 0
    for qid, ranking in run.items():
        absent = docstore.missing([docid for docid, _ in ranking[:depth]])
        if absent:
            missing[qid] = set(absent)
            count += len(absent)
            examples.extend(f"{docid} (query {qid})" for docid in absent[: SHOW - len(examples)] if len(examples) < SHOW)
    if count and not skip_missing:
        raise InputError(f"{count} candidate docids are not in the collection: {', '.join(examples)}"
                         f"{', ...' if count > len(examples) else ''} (use --skip-missing to drop them)")
    return missing


def rerank_run(
    encoder: "CrossEncoder",
    run: Run,
    topics: Mapping[str, str],
    docstore,
    depth: int = 100,
    alpha: float | None = None,
    skip_missing: bool = False,
    batch_tokens: int | None = None,
    chunk_pairs: int | None = None,
    progress: bool = False,
    name: str | None = None,
    missing: Mapping[str, set[str]] | None = None,
) -> tuple[Run, StageTiming]:
    """Rerank the top ``depth`` candidates of every query of ``run`` with ``encoder``; returns the run and timing.

    Candidates are streamed: whole queries are grouped into chunks of about ``chunk_pairs`` pairs, their
    passages read from ``docstore`` and tokenized in the engine's background thread, so memory does not grow
    with the number of candidates. See the module docstring for depth, ``alpha`` and missing passages.
    ``missing``: the result of ``check_inputs`` when the caller already ran it (it is run otherwise).
    """
    if depth < 1:
        raise InputError(f"depth must be at least 1, got {depth}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}")
    engine = ScoringEngine(encoder, batch_tokens=batch_tokens, chunk_pairs=chunk_pairs)
    start = time.perf_counter()
    if missing is None:
        missing = check_inputs(run, topics, docstore, depth, skip_missing)
    skipped = {"missing": sum(len(m) for m in missing.values()), "empty": 0}

    def chunks() -> Iterator[PairChunk]:
        """Whole queries, about ``chunk_pairs`` pairs a chunk; runs in the engine's background thread."""
        queries: list[str] = []
        query_of_pair: list[int] = []
        passages: list[str] = []
        meta: list[tuple[str, list[tuple[str, float]], list[tuple[str, float]]]] = []
        for qid, ranking in run.items():
            gone = missing.get(qid, ())
            head = [(d, s) for d, s in ranking[:depth] if d not in gone]
            tail = [(d, s) for d, s in ranking[depth:] if d not in gone]
            texts = docstore.get_many([d for d, _ in head])
            empty = [d for (d, _), t in zip(head, texts) if not t.strip()]
            if empty:
                if not skip_missing:
                    raise InputError(f"{len(empty)} passages of query {qid} are empty: {_ids(empty)} "
                                     "(use --skip-missing to drop them)")
                skipped["empty"] += len(empty)
                keep = [i for i, t in enumerate(texts) if t.strip()]
                head, texts = [head[i] for i in keep], [texts[i] for i in keep]
            if queries and len(query_of_pair) + len(head) > engine.chunk_pairs:
                yield PairChunk(queries, query_of_pair, passages, meta=meta)
                queries, query_of_pair, passages, meta = [], [], [], []
            query_of_pair.extend([len(queries)] * len(head))
            queries.append(topics[qid])
            passages.extend(texts)
            meta.append((qid, head, tail))
        if queries:
            yield PairChunk(queries, query_of_pair, passages, meta=meta)

    rankings: dict[str, list[tuple[str, float]]] = {}
    latencies: list[float] = []
    pairs = tokens = padded = batches = 0
    bar = _progress(len(run), progress)
    try:
        for result in engine.stream(chunks()):
            nan = np.flatnonzero(np.isnan(result.scores))
            if nan.size:
                raise InputError(f"the model produced {nan.size} NaN scores (e.g. query "
                                 f"{_pair_query(result.chunk, int(nan[0]))}); refusing to write a run "
                                 "(try --precision fp32)")
            offset = 0
            for qid, head, tail in result.chunk.meta:
                scores = result.scores[offset : offset + len(head)]
                offset += len(head)
                final = combine(scores, np.array([s for _, s in head]), alpha) if head else scores
                rankings[qid] = merge(head, final, tail)
                latencies.append(result.seconds * len(head) / max(len(result.chunk), 1))
            pairs += len(result.chunk)
            tokens, padded, batches = tokens + result.tokens, padded + result.padded_tokens, batches + result.batches
            bar.update(len(result.chunk.meta))
    finally:
        bar.close()
    sync(encoder.device)
    wall = time.perf_counter() - start
    extra: dict[str, Any] = {
        "model": encoder.source, "dtype": str(encoder.dtype).replace("torch.", ""), "depth": depth, "alpha": alpha,
        "batch_tokens": engine.batch_tokens, "chunk_pairs": engine.chunk_pairs, "batches": batches,
        "tokens": tokens, "padded_tokens": padded, "skipped_missing": skipped["missing"],
        "skipped_empty": skipped["empty"],
    }
    if skipped["missing"] or skipped["empty"]:
        log.warning("skipped %d missing and %d empty passages", skipped["missing"], skipped["empty"])
    timing = StageTiming("rerank", wall, len(rankings), pairs, latencies, device=str(encoder.device), extra=extra)
    # Queries come back in run order: the engine keeps chunk order and chunks keep query order.
    return Run(rankings, name or f"{run.name}.rerank"), timing


def _pair_query(chunk: PairChunk, index: int) -> str:
    offset = 0
    for qid, head, _ in chunk.meta:
        if index < offset + len(head):
            return f"{qid}, docid {head[index - offset][0]}"
        offset += len(head)
    return "?"


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="query", desc="rerank", disable=not enabled, dynamic_ncols=True)


class Pipeline:
    """First stage -> cross-encoder rerank of the top ``depth``: ``Pipeline(bm25, ce, depth=100).run(topics)``.

    ``first_stage`` is anything with ``batch_search(topics, k=...) -> Run`` (BM25) or a ``Run`` already made
    (its queries are filtered to ``topics``). Passage text comes from ``docstore`` or ``first_stage.docstore``.
    After ``run``, ``timings`` holds a ``StageTiming`` per stage (the first stage's only when it ran here).
    """

    def __init__(self, first_stage, reranker: "CrossEncoder", depth: int = 100, docstore=None,
                 alpha: float | None = None, k: int = 1000, skip_missing: bool = False,
                 batch_tokens: int | None = None, progress: bool = False):
        self.first_stage = first_stage
        self.reranker = reranker
        self.depth = depth
        self.docstore = docstore if docstore is not None else getattr(first_stage, "docstore", None)
        if self.docstore is None:
            raise InputError("the pipeline needs a docstore for passage text (the first stage has none)")
        self.alpha = alpha
        self.k = max(k, depth)
        self.skip_missing = skip_missing
        self.batch_tokens = batch_tokens
        self.progress = progress
        self.timings: list[StageTiming] = []

    def first(self, topics: Mapping[str, str]) -> Run:
        """The first-stage candidates of ``topics`` (timed when retrieved here)."""
        if isinstance(self.first_stage, Run):
            return self.first_stage.subset(topics)
        start = time.perf_counter()
        run = self.first_stage.batch_search(dict(topics), k=self.k)
        wall = time.perf_counter() - start
        per_query = [wall / len(run)] * len(run) if len(run) else []
        self.timings.append(StageTiming("first_stage", wall, len(run), run.num_pairs, per_query, latency="mean"))
        return run

    def run(self, topics: Mapping[str, str]) -> Run:
        """Retrieve, then rerank the top ``depth``; ``self.timings`` has each stage's cost."""
        self.timings = []
        candidates = self.first(topics)
        reranked, timing = rerank_run(self.reranker, candidates, topics, self.docstore, depth=self.depth,
                                      alpha=self.alpha, skip_missing=self.skip_missing,
                                      batch_tokens=self.batch_tokens, progress=self.progress)
        self.timings.append(timing)
        return reranked

    def __repr__(self) -> str:
        return f"Pipeline({self.first_stage!r} -> {self.reranker!r}, depth={self.depth})"
