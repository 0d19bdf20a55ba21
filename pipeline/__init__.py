"""distilrank: BM25 candidates reranked by BERT cross-encoders, full teacher vs distilled students.

The public API is re-exported here and loaded lazily, so ``import pipeline`` is cheap and never
starts the JVM (the first BM25 use does) or imports torch (the first reranker does)::

    from pipeline import BM25, CrossEncoder, Pipeline, evaluate
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InputError": "errors",
    "Run": "runs",
    "DocStore": "data",
    "read_topics": "data",
    "read_qrels": "data",
    "iter_collection": "data",
    "TokenCache": "token_cache",
    "BM25": "retrieve",
    "build_index": "retrieve",
    "IndexDocStore": "retrieve",
    "evaluate": "evaluate",
    "evaluate_per_query": "evaluate",
    "msmarco_mrr10": "evaluate",
    "CrossEncoder": "cross_encoder",
    "ScoringEngine": "engine",
    "Ranker": "ranker",
    "Reranker": "rerank",
    "Pipeline": "rerank",
    "rerank_run": "rerank",
    "rerank_file": "rerank",
    "StageTiming": "timing",
    "write_submission": "submit",
    "validate_run": "submit",
    "load_config": "config",
    "run_demo": "demo",
    "train_teacher": "train.recipes",
    "distill": "train.recipes",
    "score_run": "train.recipes",
    "TrainConfig": "train.options",
    "BiEncoder": "biencoder",
    "DenseRetriever": "dense",
    "DenseIndex": "embeddings",
    "encode_collection": "embeddings",
    "Hybrid": "fusion",
    "make_student": "train.students",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
