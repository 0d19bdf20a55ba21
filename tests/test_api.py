"""The pair-level API: ``CrossEncoder.predict`` / ``rank`` (sentence-transformers' shapes) against the rerank
stage and against sentence-transformers itself, the per-query ``Ranker`` call, the ``Retriever`` protocol on the
three first stages, and the lazy ``from pipeline import X`` facade."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE

import pipeline
from pipeline.errors import InputError
from pipeline.io.data import DocStore, read_topics
from pipeline.io.runs import Run
from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.ranker import Ranker, Retriever
from pipeline.rerank.stage import Reranker, rerank_run

pytestmark = pytest.mark.usefixtures("one_thread")


def spread(folder: Path, seed: int = 0) -> Path:
    """The model in ``folder`` with its weight matrices redrawn at std 0.2 (saved in place), so its scores spread
    far beyond the tolerances below (at the tiny fixture's 0.02 a random BERT scores every pair nearly alike)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    torch.manual_seed(seed)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() > 1:
                weight.normal_(std=0.2)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tiny_bert, tmp_path_factory) -> Path:
    return spread(tiny_bert(tmp_path_factory.mktemp("api") / "tiny"))


@pytest.fixture(scope="module")
def encoder(model_dir) -> CrossEncoder:
    return CrossEncoder(model_dir, device="cpu")


@pytest.fixture(scope="module")
def data(tiny_data, tmp_path_factory) -> dict[str, Path]:
    return tiny_data(tmp_path_factory.mktemp("api-data"), queries=4, per_query=10)


def run_pairs(run: Run, topics: dict[str, str], store: DocStore) -> tuple[list[tuple[str, str]], list[str]]:
    """The run's (query, passage) pairs in run order, and the docid of each."""
    docids = [d for ranking in run.rankings.values() for d, _ in ranking]
    queries = [topics[q] for q, ranking in run.items() for _ in ranking]
    return list(zip(queries, store.get_many(docids), strict=True)), docids


# ---- predict and rank against the rerank stage -----------------------------------------------------


def test_predict_gives_the_rerank_stage_scores(encoder, data):
    run, topics, store = Run.read(data["run"]), read_topics(data["topics"]), DocStore(data["collection"])
    reranked, _ = rerank_run(encoder, run, topics, store, depth=100)
    pairs, docids = run_pairs(run, topics, store)
    scores = encoder.predict(pairs)
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float32 and scores.shape == (len(pairs),)
    stage = {(q, d): s for q, ranking in reranked.items() for d, s in ranking}
    qids = [q for q, ranking in run.items() for _ in ranking]
    assert np.array_equal(scores, np.array([stage[q, d] for q, d in zip(qids, docids, strict=True)], np.float32))
    assert scores.std() > 0.01  # scores that differ: the comparisons mean something
    # one pair alone: its score, a float; a batch size changes the batches, not the scores
    assert encoder.predict(pairs[3]) == pytest.approx(float(scores[3]), abs=1e-6)
    assert np.allclose(encoder.predict(pairs, batch_size=1), scores, atol=1e-6)
    assert np.allclose(encoder.predict(pairs, activation_fn=torch.sigmoid), 1 / (1 + np.exp(-scores)), atol=1e-6)


def test_rank_orders_one_query_as_the_stage_does(encoder, data):
    run, topics, store = Run.read(data["run"]), read_topics(data["topics"]), DocStore(data["collection"])
    qid = next(iter(run))
    one = run.subset([qid])
    reranked, _ = rerank_run(encoder, one, topics, store, depth=100)
    documents = store.get_many([d for d, _ in one[qid]])
    ranking = encoder.rank(topics[qid], documents)
    assert [r["corpus_id"] for r in ranking] == [[d for d, _ in one[qid]].index(d) for d, _ in reranked[qid]]
    assert [r["score"] for r in ranking] == pytest.approx([s for _, s in reranked[qid]], abs=1e-6)
    assert all(set(r) == {"corpus_id", "score"} for r in ranking)
    top = encoder.rank(topics[qid], documents, top_k=3, return_documents=True)
    assert top == [{**r, "text": documents[r["corpus_id"]]} for r in ranking[:3]]
    # the Ranker's per-query call on the stage gives the same list
    reranker = Reranker(encoder)
    assert isinstance(reranker, Ranker)
    assert reranker.rank(topics[qid], documents, top_k=3) == ranking[:3]


def test_ties_keep_input_order_and_empty_input(encoder):
    ranking = encoder.rank("cat", ["dog river", "cat bank", "dog river"], return_documents=True)
    first = [r["corpus_id"] for r in ranking if r["text"] == "dog river"]
    assert first == [0, 2]  # the same passage twice: equal scores, in input order
    assert encoder.predict([]).shape == (0,) and encoder.rank("cat", []) == []
    assert encoder.rank("cat", ["dog"], top_k=0) == []
    with pytest.raises(InputError, match="batch_size"):
        encoder.predict([("a", "b")], batch_size=0)
    with pytest.raises(InputError, match="top_k"):
        encoder.rank("cat", ["dog"], top_k=-1)


def test_batch_size_bounds_the_token_budget(encoder):
    assert encoder.scoring_engine(4).batch_tokens == 4 * encoder.max_length
    assert encoder.scoring_engine().batch_tokens == Reranker(encoder).engine.batch_tokens


# ---- against sentence-transformers --------------------------------------------------------------


def sentence_transformers_scores(folder: Path, pairs: list[tuple[str, str]], max_length: int) -> np.ndarray:
    """sentence-transformers' ``CrossEncoder.predict`` on ``folder`` with no activation (the raw logits)."""
    st = pytest.importorskip("sentence_transformers")
    model = st.CrossEncoder(str(folder), device="cpu", max_length=max_length, activation_fn=torch.nn.Identity())
    return np.asarray(model.predict([list(p) for p in pairs], batch_size=8, show_progress_bar=False))


def short_pairs(texts) -> list[tuple[str, str]]:
    """Pairs that neither tokenizer truncates (queries under ``query_max_length``, pairs under ``max_length``)."""
    return list(zip(texts(24, 5, 1, 8), texts(24, 6, 1, 60), strict=True))


def test_tiny_bert_scores_equal_sentence_transformers(model_dir, encoder, texts):
    pairs = short_pairs(texts)
    ours = encoder.predict(pairs)
    theirs = sentence_transformers_scores(model_dir, pairs, encoder.max_length)
    assert ours.std() > 0.01
    assert np.allclose(ours, theirs, atol=1e-5)
    st = pytest.importorskip("sentence_transformers")
    ranked = st.CrossEncoder(str(model_dir), device="cpu", max_length=encoder.max_length,
                             activation_fn=torch.nn.Identity()).rank(pairs[0][0], [p for _, p in pairs], top_k=5)
    assert [r["corpus_id"] for r in encoder.rank(pairs[0][0], [p for _, p in pairs], top_k=5)] == \
        [r["corpus_id"] for r in ranked]


def test_two_logit_scores_are_sentence_transformers_relevant_log_probability(tiny_bert, tmp_path, texts):
    folder = spread(tiny_bert(tmp_path / "mono", labels=2, seed=1))
    encoder = CrossEncoder(folder, device="cpu")
    pairs = short_pairs(texts)
    logits = torch.from_numpy(sentence_transformers_scores(folder, pairs, encoder.max_length))
    assert np.allclose(encoder.predict(pairs), torch.log_softmax(logits, dim=-1)[:, 1].numpy(), atol=1e-5)


def test_minilm_with_a_saved_head_scores_equal_sentence_transformers(minilm_path, tmp_path, texts):
    torch.manual_seed(0)
    folder = CrossEncoder(minilm_path, device="cpu").save_pretrained(tmp_path / "minilm-ce")  # its new head saved
    encoder = CrossEncoder(folder, device="cpu")
    assert not encoder.new_head
    pairs = short_pairs(texts)
    assert np.allclose(encoder.predict(pairs), sentence_transformers_scores(folder, pairs, encoder.max_length),
                       atol=1e-5)


# ---- the Retriever protocol and the facade ---------------------------------------------------------


def test_the_three_first_stages_are_retrievers(sample_index, sample_dense, minilm_path):
    from pipeline.retrieval.biencoder import BiEncoder
    from pipeline.retrieval.bm25 import BM25
    from pipeline.retrieval.dense import DenseRetriever
    from pipeline.retrieval.fusion import Hybrid

    bm25 = BM25(sample_index)
    dense = DenseRetriever(sample_dense, BiEncoder(minilm_path, device="cpu"))
    hybrid = Hybrid(bm25, dense, fusion="rrf")
    assert all(isinstance(r, Retriever) for r in (bm25, dense, hybrid))
    assert not isinstance(Run({}), Retriever)
    topics = dict(list(read_topics(SAMPLE / "queries.tsv").items())[:2])
    for retriever in (bm25, dense, hybrid):
        run = retriever.batch_search(topics, k=5, threads=1)
        for qid, text in topics.items():
            assert [d for d, _ in retriever.search(text, k=5)] == [d for d, _ in run[qid]]
    # the dense retriever is a Ranker too: per query, its bi-encoder's cosines
    passages = bm25.docstore.get_many([d for d, _ in bm25.search(next(iter(topics.values())), k=4)])
    ranking = dense.rank(next(iter(topics.values())), passages, top_k=2)
    assert len(ranking) == 2 and ranking[0]["score"] >= ranking[1]["score"]


def test_every_public_name_imports_from_the_package():
    assert {"CrossEncoder", "Ranker", "Retriever", "Reranker"} <= set(pipeline.__all__)
    for name in pipeline.__all__:
        namespace: dict = {}
        exec(f"from pipeline import {name}", namespace)  # the lazy facade, as users write it
        assert namespace[name] is getattr(importlib.import_module("pipeline"), name)
    assert pipeline.CrossEncoder is CrossEncoder
