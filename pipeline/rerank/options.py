"""How a ranker runs, declared once: ``RuntimeOptions`` (device, precision, token budget, compilation, attention,
static shapes, CUDA graphs, token cache).

The same fields are the ``[rerank]`` keys of a comparison config (``RerankSection`` inherits them), the flags of
``distilrank rerank`` and ``score`` (``pipeline.cli.flags``), and the options of ``CrossEncoder`` and
``ScoringEngine``::

    options = RuntimeOptions(device="cuda", batch_tokens=65536, cuda_graphs=True)
    encoder = CrossEncoder(model, **options.encoder_kwargs())
    engine = ScoringEngine(encoder, **options.engine_kwargs())

Each field's metadata holds its help text and the rules its values follow (``min``, ``choices``, ``check``: a
function that normalises a value or raises ``InputError``; ``const``: the value of the bare flag), read by the
config validator and the command-line flags alike. No torch here: configs and flags are checked before any
model loads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..runtime.devices import COMPILE_MODES, parse_device, precision_name
from .attention import ATTENTION


def check_interpolation(weight: float | None, name: str = "interpolation") -> float | None:
    """``weight`` if it is None or a weight of the cross-encoder against the first stage (0 to 1); else one
    ``InputError`` naming it as ``name``."""
    if weight is not None and not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
        raise InputError(f"{name} must be between 0 and 1, not {weight}")
    return weight


#: The fields ``CrossEncoder`` takes, and those ``ScoringEngine`` (and ``Reranker``) take.
ENCODER_OPTIONS = ("device", "precision", "compile", "attention")
ENGINE_OPTIONS = ("batch_tokens", "bucket", "cuda_graphs")


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    """How a ranker runs: none of these changes what a model is, only how fast (and in what precision) it scores."""

    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N", "check": parse_device})
    precision: str | None = field(default=None, metadata={
        "help": "fp32, bf16, fp16 or int8 (CPU only: linear layers dynamically quantized); default bf16 on CUDA, "
        "fp32 on CPU", "check": precision_name})
    batch_tokens: int | None = field(default=None, metadata={
        "help": "padded tokens per batch (default: the engine's for the device and the model's width)", "min": 1})
    compile: str | None = field(default=None, metadata={
        "help": "torch.compile the model: dynamic shapes, or static ones (with bucket; one compilation per shape); "
        "slow first batches (default: not compiled; the bare --compile flag: dynamic)", "choices": COMPILE_MODES,
        "const": COMPILE_MODES[0]})
    attention: str = field(default="sdpa", metadata={
        "help": "sdpa, or sdpa-padded: heads zero-padded to a multiple of 8 so SDPA can use its fused kernels "
        "(head size 26 of 4L-312 models); same scores", "choices": ATTENTION})
    bucket: int | None = field(default=None, metadata={
        "help": "static batch shapes: lengths rounded up to this multiple, rows to a power of two (for CUDA graphs "
        "and static compilation)", "min": 1})
    cuda_graphs: bool = field(default=False, metadata={
        "help": "replay each batch shape from a CUDA graph (CUDA; implies bucket 32 unless given)"})
    token_cache: bool = field(default=True, metadata={
        "help": "read passages as token ids from the collection's token cache (built on first use per collection "
        "and tokenizer, see 'distilrank tokenize') instead of tokenizing their text"})

    def encoder_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``CrossEncoder`` these options set."""
        return {name: getattr(self, name) for name in ENCODER_OPTIONS}

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``ScoringEngine`` (and ``Reranker``) these options set."""
        return {name: getattr(self, name) for name in ENGINE_OPTIONS}

    def passage_cache(self, encoder, docstore, progress: bool | None = None):
        """The token cache ``encoder`` reads ``docstore``'s passages from (built when absent), or None when
        ``token_cache`` is off."""
        return encoder.passage_cache(docstore, progress=progress) if self.token_cache else None
