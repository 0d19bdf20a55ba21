"""Collections, topics and qrels: reading, validating, and a low-memory passage store.

Formats:
- collection: MS MARCO ``collection.tsv`` (``pid<TAB>text``) or JSONL (``{"id": .., "contents": ..}``);
- topics: TSV ``qid<TAB>query``;
- qrels: TREC ``qid 0 docid grade`` (binary or graded).

Named topics and qrels (``msmarco-passage-dev-subset``, ``dl19-passage``, ``dl20-passage``) are
fetched through Pyserini when online.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import zipfile
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, one_line
from ..runtime.atomic import atomic_write
from ..runtime.outputs import building
from .textfiles import BOM, NOT_UTF8, checked_id, iter_lines

#: Named topic sets and the file a user can pass instead when offline.
NAMED_TOPICS = {
    "msmarco-passage-dev-subset": "queries.dev.small.tsv (MS MARCO passage dev, small)",
    "dl19-passage": "queries.dl19.tsv (TREC DL 2019 passage queries)",
    "dl20-passage": "queries.dl20.tsv (TREC DL 2020 passage queries)",
    "msmarco-passage-train": "queries.train.tsv (MS MARCO passage train queries)",
}
NAMED_QRELS = {
    "msmarco-passage-dev-subset": "qrels.dev.small.tsv",
    "dl19-passage": "qrels.dl19.tsv (TREC qrels)",
    "dl20-passage": "qrels.dl20.tsv (TREC qrels)",
}


def _pyserini_named(name: str, kind: str, instead: str):
    """Load named topics/qrels through Pyserini; fail fast with what file to pass when offline."""
    from ..runtime.java import import_pyserini

    search = import_pyserini("pyserini.search")
    try:
        loaded = search.get_topics(name) if kind == "topics" else search.get_qrels(name)
    except Exception as exc:  # pyserini raises many kinds when offline
        raise InputError(
            f"could not load named {kind} {name!r} through Pyserini ({one_line(exc, 160)}); "
            f"offline, pass the file instead: {instead}"
        ) from None
    if not loaded:
        raise InputError(f"Pyserini returned no {kind} for {name!r}; pass the file instead: {instead}")
    return loaded


def read_topics(path: str | Path) -> dict[str, str]:
    """Read ``qid<TAB>query`` lines (or a named topic set); empty queries and duplicate ids are errors."""
    if str(path) in NAMED_TOPICS and not Path(path).exists():
        loaded = _pyserini_named(str(path), "topics", NAMED_TOPICS[str(path)])
        return {str(q): t["title"] for q, t in loaded.items()}
    path = Path(path)
    topics: dict[str, str] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        qid, sep, query = line.partition("\t")
        if not sep or not qid.strip():
            raise InputError("expected 'qid<TAB>query'", path, lineno)
        qid = checked_id(qid, "query id", path, lineno)
        if not query.strip():
            raise InputError(f"empty query for qid {qid}", path, lineno)
        if qid in topics:
            raise InputError(f"duplicate query id {qid}", path, lineno)
        topics[qid] = query.strip()
    if not topics:
        raise InputError("no queries in topics file", path)
    return topics


def read_qrels(path: str | Path, topics: dict[str, str] | None = None) -> dict[str, dict[str, int]]:
    """Read TREC qrels ``qid iter docid grade``; with ``topics``, qrels for unknown queries are errors."""
    if str(path) in NAMED_QRELS and not Path(path).exists():
        loaded = _pyserini_named(str(path), "qrels", NAMED_QRELS[str(path)])
        return {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in loaded.items()}
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4:
            raise InputError("expected 'qid 0 docid grade' (TREC qrels)", path, lineno)
        qid, _, docid, grade = parts
        try:
            value = int(grade)
        except ValueError:
            raise InputError(f"grade {grade!r} is not an integer", path, lineno) from None
        if topics is not None and qid not in topics:
            raise InputError(f"qrels name query {qid}, which is not in the topics", path, lineno)
        docs = qrels.setdefault(qid, {})
        if docid in docs and docs[docid] != value:
            raise InputError(f"conflicting grades for query {qid}, docid {docid}", path, lineno)
        docs[docid] = value
    if not qrels:
        raise InputError("no judgments in qrels file", path)
    return qrels


def read_qids(path: str | Path) -> list[str]:
    """Query ids from a file, in order without repeats: one a line, or the first column of a TSV (topics,
    qrels); blank lines and ``#`` comments are skipped."""
    qids = [line.split()[0] for _, line in iter_lines(path) if line.strip() and not line.startswith("#")]
    if not qids:
        raise InputError("no query ids in file", path)
    return list(dict.fromkeys(qids))


def is_graded(qrels: dict[str, dict[str, int]]) -> bool:
    """Whether the qrels use grades above 1 (TREC DL style) rather than binary relevance."""
    return any(g > 1 for docs in qrels.values() for g in docs.values())


# ---- collections ------------------------------------------------------------------------------


def collection_format(path: Path) -> str:
    """``tsv`` or ``jsonl``, from the file name (``.jsonl``/``.json`` are JSONL, the rest TSV)."""
    name = path.name.removesuffix(".gz")
    return "jsonl" if name.endswith((".jsonl", ".json")) else "tsv"


def parse_collection_line(line: str, fmt: str, path: Path, lineno: int) -> tuple[str, str]:
    """One collection line -> ``(docid, text)``; malformed lines raise ``InputError``."""
    if fmt == "tsv":
        docid, sep, text = line.partition("\t")
        if not sep or not docid.strip():
            raise InputError("expected 'pid<TAB>passage'", path, lineno)
        return checked_id(docid, "document id", path, lineno), text
    try:
        obj = json.loads(line)
        docid, text = obj["id"], obj["contents"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError('expected a JSON object with "id" and "contents"', path, lineno) from None
    return checked_id(str(docid), "document id", path, lineno), str(text)


def iter_collection(path: str | Path) -> Iterator[tuple[str, str]]:
    """Stream ``(docid, text)`` from a TSV or JSONL collection (a JSONL folder: every file in it)."""
    path = Path(path)
    files = sorted(p for p in path.glob("*.json*")) if path.is_dir() else [path]
    if not files:
        raise InputError("no .jsonl files in collection folder", path)
    for file in files:
        fmt = collection_format(file)
        for lineno, line in iter_lines(file):
            if line.strip():
                yield parse_collection_line(line, fmt, file, lineno)


#: Bumped when the offset index changes meaning (2: a byte-order mark is no longer part of the first id).
INDEX_VERSION = 2


def _canonical_int(docid: str) -> bool:
    """Whether ``docid`` is written as a plain int64 ("7", not "007"), so it can be stored as a number."""
    return docid.isdigit() and len(docid) < 19 and (docid == "0" or docid[0] != "0")


def key_positions(keys: np.ndarray, docids: Sequence[str]) -> np.ndarray:
    """Positions of ``docids`` in the sorted ids ``keys`` (int64 when every id is a plain integer, else str);
    -1 where absent."""
    if keys.dtype.kind == "i":
        wanted = np.array([int(d) if _canonical_int(d) else -1 for d in docids], dtype=np.int64)
    else:
        wanted = np.array(list(docids), dtype=np.str_)  # its own width: a longer id must not be cut to match
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[pos] == wanted, pos, -1)


class DocStore:
    """Fetch passage text by id from a TSV or JSONL collection without loading it into memory.

    An offset index (sorted ids, byte offsets, lengths) is built once and cached under
    ``$DISTILRANK_CACHE`` (default ``~/.cache/distilrank``; the collection's folder may be
    read-only), keyed by the file's path, size and mtime; the file itself is memory-mapped. For the 8.8M-passage
    MS MARCO
    collection the index is about 8.8M x 20 bytes = 180 MB of RAM. The index file (``.npz``: a zip whose members
    carry CRC-32s, checked as they are read whole) is checked on every load at no extra cost: a damaged one
    (truncated, edited, a member missing, rows out of order or beyond the collection) is an ``InputError``
    saying to delete it (it is built again from the collection).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("collection file not found", self.path)
        self.format = collection_format(self.path)
        self.keys, self.offsets, self.lengths = self._load_or_build_index()
        self._file = open(self.path, "rb")
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if self.path.stat().st_size else b""

    # ---- index --------------------------------------------------------------------------------

    def cache_file(self, suffix: str) -> Path:
        """A cache file derived from this collection: under ``$DISTILRANK_CACHE`` (default
        ``~/.cache/distilrank``, never beside the collection, whose folder may be read-only), named after the
        collection and keyed by its path, size and mtime (and the index layout's version), so a changed collection
        gets new files."""
        stat = self.path.stat()
        key = f"{INDEX_VERSION}:{self.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        tag = hashlib.sha1(key.encode()).hexdigest()[:16]
        root = Path(os.environ.get("DISTILRANK_CACHE", Path.home() / ".cache" / "distilrank"))
        return root / f"{self.path.name}.{tag}.{suffix}"

    def _cache_path(self) -> Path:
        """The offset index's cache file."""
        return self.cache_file("offsets.npz")

    def _load_or_build_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cache = self._cache_path()
        stat = self.path.stat()
        cached = self._cached_index(cache, stat)
        if cached is not None:
            return cached
        with building(cache):  # the processes of a torchrun job: one scans, the others wait and read its file
            cached = self._cached_index(cache, stat)
            if cached is not None:
                return cached
            keys, offsets, lengths = self._scan()
            with atomic_write(cache, "wb") as out:
                np.savez(out, keys=keys, offsets=offsets, lengths=lengths, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        return keys, offsets, lengths

    @staticmethod
    def _cached_index(cache: Path, stat: os.stat_result) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The offset index in ``cache`` when it is there and describes the collection as it is now (``stat``);
        a damaged one is an ``InputError``."""
        if not cache.is_file():
            return None
        try:
            with np.load(cache, allow_pickle=False) as data:
                if int(data["size"]) != stat.st_size or int(data["mtime_ns"]) != stat.st_mtime_ns:
                    return None
                keys, offsets, lengths = data["keys"], data["offsets"], data["lengths"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"damaged docstore index ({one_line(exc, 80)}): delete it, and it is built again from "
                             "the collection", cache) from None
        n = len(keys)
        if (keys.ndim != 1 or offsets.shape != (n,) or lengths.shape != (n,) or not n
                or bool((keys[1:] <= keys[:-1]).any()) or int(offsets.min()) < 0 or int(lengths.min()) < 0
                or int((offsets + lengths).max()) > stat.st_size):
            raise InputError("damaged docstore index (its rows disagree with each other or with the collection): "
                             "delete it, and it is built again from the collection", cache)
        return keys, offsets, lengths

    def _scan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass over the file: validate every line, record (id, offset, length), check duplicates.

        Numeric ids are kept in compact arrays (8.8M MS MARCO ids: ~200 MB at peak); the first
        non-numeric id switches to a list of strings.
        """
        int_ids, str_ids = array("q"), None  # str_ids: list[str] once an id is not a plain integer
        offsets, lengths, linenos = array("q"), array("q"), array("q")
        offset = 0
        with open(self.path, "rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                size = len(raw)
                if lineno == 1 and raw.startswith(BOM):  # the text rule (pipeline.textfiles): a BOM is dropped
                    raw, offset = raw[len(BOM):], offset + len(BOM)
                    size -= len(BOM)
                line = raw.rstrip(b"\r\n")
                if line.strip():
                    try:
                        text = line.decode("utf-8")
                    except UnicodeDecodeError:
                        raise InputError(NOT_UTF8, self.path, lineno) from None
                    docid = parse_collection_line(text, self.format, self.path, lineno)[0]
                    if str_ids is None and _canonical_int(docid):
                        int_ids.append(int(docid))
                    else:
                        if str_ids is None:
                            str_ids = [str(i) for i in int_ids]
                        str_ids.append(docid)
                    offsets.append(offset)
                    lengths.append(len(line))
                    linenos.append(lineno)
                offset += size
        if not offsets:
            raise InputError("collection is empty", self.path)
        keys = np.frombuffer(int_ids, dtype=np.int64) if str_ids is None else np.array(str_ids, dtype=np.str_)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        dup = np.flatnonzero(keys[1:] == keys[:-1])
        if dup.size:
            first, second = sorted((linenos[order[dup[0]]], linenos[order[dup[0] + 1]]))
            raise InputError(f"duplicate document id {keys[dup[0]]} (first on line {first})", self.path, second)
        offs = np.frombuffer(offsets, dtype=np.int64)[order]
        return keys, offs, np.frombuffer(lengths, dtype=np.int64)[order].astype(np.int32)

    # ---- lookups ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.keys)

    def positions(self, docids: Sequence[str]) -> np.ndarray:
        """Rows of ``docids`` in the index (sorted by id; the token cache's rows too); -1 where absent."""
        return key_positions(self.keys, docids)

    def missing(self, docids: Sequence[str]) -> list[str]:
        """The ids in ``docids`` that the collection lacks, in input order."""
        pos = self.positions(list(docids))
        return [d for d, p in zip(docids, pos, strict=True) if p < 0]

    def __contains__(self, docid: str) -> bool:
        return bool(self.positions([docid])[0] >= 0)

    def get_many(self, docids: Sequence[str]) -> list[str]:
        """Passage texts for ``docids`` in order; a missing id raises ``KeyError`` naming it."""
        docids = list(docids)
        pos = self.positions(docids)
        if (pos < 0).any():
            raise KeyError(docids[int(np.argmax(pos < 0))])
        return self.texts_at(pos)

    def texts_at(self, rows: np.ndarray) -> list[str]:
        """Passage texts of index ``rows`` (as ``positions`` returns them), in order."""
        mm, texts = self._mm, []
        for start, length in zip(self.offsets[rows].tolist(), self.lengths[rows].tolist(), strict=True):
            line = mm[start : start + length].decode("utf-8")
            if self.format == "tsv":
                texts.append(line.partition("\t")[2])
            else:
                texts.append(str(json.loads(line)["contents"]))
        return texts

    def docid_at(self, position: int) -> str:
        """The id of the passage at ``position`` (0 to ``len - 1``) of the index's id order (for sampling)."""
        return str(self.keys[position])

    def get(self, docid: str) -> str:
        """The text of one passage."""
        return self.get_many([docid])[0]

    def close(self) -> None:
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._file.close()

    def __enter__(self) -> DocStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
