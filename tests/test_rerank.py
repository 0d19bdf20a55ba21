"""CrossEncoder, the scoring engine and the rerank stage, on tiny BERT models built here (and the real MiniLM)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import InputError
from pipeline.eval.timing import StageTiming, timing_path, write_timings
from pipeline.io.runs import Run
from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.engine import PairChunk, ScoringEngine
from pipeline.rerank.ranker import Ranker
from pipeline.rerank.stage import Pipeline, Reranker, rerank_run
from pipeline.runtime.devices import resolve_device, resolve_dtype


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_bert) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("models") / "tiny1")


@pytest.fixture(scope="module")
def tiny2(tmp_path_factory, tiny_bert) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("models") / "tiny2", labels=2, seed=1)


@pytest.fixture(scope="module")
def ce(tiny) -> CrossEncoder:
    return CrossEncoder(tiny, device="cpu")


def predict(encoder: CrossEncoder, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Scores of ``(query, passage)`` pairs through the engine, in input order."""
    return ScoringEngine(encoder).score_pairs([q for q, _ in pairs], [p for _, p in pairs])


def per_pair_scores(encoder: CrossEncoder, queries: list[str], passages: list[str]) -> np.ndarray:
    """The reference: one pair per model call, no padding, no sorting."""
    out = []
    with torch.inference_mode():
        for q, p in zip(queries, passages, strict=True):
            out.append(float(encoder.logits_to_scores(encoder.model(**encoder.encode([q], [p])).logits)[0]))
    return np.array(out)


# ---- CrossEncoder ---------------------------------------------------------------------------


def test_encode_matches_the_tokenizer_pair_encoding(ce, minilm_path, texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    queries, passages = texts(6, 1, 1, 10), texts(6, 2, 1, 300)
    enc = ce.encode(queries, passages)
    ref = tok(queries, passages, truncation="only_second", max_length=256, padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(enc[key], ref[key]), key
    assert enc["input_ids"].shape[1] == 256  # long passages were truncated to the total length
    # the engine's batches come from the same rule: same ids, and token types from lengths and boundaries
    engine = ScoringEngine(ce)
    batch = engine.collate(engine.tokenize_chunk(PairChunk(queries, range(6), passages)), np.arange(6))
    assert torch.equal(batch.input_ids.long(), ref["input_ids"])
    positions = torch.arange(batch.input_ids.shape[1])[None, :]
    types = ce.token_types(positions, batch.boundaries[:, None], batch.lengths[:, None])
    assert torch.equal(types.long(), ref["token_type_ids"])


def test_encode_caps_the_query_and_truncates_only_the_passage(ce):
    enc = ce.encode(["word " * 200], ["cat dog " * 300])
    ids = enc["input_ids"][0].tolist()
    assert len(ids) == 256 and ids[0] == 101 and ids[-1] == 102
    first_sep = ids.index(102)
    assert first_sep == 1 + 64  # [CLS] + the query capped at 64 tokens
    types = enc["token_type_ids"][0]
    assert types[: first_sep + 1].eq(0).all() and types[first_sep + 1 :].eq(1).all()


def test_length_sorted_batches_equal_per_pair_scoring(ce, texts):
    queries, passages = texts(40, 3, 1, 12), texts(40, 4, 1, 200)
    expected = per_pair_scores(ce, queries, passages)
    engine = ScoringEngine(ce, batch_tokens=600, chunk_pairs=15)  # several chunks, many batches
    got = engine.score_pairs(queries, passages)
    assert np.abs(got - expected).max() < 1e-5
    assert np.abs(predict(ce, list(zip(queries, passages, strict=True))) - expected).max() < 1e-5
    # the batches really are length-sorted and within the budget
    lengths = engine.tokenize_chunk(PairChunk(queries, range(40), passages)).lengths
    plan = engine.plan(lengths)
    widths = [int(lengths[b].max()) for b in plan]
    assert widths == sorted(widths, reverse=True) and len(plan) > 1
    assert all(len(b) * lengths[b].max() <= 600 for b in plan)
    assert all(lengths[b].min() >= 0.9 * lengths[b].max() or len(b) == 1 for b in plan)


def test_pretokenized_passages_and_padding_multiple_give_the_same_scores(ce, texts):
    queries, passages = ["what is a cat", "river bank"], texts(30, 5, 1, 80)
    chunk = PairChunk(queries, [i % 2 for i in range(30)], passages=passages)
    engine = ScoringEngine(ce, batch_tokens=512, pad_multiple=16)
    by_text = next(engine.stream([chunk])).scores
    ids = ce.tokenize_passages(passages)
    by_ids = next(engine.stream([PairChunk(queries, chunk.query_of_pair, passage_tokens=ids)])).scores
    expected = per_pair_scores(ce, [queries[i % 2] for i in range(30)], passages)
    assert np.abs(by_text - expected).max() < 1e-5 and np.abs(by_ids - expected).max() < 1e-5


def test_two_logit_head_scores_by_log_softmax_of_the_relevant_class(tiny2, texts):
    ce2 = CrossEncoder(tiny2, device="cpu")
    assert ce2.num_labels == 2
    queries, passages = texts(5, 6, 1, 8), texts(5, 7, 5, 60)
    with torch.inference_mode():
        logits = ce2.model(**ce2.encode(queries, passages)).logits
    expected = torch.log_softmax(logits, dim=-1)[:, 1].numpy()
    assert np.abs(predict(ce2, list(zip(queries, passages, strict=True))) - expected).max() < 1e-5
    assert (predict(ce2, list(zip(queries, passages, strict=True))) <= 0).all()


def test_other_heads_are_refused(tmp_path, tiny_bert):
    tiny_bert(tmp_path / "nli", layers=1, labels=3)
    with pytest.raises(InputError, match="3-label classification head"):
        CrossEncoder(tmp_path / "nli", device="cpu")


def test_encoder_without_head_loads_as_one_logit_ranker(tmp_path, tiny_bert, caplog):
    path = tiny_bert(tmp_path / "bare", labels=None)
    with caplog.at_level(logging.WARNING, logger="pipeline.rerank.model"):
        bare = CrossEncoder(path, device="cpu")
    assert bare.num_labels == 1 and bare.new_head
    assert "newly initialised" in caplog.text
    assert predict(bare, [("a cat", "a dog")]).shape == (1,)


def test_unknown_folder_missing_tokenizer_and_offline_hub_name(tmp_path, tiny_bert, monkeypatch):
    with pytest.raises(InputError, match="model folder not found"):
        CrossEncoder(tmp_path / "nowhere" / "model", device="cpu")
    with pytest.raises(InputError, match="no config.json"):
        CrossEncoder(tmp_path, device="cpu")
    model = tiny_bert(tmp_path / "notok", layers=1)
    for path in model.iterdir():  # keep the model, drop the tokenizer
        if path.name not in ("config.json", "model.safetensors"):
            path.unlink()
    with pytest.raises(InputError, match="tokenizer"):
        CrossEncoder(tmp_path / "notok", device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="offline"):
        CrossEncoder("castorini/monobert-large-msmarco", device="cpu")


def test_save_and_load_round_trip(tmp_path, tiny, texts):
    from transformers import AutoModelForSequenceClassification

    original = CrossEncoder(tiny, device="cpu", max_length=128, query_max_length=32)
    saved = original.save_pretrained(tmp_path / "saved")
    loaded = CrossEncoder.from_pretrained(saved, device="cpu")
    assert (loaded.max_length, loaded.query_max_length, loaded.new_head) == (128, 32, False)
    direct = CrossEncoder(saved, device="cpu")  # the constructor reads the saved settings as well
    assert (direct.max_length, direct.query_max_length) == (128, 32)
    assert CrossEncoder(saved, device="cpu", max_length=64).max_length == 64  # unless told otherwise
    pairs = list(zip(texts(8, 8, 1, 10), texts(8, 9, 1, 200), strict=True))
    assert np.abs(predict(original, pairs) - predict(loaded, pairs)).max() < 1e-6
    plain = AutoModelForSequenceClassification.from_pretrained(saved)  # users can publish it as is
    assert plain.config.num_labels == 1


def test_devices_and_precisions():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and resolve_dtype("fp16", "cpu") == torch.float16
    with pytest.raises(InputError, match="unknown precision"):
        resolve_dtype("int3", "cpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bf16_scores_follow_fp32(tiny, texts):
    pairs = list(zip(texts(12, 10, 1, 10), texts(12, 11, 1, 100), strict=True))
    fp32 = predict(CrossEncoder(tiny, device="cpu"), pairs)
    bf16 = predict(CrossEncoder(tiny, device="cpu", precision="bf16"), pairs)
    assert bf16.dtype == np.float32 and np.abs(bf16 - fp32).max() < 0.05


# ---- the rerank stage -----------------------------------------------------------------------


class Store:
    """A docstore over a dict, with DocStore's ``get_many``/``missing`` interface."""

    def __init__(self, passages: dict[str, str]):
        self.passages = passages

    def missing(self, docids):
        return [d for d in docids if d not in self.passages]

    def get_many(self, docids):
        return [self.passages[d] for d in docids]


@pytest.fixture(scope="module")
def corpus(texts):
    docs = {f"d{i}": t for i, t in enumerate(texts(12, 12, 3, 60))}
    topics = {"q1": "cat dog river", "q2": "music guitar piano"}
    first = Run({"q1": [(f"d{i}", 10.0 - i) for i in range(8)], "q2": [(f"d{i}", 5.0 - i / 2) for i in range(4, 12)]})
    return Store(docs), topics, first


def test_depth_reranks_the_top_and_keeps_the_tail_in_order(ce, corpus):
    store, topics, first = corpus
    reranked, timing = rerank_run(ce, first, topics, store, depth=5)
    for qid, ranking in first.items():
        out = reranked[qid]
        assert [d for d, _ in out[5:]] == [d for d, _ in ranking[5:]]  # tail: first-stage order
        assert {d for d, _ in out} == {d for d, _ in ranking}  # nothing lost: recall kept
        head_docs = [d for d, _ in ranking[:5]]
        expected = predict(ce, [(topics[qid], store.passages[d]) for d in head_docs])
        order = np.argsort(-expected, kind="stable")
        assert [d for d, _ in out[:5]] == [head_docs[i] for i in order]
        scores = [s for _, s in out]
        assert all(a > b for a, b in zip(scores[4:], scores[5:], strict=False))
        assert scores == sorted(scores, reverse=True)
    assert list(reranked) == list(first)


def test_interpolation_of_normalised_scores(ce, corpus):
    store, topics, first = corpus
    alone, _ = rerank_run(ce, first, topics, store, depth=8, interpolation=0.0)
    assert [d for d, _ in alone["q1"]] == [d for d, _ in first["q1"]]  # weight 0: the first stage's order
    pure, _ = rerank_run(ce, first, topics, store, depth=8)
    full, _ = rerank_run(ce, first, topics, store, depth=8, interpolation=1.0)
    assert [d for d, _ in full["q1"]] == [d for d, _ in pure["q1"]]
    half, _ = rerank_run(ce, first, topics, store, depth=8, interpolation=0.5)
    docs = [d for d, _ in first["q1"]]
    # the cross-encoder's scores as the stage batched them: the tiny model scores pairs nearly alike, and min-max
    # normalisation magnifies the last bits that another batching (another chunk) changes
    pure_scores = dict(pure["q1"])
    ce_scores = np.array([pure_scores[d] for d in docs])
    bm = np.array([s for _, s in first["q1"]])
    norm = lambda x: (x - x.min()) / (x.max() - x.min())  # noqa: E731
    expected = dict(zip(docs, 0.5 * norm(ce_scores) + 0.5 * norm(bm), strict=True))
    assert all(abs(s - expected[d]) < 1e-5 for d, s in half["q1"])
    with pytest.raises(InputError, match="interpolation must be between 0 and 1"):
        rerank_run(ce, first, topics, store, interpolation=1.5)


def test_missing_docids_error_or_skip(ce, corpus):
    store, topics, first = corpus
    broken = Run({"q1": first["q1"][:3] + [("ghost1", 1.0), ("ghost2", 0.5)], "q2": first["q2"]})
    with pytest.raises(InputError, match=r"2 candidate docids are not in the collection: ghost1 \(query q1\), ghost2"):
        rerank_run(ce, broken, topics, store, depth=10)
    reranked, timing = rerank_run(ce, broken, topics, store, depth=10, skip_missing=True)
    assert [d for d, _ in reranked["q1"] if d.startswith("ghost")] == []
    assert timing.extra["skipped_missing"] == 2 and timing.pairs == 3 + 8


def test_queries_without_text_and_empty_passages(ce, corpus):
    store, topics, first = corpus
    with pytest.raises(InputError, match="no text in the topics: q2"):
        rerank_run(ce, first, {"q1": topics["q1"]}, store)
    blank = Store({**store.passages, "d1": "   "})
    with pytest.raises(InputError, match="passages of query q1 are empty: d1"):
        rerank_run(ce, first, topics, blank)
    reranked, timing = rerank_run(ce, first, topics, blank, skip_missing=True)
    assert "d1" not in [d for d, _ in reranked["q1"]] and timing.extra["skipped_empty"] == 1


def test_nan_scores_are_refused(tiny, corpus):
    store, topics, first = corpus
    broken = CrossEncoder(tiny, device="cpu")
    with torch.no_grad():
        broken.model.classifier.bias.fill_(float("nan"))
    with pytest.raises(InputError, match="NaN scores"):
        rerank_run(broken, first, topics, store)


def test_timing_fields_are_present_and_positive(ce, corpus, tmp_path):
    store, topics, first = corpus
    _, timing = rerank_run(ce, first, topics, store, depth=6)
    record = timing.to_dict()
    assert record["queries"] == 2 and record["pairs"] == 12
    for key in ("wall_s", "pairs_per_s", "queries_per_s", "latency_p50_ms", "latency_p95_ms"):
        assert record[key] > 0, key
    assert record["latency_p95_ms"] >= record["latency_p50_ms"]
    assert sum(timing.latencies_s) <= timing.wall_s
    path = write_timings(timing_path(tmp_path / "x.trec"), [timing], run="x.trec")
    assert path.name == "x.trec.timing.json"
    assert json.loads(path.read_text())["stages"][0]["pairs"] == 12


def test_streaming_chunks_hold_whole_queries(ce, corpus):
    store, topics, first = corpus
    small, timing = rerank_run(ce, first, topics, store, depth=8, chunk_pairs=3)
    big, _ = rerank_run(ce, first, topics, store, depth=8)
    assert timing.extra["chunk_pairs"] == 3
    for qid in first:
        assert [d for d, _ in small[qid]] == [d for d, _ in big[qid]]
        assert np.allclose([s for _, s in small[qid]], [s for _, s in big[qid]], atol=1e-5)


def test_pipeline_times_each_stage(ce, corpus):
    store, topics, first = corpus

    class FirstStage:
        docstore = store

        def batch_search(self, topics, k=1000):
            return first.subset(topics).top(k)

    pipeline = Pipeline(FirstStage(), ce, depth=4)
    run = pipeline.run(topics)
    assert [t.stage for t in pipeline.timings] == ["first_stage", "rerank"]
    assert run.num_pairs == first.num_pairs and all(t.wall_s > 0 for t in pipeline.timings)
    from_run = Pipeline(first, ce, depth=4, docstore=store).run({"q2": topics["q2"]})
    assert list(from_run) == ["q2"]
    with pytest.raises(InputError, match="docstore"):
        Pipeline(first, ce)
    # any Ranker: here the cross-encoder stage with options, weight 0 keeping the first stage's order
    reranker = Reranker(ce, interpolation=0.0)
    assert isinstance(reranker, Ranker)
    kept = Pipeline(first, reranker, depth=8, docstore=store).run(topics)
    assert [d for d, _ in kept["q1"]] == [d for d, _ in first["q1"]]


def test_stage_timing_percentiles():
    timing = StageTiming("rerank", 2.0, 4, 400, [0.1, 0.2, 0.3, 1.0])
    assert timing.pairs_per_s == 200 and timing.queries_per_s == 2
    assert timing.latency_ms(50) == pytest.approx(250.0) and timing.latency_ms(95) > 800
