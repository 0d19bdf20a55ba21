"""The rerank stage (a cross-encoder over a run's top candidates) and the two-stage ``Pipeline``, both timed.

Reranking keeps recall (see ``pipeline.ranker``): the top ``depth`` candidates of each query are scored by the
cross-encoder and ranked by that score (ties keep first-stage order); the candidates below ``depth`` follow in
their first-stage order, with scores below every reranked one, so R@1000 of the first stage is kept.

Interpolation (``interpolation``, the weight of the cross-encoder): per query, both the cross-encoder scores and
the first-stage scores of the reranked candidates are min-max normalised to [0, 1] (all equal -> 0), and the
final score is ``interpolation * ce + (1 - interpolation) * first_stage``: ``1`` is the cross-encoder alone,
``0`` the first stage; ``None`` (the default) the raw cross-encoder score.

Passages: with a token cache (``token_cache``, ``CrossEncoder.passage_cache``) the candidates' token ids are
gathered from it, and no passage text is read or tokenized while reranking; without one, their text is read
from the docstore and tokenized in the engine's background thread. The scores are the same either way.

Missing passages (docids the docstore lacks) are an ``InputError`` listing the first few, or, with
``skip_missing=True``, dropped from the output with a count in the timing. Empty passages (blank text; with the
token cache, no tokens) are treated the same way: an error naming them, or skipped and counted. NaN scores are
an error: no run is made.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import RERANK_DEPTH
from .cross_encoder import CrossEncoder
from .engine import ChunkResult, PairChunk, ScoringEngine
from .errors import InputError
from .first_stage import timed_search
from .progress import bar
from .ranker import Passages, Ranker, Ranking, merge
from .retrieve import DEFAULT_HITS
from .runs import Run
from .timing import StageTiming, sync
from .token_cache import TokenCache

log = logging.getLogger(__name__)
SHOW = 5  # how many offending ids an error lists


def _ids(items: list[str]) -> str:
    return ", ".join(items[:SHOW]) + (f", ... ({len(items)} in all)" if len(items) > SHOW else "")


def _minmax(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def combine(ce_scores: np.ndarray, first_scores: np.ndarray, interpolation: float | None) -> np.ndarray:
    """The final scores of the reranked candidates of one query (see the module docstring)."""
    if interpolation is None:
        return ce_scores.astype(np.float64)
    return (interpolation * _minmax(ce_scores.astype(np.float64))
            + (1 - interpolation) * _minmax(first_scores.astype(np.float64)))


def check_inputs(run: Run, topics: Mapping[str, str], docstore: Passages, depth: int = RERANK_DEPTH,
                 skip_missing: bool = False, hint: str = "") -> dict[str, set[str]]:
    """Queries without text are an ``InputError``; so are docids of the top ``depth`` that the docstore lacks,
    unless ``skip_missing``: then they are returned per query. ``hint`` ends the error: how the caller's user
    skips them (``compare`` has no such option)."""
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
            examples.extend(f"{docid} (query {qid})" for docid in absent[: SHOW - len(examples)])
    if count and not skip_missing:
        raise InputError(f"{count} candidate docids are not in the collection: {', '.join(examples)}"
                         f"{', ...' if count > len(examples) else ''}{hint}")
    return missing


@dataclass
class QueryCandidates:
    """One query's candidates: the ``head`` the cross-encoder scores, the ``tail`` kept in first-stage order."""

    qid: str
    head: Ranking
    tail: Ranking


def query_candidates(qid: str, ranking: Ranking, depth: int, gone: set[str] | tuple, docstore: Passages,
                     skip_missing: bool, skipped: Counter,
                     token_cache: TokenCache | None = None) -> tuple[QueryCandidates, list[str] | np.ndarray]:
    """The head and tail of one query without the ``gone`` docids, and the head's passages: their text, or with
    ``token_cache`` their rows in it. Empty passages are an ``InputError``, or with ``skip_missing`` dropped and
    counted in ``skipped["empty"]``."""
    head = [(d, s) for d, s in ranking[:depth] if d not in gone]
    tail = [(d, s) for d, s in ranking[depth:] if d not in gone]
    if token_cache is None:
        passages: list[str] | np.ndarray = docstore.get_many([d for d, _ in head])
        keep = [bool(t.strip()) for t in passages]
    else:
        passages = token_cache.docstore.positions([d for d, _ in head])
        keep = (token_cache.lengths(passages) > 0).tolist()
    if not all(keep):
        empty = [d for (d, _), k in zip(head, keep, strict=True) if not k]
        if not skip_missing:
            raise InputError(f"{len(empty)} passages of query {qid} are empty: {_ids(empty)}")
        skipped["empty"] += len(empty)
        head = [h for h, k in zip(head, keep, strict=True) if k]
        passages = passages[np.asarray(keep)] if token_cache is not None else [
            t for t, k in zip(passages, keep, strict=True) if k]
    return QueryCandidates(qid, head, tail), passages


def candidate_chunks(run: Run, topics: Mapping[str, str], docstore: Passages, depth: int,
                     missing: Mapping[str, set[str]], skip_missing: bool, chunk_pairs: int,
                     skipped: Counter, token_cache: TokenCache | None = None,
                     passage_limit: int | None = None) -> Iterator[PairChunk]:
    """Whole queries, about ``chunk_pairs`` pairs a chunk, with their passages (text, or with ``token_cache``
    their token ids cut at ``passage_limit``, gathered once per chunk); each chunk's ``meta`` lists its
    ``QueryCandidates`` in run order. Runs in the engine's background thread, so passages are read while the
    model scores the previous chunk."""
    queries: list[str] = []
    query_of_pair: list[int] = []
    passages: list = []  # texts, or arrays of token cache rows
    meta: list[QueryCandidates] = []

    def chunk() -> PairChunk:
        if token_cache is None:
            return PairChunk(queries, query_of_pair, passages, meta=meta)
        rows = np.concatenate(passages) if passages else np.zeros(0, dtype=np.int64)
        return PairChunk(queries, query_of_pair, passage_tokens=token_cache.gather(rows, passage_limit), meta=meta)

    for qid, ranking in run.items():
        candidates, found = query_candidates(qid, ranking, depth, missing.get(qid, ()), docstore, skip_missing,
                                             skipped, token_cache)
        if meta and len(query_of_pair) + len(candidates.head) > chunk_pairs:
            yield chunk()
            queries, query_of_pair, passages, meta = [], [], [], []
        query_of_pair.extend([len(queries)] * len(candidates.head))
        queries.append(topics[qid])
        if token_cache is None:
            passages.extend(found)
        else:
            passages.append(found)
        meta.append(candidates)
    if meta:
        yield chunk()


def _refuse_nan(result: ChunkResult) -> None:
    nan = np.flatnonzero(np.isnan(result.scores))
    if not nan.size:
        return
    offset, where = 0, "?"
    for query in result.chunk.meta:
        if nan[0] < offset + len(query.head):
            where = f"{query.qid}, docid {query.head[nan[0] - offset][0]}"
            break
        offset += len(query.head)
    raise InputError(f"the model produced {nan.size} NaN scores (e.g. query {where}); refusing to write a run "
                     "(try --precision fp32)")


class Reranker(Ranker):
    """The cross-encoder rerank stage: ``Reranker(encoder).rerank(run, topics, docstore, depth=100)``.

    Candidates are streamed: whole queries are grouped into chunks of about ``chunk_pairs`` pairs, their
    passages gathered from ``token_cache`` (token ids) or read from the docstore (text) in the engine's
    background thread, so memory does not grow with the number of candidates. See the module docstring for
    ``token_cache``, ``interpolation`` and ``skip_missing``; ``bucket`` and ``cuda_graphs`` are the engine's
    (``pipeline.engine``). One ``Reranker`` reranks many runs with the same engine (CUDA graphs captured once).
    """

    def __init__(self, encoder: CrossEncoder, interpolation: float | None = None, skip_missing: bool = False,
                 batch_tokens: int | None = None, chunk_pairs: int | None = None, progress: bool | None = False,
                 token_cache: TokenCache | None = None, bucket: int | None = None, cuda_graphs: bool = False):
        if interpolation is not None and not 0.0 <= interpolation <= 1.0:
            raise InputError(f"interpolation must be between 0 and 1, got {interpolation}")
        self.encoder, self.interpolation, self.skip_missing = encoder, interpolation, skip_missing
        self.progress, self.token_cache = progress, token_cache
        self.engine = ScoringEngine(encoder, batch_tokens=batch_tokens, chunk_pairs=chunk_pairs, bucket=bucket,
                                    cuda_graphs=cuda_graphs)

    def rerank(self, run: Run, topics: Mapping[str, str], docstore: Passages, depth: int = RERANK_DEPTH,
               name: str | None = None, missing: Mapping[str, set[str]] | None = None) -> tuple[Run, StageTiming]:
        """Rerank the top ``depth`` candidates of every query of ``run``; the run (named ``name``, by default
        ``RUN.rerank``) and its timing. ``missing``: what ``check_inputs`` returned when the caller ran it."""
        if depth < 1:
            raise InputError(f"depth must be at least 1, got {depth}")
        if self.token_cache is not None and getattr(docstore, "path", None) != self.token_cache.docstore.path:
            raise ValueError(f"the token cache is of {self.token_cache.docstore.path}, not of the docstore given")
        start = time.perf_counter()
        if missing is None:
            missing = check_inputs(run, topics, docstore, depth, self.skip_missing)
        totals = Counter(missing=sum(len(m) for m in missing.values()))
        chunks = candidate_chunks(run, topics, docstore, depth, missing, self.skip_missing, self.engine.chunk_pairs,
                                  totals, self.token_cache, self.encoder.passage_limit)
        rankings: dict[str, Ranking] = {}
        latencies: list[float] = []
        with bar(total=len(run), unit="query", desc="rerank", enabled=self.progress) as progress:
            for result in self.engine.stream(chunks):
                latencies.extend(self._rank_chunk(result, rankings))
                totals.update(pairs=len(result.chunk), tokens=result.tokens, padded_tokens=result.padded_tokens,
                              batches=result.batches)
                progress.update(len(result.chunk.meta))
        sync(self.encoder.device)
        wall = time.perf_counter() - start
        if totals["missing"] or totals["empty"]:
            log.warning("skipped %d missing and %d empty passages", totals["missing"], totals["empty"])
        timing = StageTiming("rerank", wall, len(rankings), totals["pairs"], latencies,
                             device=str(self.encoder.device), extra=self._timing_extra(depth, totals))
        # Queries come back in run order: the engine keeps chunk order and chunks keep query order.
        return Run(rankings, name or f"{run.name}.rerank"), timing

    def _rank_chunk(self, result: ChunkResult, rankings: dict[str, Ranking]) -> list[float]:
        """Rank each query of a scored chunk into ``rankings``; each query's share of the chunk's seconds."""
        _refuse_nan(result)
        latencies, offset = [], 0
        for query in result.chunk.meta:
            scores = result.scores[offset : offset + len(query.head)]
            offset += len(query.head)
            final = combine(scores, np.array([s for _, s in query.head]), self.interpolation) if query.head else scores
            rankings[query.qid] = merge(query.head, final, query.tail)
            latencies.append(result.seconds * len(query.head) / max(len(result.chunk), 1))
        return latencies

    def _timing_extra(self, depth: int, totals: Counter) -> dict[str, Any]:
        engine = self.engine
        return {"model": self.encoder.source, "dtype": self.encoder.precision, "depth": depth,
                "interpolation": self.interpolation, "token_cache": self.token_cache is not None,
                "attention": self.encoder.attention, "compile": self.encoder.compile, "bucket": engine.bucket,
                "cuda_graphs": engine.graphed is not None, "batch_tokens": engine.batch_tokens,
                "chunk_pairs": self.engine.chunk_pairs, "batches": totals["batches"], "tokens": totals["tokens"],
                "padded_tokens": totals["padded_tokens"], "skipped_missing": totals["missing"],
                "skipped_empty": totals["empty"]}


def rerank_run(encoder: CrossEncoder, run: Run, topics: Mapping[str, str], docstore: Passages,
               depth: int = RERANK_DEPTH, interpolation: float | None = None, skip_missing: bool = False,
               batch_tokens: int | None = None, chunk_pairs: int | None = None, progress: bool | None = False,
               name: str | None = None, missing: Mapping[str, set[str]] | None = None,
               token_cache: TokenCache | None = None) -> tuple[Run, StageTiming]:
    """``Reranker(encoder, ...).rerank(run, topics, docstore, depth, ...)`` in one call."""
    reranker = Reranker(encoder, interpolation, skip_missing, batch_tokens, chunk_pairs, progress, token_cache)
    return reranker.rerank(run, topics, docstore, depth, name=name, missing=missing)


class Pipeline:
    """First stage -> rerank of the top ``depth``: ``Pipeline(bm25, CrossEncoder(dir), depth=100).run(topics)``.

    ``first_stage`` is anything with ``batch_search(topics, k=...) -> Run`` (BM25) or a ``Run`` already made
    (its queries are filtered to ``topics``). ``ranker`` is any ``Ranker``; a ``CrossEncoder`` is reranked by
    ``Reranker(encoder)`` (build the ``Reranker`` yourself for its options). Passage text comes from
    ``docstore`` or ``first_stage.docstore``. After ``run``, ``timings`` holds a ``StageTiming`` per stage
    (the first stage's only when it ran here).
    """

    def __init__(self, first_stage, ranker: Ranker | CrossEncoder, depth: int = RERANK_DEPTH,
                 docstore: Passages | None = None, k: int = DEFAULT_HITS):
        self.first_stage = first_stage
        self.ranker = Reranker(ranker) if isinstance(ranker, CrossEncoder) else ranker
        self.depth = depth
        self.docstore = docstore if docstore is not None else getattr(first_stage, "docstore", None)
        if self.docstore is None:
            raise InputError("the pipeline needs a docstore for passage text (the first stage has none)")
        self.k = max(k, depth)
        self.timings: list[StageTiming] = []

    def first(self, topics: Mapping[str, str]) -> Run:
        """The first-stage candidates of ``topics`` (timed when retrieved here)."""
        if isinstance(self.first_stage, Run):
            return self.first_stage.subset(topics)
        run, timing = timed_search(self.first_stage, topics, self.k)
        self.timings.append(timing)
        return run

    def run(self, topics: Mapping[str, str]) -> Run:
        """Retrieve, then rerank the top ``depth``; ``self.timings`` has each stage's cost."""
        self.timings = []
        candidates = self.first(topics)
        reranked, timing = self.ranker.rerank(candidates, topics, self.docstore, self.depth)
        self.timings.append(timing)
        return reranked

    def __repr__(self) -> str:
        return f"Pipeline({self.first_stage!r} -> {self.ranker!r}, depth={self.depth})"
