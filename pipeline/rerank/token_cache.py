"""The passage token cache: every passage of a collection tokenized once per tokenizer, read without loading it.

A passage is tokenized again for every query that retrieves it and for every model; all our models share one
vocabulary. The cache stores each passage's token ids once per (collection, tokenizer): no special tokens, cut
at ``MAX_TOKENS`` (the longest passage any pair can hold), in the docstore's row order (``DocStore.positions``),
so the hot path of reranking and training assembles pairs from ids alone (``gather``).

Files, under the docstore's cache rules (``DocStore.cache_file``: ``$DISTILRANK_CACHE``, never beside the
collection, named by the collection's path, size and mtime) and the tokenizer's ``fingerprint``:

- ``NAME.TAG.tokens-FP.ids``: the ids of every passage, concatenated; ``uint16`` when the vocabulary fits
  (MS MARCO's 8.8M passages at about 80 tokens: about 1.4 GB), else ``uint32``;
- ``NAME.TAG.tokens-FP.offsets.npy``: int64 ``[passages + 1]``; row ``r`` is ``ids[offsets[r]:offsets[r + 1]]``;
- ``NAME.TAG.tokens-FP.json``: what was built, with the seals of both files (``pipeline.runtime.integrity``),
  written last: without it a cache is unbuilt and built again.

Every file is written under a temporary name and renamed (``pipeline.atomic``), and one process builds at a time
(``outputs.building``): the processes of a ``torchrun`` job that all open an unbuilt cache wait for the first to
build it, then memory-map its files. The temporary files of a killed build are removed by the next open, unless a
live process is building (``outputs.sweep_unheld``).

Both arrays are memory-mapped: a lookup reads the pages it touches, nothing is loaded whole. A changed collection
or tokenizer gets files of its own; a cache whose files disagree with its record is an ``InputError`` saying what
to delete. What opening costs: the record, the offsets read once (their order checked), and each file's seal
checked (a stat and a 256 KiB sample; a full read of a file whose mtime changed, after which the record is
renewed).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, one_line
from ..io.data import DocStore
from ..runtime import integrity
from ..runtime.atomic import atomic_write
from ..runtime.outputs import building, sweep_unheld
from ..runtime.progress import bar

log = logging.getLogger(__name__)

#: Passage tokens kept: the most a pair of the longest max length in use (512) can hold.
MAX_TOKENS = 512
#: The record's version: a cache of another version is built again (2: the files' seals are recorded).
VERSION = 2
#: Passages tokenized per call of the Rust tokenizer (parallel over the cores).
BUILD_BATCH = 8192


def plain_fast_tokenizer(tokenizer):
    """A private copy of the Rust tokenizer behind ``tokenizer`` without padding or truncation, or ``None`` for a
    tokenizer without one (a slow, Python tokenizer)."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    backend = copy.deepcopy(backend)
    backend.no_padding()
    backend.no_truncation()
    return backend


def fingerprint(backend) -> str:
    """What decides a Rust tokenizer's ids of a text without special tokens (vocabulary, normaliser,
    pre-tokenizer, added tokens), hashed: two tokenizers with equal fingerprints give passages equal ids."""
    state = json.loads(backend.to_str())
    for key in ("truncation", "padding", "post_processor"):
        state.pop(key, None)
    return hashlib.sha1(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def _version(record: Path) -> int | None:
    """The layout version a cache record states; ``None`` when there is no record or it is unreadable."""
    try:
        return int(json.loads(record.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def slice_ids(ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``ids[starts[i] : starts[i] + lengths[i]]`` for every ``i``, concatenated as int32: one fancy index (on a
    memory map, only the pages touched are read), no Python loop per passage."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    index = np.repeat(np.asarray(starts, dtype=np.int64) - (np.cumsum(lengths) - lengths), lengths)
    return np.asarray(ids[index + np.arange(total, dtype=np.int64)], dtype=np.int32)


@dataclass
class PassageTokens:
    """Token ids of many passages (no special tokens), flat: passage ``i`` is ``ids[starts[i] : starts[i] +
    lengths[i]]``. What the token cache hands the encoding rule instead of text."""

    ids: np.ndarray  # int32
    lengths: np.ndarray  # int64

    @classmethod
    def from_lists(cls, token_lists: Sequence[Sequence[int]]) -> PassageTokens:
        """From one list of ids per passage."""
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        ids = np.fromiter(itertools.chain.from_iterable(token_lists), dtype=np.int32, count=int(lengths.sum()))
        return cls(ids, lengths)

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.lengths) - self.lengths

    def take(self, index: np.ndarray) -> PassageTokens:
        """The passages ``index`` (any order, repeats allowed)."""
        index = np.asarray(index, dtype=np.int64)
        return PassageTokens(slice_ids(self.ids, self.starts[index], self.lengths[index]), self.lengths[index])

    def __len__(self) -> int:
        return len(self.lengths)


class TokenCache:
    """The token ids of a collection's passages for one tokenizer: ``TokenCache.open(docstore, tokenizer)``."""

    def __init__(self, docstore: DocStore, key: str, record: dict[str, Any], ids: np.ndarray, offsets: np.ndarray):
        self.docstore, self.key, self.record = docstore, key, record
        self.ids, self.offsets = ids, offsets
        self.max_tokens, self.vocab = int(record["max_tokens"]), int(record["vocab"])

    # ---- files --------------------------------------------------------------------------------

    @staticmethod
    def files(docstore: DocStore, key: str) -> dict[str, Path]:
        """The cache files of ``docstore`` for the tokenizer fingerprint ``key``."""
        stem = f"tokens-{key}"
        return {"ids": docstore.cache_file(f"{stem}.ids"), "offsets": docstore.cache_file(f"{stem}.offsets.npy"),
                "record": docstore.cache_file(f"{stem}.json")}

    @classmethod
    def open(cls, docstore: DocStore, tokenizer, build: bool = True, rebuild: bool = False,
             progress: bool | None = None) -> TokenCache:
        """The cache of ``docstore`` for ``tokenizer`` (a transformers fast tokenizer), built when absent (and
        ``build``) or when ``rebuild``. A slow tokenizer, or no cache and ``build=False``, is an ``InputError``;
        so is a corrupt cache."""
        backend = plain_fast_tokenizer(tokenizer)
        if backend is None:
            raise InputError(f"the token cache needs a fast (Rust) tokenizer; {type(tokenizer).__name__} is not one")
        key = fingerprint(backend)
        files = cls.files(docstore, key)
        sweep_unheld(files["record"], also=files.values())  # what a killed build left (none while one runs)
        if not rebuild and _version(files["record"]) not in (VERSION, None):
            log.info("the token cache %s has another layout version: building it again", files["record"])
            rebuild = True
        if rebuild or not files["record"].is_file():
            if not build:
                raise InputError(f"no token cache for this tokenizer (expected {files['record']}); build it with "
                                 "'distilrank tokenize'", docstore.path)
            with building(files["record"]):  # one builder (the ranks of a torchrun job wait for it, then read)
                if rebuild or _version(files["record"]) != VERSION:
                    cls.build(docstore, backend, key, progress)
        return cls._load(docstore, key, files)

    @classmethod
    def build(cls, docstore: DocStore, backend, key: str, progress: bool | None = None) -> None:
        """Tokenize every passage of ``docstore`` (rows in order, ``BUILD_BATCH`` at a time in one parallel call of
        the Rust tokenizer) into the cache files; the record is written last."""
        files = cls.files(docstore, key)
        vocab = backend.get_vocab_size(with_added_tokens=True)
        dtype = np.dtype(np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32)
        n = len(docstore)
        offsets = np.zeros(n + 1, dtype=np.int64)
        log.info("building the token cache of %s (%d passages) in %s", docstore.path, n, files["ids"].parent)
        with atomic_write(files["ids"], "wb") as out, bar(total=n, unit="passage", desc="tokenize",
                                                          enabled=progress) as progress_bar:
            for start in range(0, n, BUILD_BATCH):
                rows = np.arange(start, min(start + BUILD_BATCH, n))
                encodings = backend.encode_batch_fast(docstore.texts_at(rows), add_special_tokens=False)
                tokens = PassageTokens.from_lists([e.ids[:MAX_TOKENS] for e in encodings])
                offsets[start + 1 : start + 1 + len(rows)] = offsets[start] + np.cumsum(tokens.lengths)
                out.write(tokens.ids.astype(dtype).tobytes())
                progress_bar.update(len(rows))
        with atomic_write(files["offsets"], "wb") as out:
            np.save(out, offsets)
        stat = docstore.path.stat()
        record = {"version": VERSION, "fingerprint": key, "collection": str(docstore.path.resolve()),
                  "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "passages": n, "tokens": int(offsets[-1]),
                  "dtype": dtype.name, "vocab": vocab, "max_tokens": MAX_TOKENS,
                  "seals": {name: integrity.seal(files[name]) for name in ("ids", "offsets")}}
        cls._write_record(files["record"], record)
        log.info("token cache: %d passages, %d tokens (%.1f MB)", n, record["tokens"],
                 record["tokens"] * dtype.itemsize / 1e6)

    @staticmethod
    def _write_record(path: Path, record: dict[str, Any]) -> None:
        with atomic_write(path) as out:
            json.dump(record, out, indent=2)
            out.write("\n")

    @classmethod
    def _load(cls, docstore: DocStore, key: str, files: dict[str, Path]) -> TokenCache:
        """Memory-map the files and check them against the record; any disagreement is an ``InputError``."""
        path = files["record"]

        def corrupt(why: str) -> InputError:
            return InputError(f"corrupt token cache ({why}); delete the files {path.with_suffix('')}.* or rebuild it "
                              "with 'distilrank tokenize --rebuild'", path)

        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            stat = docstore.path.stat()
            n, tokens, dtype = int(record["passages"]), int(record["tokens"]), np.dtype(record["dtype"])
            expected = (record["fingerprint"], int(record["size"]), int(record["mtime_ns"]))
            max_tokens, vocab = int(record["max_tokens"]), int(record["vocab"])
            seals = {name: dict(record["seals"][name]) for name in ("ids", "offsets")}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise corrupt(f"unreadable record: {one_line(exc, 80)}") from None
        try:
            checked = {name: integrity.check(files[name], seal) for name, seal in seals.items()}
        except integrity.BrokenSeal as why:
            raise corrupt(str(why)) from None
        if checked != seals:  # copied or touched, the same bytes: renew the seals so the next open is cheap
            with contextlib.suppress(OSError):
                cls._write_record(path, {**record, "seals": checked})
        if dtype not in (np.uint16, np.uint32) or vocab > np.iinfo(dtype).max + 1:
            raise corrupt(f"token ids of type {dtype} for a vocabulary of {vocab}")
        if expected != (key, stat.st_size, stat.st_mtime_ns) or n != len(docstore):
            raise corrupt("its record describes another collection or tokenizer")
        try:
            offsets = np.load(files["offsets"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise corrupt(f"offsets unreadable: {type(exc).__name__}") from None
        if offsets.shape != (n + 1,) or offsets.dtype != np.int64 or offsets[0] != 0 or offsets[-1] != tokens:
            raise corrupt("offsets disagree with the record")
        steps = np.diff(offsets)
        if steps.size and (steps.min() < 0 or steps.max() > max_tokens):
            raise corrupt("offsets out of order")
        ids_file = files["ids"]
        if not ids_file.is_file() or ids_file.stat().st_size != tokens * dtype.itemsize:
            raise corrupt(f"{ids_file.name} is missing or not {tokens * dtype.itemsize} bytes")
        ids = np.memmap(ids_file, dtype=dtype, mode="r", shape=(tokens,)) if tokens else np.zeros(0, dtype=dtype)
        return cls(docstore, key, record, ids, offsets)

    # ---- lookups ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """Tokens of docstore ``rows`` (``DocStore.positions``); 0 for a passage without any."""
        rows = np.asarray(rows, dtype=np.int64)
        return np.asarray(self.offsets[rows + 1]) - np.asarray(self.offsets[rows])

    def gather(self, rows: np.ndarray, limit: int | None = None) -> PassageTokens:
        """The ids of docstore ``rows``, each cut at ``limit`` tokens (``slice_ids``: vectorised)."""
        rows = np.asarray(rows, dtype=np.int64)
        if limit is not None and limit > self.max_tokens:
            raise ValueError(f"the token cache keeps {self.max_tokens} tokens a passage, {limit} asked for")
        lengths = self.lengths(rows)
        if limit is not None:
            lengths = np.minimum(lengths, limit)
        ids = slice_ids(self.ids, np.asarray(self.offsets[rows]), lengths)
        if ids.size and int(ids.max()) >= self.vocab:
            raise InputError(f"corrupt token cache (token id {int(ids.max())} outside the vocabulary of {self.vocab}); "
                             "rebuild it with 'distilrank tokenize --rebuild'", self.docstore.path)
        return PassageTokens(ids, lengths)

    def get_many(self, docids: Sequence[str], limit: int | None = None) -> PassageTokens:
        """The ids of ``docids``; a docid the collection lacks raises ``KeyError`` naming it."""
        docids = list(docids)
        rows = self.docstore.positions(docids)
        if (rows < 0).any():
            raise KeyError(docids[int(np.argmax(rows < 0))])
        return self.gather(rows, limit)

    def __repr__(self) -> str:
        return f"TokenCache({self.docstore.path}, tokenizer {self.key}, {len(self)} passages)"
