"""The passage token cache: build, reuse, invalidation, corruption, and ids equal to the tokenizer's."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import DocStore
from pipeline.errors import InputError
from pipeline.token_cache import MAX_TOKENS, TokenCache


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path))


def _collection(folder: Path, texts: list[str], ids: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "collection.tsv"
    ids = ids or [str(7 * i + 3) for i in range(len(texts))]
    path.write_text("".join(f"{d}\t{t}\n" for d, t in zip(ids, texts, strict=True)), encoding="utf-8")
    return path


def _expected(tokenizer, texts: list[str], limit: int = MAX_TOKENS) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"][:limit] for t in texts]


def test_build_gives_the_tokenizers_ids_cut_at_512(tmp_path, texts, minilm_tokenizer, private_cache):
    passages = texts(40, seed=1) + ["word " * 700, "", "Ünïcode ½ café — 東京"]
    store = DocStore(_collection(tmp_path, passages))
    cache = TokenCache.open(store, minilm_tokenizer, progress=False)
    assert len(cache) == len(passages) and cache.ids.dtype == np.uint16  # 30,522 ids fit 16 bits
    assert isinstance(cache.ids, np.memmap) and isinstance(cache.offsets, np.memmap)  # never loaded whole
    assert cache.record["collection"] == str(store.path.resolve())
    assert all(p.parent == private_cache for p in TokenCache.files(store, cache.key).values())  # not beside the data
    docids = [str(7 * i + 3) for i in range(len(passages))][::-1]
    got = cache.get_many(docids)
    want = _expected(minilm_tokenizer, passages[::-1])
    assert got.lengths.tolist() == [len(w) for w in want] and max(got.lengths) == MAX_TOKENS
    assert got.ids.dtype == np.int32 and got.ids.tolist() == [i for w in want for i in w]
    cut = cache.get_many(docids, limit=5)
    assert cut.ids.tolist() == [i for w in want for i in w[:5]]
    assert cut.starts.tolist() == np.concatenate([[0], np.cumsum(cut.lengths)[:-1]]).tolist()
    with pytest.raises(KeyError, match="999999"):
        cache.get_many(["3", "999999"])
    with pytest.raises(ValueError, match="512"):
        cache.gather(np.array([0]), limit=MAX_TOKENS + 1)


def test_reused_rebuilt_for_a_changed_collection_or_tokenizer(tmp_path, texts, tiny_bert, minilm_tokenizer):
    from transformers import AutoTokenizer

    path = _collection(tmp_path / "c", texts(12, seed=2))
    store = DocStore(path)
    first = TokenCache.open(store, minilm_tokenizer, progress=False)
    files = TokenCache.files(store, first.key)
    built = {name: f.stat().st_mtime_ns for name, f in files.items()}
    again = TokenCache.open(DocStore(path), minilm_tokenizer, progress=False)
    assert again.key == first.key and {n: f.stat().st_mtime_ns for n, f in files.items()} == built  # reused

    other = AutoTokenizer.from_pretrained(str(tiny_bert(tmp_path / "tok", vocab=("[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                                                       "[MASK]", "cat", "dog"))))
    small = TokenCache.open(store, other, progress=False)
    assert small.key != first.key and TokenCache.files(store, small.key)["ids"] != files["ids"]
    assert set(small.get_many(["3"]).ids.tolist()) <= {1, 5, 6}  # its own vocabulary: unknown words are [UNK]

    new_texts = texts(13, seed=3)
    _collection(tmp_path / "c", new_texts)  # the collection changes: new files, ids of the new text
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = DocStore(path)
    rebuilt = TokenCache.open(changed, minilm_tokenizer, progress=False)
    assert TokenCache.files(changed, rebuilt.key)["ids"] != files["ids"] and len(rebuilt) == 13
    assert rebuilt.get_many(["3"]).ids.tolist() == _expected(minilm_tokenizer, new_texts[:1])[0]


def test_no_build_and_rebuild(tmp_path, texts, minilm_tokenizer):
    store = DocStore(_collection(tmp_path, texts(5, seed=4)))
    with pytest.raises(InputError, match="distilrank tokenize"):
        TokenCache.open(store, minilm_tokenizer, build=False)
    cache = TokenCache.open(store, minilm_tokenizer, progress=False)
    record = TokenCache.files(store, cache.key)["record"]
    before = record.stat().st_mtime_ns
    TokenCache.open(store, minilm_tokenizer, rebuild=True, progress=False)
    assert record.stat().st_mtime_ns > before


def test_a_slow_tokenizer_is_refused(tmp_path, texts):
    class PythonTokenizer:  # no Rust tokenizer behind it
        pass

    store = DocStore(_collection(tmp_path, texts(3, seed=5)))
    with pytest.raises(InputError, match="fast"):
        TokenCache.open(store, PythonTokenizer())


@pytest.mark.parametrize("damage", ["truncate ids", "record garbage", "record other size", "offsets shuffled",
                                    "offsets missing", "ids outside the vocabulary"])
def test_a_corrupt_cache_is_an_input_error(tmp_path, texts, minilm_tokenizer, damage):
    store = DocStore(_collection(tmp_path, texts(20, seed=6)))
    cache = TokenCache.open(store, minilm_tokenizer, progress=False)
    files = TokenCache.files(store, cache.key)
    del cache
    if damage == "truncate ids":
        files["ids"].write_bytes(files["ids"].read_bytes()[:-2])
    elif damage == "record garbage":
        files["record"].write_text("{not json")
    elif damage == "record other size":
        record = json.loads(files["record"].read_text())
        files["record"].write_text(json.dumps({**record, "size": record["size"] + 1}))
    elif damage == "offsets shuffled":
        offsets = np.load(files["offsets"])
        offsets[1:-1] = offsets[1:-1][::-1]
        np.save(files["offsets"], offsets)
    elif damage == "offsets missing":
        files["offsets"].unlink()
    else:
        files["ids"].write_bytes(np.full(files["ids"].stat().st_size // 2, 65535, dtype=np.uint16).tobytes())
    with pytest.raises(InputError, match="corrupt token cache"):
        TokenCache.open(store, minilm_tokenizer).get_many(["3"])
