"""Faiss indexes over a dense index's embeddings (``pipeline.embeddings``): built, saved beside them, searched.

Three kinds, all by inner product (the embeddings are normalised, so scores are cosines):

- ``flat``: ``IndexFlatIP``, exact; a float32 copy of the embeddings (4 x dim bytes a passage);
- ``hnsw``: ``IndexHNSWFlat``: a graph of ``hnsw_m`` links a node built with ``ef_construction``, searched
  with ``ef_search`` candidates (at least k); the vectors in float32 plus the graph;
- ``ivfpq``: ``IndexIVFPQ``: ``nlist`` inverted lists (default about 4 sqrt(N)), each vector's residual
  product-quantised into ``pq_m`` codes of ``pq_bits`` bits (default dim/8 bytes: 48 for the 384-d MiniLM,
  56 bytes with the id, so 8.8M passages take about 0.5 GB), searched in ``nprobe`` lists.

``refine`` (any kind; meant for ``ivfpq``, whose quantised scores cap its recall): ``search`` fetches the top
``k x refine`` approximate hits and re-scores them exactly against the memory-mapped fp16 embeddings, keeping
the top ``k``, as faiss's ``IndexRefineFlat`` does with a float32 copy held in memory (``k_factor``).

An index is saved as ``faiss.KIND`` in the dense index folder and noted, with the parameters it was built
with and its seal (``pipeline.runtime.integrity``: checked on every load, a stat and a 256 KiB sample, the whole
file when its mtime changed), in ``meta.json``; a file that is not noted there or does not match its seal is an
``InputError`` saying to build it again. Without a saved ``flat`` file, the exact index is built in memory when
opened.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, one_line
from ..runtime import integrity
from ..runtime.atomic import TEMP_SUFFIX, give_default_modes, temp_prefix
from ..runtime.diskspace import size_of, space_checked
from .embeddings import DenseIndex, damaged

log = logging.getLogger(__name__)

KINDS = ("flat", "hnsw", "ivfpq")
#: Rows converted to float32 and added at a time (bounds the memory beyond the index itself).
ADD_ROWS = 65536
#: Queries whose candidates ``rescore`` gathers at once (64 x 1,000 candidates x 384 floats: about 100 MB).
RESCORE_QUERIES = 64
#: The score of a missing hit (row -1), as faiss reports it for inner product.
NO_SCORE = -np.finfo(np.float32).max
#: k-means training points per centroid: faiss's minimum (it warns below), what IVF training draws, the most drawn.
MIN_PER_CENTROID, TRAIN_PER_LIST, MAX_TRAIN = 39, 64, 500_000


@dataclass(frozen=True)
class FaissParams:
    """Build and search parameters; ``None`` values are derived from the collection (``resolve``)."""

    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    nlist: int | None = None
    pq_m: int | None = None
    pq_bits: int | None = None
    nprobe: int = 32
    refine: int = 1
    seed: int = 0

    def resolve(self, count: int, dim: int) -> FaissParams:
        """The parameters with the derived values filled in for ``count`` vectors of width ``dim``."""
        nlist = self.nlist or max(1, min(int(4 * np.sqrt(count)), count // MIN_PER_CENTROID))
        pq_m = self.pq_m or max(m for m in range(1, max(dim // 8, 1) + 1) if dim % m == 0)
        pq_bits = self.pq_bits or max(1, min(8, int(np.log2(max(count // MIN_PER_CENTROID, 2)))))
        if dim % pq_m:
            raise InputError(f"pq_m {pq_m} must divide the embedding width {dim}")
        for name, value in (("hnsw_m", self.hnsw_m), ("ef_construction", self.ef_construction),
                            ("ef_search", self.ef_search), ("nprobe", self.nprobe), ("nlist", nlist),
                            ("refine", self.refine)):
            if value < 1:
                raise InputError(f"faiss {name} must be at least 1, not {value}")
        return FaissParams(self.hnsw_m, self.ef_construction, self.ef_search, nlist, pq_m, pq_bits, self.nprobe,
                           self.refine, self.seed)

    def of(self, kind: str) -> dict[str, int | None]:
        """The parameters that matter to an index of ``kind`` (what ``meta.json`` records)."""
        return {name: value for name, value in asdict(self).items() if name in _PARAMS_OF[kind]}


_PARAMS_OF = {"flat": (), "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
              "ivfpq": ("nlist", "pq_m", "pq_bits", "nprobe", "refine", "seed")}
#: The parameters a search may override (the rest are fixed when an index is built).
SEARCH_PARAMS = ("ef_search", "nprobe", "refine")


def _faiss():
    import faiss

    return faiss


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"unknown faiss index {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def _add(index, matrix: np.ndarray) -> None:
    for start in range(0, len(matrix), ADD_ROWS):
        index.add(np.ascontiguousarray(matrix[start : start + ADD_ROWS], dtype=np.float32))


def build(matrix: np.ndarray, kind: str, params: FaissParams = FaissParams()):
    """A faiss index of ``kind`` over the rows of ``matrix`` (any float dtype, e.g. the fp16 memory map)."""
    faiss = _faiss()
    count, dim = matrix.shape
    p = params.resolve(count, dim)
    if _check_kind(kind) == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p.ef_construction
    else:
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, p.nlist, p.pq_m, p.pq_bits, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(p.seed)
        size = min(count, max(TRAIN_PER_LIST * p.nlist, MIN_PER_CENTROID * 2**p.pq_bits), MAX_TRAIN)
        rows = np.sort(rng.choice(count, size=size, replace=False))
        index.train(np.ascontiguousarray(matrix[rows], dtype=np.float32))
    _add(index, matrix)
    return index


def configure(index, kind: str, k: int, params: FaissParams) -> None:
    """Set the search-time parameters (HNSW ``ef_search``, at least ``k``; IVF ``nprobe``)."""
    if kind == "hnsw":
        index.hnsw.efSearch = max(params.ef_search, k)
    elif kind == "ivfpq":
        index.nprobe = min(params.nprobe, index.nlist)


def search(index, kind: str, queries: np.ndarray, k: int, params: FaissParams,
           embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` (scores, rows) of each float32 query row, rows -1 where fewer exist; with ``params.refine``
    above 1 and the ``embeddings`` the index was built from, the top ``k x refine`` hits re-scored exactly."""
    fetch = min(k * params.refine if embeddings is not None else k, index.ntotal)
    configure(index, kind, fetch, params)
    scores, rows = index.search(queries, fetch)
    return rescore(embeddings, queries, rows, k) if fetch > k else (scores, rows)


def rescore(embeddings: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of each query's candidate ``rows`` (-1: none) by exact inner product with ``embeddings`` (any
    float dtype, e.g. the fp16 memory map), ``RESCORE_QUERIES`` queries at a time; ties keep the candidates' order."""
    top_scores = np.full((len(queries), k), NO_SCORE, dtype=np.float32)
    top_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(queries), RESCORE_QUERIES):
        part, query = rows[start : start + RESCORE_QUERIES], queries[start : start + RESCORE_QUERIES]
        valid = part >= 0
        vectors = embeddings[np.where(valid, part, 0).ravel()].reshape(*part.shape, -1).astype(np.float32)
        exact = np.where(valid, np.einsum("qcd,qd->qc", vectors, query.astype(np.float32)), -np.inf)
        best = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        found, span = np.take_along_axis(valid, best, axis=1), slice(start, start + len(part))
        top_scores[span, : best.shape[1]] = np.where(found, np.take_along_axis(exact, best, axis=1), NO_SCORE)
        top_rows[span, : best.shape[1]] = np.where(found, np.take_along_axis(part, best, axis=1), -1)
    return top_scores, top_rows


def index_file(dense: DenseIndex, kind: str) -> Path:
    return dense.path / f"faiss.{_check_kind(kind)}"


def build_beside(dense: DenseIndex, kind: str, params: FaissParams = FaissParams()) -> Path:
    """Build the ``kind`` index over ``dense``'s embeddings, save it as ``faiss.KIND`` (atomically), note it."""
    faiss = _faiss()
    start = time.perf_counter()
    resolved = params.resolve(dense.count, dense.dim)
    index = build(dense.embeddings(), kind, resolved)
    path = index_file(dense, kind)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        with space_checked(path, written=lambda: size_of(tmp)):
            faiss.write_index(index, tmp)
        give_default_modes([tmp])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    dense.record_faiss(kind, {**resolved.of(kind), "build_seconds": round(seconds, 3), "bytes": path.stat().st_size,
                              "seal": integrity.seal(path)})
    log.info("faiss %s index of %d passages built in %.1f s: %s (%.1f MiB)", kind, dense.count, seconds, path,
             path.stat().st_size / 2**20)
    return path


def _read(dense: DenseIndex, kind: str, path: Path):
    """The saved index, its seal checked first (renewed in ``meta.json`` when the file was copied or touched)."""
    remedy = f"delete it and build it again with 'distilrank encode ... --faiss {kind}'"
    noted = dense.meta.get("faiss", {}).get(kind)
    if not isinstance(noted, dict) or "seal" not in noted:
        raise damaged(path, "meta.json does not note it, or notes no seal", remedy)
    try:
        checked = integrity.check(path, noted["seal"])
    except integrity.BrokenSeal as why:
        raise damaged(path, str(why), remedy) from None
    try:
        index = _faiss().read_index(str(path))
    except RuntimeError as exc:
        raise damaged(path, one_line(exc, 120), remedy) from None
    if checked != noted["seal"]:
        with contextlib.suppress(OSError):
            dense.record_faiss(kind, {**noted, "seal": checked})
    return index


def load(dense: DenseIndex, kind: str):
    """The saved ``kind`` index of ``dense`` (an exact one is built in memory when none was saved)."""
    path = index_file(dense, kind)
    if path.is_file():
        index = _read(dense, kind, path)
    elif kind == "flat":
        index = build(dense.embeddings(), "flat")
    else:
        raise InputError(f"no faiss {kind} index here; build it with 'distilrank encode ... --faiss {kind}'",
                         dense.path)
    if index.ntotal != dense.count or index.d != dense.dim:
        raise InputError(f"faiss.{kind} holds {index.ntotal} vectors of width {index.d}, the embeddings "
                         f"{dense.count} of width {dense.dim}; rebuild it with 'distilrank encode ... --faiss {kind}'",
                         dense.path)
    return index
