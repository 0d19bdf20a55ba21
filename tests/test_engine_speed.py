"""The engine's speed paths on the CPU: static (bucketed) shapes, CUDA out of memory handled by halving the
budget, int8 dynamic quantization, padded attention heads through the CrossEncoder, compile mode names."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import InputError
from pipeline.rerank.batching import bucket_rows
from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.engine import PairChunk, ScoringEngine
from pipeline.runtime.devices import resolve_dtype


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_bert) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def ce(tiny) -> CrossEncoder:
    return CrossEncoder(tiny, device="cpu")


@pytest.fixture(scope="module")
def chunk(texts) -> PairChunk:
    queries = ["what is a cat", "river bank money", "piano"]
    return PairChunk(queries, [i % 3 for i in range(70)], passages=texts(70, 21, 1, 150))


def shapes(engine: ScoringEngine, chunk: PairChunk) -> list[tuple[int, int, int]]:
    """(rows, width, pairs) of every batch the engine makes of ``chunk``."""
    return [(*b.input_ids.shape, b.pairs) for b in engine.prepare(chunk)]


def test_bucketed_shapes_give_the_same_scores_from_a_few_shapes(ce, chunk):
    plain = next(ScoringEngine(ce, batch_tokens=1024).stream([chunk])).scores
    engine = ScoringEngine(ce, batch_tokens=1024, bucket=32)
    bucketed = next(engine.stream([chunk])).scores
    np.testing.assert_allclose(bucketed, plain, rtol=1e-5, atol=1e-6)
    seen = shapes(engine, chunk)
    assert all(width % 32 == 0 and rows * width <= 1024 for rows, width, _ in seen)
    assert all(rows == 1024 // width or (rows & (rows - 1) == 0 and rows >= pairs) for rows, width, pairs in seen)
    assert sum(pairs for _, _, pairs in seen) == 70 and any(rows > pairs for rows, _, pairs in seen)  # filler rows
    assert bucket_rows(3, 64, 1024) == 4 and bucket_rows(15, 64, 1024) == 16 and bucket_rows(16, 64, 1024) == 16
    assert bucket_rows(1, 512, 1024) == 1 and bucket_rows(5, 256, 1024) == 4  # capped by the budget: 1024 // 256
    widths = {width for _, width, _ in shapes(engine, PairChunk(["q"], [0] * 5, passages=["word " * n for n in
                                                                                           range(1, 300, 60)]))}
    assert widths <= {32 * k for k in range(1, 9)}
    with pytest.raises(InputError, match="CUDA graphs need a CUDA device"):
        ScoringEngine(ce, cuda_graphs=True)
    with pytest.raises(InputError, match="bucket"):
        ScoringEngine(ce, batch_tokens=512, bucket=1024)


def test_out_of_memory_halves_the_budget_and_retries_with_one_warning(tiny, chunk, monkeypatch, caplog):
    encoder = CrossEncoder(tiny, device="cpu")
    expected = next(ScoringEngine(encoder, batch_tokens=2048).stream([chunk])).scores
    score, calls = encoder.score, []

    def fails_when_large(input_ids, lengths, boundaries, padded):  # a device that holds 700 tokens at most
        calls.append(tuple(input_ids.shape))
        if input_ids.numel() > 700:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return score(input_ids, lengths, boundaries, padded)

    monkeypatch.setattr(encoder, "score", fails_when_large)
    engine = ScoringEngine(encoder, batch_tokens=2048)
    with caplog.at_level(logging.WARNING, logger="pipeline.rerank.engine"):
        got = next(engine.stream([chunk])).scores
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    warnings = [r for r in caplog.records if "out of memory" in r.getMessage()]
    assert len(warnings) == 1 and "halved to 1024" in warnings[0].getMessage()
    assert engine.batch_tokens < 2048 and engine.out_of_memory
    assert any(rows * width > 700 for rows, width in calls)  # it did fail, and recovered

    monkeypatch.setattr(encoder, "score", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("always")))
    with pytest.raises(InputError, match="single pair"):
        next(ScoringEngine(encoder, batch_tokens=2048).stream([chunk]))


def test_int8_quantizes_the_linear_layers(tiny, texts):
    import copy
    import warnings

    fp32 = CrossEncoder(tiny, device="cpu")
    int8 = CrossEncoder.from_model(copy.deepcopy(fp32.model), fp32.tokenizer, device="cpu", precision="int8")
    assert int8.precision == "int8" and fp32.precision == "float32" and int8.dtype == torch.float32
    assert CrossEncoder(tiny, device="cpu", precision="int8").precision == "int8"
    fp32_left = {n for n, m in int8.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert fp32_left == {"bert.pooler.dense", "classifier"}  # the body's layers replaced, the head kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        body = {n for n, m in fp32.model.named_modules() if isinstance(m, torch.nn.Linear) and ".layer." in n}
        by_hand = quantize_dynamic(copy.deepcopy(fp32.model), dict.fromkeys(body, per_channel_dynamic_qconfig))
    queries, passages = ["what is a cat"] * 40, texts(40, 22, 5, 120)
    a, b, c = (ScoringEngine(e).score_pairs(queries, passages)
               for e in (fp32, int8, CrossEncoder.from_model(by_hand, fp32.tokenizer, device="cpu")))
    np.testing.assert_array_equal(b, c)  # PyTorch's dynamic quantization, nothing else
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.05 * (1 + np.abs(a).max())
    with pytest.raises(InputError, match="CPU only"):
        resolve_dtype("int8", "cuda")
    with pytest.raises(ValueError, match="int8"):
        int8.save_pretrained(Path(tiny).parent / "never")
    assert not (Path(tiny).parent / "never").exists()
    from pipeline.train.trainer import autocast_dtype

    with pytest.raises(InputError, match="scoring precision"):
        autocast_dtype("int8", torch.device("cpu"))


def test_padded_attention_heads_through_the_cross_encoder(minilm_path, texts):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path))
    torch.manual_seed(0)  # TinyBERT's head size, 26, on a small model: 2 heads of 26
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=52, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1, attn_implementation="sdpa")
    model = BertForSequenceClassification(config).eval()
    plain = CrossEncoder.from_model(model, tokenizer, device="cpu")
    queries, passages = ["river bank"] * 30, texts(30, 23, 1, 100)
    expected = ScoringEngine(plain).score_pairs(queries, passages)
    padded = CrossEncoder.from_model(model, tokenizer, device="cpu", attention="sdpa-padded")
    assert padded.attention == "sdpa-padded"
    np.testing.assert_allclose(ScoringEngine(padded).score_pairs(queries, passages), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="unknown attention"):
        CrossEncoder.from_model(model, tokenizer, device="cpu", attention="flash9")


def test_compile_modes(tiny):
    assert CrossEncoder(tiny, device="cpu").compile is None
    static = CrossEncoder(tiny, device="cpu", compile="static")
    assert static.compile == "static" and torch._dynamo.config.recompile_limit >= 64
    assert CrossEncoder(tiny, device="cpu", compile=True).compile == "dynamic"
    with pytest.raises(InputError, match="compile mode"):
        CrossEncoder(tiny, device="cpu", compile="fast")
