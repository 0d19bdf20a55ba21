"""Devices, numeric precisions and compile modes, written once: names, aliases, and what ``auto`` means.

Names are checked without importing torch (configs are validated before any model loads); the torch
objects are made by ``resolve_device`` and ``resolve_dtype``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    import torch

#: Device names; ``cuda:N`` is accepted too.
DEVICES = ("auto", "cpu", "cuda")
#: Precision names (canonical), and the spellings accepted for them. ``int8``: the linear layers' weights in int8
#: with activations quantized per batch (PyTorch's dynamic quantization), everything else fp32; CPU only.
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
#: ``torch.compile`` modes: dynamic shapes, or static ones (one compilation per shape; see ``ScoringEngine``'s
#: ``bucket``).
COMPILE_MODES = ("dynamic", "static")
PRECISION_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                     "qint8": "int8"}


def parse_device(device: str) -> str:
    """The device name normalised (``auto``, ``cpu``, ``cuda``, ``cuda:N``); anything else is an ``InputError``."""
    name = str(device).strip().lower()
    if name in DEVICES or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise InputError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N")


def precision_name(precision: str) -> str:
    """The canonical precision name (``fp32``/``bf16``/``fp16``); anything else is an ``InputError``."""
    name = PRECISION_ALIASES.get(str(precision).strip().lower(), str(precision).strip().lower())
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return name


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; CUDA absent is an ``InputError``.
    Under torchrun, ``auto`` and ``cuda`` mean this process's GPU (``distributed.local_device``)."""
    import torch

    from .distributed import local_device

    if isinstance(device, torch.device):
        return device
    name = local_device(parse_device(device))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
    return torch.device(name)


def is_int8(precision: str | torch.dtype | None) -> bool:
    """Whether ``precision`` names int8 (dynamic quantization of the linear layers)."""
    return isinstance(precision, str) and precision_name(precision) == "int8"


def resolve_dtype(precision: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """The dtype of the model's floating-point weights and activations: ``fp32``/``bf16``/``fp16``; ``int8`` keeps
    fp32 around its int8 linear layers and is an ``InputError`` off the CPU; ``None`` means bf16 on CUDA (fp16
    where bf16 is unsupported), fp32 on CPU."""
    import torch

    if isinstance(precision, torch.dtype):
        return precision
    if precision is None:
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    name = precision_name(precision)
    if name == "int8" and torch.device(device).type != "cpu":
        raise InputError(f"precision int8 (PyTorch's dynamic quantization) runs on the CPU only, not on {device}")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}[name]
