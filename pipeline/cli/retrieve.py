"""``distilrank index``, ``distilrank retrieve`` and ``distilrank evaluate``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..defaults import DEFAULT_B, DEFAULT_HITS, DEFAULT_K1, MSMARCO_B, MSMARCO_K1
from ..errors import InputError
from ..eval.evaluate import BINARY_MEASURES, GRADED_MEASURES, evaluate_per_query, judged_only, mean_scores
from ..io.data import read_qrels, read_topics
from ..io.runs import Run
from ..retrieval.bm25 import bm25_parameters, build_index
from ..retrieval.faiss_index import KINDS as FAISS_KINDS
from ..retrieval.fusion import DEFAULT_FUSION_WEIGHT, DEFAULT_RRF_K, FUSIONS
from ..runtime.atomic import is_stdout
from ..runtime.outputs import claim_output, named_inputs
from .flags import refuse

log = logging.getLogger(__name__)
EXAMPLE_INDEX = "distilrank index --collection collection.tsv --index indexes/msmarco-subset --threads 2"
EXAMPLE_RETRIEVE = ("distilrank retrieve --index indexes/msmarco-subset --topics queries.dl20.tsv "
                    "--output runs/dl20.bm25.trec --hits 1000")
EXAMPLE_DENSE = ("distilrank retrieve --dense indexes/msmarco-subset.minilm --topics queries.dl20.tsv "
                 "--output runs/dl20.dense.trec")
EXAMPLE_HYBRID = ("distilrank retrieve --hybrid --index indexes/msmarco-subset --dense indexes/msmarco-subset.minilm "
                  "--topics queries.dl20.tsv --output runs/dl20.hybrid.trec --msmarco-tuned --fusion rrf")
EXAMPLE_EVALUATE = ("distilrank evaluate --run runs/dl20.bm25.trec --qrels qrels.dl20.tsv "
                    "--metrics nDCG@10 'RR(rel=2)@10'")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index", help="build a Lucene index from a collection",
        description="Build a Lucene index (Pyserini) from an MS MARCO collection.tsv (pid<TAB>passage), a JSONL file "
        'or a folder of JSONL files ({"id": ..., "contents": ...}). The raw text is stored so the index can also '
        "serve passages to the rerankers.", epilog=f"example: {EXAMPLE_INDEX}")
    p.add_argument("--collection", required=True, help="collection.tsv, a .jsonl file or a folder of .jsonl files")
    p.add_argument("--index", required=True, help="output index directory (e.g. indexes/NAME)")
    p.add_argument("--threads", type=int, default=1, help="indexing threads (default 1)")
    p.add_argument("--force", action="store_true", help="rebuild if the index directory exists")
    p.set_defaults(func=_index)

    p = subparsers.add_parser(
        "retrieve", help="first-stage retrieval (BM25, dense or hybrid) into a run file",
        description="Search every query of a topics file with BM25 over a Lucene index (--index or --prebuilt), "
        "with a bi-encoder over a dense index (--dense, made by 'distilrank encode'), or with both fused "
        "(--hybrid: normalised interpolation as Pyserini's HybridSearcher, or reciprocal rank fusion); writes a "
        "TREC (qid Q0 docid rank score tag) or MS MARCO (qid<TAB>docid<TAB>rank) run.",
        epilog=f"example: {EXAMPLE_RETRIEVE}\nexample (dense): {EXAMPLE_DENSE}\nexample (hybrid): {EXAMPLE_HYBRID}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--index", help="a Lucene index directory built by 'distilrank index'")
    source.add_argument("--prebuilt", metavar="NAME",
                        help="a Pyserini prebuilt index, e.g. msmarco-v1-passage (downloads; online only)")
    dense = p.add_argument_group("dense and hybrid retrieval")
    dense.add_argument("--dense", metavar="INDEX", help="a dense index folder ('distilrank encode'), or a Pyserini "
                       "prebuilt dense index name (online only); alone: dense retrieval")
    dense.add_argument("--hybrid", action="store_true", help="fuse BM25 (--index/--prebuilt) and dense (--dense)")
    dense.add_argument("--encoder", metavar="MODEL", help="the query encoder: the bi-encoder the index was encoded "
                       "with (default: the one recorded in it), or a Pyserini encoder name for a prebuilt index")
    dense.add_argument("--faiss", choices=FAISS_KINDS, default=None,
                       help="which faiss index of the folder to search (default: the first built of "
                       f"{', '.join(FAISS_KINDS)}; none built: exact search)")
    dense.add_argument("--ef-search", type=int, default=None, help="HNSW search candidates (default: as built)")
    dense.add_argument("--nprobe", type=int, default=None, help="IVF lists searched (default: as built)")
    dense.add_argument("--refine", type=int, default=None, metavar="FACTOR",
                       help="re-score the top hits x FACTOR exactly with the stored embeddings, for IVF-PQ "
                       "(default: as built)")
    dense.add_argument("--fusion", choices=FUSIONS, default=FUSIONS[0],
                       help="hybrid fusion (default interpolation: W x BM25 + dense, each normalised)")
    dense.add_argument("--fusion-weight", type=float, default=DEFAULT_FUSION_WEIGHT, metavar="W",
                       help=f"interpolation: the weight W of BM25's normalised score against the dense one's "
                       f"(default {DEFAULT_FUSION_WEIGHT:g}: equal weights)")
    refuse(p, "--alpha", "--fusion-weight")
    dense.add_argument("--rrf-k", type=int, default=DEFAULT_RRF_K, help=f"RRF constant (default {DEFAULT_RRF_K})")
    dense.add_argument("--fusion-depth", type=int, default=None,
                       help="hits of each retriever that are fused (default: --hits)")
    dense.add_argument("--device", default="auto", help="query encoder device: auto, cpu, cuda or cuda:N")
    p.add_argument("--topics", required=True, help="topics TSV (qid<TAB>query) or a Pyserini name such as dl20-passage")
    p.add_argument("--output", required=True, help="run file to write")
    p.add_argument("--hits", type=int, default=DEFAULT_HITS, help="depth k per query (default %(default)s)")
    p.add_argument("--k1", type=float, default=None, help=f"BM25 k1 (default {DEFAULT_K1}, Pyserini's)")
    p.add_argument("--b", type=float, default=None, help=f"BM25 b (default {DEFAULT_B}, Pyserini's)")
    p.add_argument("--msmarco-tuned", action="store_true",
                   help=f"use the MS MARCO tuned parameters k1={MSMARCO_K1}, b={MSMARCO_B}")
    p.add_argument("--threads", type=int, default=1, help="search threads (default 1)")
    p.add_argument("--format", choices=("trec", "msmarco"), default="trec", help="output format (default trec)")
    p.add_argument("--tag", default=None, help="run tag in the TREC output (default bm25, dense or hybrid)")
    p.set_defaults(func=_retrieve)

    p = subparsers.add_parser(
        "evaluate", help="evaluate a run against qrels with ir-measures",
        description="Aggregate (or per-query) effectiveness of a run with ir-measures. Queries of the qrels missing "
        f"from the run count as 0. Default measures: {' '.join(BINARY_MEASURES)} for binary qrels; "
        f"{' '.join(GRADED_MEASURES)} for graded (TREC DL) qrels.", epilog=f"example: {EXAMPLE_EVALUATE}")
    p.add_argument("--run", required=True, help="run file (TREC or MS MARCO format)")
    p.add_argument("--qrels", required=True, help="TREC qrels file or a Pyserini name such as dl20-passage")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="ir-measures names, e.g. nDCG@10 RR@10 'RR(rel=2)@10' R@1000")
    p.add_argument("--json", action="store_true", help="print one JSON object {measure: value} on stdout")
    p.add_argument("--per-query", action="store_true", help="also print each query's values")
    p.add_argument("-J", "--judged-only", action="store_true",
                   help="evaluate on judged passages only, the run's unjudged ones removed (condensed lists, as "
                   "trec_eval -J): where judgments are incomplete, an optimistic reading beside the plain one")
    p.set_defaults(func=_evaluate)


def _index(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise InputError("--threads must be at least 1")
    with claim_output(args.index, named_inputs(args, "collection"), folder=True, replaces=True):
        path = build_index(args.collection, args.index, threads=args.threads, force=args.force)
    print(f"index written to {path}")
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    from ..retrieval.factory import open_retriever

    if args.hits < 1:
        raise InputError("--hits must be at least 1")
    if args.threads < 1:
        raise InputError("--threads must be at least 1")
    kind = "hybrid" if args.hybrid else "dense" if args.dense else "bm25"
    if kind != "dense" and not (args.index or args.prebuilt):
        raise InputError(f"{'--hybrid' if args.hybrid else 'BM25'} needs --index or --prebuilt")
    with claim_output(args.output, named_inputs(args, "topics", "index", "dense", "encoder")):
        topics = read_topics(args.topics)  # before the index: bad topics fail fast
        k1, b = bm25_parameters(args.k1, args.b, args.msmarco_tuned)
        retriever = open_retriever(kind, index=args.index, prebuilt=args.prebuilt, k1=k1, b=b, dense=args.dense,
                                   encoder=args.encoder, faiss=args.faiss, ef_search=args.ef_search,
                                   nprobe=args.nprobe, refine=args.refine, device=args.device, fusion=args.fusion,
                                   fusion_weight=args.fusion_weight, rrf_k=args.rrf_k, depth=args.fusion_depth)
        run = retriever.batch_search(topics, k=args.hits, threads=args.threads)
        run.write(args.output, fmt=args.format, tag=args.tag or kind)
    print(f"{len(run)} queries, {run.num_pairs} hits written to {args.output}",
          file=sys.stderr if is_stdout(args.output) else sys.stdout)  # stdout carries the run itself
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    qrels = read_qrels(args.qrels)
    run = judged_only(Run.read(args.run), qrels) if args.judged_only else Run.read(args.run)
    per_query = evaluate_per_query(run, qrels, args.metrics)
    means = mean_scores(per_query)
    absent = sum(1 for qid in qrels if qid not in run)
    if absent:
        log.warning("%d judged queries are absent from the run and count as 0", absent)
    if args.json:
        print(json.dumps(means))
        return 0
    if args.per_query:
        for name, values in per_query.items():
            for qid, value in values.items():
                print(f"{name}\t{qid}\t{value:.4f}")
    width = max(len(n) for n in means)
    for name, value in means.items():
        print(f"{name:<{width}}  {value:.4f}")
    print(f"({len(qrels)} judged queries; {len(set(run) & set(qrels))} of them ranked in {Path(args.run).name})")
    return 0
