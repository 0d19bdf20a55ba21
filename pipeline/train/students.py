"""Student initialisation: a subset of a teacher's layers, another pretrained folder, or random weights.

Students are 1-logit ``AutoModelForSequenceClassification`` models, loadable by plain
transformers. Works for BERT-family encoders whose layers live in ``model.base_model.encoder.layer``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from ..defaults import SEED
from ..errors import InputError
from ..rerank.model import load_config, load_model


def evenly_spaced_layers(num_teacher: int, num_student: int) -> list[int]:
    """Teacher layer indices (0-based) for a student of ``num_student`` layers: the top layer of each
    of ``num_student`` equal blocks (6 -> 3 gives [1, 3, 5], every other layer; 6 -> 2 gives [2, 5])."""
    if not 1 <= num_student <= num_teacher:
        raise InputError(f"--layers must be between 1 and the teacher's {num_teacher} layers, got {num_student}")
    return [round((i + 1) * num_teacher / num_student) - 1 for i in range(num_student)]


def dropped_layers(num_teacher: int, sizes: list[int]) -> list[list[int]]:
    """The teacher layers each stage of progressive layer dropping holds: the first stage keeps ``sizes[0]``
    evenly spaced layers of the teacher, each later one evenly spaced layers of the stage before it
    (6 -> 4 -> 3 -> 2 gives [1, 2, 3, 5], [1, 3, 5], [3, 5])."""
    stages = [evenly_spaced_layers(num_teacher, sizes[0])]
    for size in sizes[1:]:
        stages.append([stages[-1][i] for i in evenly_spaced_layers(len(stages[-1]), size)])
    return stages


def encoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The transformer layers of a BERT-family model."""
    try:
        return model.base_model.encoder.layer
    except AttributeError:
        raise InputError(f"{type(model).__name__} has no BERT-style encoder.layer list: cannot copy layers") from None


def load_ranker(path: str | Path, seed: int = SEED) -> PreTrainedModel:
    """Load a folder as a 1-logit sequence-classification model in fp32 (a headless encoder gets a new head, drawn
    from ``seed`` without touching the caller's random state: two loads are alike)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError("not a model folder (no config.json)", path)
    config = load_config(str(path))  # a damaged config.json is an InputError naming the folder
    config.num_labels = 1
    return load_model(str(path), config, torch.float32, seed)[0]


def student_from_teacher(teacher: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """A copy of ``teacher`` keeping only the given layers (embeddings, pooler and head are kept)."""
    count = len(encoder_layers(teacher))
    if not layers or any(not 0 <= i < count for i in layers) or len(set(layers)) != len(layers):
        raise InputError(f"layer indices {layers} out of range (or repeated) for a {count}-layer teacher")
    student = copy.deepcopy(teacher)  # one deepcopy, so every module shares the student's own config
    copied = encoder_layers(student)
    student.base_model.encoder.layer = torch.nn.ModuleList(copied[i] for i in layers)
    student.config.num_hidden_layers = len(layers)
    for new_index, layer in enumerate(student.base_model.encoder.layer):  # keep cache/layer indices coherent
        attention = getattr(getattr(layer, "attention", None), "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index
    return student


def random_student(like: PreTrainedModel | str | Path, layers: int, hidden: int | None = None,
                   heads: int | None = None, intermediate: int | None = None, seed: int = SEED) -> PreTrainedModel:
    """A randomly initialised 1-logit model with the config of ``like`` reshaped as given."""
    config = copy.deepcopy(like.config) if isinstance(like, PreTrainedModel) else load_config(str(like))
    config.num_hidden_layers = layers
    config.num_labels = 1
    if hidden:
        config.hidden_size = hidden
    if heads:
        config.num_attention_heads = heads
    if intermediate:
        config.intermediate_size = intermediate
    if config.hidden_size % config.num_attention_heads:
        raise InputError(f"hidden size {config.hidden_size} is not a multiple of {config.num_attention_heads} heads")
    with torch.random.fork_rng(devices=[]):  # the weights from ``seed``, the caller's random state left alone
        torch.manual_seed(seed)
        return AutoModelForSequenceClassification.from_config(config)


def make_student(source: str | Path | PreTrainedModel, layers: int | list[int] | None = None,
                 init: str = "copy", seed: int = SEED, **shape) -> PreTrainedModel:
    """Build a student.

    ``init="copy"``: copy embeddings and ``layers`` of ``source`` (an int picks that many evenly
    spaced layers; a list names them; None keeps all). ``init="pretrained"``: ``source`` itself, a
    pretrained folder, as is. ``init="random"``: random weights shaped like ``source`` with
    ``layers`` layers (and optional ``hidden``, ``heads``, ``intermediate``). ``seed``: of random weights, and of
    the fresh head of a headless ``source`` folder.
    """
    model = source if isinstance(source, PreTrainedModel) else None
    if init == "pretrained":
        return model if model is not None else load_ranker(source, seed=seed)
    if init == "random":
        if not isinstance(layers, int):
            raise InputError("a random student needs a layer count (--layers N)")
        return random_student(source, layers, seed=seed, **shape)
    if init != "copy":
        raise ValueError(f"unknown student init {init!r}: copy, pretrained or random")
    model = model if model is not None else load_ranker(source, seed=seed)
    total = len(encoder_layers(model))
    if layers is None:
        chosen = list(range(total))
    elif isinstance(layers, int):
        chosen = evenly_spaced_layers(total, layers)
    else:
        chosen = list(layers)
    return student_from_teacher(model, chosen)
