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
    "Run": "io.runs",
    "DocStore": "io.data",
    "read_topics": "io.data",
    "read_qrels": "io.data",
    "iter_collection": "io.data",
    "TokenCache": "rerank.token_cache",
    "BM25": "retrieval.bm25",
    "build_index": "retrieval.bm25",
    "IndexDocStore": "retrieval.bm25",
    "evaluate": "eval.evaluate",
    "evaluate_per_query": "eval.evaluate",
    "msmarco_mrr10": "eval.evaluate",
    "CrossEncoder": "rerank.cross_encoder",
    "ScoringEngine": "rerank.engine",
    "RuntimeOptions": "rerank.options",
    "Ranker": "rerank.ranker",
    "Retriever": "rerank.ranker",
    "Reranker": "rerank.stage",
    "Pipeline": "rerank.stage",
    "rerank_run": "rerank.stage",
    "rerank_file": "rerank.stage",
    "StageTiming": "eval.timing",
    "write_submission": "eval.submit",
    "validate_run": "eval.submit",
    "load_config": "experiment.config",
    "run_demo": "experiment.demo",
    "train_teacher": "train.recipes",
    "distill": "train.recipes",
    "score_run": "train.recipes",
    "TrainConfig": "train.options",
    "BiEncoder": "retrieval.biencoder",
    "DenseRetriever": "retrieval.dense",
    "DenseIndex": "retrieval.embeddings",
    "encode_collection": "retrieval.embeddings",
    "Hybrid": "retrieval.fusion",
    "make_student": "train.students",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
