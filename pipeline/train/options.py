"""What the training recipes take, each default written once (Tevatron ``arguments.py`` style).

``TrainConfig`` is one phase's optimisation, ``BootstrapConfig`` the bi-encoder bootstrap of the teacher,
``DistillConfig`` a student's procedure; the constants are the sizes the recipes, the training groups, the demo
and the command line share. Plain dataclasses without torch, so the CLI reads its defaults here cheaply.
Each field's help text is in its metadata (``help``; ``flag``, ``items``, ``min``, ``check``, ``aliases``,
``formerly``: see ``pipeline.cli.flags``), where the ``train`` and ``distill`` flags are made from. ``result:
False`` marks an option that does not change what training makes (logging, checkpoints, progress): ``--resume``
accepts another value of it and refuses another value of any other (``result_options``); a nested phase's
``prefix`` is the one its flags take (``--lm-batch-size``).

Depths of training, each named for what it means (the rerank depth and the first-stage hits are
``pipeline.defaults.RERANK_DEPTH`` and ``pipeline.defaults.DEFAULT_HITS``):
``NEGATIVES_DEPTH``, the run's top-K hard negatives are drawn from; ``SCORE_DEPTH``, the candidates per query a
teacher scores for distillation (LM-distillation pairs are drawn from the same top-K).
"""
from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from ..defaults import MAX_LENGTH, SEED  # SEED: of every training phase and its groups' sampling
from ..errors import InputError
from ..runtime.devices import precision_name
from . import PROCEDURES

#: Hard negatives per LCE group (1 positive + NEGATIVES), drawn from the run's top-NEGATIVES_DEPTH.
NEGATIVES = 7
NEGATIVES_DEPTH = 100
#: Candidates per scored (distillation) group.
GROUP_SIZE = 16
#: Candidates per query a teacher scores for distillation.
SCORE_DEPTH = 30
#: One member in RANDOM_SHARE of a distillation group is by default a teacher-scored random passage of the
#: collection (4 of 16): the best lever at 3 layers on the CPU study (held-out nDCG@10 0.386 against 0.334 without
#: them, p 0.025; benchmarks/results/distill_study_cpu_students.md).
RANDOM_SHARE = 4


def default_random_negatives(group_size: int) -> int:
    """The random passages of a distillation group of ``group_size`` when ``--random-negatives`` is not given."""
    return group_size // RANDOM_SHARE


#: Random passages a query the teacher scores by default (``score``): enough for a default group.
RANDOM_NEGATIVES = default_random_negatives(GROUP_SIZE)
#: Queries a chunk of teacher scoring (``recipes.score_run``): scored together, journaled together, and shared out
#: whole under torchrun.
SCORE_CHUNK_QUERIES = 256
#: Peak learning rate of the teacher's LCE phase after a bi-encoder bootstrap (TrainConfig's ``lr`` without one).
BOOTSTRAPPED_LR = 1e-5
#: The distillation objectives (``distill --objective``); the teacher's LCE is the other objective of ``tasks``.
DISTILL_OBJECTIVES = ("kl", "margin-mse", "mse")


def _positive(values: tuple[float, ...]) -> tuple[float, ...]:
    if any(v <= 0 for v in values):
        raise InputError(f"learning rates must be positive, not {','.join(map(str, values))}")
    return values


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (saved with every checkpoint)."""

    epochs: int = field(default=1, metadata={"help": "passes over the training examples"})
    batch_size: int = field(default=16, metadata={
        "help": "examples per optimizer step: groups (pairs in LM distillation)"})
    accumulation: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=3e-5, metadata={
        "help": "peak learning rate, linear warmup then linear decay"})
    epoch_lrs: tuple[float, ...] = field(default=(), metadata={
        "help": "peak learning rate of each epoch, the last one repeating; overrides the learning rate",
        "flag": "lrs", "items": "learning rates", "check": _positive})
    warmup: float = field(default=0.1, metadata={"help": "fraction of the steps with linear warmup"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (biases and norms: none)"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient norm clipped to this (0: not clipped)"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after N optimizer steps (per phase)"})
    precision: str | None = field(default=None, metadata={
        "help": "autocast precision: fp32, bf16 or fp16 (default bf16 on CUDA, fp32 on CPU)", "check": precision_name})
    seed: int = field(default=SEED, metadata={
        "help": "seed of the sampling, of training and of a fresh ranking head (a model folder without one)"})
    log_every: int = field(default=10, metadata={"help": "log the loss every N steps", "min": 1, "result": False})
    save_every: int | None = field(default=None, metadata={
        "help": "checkpoint every N steps (and at the end of each epoch)", "result": False})
    stop_after: int | None = field(default=None, metadata={
        "help": "stop after this step as if interrupted (checkpoint kept; resume continues): tests' hook, no flag",
        "flag": False, "result": False})
    eval_every: int | None = field(default=None, metadata={
        "help": "every N steps (and before the first and after the last) rerank the held-out queries (--eval-*) and "
        "log their effectiveness into train_log.jsonl, plotted in learning_curve.png beside it", "result": False})
    progress: bool | None = field(default=None, metadata={
        "help": "a progress bar (default: when stderr is a terminal)", "result": False})


#: The phases' own optimisation defaults: the bootstrap (two epochs, a lower peak in the second), the student's
#: ranking phase and LM distillation (pairs per step, not groups). The student's peak lr, 6e-4, won the CPU study
#: (one epoch of the default recipe, held-out nDCG@10): 0.459 at 3 layers against 0.436 at 3e-4 and 0.386 at 1e-4;
#: 0.346 at 2 layers against 0.361 and 0.242 (benchmarks/results/distill_study_cpu_students.md). Measured for
#: ranker distillation; fine-tune at 6e-4 ties its 1e-4 near the floor (0.235 against 0.227 at 3 layers). Two
#: epochs at that rate beat one at 2 layers, 0.481 against 0.346 (p = 0.001), and tie at 3, 0.469 against 0.459;
#: three end lower at 2 layers, 0.447. A fine-tune procedure's second epoch is unmeasured. Every student of the
#: study took 8 groups a step and 128 pairs a step of LM distillation: these defaults are those.
BOOTSTRAP_TRAINING = TrainConfig(epochs=2, lr=1.5e-4, epoch_lrs=(1.5e-4, 1e-4), warmup=0.05)
RANK_TRAINING = TrainConfig(epochs=2, lr=6e-4, batch_size=8)
LM_TRAINING = TrainConfig(batch_size=128, lr=3e-4)


@dataclass
class BootstrapConfig:
    """The bi-encoder bootstrap: distil a zero-shot bi-encoder over unlabeled queries' candidates."""

    biencoder: Path = field(metadata={"help": "zero-shot bi-encoder folder (mean pooling, cosine)", "flag": "from"})
    topics: Path = field(metadata={"help": "unlabeled queries"})
    run: Path = field(metadata={"help": "their BM25 candidates"})
    score_depth: int = field(default=SCORE_DEPTH, metadata={
        "help": "candidates per query the bi-encoder scores", "aliases": ("depth",)})
    group_size: int = field(default=GROUP_SIZE, metadata={"help": "candidates per group"})
    teacher_temperature: float = field(default=0.1, metadata={
        "help": "softmax temperature of the bi-encoder's (cosine) scores", "flag": "temperature"})
    train: TrainConfig = field(default_factory=lambda: replace(BOOTSTRAP_TRAINING), metadata={"prefix": ""})


@dataclass
class DistillConfig:
    """Options of ``distill`` beyond the inputs (each field's help is its ``distilrank distill`` flag's)."""

    # The default: the paper's procedure, the best of the four at both sizes on the CPU study (held-out nDCG@10 at
    # these defaults: 0.469 at 3 layers against fine-tune's 0.235 and ranker-distill's 0.456, 0.481 at 2 against
    # 0.187 and 0.356; at one epoch 0.459 and 0.346 against ranker-distill's 0.399 and 0.147;
    # benchmarks/results/distill_study_cpu_students.md).
    procedure: str = field(default="lm-distill+ranker-distill", metadata={
        "help": "fine-tune (labels alone), ranker-distill (the teacher's scores), or either after LM distillation "
        "(lm-distill+fine-tune, lm-distill+ranker-distill: the pretrained encoder's hidden states and attention "
        "maps first)", "choices": PROCEDURES})
    layers: int = field(default=3, metadata={"help": "student layers: an evenly spaced copy of the source's"})
    layer_map: tuple[int, ...] | None = field(default=None, metadata={
        "help": "the source's layers the student keeps (0-based, comma-separated), e.g. 0,1 (bottom two)",
        "items": "layer indices", "min": 0})
    # base: at these defaults, 2 layers, the paper's procedure from the pretrained MiniLM's layers (0.481) beats
    # ranker distillation from the trained teacher's own layers (0.380; from the MiniLM's without LM distillation:
    # 0.356). The demo's student starts from the teacher's layers: on its tiny sample that measured best.
    init_from: str = field(default="base", metadata={
        "help": "student weights: base (layers of the pretrained encoder), teacher (layers of the fine-tuned "
        "teacher), random, or a model folder"})
    head: str = field(default="cls", metadata={
        "help": "the student's ranking head: cls (the [CLS] pooler) or mean (the mean of the tokens' last hidden "
        "states; saved as a config flag that CrossEncoder reads)"})
    base: Path | None = field(default=None, metadata={
        "help": "the pretrained encoder (LM-distillation teacher); default: the teacher's init"})
    objective: str = field(default="kl", metadata={
        "help": "distillation loss: kl (listwise), margin-mse or mse", "choices": DISTILL_OBJECTIVES})
    temperature: float = field(default=1.0, metadata={"help": "the student's softmax temperature (kl)"})
    teacher_temperature: float | None = field(default=None, metadata={
        "help": "the teacher's softmax temperature (kl; default: the student's); e.g. 0.1 for cosine scores"})
    label_weight: float = field(default=0.0, metadata={"help": "weight of a label loss added to distillation"})
    hidden_weight: float = field(default=0.0, metadata={
        "help": "ranker distillation: weight of matching each student layer's hidden states to its teacher "
        "layer's (TinyBERT)"})
    group_size: int = field(default=GROUP_SIZE, metadata={"help": "candidates per ranker-distillation group"})
    random_negatives: int | None = field(default=None, metadata={
        "help": f"K members of each group drawn from teacher-scored random passages of the collection (default: one "
        f"in {RANDOM_SHARE} of --group-size, {RANDOM_NEGATIVES} of {GROUP_SIZE}; 0: BM25 candidates alone); "
        "a given --scores file needs K or more ('score --random-negatives K')", "min": 0})
    negatives: int = field(default=NEGATIVES, metadata={"help": "fine-tune procedures: hard negatives per group"})
    negatives_depth: int = field(default=NEGATIVES_DEPTH, metadata={
        "help": "fine-tune procedures: negatives come from the run's top-K"})
    score_depth: int = field(default=SCORE_DEPTH, metadata={
        "help": "candidates per query the teacher scores, and the top-K of --scores' lists that groups come from; "
        "LM-distillation pairs come from the same top-K", "min": 1, "formerly": ("depth",)})
    # 4 a query: 12,886 pairs on the study's 3,224 queries; twice as many ended lower at 2 layers (0.440 against
    # 0.481).
    lm_pairs_per_query: int = field(default=4, metadata={"help": "LM-distillation pairs per query"})
    progressive: tuple[int, ...] = field(default=(), metadata={
        "help": "layer counts of the stages before --layers (e.g. 4,3), dropped from the teacher stage by stage",
        "items": "layer counts", "min": 1})
    progressive_steps: int = field(default=200, metadata={"help": "optimizer steps of each progressive stage"})
    attention_weight: float = field(default=1.0, metadata={
        "help": "weight of the attention maps matched too (LM distillation; hidden-state matching)"})
    max_length: int = field(default=MAX_LENGTH, metadata={"help": "tokens per (query, passage) pair"})
    rank: TrainConfig = field(default_factory=lambda: replace(RANK_TRAINING), metadata={"prefix": ""})
    lm: TrainConfig = field(default_factory=lambda: replace(LM_TRAINING), metadata={"prefix": "lm-"})
    #: the teacher's bi-encoder bootstrap, applied to the student first
    bootstrap: BootstrapConfig | None = field(default=None, metadata={"prefix": "bootstrap-"})

    def __post_init__(self) -> None:
        """An unset ``random_negatives`` is one member in ``RANDOM_SHARE`` of the group."""
        if self.random_negatives is None:
            self.random_negatives = default_random_negatives(self.group_size)

    @property
    def student_layers(self) -> int | list[int]:
        """What ``make_student`` keeps: the layer map, or a count of evenly spaced layers."""
        return list(self.layer_map) if self.layer_map else self.layers


def phase_prefix(config: Any, name: str) -> str:
    """The prefix of the flags of ``config``'s nested phase ``name`` (a dataclass or its class), as its field's
    metadata declares it: ``phase_prefix(DistillConfig, "lm")`` is ``"lm-"`` (``--lm-batch-size``)."""
    return {f.name: f for f in fields(config)}[name].metadata["prefix"]


def result_fields(config: Any) -> list[Field]:
    """The fields of a config dataclass that change what training makes: all but those marked ``result: False``."""
    return [f for f in fields(config) if f.metadata.get("result", True) is not False]


def flag_name(f: Field, prefix: str = "") -> str:
    """``--PREFIXNAME`` of a config field (its ``flag`` metadata, or its name with dashes): the command line's and
    the recorded options' name of it."""
    return f"--{prefix}{f.metadata.get('flag') or f.name.replace('_', '-')}"


def plain(value: Any) -> Any:
    """A value as JSON keeps it: a path resolved, a tuple a list."""
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def result_options(config: Any, prefix: str = "") -> dict[str, Any]:
    """The options of ``config`` (a dataclass of this module) that change what training makes (``result_fields``),
    by the flag that sets them (``--batch-size``, ``--lm-batch-size``, ``--bootstrap-from``): a nested phase's
    under its ``prefix``, a bootstrap not run as ``--bootstrap: None``."""
    out: dict[str, Any] = {}
    for f in result_fields(config):
        value, nested = getattr(config, f.name), prefix + f.metadata.get("prefix", f"{f.name}-")
        if is_dataclass(value):
            out.update(result_options(value, nested))
        elif "prefix" in f.metadata:  # a phase not run
            out[f"--{nested.rstrip('-') or f.name}"] = None
        else:
            out[flag_name(f, prefix)] = plain(value)
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def refuse_changed(recorded: dict[str, Any], current: dict[str, Any], where: str | Path) -> None:
    """``--resume`` under options that change the result: an ``InputError`` naming ``where`` (what recorded them),
    the first option whose value differs (``current``'s order, then options only ``recorded`` has) and both values.
    Both are ``plain`` values by option name."""
    for name in [*current, *(k for k in recorded if k not in current)]:
        was, now = recorded.get(name), current.get(name)
        if was != now:
            raise InputError(f"--resume with {name} {_shown(now)}, but the run being resumed has {_shown(was)}: "
                             "resume it with the same value, or start over with --overwrite", where)
