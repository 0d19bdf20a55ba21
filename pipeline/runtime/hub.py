"""The Hugging Face hub rules, written once: what a hub name looks like, and whether we are offline."""
from __future__ import annotations

import os
import socket
from pathlib import Path

#: Environment variables that put transformers / huggingface_hub in offline mode (either one suffices).
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_FALSE = ("", "0", "false", "no", "off")


def is_hub_name(name: str) -> bool:
    """``owner/model`` or ``model``: what the Hugging Face hub accepts as a repository id (not a local path)."""
    parts = str(name).split("/")
    return (1 <= len(parts) <= 2 and all(parts) and not any(p.startswith(".") for p in parts)
            and not str(name).startswith("~") and "\\" not in str(name))


def offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set)."""
    return any(os.environ.get(v, "0").strip().lower() not in _FALSE for v in OFFLINE_VARIABLES)


def online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """False when offline mode is asked for or ``host`` cannot be reached on port 443."""
    if offline():
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_cached(name: str) -> bool:
    """Whether a hub model's ``config.json`` is already in the local Hugging Face cache."""
    if Path(name).exists():
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(name, "config.json"), str)
