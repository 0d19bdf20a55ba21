"""The study's phases. Each one saves its result as a row of the state and is skipped once that row is there; a
training phase checkpoints every ``save_every`` steps, so a call cut by its time limit resumes it where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from common import device_description

from pipeline.defaults import MSMARCO_B, MSMARCO_K1
from pipeline.eval.evaluate import evaluate
from pipeline.io.runs import Run
from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.stage import Reranker
from pipeline.retrieval.biencoder import BiEncoder
from pipeline.train import is_fine_tune, uses_lm_distill
from pipeline.train.curves import read_log
from pipeline.train.options import (
    BOOTSTRAP_TRAINING,
    BOOTSTRAPPED_LR,
    LM_TRAINING,
    NEGATIVES,
    BootstrapConfig,
    DistillConfig,
    TrainConfig,
)
from pipeline.train.recipes import LM_DIR, distill, score_run, train_teacher
from pipeline.train.trainer import CHECKPOINT, CHECKPOINT_OLD, LOG_FILE

from . import speed
from .cost import UNTRAINED_PHASE_S, Cost
from .design import DEFAULT_LAYERS, DEFAULT_PROCEDURE, MEASURES, SHAPES, STUDENTS, TEACHER_LAYERS
from .inputs import StudyInputs
from .state import State, holds_files

#: The floor: BM25's lists in random order, the mean of this many seeded shuffles.
FLOOR_SHUFFLES = 20
#: Held-out queries reranked once before a timed rerank (loading, allocation).
WARMUP_QUERIES = 2
#: What a student's LM-distillation phase reads of its ``DistillConfig`` (``distill``: the student it builds, the
#: pairs it draws, its training; with the seed of ``rank``, ``lm_phase_key``): students that agree on these
#: (``2L-lm-distill+fine-tune`` and ``2L-lm-distill+ranker-distill``) train the same LM-distilled student, so the
#: study trains it once.
LM_PHASE_FIELDS = ("layers", "layer_map", "init_from", "head", "base", "progressive", "score_depth",
                   "lm_pairs_per_query", "attention_weight", "max_length", "lm")


def lm_phase_key(cfg: DistillConfig) -> str:
    """The settings of ``cfg``'s LM-distillation phase and its seed, as a short digest (a folder name)."""
    settings = {k: v for k, v in asdict(cfg).items() if k in LM_PHASE_FIELDS} | {"seed": cfg.rank.seed}
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def row_name(phase: str, student: str | None = None) -> str:
    """The row whose presence in the state says that ``phase`` (of ``student``) is finished."""
    return {"references": "ref-biencoder", "students": f"student-{student}"}.get(phase, phase)


class Phases:
    """The phases of one study: its state, its inputs, the pretrained MiniLM and the device."""

    def __init__(self, state: State, inputs: StudyInputs, minilm: Path, device: torch.device):
        self.state, self.inputs, self.minilm, self.device = state, inputs, minilm, device
        self.scale = state.scale

    # ---- what the phases run (the cost model reads the same configurations) ----------------------------------

    def train(self, base: TrainConfig | None = None, **kw) -> TrainConfig:
        """A TrainConfig at the study's seed, checkpoint and curve cadence, without a bar."""
        values = {"seed": self.scale.seed, "progress": False, "log_every": 10, "save_every": self.scale.save_every,
                  "eval_every": self.scale.eval_every, **kw}
        return replace(base or TrainConfig(), **values)

    def bootstrap_config(self, epochs: int) -> BootstrapConfig:
        """The bi-encoder bootstrap over the dev queries' BM25 top ``depth``."""
        s = self.scale
        return BootstrapConfig(self.minilm, self.inputs.dev_topics, self.inputs.dev_run, score_depth=s.depth,
                               group_size=s.group_size,
                               train=self.train(BOOTSTRAP_TRAINING, epochs=epochs, batch_size=s.batch_size))

    def lce_config(self) -> TrainConfig:
        """The teacher's LCE over the labeled half, after the bootstrap."""
        return self.train(epochs=self.scale.lce_epochs, batch_size=self.scale.batch_size, lr=BOOTSTRAPPED_LR)

    def student_config(self, name: str) -> DistillConfig:
        """The default student at the study's scale with the lever of ``name`` applied."""
        s, lever = self.scale, dict(STUDENTS[name])
        procedure = lever.pop("procedure", DEFAULT_PROCEDURE)
        epochs = lever.pop("epochs", s.finetune_epochs if is_fine_tune(procedure) else s.student_epochs)
        seed = lever.pop("seed", s.seed)  # every draw of the student's training: LM pairs, its head, its groups
        rank = self.train(epochs=epochs, batch_size=s.batch_size, lr=lever.pop("lr", s.student_lr), seed=seed)
        bootstrap = self.bootstrap_config(epochs=1) if lever.pop("bootstrap", False) else None
        # No random passages unless the lever says (the students ran so before they became distill's default); at
        # most what the teacher scored (a smaller scale scores fewer).
        lever["random_negatives"] = min(lever.get("random_negatives", 0), s.random_negatives, s.group_size - 1)
        return DistillConfig(procedure=procedure, layers=lever.pop("layers", DEFAULT_LAYERS), base=self.minilm,
                             score_depth=min(lever.pop("score_depth", s.score_depth), s.max_score_depth),
                             group_size=s.group_size,
                             lm_pairs_per_query=lever.pop("lm_pairs_per_query", s.lm_pairs_per_query),
                             max_length=s.max_length, rank=rank,
                             lm=self.train(LM_TRAINING, batch_size=s.lm_batch_size, eval_every=None, seed=seed),
                             bootstrap=bootstrap, **lever)

    def estimate(self, phase: str, student: str | None = None) -> float | None:
        """Seconds ``phase`` should take, from the speed phase's pairs/s (None before it ran)."""
        speed_row = self.state.row("speed")
        if speed_row is None:
            return None
        s, inputs = self.scale, self.inputs
        dev, labeled = len(inputs.dev), len(inputs.train_q)
        cost = Cost(speed_row, held_pairs=len(inputs.held_q) * s.eval_depth)
        if phase == "teacher":
            return cost.teacher(self.bootstrap_config(s.bootstrap_epochs), self.lce_config(), NEGATIVES, dev, labeled)
        if phase == "scores":
            return cost.scoring((dev + labeled) * (s.max_score_depth + s.random_negatives), TEACHER_LAYERS)
        if phase == "students" and student:
            if self.twin(student):
                return 0.0
            cfg = self.student_config(student)
            return cost.student(cfg, dev, labeled, lm_done=finished(self.lm_phase(cfg)))
        return UNTRAINED_PHASE_S

    # ---- the phases ------------------------------------------------------------------------------------------

    def run(self, phase: str, student: str | None = None) -> None:
        """Run ``phase`` (``students``: the one named ``student``); not ``table``, which the report writes."""
        if phase == "students":
            self.student(student)
        else:
            getattr(self, phase)()

    def speed(self) -> None:
        """Training and scoring pairs/s per shape, and the truncation shares (``study.speed``)."""
        self.state.save_row("speed", speed.measure(self.inputs, self.minilm, SHAPES, self.device,
                                                   device_description(self.device)))

    def references(self) -> None:
        """BM25, the floor (BM25's lists shuffled) and the zero-shot MiniLM bi-encoder on the held-out queries."""
        inputs, held_qrels = self.inputs, self.inputs.held_qrels
        self.state.save_row("ref-bm25", {"system": f"BM25 (k1={MSMARCO_K1}, b={MSMARCO_B})", "layers": "-",
                                         **evaluate(inputs.held_run, held_qrels, MEASURES)})
        totals = dict.fromkeys(MEASURES, 0.0)
        for i in range(FLOOR_SHUFFLES):
            rng = random.Random(f"{self.scale.seed}:{i}")
            shuffled = {}
            for qid, ranking in inputs.held_run.items():
                docids = [d for d, _ in ranking]
                rng.shuffle(docids)
                shuffled[qid] = [(d, float(len(docids) - r)) for r, d in enumerate(docids)]
            for m, v in evaluate(Run(shuffled), held_qrels, MEASURES).items():
                totals[m] += v / FLOOR_SHUFFLES
        self.state.save_row("ref-random", {"system": f"BM25 top-100 in random order ({FLOOR_SHUFFLES} shuffles)",
                                           "layers": "-", **totals})
        bi = BiEncoder(self.minilm, device=str(self.device), max_length=self.scale.max_length)
        bi.rerank(inputs.held_run.subset(list(inputs.held_q)[:WARMUP_QUERIES]), inputs.held_q, inputs.docstore)
        run, timing = bi.rerank(inputs.held_run, inputs.held_q, inputs.docstore)
        self.state.save_row("ref-biencoder", {"system": "MiniLM bi-encoder, zero-shot", "layers": TEACHER_LAYERS,
                                              **evaluate(run, held_qrels, MEASURES), "pairs/s": timing.pairs_per_s})

    def teacher(self) -> None:
        """MiniLM as a cross-encoder: the bi-encoder bootstrap over the dev queries, then LCE on the labeled half."""
        folder = self.state.folder / "teacher"
        train_teacher(self.minilm, self.inputs.teacher_inputs(), folder, self.lce_config(),
                      device=str(self.device), bootstrap=self.bootstrap_config(self.scale.bootstrap_epochs),
                      max_length=self.scale.max_length, resume=holds_files(folder), heldout=self.inputs.heldout())
        shutil.copy(folder / "bootstrap" / "model" / LOG_FILE, self.state.log("teacher-bootstrap"))
        shutil.copy(folder / LOG_FILE, self.state.log("teacher-lce"))
        self.state.save_row("teacher", {"system": "teacher: MiniLM cross-encoder (bootstrap + LCE)",
                                        "layers": TEACHER_LAYERS, **self.evaluate_folder(folder),
                                        "train s": trained_seconds(folder)})

    def scores(self) -> None:
        """The teacher scores the distillation lists once, for every student."""
        s = self.scale
        start = time.perf_counter()
        header = score_run(self.state.folder / "teacher", self.inputs.distill_inputs,
                           self.state.folder / "scores" / "teacher.scores", s.max_score_depth,
                           device=str(self.device), random_negatives=s.random_negatives, seed=s.seed,
                           resume=True)  # a phase cut short continues from the journal of its finished chunks
        self.state.save_row("scores", {**header, "seconds": time.perf_counter() - start})
        print(f"  {header['pairs']:,} pairs of {header['queries']:,} queries scored", flush=True)

    def student(self, name: str) -> None:
        """One student: trained in ``work/NAME``, then its row and log saved and its folder moved to
        ``students/NAME`` (its checkpoint gone: a few tens of MB). A student whose configuration another one
        already trained gets that one's row (naming it: ``same as``) and log instead; its model is that one's."""
        twin = self.twin(name)
        if twin:
            print(f"  the same configuration as {twin}: its row is shared", flush=True)
            self.state.save_row(f"student-{name}", {**self.state.row(f"student-{twin}"), "system": f"student {name}",
                                                    "lever": STUDENTS[name], "same as": twin})
            shutil.copy(self.state.log(twin), self.state.log(name))
            return
        cfg = self.student_config(name)
        folder = self.state.folder / "work" / name
        scores = None if is_fine_tune(cfg.procedure) else self.state.folder / "scores" / "teacher.scores"
        shared = self.lm_phase(cfg)
        lm_shared = finished(shared)
        if lm_shared and not finished(folder / LM_DIR):  # done: the student resumes past it
            print(f"  the LM-distillation phase {shared.name} is shared: already trained", flush=True)
            shutil.rmtree(folder / LM_DIR, ignore_errors=True)
            keep_finished(shared, folder / LM_DIR)
        distill(self.state.folder / "teacher", self.inputs.distill_inputs, folder, cfg, scores=scores,
                device=str(self.device), resume=holds_files(folder), heldout=self.inputs.heldout())
        if shared is not None and not lm_shared:
            keep_finished(folder / LM_DIR, shared)
        shutil.copy(folder / LOG_FILE, self.state.log(name))
        self.state.save_row(f"student-{name}", {"system": f"student {name}", "layers": cfg.layers,
                                                "lever": STUDENTS[name], **self.evaluate_folder(folder),
                                                "train s": trained_seconds(folder), "lm-distill shared": lm_shared})
        kept = self.state.student(name)
        shutil.rmtree(kept, ignore_errors=True)  # a student trained again replaces the one kept
        folder.rename(kept)

    def twin(self, name: str) -> str | None:
        """A trained student (not itself a twin) with ``name``'s configuration, if any."""
        cfg = self.student_config(name)
        for other in STUDENTS:
            row = self.state.row(f"student-{other}")
            if other != name and row and "same as" not in row and self.student_config(other) == cfg:
                return other
        return None

    def lm_phase(self, cfg: DistillConfig) -> Path | None:
        """Where ``cfg``'s LM-distillation phase is kept for every student that shares it (None: it has none)."""
        return self.state.lm_distilled(lm_phase_key(cfg)) if uses_lm_distill(cfg.procedure) else None

    def evaluate_folder(self, folder: Path) -> dict:
        """Held-out measures of a saved ranker and its rerank pairs/s (a small rerank: per-call overheads in)."""
        inputs = self.inputs
        reranker = Reranker(CrossEncoder(folder, device=self.device))
        reranker.rerank(inputs.held_run.subset(list(inputs.held_q)[:WARMUP_QUERIES]), inputs.held_q,
                        inputs.docstore)
        run, timing = reranker.rerank(inputs.held_run, inputs.held_q, inputs.docstore)
        return {**evaluate(run, inputs.held_qrels, MEASURES), "pairs/s": timing.pairs_per_s}


def finished(phase: Path | None) -> bool:
    """Whether a training phase kept at ``phase`` finished (another student already trained it)."""
    return phase is not None and (phase / "config.json").is_file()


def logged_seconds(log: Path) -> float:
    """The seconds of training that ``log`` records over all its processes (each start or resume begins a process,
    whose step records and end count seconds from its own start; an evaluation's seconds are its own)."""
    total = last = 0.0
    for event in read_log(log):
        kind = event.get("event")
        if kind in ("start", "resume"):
            total, last = total + last, 0.0
        elif kind in (None, "end"):
            last = event.get("seconds", last)
    return total + last


def trained_seconds(folder: Path) -> float:
    """The seconds of training of every phase kept in ``folder`` (an LM phase shared with another student, as it
    was trained once), over all their processes: a process killed before its end counts up to its last step."""
    return sum(logged_seconds(log) for log in sorted(folder.rglob(LOG_FILE)))


def keep_finished(phase: Path, kept: Path) -> None:
    """A copy of the finished training ``phase`` at ``kept`` (a whole copy or none), its checkpoints left out."""
    partial = kept.with_name(kept.name + ".tmp")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(phase, partial, ignore=shutil.ignore_patterns(CHECKPOINT, CHECKPOINT_OLD))
    partial.rename(kept)
