"""The passage token cache: build, reuse, invalidation, corruption, and ids equal to the tokenizer's."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.io.data import DocStore
from pipeline.rerank.token_cache import MAX_TOKENS, TokenCache
from pipeline.train.options import RANDOM_NEGATIVES


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


# ---- the cache in reranking, scoring and the command line -------------------------------------------


@pytest.fixture(scope="module")
def reranking(tmp_path_factory, tiny_bert, texts) -> dict:
    """A tiny model, a collection (one blank passage), topics and a first-stage run over it."""
    from pipeline.io.runs import Run

    root = tmp_path_factory.mktemp("cached")
    passages = texts(30, seed=7, low=3, high=90)
    passages[4] = "   "
    collection = _collection(root, passages, [f"p{i}" for i in range(30)])
    (root / "topics.tsv").write_text("1\tcat dog river\n2\tmusic piano\n3\tfire water ice stone\n")
    run = Run({"1": [(f"p{i}", 30.0 - i) for i in range(12)], "2": [(f"p{i}", 9.0 - i) for i in range(10, 30)],
               "3": [(f"p{i}", 5.0 - i) for i in range(5, 25)]})
    run.write(root / "bm25.trec")
    return {"root": root, "model": tiny_bert(root / "model"), "collection": collection, "run": run,
            "topics": root / "topics.tsv"}


def test_reranking_from_the_cache_gives_the_same_scores(reranking):
    from pipeline.io.data import read_topics
    from pipeline.rerank.cross_encoder import CrossEncoder
    from pipeline.rerank.stage import Reranker

    encoder = CrossEncoder(reranking["model"], device="cpu")
    store, topics, run = DocStore(reranking["collection"]), read_topics(reranking["topics"]), reranking["run"]
    cache = encoder.passage_cache(store, progress=False)
    assert cache is not None and cache.key == TokenCache.open(store, encoder.tokenizer).key
    by_text, text_timing = Reranker(encoder, skip_missing=True, chunk_pairs=16).rerank(run, topics, store, depth=15)
    by_ids, ids_timing = Reranker(encoder, skip_missing=True, chunk_pairs=16, token_cache=cache).rerank(
        run, topics, store, depth=15)
    assert by_ids.rankings == by_text.rankings  # identical docids and scores, bit for bit
    assert ids_timing.extra["token_cache"] and not text_timing.extra["token_cache"]
    assert ids_timing.extra["skipped_empty"] == text_timing.extra["skipped_empty"] == 1  # p4 has no tokens
    with pytest.raises(InputError, match="passages of query 1 are empty: p4"):
        Reranker(encoder, token_cache=cache).rerank(run, topics, store, depth=15)


def test_teacher_scores_from_the_cache_are_the_same(reranking, tmp_path):
    from pipeline.train.recipes import Inputs, score_run

    run = reranking["run"].subset(["1", "3"])
    run.write(tmp_path / "run.trec")
    files = []
    for use in (True, False):
        inputs = Inputs.load(reranking["topics"], tmp_path / "run.trec", reranking["collection"], token_cache=use)
        score_run(reranking["model"], inputs, tmp_path / f"{use}.scores", depth=8, device="cpu")
        files.append((tmp_path / f"{use}.scores").read_text())
    assert files[0] == files[1] and len(files[0].splitlines()) == 1 + 2 * (8 + RANDOM_NEGATIVES)


def test_tokenize_command_and_a_corrupt_cache_exit_2(reranking, tmp_path, capsys):
    from pipeline.cli import main

    collection, model = str(reranking["collection"]), str(reranking["model"])
    assert main(["tokenize", "--collection", collection, "--model", model, "--no-progress"]) == 0
    assert "30 passages" in capsys.readouterr().out
    rerank = ["rerank", "--run", str(reranking["root"] / "bm25.trec"), "--model", model, "--topics",
              str(reranking["topics"]), "--collection", collection, "--device", "cpu", "--no-progress",
              "--skip-missing", "--output"]
    assert main([*rerank, str(tmp_path / "cached.trec")]) == 0
    assert main([*rerank, str(tmp_path / "text.trec"), "--no-token-cache"]) == 0
    assert (tmp_path / "cached.trec").read_text().replace("cached", "text") == (tmp_path / "text.trec").read_text()
    timing = json.loads((tmp_path / "cached.trec.timing.json").read_text())["stages"][0]
    assert timing["token_cache"] is True

    from transformers import AutoTokenizer

    store = DocStore(reranking["collection"])
    files = TokenCache.files(store, TokenCache.open(store, AutoTokenizer.from_pretrained(model)).key)
    files["ids"].write_bytes(files["ids"].read_bytes()[:-2])
    capsys.readouterr()
    assert main([*rerank, str(tmp_path / "broken.trec")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # one line after transformers' loading bar
    assert last.startswith("distilrank: error: ") and "corrupt token cache" in last
    assert not (tmp_path / "broken.trec").exists()
    assert main(["tokenize", "--collection", collection, "--model", model, "--rebuild", "--no-progress"]) == 0
    assert main([*rerank, str(tmp_path / "fixed.trec")]) == 0
