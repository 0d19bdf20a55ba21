"""The rerank core: the ranker contract, the cross-encoder model and its heads, the scoring engine (batching,
token cache, attention, CUDA graphs) and the rerank stage with the two-stage ``Pipeline``.
"""
