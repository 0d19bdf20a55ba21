"""Package-wide defaults, each written once: depths, lengths, BM25's parameters and the seed.

Every layer reads them here (the TOML schema, the rankers, the first stages, training and the command line),
so a low module never imports the experiment layer for a number. Training's own sizes are in
``pipeline.train.options``.
"""
from __future__ import annotations

#: The rerank depth (candidates reranked per query) unless told otherwise: of a comparison, the rerank stage,
#: every ranker and ``distilrank rerank``. (The first stage's hits are ``DEFAULT_HITS``; training's
#: depths are in ``pipeline.train.options``.)
RERANK_DEPTH = 100
#: Tokens per (query, passage) pair, and of the query within it, unless the caller or a model's saved settings
#: say otherwise (the cross-encoder, the bi-encoder, training).
MAX_LENGTH = 256
QUERY_MAX_LENGTH = 64
#: Pyserini's defaults, and the values tuned for MS MARCO passage (Anserini's "tuned" BM25).
DEFAULT_K1, DEFAULT_B = 0.9, 0.4
MSMARCO_K1, MSMARCO_B = 0.82, 0.68
#: The first stages by name (``distilrank retrieve``, a comparison's ``first_stage.kind``; opened by
#: ``pipeline.retrieval.factory``).
FIRST_STAGES = ("bm25", "dense", "hybrid")
#: First-stage hits (candidates) per query unless told otherwise.
DEFAULT_HITS = 1000
#: The seed of every training phase (``pipeline.train.options``) and of weights a model folder lacks: a folder
#: without a ranking head (the packaged MiniLM) gets a fresh head drawn from it at every load
#: (``CrossEncoder(folder)``, ``rerank``; ``score`` and training: their ``--seed``), so two loads score alike.
SEED = 42
