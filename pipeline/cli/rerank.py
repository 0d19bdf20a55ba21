"""``distilrank rerank``: rerank a run file with a cross-encoder; timing JSON beside the output."""
from __future__ import annotations

import argparse
import sys

from ..defaults import MAX_LENGTH, RERANK_DEPTH, SEED
from ..errors import InputError
from ..rerank.options import RuntimeOptions, check_interpolation
from ..runtime.atomic import is_stdout
from ..runtime.journal import journal_files
from ..runtime.outputs import claim_output, named_inputs
from .flags import add_fields, field_values, refuse

EXAMPLE = ("distilrank rerank --run runs/dl20.bm25.trec --topics queries.dl20.tsv --collection collection.tsv "
           "--model models/teacher --depth 100 --output runs/dl20.teacher.trec")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rerank", help="rerank a run's top candidates with a cross-encoder",
        description="Score the top --depth candidates of every query of a run with a cross-encoder (any Hugging Face "
        "sequence-classification ranker: 1 logit, or 2 logits monoBERT style) and rank them by that score; the "
        "candidates below --depth follow in their first-stage order. Passage text comes from a collection file or "
        "a Lucene index with stored raw text. Writes the run and its timing (RUN.timing.json).",
        epilog=f"example: {EXAMPLE}")
    p.add_argument("--run", required=True, help="first-stage run (TREC or MS MARCO format)")
    p.add_argument("--model", required=True,
                   help="model folder, or a Hugging Face hub name (online, or already in the HF cache); a folder "
                   f"without a ranking head gets an untrained one, the same at every load (seed {SEED})")
    p.add_argument("--output", required=True, help="reranked run to write")
    p.add_argument("--topics", required=True, help="topics TSV (qid<TAB>query) with the text of the run's queries")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--collection", help="collection TSV (pid<TAB>passage) or JSONL with the passage text")
    source.add_argument("--index", help="a Lucene index with stored raw text (built by 'distilrank index')")
    p.add_argument("--depth", type=int, default=RERANK_DEPTH,
                   help="rerank depth: candidates reranked per query (default %(default)s)")
    p.add_argument("--chunk-pairs", type=int, default=None,
                   help="pairs tokenized and length-sorted together (default 4096 on CPU, 32768 on CUDA)")
    p.add_argument("--max-length", type=int, default=None,
                   help=f"tokens per pair (default: the model's saved setting, else {MAX_LENGTH})")
    p.add_argument("--interpolation", type=float, default=None, metavar="W",
                   help="the cross-encoder's weight W in W x cross-encoder + (1 - W) x first-stage score, both min-max "
                   "normalised per query; 1 is the cross-encoder alone, 0 the first stage (default: the raw "
                   "cross-encoder score)")
    refuse(p, "--alpha", "--interpolation")
    p.add_argument("--skip-missing", action="store_true",
                   help="drop candidates whose passage is missing or empty (counted) instead of failing")
    runtime_flags(p)
    p.add_argument("--format", choices=("trec", "msmarco"), default="trec", help="output format (default trec)")
    p.add_argument("--tag", default=None, help="run tag in the TREC output (default: the output file name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run from its journal (OUTPUT.journal, one per process under torchrun); "
                   "without a journal, start from the beginning")
    p.set_defaults(func=_rerank)


def runtime_flags(p: argparse.ArgumentParser) -> None:
    """The flags of how a ranker runs (``RuntimeOptions``: --device, --precision, --batch-tokens, --compile, ...),
    shared by the commands that score (rerank, score)."""
    add_fields(p.add_argument_group("how the ranker runs"), RuntimeOptions)


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    """The ``RuntimeOptions`` of ``runtime_flags``' flags (bad values: an ``InputError`` naming the flag)."""
    return RuntimeOptions(**field_values(RuntimeOptions, args))


def _rerank(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..eval.timing import timing_path
    from ..io.data import DocStore, read_topics
    from ..io.runs import Run
    from ..rerank.cross_encoder import CrossEncoder
    from ..rerank.stage import Reranker, check_inputs, rerank_file

    if args.depth < 1:
        raise InputError("--depth must be at least 1")
    check_interpolation(args.interpolation, "--interpolation")
    options = runtime_options(args)
    output = Path(args.output)
    timing_file = None if is_stdout(output) else timing_path(output)  # a run on stdout has its timing on stderr
    inputs = named_inputs(args, "run", "topics", "collection", "index", "model")
    with claim_output(output, inputs, also=[timing_file, *journal_files(output)] if timing_file else []):
        run = Run.read(args.run)
        topics = read_topics(args.topics)
        if args.collection:
            docstore = DocStore(args.collection)
        else:
            from ..retrieval.bm25 import IndexDocStore

            docstore = IndexDocStore.open(args.index)
        missing = check_inputs(run, topics, docstore, args.depth, args.skip_missing,  # before the model loads
                               hint=" (use --skip-missing to drop them)")
        encoder = CrossEncoder(args.model, max_length=args.max_length, **options.encoder_kwargs())
        reranker = Reranker.from_options(encoder, options, docstore, interpolation=args.interpolation,
                                         skip_missing=args.skip_missing, chunk_pairs=args.chunk_pairs,
                                         progress=False if args.no_progress else None)
        sources = {"run": args.run, "topics": args.topics, "passages": args.collection or args.index}
        timing = rerank_file(reranker, run, topics, docstore, output, args.depth, sources, resume=args.resume,
                             fmt=args.format, tag=args.tag, missing=missing)
    report = sys.stdout if timing_file else sys.stderr
    print(timing.summary(), file=report)
    print(f"{timing.queries + timing.extra['resumed_queries']} queries, {timing.extra['candidates']} candidates "
          f"written to {output}" + (f"; timing in {timing_file}" if timing_file else ""), file=report)
    return 0
