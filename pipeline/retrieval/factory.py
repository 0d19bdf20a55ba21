"""The three first stages by name, opened from their options: one place for ``distilrank retrieve`` and
``compare``.

- ``bm25``: a local Lucene index (``index``) or a Pyserini prebuilt one (``prebuilt``), with ``k1``, ``b``;
- ``dense``: a dense index folder (``dense``, from ``distilrank encode``) searched with its bi-encoder
  (``encoder``; default the model recorded in the folder) through a faiss index (``faiss``), or a Pyserini
  prebuilt dense index name with a Pyserini query encoder (online only);
- ``hybrid``: both, fused (``fusion``: ``interpolation`` with ``fusion_weight``, or ``rrf`` with ``rrf_k``).
"""
from __future__ import annotations

from pathlib import Path

from ..defaults import FIRST_STAGES
from ..errors import InputError
from .biencoder import BiEncoder
from .bm25 import BM25
from .dense import DenseRetriever, PrebuiltDense
from .embeddings import META, DenseIndex
from .fusion import DEFAULT_FUSION_WEIGHT, DEFAULT_RRF_K, Hybrid


def open_bm25(index: str | Path | None = None, prebuilt: str | None = None, k1: float | None = None,
              b: float | None = None) -> BM25:
    """BM25 over a local index or a Pyserini prebuilt one (exactly one of them); ``k1``, ``b`` as ``BM25()``'s."""
    if (index is None) == (prebuilt is None):
        raise InputError("BM25 needs exactly one of a local index (--index) or a prebuilt one (--prebuilt)")
    return BM25.from_prebuilt(prebuilt, k1, b) if prebuilt else BM25(index, k1, b)


def open_dense(dense: str | Path, encoder: str | Path | None = None, faiss: str | None = None,
               ef_search: int | None = None, nprobe: int | None = None, device: str = "auto",
               precision: str | None = None, refine: int | None = None) -> DenseRetriever | PrebuiltDense:
    """A dense index folder with its bi-encoder, or (a name that is no folder) a Pyserini prebuilt dense index."""
    if not (Path(dense) / META).is_file():
        if Path(dense).exists() or "/" in str(dense):
            raise InputError("no dense index in this folder (make one with 'distilrank encode')", dense)
        if encoder is None:
            raise InputError(f"a Pyserini prebuilt dense index ({dense!r}) needs its query encoder's name "
                             "(--encoder, e.g. castorini/tct_colbert-v2-hnp-msmarco)")
        return PrebuiltDense.from_prebuilt(str(dense), str(encoder))
    recorded = DenseIndex.open(dense).meta["encoder"]
    model = BiEncoder(encoder or recorded["source"], device=device, precision=precision,
                      max_length=int(recorded["max_length"]))
    return DenseRetriever(dense, model, faiss=faiss, ef_search=ef_search, nprobe=nprobe, refine=refine)


def open_retriever(kind: str, *, index: str | Path | None = None, prebuilt: str | None = None,
                   k1: float | None = None, b: float | None = None, dense: str | Path | None = None,
                   encoder: str | Path | None = None, faiss: str | None = None, ef_search: int | None = None,
                   nprobe: int | None = None, refine: int | None = None, device: str = "auto",
                   precision: str | None = None, fusion: str = "interpolation",
                   fusion_weight: float = DEFAULT_FUSION_WEIGHT, rrf_k: int = DEFAULT_RRF_K, depth: int | None = None):
    """The first stage ``kind`` (``bm25``, ``dense`` or ``hybrid``) from its options (see the module docstring)."""
    if kind not in FIRST_STAGES:
        raise InputError(f"unknown first stage {kind!r}; expected one of {', '.join(FIRST_STAGES)}")
    if kind != "bm25" and dense is None:
        raise InputError(f"a {kind} first stage needs a dense index (--dense INDEX)")
    if kind == "dense" and (index is not None or prebuilt is not None):
        raise InputError("a dense first stage takes no BM25 index (use --hybrid to fuse BM25 and dense)")
    if kind == "bm25" and dense is not None:
        raise InputError("a BM25 first stage takes no dense index (use --dense or --hybrid)")
    if kind == "dense":
        return open_dense(dense, encoder, faiss, ef_search, nprobe, device, precision, refine)
    sparse = open_bm25(index, prebuilt, k1, b)
    if kind == "bm25":
        return sparse
    return Hybrid(sparse, open_dense(dense, encoder, faiss, ef_search, nprobe, device, precision, refine),
                  fusion=fusion, fusion_weight=fusion_weight, rrf_k=rrf_k, depth=depth)
