"""The study's design, as data: its phases, its scale, the students it trains, the model shapes it costs, and the
targets its report checks."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.train import PROCEDURES, is_fine_tune
from pipeline.train.options import (
    GROUP_SIZE,
    LM_TRAINING,
    NEGATIVES,
    RANDOM_NEGATIVES,
    RANK_TRAINING,
    SCORE_DEPTH,
    DistillConfig,
)

#: The held-out measures of every row (the first two also make the learning curves).
MEASURES = ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100")
#: The phases, in the order they run (``--phases``).
PHASES = ("speed", "references", "teacher", "scores", "students", "table")
#: distill's default recipe: the paper's procedure with 4 random passages in each group of 16 (at the study's lr,
#: 1e-4, for one epoch; distill's defaults became lr 6e-4, then two epochs, after the levers below).
DEFAULT_2L = {"layers": 2, "procedure": "lm-distill+ranker-distill", "random_negatives": 4}
DEFAULT_3L = {**DEFAULT_2L, "layers": 3}
#: The default at lr 6e-4 for two epochs (distill's default since those levers won), the levers after it change.
TWO_EPOCHS_2L = {**DEFAULT_2L, "lr": 6e-4, "epochs": 2}
#: The two-epoch default's settings from the teacher's own layers (no LM distillation): the start as the lever.
TEACHER_LAYERS_2L = {**TWO_EPOCHS_2L, "procedure": "ranker-distill", "init_from": "teacher"}
#: One lever at a time against "2L" (``distilrank distill --layers 2 --procedure ranker-distill --random-negatives 0``
#: at the study's scale: distill's default when the study began), and the pair of levers the CPU learning curves
#: favoured (benchmarks/results/student_curves_cpu.md). A student draws random passages only where its lever says.
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
    # Dense targets from the trained teacher (TinyBERT's task-specific distillation): the student starts from the
    # teacher's own layers and head, and every student layer and attention map is matched to its teacher layer on
    # the ranking pairs, beside the score loss.
    "2L-hidden-states": {"init_from": "teacher", "hidden_weight": 1.0},
    # Progressive layer dropping from the teacher, 6 -> 4 -> 3 -> 2, each stage a short re-distillation (hidden
    # states matched too) that starts from a model that ranks.
    "2L-progressive": {"init_from": "teacher", "progressive": (4, 3), "progressive_steps": 80, "hidden_weight": 1.0},
    "3L-hidden-states": {"layers": 3, "init_from": "teacher", "hidden_weight": 1.0},
    # The size above the cliff: 4 of the teacher's layers with hidden states matched, a whole epoch (the first
    # progressive stage, which recovered to BM25's level in 6,400 pairs, trained 5 times longer).
    "4L-hidden-states": {"layers": 4, "init_from": "teacher", "hidden_weight": 1.0},
    # The best of the four procedures at 3 layers, with 4 of each group's 16 members teacher-scored random
    # passages of the collection (topicality first); it shares 3L-lm-distill+ranker-distill's LM phase.
    "3L-lm-distill-random-negatives": DEFAULT_3L,
    # The two best 3-layer levers together: the teacher's layers with hidden states matched, and random passages.
    "3L-hidden-states-random-negatives": {"layers": 3, "init_from": "teacher", "hidden_weight": 1.0,
                                          "random_negatives": 4},
    # Random passages at 2 layers (sharing 2L-lm-distill+ranker-distill's LM phase).
    "2L-lm-distill-random-negatives": DEFAULT_2L,
    # The best 3-layer student trained twice as long: its curve was still climbing at one epoch.
    "3L-lm-distill-random-negatives-2-epochs": {**DEFAULT_3L, "epochs": 2},
    "2L-lm-distill-random-negatives-2-epochs": {**DEFAULT_2L, "epochs": 2},
    # One lever at a time against distill's default at 3 layers (3L-lm-distill-random-negatives), a student that
    # learns: Margin-MSE instead of listwise KL, twice the LM distillation (8 candidates a query), three times the
    # learning rate.
    "3L-default-margin-mse": {**DEFAULT_3L, "objective": "margin-mse"},
    "3L-default-lm-8-a-query": {**DEFAULT_3L, "lm_pairs_per_query": 8},
    "3L-default-lr-3e-4": {**DEFAULT_3L, "lr": 3e-4},
    # A higher learning rate at both sizes.
    "2L-default-lr-3e-4": {**DEFAULT_2L, "lr": 3e-4},
    "3L-default-lr-6e-4": {**DEFAULT_3L, "lr": 6e-4},
    "2L-default-lr-6e-4": {**DEFAULT_2L, "lr": 6e-4},
    # The head, against the default at that rate (a student that learns).
    "2L-default-lr-6e-4-mean-head": {**DEFAULT_2L, "lr": 6e-4, "head": "mean"},
    "3L-default-lr-6e-4-mean-head": {**DEFAULT_3L, "lr": 6e-4, "head": "mean"},
    # TinyBERT's two stages on the paper's procedure: after the LM distillation (from the pretrained MiniLM), every
    # student layer and attention map matched to the trained teacher's beside the score loss, at that rate.
    "3L-default-lr-6e-4-hidden-states": {**DEFAULT_3L, "lr": 6e-4, "hidden_weight": 1.0},
    # Twice the training at that rate (at 1e-4 a second epoch gave 2 layers +0.09, 3 layers +0.05).
    "2L-default-lr-6e-4-2-epochs": TWO_EPOCHS_2L,
    "3L-default-lr-6e-4-2-epochs": {**TWO_EPOCHS_2L, "layers": 3},
    # A third epoch at that rate (the 2-layer two-epoch curve was still rising at its end).
    "2L-default-lr-6e-4-3-epochs": {**DEFAULT_2L, "lr": 6e-4, "epochs": 3},
    # The start, against the two-epoch default: the teacher's own layers, embeddings and head (the demo's student)
    # instead of an LM distillation from the pretrained MiniLM, ranker distillation at the same settings.
    "2L-default-2-epochs-teacher-layers": TEACHER_LAYERS_2L,
    "3L-default-2-epochs-teacher-layers": {**TEACHER_LAYERS_2L, "layers": 3},
    # LM distillation twice as long (8 pairs a query, 25,759 pairs; the default draws 4: 12,886) before the
    # two-epoch default's ranker distillation.
    "2L-default-2-epochs-lm-8-a-query": {**TWO_EPOCHS_2L, "lm_pairs_per_query": 8},
    # The dev queries, at the two-epoch default's budget: in a state of all 6,980 dev queries (``--dev-queries``
    # not given), one epoch and 2 LM pairs a query train about the pairs that the default trains over 3,200 (one
    # pass over twice the distinct queries instead of two over the same ones).
    "2L-default-lr-6e-4-lm-2-a-query": {**DEFAULT_2L, "lr": 6e-4, "lm_pairs_per_query": 2},
    # The same LM distillation, then two passes over all 6,980 dev queries (twice the default's ranker pairs).
    "2L-default-2-epochs-lm-2-a-query": {**TWO_EPOCHS_2L, "lm_pairs_per_query": 2},
    # A start that ranks: after the LM distillation, one epoch of the teacher's bi-encoder bootstrap (listwise KL to
    # the zero-shot MiniLM bi-encoder's scores over the dev queries' BM25 lists), then the two-epoch default's
    # ranker distillation.
    "2L-default-2-epochs-bootstrap": {**TWO_EPOCHS_2L, "bootstrap": True},
    # Where the teacher's gain is: it lifts passages from BM25's ranks 11-100, and the default's groups come from the
    # top 30. The two-epoch default with groups (and LM pairs) from the teacher's scores of the whole top 100 a
    # student reranks: ``distill --score-depth 100`` (a state scored that deep; in a shallower one, the default).
    "2L-default-2-epochs-score-depth-100": {**TWO_EPOCHS_2L, "score_depth": 100},
    # The listwise KL's temperature (1 in every student so far), both sides at 0.5: the same target logits, a
    # sharper softmax that weighs the top of each group more and its tail less (Hinton et al. 2015: a student too
    # small for all the teacher's knowledge does best at lower temperatures). The teacher's scores of a dev query's
    # top 30 spread 0.87 (standard deviation): at 1 a group's top candidate gets about 0.21 of the mass, at 0.5
    # about 0.4. It shares the two-epoch default's LM phase.
    "2L-default-2-epochs-temperature-0.5": {**TWO_EPOCHS_2L, "temperature": 0.5},
    # The other way (0.5 ended under the default): both softmaxes at 2, a flatter target that weighs the order of
    # a group's tail more (its top candidate about 0.13 of the mass).
    "2L-default-2-epochs-temperature-2": {**TWO_EPOCHS_2L, "temperature": 2.0},
    # Not a lever: the two-epoch default again at another seed (its LM pairs, its head, its groups' draws and
    # order), to weigh the levers' differences against what a student's training draws alone move.
    "2L-default-lr-6e-4-2-epochs-seed-43": {**TWO_EPOCHS_2L, "seed": 43},
}
#: The learning-curve figures of the levers, one per family (the figure's name): each family's levers with the
#: students they are measured against. Every lever is in at least one family (tests check).
LEVER_FAMILIES: dict[str, tuple[str, ...]] = {
    "start": ("2L", "2L-bottom-layers", "2L-teacher-init", "2L-lm-distill", "2L-bootstrap"),
    "head-and-lr": ("2L", "2L-mean-head", "2L-lr-5e-4", "2L-mean-head-lr-5e-4"),
    "objective": ("2L", "2L-label-loss", "2L-margin-mse", "2L-mse"),
    "groups": ("2L", "2L-random-negatives", "2L-score-depth-100", "2L-3-epochs"),
    "teacher-layers": ("2L", "2L-hidden-states", "2L-progressive", "3L-hidden-states", "4L-hidden-states",
                       "3L-hidden-states-random-negatives"),
    "random-passages": ("2L-lm-distill+ranker-distill", "2L-lm-distill-random-negatives",
                        "2L-lm-distill-random-negatives-2-epochs", "3L-lm-distill+ranker-distill",
                        "3L-lm-distill-random-negatives", "3L-lm-distill-random-negatives-2-epochs"),
    "default-3L": ("3L-lm-distill-random-negatives", "3L-default-margin-mse", "3L-default-lm-8-a-query",
                   "3L-default-lr-3e-4", "3L-default-lr-6e-4", "3L-default-lr-6e-4-mean-head",
                   "3L-default-lr-6e-4-hidden-states", "3L-default-lr-6e-4-2-epochs",
                   "3L-default-2-epochs-teacher-layers"),
    "default-2L": ("2L-lm-distill-random-negatives", "2L-lm-distill-random-negatives-2-epochs",
                   "2L-default-lr-3e-4", "2L-default-lr-6e-4", "2L-default-lr-6e-4-mean-head",
                   "2L-default-lr-6e-4-2-epochs", "2L-default-lr-6e-4-3-epochs",
                   "2L-default-2-epochs-teacher-layers", "2L-default-2-epochs-lm-8-a-query",
                   "2L-default-lr-6e-4-lm-2-a-query", "2L-default-2-epochs-lm-2-a-query",
                   "2L-default-2-epochs-bootstrap", "2L-default-2-epochs-score-depth-100",
                   "2L-default-2-epochs-temperature-0.5", "2L-default-2-epochs-temperature-2",
                   "2L-default-lr-6e-4-2-epochs-seed-43"),
}
#: The students' sizes (layers) in the procedures' table and the targets.
STUDENT_LAYERS = (2, 3)
#: The size the defaults' table adds because 2 layers miss their target (measured, not judged).
FALLBACK_LAYERS = 4


def procedure_rows(suffix: str, sizes: tuple[int, ...] = STUDENT_LAYERS, **settings) -> dict[str, dict]:
    """The four procedures x ``sizes`` (layers), named ``NL-PROCEDURE-SUFFIX`` (or ``NL-PROCEDURE``), at
    ``settings``; ``epochs`` only for the procedures that distil the teacher (fine-tuning has its own)."""
    return {f"{n}L-{p}{suffix}": {"layers": n, "procedure": p,
                                  **{k: v for k, v in settings.items() if k != "epochs" or not is_fine_tune(p)}}
            for n in sizes for p in PROCEDURES}


#: The study's table: the four procedures x the students' sizes and the fallback's at distill's defaults, the best
#: settings the levers found (its learning rate, random passages and epochs). The paper's procedure at these
#: settings is a lever's student (``3L-default-lr-6e-4-2-epochs``): a student whose configuration another one
#: trained shares its row.
PROCEDURE_ROWS = procedure_rows("-defaults", (*STUDENT_LAYERS, FALLBACK_LAYERS), lr=RANK_TRAINING.lr,
                                random_negatives=RANDOM_NEGATIVES, epochs=RANK_TRAINING.epochs)
#: The same table at one epoch (distill's defaults before a second epoch won).
ONE_EPOCH_PROCEDURE_ROWS = procedure_rows("-1-epoch", lr=RANK_TRAINING.lr, random_negatives=RANDOM_NEGATIVES)
#: The same table at the settings the study began with (its lr 1e-4, no random passages).
FIRST_PROCEDURE_ROWS = procedure_rows("")
#: The procedure tables of the report: ``--students`` group (and curve figure) -> title, students (the target on
#: the procedures' order judges PROCEDURE_ROWS).
PROCEDURE_TABLES: dict[str, tuple[str, dict[str, dict]]] = {
    "procedures": ("at distill's defaults", PROCEDURE_ROWS),
    "one-epoch-procedures": ("at distill's defaults, one epoch", ONE_EPOCH_PROCEDURE_ROWS),
    "first-procedures": ("at the study's first settings", FIRST_PROCEDURE_ROWS),
}
STUDENTS = {**LEVERS, **PROCEDURE_ROWS, **ONE_EPOCH_PROCEDURE_ROWS, **FIRST_PROCEDURE_ROWS}
#: The default layers and procedure of a student whose lever does not say.
DEFAULT_LAYERS = 2
DEFAULT_PROCEDURE = "ranker-distill"
#: Shapes whose cost the speed phase measures (MiniLM width): the teacher and the students.
TEACHER_LAYERS = 6
SHAPES = (TEACHER_LAYERS, *sorted(STUDENT_LAYERS, reverse=True))
#: The speed phase reports the share of pairs longer than the study's max length, and than this.
LONG_LENGTH = 256


@dataclass(frozen=True)
class Targets:
    """What the study sets out to show, on the held-out queries' nDCG@10 and the rows' rerank pairs/s."""

    teacher_gain: float  # the teacher >= BM25 + this
    kept_share: dict[int, float]  # layers -> share of the teacher's gain over BM25 the best student keeps
    speedup: dict[int, float]  # layers -> how many times the teacher's pairs/s the best student reranks at
    better: tuple[str, str]  # at each student size, the first procedure >= the second


TARGETS = Targets(teacher_gain=0.08, kept_share={2: 0.80, 3: 0.90}, speedup={2: 2.5, 3: 1.8},
                  better=("lm-distill+ranker-distill", "fine-tune"))


@dataclass
class Scale:
    """The study's scale: saved in the state on its first call, so every later call continues the same study."""

    dev_queries: int | None = None  # unlabeled dev queries used (None: all 6,980)
    depth: int = 30  # BM25 candidates a dev query that the bootstrap's bi-encoder scores
    score_depth: int = SCORE_DEPTH  # candidates a query the teacher's scores cover for a default student
    max_score_depth: int = 100  # the teacher scores this many (levers may use up to it)
    random_negatives: int = RANDOM_NEGATIVES  # random passages a query the teacher scores too
    group_size: int = GROUP_SIZE
    batch_size: int = 16
    max_length: int = 128
    bootstrap_epochs: int = 2
    lce_epochs: int = 1  # the teacher's LCE epochs over the labeled half
    student_epochs: int = 1
    student_lr: float = RANK_TRAINING.lr  # distill's default (a saved state keeps the rate it began with)
    finetune_epochs: int = 10
    lm_pairs_per_query: int = DistillConfig.lm_pairs_per_query  # distill's defaults
    lm_batch_size: int = LM_TRAINING.batch_size
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


def procedure(name: str) -> str:
    """The procedure of student ``name``."""
    return STUDENTS[name].get("procedure", DEFAULT_PROCEDURE)


def group_pairs(name: str, scale: Scale) -> int:
    """The pairs of one training group of student ``name``: a labeled query's positive and its negatives when it
    fine-tunes, else a distillation group."""
    return 1 + NEGATIVES if is_fine_tune(procedure(name)) else scale.group_size


def student_names(spec: str) -> list[str]:
    """The students ``--students`` names: ``levers``, a procedure table's group (``procedures``,
    ``one-epoch-procedures``, ``first-procedures``), ``all`` or names, comma-separated."""
    groups = {"levers": list(LEVERS), **{group: list(rows) for group, (_, rows) in PROCEDURE_TABLES.items()},
              "all": list(STUDENTS)}
    names: list[str] = []
    for part in spec.split(","):
        chosen = groups.get(part, [part])
        unknown = [n for n in chosen if n not in STUDENTS]
        if unknown:
            raise SystemExit(f"unknown student {unknown[0]!r}; choose from {', '.join(groups)}, "
                             + ", ".join(STUDENTS))
        names += [n for n in chosen if n not in names]
    return names
