"""End-to-end recipes behind the CLI: teacher training (with the bi-encoder bootstrap), teacher
scores, and the four distillation procedures of the study.

Each phase trains into its own folder with the ``Trainer`` (log, checkpoint, final model); with
``resume`` a finished phase is skipped and an interrupted one continues from its checkpoint, provided the run's
options that change what it makes are those it started with (``recorded_options``: ``distilrank_options.json`` in
the output; another value is refused, naming the option). With a
``HeldOut`` given and ``eval_every`` in a phase's ``TrainConfig``, the ranking phases (bootstrap, LCE,
ranker-distill, fine-tune) log a held-out learning curve and plot it beside their log.

A student is built in this order: its initial weights (``init_from``: evenly spaced or ``layer_map``
layers of the base encoder or of the teacher, random, or a folder) with its ranking head (``head``),
then LM distillation (``lm-distill+...``), then the bi-encoder bootstrap if given, then ranker
distillation or fine-tuning.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..defaults import MAX_LENGTH
from ..errors import InputError
from ..eval.timing import StageTiming, combine_ranks, sync, timing_path, write_timings
from ..io import runs
from ..io.data import DocStore, read_qids, read_qrels, read_topics
from ..io.runs import Ranking
from ..io.textfiles import read_text
from ..rerank.cross_encoder import CrossEncoder
from ..rerank.engine import ChunkResult, PairChunk, ScoringEngine
from ..rerank.heads import with_head
from ..rerank.options import RuntimeOptions
from ..rerank.token_cache import TokenCache
from ..runtime import distributed
from ..runtime.atomic import atomic_write, is_stdout
from ..runtime.devices import resolve_device
from ..runtime.diskspace import DiskFull
from ..runtime.journal import Journal, identity, open_journal, source_identity
from . import is_fine_tune, uses_lm_distill
from .curves import read_log
from .groups import LabeledGroups, ScoredGroups, iter_run_lists, random_passages
from .heldout import HeldOut
from .lm_distill import HiddenMatcher, LMDistillTask, PairSource
from .options import (
    NEGATIVES,
    NEGATIVES_DEPTH,
    RANDOM_NEGATIVES,
    SCORE_CHUNK_QUERIES,
    SCORE_DEPTH,
    SEED,
    BootstrapConfig,
    DistillConfig,
    TrainConfig,
    phase_prefix,
    refuse_changed,
    result_options,
)
from .scores import ScoreFile, join_scores, score_lines, write_scores
from .students import dropped_layers, make_student
from .tasks import RankerTask
from .trainer import CHECKPOINT, CHECKPOINT_OLD, LOG_FILE, Trainer, started

log = logging.getLogger(__name__)

INFO_FILE = "distilrank_train.json"
#: The options a training run was started with, written into its output first (``recorded_options``).
OPTIONS_FILE = "distilrank_options.json"
#: The LM-distillation phase's folder inside a student's output (``lm-distill+...`` procedures).
LM_DIR = "lm-distill"


@dataclass
class Inputs:
    """Topics, run file and collection of one training phase; ``token_cache``: whether models read passages as
    token ids from the collection's token cache (built on first use) rather than tokenizing their text."""

    topics: dict[str, str]
    run: Path
    docstore: DocStore
    qrels: dict[str, dict[str, int]] | None = None
    token_cache: bool = True
    sources: dict[str, Path] = field(default_factory=dict)  # the files read, by role (what a journal names)

    @classmethod
    def load(cls, topics: str | Path, run: str | Path, collection: str | Path, qrels: str | Path | None = None,
             docstore: DocStore | None = None, exclude_qids: str | Path | None = None,
             token_cache: bool = True) -> Inputs:
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
        runs.warn_if_empty(run)
        sources = {"topics": topics, "run": run, "collection": collection, "qrels": qrels, "exclude_qids": exclude_qids}
        return cls(t, run, docstore or DocStore(collection), read_qrels(qrels) if qrels else None, token_cache,
                   {role: Path(path) for role, path in sources.items() if path is not None})

    def tokens(self, encoder: CrossEncoder) -> TokenCache | None:
        """The token cache ``encoder`` reads passages from (built when absent), or None (see ``token_cache``)."""
        return encoder.passage_cache(self.docstore) if self.token_cache else None


def load_encoder(path: str | Path, seed: int, max_length: int = MAX_LENGTH) -> CrossEncoder:
    """A CrossEncoder on CPU in fp32 (the Trainer moves it); a new head is drawn from ``seed``."""
    return CrossEncoder(path, device="cpu", precision="fp32", max_length=max_length, head_seed=seed)


def finished_summary(folder: Path) -> dict:
    """The summary a finished phase logged at its end (the last ``end`` event of its training log)."""
    path = folder / LOG_FILE
    events = read_log(path) if path.is_file() else []
    ends = [e for e in events if e.get("event") == "end"]
    return {k: v for k, v in ends[-1].items() if k != "event"} if ends else {}


def run_phase(task, folder: Path, config: TrainConfig, device: str, resume: bool,
              heldout: HeldOut | None = None) -> dict:
    """Train one phase into ``folder``; with ``resume``: skip it when finished, continue it when interrupted.
    With ``heldout`` and ``config.eval_every``, the phase's learning curve is measured on it."""
    finished = (folder / "config.json").is_file() and not any((folder / n).exists() for n in (CHECKPOINT,
                                                                                               CHECKPOINT_OLD))
    if resume and finished:
        log.info("%s: already finished in %s, skipped", task.name, folder)
        return {**finished_summary(folder), "task": task.name, "skipped": True}
    evaluator = None
    if heldout is None or not config.eval_every:
        config = replace(config, eval_every=None)
    else:
        evaluator = heldout.evaluator(task.encoder, resolve_device(device))
    trainer = Trainer(task, folder, config, device, evaluator)
    summary = trainer.fit(resume=resume and started(folder))
    steps = f"{summary['steps']} steps"
    if summary["resumed_at"]:
        steps += f" ({summary['steps_this_run']} in this run, resumed at step {summary['resumed_at']})"
    loss = summary["running_loss"]
    log.info("%s: %s in %.1fs%s", task.name, steps, summary["seconds"],
             f", running loss {loss:.4f}" if loss is not None else "")
    return summary


def check_restart(output: Path, resume: bool, overwrite: bool) -> None:
    """The crash-and-restart rule of a training output folder, checked before any work.

    ``resume`` continues what the folder holds and needs something there; without it a folder that holds
    anything (a checkpoint, a trained model) is refused unless ``overwrite``: training never silently starts
    again over earlier work. Under torchrun every rank checks before any rank writes into the folder, and a
    refusal on any rank stops every rank with the same line (``distributed.on_every``).
    """
    distributed.on_every(lambda: _check_restart(output, resume, overwrite))


def _check_restart(output: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other (continue the run, or start it again)")
    held = sorted(p.name for p in output.iterdir()) if output.is_dir() else []
    if resume and not held:
        raise InputError("nothing to resume: the output folder is missing or empty (run without --resume to "
                         "start)", output)
    if held and not resume and not overwrite:
        if any(output.rglob(f"{CHECKPOINT}*")):
            what = "an interrupted run's checkpoint"
        elif (output / "config.json").is_file():
            what = "a trained model"
        else:
            what = f"files ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''})"
        raise InputError(f"the output folder already holds {what}: pass --resume to continue it, or --overwrite "
                         "to train again over it", output)


@contextlib.contextmanager
def recorded_options(output: Path, options: dict[str, Any], config: dict[str, Any], resume: bool) -> Iterator[None]:
    """Around a training run: the ``options`` that change what it makes (``result_options``: by flag) and its whole
    ``config`` written into ``output`` when it starts; with ``resume``, options that differ from those recorded are
    refused before any work (``refuse_changed``: one line naming the first and both values). A run started here
    that stops with bad input, or with nothing done beside the record (a signal, a full disk), removes it again:
    its folder holds nothing to resume."""
    path = output / OPTIONS_FILE
    if resume and path.is_file():
        try:
            recorded = json.loads(read_text(path))["options"]
        except (ValueError, KeyError, TypeError):
            raise InputError("damaged record of the run's options (start over with --overwrite)", path) from None
        refuse_changed(recorded, options, path)
        yield
        return

    def record() -> None:  # a new run, or one started before options were recorded
        with atomic_write(path) as out:
            json.dump({"options": options, "config": config}, out, indent=2, default=str)

    distributed.on_main(record)  # rank 0 writes; its failure (a full disk) stops every rank
    try:
        yield
    except BaseException as exc:
        bad_input = isinstance(exc, InputError) and not isinstance(exc, DiskFull)
        if distributed.context().is_main and (bad_input or [p.name for p in output.iterdir()] == [OPTIONS_FILE]):
            path.unlink(missing_ok=True)
        raise


def group_summary(source: LabeledGroups | ScoredGroups) -> str:
    """The statistics of the groups of the last pass over ``source``, one pass made when none was (its phase was
    finished and skipped on ``--resume``)."""
    if not source.stats.queries:
        source.count()
    return source.stats.summary()


def write_info(folder: Path, info: dict) -> None:
    """Record what a training made (rank 0 alone under torchrun; its failure stops every rank)."""
    def write() -> None:
        with atomic_write(Path(folder) / INFO_FILE) as out:
            json.dump(info, out, indent=2, default=str)

    distributed.on_main(write)


def read_info(folder: str | Path) -> dict:
    """The info file of a folder trained by distilrank ({} when there is none)."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(read_text(path)))
    except (ValueError, TypeError):
        raise InputError("malformed training info (expected a JSON object)", path) from None


# ---- teacher scores -------------------------------------------------------------------------------


#: Timing extras of ``score_run`` that add up over the ranks.
SCORE_SUMMED = ("batches", "tokens", "padded_tokens", "resumed_queries", "resumed_pairs")


@dataclass
class RunShare:
    """A rank's share of a run file: the index of its first chunk and where its lines are."""

    first_chunk: int = 0
    start: int = 0  # byte offset of its first line
    first_line: int = 1
    lines: int | None = None  # None: to the end of the file


def run_chunks(inputs: Inputs, depth: int | None, chunk_queries: int, share: RunShare | None = None,
               random_negatives: int = 0, seed: int = SEED) -> Iterator[tuple[int, list[tuple[str, Ranking]]]]:
    """``(index, chunk)``: the run's top-``depth`` lists, ``chunk_queries`` queries a chunk, streamed from the
    run file (or the part of it ``share`` names), each list followed by ``random_negatives`` passages drawn at
    random from the collection (``groups.random_passages``: the draw depends on the query alone); a query
    without text is an ``InputError``."""
    share = share or RunShare()
    index, chunk = share.first_chunk, []
    for qid, ranking in iter_run_lists(inputs.run, depth, share.start, share.first_line, share.lines):
        if qid not in inputs.topics:
            raise InputError(f"query {qid} of the run is not in the topics", inputs.run)
        if random_negatives:
            drawn = random_passages(inputs.docstore, qid, random_negatives, seed, exclude=(d for d, _ in ranking))
            ranking = ranking + [(d, 0.0) for d in drawn]
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


Lists = list[tuple[str, Ranking]]  # a chunk's candidate lists: (qid, ranking) in run order


def scored_chunks(engine: ScoringEngine, inputs: Inputs, chunks: Iterable[tuple[int, Lists]],
                  token_cache: TokenCache | None = None) -> Iterator[tuple[int, Lists, ChunkResult]]:
    """The engine's model's scores of each chunk's lists, in order: ``(index, scored lists, engine result)``;
    passages from ``token_cache`` when given, else as text from the docstore (read in the engine's background
    thread, while the model scores the previous chunk)."""

    def pair_chunk(index: int, lists: list[tuple[str, Ranking]]) -> PairChunk:
        docids = [d for _, ranking in lists for d, _ in ranking]
        try:
            passages = (token_cache.get_many(docids, engine.encoder.passage_limit) if token_cache is not None
                        else inputs.docstore.get_many(docids))
        except KeyError as err:
            qid = next(q for q, ranking in lists if any(d == err.args[0] for d, _ in ranking))
            raise InputError(f"docid {err.args[0]} of query {qid} is not in the collection", inputs.run) from None
        of_pair = [i for i, (_, ranking) in enumerate(lists) for _ in ranking]
        queries = [inputs.topics[qid] for qid, _ in lists]
        if token_cache is not None:
            return PairChunk(queries, of_pair, passage_tokens=passages, meta=(index, lists))
        return PairChunk(queries, of_pair, passages=passages, meta=(index, lists))

    for result in engine.stream(pair_chunk(index, lists) for index, lists in chunks):
        index, lists = result.chunk.meta
        scored, at = [], 0
        for qid, ranking in lists:
            scores = result.scores[at : at + len(ranking)].tolist()
            scored.append((qid, [(d, float(s)) for (d, _), s in zip(ranking, scores, strict=True)]))
            at += len(ranking)
        yield index, scored, result


def _score_share(engine: ScoringEngine, inputs: Inputs, depth: int | None, chunk_queries: int, journal: Journal,
                 share: RunShare | None, token_cache: TokenCache | None, random_negatives: int,
                 seed: int) -> StageTiming:
    """Score the chunks of ``share`` that ``journal`` lacks, journaling each; the timing of the work done here."""
    start = time.perf_counter()
    totals, latencies = Counter(), []
    chunks = run_chunks(inputs, depth, chunk_queries, share, random_negatives, seed) if share is not None else ()
    for index, scored, result in scored_chunks(engine, inputs, _unscored(journal, chunks, totals), token_cache):
        pairs = len(result.chunk)
        journal.append({"chunk": index, "queries": len(scored), "pairs": pairs,
                        "body": score_lines(scored, random_negatives)})
        totals.update(queries=len(scored), pairs=pairs, batches=result.batches, tokens=result.tokens,
                      padded_tokens=result.padded_tokens)
        latencies.extend(result.seconds * len(r) / max(pairs, 1) for _, r in scored)
    sync(engine.device)
    encoder = engine.encoder
    return StageTiming("score", time.perf_counter() - start, totals["queries"], totals["pairs"], latencies,
                       device=str(encoder.device),
                       extra={"model": encoder.source, "dtype": encoder.precision, "depth": depth,
                              "random_negatives": random_negatives, "token_cache": token_cache is not None,
                              "batch_tokens": engine.batch_tokens, "chunk_queries": chunk_queries,
                              **{k: totals[k] for k in SCORE_SUMMED}})


def _pairs_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """A digest of ``(qid, docid)`` pairs in order."""
    sha = hashlib.sha1()
    for qid, docid in pairs:
        sha.update(f"{qid}\t{docid}\n".encode())
    return sha.hexdigest()


def _unscored(journal: Journal, chunks: Iterable[tuple[int, Lists]], totals: Counter) -> Iterator[tuple[int, Lists]]:
    """The chunks ``journal`` lacks. Those it holds are counted as resumed in ``totals`` once checked against the
    run: a record of another chunk, or with other candidates (``qid, docid`` pairs in order), is refused
    (``Journal.damaged``)."""
    recorded = {}
    for lineno, record in journal.records():
        try:
            pairs = [line.split("\t", 2)[:2] for line in record["body"].splitlines()]
            recorded[record["chunk"]] = (lineno, record["queries"], record["pairs"], _pairs_digest(pairs))
        except (KeyError, AttributeError, TypeError, ValueError):
            raise journal.damaged(lineno, "malformed record") from None
    for index, lists in chunks:
        if index not in recorded:
            yield index, lists
            continue
        lineno, queries, pairs, digest = recorded.pop(index)
        expected = [(qid, docid) for qid, ranking in lists for docid, _ in ranking]
        if (queries, pairs, digest) != (len(lists), len(expected), _pairs_digest(expected)):
            raise journal.damaged(lineno, f"chunk {index} holds other candidates than the run's")
        totals.update(resumed_queries=queries, resumed_pairs=pairs)
    if recorded:
        first = min(recorded.values())
        raise journal.damaged(first[0], "a chunk that is not one of this run's")


def _write_part(journal: Journal, path: Path) -> None:
    """This rank's score lines, from its journal (chunks in order), atomically."""
    with atomic_write(path) as out:
        for record in journal:
            out.write(record["body"])


def score_run(model: str | Path, inputs: Inputs, output: str | Path, depth: int | None = SCORE_DEPTH, *,
              options: RuntimeOptions | None = None, random_negatives: int = RANDOM_NEGATIVES, seed: int = SEED,
              resume: bool = False, chunk_queries: int = SCORE_CHUNK_QUERIES, **runtime: Any) -> dict:
    """Write the teacher's scores for the run's top-``depth`` lists (and ``random_negatives`` random passages a
    query, drawn from ``seed``, which also seeds the fresh head of a model folder without one) to ``output`` (see
    ``scores.py``) and their timing (``OUTPUT.timing.json``); returns the file's header. How the model runs:
    ``options`` (``RuntimeOptions``), with any of its fields given by name (``device="cuda"``) replacing its own;
    passages are read from the token cache when both ``options.token_cache`` and ``inputs.token_cache`` say so.

    In one process or as one rank of a ``torchrun`` job (``pipeline.distributed``): the run is cut into chunks of
    ``chunk_queries`` queries, each rank scores its pair-balanced share and writes its part, rank 0 joins the
    parts: the file is byte-identical to a single process's. Each scored chunk is journaled
    (``OUTPUT.journal``, one per rank; see ``pipeline.journal``): with ``resume`` a killed run continues. Bad
    input found while scoring removes the journal (its inputs must change, so it could not be resumed)."""
    if is_stdout(output):
        raise InputError("a score file is joined from journaled parts: give a file name, not standard output")
    output = Path(output)
    options = replace(options or RuntimeOptions(), **runtime)
    encoder = CrossEncoder(model, head_seed=seed, **options.encoder_kwargs())
    engine = ScoringEngine(encoder, **options.engine_kwargs())
    ctx = distributed.start(engine.device)
    share = run_share(inputs, depth, chunk_queries, ctx) if ctx.distributed else RunShare()
    header = {"command": "score", "model": source_identity(model),
              "inputs": {role: identity(path) for role, path in inputs.sources.items() if role != "qrels"},
              "depth": depth, "chunk_queries": chunk_queries, "random_negatives": random_negatives, "seed": seed,
              **engine.settings()}
    journal = open_journal(output, header, resume, ctx.rank, ctx.world_size)
    with journal.dropped_on_bad_input():
        timing = _score_share(engine, inputs, depth, chunk_queries, journal, share,
                              inputs.tokens(encoder) if options.token_cache else None, random_negatives, seed)
    timing = combine_ranks(distributed.gather(timing, ctx), SCORE_SUMMED)
    queries = timing.queries + timing.extra["resumed_queries"]
    distributed.write_output(output, lambda part: _write_part(journal, part),
                             lambda parts, path: join_scores(parts, path, depth, str(model), queries,
                                                             random_negatives), ctx)

    def record() -> None:
        write_timings(timing_path(output), [timing], scores=str(output), model=str(model),
                      inputs={role: str(path) for role, path in inputs.sources.items()})
        log.info("%s", timing.summary())

    distributed.on_main(record, ctx)  # rank 0 writes; its failure (a full disk) stops every rank
    journal.remove()
    return ScoreFile(output).header


def biencoder_scores(path: Path, biencoder_dir: Path, inputs: Inputs, depth: int, device: str) -> ScoreFile:
    """Score the run's top-``depth`` with the zero-shot bi-encoder into ``path`` (reused when it matches)."""
    from ..retrieval.biencoder import BiEncoder

    if path.is_file():
        existing = ScoreFile(path)
        try:
            existing.check_run(inputs.run)
            return existing
        except InputError:
            pass

    def score() -> None:
        encoder = BiEncoder(biencoder_dir, device=device)
        lists = encoder.score_lists(iter_run_lists(inputs.run, depth), inputs.topics, inputs.docstore)
        write_scores(path, lists, depth, f"biencoder:{biencoder_dir}")

    distributed.on_main(score)  # one writer; under torchrun the other ranks wait for the file (or its error)
    return ScoreFile(path)


# ---- teacher training -----------------------------------------------------------------------------


def bootstrap_phase(encoder: CrossEncoder, bootstrap: BootstrapConfig, docstore: DocStore, folder: Path,
                    device: str, resume: bool, heldout: HeldOut | None = None,
                    token_cache: TokenCache | None = None) -> dict:
    """The bi-encoder bootstrap of ``encoder`` into ``folder / "model"``: listwise KL to the bi-encoder's cosine
    scores (at ``teacher_temperature``), scored once into ``folder / "biencoder.scores"``; passages from
    ``token_cache`` when given."""
    boot_inputs = Inputs.load(bootstrap.topics, bootstrap.run, docstore.path, docstore=docstore)
    scores = biencoder_scores(folder / "biencoder.scores", bootstrap.biencoder, boot_inputs, bootstrap.score_depth,
                              device)
    source = ScoredGroups(boot_inputs.topics, lambda: iter(scores), bootstrap.group_size, seed=bootstrap.train.seed)
    task = RankerTask("bootstrap", encoder, source, docstore, objective="kl", seed=bootstrap.train.seed,
                      teacher_temperature=bootstrap.teacher_temperature, token_cache=token_cache)
    return run_phase(task, folder / "model", bootstrap.train, device, resume, heldout)


def train_teacher(init: str | Path, inputs: Inputs, output: str | Path, config: TrainConfig,
                  negatives: int = NEGATIVES, negatives_depth: int = NEGATIVES_DEPTH, short: str = "pad",
                  device: str = "auto", resume: bool = False, bootstrap: BootstrapConfig | None = None,
                  max_length: int = MAX_LENGTH, overwrite: bool = False, heldout: HeldOut | None = None) -> dict:
    """Fine-tune ``init`` as a 1-logit cross-encoder with LCE (after the bi-encoder bootstrap if given).

    ``resume`` continues an interrupted run in ``output``; ``overwrite`` trains again over one (see
    ``check_restart``); with ``heldout``, each phase logs its learning curve (``eval_every`` of its TrainConfig)."""
    output = Path(output)
    if inputs.qrels is None:
        raise InputError("teacher training needs --qrels")
    check_restart(output, resume, overwrite)
    options = {**result_options(config), "--negatives": negatives, "--negatives-depth": negatives_depth,
               "--short": short, "--max-length": max_length,
               **(result_options(bootstrap, phase_prefix(DistillConfig, "bootstrap")) if bootstrap
                  else {"--bootstrap": None})}
    whole = {"lce": asdict(config), "bootstrap": asdict(bootstrap) if bootstrap else None, "negatives": negatives,
             "negatives_depth": negatives_depth, "short": short, "max_length": max_length}
    with recorded_options(output, options, whole, resume):
        start = Path(init)
        summaries = {}
        if bootstrap is not None:
            encoder = load_encoder(start, bootstrap.train.seed, max_length)
            summaries["bootstrap"] = bootstrap_phase(encoder, bootstrap, inputs.docstore, output / "bootstrap",
                                                     device, resume, heldout, inputs.tokens(encoder))
            start = output / "bootstrap" / "model"
        source = LabeledGroups(inputs.topics, inputs.qrels, inputs.run, negatives, negatives_depth, short=short,
                               seed=config.seed, missing=inputs.docstore.missing)
        encoder = load_encoder(start, config.seed, max_length)
        task = RankerTask("teacher-lce", encoder, source, inputs.docstore, objective="lce", seed=config.seed,
                          token_cache=inputs.tokens(encoder))
        summaries["lce"] = run_phase(task, output, config, device, resume, heldout)
        write_info(output, {"kind": "teacher", "init": str(Path(init).resolve()), "lce": asdict(config),
                            "bootstrap": asdict(bootstrap) if bootstrap else None,
                            "summaries": summaries, "groups": group_summary(source)})
        return summaries


# ---- distillation -----------------------------------------------------------------------------------


def build_student(teacher: Path, base: Path, cfg: DistillConfig, seed: int) -> CrossEncoder:
    """The student's CrossEncoder: layers of the base (or teacher), random weights, or a folder; with ``cfg.head``.
    Its scoring forward is the student's own (``CrossEncoder.model`` follows the swap)."""
    if cfg.init_from in ("base", "teacher", "random"):
        source = load_encoder(teacher if cfg.init_from == "teacher" else base, seed, cfg.max_length)
        if cfg.init_from == "random":
            source.model = make_student(source.model, cfg.layers, init="random", seed=seed)
        else:
            source.model = make_student(source.model, cfg.student_layers, init="copy")
    else:
        source = load_encoder(Path(cfg.init_from), seed, cfg.max_length)
    try:
        source.model = with_head(source.model, cfg.head)
    except ValueError as exc:
        raise InputError(f"--head {cfg.head}: {exc}") from None
    return source


def check_layers(teacher: Path, base: Path, cfg: DistillConfig) -> None:
    """A student copying layers needs ``1 <= layers <=`` the layers of what it copies (checked before any work)."""
    if cfg.layers < 1:
        raise InputError(f"--layers must be at least 1, got {cfg.layers}")
    if cfg.init_from not in ("base", "teacher"):
        return  # random weights take any depth; a model folder brings its own
    from transformers import AutoConfig

    source = teacher if cfg.init_from == "teacher" else base
    try:
        available = int(AutoConfig.from_pretrained(str(source)).num_hidden_layers)
    except (OSError, ValueError, AttributeError):
        return  # not a local BERT-style folder: the student's own construction says what is wrong
    if not 1 <= cfg.layers <= available:
        raise InputError(f"--layers {cfg.layers}: the student takes its layers from {source}, which has "
                         f"{available}; choose 1 to {available}")
    if cfg.layer_map and (len(set(cfg.layer_map)) != len(cfg.layer_map) or max(cfg.layer_map) >= available):
        raise InputError(f"--layer-map {','.join(map(str, cfg.layer_map))}: {source} has layers 0 to "
                         f"{available - 1}, each kept once")
    sizes = [*cfg.progressive, cfg.layers]
    if cfg.progressive and not (available >= sizes[0] and all(a > b for a, b in itertools.pairwise(sizes))):
        raise InputError(f"--progressive {','.join(map(str, cfg.progressive))}: the stages must shrink from at most "
                         f"{available} layers ({source}) down to --layers {cfg.layers}, each smaller than the last")


def distill(teacher: str | Path, inputs: Inputs, output: str | Path, cfg: DistillConfig,
            scores: str | Path | None = None, device: str = "auto", resume: bool = False,
            overwrite: bool = False, heldout: HeldOut | None = None) -> dict:
    """One of the four procedures: ``fine-tune``, ``ranker-distill``, ``lm-distill+fine-tune``,
    ``lm-distill+ranker-distill``. Saves the student into ``output`` (``resume``/``overwrite``: see
    ``check_restart``); with ``heldout`` (and ``eval_every`` in ``cfg.rank`` / ``cfg.bootstrap.train``) its
    ranking phases log a learning curve."""
    fine_tune = is_fine_tune(cfg.procedure)  # an unknown procedure is an InputError
    teacher, output = Path(teacher), Path(output)
    seed = cfg.rank.seed
    if fine_tune and (cfg.hidden_weight or cfg.progressive):
        raise InputError(f"--procedure {cfg.procedure} trains on labels alone: --hidden-weight and --progressive "
                         "distil the teacher (use ranker-distill or lm-distill+ranker-distill)")
    if cfg.progressive and cfg.init_from != "teacher":
        raise InputError("--progressive drops layers of the teacher stage by stage: it needs --init-from teacher")
    uses_teacher = ((scores is None and not fine_tune) or cfg.init_from == "teacher" or cfg.base is None
                    or bool(cfg.hidden_weight))
    if uses_teacher and not (teacher / "config.json").is_file():  # given scores and a base, the weights may be away
        raise InputError("teacher folder has no config.json", teacher)
    base = Path(cfg.base or read_info(teacher).get("init") or teacher)
    if fine_tune and inputs.qrels is None:
        raise InputError(f"--procedure {cfg.procedure} trains on labels: it needs --qrels")
    check_layers(teacher, base, cfg)
    check_restart(output, resume, overwrite)
    lm_options = uses_lm_distill(cfg.procedure)  # the --lm-* options of another procedure change nothing
    lm_prefix = f"--{phase_prefix(DistillConfig, 'lm')}"
    options = {k: v for k, v in result_options(cfg).items() if lm_options or not k.startswith(lm_prefix)}
    with recorded_options(output, options, asdict(cfg), resume):
        score_file = None
        if not fine_tune:
            if scores is None:
                scores = output / "teacher.scores"
                if not (resume and scores.is_file()):
                    log.info("scoring the run's top-%d with the teacher into %s", cfg.score_depth, scores)
                    score_run(teacher, inputs, scores, cfg.score_depth, device=device,
                              random_negatives=cfg.random_negatives, seed=seed, resume=resume)
            score_file = ScoreFile(scores)
            score_file.check_run(inputs.run)
            score_file.check_random(cfg.random_negatives)  # before any phase trains
        summaries = {}
        first_size = cfg.progressive[0] if cfg.progressive else cfg.layers
        student = build_student(teacher, base, replace(cfg, layers=first_size, layer_map=None) if cfg.progressive
                                else cfg, seed)
        if uses_lm_distill(cfg.procedure):
            lm_dir = output / LM_DIR
            lm_teacher = load_encoder(base, seed, cfg.max_length)
            source = PairSource(inputs.topics, inputs.run, cfg.lm_pairs_per_query, cfg.score_depth, seed=cfg.lm.seed)
            task = LMDistillTask("lm-distill", student, lm_teacher, source, inputs.docstore, cfg.attention_weight,
                                 cfg.lm.seed, list(cfg.layer_map) if cfg.layer_map else None,
                                 token_cache=inputs.tokens(student))
            summaries["lm-distill"] = run_phase(task, lm_dir, cfg.lm, device, resume)
            student = load_encoder(lm_dir, seed, cfg.max_length)
        if cfg.bootstrap is not None:
            summaries["bootstrap"] = bootstrap_phase(student, cfg.bootstrap, inputs.docstore, output / "bootstrap",
                                                     device, resume, heldout, inputs.tokens(student))
            student = load_encoder(output / "bootstrap" / "model", seed, cfg.max_length)
        if fine_tune:
            source = LabeledGroups(inputs.topics, inputs.qrels, inputs.run, cfg.negatives, cfg.negatives_depth,
                                   seed=seed, missing=inputs.docstore.missing)
            task = RankerTask("fine-tune", student, source, inputs.docstore, objective="lce", seed=seed,
                              token_cache=inputs.tokens(student))
            summaries[task.name] = run_phase(task, output, cfg.rank, device, resume, heldout)
        else:
            source = ScoredGroups(inputs.topics, lambda: iter(score_file), cfg.group_size, seed=seed,
                                  qrels=inputs.qrels, depth=cfg.score_depth, random_negatives=cfg.random_negatives,
                                  random=score_file.random_lists() if cfg.random_negatives else None)

            def distill_stage(student: CrossEncoder, layer_map: list[int] | None, folder: Path,
                              train: TrainConfig) -> dict:
                """Ranker distillation of ``student`` into ``folder``; with ``hidden_weight``, its layers matched to
                the teacher's ``layer_map`` (and their attention maps, with ``attention_weight``) on the same pairs."""
                hidden = None
                if cfg.hidden_weight:
                    hidden = HiddenMatcher(load_encoder(teacher, seed, cfg.max_length), student, layer_map,
                                           attention_weight=cfg.attention_weight)
                task = RankerTask("ranker-distill", student, source, inputs.docstore, objective=cfg.objective,
                                  seed=seed, temperature=cfg.temperature, teacher_temperature=cfg.teacher_temperature,
                                  label_weight=cfg.label_weight, hidden=hidden, hidden_weight=cfg.hidden_weight,
                                  token_cache=inputs.tokens(student))
                return run_phase(task, folder, train, device, resume, heldout)

            layer_map = list(cfg.layer_map) if cfg.layer_map else None
            if cfg.progressive:  # each stage starts from the last one's trained model, a few layers fewer
                from transformers import AutoConfig

                stages = dropped_layers(int(AutoConfig.from_pretrained(str(teacher)).num_hidden_layers),
                                        [*cfg.progressive, cfg.layers])
                for held, following in itertools.pairwise(stages):
                    folder = output / f"stage-{len(held)}L"
                    summaries[f"ranker-distill-{len(held)}L"] = distill_stage(
                        student, held, folder, replace(cfg.rank, max_steps=cfg.progressive_steps))
                    student = load_encoder(folder, seed, cfg.max_length)
                    student.model = make_student(student.model, [held.index(layer) for layer in following],
                                                 init="copy")
                layer_map = stages[-1]
            summaries["ranker-distill"] = distill_stage(student, layer_map, output, cfg.rank)
        write_info(output, {"kind": "student", "procedure": cfg.procedure, "teacher": str(teacher.resolve()),
                            "init": str(base.resolve()), "config": asdict(cfg), "summaries": summaries,
                            "groups": group_summary(source)})
        return summaries
