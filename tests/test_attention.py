"""Attention paths: zero-padded heads give the scores of transformers' SDPA; CUDA graphs refuse a CPU."""
from __future__ import annotations

import pytest
import torch

from pipeline.rerank.attention import ATTENTION, takes_sdpa_mask, use_attention
from pipeline.rerank.cuda_graphs import GraphedForward


def _model(hidden: int, heads: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
                        intermediate_size=64, num_labels=1, attn_implementation="sdpa")
    return BertForSequenceClassification(config).eval()


@pytest.mark.parametrize(("hidden", "heads"), [(52, 2), (64, 2)])  # heads of 26 (TinyBERT's) and of 32
def test_padded_heads_leave_the_scores_unchanged(hidden, heads):
    model = _model(hidden, heads)
    ids = torch.randint(5, 120, (6, 23))
    lengths = torch.tensor([23, 23, 20, 17, 9, 3])
    mask = (torch.arange(23)[None, :] < lengths[:, None])[:, None, None, :]
    with torch.inference_mode():
        plain = [model(input_ids=ids, attention_mask=m).logits for m in (mask, None)]
        use_attention(model, "sdpa-padded")
        assert model.config._attn_implementation == "sdpa-padded" and takes_sdpa_mask(model.config)
        padded = [model(input_ids=ids, attention_mask=m).logits for m in (mask, None)]
    for a, b in zip(plain, padded, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    use_attention(model, "sdpa")
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="sdpa-padded"):
        use_attention(model, "flash")
    assert set(ATTENTION) == {"sdpa", "sdpa-padded"}


def test_cuda_graphs_need_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        GraphedForward(lambda x: x, torch.device("cpu"))
