"""``distilrank train``, ``distilrank score`` and ``distilrank distill``: thin wrappers over
``pipeline.train.recipes``.

The flags of what the recipes take are made from the fields of ``TrainConfig``, ``BootstrapConfig`` and
``DistillConfig`` (``pipeline.cli.flags``): each flag's name, type, default and help are written once, in
``pipeline.train.options``. A training phase other than the main one takes a few flags of its own (``--lm-*``,
``--bootstrap-*``: ``LM_PHASE``, ``BOOTSTRAP_PHASE``) and the main phase's values for the rest. The flags written
here are the commands' inputs and outputs and the recipes' own arguments.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ..defaults import MAX_LENGTH, RERANK_DEPTH, SEED
from ..errors import InputError
from ..rerank.heads import HEADS
from ..rerank.options import RuntimeOptions
from ..runtime.journal import journal_files
from ..runtime.outputs import claim_output, named_inputs
from ..train.options import (
    BOOTSTRAP_TRAINING,
    BOOTSTRAPPED_LR,
    LM_TRAINING,
    NEGATIVES,
    NEGATIVES_DEPTH,
    RANDOM_NEGATIVES,
    RANK_TRAINING,
    SCORE_CHUNK_QUERIES,
    SCORE_DEPTH,
    BootstrapConfig,
    DistillConfig,
    TrainConfig,
    phase_prefix,
)
from .flags import add_fields, field_values, flagged, refuse
from .rerank import runtime_flags, runtime_options

#: The ``TrainConfig`` fields the LM-distillation phase (``--lm-*``) and the bootstrap (``--bootstrap-*``) set
#: themselves; their other values are the main phase's (the bootstrap's warmup is its own default).
LM_PHASE = ("epochs", "lr", "batch_size", "max_steps")
BOOTSTRAP_PHASE = ("epochs", "batch_size", "epoch_lrs", "max_steps")
#: Those phases' flag prefixes, as ``DistillConfig`` declares them (the teacher's bootstrap takes the same flags).
LM_PREFIX, BOOTSTRAP_PREFIX = phase_prefix(DistillConfig, "lm"), phase_prefix(DistillConfig, "bootstrap")
#: The ``TrainConfig`` field in the held-out group, and the ``DistillConfig`` fields of which one is required.
HELD_OUT = ("eval_every",)
LAYERS = ("layers", "layer_map")
#: The ``RuntimeOptions`` the training commands take (the device, and whether passages come from the token cache).
TRAINING_RUNTIME = ("device", "token_cache")
HELDOUT_INPUTS = ("eval_run", "eval_topics", "eval_qrels", "eval_qids")
BOOTSTRAP_INPUTS = ("bootstrap_from", "bootstrap_topics", "bootstrap_run")


def _names(cls: type, *leave_out: tuple[str, ...]) -> list[str]:
    """The flagged fields of ``cls`` less those in ``leave_out``."""
    left = {name for names in leave_out for name in names}
    return [f.name for f in flagged(cls) if f.name not in left]


def _training(p: argparse.ArgumentParser, phase: TrainConfig, unset: tuple[str, ...] = ()) -> None:
    """The flags of the main training phase (``phase``'s values as defaults), the held-out learning curve's, the
    device and the token cache."""
    add_fields(p, TrainConfig, base=phase, only=_names(TrainConfig, HELD_OUT), unset=unset)
    add_fields(p, RuntimeOptions, only=TRAINING_RUNTIME)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--overwrite", action="store_true",
                   help="train again over what --output holds (a model, an interrupted run's checkpoint)")
    g = p.add_argument_group("held-out learning curve (the ranking phases)")
    add_fields(g, TrainConfig, base=phase, only=HELD_OUT)
    g.add_argument("--eval-run", help="held-out candidates (a run file), e.g. BM25 of the DL20 queries")
    g.add_argument("--eval-topics", help="held-out topics TSV")
    g.add_argument("--eval-qrels", help="held-out qrels")
    g.add_argument("--eval-qids", help="only these held-out queries (ids one a line), e.g. configs/dl20-heldout.qids")
    g.add_argument("--eval-depth", type=int, default=RERANK_DEPTH,
                   help="candidates reranked per held-out query (default %(default)s)")


def _bootstrap_flags(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group(f"bootstrap {what} from a bi-encoder first (scarce labels)")
    add_fields(g, BootstrapConfig, BOOTSTRAP_PREFIX)
    add_fields(g, TrainConfig, BOOTSTRAP_PREFIX, base=BOOTSTRAP_TRAINING, only=BOOTSTRAP_PHASE)


def _bootstrap(args: argparse.Namespace, main: TrainConfig) -> BootstrapConfig | None:
    """The bi-encoder bootstrap the --bootstrap-* flags ask for (its phase: ``main`` with its own values), or
    None."""
    values = field_values(BootstrapConfig, args, BOOTSTRAP_PREFIX)
    given = [values[name] is not None for name in ("biencoder", "topics", "run")]
    if any(given) and not all(given):
        raise InputError("--bootstrap-from, --bootstrap-topics and --bootstrap-run go together")
    if not all(given):
        return None
    phase = field_values(TrainConfig, args, BOOTSTRAP_PREFIX, only=BOOTSTRAP_PHASE)
    train = replace(main, **{**phase, "lr": phase["epoch_lrs"][0], "warmup": BOOTSTRAP_TRAINING.warmup,
                             "max_steps": phase["max_steps"] or main.max_steps})
    return BootstrapConfig(**values, train=train)


def _heldout(args, docstore):
    """The held-out queries the --eval-* flags name (``HeldOut``), or None."""
    from ..train.heldout import HeldOut

    given = [args.eval_run, args.eval_topics, args.eval_qrels]
    if args.eval_every is None:
        if any(given) or args.eval_qids:
            raise InputError("--eval-run, --eval-topics, --eval-qrels and --eval-qids need --eval-every N")
        return None
    if not all(given):
        raise InputError("--eval-every needs --eval-run, --eval-topics and --eval-qrels")
    if args.eval_every < 1:
        raise InputError(f"--eval-every must be >= 1, got {args.eval_every}")
    return HeldOut.load(args.eval_run, args.eval_topics, args.eval_qrels, docstore, args.eval_depth, args.eval_qids)


def cmd_train(args) -> int:
    from ..train.recipes import Inputs, check_restart, train_teacher

    values = field_values(TrainConfig, args)
    runtime = field_values(RuntimeOptions, args, only=TRAINING_RUNTIME)
    bootstrap = _bootstrap(args, TrainConfig(**{**values, "lr": TrainConfig.lr}))
    if values["lr"] is None:
        values["lr"] = BOOTSTRAPPED_LR if bootstrap else TrainConfig.lr
    inputs = named_inputs(args, "init", "topics", "qrels", "run", "collection", "exclude_qids", *BOOTSTRAP_INPUTS,
                          *HELDOUT_INPUTS)
    with claim_output(args.output, inputs, folder=True):
        check_restart(Path(args.output), args.resume, args.overwrite)  # before the inputs are read
        loaded = Inputs.load(args.topics, args.run, args.collection, args.qrels, exclude_qids=args.exclude_qids,
                             token_cache=runtime["token_cache"])
        train_teacher(args.init, loaded, args.output, TrainConfig(**values), negatives=args.negatives,
                      negatives_depth=args.negatives_depth, short=args.short, device=runtime["device"],
                      resume=args.resume, overwrite=args.overwrite, bootstrap=bootstrap, max_length=args.max_length,
                      heldout=_heldout(args, loaded.docstore))
    print(f"teacher saved in {args.output}")
    return 0


def cmd_score(args) -> int:
    from ..train.recipes import Inputs, score_run

    if args.score_depth < 1:
        raise InputError("--score-depth must be at least 1")
    if args.random_negatives < 0:
        raise InputError("--random-negatives must be at least 0")
    if args.chunk_queries < 1:
        raise InputError("--chunk-queries must be at least 1")
    options = runtime_options(args)
    timing_file = f"{args.output}.timing.json"
    with claim_output(args.output, named_inputs(args, "model", "run", "topics", "collection"),
                      also=[timing_file, *journal_files(args.output)]):
        inputs = Inputs.load(args.topics, args.run, args.collection, token_cache=options.token_cache)
        header = score_run(args.model, inputs, args.output, args.score_depth, options=options,
                           random_negatives=args.random_negatives, seed=args.seed, resume=args.resume,
                           chunk_queries=args.chunk_queries)
    print(f"wrote {header['pairs']} scores for {header['queries']} queries to {args.output}; timing in {timing_file}")
    return 0


def cmd_distill(args) -> int:
    from ..train.recipes import Inputs, check_restart, distill

    values = field_values(DistillConfig, args)
    runtime = field_values(RuntimeOptions, args, only=TRAINING_RUNTIME)
    rank = TrainConfig(**field_values(TrainConfig, args))
    lm = replace(rank, **field_values(TrainConfig, args, LM_PREFIX, only=LM_PHASE), eval_every=None)
    cfg = DistillConfig(**{**values, "layers": len(values["layer_map"]) if values["layer_map"] else values["layers"]},
                        rank=rank, lm=replace(lm, max_steps=lm.max_steps or rank.max_steps),
                        bootstrap=_bootstrap(args, rank))
    inputs = named_inputs(args, "teacher", "topics", "run", "collection", "scores", "qrels", "base", *BOOTSTRAP_INPUTS,
                          *HELDOUT_INPUTS)
    if cfg.init_from not in ("base", "teacher", "random"):
        inputs["--init-from"] = cfg.init_from
    with claim_output(args.output, inputs, folder=True):
        check_restart(Path(args.output), args.resume, args.overwrite)  # before the inputs are read
        loaded = Inputs.load(args.topics, args.run, args.collection, args.qrels, token_cache=runtime["token_cache"])
        distill(args.teacher, loaded, args.output, cfg, scores=args.scores, device=runtime["device"],
                resume=args.resume, overwrite=args.overwrite, heldout=_heldout(args, loaded.docstore))
    print(f"student saved in {args.output}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="fine-tune a teacher cross-encoder (LCE), optionally bootstrapped from a bi-encoder on "
        "unlabeled queries",
        description="Fine-tune a pretrained encoder as a 1-logit cross-encoder on 1 positive + --negatives hard "
        "negatives per query (LCE); with --bootstrap-from, first distil a zero-shot bi-encoder into it over "
        f"unlabeled queries, after which --lr defaults to {BOOTSTRAPPED_LR}.")
    p.add_argument("--init", required=True, help="pretrained encoder folder (any BERT-family model)")
    p.add_argument("--topics", required=True)
    p.add_argument("--qrels", required=True)
    p.add_argument("--run", required=True, help="BM25 candidates to mine hard negatives from")
    p.add_argument("--collection", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--negatives", type=int, default=NEGATIVES, help="hard negatives per group (default %(default)s)")
    p.add_argument("--negatives-depth", type=int, default=NEGATIVES_DEPTH,
                   help="negatives come from the run's top-K (default %(default)s)")
    refuse(p, "--depth", "--negatives-depth")
    p.add_argument("--exclude-qids", help="leave these queries out of training (ids one a line, or a TSV), "
                   "e.g. configs/dl20-heldout.qids")
    p.add_argument("--short", choices=("pad", "drop"), default="pad",
                   help="too few negatives in the top-K: pad from deeper candidates (default) or drop the group")
    p.add_argument("--max-length", type=int, default=MAX_LENGTH,
                   help="tokens per (query, passage) pair (default %(default)s)")
    _training(p, TrainConfig(), unset=("lr",))
    _bootstrap_flags(p, "the teacher")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "score", help="write a teacher's scores for a run's candidate lists (for distillation)",
        description="Score the top --score-depth candidates of every query of a run with a teacher, once; every "
        "ranker-distill student reuses the file (it carries a fingerprint of the candidate lists, so a file made "
        "for another run is refused). No labels are needed: any queries will do.",
        epilog="example: distilrank score --model models/subset-teacher --run runs/dev.bm25.trec "
        "--topics queries.dev.small.tsv --collection collection.tsv --output runs/dev.teacher.scores --score-depth 30")
    p.add_argument("--model", required=True, help="the teacher: a cross-encoder folder or hub name")
    p.add_argument("--run", required=True, help="candidate lists (TREC or MS MARCO run, e.g. BM25)")
    p.add_argument("--topics", required=True, help="topics TSV with the run's queries")
    p.add_argument("--collection", required=True, help="collection.tsv or JSONL with the passages")
    p.add_argument("--output", required=True, help="score file to write")
    p.add_argument("--score-depth", type=int, default=SCORE_DEPTH,
                   help="candidates scored per query (default %(default)s)")
    refuse(p, "--depth", "--score-depth")
    p.add_argument("--random-negatives", type=int, default=RANDOM_NEGATIVES,
                   help="also score K passages a query drawn at random from the collection (seeded by --seed), for "
                        "'distill --random-negatives' (default %(default)s)")
    p.add_argument("--chunk-queries", type=int, default=SCORE_CHUNK_QUERIES,
                   help="queries scored, journaled and shared out together (default %(default)s)")
    p.add_argument("--seed", type=int, default=SEED,
                   help="seed of the random negatives and of a fresh ranking head (a model folder without one); "
                   "default %(default)s")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run from its journal (OUTPUT.journal, one per process under torchrun); "
                   "without a journal, start from the beginning")
    runtime_flags(p)
    p.set_defaults(func=cmd_score)

    p = subparsers.add_parser("distill", help="distil a student from a teacher by one of the four procedures")
    p.add_argument("--teacher", required=True)
    add_fields(p.add_mutually_exclusive_group(required=True), DistillConfig, only=LAYERS, required=LAYERS)
    p.add_argument("--output", required=True)
    p.add_argument("--topics", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--scores", help="teacher score file from 'distilrank score' (default: score into OUTPUT)")
    p.add_argument("--qrels", help="labels (needed by the fine-tune procedures; optional label loss otherwise)")
    add_fields(p, DistillConfig, only=_names(DistillConfig, LAYERS), choices={"head": HEADS})
    add_fields(p.add_argument_group("LM distillation (lm-distill+...)"), TrainConfig, LM_PREFIX, base=LM_TRAINING,
               only=LM_PHASE)
    _training(p, RANK_TRAINING)
    _bootstrap_flags(p, "the student")
    p.set_defaults(func=cmd_distill)
