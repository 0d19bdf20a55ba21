"""Run by ``tests/test_scale_out.py``, in one process or under ``torchrun`` (pytest does not collect it): the
Trainer on a tiny model for a few steps, once straight through (``OUT/full``) and once stopped after two steps and
resumed (``OUT/resumed``).

    python tests/torchrun_train.py DATA MODEL OUT BATCH_SIZE
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.io.data import DocStore, read_qrels, read_topics
from pipeline.train.groups import LabeledGroups
from pipeline.train.recipes import load_encoder
from pipeline.train.tasks import RankerTask
from pipeline.train.trainer import TrainConfig, Trainer

SEED = 7


def task(data: Path, model: Path) -> RankerTask:
    """LCE on the tiny data's groups (1 positive + 3 negatives)."""
    topics, qrels = read_topics(data / "topics.tsv"), read_qrels(data / "qrels.tsv")
    docstore = DocStore(data / "collection.tsv")
    source = LabeledGroups(topics, qrels, data / "run.trec", negatives=3, seed=SEED, missing=docstore.missing)
    return RankerTask("lce", load_encoder(model, SEED, max_length=48), source, docstore, objective="lce", seed=SEED)


def config(batch_size: int, **extra) -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=batch_size, lr=1e-4, warmup=0.0, log_every=1, progress=False, seed=SEED,
                       **extra)


def main(data: Path, model: Path, out: Path, batch_size: int) -> None:
    Trainer(task(data, model), out / "full", config(batch_size), "cpu").fit()
    Trainer(task(data, model), out / "resumed", config(batch_size, stop_after=2), "cpu").fit()
    Trainer(task(data, model), out / "resumed", config(batch_size), "cpu").fit(resume=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
