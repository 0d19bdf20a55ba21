"""The cross-encoder ranker model: load it, its pair template, and the ONE (query, passage) encoding rule.

A ``CrossEncoderModel`` (the public ``CrossEncoder``, ``pipeline.rerank.cross_encoder``, adds the pair API on
top) is a folder (or hub name) that ``AutoModelForSequenceClassification`` loads:

- one output logit: the logit is the relevance score;
- two output logits (monoBERT style): the score is ``log_softmax(logits)[:, 1]``, the "relevant" class;
- a plain encoder without a ranking head (``BertModel``, ``BertForMaskedLM``, e.g. the pretrained MiniLM):
  loaded as a one-logit ranker with a newly initialised head (a warning says so), the start of fine-tuning; the
  head is drawn from a fixed seed (``head_seed``), so every load of the folder scores alike;
- any other classification head (3 or more labels) is refused with ``InputError``;
- so is a folder whose weights hold fewer (or more) encoder layers than its config's ``num_hidden_layers``
  (transformers would draw the missing layers at random, with only a warning).

The encoding rule: a pair is ``prefix + q + middle + p + suffix`` (``[CLS] q [SEP] p [SEP]`` for BERT; the
template is probed from the tokenizer's own pair encoding), the query capped at ``query_max_length`` tokens,
the passage truncated so the pair fits ``max_length`` tokens; token types: the first type up to the passage,
the second from it on, 0 on padding. ``pair_tokens`` lays out many pairs at once (``PairTokens``);
``encode`` (training) and the scoring engine (inference, ``pipeline.rerank.engine``) both build their batches
from it. The saved settings (``cross_encoder.json``: ``max_length``, ``query_max_length``) apply whenever a
folder is loaded, unless given explicitly.

Passages come as text or as token ids (``PassageTokens``) from the passage token cache (``passage_cache``:
built once per collection and tokenizer), which the encoding rule then only cuts and lays out.

How it runs: ``precision`` (``pipeline.runtime.devices``; ``int8`` quantizes the linear layers on the CPU),
``attention`` (``pipeline.rerank.attention``: ``sdpa``, or ``sdpa-padded`` for head sizes the fused kernels
refuse) and ``compile`` (``dynamic``: one graph for every shape; ``static``: one per shape, for the engine's
bucketed shapes, ``ScoringEngine(bucket=...)``).

This module sits below the scoring engine (which scores with the model); the pair API that scores through the
engine sits above it.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from ..defaults import MAX_LENGTH, QUERY_MAX_LENGTH, SEED
from ..errors import InputError, one_line
from ..io.data import DocStore
from ..runtime.atomic import atomic_write, give_default_modes
from ..runtime.devices import COMPILE_MODES, is_int8, resolve_device, resolve_dtype
from ..runtime.hub import is_hub_name, offline
from .attention import ATTENTION, takes_sdpa_mask, use_attention
from .token_cache import MAX_TOKENS, PassageTokens, TokenCache, plain_fast_tokenizer

log = logging.getLogger(__name__)

#: The sidecar file that keeps the encoding settings next to the transformers files.
SETTINGS_FILE = "cross_encoder.json"
#: Static shapes torch.compile may compile before it gives up on new ones (dynamo's recompile limit, raised).
STATIC_SHAPES = 128
#: A weight of encoder layer N, as the architectures name them (BERT ``layer.N.``, others ``layers.N.``, ``h.N.``).
LAYER_WEIGHT = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")
#: Files one of which a local model folder needs for its tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


# ---- loading ------------------------------------------------------------------------------------


def _locate(model_name_or_path: str | Path) -> str:
    """A local folder, or a hub name when online; otherwise an ``InputError`` saying why."""
    name = str(model_name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError("model folder has no config.json (not a transformers model)", path)
        return str(path)
    if path.exists():
        raise InputError("model path is a file; expected a model folder or a Hugging Face hub name", path)
    if not is_hub_name(name):
        raise InputError("model folder not found", path)
    return name


def load_config(source: str):
    """The model's config; a hub name that is neither cached nor reachable fails with what to do instead."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except Exception as exc:  # transformers raises OSError/ValueError/HTTP errors alike
        _refuse_offline(source)
        raise InputError(f"cannot load model config from {source!r}: {one_line(exc)}") from None


def _refuse_offline(source: str) -> None:
    """A hub name that is neither cached nor reachable offline: an ``InputError`` saying what to do instead."""
    if not Path(source).is_dir() and offline():
        raise InputError(f"model {source!r}: no such folder, and not in the Hugging Face cache; it cannot be "
                         "fetched offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set): pass a local model "
                         "folder") from None


def _load_tokenizer(source: str):
    from transformers import AutoTokenizer

    if Path(source).is_dir() and not any((Path(source) / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"model folder has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})", source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        _refuse_offline(source)
        raise InputError(f"cannot load the tokenizer of model {source!r} (tokenizer files missing?): "
                         f"{one_line(exc)}") from None
    if tokenizer is None or not callable(tokenizer):
        raise InputError(f"model {source!r} has no tokenizer files")
    return tokenizer


def load_model(source: str, config, dtype: torch.dtype, seed: int = SEED):
    """``AutoModelForSequenceClassification`` (or the class of the ranking head the config names, ``heads.py``)
    with SDPA attention where the architecture has it; the model and the names of its newly initialised weights,
    drawn from ``seed`` (on a forked CPU generator: the caller's random state is left as it was). A folder that
    cannot be loaded so is an ``InputError``; so are weights of another layer count than ``config``'s."""
    from .heads import ranker_class

    kwargs: dict[str, Any] = {"config": config, "dtype": dtype, "output_loading_info": True}
    try:
        model_class = ranker_class(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model, info = model_class.from_pretrained(source, attn_implementation="sdpa", **kwargs)
            except (ValueError, ImportError) as exc:
                if "sdpa" not in str(exc).lower() and "attn" not in str(exc).lower():
                    raise
                torch.manual_seed(seed)
                model, info = model_class.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise InputError(f"cannot load model {source!r} as a sequence-classification ranker: {one_line(exc)}") from None
    _check_layers(source, config, info)
    return model, sorted(info.get("missing_keys") or [])


def _check_layers(source: str, config, info: dict) -> None:
    """Refuse weights that hold fewer or more encoder layers than the config says (``num_hidden_layers``)."""
    layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(layers, int):
        return
    absent = {int(m.group(1)) for key in info.get("missing_keys") or [] if (m := LAYER_WEIGHT.search(key))}
    extra = {int(m.group(1)) for key in info.get("unexpected_keys") or [] if (m := LAYER_WEIGHT.search(key))}
    extra = {i for i in extra if i >= layers}
    if absent or extra:
        held = layers - len(absent) + len(extra)
        raise InputError(f"num_hidden_layers is {layers}, but the weights hold {held} layers (layer "
                         f"{min(absent or extra)} {'is missing' if absent else 'is beyond it'}): correct "
                         "num_hidden_layers, or use the weights saved with this config", Path(source) / "config.json")


def load_tokenizer(model_name_or_path: str | Path):
    """The tokenizer of a model folder (or hub name) alone, without loading the model."""
    return _load_tokenizer(_locate(model_name_or_path))


def int8_layers(model: torch.nn.Module) -> set[str]:
    """The linear layers ``--precision int8`` quantizes: those of the transformer body (attention and
    feed-forward), where the FLOPs are. The pooler and the ranking head stay in fp32: they cost nothing, and an
    int8 head would round every score to one of 256 levels of its batch's range, reordering close candidates."""
    body = f"{model.base_model_prefix}." if getattr(model, "base_model_prefix", "") else ""
    return {name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.startswith(body) and ".pooler" not in f".{name}"}


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """The model with its body's linear layers (``int8_layers``) dynamically quantized to int8
    (``torch.ao.quantization.quantize_dynamic`` with per-channel weights, which kept scores closer to fp32 than
    per-tensor ones on our MiniLM; activations quantized per batch; CPU kernels)."""
    import warnings

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; the API still works
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, dict.fromkeys(int8_layers(model), per_channel_dynamic_qconfig))


def _compile_mode(compile: bool | str | None) -> str | None:
    """``None`` (no torch.compile), ``dynamic`` or ``static``; ``True`` means ``dynamic``."""
    if compile is None or compile is False:
        return None
    mode = "dynamic" if compile is True else str(compile)
    if mode not in COMPILE_MODES:
        raise InputError(f"unknown compile mode {compile!r}; expected one of {', '.join(COMPILE_MODES)}")
    return mode


def _read_settings(source: str) -> dict:
    """The saved encoding settings of a model folder (``{}`` for a hub name or a folder without them)."""
    path = Path(source) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        raise InputError("malformed cross-encoder settings (expected a JSON object)", path) from None


# ---- the pair template and the pair layout ----------------------------------------------------------


@dataclass(frozen=True)
class PairTemplate:
    """How the tokenizer joins a (query, passage) pair: ``prefix + q + middle + p + suffix`` and token types.

    Probed once from the tokenizer itself (``probe``), so BERT (``[CLS] q [SEP] p [SEP]``, types 0/1) and
    RoBERTa-style (``<s> q </s></s> p </s>``, one type) models both encode as the tokenizer's pair encoding would.
    Two models tokenize pairs alike when their vocabularies and templates are equal.
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    first_type: int
    second_type: int

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def probe(cls, tokenizer) -> PairTemplate:
        first, second = "hello", "world"
        a = tokenizer(first, add_special_tokens=False)["input_ids"]
        b = tokenizer(second, add_special_tokens=False)["input_ids"]
        full = tokenizer(first, second, return_token_type_ids=True)
        ids, types = list(full["input_ids"]), list(full.get("token_type_ids") or [0] * len(full["input_ids"]))
        start = next((i for i in range(len(ids)) if ids[i : i + len(a)] == a), None)
        second_start = None if start is None else next(
            (j for j in range(start + len(a), len(ids)) if ids[j : j + len(b)] == b), None)
        if start is None or second_start is None:
            raise InputError(f"cannot derive the pair template of tokenizer {type(tokenizer).__name__}")
        expected = [types[0]] * second_start + [types[second_start]] * (len(ids) - second_start)
        if types != expected:
            raise InputError(f"unsupported token type pattern {types} of tokenizer {type(tokenizer).__name__}")
        return cls(tuple(ids[:start]), tuple(ids[start + len(a) : second_start]), tuple(ids[second_start + len(b) :]),
                   types[0], types[second_start])


@dataclass
class PairTokens:
    """Many pairs laid out by the encoding rule, as one flat table of token ids: the specials (prefix, middle,
    suffix, pad), then the queries, then the passages; per pair the start of its query and passage in the table,
    how many tokens of each it uses, its length and where its passage segment starts."""

    table: np.ndarray  # int32
    query_start: np.ndarray  # [pairs] int64
    query_len: np.ndarray  # [pairs] int64 (capped at query_max_length)
    passage_start: np.ndarray  # [pairs] int64
    passage_len: np.ndarray  # [pairs] int64 (truncated so the pair fits max_length)
    lengths: np.ndarray  # [pairs] int32: tokens of the whole pair
    boundaries: np.ndarray  # [pairs] int32: first token of the passage segment
    prefix: int
    middle: int
    suffix: int

    def __len__(self) -> int:
        return len(self.lengths)

    def gather(self, index: np.ndarray, width: int) -> np.ndarray:
        """The ``[len(index), width]`` int32 ids of the pairs ``index``, padded (one ``np.select``)."""
        c = np.arange(width, dtype=np.int64)[None, :]
        lq, lp = self.query_len[index][:, None], self.passage_len[index][:, None]
        mid_start = self.prefix + lq
        p_start = mid_start + self.middle
        s_start = p_start + lp
        end = s_start + self.suffix
        pad = self.prefix + self.middle + self.suffix  # the pad id's place in the table
        source = np.select(
            [c < self.prefix, c < mid_start, c < p_start, c < s_start, c < end],
            [c, self.query_start[index][:, None] + c - self.prefix, self.prefix + c - mid_start,
             self.passage_start[index][:, None] + c - p_start, self.prefix + self.middle + c - s_start],
            default=pad,
        )
        return self.table[source]


# ---- the model -------------------------------------------------------------------------------------


class CrossEncoderModel:
    """A (query, passage) relevance scorer around ``AutoModelForSequenceClassification`` (1 or 2 logits).

    ``CrossEncoderModel(folder)`` applies the folder's saved ``max_length``/``query_max_length`` unless given.
    Weights the folder lacks (the ranking head of a plain encoder) are drawn from ``head_seed``
    (``pipeline.defaults.SEED`` unless given): two loads of a folder score alike.
    """

    def __init__(
        self,
        model_name_or_path: str | Path,
        device: str | torch.device = "auto",
        precision: str | torch.dtype | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        compile: bool | str = False,
        attention: str = "sdpa",
        head_seed: int = SEED,
    ):
        self.source = _locate(model_name_or_path)
        settings = _read_settings(self.source)
        device = resolve_device(device)
        dtype = resolve_dtype(precision, device)
        config = load_config(self.source)
        tokenizer = _load_tokenizer(self.source)
        architectures = list(getattr(config, "architectures", None) or [])
        has_head = any(a.endswith("ForSequenceClassification") for a in architectures)
        if not has_head:
            config.num_labels = 1  # an encoder without a ranking head: a fresh one-logit head
        model, new_weights = load_model(self.source, config, dtype, head_seed)
        self.head_seed = head_seed if new_weights else None
        if new_weights:
            log.warning("%s: %sweights newly initialised (%s%s; seed %d): scores are meaningless until the model is "
                        "trained", self.source, "no ranking head found, " if not has_head else "",
                        ", ".join(new_weights[:4]), ", ..." if len(new_weights) > 4 else "", head_seed)
        self._setup(model, tokenizer, device, dtype, is_int8(precision),
                    settings.get("max_length", MAX_LENGTH) if max_length is None else max_length,
                    settings.get("query_max_length", QUERY_MAX_LENGTH) if query_max_length is None
                    else query_max_length, compile, attention)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str | Path, **kwargs) -> Self:
        """The same as ``cls(model_name_or_path, **kwargs)`` (the transformers spelling)."""
        return cls(model_name_or_path, **kwargs)

    @classmethod
    def from_model(cls, model, tokenizer, device: str | torch.device = "auto",
                   precision: str | torch.dtype | None = None, max_length: int = MAX_LENGTH,
                   query_max_length: int = QUERY_MAX_LENGTH, compile: bool | str = False, attention: str = "sdpa",
                   source: str = "<in memory>") -> Self:
        """Wrap a sequence-classification model already in memory (training, benchmarks); moved to ``device``
        and cast to ``precision``."""
        self = cls.__new__(cls)
        self.source = source
        self.head_seed = None
        device = resolve_device(device)
        dtype = resolve_dtype(precision, device)
        self._setup(model.to(dtype), tokenizer, device, dtype, is_int8(precision), max_length, query_max_length,
                    compile, attention)
        return self

    def _setup(self, model, tokenizer, device: torch.device, dtype: torch.dtype, int8: bool, max_length: int,
               query_max_length: int, compile: bool | str, attention: str) -> None:
        self.device, self.dtype, self.tokenizer, self.int8 = device, dtype, tokenizer, int8
        if attention not in ATTENTION:
            raise InputError(f"unknown attention {attention!r}; expected one of {', '.join(ATTENTION)}")
        try:
            if attention != "sdpa":  # (a model without SDPA support keeps the eager attention it loaded with)
                use_attention(model, attention)
        except (ValueError, ImportError) as exc:
            raise InputError(f"model {self.source!r} cannot run with {attention} attention: {one_line(exc)}") from None
        self.attention = attention
        self.compile = _compile_mode(compile)
        if self.compile == "static":
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, STATIC_SHAPES)
        self.model = model.to(device).eval()
        if int8:
            self.model = quantize_int8(self.model)
        self.num_labels = int(model.config.num_labels)
        if self.num_labels not in (1, 2):
            raise InputError(f"model {self.source!r} has a {self.num_labels}-label classification head; a ranker "
                             "needs 1 logit (the score) or 2 logits (monoBERT: not relevant / relevant)")
        positions = getattr(model.config, "max_position_embeddings", None) or max_length
        self.max_length = int(min(max_length, positions))
        self.query_max_length = int(query_max_length)
        self.template = PairTemplate.probe(tokenizer)
        if self.max_length < self.template.num_special + 2:
            raise InputError(f"max_length {max_length} leaves no room for the query and the passage")
        self.pad_id = int(tokenizer.pad_token_id or 0)
        self._fast = plain_fast_tokenizer(tokenizer)

    @property
    def model(self):
        """The sequence-classification model that scores."""
        return self._model

    @model.setter
    def model(self, model) -> None:
        """Swapping the model (a student cut from a teacher, a model in training) swaps what scores: the forward
        that ``score`` calls is always this model's (compiled as ``compile`` says)."""
        self._model = model
        self._forward = torch.compile(model, dynamic=self.compile == "dynamic") if self.compile else model

    @property
    def hidden_size(self) -> int:
        return int(getattr(self.model.config, "hidden_size", 768))

    @property
    def new_head(self) -> bool:
        """Whether weights were newly initialised at loading (no trained ranking head: scores mean nothing yet)."""
        return self.head_seed is not None

    @property
    def head_init(self) -> str:
        """Where the head's weights come from: ``saved`` (the folder's, or the model's given in memory), or
        ``seed N`` (newly initialised from seed N)."""
        return "saved" if self.head_seed is None else f"seed {self.head_seed}"

    @property
    def precision(self) -> str:
        """``int8``, or the name of the floating-point dtype (``float32``, ``bfloat16``, ``float16``)."""
        return "int8" if self.int8 else str(self.dtype).replace("torch.", "")

    # ---- the encoding rule ----------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        """Token ids of ``texts`` without special tokens, each truncated to ``limit`` tokens."""
        if not texts:
            return []
        if self._fast is not None:  # the Rust tokenizer directly: parallel, no offsets computed
            return [e.ids[:limit] for e in self._fast.encode_batch_fast(list(texts), add_special_tokens=False)]
        encoded = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max(limit, 1))
        return [list(i)[:limit] for i in encoded["input_ids"]]

    @property
    def passage_limit(self) -> int:
        """The most passage tokens a pair can hold (``max_length`` less the special tokens)."""
        return self.max_length - self.template.num_special

    def tokenize_passages(self, passages: Sequence[str]) -> PassageTokens:
        """Passage token ids, cut to ``passage_limit`` (for callers that tokenize once, score often)."""
        return PassageTokens.from_lists(self.tokenize(passages, self.passage_limit))

    def passage_cache(self, docstore, build: bool = True, progress: bool | None = None) -> TokenCache | None:
        """The token cache of ``docstore``'s collection for this model's tokenizer, built when absent (unless not
        ``build``); ``None`` (logged) when this model cannot use one: passages not from a collection file, a
        tokenizer without a fast (Rust) version, or pairs holding more passage tokens than the cache keeps."""
        why = ("passages do not come from a collection file" if not isinstance(docstore, DocStore)
               else "the tokenizer has no fast (Rust) version" if self._fast is None
               else f"pairs hold up to {self.passage_limit} passage tokens, the cache {MAX_TOKENS}"
               if self.passage_limit > MAX_TOKENS else None)
        if why:
            log.info("no token cache for %s: %s; passages are tokenized as they are read", self.source, why)
            return None
        return TokenCache.open(docstore, self.tokenizer, build=build, progress=progress)

    def pair_tokens(self, queries: Sequence[str], query_of_pair: Sequence[int], passages: Sequence[str] | None = None,
                    passage_tokens: PassageTokens | None = None) -> PairTokens:
        """Lay out the pairs ``(queries[query_of_pair[i]], passage i)``: each distinct query tokenized once, the
        passages given as text or as token ids (``tokenize_passages``, the token cache), truncated by the encoding
        rule."""
        if passage_tokens is None:
            if passages is None:
                raise ValueError("pair_tokens needs passages or passage_tokens")
            passage_tokens = self.tokenize_passages(passages)
        owner = np.asarray(query_of_pair, dtype=np.int64)
        if len(passage_tokens) != len(owner):
            raise ValueError(f"{len(owner)} pairs but {len(passage_tokens)} passages")
        t = self.template
        specials = np.asarray(t.prefix + t.middle + t.suffix + (self.pad_id,), dtype=np.int32)
        query_tokens = PassageTokens.from_lists(self.tokenize(queries, self.query_max_length))
        q_flat, q_off, q_len = query_tokens.ids, query_tokens.starts, query_tokens.lengths
        p_flat, p_off, p_len = passage_tokens.ids, passage_tokens.starts, passage_tokens.lengths
        lq = q_len[owner]
        lp = np.minimum(p_len, np.maximum(self.max_length - t.num_special - lq, 0))
        return PairTokens(np.concatenate([specials, q_flat, p_flat]), len(specials) + q_off[owner], lq,
                          len(specials) + len(q_flat) + p_off, lp, (t.num_special + lq + lp).astype(np.int32),
                          (len(t.prefix) + lq + len(t.middle)).astype(np.int32), len(t.prefix), len(t.middle),
                          len(t.suffix))

    @property
    def uses_token_types(self) -> bool:
        """Whether the template's token types differ from all zeros (BERT: yes; RoBERTa: no)."""
        return self.template.first_type != 0 or self.template.second_type != 0

    def token_types(self, positions: torch.Tensor, boundaries: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Token types of padded rows (on any device): first type before the passage, second type up to the
        row's length, 0 on padding. ``positions`` ``[1, width]``, ``boundaries`` and ``lengths`` ``[rows, 1]``."""
        t = self.template
        passage = torch.where(positions < lengths, t.second_type, 0)
        return torch.where(positions < boundaries, t.first_type, passage)

    def encode(self, queries: Sequence[str], passages: Sequence[str] | None = None,
               passage_tokens: PassageTokens | None = None) -> dict[str, torch.Tensor]:
        """The model inputs of the pairs ``(queries[i], passage i)``, passages as text or token ids, padded to the
        longest (CPU, int64): input_ids, attention_mask, token_type_ids."""
        count = len(passage_tokens) if passage_tokens is not None else len(passages or ())
        if len(queries) != count:
            raise ValueError(f"{len(queries)} queries but {count} passages")
        distinct = {q: i for i, q in enumerate(dict.fromkeys(queries))}  # each query tokenized once
        tokens = self.pair_tokens(list(distinct), [distinct[q] for q in queries], passages, passage_tokens)
        index = np.arange(len(tokens))
        width = int(tokens.lengths.max()) if len(tokens) else 0
        positions = torch.arange(width)[None, :]
        lengths = torch.from_numpy(tokens.lengths.astype(np.int64))[:, None]
        boundaries = torch.from_numpy(tokens.boundaries.astype(np.int64))[:, None]
        return {"input_ids": torch.from_numpy(tokens.gather(index, width).astype(np.int64)),
                "attention_mask": (positions < lengths).long(),
                "token_type_ids": self.token_types(positions, boundaries, lengths).long()}

    # ---- scores ---------------------------------------------------------------------------------

    def logits_to_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """One logit: the logit; two logits: the log-probability of the "relevant" class (index 1)."""
        if logits.dim() == 1:
            return logits
        if logits.shape[-1] == 1:
            return logits[:, 0]
        if logits.shape[-1] == 2:
            return torch.log_softmax(logits.float(), dim=-1)[:, 1]
        raise ValueError(f"expected 1 or 2 logits per pair, got {logits.shape[-1]}")

    def score(self, input_ids: torch.Tensor, lengths: torch.Tensor, boundaries: torch.Tensor,
              padded: bool) -> torch.Tensor:
        """Scores (float32, on the batch's device) of padded rows of pair ids with their lengths and passage
        boundaries (``[rows]``), built into model inputs where they are: no host synchronisation. Unpadded
        rows run without a mask (letting SDPA pick a flash kernel); padded ones get a boolean
        ``[rows, 1, 1, width]`` mask under SDPA, so transformers never inspects it on the host."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.int32)[None, :]
        lengths = lengths[:, None]
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids}
        if self.uses_token_types:
            inputs["token_type_ids"] = self.token_types(positions, boundaries[:, None], lengths)
        if padded:
            mask = positions < lengths
            inputs["attention_mask"] = mask[:, None, None, :] if takes_sdpa_mask(self.model.config) else mask.long()
        return self.logits_to_scores(self._forward(**inputs).logits).float()

    # ---- files ------------------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a folder that ``CrossEncoder`` (ours and sentence-transformers') and plain
        ``AutoModelForSequenceClassification`` all load."""
        if self.int8:
            raise ValueError("an int8-quantized model is for scoring; save the model before quantizing it")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        give_default_modes(path.glob("*.safetensors"))  # safetensors writes them 0600, whatever the umask
        with atomic_write(path / SETTINGS_FILE) as out:
            json.dump({"max_length": self.max_length, "query_max_length": self.query_max_length}, out, indent=2)
        return path

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, device={self.device}, precision={self.precision}, "
                f"num_labels={self.num_labels}, max_length={self.max_length})")
