"""What a phase should take, in seconds: its training pairs and scored pairs, from the configurations the phase
runs, at the pairs/s per model shape that the speed phase measured (its ``speed`` row)."""
from __future__ import annotations

from pipeline.train import is_fine_tune, uses_lm_distill
from pipeline.train.options import BootstrapConfig, DistillConfig, TrainConfig

from .design import DEFAULT_LAYERS, TEACHER_LAYERS

#: An lm-distill pair costs about two training pairs of a ranking step (a rough factor: the teacher's forward pass
#: and the matching of every layer's hidden states and attention come on top of the student's own step).
LM_PAIR_COST = 2.0
#: Held-out evaluations of a training run besides the periodic ones: at step 0 and at the end.
EXTRA_EVALS = 2
#: A phase that trains nothing (references, the table) takes about a minute at most.
UNTRAINED_PHASE_S = 60.0


class Cost:
    """Seconds of training runs and scoring at the measured rates; ``held_pairs``: one held-out evaluation."""

    def __init__(self, speed: dict, held_pairs: int):
        self.train_pps, self.score_pps, self.held_pairs = speed["train pairs/s"], speed["score pairs/s"], held_pairs

    @staticmethod
    def _rate(rates: dict[str, float], layers: int) -> float:
        return rates.get(str(layers), rates[str(DEFAULT_LAYERS)])  # a shape not measured: as the default student

    def scoring(self, pairs: float, layers: int) -> float:
        return pairs / self._rate(self.score_pps, layers)

    def training(self, groups: int, group_size: int, train: TrainConfig, layers: int) -> float:
        """``train.epochs`` passes over ``groups`` groups of ``group_size`` pairs, with the held-out evaluations
        every ``train.eval_every`` steps."""
        steps = train.epochs * groups / train.batch_size
        evals = steps / train.eval_every + EXTRA_EVALS if train.eval_every else 0
        return steps * train.batch_size * group_size / self._rate(self.train_pps, layers) + self.scoring(
            evals * self.held_pairs, layers)

    def bootstrap(self, boot: BootstrapConfig, dev: int, layers: int) -> float:
        """The bi-encoder scores each dev query's top ``score_depth`` (at the teacher's shape: the bi-encoder is
        the same MiniLM), then a model of ``layers`` trains on one group a dev query."""
        return (self.scoring(dev * boot.score_depth, TEACHER_LAYERS)
                + self.training(dev, boot.group_size, boot.train, layers))

    def teacher(self, boot: BootstrapConfig, lce: TrainConfig, negatives: int, dev: int, labeled: int) -> float:
        """The bootstrap over the dev queries, then LCE: one group (a positive and ``negatives``) a labeled query."""
        return (self.bootstrap(boot, dev, TEACHER_LAYERS)
                + self.training(labeled, 1 + negatives, lce, TEACHER_LAYERS))

    def student(self, cfg: DistillConfig, dev: int, labeled: int, lm_done: bool = False) -> float:
        """A student's procedure: the bootstrap if asked, lm-distill pairs over every query (unless ``lm_done``:
        another student trained that phase), then fine-tune (LCE groups of the labeled queries) or ranker-distill
        (scored groups of every query)."""
        queries = dev + labeled
        seconds = self.bootstrap(cfg.bootstrap, dev, cfg.layers) if cfg.bootstrap else 0.0
        if uses_lm_distill(cfg.procedure) and not lm_done:
            pairs = cfg.lm.epochs * queries * cfg.lm_pairs_per_query * LM_PAIR_COST
            seconds += pairs / self._rate(self.train_pps, cfg.layers)
        if is_fine_tune(cfg.procedure):
            return seconds + self.training(labeled, 1 + cfg.negatives, cfg.rank, cfg.layers)
        return seconds + self.training(queries, cfg.group_size, cfg.rank, cfg.layers)
