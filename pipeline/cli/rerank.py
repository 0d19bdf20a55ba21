"""``distilrank rerank``: rerank a run file with a cross-encoder; timing JSON beside the output."""
from __future__ import annotations

import argparse
import math
import sys

from ..defaults import MAX_LENGTH, RERANK_DEPTH
from ..errors import InputError
from ..runtime.atomic import is_stdout
from ..runtime.devices import PRECISIONS
from ..runtime.outputs import claim_output, named_inputs

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
                   help="model folder, or a Hugging Face hub name (online, or already in the HF cache)")
    p.add_argument("--output", required=True, help="reranked run to write")
    p.add_argument("--topics", required=True, help="topics TSV (qid<TAB>query) with the text of the run's queries")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--collection", help="collection TSV (pid<TAB>passage) or JSONL with the passage text")
    source.add_argument("--index", help="a Lucene index with stored raw text (built by 'distilrank index')")
    p.add_argument("--depth", type=int, default=RERANK_DEPTH,
                   help="rerank depth: candidates reranked per query (default %(default)s)")
    p.add_argument("--batch-tokens", type=int, default=None,
                   help="padded tokens per batch (default 4096 on CPU, 65536 x 768 / hidden size on CUDA)")
    p.add_argument("--chunk-pairs", type=int, default=None,
                   help="pairs tokenized and length-sorted together (default 4096 on CPU, 32768 on CUDA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default bf16 on CUDA, fp32 on CPU; int8 (CPU only): linear layers dynamically quantized")
    p.add_argument("--max-length", type=int, default=None,
                   help=f"tokens per pair (default: the model's saved setting, else {MAX_LENGTH})")
    p.add_argument("--interpolation", "--alpha", dest="interpolation", type=float, default=None,
                   help="the cross-encoder's weight W in W x cross-encoder + (1 - W) x first-stage score, both min-max "
                   "normalised per query; 1 is the cross-encoder alone, 0 the first stage (default: the raw "
                   "cross-encoder score). --alpha is the older name of this same option")
    p.add_argument("--skip-missing", action="store_true",
                   help="drop candidates whose passage is missing or empty (counted) instead of failing")
    speed_options(p)
    p.add_argument("--format", choices=("trec", "msmarco"), default="trec", help="output format (default trec)")
    p.add_argument("--tag", default=None, help="run tag in the TREC output (default: the output file name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run from its journal (OUTPUT.journal, one per process under torchrun); "
                   "without a journal, start from the beginning")
    p.set_defaults(func=_rerank)


def speed_options(p: argparse.ArgumentParser) -> None:
    """The options of how a ranker runs, shared by the commands that score (rerank, score)."""
    from ..rerank.attention import ATTENTION
    from ..runtime.devices import COMPILE_MODES

    p.add_argument("--no-token-cache", action="store_true",
                   help="tokenize passage text while scoring instead of reading token ids from the token cache "
                   "(built on first use per collection and tokenizer, see 'distilrank tokenize')")
    p.add_argument("--compile", nargs="?", const="dynamic", choices=COMPILE_MODES, default=None,
                   help="torch.compile the model: dynamic shapes (the default of --compile), or static ones "
                   "(with --bucket; one compilation per shape). Slow first batches")
    p.add_argument("--attention", choices=ATTENTION, default="sdpa",
                   help="sdpa (default), or sdpa-padded: heads zero-padded to a multiple of 8 so SDPA can use its "
                   "fused kernels (head size 26 of 4L-312 models); same scores")
    p.add_argument("--bucket", type=int, default=None,
                   help="static batch shapes: lengths rounded up to this multiple, rows to a power of two (for "
                   "--cuda-graphs and --compile static)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay each batch shape from a CUDA graph (CUDA; implies --bucket 32 unless given)")


def open_token_cache(args: argparse.Namespace, encoder, docstore):
    """The token cache ``encoder`` uses on ``docstore`` (built when absent), or None with --no-token-cache."""
    return None if args.no_token_cache else encoder.passage_cache(docstore, progress=None)


def _rerank(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..eval.timing import timing_path
    from ..io.data import DocStore, read_topics
    from ..io.runs import Run
    from ..rerank.cross_encoder import CrossEncoder
    from ..rerank.stage import Reranker, check_inputs, rerank_file

    if args.depth < 1:
        raise InputError("--depth must be at least 1")
    if args.interpolation is not None and not (math.isfinite(args.interpolation) and 0.0 <= args.interpolation <= 1.0):
        raise InputError("--interpolation must be between 0 and 1")
    if args.batch_tokens is not None and args.batch_tokens < 1:
        raise InputError("--batch-tokens must be positive")
    output = Path(args.output)
    timing_file = None if is_stdout(output) else timing_path(output)  # a run on stdout has its timing on stderr
    inputs = named_inputs(args, "run", "topics", "collection", "index", "model")
    with claim_output(output, inputs, also=[timing_file] if timing_file else []):
        run = Run.read(args.run)
        topics = read_topics(args.topics)
        if args.collection:
            docstore = DocStore(args.collection)
        else:
            from ..retrieval.bm25 import IndexDocStore

            docstore = IndexDocStore.open(args.index)
        missing = check_inputs(run, topics, docstore, args.depth, args.skip_missing,  # before the model loads
                               hint=" (use --skip-missing to drop them)")
        encoder = CrossEncoder(args.model, device=args.device, precision=args.precision, max_length=args.max_length,
                               compile=args.compile, attention=args.attention)
        reranker = Reranker(encoder, args.interpolation, args.skip_missing, args.batch_tokens, args.chunk_pairs,
                            progress=False if args.no_progress else None,
                            token_cache=open_token_cache(args, encoder, docstore), bucket=args.bucket,
                            cuda_graphs=args.cuda_graphs)
        sources = {"run": args.run, "topics": args.topics, "passages": args.collection or args.index}
        timing = rerank_file(reranker, run, topics, docstore, output, args.depth, sources, resume=args.resume,
                             fmt=args.format, tag=args.tag, missing=missing)
    report = sys.stdout if timing_file else sys.stderr
    print(timing.summary(), file=report)
    print(f"{timing.queries + timing.extra['resumed_queries']} queries, {timing.extra['candidates']} candidates "
          f"written to {output}" + (f"; timing in {timing_file}" if timing_file else ""), file=report)
    return 0
