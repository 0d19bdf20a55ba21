"""The first stage of a comparison, timed like every stage: BM25, dense or hybrid candidates, cached, or a
precomputed run.

``timed_search`` is the one way a first stage is run and timed (``Pipeline.first`` uses it too). ``CachedFirstStage``
adds what a comparison needs around it: the Lucene index built when missing (timed as the ``index`` stage), the
searcher of ``first_stage.kind`` (BM25; a dense index with its bi-encoder, refused when it was encoded from
another collection than ``data.collection``; or both fused), its run cached as ``FOLDER/KIND.trec`` with the key
it depends on (index commit points, k1, b, the dense index's fingerprints and faiss settings, the fusion, hits,
topics) in ``KIND.trec.json`` and reused while that key is unchanged, or a precomputed run file read instead;
and passage text from the collection file (memory-mapped) or the index.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..eval.timing import StageTiming, search_timing, timed_search
from ..io.data import DocStore
from ..io.runs import Run
from ..retrieval.bm25 import BM25, build_index, index_files, index_present
from ..retrieval.embeddings import DenseIndex
from ..retrieval.fusion import Hybrid
from ..runtime.atomic import atomic_write
from .config import FirstStageSection

log = logging.getLogger(__name__)

#: The cached first-stage run of a comparison: ``KIND.trec`` (``bm25.trec``, ``dense.trec``, ``hybrid.trec``).
RUN_FILE = "{}.trec"


def topics_digest(topics: Mapping[str, str]) -> str:
    """A fingerprint of the queries and their text, in order."""
    digest = hashlib.sha1()
    for qid, text in topics.items():
        digest.update(f"{qid}\t{text}\n".encode())
    return digest.hexdigest()


class CachedFirstStage:
    """The first stage of a comparison (see the module docstring); ``timings`` holds what ran (or was reused)."""

    def __init__(self, section: FirstStageSection, collection: Path | None, folder: Path, device: str = "auto",
                 precision: str | None = None):
        self.section, self.collection, self.folder = section, collection, Path(folder)
        self.device, self.precision = device, precision  # of the dense stage's query encoder
        self.timings: list[StageTiming] = []
        self._searcher = None

    @property
    def name(self) -> str:
        """The first stage's pipeline name in reports, and its run file's stem: its kind."""
        return self.section.kind

    @property
    def run_path(self) -> Path:
        return self.folder / RUN_FILE.format(self.name)

    def _bm25(self) -> BM25:
        """BM25 over the index (built first when missing) or the prebuilt one; starts the JVM."""
        cfg = self.section
        if cfg.prebuilt:
            return BM25.from_prebuilt(cfg.prebuilt, cfg.k1, cfg.b)
        if not index_present(cfg.index):
            log.info("building the index %s from %s", cfg.index, self.collection)
            start = time.perf_counter()
            build_index(self.collection, cfg.index, threads=cfg.threads, force=cfg.index.exists())
            self.timings.append(StageTiming("index", time.perf_counter() - start, 0, 0,
                                            extra={"index": str(cfg.index)}))
        return BM25(cfg.index, cfg.k1, cfg.b)

    def _dense(self):
        """The dense index with its bi-encoder; refused when encoded from another collection than ours."""
        from ..retrieval.factory import open_dense

        cfg = self.section
        if self.collection is not None and self.collection.is_file():
            DenseIndex.open(cfg.dense).check_collection(self.collection)
        return open_dense(cfg.dense, cfg.encoder, cfg.faiss, cfg.ef_search, cfg.nprobe, self.device, self.precision,
                          cfg.refine)

    def searcher(self):
        """The searcher of ``kind`` (built on first use: a cached run with a collection needs no Java or model)."""
        if self._searcher is None:
            cfg = self.section
            if cfg.kind == "bm25":
                self._searcher = self._bm25()
            elif cfg.kind == "dense":
                self._searcher = self._dense()
            else:
                self._searcher = Hybrid(self._bm25(), self._dense(), fusion=cfg.fusion,
                                        fusion_weight=cfg.fusion_weight, rrf_k=cfg.rrf_k)
        return self._searcher

    def key(self, topics: Mapping[str, str]) -> dict[str, Any]:
        """What the first-stage run depends on; a cached run is reused only when this is unchanged."""
        cfg = self.section
        key: dict[str, Any] = {"kind": cfg.kind, "hits": cfg.hits, "topics": topics_digest(topics)}
        if cfg.kind != "dense":
            key.update(k1=cfg.k1, b=cfg.b)
            if cfg.prebuilt:
                key["prebuilt"] = cfg.prebuilt
            else:
                key["index"] = str(cfg.index)
                key["segments"] = index_files(cfg.index)
        if cfg.kind != "bm25":
            meta = DenseIndex.open(cfg.dense).meta
            key["dense"] = {"path": str(cfg.dense), "encoder": meta["encoder"]["fingerprint"],
                            "collection": meta["collection"]["fingerprint"], "faiss": meta.get("faiss", {}),
                            "search": [cfg.faiss, cfg.ef_search, cfg.nprobe, cfg.refine]}
        if cfg.kind == "hybrid":
            key["fusion"] = [cfg.fusion, cfg.fusion_weight if cfg.fusion == "interpolation" else cfg.rrf_k]
        return json.loads(json.dumps(key))  # as it reads back from the cache file (tuples become lists)

    def run(self, topics: Mapping[str, str]) -> tuple[Run, StageTiming]:
        """The candidates of ``topics`` (the run file's, the cached run while valid, or a new one) and their timing."""
        if self.section.run is not None:
            return self._precomputed(topics)
        cfg = self.section
        path, meta_path = self.run_path, self.run_path.with_name(f"{self.run_path.name}.json")
        if cfg.kind != "dense" and not cfg.prebuilt and not index_present(cfg.index):
            self.searcher()  # builds the index, so the cache key sees its segments
        key = self.key(topics)
        cached = self._cached(path, meta_path, key, topics)
        if cached is not None:
            return cached
        searcher = self.searcher()
        log.info("%s: %d queries, top %d", cfg.label, len(topics), cfg.hits)
        run, timing = timed_search(searcher, topics, cfg.hits, stage=self.name, threads=cfg.threads)
        run.name = self.name
        run.write(path, tag=self.name)
        with atomic_write(meta_path) as out:
            json.dump({"key": key, "timing": timing.to_dict()}, out, indent=2)
        timing.extra["cached"] = False
        self.timings.append(timing)
        return run, timing

    def _cached(self, path: Path, meta_path: Path, key: dict[str, Any],
                topics: Mapping[str, str]) -> tuple[Run, StageTiming] | None:
        """The cached run and the timing it was made with, when its key is ``key``; else ``None``."""
        if not (path.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            return None
        if meta.get("key") != key:
            return None
        run = Run.read(path, name=self.name)
        if not set(run) <= set(topics):
            return None
        log.info("%s: reusing %s (indexes, parameters and topics unchanged)", self.section.label, path)
        made = meta["timing"]
        timing = search_timing(self.name, made["wall_s"], made["queries"], made["pairs"], threads=made.get("threads"),
                               cached=True)
        self.timings.append(timing)
        return run, timing

    def _precomputed(self, topics: Mapping[str, str]) -> tuple[Run, StageTiming]:
        """The configured first-stage run, restricted to ``topics`` and cut at ``hits``."""
        source = self.section.run
        start = time.perf_counter()
        run = Run.read(source, name=self.name).subset(topics).top(self.section.hits)
        if not len(run):
            raise InputError("the first-stage run ranks none of the topics' queries", source)
        log.info("first stage: %d queries read from %s", len(run), source)
        timing = search_timing(self.name, time.perf_counter() - start, len(run), run.num_pairs, source=str(source),
                               cached=True)
        self.timings.append(timing)
        return run, timing

    def docstore(self):
        """Passage text: the collection file when given (memory-mapped), else the index's stored text."""
        if self.collection is not None and self.collection.is_file():
            return DocStore(self.collection)
        return self.searcher().docstore
