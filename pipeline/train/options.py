"""What the training recipes take, each default written once (Tevatron ``arguments.py`` style).

``TrainConfig`` is one phase's optimisation, ``BootstrapConfig`` the bi-encoder bootstrap of the teacher,
``DistillConfig`` a student's procedure; the constants are the sizes the recipes, the training groups, the demo
and the command line share. Plain dataclasses without torch, so the CLI reads its defaults here cheaply.

Depths of training, each named for what it means (the rerank depth and the first-stage hits are
``pipeline.defaults.RERANK_DEPTH`` and ``pipeline.defaults.DEFAULT_HITS``):
``NEGATIVES_DEPTH``, the run's top-K hard negatives are drawn from; ``SCORE_DEPTH``, the candidates per query a
teacher scores for distillation (LM-distillation pairs are drawn from the same top-K).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..defaults import MAX_LENGTH

#: Hard negatives per LCE group (1 positive + NEGATIVES), drawn from the run's top-NEGATIVES_DEPTH.
NEGATIVES = 7
NEGATIVES_DEPTH = 100
#: Candidates per scored (distillation) group.
GROUP_SIZE = 16
#: Candidates per query a teacher scores for distillation.
SCORE_DEPTH = 30
#: Queries a chunk of teacher scoring (``recipes.score_run``): scored together, journaled together, and shared out
#: whole under torchrun.
SCORE_CHUNK_QUERIES = 256
#: Seed of every training phase and of the sampling of its groups.
SEED = 42
#: Peak learning rate of the teacher's LCE phase after a bi-encoder bootstrap (TrainConfig's ``lr`` without one).
BOOTSTRAPPED_LR = 1e-5


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (saved with every checkpoint)."""

    epochs: int = 1
    batch_size: int = 16  # examples (groups) per optimizer step
    accumulation: int = 1  # micro-batches per optimizer step
    lr: float = 3e-5
    epoch_lrs: tuple[float, ...] = ()  # per-epoch peak learning rate (last one repeats); overrides lr when given
    warmup: float = 0.1  # fraction of the steps with linear warmup
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_steps: int | None = None
    precision: str | None = None  # None: bf16 autocast on CUDA, fp32 on CPU; or fp32|bf16|fp16
    seed: int = SEED
    log_every: int = 10
    save_every: int | None = None  # checkpoint every N steps (and always at the end of an epoch)
    stop_after: int | None = None  # stop after this step as if interrupted (checkpoint kept; resume continues)
    eval_every: int | None = None  # held-out evaluation every N steps (needs the Trainer's evaluator)
    progress: bool | None = None  # a tqdm bar: True always, False never, None when stderr is a terminal


#: The phases' own optimisation defaults: the bootstrap (two epochs, a lower peak in the second), ranker
#: distillation and LM distillation (pairs per step, not groups).
BOOTSTRAP_TRAINING = TrainConfig(epochs=2, lr=1.5e-4, epoch_lrs=(1.5e-4, 1e-4), warmup=0.05)
RANK_TRAINING = TrainConfig(lr=1e-4)
LM_TRAINING = TrainConfig(batch_size=64, lr=3e-4)


@dataclass
class BootstrapConfig:
    """The bi-encoder bootstrap: distil a zero-shot bi-encoder over unlabeled queries' candidates."""

    biencoder: Path
    topics: Path
    run: Path
    score_depth: int = SCORE_DEPTH  # candidates per query the bi-encoder scores
    group_size: int = GROUP_SIZE
    teacher_temperature: float = 0.1  # softmax temperature of the bi-encoder's cosine scores
    train: TrainConfig = field(default_factory=lambda: replace(BOOTSTRAP_TRAINING))


@dataclass
class DistillConfig:
    """Options of ``distill`` beyond the inputs (the CLI's ``distilrank distill --help`` explains each)."""

    procedure: str = "ranker-distill"
    layers: int = 3  # evenly spaced layers of the source (ignored when layer_map is given)
    layer_map: tuple[int, ...] | None = None  # the source's layers the student keeps, e.g. (0, 1)
    init_from: str = "base"  # base | teacher | random | a model folder
    head: str = "cls"  # the student's ranking head: cls | mean (pipeline/heads.py)
    base: Path | None = None  # the pretrained encoder (LM-distillation teacher); default: the teacher's init
    objective: str = "kl"
    temperature: float = 1.0  # the student's softmax temperature (kl)
    teacher_temperature: float | None = None  # the teacher's (kl); None: the student's
    random_negatives: int = 0  # group members drawn from teacher-scored random passages of the collection
    label_weight: float = 0.0
    hidden_weight: float = 0.0  # lm-distill+ranker-distill: hidden-state matching to the teacher
    group_size: int = GROUP_SIZE
    negatives: int = NEGATIVES  # the fine-tune procedures' LCE groups
    negatives_depth: int = NEGATIVES_DEPTH
    score_depth: int = SCORE_DEPTH  # the teacher scores each query's top-K (with a given score file: groups
    # come from the top-K of its lists)
    lm_pairs_per_query: int = 8
    attention_weight: float = 1.0
    max_length: int = MAX_LENGTH
    rank: TrainConfig = field(default_factory=lambda: replace(RANK_TRAINING))
    lm: TrainConfig = field(default_factory=lambda: replace(LM_TRAINING))
    bootstrap: BootstrapConfig | None = None  # the teacher's bi-encoder bootstrap, applied to the student first

    @property
    def student_layers(self) -> int | list[int]:
        """What ``make_student`` keeps: the layer map, or a count of evenly spaced layers."""
        return list(self.layer_map) if self.layer_map else self.layers
