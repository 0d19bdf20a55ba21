"""Held-out learning curves of 2-layer students, one lever at a time, small enough for a CPU.

Every arm distils the same teacher signal into a 2-layer student with ``distilrank distill``'s library API
(``ranker-distill``, listwise KL), same data, seed and steps; only the arm's lever differs. The teacher is the
zero-shot MiniLM bi-encoder (mean pooling, cosine; teacher temperature 0.1), scored once over the BM25 top
``--depth`` of the first ``--dev-queries`` MS MARCO dev-small queries: on a CPU it is both cheaper and better
(nDCG@10 0.596 on the held-out half) than a cross-encoder teacher trained here. Every ``--eval-every`` steps
the student reranks the BM25 top-100 of the held-out DL20 half (``configs/dl20-heldout.qids``, 27 queries).

    python benchmarks/student_curves.py --arms cls,mean,mean-lr --torch-threads 1     # about 40 minutes, 1 core

Inputs: the shared subset (``../shared/data/msmarco-subset``) and the BM25 runs of
``benchmarks/prepare_gpu_inputs.py`` (``carry/runs``). Writes ``--results``.md and .png (the curves); the
models and logs stay in ``--work``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import CARRY, HELDOUT_QIDS, RESULTS, ROOT, SUBSET, packaged_minilm, plain_file

#: The levers: DistillConfig fields an arm changes from the default (``cls``: what ``distilrank distill``
#: does by default, at the notes' learning rate).
ARMS = {
    "cls": {},
    "mean": {"head": "mean"},
    "mean-lr": {"head": "mean", "lr": 5e-4},
    "cls-lr": {"lr": 5e-4},
    "bottom": {"layer_map": (0, 1)},
}
MEASURES = ("nDCG@10", "RR(rel=2)@10")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SUBSET)
    p.add_argument("--runs", type=Path, default=CARRY / "runs")
    p.add_argument("--minilm", type=Path, default=None, help="the pretrained MiniLM (default: the packaged one)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "student_curves")
    p.add_argument("--results", type=Path, default=RESULTS / "student_curves_cpu")
    p.add_argument("--arms", default="cls,mean,mean-lr", help=f"comma-separated, from {', '.join(ARMS)}")
    p.add_argument("--dev-queries", type=int, default=1500)
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1.5e-4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--eval-every", type=int, default=47)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    import torch
    from transformers.utils import logging as hf_logging

    from pipeline.eval.evaluate import evaluate
    from pipeline.io.data import DocStore, read_qids, read_qrels, read_topics
    from pipeline.io.runs import Run
    from pipeline.retrieval.biencoder import BiEncoder
    from pipeline.train.curves import eval_points, plot_curves
    from pipeline.train.groups import iter_run_lists
    from pipeline.train.heldout import HeldOut
    from pipeline.train.options import DistillConfig, TrainConfig
    from pipeline.train.recipes import Inputs, biencoder_scores, distill
    from pipeline.train.trainer import LOG_FILE

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.torch_threads)
    args.minilm = args.minilm or packaged_minilm()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    docstore = DocStore(args.data / "collection.tsv")
    dl20, qrels = read_topics(args.data / "queries.dl20.tsv"), read_qrels(args.data / "qrels.dl20.tsv")
    held_qids = read_qids(HELDOUT_QIDS)
    dl20_run, dev_all = (plain_file(args.runs, name, work / "inputs") for name in ("dl20.bm25.trec", "dev.bm25.trec"))
    if dl20_run is None or dev_all is None:
        raise SystemExit(f"need dl20.bm25.trec[.gz] and dev.bm25.trec[.gz] in {args.runs} "
                         "(benchmarks/prepare_gpu_inputs.py makes them)")
    held_run = Run.read(dl20_run).subset(held_qids).top(100)
    heldout = HeldOut(held_run, dl20, qrels, docstore, depth=100, measures=MEASURES)
    held_qrels = {q: qrels[q] for q in heldout.lists}

    dev = dict(list(read_topics(args.data / "queries.dev.small.tsv").items())[: args.dev_queries])
    dev_topics = work / f"dev{len(dev)}.tsv"
    dev_topics.write_text("".join(f"{q}\t{t}\n" for q, t in dev.items()), encoding="utf-8")
    dev_run = work / f"dev{len(dev)}.top{args.depth}.bm25.trec"
    if not dev_run.is_file():
        with open(dev_run, "w", encoding="utf-8") as out:
            for qid, ranking in iter_run_lists(dev_all, args.depth):
                if qid in dev:
                    out.writelines(f"{qid} Q0 {d} {r} {s:.4f} bm25\n" for r, (d, s) in enumerate(ranking, 1))
    inputs = Inputs.load(dev_topics, dev_run, docstore.path, docstore=docstore)
    scores = biencoder_scores(dev_run.with_suffix(".biencoder.scores"), args.minilm, inputs, args.depth, "cpu")
    print(f"{len(dev)} dev queries x top-{args.depth} scored by the bi-encoder; held out: {len(heldout)} queries",
          flush=True)

    references = {"BM25": evaluate(held_run, held_qrels, MEASURES)}
    bi_file = work / "biencoder_heldout.json"
    if not bi_file.is_file():
        bi_run, _ = BiEncoder(args.minilm, device="cpu", max_length=args.max_length).rerank(held_run, dl20, docstore)
        bi_file.write_text(json.dumps(evaluate(bi_run, held_qrels, MEASURES)))
    references["MiniLM bi-encoder (the teacher)"] = json.loads(bi_file.read_text())

    logs, seconds = {}, {}
    for arm in arms:
        lever = dict(ARMS[arm])
        lr = lever.pop("lr", args.lr)
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr, max_steps=args.max_steps,
                            seed=args.seed, log_every=10, eval_every=args.eval_every, progress=False)
        cfg = DistillConfig(procedure="ranker-distill", layers=2, base=args.minilm, teacher_temperature=0.1,
                            group_size=args.group_size, score_depth=args.depth, max_length=args.max_length, rank=train,
                            random_negatives=0, **lever)  # the bi-encoder scored no random passages
        out = work / arm
        print(f"\n== arm {arm}: {ARMS[arm] or 'the default'}", flush=True)
        summary = distill(args.minilm, inputs, out, cfg, scores=scores.path, device="cpu",
                          resume=(out / LOG_FILE).is_file(), heldout=heldout)["ranker-distill"]
        seconds[arm] = summary["seconds"]  # training and its evaluations (an arm finished earlier: as logged then)
        logs[arm] = out / LOG_FILE
        print(f"   {arm}: " + ", ".join(f"step {s} {v:.4f}" for s, _, v in eval_points(logs[arm])), flush=True)

    title = f"2-layer students, bi-encoder teacher, {len(dev)} dev queries (CPU)"
    refs = {name: values["nDCG@10"] for name, values in references.items()}
    plot_curves({f"{a} ({describe(ARMS[a])})": log for a, log in logs.items()}, args.results.with_suffix(".png"),
                title=title, references=refs)
    args.results.with_suffix(".md").write_text(render(args, logs, references, seconds, len(heldout), len(dev),
                                                      time.perf_counter() - started), encoding="utf-8")
    print(f"written {args.results.with_suffix('.md')} and .png")
    return 0


def describe(lever: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in lever.items()) or "default"


def render(args, logs, references, seconds, n_held, n_dev, total) -> str:
    from pipeline.train.curves import eval_points

    steps = sorted({s for log in logs.values() for s, _, _ in eval_points(log)})
    pairs = {s: s * args.batch_size * args.group_size for s in steps}
    lines = [f"| arm (lever) | {' | '.join(f'{pairs[s]:,}' for s in steps)} | seconds (training + evaluations) |",
             "|---|" + "---:|" * (len(steps) + 1)]
    for arm, log in logs.items():
        by_step = {s: v for s, _, v in eval_points(log)}
        cells = [f"{by_step[s]:.4f}" if s in by_step else "" for s in steps]
        lines.append(f"| {arm} ({describe(ARMS[arm])}) | {' | '.join(cells)} | {seconds[arm]:.0f} |")
    refs = "\n".join(f"| {name} | " + " | ".join(f"{v[m]:.4f}" for m in MEASURES) + " |"
                     for name, v in references.items())
    return (
        "# Learning curves of 2-layer students on a CPU, one lever at a time\n\n"
        f"Measured by `python benchmarks/student_curves.py {' '.join(sys.argv[1:])}` on this 2-core CPU "
        f"({args.torch_threads} torch thread), {total / 60:.0f} minutes in all.\n\n"
        f"Same for every arm: the teacher is the zero-shot MiniLM bi-encoder (cosine, teacher temperature 0.1) over "
        f"the BM25 top-{args.depth} of the first {n_dev} MS MARCO dev-small queries; `ranker-distill` (listwise KL, "
        f"student temperature 1), groups of {args.group_size}, {args.batch_size} groups a step "
        f"({args.batch_size * args.group_size} pairs), {args.epochs} epochs, peak lr {args.lr:g} unless the arm "
        f"says otherwise (10% warmup, linear decay), max length {args.max_length}, seed {args.seed}; the student "
        "keeps MiniLM's evenly spaced layers [2, 5] unless the arm says otherwise.\n\n"
        f"Held-out nDCG@10 (DL20 held-out half, {n_held} queries, BM25 top-100 reranked) after N training pairs:\n\n"
        + "\n".join(lines)
        + f"\n\nReferences on the same {n_held} queries:\n\n| system | " + " | ".join(MEASURES) + " |\n|---|"
        + "---:|" * len(MEASURES) + "\n" + refs
        + "\n| BM25 top-100 in random order (`distill_study_cpu.md`) | 0.1681 | 0.2377 |\n"
        + f"\nCurves: `{args.results.with_suffix('.png').name}`.\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
