"""Full vs distilled pipelines: BM25 + teacher against BM25 + each student, for effectiveness and speed.

``compare(config)`` runs the whole comparison of a config (``pipeline.config``):

1. checks every input (files, folders, models, measures, the network when needed) and loads every
   reranker before any other work, so a bad config fails at once;
2. one BM25 pass over the topics, cached as ``runs/NAME/bm25.trec`` (reused while the index, BM25
   parameters, depth and topics are unchanged); the index is built into its folder when missing;
3. every reranker over the same candidates with the same engine: first a warm-up, then timed in
   interleaved rounds (each round, a block of queries, goes through every reranker in a rotating
   order), so a drift of the machine's speed touches all rerankers alike. Each round's results are
   appended to ``NAME.trec.partial``; the complete run is written as ``NAME.trec`` with its timing
   (``NAME.trec.timing.json``) when all rounds are done;
4. ir-measures per pipeline, paired significance tests of each student against the teacher and against
   BM25 (and of the teacher against BM25), speed (pairs/s, per-query latency p50/p95, time per stage,
   speedup over the teacher), and the reports (``pipeline.report``): ``report.md``, ``report.json``,
   ``effectiveness_vs_speed.png``, each written atomically once everything else is done.

An interrupted comparison leaves the finished parts (the index, ``bm25.trec``, the reranked rounds in
the ``.partial`` files) and no report.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .atomic import atomic_write
from .config import Config, ModelSpec, load_config
from .data import read_qids, read_qrels, read_topics
from .errors import InputError
from .evaluate import evaluate_per_query
from .runs import Run
from .significance import PairedTest
from .significance import compare as paired_compare

REPORT_FILES = ("report.md", "report.json", "effectiveness_vs_speed.png")
BM25_RUN = "bm25.trec"


@dataclass
class PipelineResult:
    """One pipeline of the comparison: BM25 alone, BM25 + teacher, or BM25 + a student."""

    name: str
    kind: str  # bm25 | teacher | student
    run_path: Path
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False)
    model: str | None = None
    description: str = ""
    model_info: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)  # the rerank stage (StageTiming.to_dict), or BM25's

    @property
    def pairs_per_s(self) -> float | None:
        return self.timing.get("pairs_per_s") if self.kind != "bm25" else None


@dataclass
class Comparison:
    """Everything a report shows: pipelines, significance tests, stage times and the context."""

    config: Config
    measures: tuple[str, ...]
    plot_measure: str
    pipelines: list[PipelineResult]
    significance: dict[str, dict[str, dict[str, PairedTest]]]  # pipeline -> "teacher"/"bm25" -> measure -> test
    stages: list[dict[str, Any]]
    num_queries: int
    output: Path
    started: str
    seconds: float = 0.0

    def pipeline(self, name: str) -> PipelineResult:
        return next(p for p in self.pipelines if p.name == name)

    @property
    def teacher(self) -> PipelineResult:
        return next(p for p in self.pipelines if p.kind == "teacher")

    @property
    def bm25(self) -> PipelineResult:
        return next(p for p in self.pipelines if p.kind == "bm25")

    def speedup(self, result: PipelineResult) -> float | None:
        """Pairs/s of ``result`` over the teacher's (same pairs, same engine, same rounds)."""
        teacher = self.teacher.pairs_per_s
        if result.kind == "bm25" or not teacher or result.pairs_per_s is None:
            return None
        return result.pairs_per_s / teacher


# ---- inputs ---------------------------------------------------------------------------------------


def load_queries(config: Config) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The judged queries to compare on (restricted to ``data.qids`` when given) and their qrels."""
    topics = read_topics(config.topics)
    qrels = read_qrels(config.qrels)
    unknown = [q for q in qrels if q not in topics]
    if unknown:
        raise InputError(f"{len(unknown)} queries of the qrels are not in the topics (e.g. {unknown[:3]})",
                         config.qrels)
    keep = [q for q in topics if q in qrels]
    if config.qids is not None:
        wanted = set(read_qids(config.qids))
        absent = sorted(wanted - set(qrels))
        if absent:
            raise InputError(f"{len(absent)} query ids have no judgments in {config.qrels} (e.g. {absent[:3]})",
                             config.qids)
        keep = [q for q in keep if q in wanted]
    if not keep:
        raise InputError("no judged queries to compare on", config.qrels)
    return {q: topics[q] for q in keep}, {q: qrels[q] for q in keep}


def load_rerankers(config: Config) -> dict[str, Any]:
    """Every reranker of the config as a ``CrossEncoder`` (fails on the first model that cannot load)."""
    from .rerank import CrossEncoder

    loaded = {}
    for spec in config.rerankers:
        kwargs: dict[str, Any] = {"device": config.device, "precision": config.precision,
                                  "batch_tokens": config.batch_tokens}
        if config.max_length is not None:
            kwargs["max_length"] = config.max_length
        try:
            loaded[spec.name] = CrossEncoder.from_pretrained(spec.model, **kwargs)
        except InputError as err:
            raise InputError(f"reranker {spec.name!r}: {err}") from None
        if loaded[spec.name].new_head:
            raise InputError(f"reranker {spec.name!r} ({spec.model}) has no trained ranking head: "
                             "train it first (distilrank train / distilrank distill)")
    return loaded


def model_info(encoder) -> dict[str, Any]:
    """Size and shape of a reranker: parameters, layers, hidden width, dtype, device."""
    config = encoder.model.config
    return {
        "parameters": int(sum(p.numel() for p in encoder.model.parameters())),
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden": getattr(config, "hidden_size", None),
        "num_labels": encoder.num_labels,
        "dtype": str(encoder.dtype).replace("torch.", ""),
        "device": str(encoder.device),
        "max_length": encoder.max_length,
    }


# ---- first stage (cached) ---------------------------------------------------------------------------


def _topics_digest(topics: Mapping[str, str]) -> str:
    digest = hashlib.sha1()
    for qid, text in topics.items():
        digest.update(f"{qid}\t{text}\n".encode())
    return digest.hexdigest()


def _index_signature(index: Path) -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_size) for p in index.glob("segments_*"))


def first_stage_key(config: Config, topics: Mapping[str, str]) -> dict[str, Any]:
    """What the BM25 run depends on; a cached run is reused only when this is unchanged."""
    key: dict[str, Any] = {"k1": config.k1, "b": config.b, "hits": config.hits, "topics": _topics_digest(topics)}
    if config.prebuilt:
        key["prebuilt"] = config.prebuilt
    else:
        key["index"] = str(config.index)
        key["segments"] = _index_signature(config.index) if config.index.is_dir() else []
    return json.loads(json.dumps(key))  # as it reads back from the cache file (tuples become lists)


class FirstStage:
    """The BM25 stage of a comparison: index (built when missing), cached run, passage store."""

    def __init__(self, config: Config, output: Path, log: Callable[[str], None]):
        self.config, self.output, self.log = config, output, log
        self.stages: list[dict[str, Any]] = []
        self._bm25 = None

    def bm25(self):
        """The searcher (starts the JVM; built lazily so a cached run with a collection needs no Java)."""
        if self._bm25 is None:
            from .retrieve import BM25, build_index

            cfg = self.config
            if cfg.prebuilt:
                self._bm25 = BM25.from_prebuilt(cfg.prebuilt, cfg.k1, cfg.b)
            else:
                if not (cfg.index.is_dir() and any(cfg.index.glob("segments_*"))):
                    self.log(f"building the index {cfg.index} from {cfg.collection}")
                    start = time.perf_counter()
                    build_index(cfg.collection, cfg.index, threads=cfg.threads, force=cfg.index.exists())
                    self.stages.append({"stage": "index", "wall_s": round(time.perf_counter() - start, 6),
                                        "index": str(cfg.index)})
                self._bm25 = BM25(cfg.index, cfg.k1, cfg.b)
        return self._bm25

    def run(self, topics: Mapping[str, str]) -> tuple[Run, dict[str, Any]]:
        """The BM25 run of ``topics`` (from the cache when valid) and its timing."""
        cfg = self.config
        if cfg.run is not None:
            return self._precomputed(topics)
        path, meta_path = self.output / BM25_RUN, self.output / f"{BM25_RUN}.json"
        if not cfg.prebuilt and not (cfg.index.is_dir() and any(cfg.index.glob("segments_*"))):
            self.bm25()  # builds the index, so the cache key sees its segments
        key = first_stage_key(cfg, topics)
        if path.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except ValueError:
                meta = {}
            if meta.get("key") == key:
                run = Run.read(path, name="bm25")
                if set(run) <= set(topics):
                    self.log(f"BM25: reusing {path} (index, parameters and topics unchanged)")
                    timing = {**meta["timing"], "cached": True}
                    self.stages.append(timing)
                    return run, timing
        bm25 = self.bm25()
        self.log(f"BM25: {len(topics)} queries, top {cfg.hits} (k1={cfg.k1}, b={cfg.b})")
        start = time.perf_counter()
        run = bm25.batch_search(dict(topics), k=cfg.hits, threads=cfg.threads)
        wall = time.perf_counter() - start
        run.name = "bm25"
        timing = {"stage": "bm25", "wall_s": round(wall, 6), "queries": len(run), "pairs": run.num_pairs,
                  "queries_per_s": round(len(run) / wall, 3) if wall > 0 else 0.0,
                  "latency_mean_ms": round(1000 * wall / max(len(run), 1), 3), "threads": cfg.threads,
                  "cached": False}
        run.write(path, tag="bm25")
        with atomic_write(meta_path) as out:
            json.dump({"key": key, "timing": timing}, out, indent=2)
        self.stages.append(timing)
        return run, timing

    def _precomputed(self, topics: Mapping[str, str]) -> tuple[Run, dict[str, Any]]:
        """The configured first-stage run, restricted to ``topics`` and cut at ``hits``."""
        start = time.perf_counter()
        run = Run.read(self.config.run, name="bm25").subset(topics).top(self.config.hits)
        if not len(run):
            raise InputError("the first-stage run ranks none of the topics' queries", self.config.run)
        self.log(f"first stage: {len(run)} queries read from {self.config.run}")
        timing = {"stage": "bm25", "wall_s": round(time.perf_counter() - start, 6), "queries": len(run),
                  "pairs": run.num_pairs, "source": str(self.config.run), "cached": True}
        self.stages.append(timing)
        return run, timing

    def docstore(self):
        """Passage text: the collection file when given (memory-mapped), else the index's stored text."""
        if self.config.collection is not None and self.config.collection.is_file():
            from .data import DocStore

            return DocStore(self.config.collection)
        return self.bm25().docstore


# ---- rerankers, interleaved -------------------------------------------------------------------------


#: At least this many interleaved rounds when the queries allow it (a round is never more than one engine chunk).
MIN_ROUNDS = 10


def _round_size(config: Config, encoders: Mapping[str, Any], num_queries: int) -> int:
    """Queries per round: the config's, else at most one engine chunk of pairs and at least ``MIN_ROUNDS`` rounds."""
    if config.chunk_queries:
        return config.chunk_queries
    from .engine import CPU_CHUNK_PAIRS, GPU_CHUNK_PAIRS

    cuda = any(e.device.type == "cuda" for e in encoders.values())
    chunk = math.ceil((GPU_CHUNK_PAIRS if cuda else CPU_CHUNK_PAIRS) / config.depth)
    return max(1, min(chunk, math.ceil(num_queries / MIN_ROUNDS)))


def _merge_timings(name: str, parts: list) -> "Any":
    from .timing import StageTiming

    extra: dict[str, Any] = dict(parts[0].extra) if parts else {}
    for key in ("batches", "tokens", "padded_tokens", "skipped_missing", "skipped_empty"):
        if key in extra:
            extra[key] = sum(int(p.extra.get(key, 0)) for p in parts)
    extra["rounds"] = len(parts)
    return StageTiming(
        f"rerank:{name}", sum(p.wall_s for p in parts), sum(p.queries for p in parts), sum(p.pairs for p in parts),
        [latency for p in parts for latency in p.latencies_s], device=parts[0].device if parts else "cpu", extra=extra,
    )


def rerank_interleaved(
    encoders: Mapping[str, Any], candidates: Run, topics: Mapping[str, str], docstore, config: Config,
    output: Path, progress: bool = True, log: Callable[[str], None] = print,
) -> dict[str, tuple[Run, Any]]:
    """Every reranker over the same candidates: warm-up, then interleaved rounds; run files written at the end."""
    from tqdm import tqdm

    from .stages import rerank_run
    from .timing import timing_path, write_timings

    names = list(encoders)
    qids = list(candidates)
    warm = qids[: config.warmup_queries]
    if warm:
        log(f"warm-up: {len(warm)} queries through each reranker")
        for name in names:
            rerank_run(encoders[name], candidates.subset(warm), topics, docstore, depth=config.depth,
                       batch_tokens=config.batch_tokens)
    size = _round_size(config, encoders, len(qids))
    rounds = [qids[i : i + size] for i in range(0, len(qids), size)]
    rankings: dict[str, dict[str, list]] = {n: {} for n in names}
    parts: dict[str, list] = {n: [] for n in names}
    partial = {n: output / f"{n}.trec.partial" for n in names}
    for path in partial.values():
        path.unlink(missing_ok=True)
    log(f"reranking top {config.depth} of {len(qids)} queries with {len(names)} rerankers, "
        f"interleaved in {len(rounds)} rounds of {size} queries")
    bar = tqdm(total=len(qids) * len(names), unit="query", desc="rerank", disable=not progress, dynamic_ncols=True)
    try:
        for r, block in enumerate(rounds):
            chunk = candidates.subset(block)
            for name in names[r % len(names):] + names[: r % len(names)]:
                run, timing = rerank_run(encoders[name], chunk, topics, docstore, depth=config.depth,
                                         batch_tokens=config.batch_tokens)
                rankings[name].update(run.rankings)
                parts[name].append(timing)
                with open(partial[name], "a", encoding="utf-8") as out:
                    for qid, ranking in run.items():
                        out.writelines(f"{qid} Q0 {d} {i} {s:.6f} {name}\n" for i, (d, s) in enumerate(ranking, 1))
                bar.update(len(block))
    finally:
        bar.close()
    results = {}
    for name in names:
        run = Run({q: rankings[name][q] for q in qids}, name)
        path = output / f"{name}.trec"
        run.write(path, tag=name)
        timing = _merge_timings(name, parts[name])
        write_timings(timing_path(path), [timing], model=encoders[name].source, interleaved_with=names,
                      warmup_queries=len(warm))
        partial[name].unlink(missing_ok=True)
        results[name] = (run, timing)
    return results


# ---- the comparison -----------------------------------------------------------------------------------


def significance_tests(
    pipelines: list[PipelineResult], measures: tuple[str, ...], permutations: int, seed: int
) -> dict[str, dict[str, dict[str, PairedTest]]]:
    """Each student vs the teacher and vs BM25, and the teacher vs BM25, per measure."""
    by_kind = {p.kind: p for p in pipelines if p.kind in ("bm25", "teacher")}
    tests: dict[str, dict[str, dict[str, PairedTest]]] = {}
    for result in pipelines:
        if result.kind == "bm25":
            continue
        against = {"bm25": by_kind["bm25"]}
        if result.kind == "student":
            against["teacher"] = by_kind["teacher"]
        tests[result.name] = {
            other: {m: paired_compare(result.per_query[m], base.per_query[m], permutations, seed) for m in measures}
            for other, base in against.items()
        }
    return tests


def compare(
    config: Config | str | Path, output: str | Path | None = None, progress: bool = True,
    log: Callable[[str], None] = print,
) -> Comparison:
    """Run the comparison of ``config`` (a ``Config``, a TOML path or a preset name); writes the reports."""
    from .report import write_reports

    if not isinstance(config, Config):
        config = load_config(config, output)
    elif output is not None:
        from dataclasses import replace

        config = replace(config, output=Path(output).resolve())
    config.check_inputs()
    topics, qrels = load_queries(config)
    measures, plot_measure = config.resolved_measures(qrels)
    log(f"loading {len(config.rerankers)} rerankers")
    encoders = load_rerankers(config)
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:  # a report must never describe runs other than the ones beside it
        (out / name).unlink(missing_ok=True)
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()

    first = FirstStage(config, out, log)
    bm25_run, bm25_timing = first.run(topics)
    missing = [q for q in topics if q not in bm25_run]
    if missing:
        log(f"note: BM25 found nothing for {len(missing)} queries (they score 0)")
    docstore = first.docstore()
    reranked = rerank_interleaved(encoders, bm25_run, topics, docstore, config, out, progress, log)

    specs: dict[str, ModelSpec] = {s.name: s for s in config.rerankers}
    pipelines = [PipelineResult("bm25", "bm25", out / BM25_RUN, {}, evaluate_per_query(bm25_run, qrels, measures),
                                description=f"BM25 k1={config.k1} b={config.b}", timing=bm25_timing)]
    for name, (run, timing) in reranked.items():
        kind = "teacher" if name == config.teacher.name else "student"
        pipelines.append(PipelineResult(
            name, kind, out / f"{name}.trec", {}, evaluate_per_query(run, qrels, measures), model=specs[name].model,
            description=specs[name].description, model_info=model_info(encoders[name]), timing=timing.to_dict()))
    for result in pipelines:
        result.metrics = {m: sum(v.values()) / len(v) for m, v in result.per_query.items()}
    significance = significance_tests(pipelines, measures, config.permutations, config.seed)
    comparison = Comparison(config, measures, plot_measure, pipelines, significance,
                            first.stages + [timing.to_dict() for _, timing in reranked.values()],
                            len(topics), out, started, time.perf_counter() - clock)
    write_reports(comparison)
    return comparison


def environment() -> dict[str, Any]:
    """The hardware and software versions a result was measured with."""
    import platform
    from importlib import metadata

    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("distilrank", "torch", "transformers", "pyserini", "ir-measures", "numpy", "scipy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "memory_gib": memory,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None, "versions": versions,
    }
