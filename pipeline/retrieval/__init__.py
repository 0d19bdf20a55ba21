"""First stages: BM25 over Lucene indexes (Pyserini), the bi-encoder, dense indexes (embeddings, faiss), the
hybrid fusion, and the factory that opens them by name.
"""
