"""Cross-encoder rankers: load any Hugging Face sequence-classification model and score (query, passage) pairs.

A ``CrossEncoder`` is a folder (or hub name) that ``AutoModelForSequenceClassification`` loads:

- one output logit: the logit is the relevance score;
- two output logits (monoBERT style): the score is ``log_softmax(logits)[:, 1]``, the "relevant" class;
- a plain encoder without a ranking head (``BertModel``, ``BertForMaskedLM``, e.g. the pretrained MiniLM):
  loaded as a one-logit ranker with a newly initialised head (a warning says so), the start of fine-tuning;
- any other classification head (3 or more labels) is refused with ``InputError``.

Pairs are encoded as ``[CLS] q [SEP] p [SEP]`` (the tokenizer's own pair template), the query capped at
``query_max_length`` tokens, the passage truncated so the pair fits ``max_length`` tokens. Scoring goes through
``pipeline.engine`` (length sorting, token-budget batches, background tokenization).
"""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .errors import InputError

if TYPE_CHECKING:
    from .runs import Run
    from .timing import StageTiming

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_PRECISION_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
#: The sidecar file that keeps the encoding settings next to the transformers files.
SETTINGS_FILE = "cross_encoder.json"
#: Token budget per batch (padded tokens) when none is given: CPUs like small batches, GPUs large ones.
CPU_BATCH_TOKENS = 4096
GPU_BATCH_TOKENS = 65536


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; CUDA absent is an ``InputError``."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
        return torch.device(name)
    raise InputError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N")


def resolve_dtype(precision: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``fp32``/``bf16``/``fp16``; ``None`` means bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU."""
    if isinstance(precision, torch.dtype):
        return precision
    device = torch.device(device)
    if precision is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    name = _PRECISION_ALIASES.get(str(precision).lower(), str(precision).lower())
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def _is_hub_name(name: str) -> bool:
    """``org/model`` or ``model``: what the Hugging Face hub accepts as a repository id."""
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


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
    if not _is_hub_name(name):
        raise InputError("model folder not found", path)
    return name


def _offline() -> bool:
    return any(os.environ.get(v, "0").strip().lower() not in ("", "0", "false", "no", "off")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _load_config(source: str):
    """The model's config; a hub name that is neither cached nor reachable fails with what to do instead."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except Exception as exc:  # transformers raises OSError/ValueError/HTTP errors alike
        if not Path(source).is_dir() and _offline():
            raise InputError(f"model {source!r}: no such folder, and not in the Hugging Face cache; it cannot be "
                             "fetched offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set): pass a local model "
                             "folder") from None
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError(f"cannot load model config from {source!r}: {type(exc).__name__}: {reason}") from None


#: Files one of which a local model folder needs for its tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


def _load_tokenizer(source: str):
    from transformers import AutoTokenizer

    if Path(source).is_dir() and not any((Path(source) / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"model folder has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})", source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError(f"cannot load the tokenizer of model {source!r} (tokenizer files missing?): "
                         f"{type(exc).__name__}: {reason}") from None
    if tokenizer is None or not callable(tokenizer):
        raise InputError(f"model {source!r} has no tokenizer files")
    return tokenizer


def _plain_fast_tokenizer(tokenizer):
    """A private copy of the Rust tokenizer behind ``tokenizer`` without padding or truncation, or None."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    backend = copy.deepcopy(backend)
    backend.no_padding()
    backend.no_truncation()
    return backend


class PairTemplate:
    """How the tokenizer joins a (query, passage) pair: ``prefix + q + middle + p + suffix`` and token types.

    Probed once from the tokenizer itself, so BERT (``[CLS] q [SEP] p [SEP]``, types 0/1) and RoBERTa-style
    (``<s> q </s></s> p </s>``, one type) models both encode exactly as the tokenizer's pair encoding would.
    """

    def __init__(self, tokenizer):
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
        self.prefix = ids[:start]
        self.middle = ids[start + len(a) : second_start]
        self.suffix = ids[second_start + len(b) :]
        boundary = second_start  # types: first_type before the passage, second_type from it on
        self.first_type = types[0]
        self.second_type = types[second_start]
        expected = [self.first_type] * boundary + [self.second_type] * (len(ids) - boundary)
        if types != expected:
            raise InputError(f"unsupported token type pattern {types} of tokenizer {type(tokenizer).__name__}")
        self.num_special = len(self.prefix) + len(self.middle) + len(self.suffix)


class CrossEncoder:
    """A (query, passage) relevance scorer around ``AutoModelForSequenceClassification`` (1 or 2 logits)."""

    def __init__(
        self,
        model_name_or_path: str | Path,
        device: str | torch.device = "auto",
        precision: str | torch.dtype | None = None,
        max_length: int = 256,
        query_max_length: int = 64,
        batch_tokens: int | None = None,
        num_labels_check: bool = True,
        compile: bool = False,
    ):
        from transformers import AutoModelForSequenceClassification

        self.source = _locate(model_name_or_path)
        settings = self._read_settings(self.source)
        max_length = settings.get("max_length", 256) if max_length is None else max_length
        query_max_length = settings.get("query_max_length", 64) if query_max_length is None else query_max_length
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        config = _load_config(self.source)
        self.tokenizer = _load_tokenizer(self.source)
        architectures = list(getattr(config, "architectures", None) or [])
        has_head = any(a.endswith("ForSequenceClassification") for a in architectures)
        if has_head:
            if num_labels_check and config.num_labels not in (1, 2):
                raise InputError(
                    f"model {self.source!r} has a {config.num_labels}-label classification head; a ranker needs "
                    "1 logit (the score) or 2 logits (monoBERT: not relevant / relevant)"
                )
        else:
            config.num_labels = 1  # an encoder without a ranking head: a fresh one-logit head
        kwargs: dict[str, Any] = {"config": config, "dtype": self.dtype, "output_loading_info": True}
        try:
            try:
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    self.source, attn_implementation="sdpa", **kwargs)
            except (ValueError, ImportError) as exc:
                if "sdpa" not in str(exc).lower() and "attn" not in str(exc).lower():
                    raise
                model, info = AutoModelForSequenceClassification.from_pretrained(self.source, **kwargs)
        except InputError:
            raise
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [""])[0][:200]
            raise InputError(f"cannot load model {self.source!r} as a sequence-classification ranker: "
                             f"{type(exc).__name__}: {reason}") from None
        new_weights = sorted(info.get("missing_keys") or [])
        self.new_head = bool(new_weights)
        if new_weights:
            log.warning("%s: %sweights newly initialised (%s%s): scores are meaningless until the model is trained",
                        self.source, "no ranking head found, " if not has_head else "",
                        ", ".join(new_weights[:4]), ", ..." if len(new_weights) > 4 else "")
        self._setup(model, self.tokenizer, max_length, query_max_length, batch_tokens, num_labels_check, compile)

    @classmethod
    def from_model(cls, model, tokenizer, device: str | torch.device = "auto", precision: str | torch.dtype | None = None,
                   max_length: int = 256, query_max_length: int = 64, batch_tokens: int | None = None,
                   num_labels_check: bool = True, compile: bool = False, source: str = "<in memory>") -> "CrossEncoder":
        """Wrap a sequence-classification model already in memory (training, benchmarks); moved to ``device``
        and cast to ``precision``."""
        self = cls.__new__(cls)
        self.source = source
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        self.tokenizer = tokenizer
        self.new_head = False
        self._setup(model.to(self.dtype), tokenizer, max_length, query_max_length, batch_tokens, num_labels_check, compile)
        return self

    def _setup(self, model, tokenizer, max_length: int, query_max_length: int, batch_tokens: int | None,
               num_labels_check: bool, compile: bool) -> None:
        self.model = model.to(self.device).eval()
        self.num_labels = int(model.config.num_labels)
        if self.num_labels not in (1, 2) and num_labels_check:
            raise InputError(f"model {self.source!r} outputs {self.num_labels} logits; expected 1 or 2")
        positions = getattr(model.config, "max_position_embeddings", None) or max_length
        self.max_length = int(min(max_length, positions))
        self.query_max_length = int(query_max_length)
        self.template = PairTemplate(tokenizer)
        self._fast = _plain_fast_tokenizer(tokenizer)
        if self.max_length < self.template.num_special + 2:
            raise InputError(f"max_length {max_length} leaves no room for the query and the passage")
        hidden = max(int(getattr(model.config, "hidden_size", 768)), 128)
        self.batch_tokens = int(batch_tokens) if batch_tokens else (
            GPU_BATCH_TOKENS * 768 // hidden if self.device.type == "cuda" else CPU_BATCH_TOKENS)
        if self.batch_tokens < self.max_length:
            raise InputError(f"batch_tokens {self.batch_tokens} is smaller than max_length {self.max_length}")
        self.forward_model = torch.compile(self.model, dynamic=True) if compile else self.model

    # ---- encoding ---------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        """Token ids of ``texts`` without special tokens, each truncated to ``limit`` tokens."""
        if not texts:
            return []
        if self._fast is not None:  # the Rust tokenizer directly: parallel, no offsets computed
            return [e.ids[:limit] for e in self._fast.encode_batch_fast(list(texts), add_special_tokens=False)]
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max(limit, 1))["input_ids"]
        return [list(i)[:limit] for i in ids]

    def pair_ids(self, query_ids: Sequence[int], passage_ids: Sequence[int]) -> tuple[list[int], int]:
        """The ids of one pair (query capped, passage truncated to fit) and where the passage starts."""
        t = self.template
        q = list(query_ids[: self.query_max_length])
        p = list(passage_ids[: max(self.max_length - t.num_special - len(q), 0)])
        head = t.prefix + q + t.middle
        return head + p + t.suffix, len(head)

    def encode(self, queries: list[str], passages: list[str]) -> dict[str, torch.Tensor]:
        """``[CLS] q [SEP] p [SEP]`` for each pair, padded to the longest: input_ids, attention_mask,
        token_type_ids (CPU tensors, int64)."""
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
        qids = self.tokenize(queries, self.query_max_length)
        pids = self.tokenize(passages, self.max_length - self.template.num_special)
        pairs = [self.pair_ids(q, p) for q, p in zip(qids, pids)]
        width = max((len(ids) for ids, _ in pairs), default=0)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(pairs), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
        token_type_ids = torch.zeros((len(pairs), width), dtype=torch.long)  # padding: type 0, as transformers
        for row, (ids, boundary) in enumerate(pairs):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            token_type_ids[row, :boundary] = self.template.first_type
            token_type_ids[row, boundary : len(ids)] = self.template.second_type
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def logits_to_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """One logit: the logit; two logits: the log-probability of the "relevant" class (index 1)."""
        if logits.dim() == 1:
            return logits
        if logits.shape[-1] == 1:
            return logits[:, 0]
        if logits.shape[-1] == 2:
            return torch.log_softmax(logits.float(), dim=-1)[:, 1]
        raise ValueError(f"expected 1 or 2 logits per pair, got {logits.shape[-1]}")

    # ---- scoring ----------------------------------------------------------------------------

    def predict(self, pairs: Sequence[tuple[str, str]], batch_tokens: int | None = None) -> np.ndarray:
        """Scores (float32) of ``(query, passage)`` pairs, in input order; batched by the engine."""
        from .engine import ScoringEngine

        pairs = list(pairs)
        return ScoringEngine(self, batch_tokens=batch_tokens).score_pairs([q for q, _ in pairs], [p for _, p in pairs])

    def rerank(self, run: "Run", topics: dict[str, str], docstore, depth: int = 100, **kwargs) -> tuple["Run", "StageTiming"]:
        """Rerank the top ``depth`` candidates of every query of ``run``; see ``pipeline.stages.rerank_run``."""
        from .stages import rerank_run

        return rerank_run(self, run, topics, docstore, depth=depth, **kwargs)

    # ---- files ------------------------------------------------------------------------------

    @staticmethod
    def _read_settings(source: str) -> dict:
        path = Path(source) / SETTINGS_FILE
        if not path.is_file():
            return {}
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            raise InputError("malformed cross-encoder settings (expected a JSON object)", path) from None

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a folder that ``CrossEncoder`` and plain ``AutoModelForSequenceClassification`` both load."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        from .atomic import atomic_write

        with atomic_write(path / SETTINGS_FILE) as out:
            json.dump({"max_length": self.max_length, "query_max_length": self.query_max_length}, out, indent=2)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "CrossEncoder":
        """Load a saved ranker; its saved ``max_length``/``query_max_length`` apply unless given."""
        kwargs.setdefault("max_length", None)
        kwargs.setdefault("query_max_length", None)
        return cls(path, **kwargs)

    def __repr__(self) -> str:
        return (f"CrossEncoder({self.source!r}, device={self.device}, dtype={self.dtype}, "
                f"num_labels={self.num_labels}, max_length={self.max_length})")
