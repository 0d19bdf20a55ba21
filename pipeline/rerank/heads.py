"""Ranking heads of BERT-family cross-encoders: ``cls`` (transformers' own: a linear layer over the pooler's
dense + tanh of the [CLS] position) or ``mean`` (a linear layer over the mean of the last hidden states of the
pair's real tokens, padding left out: what a sentence-embedding model such as all-MiniLM-L6-v2 was trained to
produce).

A ``mean`` model is a ``MeanPoolBertForSequenceClassification``: a ``BertForSequenceClassification`` with the
same weights (its pooler is kept, unused) and the config flag ``distilrank_head = "mean"``. Saved folders stay
loadable three ways:

- ``CrossEncoder(folder)`` (and every distilrank command) reads the flag and builds this class;
- plain transformers: ``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)``:
  ``save_pretrained`` copies this file into the folder and names the class in the config's ``auto_map``;
- without ``trust_remote_code`` transformers loads the weights as a [CLS] ranker, whose scores are not the
  model's: use one of the two ways above.

This module imports nothing from distilrank (``save_pretrained`` copies it alone into model folders).
"""
from __future__ import annotations

import copy

import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

#: The ranking heads (``--head``).
HEADS = ("cls", "mean")
#: The config attribute that names a model's head (absent: ``cls``).
HEAD_KEY = "distilrank_head"


def mean_of_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``hidden`` ``[rows, width, size]`` over each row's real tokens. The mask is absent (every
    token real), ``[rows, width]`` (1 real, 0 padding) or boolean ``[rows, 1, 1, width]`` (SDPA style)."""
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask.reshape(attention_mask.shape[0], -1)[:, -hidden.shape[1]:].to(hidden.dtype)[..., None]
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class MeanPoolBertForSequenceClassification(BertForSequenceClassification):
    """A BERT cross-encoder whose head reads the mean of the last hidden states instead of the [CLS] pooler."""

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs) -> SequenceClassifierOutput:
        kwargs.pop("return_dict", None)
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        pooled = mean_of_tokens(outputs.last_hidden_state, attention_mask)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


MeanPoolBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")


def head_of(config) -> str:
    """The head a model config names (``cls`` when it names none)."""
    return getattr(config, HEAD_KEY, None) or "cls"


def ranker_class(config):
    """The class that loads a ranker with ``config``: ``MeanPoolBertForSequenceClassification`` for a ``mean``
    head, else ``AutoModelForSequenceClassification``."""
    head = head_of(config)
    if head == "cls":
        return AutoModelForSequenceClassification
    if head == "mean":
        if config.model_type != "bert":
            raise ValueError(f"the mean head is implemented for BERT-family models, not {config.model_type!r}")
        return MeanPoolBertForSequenceClassification
    raise ValueError(f"unknown ranking head {head!r} in the model config; expected one of {', '.join(HEADS)}")


def with_head(model, head: str):
    """``model`` (a BERT sequence-classification model) with ranking head ``head``: the model itself when it
    already has it, else a new model of the other class holding the same weights (the linear layer is kept)."""
    if head not in HEADS:
        raise ValueError(f"unknown ranking head {head!r}; expected one of {', '.join(HEADS)}")
    if head_of(model.config) == head:
        return model
    if not isinstance(model, BertForSequenceClassification):
        raise ValueError(f"the {head} head is implemented for BERT sequence-classification models, "
                         f"not {type(model).__name__}")
    config = copy.deepcopy(model.config)
    if head == "mean":
        setattr(config, HEAD_KEY, "mean")
    else:
        delattr(config, HEAD_KEY)
        config.auto_map = None
    target = MeanPoolBertForSequenceClassification if head == "mean" else BertForSequenceClassification
    converted = target(config).to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype)
    converted.load_state_dict(model.state_dict())
    return converted.train(model.training)
