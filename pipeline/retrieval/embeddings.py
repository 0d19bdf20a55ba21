"""Passage embeddings on disk: encoded once (resumable), stored fp16 and memory-mapped, with what made them.

A dense index folder (``distilrank encode --output indexes/NAME``) holds:

- ``embeddings.f16``: ``count x dim`` float16, L2-normalised; row ``i`` is the passage ``docids[i]``;
- ``docids.npy``: the passage ids in row order (the collection's ids sorted, as ``DocStore`` keeps them;
  int64 when every id is a plain integer);
- ``meta.json``: the encoder (name, fingerprint, max_length), the collection (path, fingerprint, passages),
  dim, whether encoding is complete, the encode time, the seals of the two files above once complete
  (``pipeline.runtime.integrity``), and the faiss indexes built beside (``faiss.KIND``, each with its seal);
- ``progress.json`` while encoding: the rows done. Rows are encoded in blocks; after each block the memory
  map is flushed to disk, then the progress is written atomically, so a killed encode resumes at the last
  finished block and never trusts rows that were not flushed. The embeddings file's space is allocated before
  any work (``diskspace.reserve``): a full disk is a one-line ``DiskFull``, never a SIGBUS of the memory map. A
  folder holding only what an encode writes before ``meta.json`` (killed while starting) is started again.

An existing folder made with another encoder (fingerprint of its files) or another collection (fingerprint
of its bytes) is refused with an ``InputError``: an index is only ever searched with its own encoder.

What opening checks (a damaged index is an ``InputError`` saying what to delete): ``meta.json``'s keys and types,
the embeddings file's size; a complete index's seals (a stat and a 256 KiB sample of each file; a full read of a
file whose mtime changed, after which the seal is renewed in ``meta.json``); when resuming, ``progress.json``'s
count and a sample of the rows it claims (up to 64 rows read: an unwritten row is all zeros, an encoded one has
norm 1).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import InputError
from ..io.data import DocStore, key_positions
from ..runtime import integrity
from ..runtime.atomic import TEMP_SUFFIX, atomic_write
from ..runtime.diskspace import reserve
from ..runtime.progress import bar as progress_bar

log = logging.getLogger(__name__)

EMBEDDINGS, DOCIDS, META, PROGRESS = "embeddings.f16", "docids.npy", "meta.json", "progress.json"
#: What a folder holds before ``meta.json``: an encode killed while starting, started again.
STARTING = frozenset({DOCIDS, EMBEDDINGS})
#: Passages encoded between two checkpoints (what a kill can cost), per device type.
CPU_BLOCK, GPU_BLOCK = 1024, 16384
#: The folder's layout (2: a complete index records its files' seals).
FORMAT = 2
#: The files a complete index seals, and the rows of a resumed encode checked for having been written.
SEALED, CHECKED_ROWS = (EMBEDDINGS, DOCIDS), 64
#: What ``meta.json`` holds: section -> keys (None: a top-level key) and the type of each.
META_KEYS = {None: {"dim": int, "complete": bool, "encode_seconds": (int, float)},
             "encoder": {"name": str, "source": str, "fingerprint": str, "max_length": int},
             "collection": {"path": str, "fingerprint": str, "passages": int}}


class Encoder(Protocol):
    """What encoding and dense search need of a bi-encoder (``pipeline.biencoder.BiEncoder``)."""

    name: str
    source: Path
    max_length: int
    device: Any

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def embed(self, texts: list[str]) -> Any: ...  # a float32 torch tensor, one normalised row a text

    def score(self, query: str, passages: list[str]) -> np.ndarray: ...  # cosines of the query with each passage


def collection_fingerprint(path: str | Path) -> str:
    """A digest of the collection file's bytes (what the embeddings were computed from)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("collection file not found", path)
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path) as out:
        json.dump(data, out, indent=2)
        out.write("\n")


def damaged(path: Path, why: str, remedy: str = "delete the folder and encode the collection again") -> InputError:
    """The refusal of a damaged dense index file: what is wrong and what to do."""
    return InputError(f"damaged dense index ({why}): {remedy}", path)


def _read_json(path: Path, remedy: str = "delete the folder and encode the collection again") -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(path, f"unreadable: {type(exc).__name__}", remedy) from None
    if not isinstance(data, dict):
        raise damaged(path, "not a JSON object", remedy)
    return data


def _check_meta(meta: dict, path: Path) -> dict:
    """``meta`` when it holds every key of ``META_KEYS`` with its type (and sound values), else an ``InputError``."""
    for section, keys in META_KEYS.items():
        where = meta if section is None else meta.get(section)
        for key, kind in keys.items():
            value = where.get(key) if isinstance(where, dict) else None
            if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 1)):
                name = key if section is None else f"{section}.{key}"
                raise damaged(path, f"{name} is missing or not {getattr(kind, '__name__', 'a number')}")
    if not isinstance(meta.get("faiss", {}), dict):
        raise damaged(path, "faiss is not an object")
    return meta


@dataclass
class DenseIndex:
    """An encoded collection (see the module docstring): its metadata, ids and memory-mapped embeddings."""

    path: Path
    meta: dict

    @classmethod
    def open(cls, path: str | Path, complete: bool = True) -> DenseIndex:
        """Open ``path``; with ``complete``, an encode that has not finished is an ``InputError``."""
        path = Path(path)
        if not (path / META).is_file():
            raise InputError("no dense index in this folder (make one with 'distilrank encode')", path)
        index = cls(path, _check_meta(_read_json(path / META), path / META))
        size = (path / EMBEDDINGS).stat().st_size if (path / EMBEDDINGS).is_file() else None
        if size != index.count * index.dim * 2:
            raise damaged(path / EMBEDDINGS, f"{size} bytes, not the {index.count * index.dim * 2} of "
                          f"{index.count} x {index.dim} float16" if size is not None else "missing")
        if complete and not index.complete:
            raise InputError(f"encoding is not finished ({index.progress()[0]} of {index.count} passages); "
                             "rerun the same 'distilrank encode' to resume it", path)
        if complete:
            index.check_seals()
        return index

    def check_seals(self) -> None:
        """A complete index's files are as they were sealed (see the module docstring), or an ``InputError``; the
        seals of files that were copied or touched are renewed in ``meta.json`` (where the folder is writable)."""
        seals = self.meta.get("seals")
        if not isinstance(seals, dict):
            raise InputError("this index was encoded before distilrank sealed its files: run the same "
                             "'distilrank encode' again to seal them", self.path / META)
        try:
            checked = {name: integrity.check(self.path / name, seals.get(name)) for name in SEALED}
        except integrity.BrokenSeal as why:
            raise damaged(self.path, str(why)) from None
        if checked != seals:
            self.meta["seals"] = checked
            with contextlib.suppress(OSError):
                _write_json(self.path / META, self.meta)

    def seal(self) -> None:
        """Record the seals of the embeddings and the ids (one full read of each) in ``meta.json``."""
        self.meta.update(format=FORMAT, seals={name: integrity.seal(self.path / name) for name in SEALED})
        _write_json(self.path / META, self.meta)

    @property
    def count(self) -> int:
        return int(self.meta["collection"]["passages"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    def progress(self) -> tuple[int, float]:
        """Rows encoded and flushed (all of them once complete), and the seconds spent encoding them."""
        if self.complete:
            return self.count, float(self.meta["encode_seconds"])
        progress = self.path / PROGRESS
        if not progress.is_file():
            return 0, 0.0
        remedy = "delete it to encode from the beginning"
        recorded = _read_json(progress, remedy)
        done, seconds = recorded.get("done"), recorded.get("encode_seconds")
        if type(done) is not int or not 0 <= done <= self.count or not isinstance(seconds, (int, float)):
            raise damaged(progress, f"'done' must be a count of passages from 0 to {self.count}", remedy)
        return done, float(seconds)

    @property
    def collection(self) -> Path:
        """The collection the passages were read from (as recorded; it may have moved since)."""
        return Path(self.meta["collection"]["path"])

    @cached_property
    def docids(self) -> np.ndarray:
        """Passage ids in row order (int64 or str)."""
        try:
            docids = np.load(self.path / DOCIDS, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise damaged(self.path / DOCIDS, f"unreadable: {type(exc).__name__}") from None
        if docids.shape != (self.count,) or docids.dtype.kind not in "iU":
            raise damaged(self.path / DOCIDS, f"{docids.shape} ids of type {docids.dtype}, not {self.count}")
        return docids

    def embeddings(self, mode: str = "r") -> np.memmap:
        """The ``count x dim`` float16 embeddings, memory-mapped."""
        return np.memmap(self.path / EMBEDDINGS, dtype=np.float16, mode=mode, shape=(self.count, self.dim))

    def docid(self, row: int) -> str:
        return str(self.docids[row])

    def rows(self, docids: list[str]) -> np.ndarray:
        """The rows of ``docids``; -1 where the index lacks one."""
        return key_positions(self.docids, docids)

    def check_encoder(self, encoder: Encoder) -> None:
        """The index was encoded with this encoder (same files, same max_length), or an ``InputError``."""
        recorded = self.meta["encoder"]
        if recorded["fingerprint"] != encoder.fingerprint:
            raise InputError(f"encoded with {recorded['name']!r} (max_length {recorded['max_length']}), not with "
                             f"{encoder.name!r} from {encoder.source} (max_length {encoder.max_length}); "
                             "search it with its own encoder or encode the collection again", self.path)

    def check_collection(self, collection: str | Path) -> None:
        """The index was encoded from this collection (same bytes), or an ``InputError``."""
        if collection_fingerprint(collection) != self.meta["collection"]["fingerprint"]:
            raise InputError(f"encoded from another collection ({self.meta['collection']['path']}, "
                             f"{self.count} passages), not from {collection}", self.path)

    def record_faiss(self, kind: str, params: dict) -> None:
        """Note a faiss index built beside the embeddings (``meta.json``'s ``faiss``)."""
        self.meta.setdefault("faiss", {})[kind] = params
        _write_json(self.path / META, self.meta)


def _start(encoder: Encoder, store: DocStore, collection: Path, fingerprint: str, output: Path) -> DenseIndex:
    """A new folder: ids, the embeddings file with its space allocated (a full disk is a ``DiskFull`` here, before
    any work), and the metadata (not complete), written last; on failure the files made here go."""
    output.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(output / DOCIDS, "wb") as out:
            np.save(out, store.keys, allow_pickle=False)
        (output / EMBEDDINGS).unlink(missing_ok=True)  # one an encode killed while starting made
        reserve(output / EMBEDDINGS, len(store) * encoder.dim * np.dtype(np.float16).itemsize)
    except BaseException:
        for name in (DOCIDS, EMBEDDINGS):
            (output / name).unlink(missing_ok=True)
        raise
    meta = {
        "format": FORMAT,
        "encoder": {"name": encoder.name, "source": str(Path(encoder.source).resolve()),
                    "fingerprint": encoder.fingerprint, "max_length": encoder.max_length},
        "collection": {"path": str(collection.resolve()), "fingerprint": fingerprint, "passages": len(store)},
        "dim": encoder.dim, "dtype": "float16", "normalized": True, "complete": False, "encode_seconds": 0.0,
    }
    _write_json(output / META, meta)
    return DenseIndex(output, meta)


def encode_collection(encoder: Encoder, collection: str | Path, output: str | Path, block: int | None = None,
                      progress: bool | None = None) -> DenseIndex:
    """Embed every passage of ``collection`` (TSV or JSONL file) into the dense index folder ``output``.

    Resumes a folder left by a killed encode of the same encoder and collection; a finished one is returned
    as it is; a folder made with another encoder or collection is an ``InputError``.
    """
    collection, output = Path(collection), Path(output)
    with DocStore(collection) as store:  # validates the collection (ids, duplicates) before any work
        fingerprint = collection_fingerprint(collection)
        if (output / META).is_file():
            index = DenseIndex.open(output, complete=False)
            index.check_encoder(encoder)
            if index.meta["collection"]["fingerprint"] != fingerprint:
                raise InputError(f"this folder holds the embeddings of another collection "
                                 f"({index.meta['collection']['path']}); choose a new --output", output)
        elif output.exists() and any(p.name not in STARTING and not p.name.endswith(TEMP_SUFFIX)
                                     for p in output.iterdir()):
            raise InputError("output folder exists and is not a dense index; choose a new --output", output)
        else:
            index = _start(encoder, store, collection, fingerprint, output)
        if index.complete:
            if "seals" in index.meta:
                index.check_seals()
            else:
                log.info("%s: sealing the files of an index encoded before seals were recorded", output)
                index.seal()
            log.info("%s: already encoded (%d passages)", output, index.count)
            return index
        _encode_rows(encoder, store, index, int(block or (GPU_BLOCK if encoder.device.type == "cuda" else CPU_BLOCK)),
                     progress)
    return index


def _encode_rows(encoder: Encoder, store: DocStore, index: DenseIndex, block: int, progress: bool | None) -> None:
    """Encode the rows not done yet, a block at a time (flush, then checkpoint); mark the index complete."""
    done, seconds = index.progress()
    reserve(index.path / EMBEDDINGS, index.count * index.dim * np.dtype(np.float16).itemsize)  # never a SIGBUS
    matrix = index.embeddings("r+")
    if done:
        rows = np.unique(np.linspace(0, done - 1, min(done, CHECKED_ROWS)).astype(np.int64))
        unwritten = rows[np.linalg.norm(matrix[rows].astype(np.float32), axis=1) < 0.5]
        if unwritten.size:
            raise damaged(index.path / PROGRESS, f"it claims {done} passages encoded, but row {int(unwritten[0])} "
                          "was never written", "delete it to encode from the beginning")
        log.info("%s: resuming at passage %d of %d", index.path, done, index.count)
    with progress_bar(total=index.count, initial=done, desc="encode", unit=" passages", enabled=progress,
                      mininterval=1) as bar:
        while done < index.count:
            start = time.perf_counter()
            end = min(done + block, index.count)
            texts = store.get_many([str(k) for k in store.keys[done:end]])
            matrix[done:end] = encoder.embed(texts).cpu().numpy().astype(np.float16)
            matrix.flush()
            seconds += time.perf_counter() - start
            _write_json(index.path / PROGRESS, {"done": end, "encode_seconds": seconds})
            bar.update(end - done)
            done = end
    del matrix
    log.info("%s: %d passages encoded in %.1f s (%.1f passages/s)", index.path, index.count, seconds,
             index.count / max(seconds, 1e-9))
    index.meta.update(complete=True, encode_seconds=seconds)
    index.seal()
    os.unlink(index.path / PROGRESS)
