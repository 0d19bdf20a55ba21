"""``distilrank train``, ``distilrank score`` and ``distilrank distill``: thin wrappers over
``pipeline.train.recipes``; every default comes from ``pipeline.train.options``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..defaults import MAX_LENGTH, RERANK_DEPTH
from ..errors import InputError
from ..rerank.heads import HEADS
from ..runtime.devices import PRECISIONS
from ..runtime.outputs import claim_output, named_inputs
from ..train import PROCEDURES
from ..train.options import (
    BOOTSTRAP_TRAINING,
    BOOTSTRAPPED_LR,
    LM_TRAINING,
    NEGATIVES,
    NEGATIVES_DEPTH,
    RANK_TRAINING,
    SCORE_CHUNK_QUERIES,
    SCORE_DEPTH,
    SEED,
    BootstrapConfig,
    DistillConfig,
    TrainConfig,
)
from .rerank import speed_options


def _lrs(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated learning rates, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"learning rates must be positive, got {text!r}")
    return values


def _layer_map(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"layer indices must be >= 0, got {text!r}")
    return values


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="precision (default: bf16 on CUDA, fp32 on CPU; int8, CPU only, for scoring alone)")
    p.add_argument("--seed", type=int, default=SEED, help="default %(default)s")


def _training(p: argparse.ArgumentParser, phase: TrainConfig, lr: float | None, lr_help: str) -> None:
    """The optimisation flags of one phase, with ``phase``'s values as defaults."""
    p.add_argument("--epochs", type=int, default=phase.epochs, help="default %(default)s")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (per phase)")
    p.add_argument("--lr", type=float, default=lr,
                   help=f"peak learning rate, linear warmup then linear decay (default {lr_help})")
    p.add_argument("--batch-size", type=int, default=phase.batch_size,
                   help="groups per optimizer step (default %(default)s)")
    p.add_argument("--accumulation", type=int, default=phase.accumulation, help="micro-batches per optimizer step")
    p.add_argument("--warmup", type=float, default=phase.warmup,
                   help="fraction of steps with linear warmup (default %(default)s)")
    p.add_argument("--max-length", type=int, default=MAX_LENGTH,
                   help="tokens per (query, passage) pair (default %(default)s)")
    p.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps (and each epoch)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--overwrite", action="store_true",
                   help="train again over what --output holds (a model, an interrupted run's checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-token-cache", action="store_true",
                   help="tokenize passage text in every batch instead of reading token ids from the token cache "
                   "(built on first use per collection and tokenizer, see 'distilrank tokenize')")
    g = p.add_argument_group("held-out learning curve (the ranking phases)")
    g.add_argument("--eval-every", type=int, default=None,
                   help="every N steps (and before the first and after the last) rerank the held-out queries and log "
                        "their effectiveness into train_log.jsonl, plotted in learning_curve.png beside it")
    g.add_argument("--eval-run", help="held-out candidates (a run file), e.g. BM25 of the DL20 queries")
    g.add_argument("--eval-topics", help="held-out topics TSV")
    g.add_argument("--eval-qrels", help="held-out qrels")
    g.add_argument("--eval-qids", help="only these held-out queries (ids one a line), e.g. configs/dl20-heldout.qids")
    g.add_argument("--eval-depth", type=int, default=RERANK_DEPTH,
                   help="candidates reranked per held-out query (default %(default)s)")


def _bootstrap_args(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group(f"bootstrap {what} from a bi-encoder first (scarce labels)")
    g.add_argument("--bootstrap-from", help="zero-shot bi-encoder folder (mean pooling, cosine)")
    g.add_argument("--bootstrap-topics", help="unlabeled queries")
    g.add_argument("--bootstrap-run", help="their BM25 candidates")
    g.add_argument("--bootstrap-score-depth", "--bootstrap-depth", type=int, default=BootstrapConfig.score_depth,
                   help="candidates per query the bi-encoder scores (default %(default)s)")
    g.add_argument("--bootstrap-group-size", type=int, default=BootstrapConfig.group_size, help="default %(default)s")
    g.add_argument("--bootstrap-batch-size", type=int, default=BOOTSTRAP_TRAINING.batch_size,
                   help="default %(default)s")
    g.add_argument("--bootstrap-epochs", type=int, default=BOOTSTRAP_TRAINING.epochs, help="default %(default)s")
    g.add_argument("--bootstrap-lrs", type=_lrs, default=BOOTSTRAP_TRAINING.epoch_lrs,
                   help=f"peak lr per epoch (default {','.join(map(str, BOOTSTRAP_TRAINING.epoch_lrs))})")
    g.add_argument("--bootstrap-temperature", type=float, default=BootstrapConfig.teacher_temperature,
                   help="softmax temperature of the bi-encoder's scores (default %(default)s)")
    g.add_argument("--bootstrap-max-steps", type=int, default=None)


def _bootstrap(args) -> BootstrapConfig | None:
    """The bi-encoder bootstrap the --bootstrap-* flags ask for, or None."""
    boot = [args.bootstrap_from, args.bootstrap_topics, args.bootstrap_run]
    if any(boot) and not all(boot):
        raise InputError("--bootstrap-from, --bootstrap-topics and --bootstrap-run go together")
    if not all(boot):
        return None
    bootstrap = BootstrapConfig(Path(args.bootstrap_from), Path(args.bootstrap_topics), Path(args.bootstrap_run),
                                score_depth=args.bootstrap_score_depth, group_size=args.bootstrap_group_size,
                                teacher_temperature=args.bootstrap_temperature)
    bootstrap.train = _config(args, args.bootstrap_lrs[0], epochs=args.bootstrap_epochs,
                              batch_size=args.bootstrap_batch_size, epoch_lrs=args.bootstrap_lrs,
                              warmup=BOOTSTRAP_TRAINING.warmup, max_steps=args.bootstrap_max_steps or args.max_steps)
    return bootstrap


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


def _config(args, lr: float, **overrides) -> TrainConfig:
    values = dict(epochs=args.epochs, batch_size=args.batch_size, accumulation=args.accumulation, lr=lr,
                  warmup=args.warmup, max_steps=args.max_steps, precision=args.precision, seed=args.seed,
                  save_every=args.save_every, progress=False if args.no_progress else None,
                  eval_every=args.eval_every)
    values.update(overrides)
    return TrainConfig(**values)


def cmd_train(args) -> int:
    from ..train.recipes import Inputs, check_restart, train_teacher

    bootstrap = _bootstrap(args)
    lr = args.lr if args.lr is not None else (BOOTSTRAPPED_LR if bootstrap else TrainConfig.lr)
    inputs = named_inputs(args, "init", "topics", "qrels", "run", "collection", "exclude_qids", "bootstrap_from",
                          "bootstrap_topics", "bootstrap_run", "eval_run", "eval_topics", "eval_qrels", "eval_qids")
    with claim_output(args.output, inputs, folder=True):
        check_restart(Path(args.output), args.resume, args.overwrite)  # before the inputs are read
        loaded = Inputs.load(args.topics, args.run, args.collection, args.qrels, exclude_qids=args.exclude_qids,
                             token_cache=not args.no_token_cache)
        train_teacher(args.init, loaded, args.output, _config(args, lr), negatives=args.negatives,
                      negatives_depth=args.negatives_depth, short=args.short, device=args.device,
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
    timing_file = f"{args.output}.timing.json"
    with claim_output(args.output, named_inputs(args, "model", "run", "topics", "collection"), also=[timing_file]):
        inputs = Inputs.load(args.topics, args.run, args.collection, token_cache=not args.no_token_cache)
        header = score_run(args.model, inputs, args.output, args.score_depth, device=args.device,
                           precision=args.precision, batch_tokens=args.batch_tokens,
                           random_negatives=args.random_negatives, seed=args.seed, compile=args.compile,
                           attention=args.attention, bucket=args.bucket, cuda_graphs=args.cuda_graphs,
                           resume=args.resume, chunk_queries=args.chunk_queries)
    print(f"wrote {header['pairs']} scores for {header['queries']} queries to {args.output}; timing in {timing_file}")
    return 0


def cmd_distill(args) -> int:
    from ..train.recipes import Inputs, check_restart, distill

    cfg = DistillConfig(
        procedure=args.procedure, layers=len(args.layer_map) if args.layer_map else args.layers,
        layer_map=args.layer_map, init_from=args.init_from, head=args.head,
        base=Path(args.base) if args.base else None, objective=args.objective, temperature=args.temperature,
        teacher_temperature=args.teacher_temperature, random_negatives=args.random_negatives,
        label_weight=args.label_weight, hidden_weight=args.hidden_weight, group_size=args.group_size,
        negatives=args.negatives, negatives_depth=args.negatives_depth, score_depth=args.score_depth,
        lm_pairs_per_query=args.lm_pairs_per_query,
        attention_weight=args.attention_weight, max_length=args.max_length,
        rank=_config(args, args.lr),
        lm=_config(args, args.lm_lr, epochs=args.lm_epochs, batch_size=args.lm_batch_size,
                   max_steps=args.lm_max_steps or args.max_steps, eval_every=None),
        bootstrap=_bootstrap(args))
    inputs = named_inputs(args, "teacher", "topics", "run", "collection", "scores", "qrels", "base", "bootstrap_from",
                          "bootstrap_topics", "bootstrap_run", "eval_run", "eval_topics", "eval_qrels", "eval_qids")
    if args.init_from not in ("base", "teacher", "random"):
        inputs["--init-from"] = args.init_from
    with claim_output(args.output, inputs, folder=True):
        check_restart(Path(args.output), args.resume, args.overwrite)  # before the inputs are read
        loaded = Inputs.load(args.topics, args.run, args.collection, args.qrels,
                             token_cache=not args.no_token_cache)
        distill(args.teacher, loaded, args.output, cfg, scores=args.scores, device=args.device, resume=args.resume,
                overwrite=args.overwrite, heldout=_heldout(args, loaded.docstore))
    print(f"student saved in {args.output}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="fine-tune a teacher cross-encoder (LCE), optionally bootstrapped "
                              "from a bi-encoder on unlabeled queries")
    p.add_argument("--init", required=True, help="pretrained encoder folder (any BERT-family model)")
    p.add_argument("--topics", required=True)
    p.add_argument("--qrels", required=True)
    p.add_argument("--run", required=True, help="BM25 candidates to mine hard negatives from")
    p.add_argument("--collection", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--negatives", type=int, default=NEGATIVES, help="hard negatives per group (default %(default)s)")
    p.add_argument("--negatives-depth", "--depth", type=int, default=NEGATIVES_DEPTH,
                   help="negatives come from the run's top-K (default %(default)s)")
    p.add_argument("--exclude-qids", help="leave these queries out of training (ids one a line, or a TSV), "
                   "e.g. configs/dl20-heldout.qids")
    p.add_argument("--short", choices=("pad", "drop"), default="pad",
                   help="too few negatives in the top-K: pad from deeper candidates (default) or drop the group")
    _training(p, TrainConfig(), None, f"{TrainConfig.lr}, or {BOOTSTRAPPED_LR} after a bootstrap")
    _common(p)
    _bootstrap_args(p, "the teacher")
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
    p.add_argument("--score-depth", "--depth", type=int, default=SCORE_DEPTH,
                   help="candidates scored per query (default %(default)s)")
    p.add_argument("--batch-tokens", type=int, default=None, help="engine token budget per batch")
    p.add_argument("--random-negatives", type=int, default=0,
                   help="also score K passages a query drawn at random from the collection (seeded by --seed), for "
                        "'distill --random-negatives'")
    p.add_argument("--chunk-queries", type=int, default=SCORE_CHUNK_QUERIES,
                   help="queries scored, journaled and shared out together (default %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run from its journal (OUTPUT.journal, one per process under torchrun); "
                   "without a journal, start from the beginning")
    speed_options(p)
    _common(p)
    p.set_defaults(func=cmd_score)

    p = subparsers.add_parser("distill", help="distil a student from a teacher by one of the four procedures")
    p.add_argument("--procedure", required=True, choices=PROCEDURES)
    p.add_argument("--teacher", required=True)
    layers = p.add_mutually_exclusive_group(required=True)
    layers.add_argument("--layers", type=int, help="student layers: an evenly spaced copy of the source's")
    layers.add_argument("--layer-map", type=_layer_map,
                        help="the source's layers the student keeps (0-based, comma-separated), e.g. 0,1 (bottom two)")
    p.add_argument("--output", required=True)
    p.add_argument("--topics", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--scores", help="teacher score file from 'distilrank score' (default: score into OUTPUT)")
    p.add_argument("--qrels", help="labels (needed by the fine-tune procedures; optional label loss otherwise)")
    p.add_argument("--init-from", default=DistillConfig.init_from,
                   help="student weights: base (layers of the pretrained encoder, default), teacher (layers of the "
                        "fine-tuned teacher), random, or a model folder")
    p.add_argument("--head", choices=HEADS, default=DistillConfig.head,
                   help="the student's ranking head: cls (the [CLS] pooler) or mean (the mean of the tokens' last "
                        "hidden states; saved as a config flag that CrossEncoder reads) (default %(default)s)")
    p.add_argument("--base", help="the pretrained encoder (LM-distillation teacher); default: the teacher's init")
    p.add_argument("--objective", choices=("kl", "margin-mse", "mse"), default=DistillConfig.objective)
    p.add_argument("--temperature", type=float, default=DistillConfig.temperature,
                   help="the student's softmax temperature, kl (default %(default)s)")
    p.add_argument("--teacher-temperature", type=float, default=DistillConfig.teacher_temperature,
                   help="the teacher's softmax temperature, kl (default: --temperature); e.g. 0.1 for cosine scores")
    p.add_argument("--random-negatives", type=int, default=DistillConfig.random_negatives,
                   help="K members of each group drawn from teacher-scored random passages of the collection (needs a "
                        "score file from 'score --random-negatives K' or more; default %(default)s)")
    p.add_argument("--label-weight", type=float, default=DistillConfig.label_weight,
                   help="weight of a label loss added to distillation")
    p.add_argument("--hidden-weight", type=float, default=DistillConfig.hidden_weight,
                   help="lm-distill+ranker-distill: weight of hidden-state matching to the teacher on ranking pairs")
    p.add_argument("--group-size", type=int, default=DistillConfig.group_size,
                   help="candidates per ranker-distillation group (default %(default)s)")
    p.add_argument("--negatives", type=int, default=DistillConfig.negatives,
                   help="fine-tune procedures: hard negatives per group (default %(default)s)")
    p.add_argument("--negatives-depth", type=int, default=DistillConfig.negatives_depth,
                   help="fine-tune procedures: negatives come from the run's top-K (default %(default)s)")
    p.add_argument("--score-depth", "--depth", type=int, default=DistillConfig.score_depth,
                   help="candidates per query the teacher scores, and the top-K of --scores' lists that groups come "
                   "from; LM-distillation pairs come from the same top-K (default %(default)s)")
    p.add_argument("--lm-epochs", type=int, default=LM_TRAINING.epochs, help="default %(default)s")
    p.add_argument("--lm-lr", type=float, default=LM_TRAINING.lr, help="default %(default)s")
    p.add_argument("--lm-batch-size", type=int, default=LM_TRAINING.batch_size,
                   help="pairs per LM-distillation step (default %(default)s)")
    p.add_argument("--lm-max-steps", type=int, default=None)
    p.add_argument("--lm-pairs-per-query", type=int, default=DistillConfig.lm_pairs_per_query,
                   help="default %(default)s")
    p.add_argument("--attention-weight", type=float, default=DistillConfig.attention_weight, help="default %(default)s")
    _training(p, RANK_TRAINING, RANK_TRAINING.lr, "%(default)s")
    _common(p)
    _bootstrap_args(p, "the student")
    p.set_defaults(func=cmd_distill)
