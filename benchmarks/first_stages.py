"""BM25, dense and hybrid first stages on the MS MARCO subset with the TREC DL 2020 queries, and a reranker over each.

For each first stage (BM25 with the MS MARCO parameters; dense: the MiniLM bi-encoder, exact faiss search;
hybrid: Pyserini's normalised interpolation with alpha = 1 and reciprocal rank fusion with k = 60, each fusing
both retrievers' top 1000): R(rel=2)@100, R(rel=2)@1000 and nDCG@10 over the 54 judged DL20 queries, and the
nDCG@10 of a reranker over each one's top 100, with Judged@10 (the share of each top 10 that is judged) and
the reranked nDCG@10 on judged passages only (condensed lists, ``pipeline.eval.evaluate.judged_only``): a reranker
that lifts passages outside the TREC judgment pool is counted wrong for them by plain nDCG. ``--qids``: only some of the
queries, e.g. ``configs/dl20-heldout.qids`` for a teacher trained on the other half. The reranker is ``--teacher`` (a
cross-encoder folder), or, when none is given, the zero-shot MiniLM bi-encoder (the same model as the dense
stage, scoring with the dense index's stored passage embeddings: over the dense stage's own candidates it can
only reproduce the dense ranking).
Paired t-tests (and randomisation tests) of each stage against BM25 on the same queries.

Needs the subset's Lucene index (``--index``; built there from the collection when missing, Java needed) and its
dense index (``--dense``, from ``distilrank encode``).

    python benchmarks/first_stages.py --index indexes/msmarco-subset --dense indexes/msmarco-subset.minilm \\
        --out benchmarks/results/first_stages_dl20.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import ROOT, SUBSET, cpu_description, write_results

from pipeline.eval.evaluate import evaluate_per_query, judged_only
from pipeline.eval.significance import compare
from pipeline.io.data import DocStore, read_qids, read_qrels, read_topics

MEASURES = ["R(rel=2)@100", "R(rel=2)@1000", "nDCG@10", "Judged@10"]
RERANKED = ["reranked nDCG@10", "reranked Judged@10", "reranked nDCG@10, judged only"]
HITS, DEPTH = 1000, 100


def first_stage_runs(index: Path, dense: Path, topics: dict[str, str], threads: int) -> dict:
    """Each first stage's run over ``topics`` and its seconds."""
    from pipeline.defaults import MSMARCO_B, MSMARCO_K1
    from pipeline.retrieval.bm25 import build_index
    from pipeline.retrieval.factory import open_bm25, open_dense
    from pipeline.retrieval.fusion import Hybrid

    if not index.is_dir():
        build_index(SUBSET / "collection.tsv", index, threads=threads)
    bm25 = open_bm25(index, k1=MSMARCO_K1, b=MSMARCO_B)
    dense_stage = open_dense(dense, faiss="flat", device="cpu")
    runs, seconds = {}, {}
    for name, stage in (("BM25", bm25), ("dense", dense_stage)):
        start = time.perf_counter()
        runs[name] = stage.batch_search(topics, k=HITS, threads=threads, progress=False)
        seconds[name] = time.perf_counter() - start
    for name, fusion in (("hybrid (interpolation)", "interpolation"), ("hybrid (RRF)", "rrf")):
        start = time.perf_counter()
        runs[name] = Hybrid(bm25, dense_stage, fusion=fusion).fuse_runs(runs["BM25"], runs["dense"], list(topics), HITS)
        seconds[name] = seconds["BM25"] + seconds["dense"] + time.perf_counter() - start
    return {"runs": runs, "seconds": seconds, "dense": dense_stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "msmarco-subset")
    parser.add_argument("--dense", type=Path, default=ROOT / "indexes" / "msmarco-subset.minilm")
    parser.add_argument("--teacher", type=Path, default=None, help="a cross-encoder folder (default: the bi-encoder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="the teacher's device (default cpu)")
    parser.add_argument("--machine", default=cpu_description())
    parser.add_argument("--qids", type=Path, default=None,
                        help="only these judged queries (e.g. configs/dl20-heldout.qids when the teacher trained on "
                        "the other half)")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON (and a .md table beside)")
    args = parser.parse_args()

    topics = read_topics(SUBSET / "queries.dl20.tsv")
    qrels = read_qrels(SUBSET / "qrels.dl20.tsv", topics)
    if args.qids:
        keep = set(read_qids(args.qids))
        qrels = {q: judged for q, judged in qrels.items() if q in keep}
    topics = {q: t for q, t in topics.items() if q in qrels}
    made = first_stage_runs(args.index, args.dense, topics, args.threads)
    docstore = DocStore(SUBSET / "collection.tsv")
    if args.teacher:
        from pipeline.rerank.cross_encoder import CrossEncoder
        from pipeline.rerank.stage import Reranker

        ranker, reranker = Reranker(CrossEncoder(args.teacher, device=args.device)), f"teacher `{args.teacher.name}`"
    else:
        ranker = made["dense"]  # the bi-encoder's cosine with the stored fp16 passage embeddings
        reranker = "zero-shot MiniLM bi-encoder (no trained teacher), scoring with the stored passage embeddings"
    rows, per_query = {}, {}
    for name, run in made["runs"].items():
        scores = evaluate_per_query(run, qrels, MEASURES)
        start = time.perf_counter()
        reranked = ranker.rerank(run, topics, docstore, depth=DEPTH)[0]
        rerank_s = time.perf_counter() - start
        plain = evaluate_per_query(reranked, qrels, ["nDCG@10", "Judged@10"])
        condensed = evaluate_per_query(judged_only(reranked, qrels), qrels, ["nDCG@10"])
        scores.update(zip(RERANKED, (plain["nDCG@10"], plain["Judged@10"], condensed["nDCG@10"]), strict=True))
        per_query[name] = scores
        rows[name] = {m: sum(v.values()) / len(v) for m, v in scores.items()}
        rows[name].update(first_stage_s=made["seconds"][name], rerank_s=rerank_s)
        print(name, {k: round(v, 4) for k, v in rows[name].items()})
    tests = {name: {m: compare(per_query[name][m], per_query["BM25"][m]).as_dict() for m in per_query[name]}
             for name in per_query if name != "BM25"}
    results = {"meta": {"machine": args.machine, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "queries": len(topics), "reranker": reranker, "hits": HITS, "depth": DEPTH},
               "rows": rows, "vs_bm25": tests}
    text = markdown(results)
    print(text)
    if args.out:
        write_results(args.out, results, text)


def markdown(results: dict) -> str:
    meta = results["meta"]
    columns = [*MEASURES, *RERANKED]
    lines = [f"# First stages on the MS MARCO subset, TREC DL 2020 ({meta['machine']}, {meta['date']})", "",
             f"{meta['queries']} judged queries; each stage's top {meta['hits']}; reranker over each top "
             f"{meta['depth']}: {meta['reranker']}. p: paired t-test against BM25 (randomisation test in the JSON).",
             "", "| first stage | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, row in results["rows"].items():
        cells = []
        for m in columns:
            cell = f"{row[m]:.4f}"
            if name in results["vs_bm25"]:
                test = results["vs_bm25"][name][m]
                p = test["p_ttest"]
                cell += f" ({test['delta']:+.4f}, " + ("p<0.001)" if p < 0.001 else f"p={p:.3f})")
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
