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
``skip_missing=True``, dropped from the output with a count in the timing (and a warning). Empty passages (blank
text; with the token cache, no tokens) are treated the same way: an error naming them, or skipped and counted. The
error and the warning name where the passages come from (``passage_source``: the collection file, the index).
NaN scores are an error: no run is made.

Chunks: the run's queries are cut into chunks of whole queries (``plan_chunks``), the unit of scoring, of a
journal record and of a rank's share under ``torchrun`` (``rerank_file``): a chunk is scored in the same
batches whichever process scores it, so a resumed or distributed run writes the same bytes as one uninterrupted
process.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..defaults import DEFAULT_HITS, RERANK_DEPTH
from ..errors import InputError
from ..eval.timing import StageTiming, combine_ranks, sync, timed_search, timing_path, write_timings
from ..io.runs import Ranking, Run
from ..runtime import distributed
from ..runtime.atomic import is_stdout
from ..runtime.journal import Journal, identity, open_journal, source_identity
from ..runtime.progress import bar
from .cross_encoder import CrossEncoder
from .engine import ChunkResult, PairChunk, ScoringEngine
from .options import RuntimeOptions, check_interpolation
from .ranker import Passages, Ranker, Retriever, merge
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


def passage_source(docstore: Passages) -> Path | None:
    """Where ``docstore``'s passages come from (``DocStore``: the collection file; ``IndexDocStore``: the index),
    named by the errors and warnings about them; None for a docstore that has no ``path``."""
    return getattr(docstore, "path", None)


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
                         f"{', ...' if count > len(examples) else ''}{hint}", passage_source(docstore))
    return missing


@dataclass
class QueryCandidates:
    """One query's candidates: the ``head`` the cross-encoder scores, the ``tail`` kept in first-stage order, and
    how many empty passages were dropped from the head (``empty``)."""

    qid: str
    head: Ranking
    tail: Ranking
    empty: int = 0


def _tail(ranking: Ranking, depth: int, gone: set[str] | tuple) -> Ranking:
    """The candidates below ``depth``, without the ``gone`` docids."""
    return [(d, s) for d, s in ranking[depth:] if d not in gone]


def query_candidates(qid: str, ranking: Ranking, depth: int, gone: set[str] | tuple, docstore: Passages,
                     skip_missing: bool,
                     token_cache: TokenCache | None = None) -> tuple[QueryCandidates, list[str] | np.ndarray]:
    """The head and tail of one query without the ``gone`` docids, and the head's passages: their text, or with
    ``token_cache`` their rows in it. Empty passages are an ``InputError``, or with ``skip_missing`` dropped (and
    counted in ``QueryCandidates.empty``)."""
    head = [(d, s) for d, s in ranking[:depth] if d not in gone]
    if token_cache is None:
        passages: list[str] | np.ndarray = docstore.get_many([d for d, _ in head])
        keep = [bool(t.strip()) for t in passages]
    else:
        passages = token_cache.docstore.positions([d for d, _ in head])
        keep = (token_cache.lengths(passages) > 0).tolist()
    empty = [d for (d, _), k in zip(head, keep, strict=True) if not k]
    if empty:
        if not skip_missing:
            raise InputError(f"{len(empty)} passages of query {qid} are empty: {_ids(empty)}",
                             passage_source(docstore))
        head = [h for h, k in zip(head, keep, strict=True) if k]
        passages = passages[np.asarray(keep)] if token_cache is not None else [
            t for t, k in zip(passages, keep, strict=True) if k]
    return QueryCandidates(qid, head, _tail(ranking, depth, gone), len(empty)), passages


def head_size(ranking: Ranking, depth: int, gone: set[str] | tuple) -> int:
    """How many candidates of a query the cross-encoder scores (empty passages aside)."""
    return sum(1 for d, _ in ranking[:depth] if d not in gone)


class Chunk(NamedTuple):
    """A chunk of whole queries (``plan_chunks``) and the pairs it scores."""

    qids: list[str]
    pairs: int


def plan_chunks(run: Run, depth: int, missing: Mapping[str, set[str]], chunk_pairs: int) -> list[Chunk]:
    """The run's queries cut into chunks of whole queries, in run order, about ``chunk_pairs`` pairs each (a chunk
    closes before the query that would take it past ``chunk_pairs``). The plan depends on the run and the options
    alone, so every rank of a distributed run, and a resumed run, cuts the same chunks: each is scored in the same
    batches, hence to the same bits."""
    chunks: list[Chunk] = []
    current: list[str] = []
    pairs = 0
    for qid, ranking in run.items():
        size = head_size(ranking, depth, missing.get(qid, ()))
        if current and pairs + size > chunk_pairs:
            chunks.append(Chunk(current, pairs))
            current, pairs = [], 0
        current.append(qid)
        pairs += size
    if current:
        chunks.append(Chunk(current, pairs))
    return chunks


def candidate_chunks(run: Run, topics: Mapping[str, str], docstore: Passages, depth: int,
                     missing: Mapping[str, set[str]], skip_missing: bool, chunks: Iterable[Chunk],
                     token_cache: TokenCache | None = None, passage_limit: int | None = None) -> Iterator[PairChunk]:
    """The planned ``chunks`` (``plan_chunks``) with their passages (text, or with ``token_cache`` their token
    ids cut at ``passage_limit``, gathered once per chunk); each chunk's ``meta`` lists its ``QueryCandidates`` in
    run order. Runs in the engine's background thread, so passages are read while the model scores the previous
    chunk."""
    for chunk in chunks:
        queries: list[str] = []
        query_of_pair: list[int] = []
        passages: list = []  # texts, or arrays of token cache rows
        meta: list[QueryCandidates] = []
        for qid in chunk.qids:
            candidates, found = query_candidates(qid, run[qid], depth, missing.get(qid, ()), docstore, skip_missing,
                                                 token_cache)
            query_of_pair.extend([len(queries)] * len(candidates.head))
            queries.append(topics[qid])
            if token_cache is None:
                passages.extend(found)
            else:
                passages.append(found)
            meta.append(candidates)
        if token_cache is None:
            yield PairChunk(queries, query_of_pair, passages, meta=meta)
        else:
            rows = np.concatenate(passages) if passages else np.zeros(0, dtype=np.int64)
            yield PairChunk(queries, query_of_pair, passage_tokens=token_cache.gather(rows, passage_limit), meta=meta)


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
        self.encoder, self.interpolation, self.skip_missing = encoder, check_interpolation(interpolation), skip_missing
        self.progress, self.token_cache = progress, token_cache
        self.engine = ScoringEngine(encoder, batch_tokens=batch_tokens, chunk_pairs=chunk_pairs, bucket=bucket,
                                    cuda_graphs=cuda_graphs)

    @classmethod
    def from_options(cls, encoder: CrossEncoder, options: RuntimeOptions, docstore: Passages | None = None,
                     **stage: Any) -> Reranker:
        """A rerank stage whose engine runs as ``options`` say, reading ``docstore``'s passages from its token
        cache (built now when absent) when ``options.token_cache`` is on; ``stage``: the other arguments of
        ``Reranker`` (``interpolation``, ``skip_missing``, ``chunk_pairs``, ``progress``)."""
        token_cache = None if docstore is None else options.passage_cache(encoder, docstore)
        return cls(encoder, token_cache=token_cache, **options.engine_kwargs(), **stage)

    def rerank(self, run: Run, topics: Mapping[str, str], docstore: Passages, depth: int = RERANK_DEPTH,
               name: str | None = None, missing: Mapping[str, set[str]] | None = None,
               journal: Journal | None = None, share: Sequence[int] | None = None,
               plan: list[Chunk] | None = None) -> tuple[Run, StageTiming]:
        """Rerank the top ``depth`` candidates of every query of ``run``; the run (named ``name``, by default
        ``RUN.rerank``) and its timing. ``missing``: what ``check_inputs`` returned when the caller ran it.

        ``share``: the indices of the ``plan_chunks`` chunks to rerank (a rank's share; default all of them): the
        run returned has their queries only. ``plan``: that plan, when the caller made it. ``journal``: chunks it
        records are restored instead of scored, and each chunk scored is recorded in it (see ``pipeline.journal``).
        The timing counts the work done here; restored queries and pairs are in its ``resumed_queries`` and
        ``resumed_pairs``."""
        if depth < 1:
            raise InputError(f"depth must be at least 1, got {depth}")
        if self.token_cache is not None and passage_source(docstore) != self.token_cache.docstore.path:
            raise ValueError(f"the token cache is of {self.token_cache.docstore.path}, not of the docstore given")
        start = time.perf_counter()
        if missing is None:
            missing = check_inputs(run, topics, docstore, depth, self.skip_missing)
        if plan is None:
            plan = plan_chunks(run, depth, missing, self.engine.chunk_pairs)
        share = range(len(plan)) if share is None else share
        rankings: dict[str, Ranking] = {}
        totals = Counter(missing=sum(len(missing.get(q, ())) for i in share for q in plan[i].qids))
        done = (self._restore(journal, run, depth, missing, plan, share, rankings, totals) if journal is not None
                else set())
        todo = [i for i in share if i not in done]
        chunks = candidate_chunks(run, topics, docstore, depth, missing, self.skip_missing, (plan[i] for i in todo),
                                  self.token_cache, self.encoder.passage_limit)
        latencies: list[float] = []
        with bar(total=sum(len(plan[i].qids) for i in share), initial=totals["resumed_queries"], unit="query",
                 desc="rerank", enabled=self.progress) as progress:
            for index, result in zip(todo, self.engine.stream(chunks), strict=True):
                chunk_latencies = self._rank_chunk(result, rankings)
                latencies.extend(chunk_latencies)
                empty = sum(q.empty for q in result.chunk.meta)
                totals.update(pairs=len(result.chunk), tokens=result.tokens, padded_tokens=result.padded_tokens,
                              batches=result.batches, empty=empty)
                if journal is not None:
                    journal.append(self._record(index, result, rankings, chunk_latencies, empty))
                progress.update(len(result.chunk.meta))
        sync(self.encoder.device)
        wall = time.perf_counter() - start
        if totals["missing"] or totals["empty"]:
            where = passage_source(docstore)
            log.warning("%sskipped %d missing and %d empty passages", f"{where}: " if where else "", totals["missing"],
                        totals["empty"])
        ordered = {qid: rankings[qid] for i in share for qid in plan[i].qids}
        timing = StageTiming("rerank", wall, len(ordered) - totals["resumed_queries"], totals["pairs"], latencies,
                             device=str(self.encoder.device), extra=self._timing_extra(depth, totals))
        return Run(ordered, name or f"{run.name}.rerank"), timing

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """The cross-encoder's scores of one query's ``passages`` (text), batched by this stage's engine as
        ``rerank`` batches a query's candidates: the same scores (no interpolation: there are no first-stage
        scores)."""
        return self.engine.score_query(query, passages)

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

    @staticmethod
    def _record(index: int, result: ChunkResult, rankings: dict[str, Ranking], latencies: list[float],
                empty: int) -> dict[str, Any]:
        """A scored chunk's journal record: each query's ranked head (exact scores) and its latency."""
        return {"chunk": index, "pairs": len(result.chunk), "empty": empty,
                "queries": [[q.qid, rankings[q.qid][: len(q.head)], latency]
                            for q, latency in zip(result.chunk.meta, latencies, strict=True)]}

    @staticmethod
    def _restore(journal: Journal, run: Run, depth: int, missing: Mapping[str, set[str]], plan: list[Chunk],
                 share: Sequence[int], rankings: dict[str, Ranking], totals: Counter) -> set[int]:
        """Put the chunks the journal records into ``rankings`` (each head as ranked then, the tail below it as
        ``merge`` places it); the indices of those chunks. A record that does not fit the plan (another chunk,
        other queries, a docid that is not a candidate) is refused (``Journal.damaged``)."""
        done = set()
        for lineno, record in journal.records():
            try:
                heads = _recorded_heads(record, run, depth, missing, plan, share)
            except (ValueError, TypeError, KeyError) as err:
                why = str(err) if isinstance(err, ValueError) else f"malformed record ({type(err).__name__})"
                raise journal.damaged(lineno, why) from None
            for qid, scored in heads:
                rankings[qid] = merge(scored, np.array([s for _, s in scored], dtype=np.float64),
                                      _tail(run[qid], depth, missing.get(qid, ())))
            totals.update(resumed_queries=len(heads), resumed_pairs=record["pairs"], empty=record["empty"])
            done.add(record["chunk"])
        return done

    def settings(self, depth: int) -> dict[str, Any]:
        """Every option that changes the reranked run (and the bits of its scores), for a journal's header."""
        return {"depth": depth, "interpolation": self.interpolation, "skip_missing": self.skip_missing,
                **self.engine.settings()}

    def _timing_extra(self, depth: int, totals: Counter) -> dict[str, Any]:
        engine = self.engine
        return {"model": self.encoder.source, "dtype": self.encoder.precision, "depth": depth,
                "interpolation": self.interpolation, "token_cache": self.token_cache is not None,
                "attention": self.encoder.attention, "compile": self.encoder.compile, "bucket": engine.bucket,
                "cuda_graphs": engine.graphed is not None, "batch_tokens": engine.batch_tokens,
                "chunk_pairs": self.engine.chunk_pairs, "batches": totals["batches"], "tokens": totals["tokens"],
                "padded_tokens": totals["padded_tokens"], "skipped_missing": totals["missing"],
                "skipped_empty": totals["empty"], "resumed_queries": totals["resumed_queries"],
                "resumed_pairs": totals["resumed_pairs"]}


def _recorded_heads(record: Mapping[str, Any], run: Run, depth: int, missing: Mapping[str, set[str]],
                    plan: list[Chunk], share: Sequence[int]) -> list[tuple[str, Ranking]]:
    """Each query's ranked head as a journal record holds it, checked against the plan: a chunk of this
    process's share, its queries in order, each head candidates of its query's top ``depth`` (each once) with
    finite scores, the pair count theirs; a ``ValueError`` (or ``TypeError``/``KeyError`` for a record of
    another shape) says what does not fit."""
    index = record["chunk"]
    if index not in share:
        raise ValueError(f"chunk {index} is not one of this run's chunks")
    queries = record["queries"]
    if [query[0] for query in queries] != plan[index].qids:
        raise ValueError(f"chunk {index} holds other queries than the run's")
    heads = []
    for qid, head, _ in queries:
        scored = [(str(docid), float(score)) for docid, score in head]
        candidates = {d for d, _ in run[qid][:depth]} - set(missing.get(qid, ()))
        docids = {d for d, _ in scored}
        if len(docids) != len(scored) or not docids <= candidates:
            raise ValueError(f"query {qid} holds docids that are not its candidates (or twice)")
        if not all(np.isfinite([s for _, s in scored])):
            raise ValueError(f"query {qid} holds scores that are not finite")
        heads.append((qid, scored))
    if record["pairs"] != sum(len(h) for _, h in heads) or type(record["empty"]) is not int or record["empty"] < 0:
        raise ValueError(f"chunk {index}: its counts do not match its queries")
    return heads


#: Timing extras that add up over the ranks of a distributed run.
SUMMED = ("batches", "tokens", "padded_tokens", "skipped_missing", "skipped_empty", "resumed_queries", "resumed_pairs",
          "candidates")


def rerank_file(reranker: Reranker, run: Run, topics: Mapping[str, str], docstore: Passages, output: str | Path,
                depth: int = RERANK_DEPTH, sources: Mapping[str, str | Path] | None = None, resume: bool = False,
                fmt: str = "trec", tag: str | None = None,
                missing: Mapping[str, set[str]] | None = None) -> StageTiming:
    """Rerank ``run`` into the run file ``output`` (and ``OUTPUT.timing.json``), in one process or as one rank of
    a ``torchrun`` job (``pipeline.distributed``): each rank reranks its pair-balanced share of the chunks and
    writes its part, rank 0 joins the parts: the file is byte-identical to a single process's.

    Every finished chunk is journaled (``OUTPUT.journal``; one per rank), its header naming ``sources`` (input
    files by ``journal.identity``, e.g. run, topics, collection), the model and ``Reranker.settings``; with
    ``resume`` a killed run continues from it, and the journal is removed once the output is written (or when
    bad input stops the run). Standard output (``-``) is written by one process without a journal (nor a timing
    file). Returns the timing over all ranks (``candidates``: the lines written)."""
    output = Path(output)
    ctx = distributed.start(reranker.encoder.device)
    if is_stdout(output):
        if ctx.distributed or resume:
            raise InputError("a run on standard output is written by one process without a journal: give an "
                             "output file to run under torchrun or to --resume")
        reranked, timing = reranker.rerank(run, topics, docstore, depth, name=output.stem, missing=missing)
        reranked.write(output, fmt=fmt, tag=tag or output.stem)
        timing.extra["candidates"] = reranked.num_pairs
        return timing
    if missing is None:
        missing = check_inputs(run, topics, docstore, depth, reranker.skip_missing)
    plan = plan_chunks(run, depth, missing, reranker.engine.chunk_pairs)
    share = distributed.balanced_ranges([chunk.pairs for chunk in plan], ctx.world_size)[ctx.rank]
    header = {"command": "rerank", "model": source_identity(reranker.encoder.source),
              "inputs": {name: identity(path) for name, path in (sources or {}).items()}, **reranker.settings(depth)}
    journal = open_journal(output, header, resume, ctx.rank, ctx.world_size)
    with journal.dropped_on_bad_input():
        reranked, timing = reranker.rerank(run, topics, docstore, depth, name=output.stem, missing=missing,
                                           journal=journal, share=share, plan=plan)
    timing.extra["candidates"] = reranked.num_pairs
    distributed.write_output(output, lambda part: reranked.write(part, fmt=fmt, tag=tag or output.stem), ctx=ctx)
    total = combine_ranks(distributed.gather(timing, ctx), SUMMED)

    def record() -> None:
        write_timings(timing_path(output), [total], run=str(output), model=reranker.encoder.source,
                      inputs={name: str(path) for name, path in (sources or {}).items()})

    distributed.on_main(record, ctx)  # rank 0 writes; its failure (a full disk) stops every rank
    journal.remove()
    return total


def rerank_run(encoder: CrossEncoder, run: Run, topics: Mapping[str, str], docstore: Passages,
               depth: int = RERANK_DEPTH, *, name: str | None = None, missing: Mapping[str, set[str]] | None = None,
               options: RuntimeOptions | None = None, **stage: Any) -> tuple[Run, StageTiming]:
    """``Reranker(encoder, **stage).rerank(run, topics, docstore, depth, ...)`` in one call; with ``options``, the
    stage is ``Reranker.from_options(encoder, options, docstore, **stage)``."""
    reranker = Reranker(encoder, **stage) if options is None else Reranker.from_options(encoder, options, docstore,
                                                                                        **stage)
    return reranker.rerank(run, topics, docstore, depth, name=name, missing=missing)


class Pipeline:
    """First stage -> rerank of the top ``depth``: ``Pipeline(bm25, CrossEncoder(dir), depth=100).run(topics)``.

    ``first_stage`` is a ``Retriever`` (``BM25``, ``DenseRetriever``, ``Hybrid``: ``batch_search(topics, k=...)
    -> Run``) or a ``Run`` already made (its queries are filtered to ``topics``). ``ranker`` is any ``Ranker``;
    a ``CrossEncoder`` is reranked by ``Reranker(encoder)`` (build the ``Reranker`` yourself for its options).
    Passage text comes from ``docstore`` or ``first_stage.docstore``. After ``run``, ``timings`` holds a
    ``StageTiming`` per stage (the first stage's only when it ran here).
    """

    def __init__(self, first_stage: Retriever | Run, ranker: Ranker | CrossEncoder, depth: int = RERANK_DEPTH,
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
