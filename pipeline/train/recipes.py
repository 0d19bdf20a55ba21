"""End-to-end recipes behind the CLI: teacher training (with the bi-encoder bootstrap), teacher
scores, and the four distillation procedures of the study.

Each phase trains into its own folder with the ``Trainer`` (log, checkpoint, final model); with
``resume`` a finished phase is skipped and an interrupted one continues from its checkpoint.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import distributed, runs
from ..atomic import atomic_write
from ..config import MAX_LENGTH
from ..cross_encoder import CrossEncoder
from ..data import DocStore, read_qids, read_qrels, read_topics
from ..engine import ScoringEngine
from ..errors import InputError
from ..journal import Journal, identity, open_journal, source_identity
from ..timing import StageTiming, combine_ranks, sync, timing_path, write_timings
from . import PROCEDURES
from .groups import LabeledGroups, Ranking, ScoredGroups, iter_run_lists
from .lm_distill import HiddenMatcher, LMDistillTask, PairSource
from .options import (
    NEGATIVES,
    NEGATIVES_DEPTH,
    SCORE_CHUNK_QUERIES,
    SCORE_DEPTH,
    BootstrapConfig,
    DistillConfig,
    TrainConfig,
)
from .scores import ScoreFile, join_scores, score_lines, write_scores
from .students import make_student
from .tasks import RankerTask
from .trainer import CHECKPOINT, LOG_FILE, Trainer

log = logging.getLogger(__name__)

INFO_FILE = "distilrank_train.json"


@dataclass
class Inputs:
    """Topics, run file and collection of one training phase."""

    topics: dict[str, str]
    run: Path
    docstore: DocStore
    qrels: dict[str, dict[str, int]] | None = None
    sources: dict[str, Path] = field(default_factory=dict)  # the files read, by role (what a journal names)

    @classmethod
    def load(cls, topics: str | Path, run: str | Path, collection: str | Path, qrels: str | Path | None = None,
             docstore: DocStore | None = None, exclude_qids: str | Path | None = None) -> Inputs:
        """Read the inputs; ``exclude_qids`` (a file of query ids) leaves those queries out (e.g. a held-out half)."""
        t = read_topics(topics)
        if exclude_qids is not None:
            excluded = set(read_qids(exclude_qids))
            t = {q: text for q, text in t.items() if q not in excluded}
            if not t:
                raise InputError("every query of the topics is excluded", exclude_qids)
        run = Path(run)
        if not run.is_file():
            raise InputError("run file not found", run)
        sources = {"topics": topics, "run": run, "collection": collection, "qrels": qrels, "exclude_qids": exclude_qids}
        return cls(t, run, docstore or DocStore(collection), read_qrels(qrels) if qrels else None,
                   {role: Path(path) for role, path in sources.items() if path is not None})


def load_encoder(path: str | Path, seed: int, max_length: int = MAX_LENGTH) -> CrossEncoder:
    """A CrossEncoder on CPU in fp32 (the Trainer moves it); a new head is seeded."""
    torch.manual_seed(seed)
    return CrossEncoder(path, device="cpu", precision="fp32", max_length=max_length)


def finished_summary(folder: Path) -> dict:
    """The summary a finished phase logged at its end (the last ``end`` event of its training log)."""
    path = folder / LOG_FILE
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    ends = [e for e in events if e.get("event") == "end"]
    return {k: v for k, v in ends[-1].items() if k != "event"} if ends else {}


def run_phase(task, folder: Path, config: TrainConfig, device: str, resume: bool) -> dict:
    """Train one phase into ``folder``; with ``resume``: skip it when finished, continue it when interrupted."""
    finished = (folder / "config.json").is_file() and not (folder / CHECKPOINT).exists()
    if resume and finished:
        log.info("%s: already finished in %s, skipped", task.name, folder)
        return {**finished_summary(folder), "task": task.name, "skipped": True}
    trainer = Trainer(task, folder, config, device)
    summary = trainer.fit(resume=resume and (folder / CHECKPOINT).exists())
    log.info("%s: %d steps in %.1fs, running loss %.4f", task.name, summary["steps"], summary["seconds"],
             summary["running_loss"])
    return summary


def write_info(folder: Path, info: dict) -> None:
    """Record what a training made (rank 0 alone under torchrun)."""
    if not distributed.context().is_main:
        return
    with atomic_write(Path(folder) / INFO_FILE) as out:
        json.dump(info, out, indent=2, default=str)


def read_info(folder: str | Path) -> dict:
    path = Path(folder) / INFO_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ---- teacher scores -------------------------------------------------------------------------------


#: Timing extras of ``score_run`` that add up over the ranks.
SCORE_SUMMED = ("resumed_queries", "resumed_pairs")


@dataclass
class RunShare:
    """A rank's share of a run file: the index of its first chunk and where its lines are."""

    first_chunk: int = 0
    start: int = 0  # byte offset of its first line
    first_line: int = 1
    lines: int | None = None  # None: to the end of the file


def run_chunks(inputs: Inputs, depth: int | None, chunk_queries: int,
               share: RunShare | None = None) -> Iterator[tuple[int, list[tuple[str, Ranking]]]]:
    """``(index, chunk)``: the run's top-``depth`` lists, ``chunk_queries`` queries a chunk, streamed from the
    run file (or the part of it ``share`` names); a query without text is an ``InputError``."""
    share = share or RunShare()
    index, chunk = share.first_chunk, []
    for qid, ranking in iter_run_lists(inputs.run, depth, share.start, share.first_line, share.lines):
        if qid not in inputs.topics:
            raise InputError(f"query {qid} of the run is not in the topics", inputs.run)
        chunk.append((qid, ranking))
        if len(chunk) == chunk_queries:
            yield index, chunk
            index, chunk = index + 1, []
    if chunk:
        yield index, chunk


def run_share(inputs: Inputs, depth: int | None, chunk_queries: int, ctx: distributed.Context) -> RunShare | None:
    """This rank's pair-balanced share of the run's chunks (None when it gets none). The ranks scan the run file
    together, each a byte range (``runs.query_spans``: query ids only), so no rank reads the whole file; the
    chunks are those a single process makes."""
    size = inputs.run.stat().st_size
    scan = runs.query_spans(inputs.run, size * ctx.rank // ctx.world_size, size * (ctx.rank + 1) // ctx.world_size)
    blank, spans = runs.join_spans(distributed.gather(scan, ctx), inputs.run)
    chunks = [spans[i : i + chunk_queries] for i in range(0, len(spans), chunk_queries)]
    pairs = [sum(min(s.rows, depth or s.rows) for s in chunk) for chunk in chunks]
    mine = distributed.balanced_ranges(pairs, ctx.world_size)[ctx.rank]
    if not mine:
        return None
    before = sum(s.lines for chunk in chunks[: mine.start] for s in chunk)
    return RunShare(mine.start, chunks[mine.start][0].offset, 1 + blank + before,
                    sum(s.lines for chunk in chunks[mine.start : mine.stop] for s in chunk))


def score_chunk(engine: ScoringEngine, inputs: Inputs, chunk: list[tuple[str, Ranking]]) -> list[tuple[str, Ranking]]:
    """The engine's model's scores for one chunk's lists, in their order."""
    queries, passages = [], []
    for qid, ranking in chunk:
        try:
            texts = inputs.docstore.get_many([d for d, _ in ranking])
        except KeyError as err:
            raise InputError(f"docid {err.args[0]} of query {qid} is not in the collection", inputs.run) from None
        queries.extend([inputs.topics[qid]] * len(texts))
        passages.extend(texts)
    scores = engine.score_pairs(queries, passages).tolist() if passages else []
    scored, at = [], 0
    for qid, ranking in chunk:
        scored.append((qid, [(d, float(s)) for (d, _), s in zip(ranking, scores[at : at + len(ranking)], strict=True)]))
        at += len(ranking)
    return scored


def _score_share(engine: ScoringEngine, inputs: Inputs, depth: int | None, chunk_queries: int, journal: Journal,
                 share: RunShare | None) -> StageTiming:
    """Score the chunks of ``share`` that ``journal`` lacks, journaling each; the timing of the work done here."""
    start = time.perf_counter()
    done, totals, latencies = set(), Counter(), []
    for record in journal:
        done.add(record["chunk"])
        totals.update(resumed_queries=record["queries"], resumed_pairs=record["pairs"])
    for index, chunk in run_chunks(inputs, depth, chunk_queries, share) if share is not None else ():
        if index in done:
            continue
        began = time.perf_counter()
        scored = score_chunk(engine, inputs, chunk)
        pairs, seconds = sum(len(r) for _, r in scored), time.perf_counter() - began
        journal.append({"chunk": index, "queries": len(scored), "pairs": pairs, "body": score_lines(scored)})
        totals.update(queries=len(scored), pairs=pairs)
        latencies.extend(seconds * len(r) / max(pairs, 1) for _, r in scored)
    sync(engine.device)
    encoder = engine.encoder
    return StageTiming("score", time.perf_counter() - start, totals["queries"], totals["pairs"], latencies,
                       device=str(encoder.device),
                       extra={"model": encoder.source, "dtype": str(encoder.dtype).replace("torch.", ""),
                              "depth": depth, "batch_tokens": engine.batch_tokens, "chunk_queries": chunk_queries,
                              **{k: totals[k] for k in SCORE_SUMMED}})


def _write_part(journal: Journal, path: Path) -> None:
    """This rank's score lines, from its journal (chunks in order), atomically."""
    with atomic_write(path) as out:
        for record in journal:
            out.write(record["body"])


def score_run(model: str | Path, inputs: Inputs, output: str | Path, depth: int | None = SCORE_DEPTH,
              device: str = "auto", precision: str | None = None, batch_tokens: int | None = None,
              resume: bool = False, chunk_queries: int = SCORE_CHUNK_QUERIES) -> dict:
    """Write the teacher's scores for the run's top-``depth`` lists to ``output`` (see ``scores.py``) and their
    timing (``OUTPUT.timing.json``); returns the file's header.

    In one process or as one rank of a ``torchrun`` job (``pipeline.distributed``): the run is cut into chunks of
    ``chunk_queries`` queries, each rank scores its pair-balanced share and writes its part, rank 0 joins the
    parts: the file is byte-identical to a single process's. Each scored chunk is journaled
    (``OUTPUT.journal``, one per rank; see ``pipeline.journal``): with ``resume`` a killed run continues."""
    output = Path(output)
    engine = ScoringEngine(CrossEncoder(model, device=device, precision=precision), batch_tokens=batch_tokens)
    ctx = distributed.start(engine.device)
    share = run_share(inputs, depth, chunk_queries, ctx) if ctx.distributed else RunShare()
    encoder = engine.encoder
    header = {"command": "score", "model": source_identity(model),
              "inputs": {role: identity(path) for role, path in inputs.sources.items() if role != "qrels"},
              "depth": depth, "chunk_queries": chunk_queries,
              "dtype": str(encoder.dtype).replace("torch.", ""), "device": encoder.device.type,
              "max_length": encoder.max_length, "query_max_length": encoder.query_max_length,
              "batch_tokens": engine.batch_tokens, "chunk_pairs": engine.chunk_pairs}
    journal = open_journal(output, header, resume, ctx.rank, ctx.world_size)
    timing = combine_ranks(distributed.gather(_score_share(engine, inputs, depth, chunk_queries, journal, share), ctx),
                           SCORE_SUMMED)
    queries = timing.queries + timing.extra["resumed_queries"]
    distributed.write_output(output, lambda part: _write_part(journal, part),
                             lambda parts, path: join_scores(parts, path, depth, str(model), queries), ctx)
    if ctx.is_main:
        write_timings(timing_path(output), [timing], scores=str(output), model=str(model),
                      inputs={role: str(path) for role, path in inputs.sources.items()})
        log.info("%s", timing.summary())
    journal.remove()
    return ScoreFile(output).header


def biencoder_scores(path: Path, biencoder_dir: Path, inputs: Inputs, depth: int, device: str) -> ScoreFile:
    """Score the run's top-``depth`` with the zero-shot bi-encoder into ``path`` (reused when it matches)."""
    from .biencoder import BiEncoder

    if path.is_file():
        existing = ScoreFile(path)
        try:
            existing.check_run(inputs.run)
            return existing
        except InputError:
            pass
    if distributed.context().is_main:  # one writer; under torchrun the other ranks wait for the file
        encoder = BiEncoder(biencoder_dir, device=device)
        lists = encoder.score_lists(iter_run_lists(inputs.run, depth), inputs.topics, inputs.docstore)
        write_scores(path, lists, depth, f"biencoder:{biencoder_dir}")
    distributed.barrier()
    return ScoreFile(path)


# ---- teacher training -----------------------------------------------------------------------------


def train_teacher(init: str | Path, inputs: Inputs, output: str | Path, config: TrainConfig,
                  negatives: int = NEGATIVES, negatives_depth: int = NEGATIVES_DEPTH, short: str = "pad",
                  device: str = "auto", resume: bool = False, bootstrap: BootstrapConfig | None = None,
                  max_length: int = MAX_LENGTH) -> dict:
    """Fine-tune ``init`` as a 1-logit cross-encoder with LCE (after the bi-encoder bootstrap if given)."""
    output = Path(output)
    if inputs.qrels is None:
        raise InputError("teacher training needs --qrels")
    start = Path(init)
    summaries = {}
    if bootstrap is not None:
        boot_dir = output / "bootstrap"
        boot_inputs = Inputs.load(bootstrap.topics, bootstrap.run, inputs.docstore.path, docstore=inputs.docstore)
        scores = biencoder_scores(boot_dir / "biencoder.scores", bootstrap.biencoder, boot_inputs,
                                  bootstrap.score_depth, device)
        source = ScoredGroups(boot_inputs.topics, lambda: iter(scores), bootstrap.group_size, seed=bootstrap.train.seed)
        task = RankerTask("bootstrap", load_encoder(start, bootstrap.train.seed, max_length), source, inputs.docstore,
                          objective="kl", seed=bootstrap.train.seed, teacher_temperature=bootstrap.teacher_temperature)
        summaries["bootstrap"] = run_phase(task, boot_dir / "model", bootstrap.train, device, resume)
        start = boot_dir / "model"
    source = LabeledGroups(inputs.topics, inputs.qrels, inputs.run, negatives, negatives_depth, short=short,
                           seed=config.seed, missing=inputs.docstore.missing)
    task = RankerTask("teacher-lce", load_encoder(start, config.seed, max_length), source, inputs.docstore,
                      objective="lce", seed=config.seed)
    summaries["lce"] = run_phase(task, output, config, device, resume)
    write_info(output, {"kind": "teacher", "init": str(Path(init).resolve()), "lce": asdict(config),
                        "bootstrap": asdict(bootstrap) if bootstrap else None,
                        "summaries": summaries, "groups": source.stats.summary()})
    return summaries


# ---- distillation -----------------------------------------------------------------------------------


def build_student(teacher: Path, base: Path, cfg: DistillConfig, seed: int) -> CrossEncoder:
    """The student's CrossEncoder: ``cfg.layers`` evenly spaced layers of the base (or teacher), a folder, or random."""
    if cfg.init_from in ("base", "teacher"):
        source = load_encoder(base if cfg.init_from == "base" else teacher, seed, cfg.max_length)
        source.model = make_student(source.model, cfg.layers, init="copy")
        return source
    if cfg.init_from == "random":
        source = load_encoder(base, seed, cfg.max_length)
        source.model = make_student(source.model, cfg.layers, init="random", seed=seed)
        return source
    return load_encoder(Path(cfg.init_from), seed, cfg.max_length)


def distill(teacher: str | Path, inputs: Inputs, output: str | Path, cfg: DistillConfig,
            scores: str | Path | None = None, device: str = "auto", resume: bool = False) -> dict:
    """One of the four procedures: ``fine-tune``, ``ranker-distill``, ``lm-distill+fine-tune``,
    ``lm-distill+ranker-distill``. Saves the student into ``output``."""
    if cfg.procedure not in PROCEDURES:
        raise InputError(f"unknown procedure {cfg.procedure!r}; expected one of {', '.join(PROCEDURES)}")
    teacher, output = Path(teacher), Path(output)
    if not (teacher / "config.json").is_file():
        raise InputError("teacher folder has no config.json", teacher)
    base = Path(cfg.base or read_info(teacher).get("init") or teacher)
    seed = cfg.rank.seed
    fine_tune = cfg.procedure.endswith("fine-tune")
    if fine_tune and inputs.qrels is None:
        raise InputError(f"--procedure {cfg.procedure} trains on labels: it needs --qrels")
    score_file = None
    if not fine_tune:
        if scores is None:
            scores = output / "teacher.scores"
            if not (resume and scores.is_file()):
                log.info("scoring the run's top-%d with the teacher into %s", cfg.score_depth, scores)
                score_run(teacher, inputs, scores, cfg.score_depth, device=device, resume=resume)
        score_file = ScoreFile(scores)
        score_file.check_run(inputs.run)
    summaries = {}
    student = build_student(teacher, base, cfg, seed)
    if cfg.procedure.startswith("lm-distill"):
        lm_dir = output / "lm-distill"
        lm_teacher = load_encoder(base, seed, cfg.max_length)
        source = PairSource(inputs.topics, inputs.run, cfg.lm_pairs_per_query, cfg.score_depth, seed=cfg.lm.seed)
        task = LMDistillTask("lm-distill", student, lm_teacher, source, inputs.docstore, cfg.attention_weight,
                             cfg.lm.seed)
        summaries["lm-distill"] = run_phase(task, lm_dir, cfg.lm, device, resume)
        student = load_encoder(lm_dir, seed, cfg.max_length)
    if fine_tune:
        source = LabeledGroups(inputs.topics, inputs.qrels, inputs.run, cfg.negatives, cfg.negatives_depth, seed=seed,
                               missing=inputs.docstore.missing)
        task = RankerTask("fine-tune", student, source, inputs.docstore, objective="lce", seed=seed)
    else:
        source = ScoredGroups(inputs.topics, lambda: iter(score_file), cfg.group_size, seed=seed, qrels=inputs.qrels)
        hidden = None
        if cfg.procedure.startswith("lm-distill") and cfg.hidden_weight:
            hidden = HiddenMatcher(load_encoder(teacher, seed, cfg.max_length), student, attention_weight=0.0)
        task = RankerTask("ranker-distill", student, source, inputs.docstore, objective=cfg.objective, seed=seed,
                          temperature=cfg.temperature, label_weight=cfg.label_weight, hidden=hidden,
                          hidden_weight=cfg.hidden_weight)
    summaries[task.name] = run_phase(task, output, cfg.rank, device, resume)
    write_info(output, {"kind": "student", "procedure": cfg.procedure, "teacher": str(teacher.resolve()),
                        "init": str(base.resolve()), "config": asdict(cfg),
                        "summaries": summaries,
                        "groups": source.stats.summary()})
    return summaries
