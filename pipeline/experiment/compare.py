"""Full vs distilled pipelines: first stage + teacher against first stage + each student, for effectiveness and
speed (the first stage: BM25, dense or hybrid).

``compare(config)`` orchestrates the comparison of a config (``pipeline.config``); each step is another
module's job:

1. every input checked (``Config.check_inputs``) and loaded (``pipeline.inputs``: the judged queries, every
   reranker) before any other work, so a bad config fails at once;
2. the first stage (``pipeline.first_stage``): one pass of BM25, dense or hybrid retrieval over the topics, cached
   as ``runs/NAME/KIND.trec`` (the Lucene index built when missing), or a precomputed run file;
3. every reranker over the same candidates with the same rerank stage (passages from the token cache unless
   ``rerank.token_cache`` is off; the cache is built before anything is timed): first a warm-up, then timed in
   interleaved rounds (each round, a block of queries, goes through every reranker in a rotating order), so a
   drift of the machine's speed touches all rerankers alike; each speedup is reported as the median of its
   per-round ratios with an interval (``pipeline.speedups``), with a warning when the rounds disagree too much
   to call it. Each round's results are appended to
   ``NAME.trec.partial``; the complete run is written as ``NAME.trec`` with its timing
   (``NAME.trec.timing.json``) when all rounds are done;
4. ir-measures per pipeline (``pipeline.evaluate``), paired significance tests of each student against the
   teacher and against the first stage, and of the teacher against the first stage (``pipeline.significance``),
   and the reports
   (``pipeline.report``: ``report.md``, ``report.json``, ``effectiveness_vs_speed.png``), each written
   atomically once everything else is done.

An interrupted comparison leaves the finished parts (the index, ``KIND.trec``, the reranked rounds in
the ``.partial`` files) and no report.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..eval.evaluate import evaluate_per_query, mean_scores
from ..eval.significance import paired_tests
from ..eval.timing import StageTiming, timing_path, write_timings
from ..io.runs import Run
from ..rerank.engine import CPU_CHUNK_PAIRS, GPU_CHUNK_PAIRS
from ..rerank.stage import Reranker
from ..runtime.diskspace import space_checked
from ..runtime.progress import bar as progress_bar
from .config import Config, load_config
from .first_stage import RUN_FILE, CachedFirstStage
from .inputs import load_queries, load_rerankers, model_info
from .report import REPORT_FILES, write_reports
from .results import Comparison, PipelineResult

log = logging.getLogger(__name__)

#: At least this many interleaved rounds when the queries allow it (a round is never more than one engine chunk).
MIN_ROUNDS = 10


def _round_size(config: Config, encoders: Mapping[str, Any], num_queries: int) -> int:
    """Queries per round: the config's, else at most one engine chunk of pairs and at least ``MIN_ROUNDS`` rounds."""
    if config.rerank.chunk_queries:
        return config.rerank.chunk_queries
    cuda = any(e.device.type == "cuda" for e in encoders.values())
    chunk = math.ceil((GPU_CHUNK_PAIRS if cuda else CPU_CHUNK_PAIRS) / config.rerank.depth)
    return max(1, min(chunk, math.ceil(num_queries / MIN_ROUNDS)))


def _merge_timings(name: str, parts: list[StageTiming]) -> StageTiming:
    """One reranker's rounds as one stage: times, queries, pairs and counters added, latencies pooled; each
    round's pairs and seconds kept (``round_pairs``, ``round_wall_s``) for the speedups' spread."""
    extra: dict[str, Any] = dict(parts[0].extra) if parts else {}
    for key in ("batches", "tokens", "padded_tokens", "skipped_missing", "skipped_empty"):
        if key in extra:
            extra[key] = sum(int(p.extra.get(key, 0)) for p in parts)
    extra["rounds"] = len(parts)
    extra["round_pairs"] = [p.pairs for p in parts]
    extra["round_wall_s"] = [round(p.wall_s, 6) for p in parts]
    return StageTiming(
        f"rerank:{name}", sum(p.wall_s for p in parts), sum(p.queries for p in parts), sum(p.pairs for p in parts),
        [latency for p in parts for latency in p.latencies_s], device=parts[0].device if parts else "cpu", extra=extra,
    )


def run_path(output: Path, name: str) -> Path:
    """Where a reranker's run goes: ``OUTPUT/NAME.trec``."""
    return output / f"{name}.trec"


def partial_path(run: Path) -> Path:
    """Where a run's finished rounds are appended while a comparison runs."""
    return run.with_name(run.name + ".partial")


def written_files(config: Config) -> list[Path]:
    """Every file a comparison writes into its output folder (none may be one of its inputs)."""
    out = config.output
    first = out / RUN_FILE.format(config.first_stage.kind)
    runs = [first] + [run_path(out, spec.name) for spec in config.rerankers]
    return ([out / name for name in REPORT_FILES] + [first.with_name(f"{first.name}.json")] + runs
            + [timing_path(r) for r in runs] + [partial_path(r) for r in runs])


def rerankers_for(encoders: Mapping[str, Any], docstore, config: Config) -> dict[str, Reranker]:
    """One rerank stage per model, kept for every round (CUDA graphs captured once), with the model's interpolation;
    token caches built now, before anything is timed."""
    weights = {spec.name: spec.interpolation for spec in config.rerankers}
    return {name: Reranker.from_options(encoder, config.rerank, docstore, interpolation=weights.get(name))
            for name, encoder in encoders.items()}


def rerank_interleaved(
    encoders: Mapping[str, Any], candidates: Run, topics: Mapping[str, str], docstore, config: Config,
    output: Path, progress: bool | None = None,
) -> dict[str, tuple[Run, StageTiming]]:
    """Every reranker over the same candidates: warm-up, then interleaved rounds; run files written at the end."""
    rerank = config.rerank
    names = list(encoders)
    qids = list(candidates)
    rerankers = rerankers_for(encoders, docstore, config)
    warm = qids[: rerank.warmup_queries]
    if warm:
        log.info("warm-up: %d queries through each reranker", len(warm))
        for name in names:
            rerankers[name].rerank(candidates.subset(warm), topics, docstore, depth=rerank.depth)
    size = _round_size(config, encoders, len(qids))
    rounds = [qids[i : i + size] for i in range(0, len(qids), size)]
    rankings: dict[str, dict[str, list]] = {n: {} for n in names}
    parts: dict[str, list[StageTiming]] = {n: [] for n in names}
    partial = {n: partial_path(run_path(output, n)) for n in names}
    for path in partial.values():
        path.unlink(missing_ok=True)
    log.info("reranking top %d of %d queries with %d rerankers, interleaved in %d rounds of %d queries",
             rerank.depth, len(qids), len(names), len(rounds), size)
    with progress_bar(total=len(qids) * len(names), unit="query", desc="rerank", enabled=progress) as bar:
        for r, block in enumerate(rounds):
            chunk = candidates.subset(block)
            for name in names[r % len(names):] + names[: r % len(names)]:
                run, timing = rerankers[name].rerank(chunk, topics, docstore, depth=rerank.depth)
                rankings[name].update(run.rankings)
                parts[name].append(timing)
                with space_checked(partial[name]), open(partial[name], "a", encoding="utf-8") as out:
                    out.writelines(run.lines(tag=name))
                bar.update(len(block))
    results = {}
    for name in names:
        run = Run({q: rankings[name][q] for q in qids}, name)
        path = run_path(output, name)
        run.write(path, tag=name)
        timing = _merge_timings(name, parts[name])
        write_timings(timing_path(path), [timing], model=encoders[name].source, interleaved_with=names,
                      warmup_queries=len(warm))
        partial[name].unlink(missing_ok=True)
        results[name] = (run, timing)
    return results


def compare(config: Config | str | Path, output: str | Path | None = None, progress: bool | None = None) -> Comparison:
    """Run the comparison of ``config`` (a ``Config``, a TOML path or a preset name); writes the reports."""
    if not isinstance(config, Config):
        config = load_config(config, output)
    elif output is not None:
        config = replace(config, output=Path(output).resolve())
    config.check_inputs()
    topics, qrels = load_queries(config)
    measures, plot_measure = config.resolved_measures(qrels)
    log.info("loading %d rerankers", len(config.rerankers))
    encoders = load_rerankers(config)
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:  # a report must never describe runs other than the ones beside it
        (out / name).unlink(missing_ok=True)
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()

    first = CachedFirstStage(config.first_stage, config.data.collection, out, config.rerank.device,
                             config.rerank.precision)
    candidates, first_timing = first.run(topics)
    missing = [q for q in topics if q not in candidates]
    if missing:
        log.info("note: the first stage found nothing for %d queries (they score 0)", len(missing))
    reranked = rerank_interleaved(encoders, candidates, topics, first.docstore(), config, out, progress)

    first_scores = evaluate_per_query(candidates, qrels, measures)
    retrieval = PipelineResult(first.name, "first_stage", first.run_path, mean_scores(first_scores), first_scores,
                               first_timing, description=config.first_stage.description)
    pipelines = [retrieval]
    for spec in config.rerankers:
        run, timing = reranked[spec.name]
        scores = evaluate_per_query(run, qrels, measures)
        pipelines.append(PipelineResult(
            spec.name, "teacher" if spec.name == config.teacher.name else "student", run_path(out, spec.name),
            mean_scores(scores), scores, timing, model=spec.model, description=spec.description,
            model_info=model_info(encoders[spec.name]), interpolation=spec.interpolation))
    evaluation = config.evaluation
    teacher = pipelines[1]
    significance = {
        result.name: paired_tests(
            result.per_query, {retrieval.name: retrieval.per_query, "teacher": teacher.per_query}
            if result.kind == "student" else {retrieval.name: retrieval.per_query}, measures,
            evaluation.permutations, evaluation.seed)
        for result in pipelines[1:]
    }
    comparison = Comparison(config, measures, plot_measure, pipelines, significance,
                            first.timings + [timing for _, timing in reranked.values()],
                            len(topics), out, started, time.perf_counter() - clock)
    for result in pipelines:
        spread = comparison.speedup_spread(result)
        if spread is not None and spread.too_wide and result.kind == "student":
            log.warning("speedup of %s: %s; the machine's load varied too much between rounds: rerun on a quieter "
                        "machine (or with more queries) before reading it", result.name, spread)
    write_reports(comparison)
    return comparison
