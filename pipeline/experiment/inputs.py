"""The inputs of a comparison, loaded before any work: the judged queries and every reranker.

A bad input fails here, at once, with an ``InputError`` naming it; nothing has been written yet.
"""
from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..io.data import read_qids, read_qrels, read_topics
from ..rerank.cross_encoder import CrossEncoder
from .config import Config


def load_queries(config: Config) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The judged queries to compare on (restricted to ``data.qids`` when given) and their qrels."""
    data = config.data
    topics = read_topics(data.topics)
    qrels = read_qrels(data.qrels)
    unknown = [q for q in qrels if q not in topics]
    if unknown:
        raise InputError(f"{len(unknown)} queries of the qrels are not in the topics (e.g. {unknown[:3]})", data.qrels)
    keep = [q for q in topics if q in qrels]
    if data.qids is not None:
        wanted = set(read_qids(data.qids))
        absent = sorted(wanted - set(qrels))
        if absent:
            raise InputError(f"{len(absent)} query ids have no judgments in {data.qrels} (e.g. {absent[:3]})",
                             data.qids)
        keep = [q for q in keep if q in wanted]
    if not keep:
        raise InputError("no judged queries to compare on", data.qrels)
    return {q: topics[q] for q in keep}, {q: qrels[q] for q in keep}


def load_rerankers(config: Config) -> dict[str, CrossEncoder]:
    """Every reranker of the config, teacher first (fails on the first model that cannot load or is untrained)."""
    rerank = config.rerank
    loaded = {}
    for spec in config.rerankers:
        try:
            loaded[spec.name] = CrossEncoder(spec.model, max_length=rerank.max_length, **rerank.encoder_kwargs())
        except InputError as err:
            raise InputError(f"reranker {spec.name!r}: {err}") from None
        if loaded[spec.name].new_head:
            raise InputError(f"reranker {spec.name!r} ({spec.model}) has no trained ranking head: "
                             "train it first (distilrank train / distilrank distill)")
    return loaded


def model_info(encoder: CrossEncoder) -> dict[str, Any]:
    """Size and shape of a reranker: parameters, layers, hidden width, dtype, device."""
    config = encoder.model.config
    return {
        "parameters": int(sum(p.numel() for p in encoder.model.parameters())),
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden": getattr(config, "hidden_size", None),
        "num_labels": encoder.num_labels,
        "dtype": encoder.precision,
        "device": str(encoder.device),
        "max_length": encoder.max_length,
    }
