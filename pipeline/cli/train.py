"""``distilrank train``, ``distilrank score`` and ``distilrank distill``: thin wrappers over
``pipeline.train.recipes``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def _lrs(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated learning rates, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"learning rates must be positive, got {text!r}")
    return values


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                   help="autocast precision (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--seed", type=int, default=42)


def _training(p: argparse.ArgumentParser, epochs: int, lr: float | None, batch: int) -> None:
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (per phase)")
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (linear warmup, then linear decay)")
    p.add_argument("--batch-size", type=int, default=batch, help="groups per optimizer step")
    p.add_argument("--accumulation", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps with linear warmup")
    p.add_argument("--max-length", type=int, default=256, help="tokens per (query, passage) pair")
    p.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps (and each epoch)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config(args, lr: float, **overrides):
    from ..train.trainer import TrainConfig

    values = dict(epochs=args.epochs, batch_size=args.batch_size, accumulation=args.accumulation, lr=lr,
                  warmup=args.warmup, max_steps=args.max_steps, precision=args.precision, seed=args.seed,
                  save_every=args.save_every, progress=False if args.no_progress else None)
    values.update(overrides)
    return TrainConfig(**values)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def cmd_train(args) -> int:
    from ..train.recipes import BootstrapConfig, Inputs, train_teacher

    _quiet_transformers()
    boot = [args.bootstrap_from, args.bootstrap_topics, args.bootstrap_run]
    if any(boot) and not all(boot):
        raise InputError("--bootstrap-from, --bootstrap-topics and --bootstrap-run go together")
    bootstrap = None
    if all(boot):
        bootstrap = BootstrapConfig(Path(args.bootstrap_from), Path(args.bootstrap_topics), Path(args.bootstrap_run),
                                    depth=args.bootstrap_depth, group_size=args.bootstrap_group_size,
                                    teacher_temperature=args.bootstrap_temperature)
        bootstrap.train = _config(args, args.bootstrap_lrs[0], epochs=args.bootstrap_epochs,
                                  batch_size=args.bootstrap_batch_size, epoch_lrs=args.bootstrap_lrs, warmup=0.05,
                                  max_steps=args.bootstrap_max_steps or args.max_steps)
    lr = args.lr if args.lr is not None else (1e-5 if bootstrap else 3e-5)
    inputs = Inputs.load(args.topics, args.run, args.collection, args.qrels, exclude_qids=args.exclude_qids)
    train_teacher(args.init, inputs, args.output, _config(args, lr), negatives=args.negatives, depth=args.depth,
                  short=args.short, device=args.device, resume=args.resume, bootstrap=bootstrap,
                  max_length=args.max_length)
    print(f"teacher saved in {args.output}")
    return 0


def cmd_score(args) -> int:
    from ..train.recipes import Inputs, score_run

    _quiet_transformers()
    inputs = Inputs.load(args.topics, args.run, args.collection)
    header = score_run(args.model, inputs, args.output, args.depth, device=args.device, precision=args.precision,
                       batch_tokens=args.batch_tokens)
    print(f"wrote {header['pairs']} scores for {header['queries']} queries to {args.output}")
    return 0


def cmd_distill(args) -> int:
    from ..train.recipes import DistillConfig, Inputs, distill

    _quiet_transformers()
    cfg = DistillConfig(
        procedure=args.procedure, layers=args.layers, init_from=args.init_from,
        base=Path(args.base) if args.base else None, objective=args.objective, temperature=args.temperature,
        label_weight=args.label_weight, hidden_weight=args.hidden_weight, group_size=args.group_size,
        negatives=args.negatives, depth=args.depth, lm_pairs_per_query=args.lm_pairs_per_query,
        attention_weight=args.attention_weight, max_length=args.max_length,
        rank=_config(args, args.lr),
        lm=_config(args, args.lm_lr, epochs=args.lm_epochs, batch_size=args.lm_batch_size,
                   max_steps=args.lm_max_steps or args.max_steps))
    inputs = Inputs.load(args.topics, args.run, args.collection, args.qrels)
    distill(args.teacher, inputs, args.output, cfg, scores=args.scores, device=args.device, resume=args.resume)
    print(f"student saved in {args.output}")
    return 0


def register(subparsers) -> None:
    from ..train import PROCEDURES

    p = subparsers.add_parser("train", help="fine-tune a teacher cross-encoder (LCE), optionally bootstrapped "
                              "from a bi-encoder on unlabeled queries")
    p.add_argument("--init", required=True, help="pretrained encoder folder (any BERT-family model)")
    p.add_argument("--topics", required=True)
    p.add_argument("--qrels", required=True)
    p.add_argument("--run", required=True, help="BM25 candidates to mine hard negatives from")
    p.add_argument("--collection", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--negatives", type=int, default=7, help="hard negatives per group (default 7)")
    p.add_argument("--depth", type=int, default=100, help="negatives come from the run's top-K (default 100)")
    p.add_argument("--exclude-qids", help="leave these queries out of training (ids one a line, or a TSV), "
                   "e.g. configs/dl20-heldout.qids")
    p.add_argument("--short", choices=("pad", "drop"), default="pad",
                   help="too few negatives in the top-K: pad from deeper candidates (default) or drop the group")
    _training(p, epochs=1, lr=None, batch=16)
    _common(p)
    g = p.add_argument_group("bootstrap from a bi-encoder (scarce labels)")
    g.add_argument("--bootstrap-from", help="zero-shot bi-encoder folder (mean pooling, cosine)")
    g.add_argument("--bootstrap-topics", help="unlabeled queries")
    g.add_argument("--bootstrap-run", help="their BM25 candidates")
    g.add_argument("--bootstrap-depth", type=int, default=30)
    g.add_argument("--bootstrap-group-size", type=int, default=16)
    g.add_argument("--bootstrap-batch-size", type=int, default=16)
    g.add_argument("--bootstrap-epochs", type=int, default=2)
    g.add_argument("--bootstrap-lrs", type=_lrs, default=(1.5e-4, 1e-4), help="peak lr per epoch (default 1.5e-4,1e-4)")
    g.add_argument("--bootstrap-temperature", type=float, default=0.1, help="teacher softmax temperature")
    g.add_argument("--bootstrap-max-steps", type=int, default=None)
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "score", help="write a teacher's scores for a run's candidate lists (for distillation)",
        description="Score the top --depth candidates of every query of a run with a teacher, once; every "
        "ranker-distill student reuses the file (it carries a fingerprint of the candidate lists, so a file made "
        "for another run is refused). No labels are needed: any queries will do.",
        epilog="example: distilrank score --model models/subset-teacher --run runs/dev.bm25.trec "
        "--topics queries.dev.small.tsv --collection collection.tsv --output runs/dev.teacher.scores --depth 30")
    p.add_argument("--model", required=True, help="the teacher: a cross-encoder folder or hub name")
    p.add_argument("--run", required=True, help="candidate lists (TREC or MS MARCO run, e.g. BM25)")
    p.add_argument("--topics", required=True, help="topics TSV with the run's queries")
    p.add_argument("--collection", required=True, help="collection.tsv or JSONL with the passages")
    p.add_argument("--output", required=True, help="score file to write")
    p.add_argument("--depth", type=int, default=100, help="candidates scored per query (default 100)")
    p.add_argument("--batch-tokens", type=int, default=None, help="engine token budget per batch")
    _common(p)
    p.set_defaults(func=cmd_score)

    p = subparsers.add_parser("distill", help="distil a student from a teacher by one of the four procedures")
    p.add_argument("--procedure", required=True, choices=PROCEDURES)
    p.add_argument("--teacher", required=True)
    p.add_argument("--layers", type=int, required=True, help="student layers (evenly spaced copy)")
    p.add_argument("--output", required=True)
    p.add_argument("--topics", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--scores", help="teacher score file from 'distilrank score' (default: score into OUTPUT)")
    p.add_argument("--qrels", help="labels (needed by the fine-tune procedures; optional label loss otherwise)")
    p.add_argument("--init-from", default="base",
                   help="student weights: base (layers of the pretrained encoder, default), teacher (layers of the "
                        "fine-tuned teacher), random, or a model folder")
    p.add_argument("--base", help="the pretrained encoder (LM-distillation teacher); default: the teacher's init")
    p.add_argument("--objective", choices=("kl", "margin-mse", "mse"), default="kl")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--label-weight", type=float, default=0.0, help="weight of a label loss added to distillation")
    p.add_argument("--hidden-weight", type=float, default=0.0,
                   help="lm-distill+ranker-distill: weight of hidden-state matching to the teacher on ranking pairs")
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--negatives", type=int, default=7)
    p.add_argument("--depth", type=int, default=30, help="candidates per query the teacher scores (default 30)")
    p.add_argument("--lm-epochs", type=int, default=1)
    p.add_argument("--lm-lr", type=float, default=3e-4)
    p.add_argument("--lm-batch-size", type=int, default=64, help="pairs per LM-distillation step")
    p.add_argument("--lm-max-steps", type=int, default=None)
    p.add_argument("--lm-pairs-per-query", type=int, default=8)
    p.add_argument("--attention-weight", type=float, default=1.0)
    _training(p, epochs=1, lr=1e-4, batch=16)
    _common(p)
    p.set_defaults(func=cmd_distill)
