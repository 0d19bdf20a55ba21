"""What weighing each reranker against BM25 (``rerank --interpolation W``) buys, with W chosen on other queries.

For each model (``--model NAME=FOLDER``): its raw scores of the BM25 top ``--depth`` of the subset's judged TREC
DL 2020 queries, then the interpolation ``W x ce + (1 - W) x bm25`` (both min-max normalised per query:
``pipeline.rerank.stage.combine``, the rule ``rerank --interpolation`` applies) at every W of a grid:

- W is chosen on the labeled DL20 half (the queries not in ``--heldout-qids``; the teacher's LCE half): the W
  with the best nDCG@10 there (ties: the larger W, the cross-encoder's side). The subset's dev-small qrels
  cannot tune it: their passages are mostly not in the collection (39 of 6,980 queries have one in BM25's top 100);
- the held-out half (``configs/dl20-heldout.qids``) gets nDCG@10 at that W, against the reranker alone (W = 1)
  and against BM25 (W = 0), paired t-tests (and randomisation tests) over its queries; with a model named
  ``--teacher``, the share of the teacher's gain over BM25 each one keeps, alone and interpolated.

The raw scores are reranked runs in ``--work`` (``NAME.tune.dDEPTH.trec``, ``NAME.heldout.dDEPTH.trec``, each
with its timing file naming the model and the inputs); a run whose timing file names the same model and inputs
is reused, one cut short resumes from its journal. Results: ``--results`` (JSON) and the Markdown table beside it.

    python benchmarks/interpolation_study.py --run RUNS/dl20.bm25.trec --model teacher=STATE/teacher \
        --model 2L=STATE/students/2L-... --work carry/interpolation \
        --results benchmarks/results/interpolation_dl20_heldout_cpu.json --device cpu
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from common import HELDOUT_QIDS, SUBSET, cpu_description, write_results

from pipeline.errors import InputError
from pipeline.eval.evaluate import evaluate_per_query
from pipeline.eval.significance import compare
from pipeline.io.data import DocStore, read_qids, read_qrels, read_topics
from pipeline.io.runs import Ranking, Run
from pipeline.rerank.ranker import merge
from pipeline.rerank.stage import combine

MEASURE = "nDCG@10"
SPLITS = ("tune", "heldout")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=SUBSET, help="the MS MARCO subset (collection, queries, qrels)")
    p.add_argument("--run", type=Path, required=True, help="BM25 run of the DL20 queries")
    p.add_argument("--heldout-qids", type=Path, default=HELDOUT_QIDS,
                   help="the held-out DL20 queries (the others tune W)")
    p.add_argument("--model", action="append", default=[], required=True, metavar="NAME=FOLDER")
    p.add_argument("--teacher", default="teacher", help="the model whose gain over BM25 the others are measured by")
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--step", type=float, default=0.05, help="the grid of W: 0, step, ..., 1")
    p.add_argument("--device", default="auto")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--work", type=Path, required=True, help="where the reranked runs are kept (and reused)")
    p.add_argument("--results", type=Path, required=True, help="the JSON results (the Markdown table beside it)")
    args = p.parse_args(argv)
    args.models = dict(_model(spec) for spec in args.model)
    if not 0 < args.step <= 1:
        p.error("--step must be in (0, 1]")
    return args


def _model(spec: str) -> tuple[str, Path]:
    name, sep, folder = spec.partition("=")
    if not sep or not name or not folder:
        raise InputError(f"--model takes NAME=FOLDER, got {spec!r}")
    if not Path(folder).is_dir():
        raise InputError("no such model folder", folder)
    return name, Path(folder)


def weights(step: float) -> list[float]:
    """0, step, ..., 1 (1 included)."""
    count = round(1 / step)
    return [round(i / count, 6) for i in range(count + 1)]


def raw_scores(model: Path, run_file: Path, topics_file: Path, collection: Path, output: Path, depth: int,
               device: str, docstore: DocStore, topics: Mapping[str, str]) -> Run:
    """The model's reranked run of ``run_file`` (``output``: its name holds the depth), made unless ``output``'s
    timing file names the same model and inputs; one cut short resumes from its journal."""
    from pipeline.eval.timing import timing_path
    from pipeline.rerank.cross_encoder import CrossEncoder
    from pipeline.rerank.stage import Reranker, rerank_file

    sources = {"run": run_file, "topics": topics_file, "collection": collection}
    wanted = {"model": str(model), "inputs": {name: str(path) for name, path in sources.items()}}
    timing = timing_path(output)
    if output.is_file() and timing.is_file():
        record = json.loads(timing.read_text())
        if {key: record.get(key) for key in wanted} == wanted:
            return Run.read(output)
    reranker = Reranker(CrossEncoder(model, device=device))
    rerank_file(reranker, Run.read(run_file), topics, docstore, output, depth, sources=sources, resume=True)
    return Run.read(output)


Scored = dict[str, tuple[Ranking, np.ndarray, Ranking]]


def heads(reranked: Run, first: Run, depth: int) -> Scored:
    """Per query: the first stage's top ``depth`` (its order and scores), their raw reranker scores, and the first
    stage's passages below ``depth``."""
    out = {}
    for qid, ranking in first.items():
        raw = dict(reranked[qid])
        head = ranking[:depth]
        out[qid] = (head, np.array([raw[d] for d, _ in head]), ranking[depth:])
    return out


def interpolated(scored: Scored, weight: float) -> Run:
    """The run of ``weight x ce + (1 - weight) x bm25`` (min-max normalised) over each head, the rest in first-stage
    order below it: what ``rerank --interpolation weight`` writes."""
    return Run({qid: merge(head, combine(ce, np.array([s for _, s in head]), weight), tail)
                for qid, (head, ce, tail) in scored.items()})


def cut_depths(depth: int) -> list[int]:
    """The rerank depths the held-out half is also read at (the raw scores of the top ``depth`` cut shorter)."""
    return [k for k in (10, 20, 30, 50) if k < depth] + [depth]


def best_weight(at: Mapping[float, Mapping[str, float]], queries: list[str]) -> float:
    """The W with the best mean over ``queries`` (ties: the larger W, the cross-encoder's side)."""
    return max(at, key=lambda w: (round(float(np.mean([at[w][q] for q in queries])), 12), w))


def leave_one_out(at: Mapping[float, Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Each query scored at the W that is best on the other queries: per-query values and the W each got."""
    queries = list(next(iter(at.values())))
    chosen = {q: best_weight(at, [o for o in queries if o != q]) for q in queries}
    return {q: at[w][q] for q, w in chosen.items()}, chosen


def study(args: argparse.Namespace) -> dict:
    data = args.data
    topics_file = data / "queries.dl20.tsv"
    topics, qrels_all = read_topics(topics_file), read_qrels(data / "qrels.dl20.tsv")
    first = Run.read(args.run)
    held = read_qids(args.heldout_qids)
    held_set = set(held)
    tune = [q for q in topics if q in qrels_all and q not in held_set]
    if not tune:
        raise InputError("no labeled DL20 queries outside the held-out ones to tune W on", args.heldout_qids)
    args.work.mkdir(parents=True, exist_ok=True)
    split_runs = {"tune": first.subset(tune), "heldout": first.subset(held)}
    qrels = {"tune": {q: qrels_all[q] for q in tune}, "heldout": {q: qrels_all.get(q, {}) for q in held}}
    for split, run in split_runs.items():
        path = args.work / f"{split}.bm25.trec"
        if not path.is_file() or Run.read(path).rankings != run.rankings:
            run.write(path)
    docstore = DocStore(data / "collection.tsv")
    grid = weights(args.step)
    models: dict[str, dict] = {}
    for name, folder in args.models.items():
        scored, raw = {}, {}
        for split, run in split_runs.items():
            logging.info("%s: %s queries", name, split)
            output = args.work / f"{name}.{split}.d{args.depth}.trec"
            raw[split] = raw_scores(folder, args.work / f"{split}.bm25.trec", topics_file, data / "collection.tsv",
                                    output, args.depth, args.device, docstore, topics)
            scored[split] = heads(raw[split], run, args.depth)
        at = {split: {w: evaluate_per_query(interpolated(scored[split], w), qrels[split], [MEASURE])[MEASURE]
                      for w in grid} for split in SPLITS}
        best = best_weight(at["tune"], list(qrels["tune"]))
        held_at = at["heldout"]
        loo, loo_weights = leave_one_out(held_at)
        models[name] = {
            "folder": str(folder), "weight": best,
            "tune": {w: float(np.mean(list(v.values()))) for w, v in at["tune"].items()},
            "held-out": {w: float(np.mean(list(v.values()))) for w, v in held_at.items()},
            "leave-one-out": float(np.mean(list(loo.values()))), "leave-one-out weights": loo_weights,
            "leave-one-out vs alone": compare(loo, held_at[1.0]).as_dict(),
            "leave-one-out vs bm25": compare(loo, held_at[0.0]).as_dict(),
            "alone at depth": {k: float(np.mean(list(evaluate_per_query(
                interpolated(heads(raw["heldout"], split_runs["heldout"], k), 1.0), qrels["heldout"],
                [MEASURE])[MEASURE].values()))) for k in cut_depths(args.depth)},
            "vs alone": compare(held_at[best], held_at[1.0]).as_dict(),
            "vs bm25": compare(held_at[best], held_at[0.0]).as_dict(),
            "alone vs bm25": compare(held_at[1.0], held_at[0.0]).as_dict(),
        }
    return {"machine": cpu_description(), "device": args.device, "depth": args.depth, "tune queries": len(tune),
            "held-out queries": len(held), "grid": grid, "teacher": args.teacher,
            "models": models}


def _share(value: float, bm25: float, teacher: float | None) -> str:
    return "" if teacher is None or teacher == bm25 else f"{(value - bm25) / (teacher - bm25):.0%}"


def _test(test: dict) -> str:
    return f"{test['delta']:+.4f} (p = {test['p_ttest']:.2f})"


def markdown(record: dict) -> str:
    """The results as a Markdown table, then each model's sweep at every tenth of W."""
    models = record["models"]
    teacher = models.get(record["teacher"])
    bm25 = next(iter(models.values()))["held-out"][0.0] if models else 0.0
    top = teacher["held-out"][1.0] if teacher else None
    lines = [f"# Each reranker interpolated with BM25, W tuned on the labeled DL20 half ({record['tune queries']} "
             "queries) or left-one-out on the held-out half",
             "", f"{record['machine']}; device {record['device']}; BM25 top {record['depth']}; held-out DL20 half "
             f"({record['held-out queries']} queries), BM25 nDCG@10 {bm25:.4f}.", "",
             "| model | W (tuning half's nDCG@10 at W / at 1) | alone | at W | vs alone | vs BM25 "
             "| leave-one-out (its Ws) | vs alone | vs BM25 | teacher's gain kept: alone / at W / leave-one-out |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, m in models.items():
        w, alone, mixed, loo = m["weight"], m["held-out"][1.0], m["held-out"][m["weight"]], m["leave-one-out"]
        chosen = m["leave-one-out weights"].values()
        lines.append(f"| {name} | {w:g} ({m['tune'][w]:.4f} / {m['tune'][1.0]:.4f}) | {alone:.4f} | {mixed:.4f} "
                     f"| {_test(m['vs alone'])} | {_test(m['vs bm25'])} | {loo:.4f} ({min(chosen):g}-{max(chosen):g}) "
                     f"| {_test(m['leave-one-out vs alone'])} | {_test(m['leave-one-out vs bm25'])} "
                     f"| {_share(alone, bm25, top)} / {_share(mixed, bm25, top)} / {_share(loo, bm25, top)} |")
    tenths = [w for w in record["grid"] if abs(w * 10 - round(w * 10)) < 1e-9]
    lines += ["", "nDCG@10 on the held-out half (on the tuning half) at each W:", "",
              "| model | " + " | ".join(f"{w:g}" for w in tenths) + " |", "|---|" + "---:|" * len(tenths)]
    for name, m in models.items():
        lines.append(f"| {name} | " + " | ".join(f"{m['held-out'][w]:.4f} ({m['tune'][w]:.3f})"
                                                 for w in tenths) + " |")
    depths = cut_depths(record["depth"])
    lines += ["", "nDCG@10 on the held-out half of each reranker alone over BM25's top k (the rest in BM25's order):",
              "", "| model | " + " | ".join(f"k = {k}" for k in depths) + " |", "|---|" + "---:|" * len(depths)]
    for name, m in models.items():
        lines.append(f"| {name} | " + " | ".join(f"{m['alone at depth'][k]:.4f}" for k in depths) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        args = parse_args(argv)
        if args.torch_threads:
            import torch
            torch.set_num_threads(args.torch_threads)
        record = study(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = write_results(args.results, record, markdown(record))
    print(table.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
