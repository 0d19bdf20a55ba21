"""int8 on the CPU: what it costs in effectiveness and what it gains in speed, measured in one run.

A cross-encoder reranks the BM25 top ``--depth`` of the held-out half of TREC DL 2020
(``configs/dl20-heldout.qids``) in fp32 and in int8 (``--precision int8``: PyTorch's dynamic quantization of
its linear layers), both through the rerank stage with the token cache, in interleaved rounds (each round, a
block of queries, goes through both precisions in a rotating order). Reported: nDCG@10 of each and of BM25
(target: int8 within 0.005 of fp32), the paired t-test between them, how closely int8 follows fp32 (per
query: Spearman correlation of the two precisions' scores over the reranked candidates, overlap of their top
10), and the speedup of int8 over fp32 per round (median and interval, ``pipeline.eval.speedups``; target >= 1.5x).

    python benchmarks/int8_cost.py --model models/subset-teacher --run runs/dl20.bm25.trec \\
        --out benchmarks/results/int8_cpu.md

Inputs are files (``--data``: the subset folder with collection.tsv, queries.dl20.tsv, qrels.dl20.tsv); the
BM25 run comes from ``distilrank retrieve`` (MS MARCO-tuned BM25 on the subset index).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from common import HELDOUT_QIDS, SUBSET, device_description

from pipeline.eval.evaluate import evaluate_per_query, mean_scores
from pipeline.eval.significance import compare
from pipeline.eval.speedups import speedup
from pipeline.io.data import DocStore, read_qids, read_qrels, read_topics
from pipeline.io.runs import Run
from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.stage import Reranker
from pipeline.runtime.atomic import atomic_write

MEASURE = "nDCG@10"


def agreement(a: dict, b: dict, depth: int) -> tuple[float, float]:
    """Mean over queries of the Spearman correlation of two rankings' scores over their reranked top ``depth``,
    and of the overlap of their top 10."""
    from scipy.stats import spearmanr

    rhos, overlaps = [], []
    for qid, ranking in a.items():
        scores_a = {d: s for d, s in ranking[:depth]}
        scores_b = {d: s for d, s in b[qid][:depth]}
        docids = sorted(scores_a)
        rhos.append(spearmanr([scores_a[d] for d in docids], [scores_b[d] for d in docids]).statistic)
        overlaps.append(len({d for d, _ in ranking[:10]} & {d for d, _ in b[qid][:10]}) / 10)
    return sum(rhos) / len(rhos), sum(overlaps) / len(overlaps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the cross-encoder folder (e.g. the MiniLM teacher)")
    parser.add_argument("--run", type=Path, required=True, help="BM25 run of the DL20 queries (TREC)")
    parser.add_argument("--data", type=Path, default=SUBSET, help="folder with collection.tsv and the DL20 files")
    parser.add_argument("--qids", type=Path, default=HELDOUT_QIDS)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--round-queries", type=int, default=3, help="queries per interleaved round (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown)")
    args = parser.parse_args(argv)

    qids = read_qids(args.qids)
    topics = read_topics(args.data / "queries.dl20.tsv")
    qrels = read_qrels(args.data / "qrels.dl20.tsv")
    qrels = {q: qrels[q] for q in qids if q in qrels}
    candidates = Run.read(args.run).subset(qids)
    store = DocStore(args.data / "collection.tsv")
    fp32 = CrossEncoder(args.model, device="cpu")
    int8 = CrossEncoder(args.model, device="cpu", precision="int8")
    cache = fp32.passage_cache(store)
    rerankers = {"fp32": Reranker(fp32, token_cache=cache), "int8": Reranker(int8, token_cache=cache)}
    warm = candidates.subset(list(candidates)[:1])
    for reranker in rerankers.values():
        reranker.rerank(warm, topics, store, args.depth)
    order = list(candidates)
    rounds = [order[i : i + args.round_queries] for i in range(0, len(order), args.round_queries)]
    rankings: dict[str, dict] = {name: {} for name in rerankers}
    parts: dict[str, list] = {name: [] for name in rerankers}
    started = time.time()
    for r, block in enumerate(rounds):
        names = list(rerankers)[r % 2:] + list(rerankers)[: r % 2]
        for name in names:
            run, timing = rerankers[name].rerank(candidates.subset(block), topics, store, args.depth)
            rankings[name].update(run.rankings)
            parts[name].append(timing)
        print(f"round {r + 1}/{len(rounds)}: " + ", ".join(f"{n} {parts[n][-1].pairs_per_s:.1f} pairs/s"
                                                          for n in rerankers), flush=True)
    per_query = {"bm25": evaluate_per_query(candidates, qrels, [MEASURE])[MEASURE]}
    for name in rerankers:
        per_query[name] = evaluate_per_query(Run(rankings[name], name), qrels, [MEASURE])[MEASURE]
    means = {name: mean_scores({MEASURE: values})[MEASURE] for name, values in per_query.items()}
    test = compare(per_query["int8"], per_query["fp32"], permutations=10000, seed=0)
    ratio = speedup([t.pairs for t in parts["int8"]], [t.wall_s for t in parts["int8"]],
                    [t.pairs for t in parts["fp32"]], [t.wall_s for t in parts["fp32"]])
    rate = {name: sum(t.pairs for t in parts[name]) / sum(t.wall_s for t in parts[name]) for name in rerankers}
    delta = means["int8"] - means["fp32"]
    rho, overlap = agreement(rankings["fp32"], rankings["int8"], args.depth)
    lines = [
        f"# int8 vs fp32 on the CPU ({platform.node()}, {device_description('cpu')}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
        f"Model: `{args.model}`; BM25 top {args.depth} of {len(qrels)} judged queries of `{args.qids.name}` "
        f"({len(candidates)} in the run); {len(rounds)} interleaved rounds of {args.round_queries} queries; "
        f"passages from the token cache; load average {os.getloadavg()[0]:.1f} at the end.", "",
        f"| system | {MEASURE} | pairs/s (pooled) |", "|---|---:|---:|",
        f"| BM25 | {means['bm25']:.4f} | |",
        f"| fp32 | {means['fp32']:.4f} | {rate['fp32']:.1f} |",
        f"| int8 | {means['int8']:.4f} | {rate['int8']:.1f} |", "",
        f"- {MEASURE}: int8 - fp32 = {delta:+.4f} (target: within 0.005; paired t-test p = {test.p_ttest:.3f}, "
        f"randomisation p = {test.p_randomisation:.3f}).",
        f"- int8 against fp32, per query (mean): Spearman correlation of the scores {rho:.4f}, top-10 overlap "
        f"{overlap:.1%}.",
        f"- Speedup of int8 over fp32: {ratio} (target >= 1.5x).",
        f"- Wall time {time.time() - started:.0f} s.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with atomic_write(args.out) as out:
            out.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
