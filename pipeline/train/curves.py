"""Training logs (JSONL, one event a line, written by ``trainer.py``): read back, and their held-out ``eval``
events as PNG learning curves."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import InputError
from ..runtime.atomic import atomic_write

log = logging.getLogger(__name__)


def read_log(path: str | Path) -> list[dict]:
    """The events of a training log, in order. A torn last line (no newline: the run was killed while writing
    it) is dropped; a line before it that is not a JSON object is an ``InputError`` naming it."""
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    if lines[-1]:
        log.warning("%s: dropping a torn last line (%d bytes; the run was killed while writing it)", path,
                    len(lines[-1]))
    events = []
    for lineno, line in enumerate(lines[:-1], 1):
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            event = None
        if not isinstance(event, dict):
            raise InputError("damaged training log line (not a JSON object): delete or repair it, then run again",
                             path, lineno)
        events.append(event)
    return events


def eval_points(log: str | Path, measure: str = "nDCG@10") -> list[tuple[int, int, float]]:
    """``(step, examples, value)`` of each ``eval`` event of a training log that has ``measure``, by step."""
    points = {}
    for record in read_log(log):
        if record.get("event") == "eval" and measure in record:
            points[record["step"]] = (record["step"], record.get("examples", record["step"]), float(record[measure]))
    return [points[step] for step in sorted(points)]


def plot_curves(logs: dict[str, str | Path], output: str | Path, measure: str = "nDCG@10", title: str = "",
                references: dict[str, float] | None = None, x: str = "examples") -> Path:
    """One line per training log (``label -> log``), ``measure`` against ``x`` (``examples`` or ``step``), with
    horizontal reference lines (``label -> value``, e.g. BM25, the teacher); written atomically to ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for label, log in logs.items():
        points = eval_points(log, measure)
        if points:
            ax.plot([p[0 if x == "step" else 1] for p in points], [p[2] for p in points], marker="o", label=label)
    for i, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, linestyle="--", linewidth=1, color=f"C{(len(logs) + i) % 10}", label=label)
    ax.set_xlabel("training steps" if x == "step" else "training groups seen")
    ax.set_ylabel(f"held-out {measure}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)  # below: never over a curve
    fig.tight_layout()
    output = Path(output)
    with atomic_write(output, mode="wb") as out:
        fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return output


def plot_log(log: str | Path, output: str | Path, measure: str = "nDCG@10", title: str = "") -> Path:
    """The learning curve of one training log."""
    return plot_curves({Path(log).parent.name: log}, output, measure, title, x="step")
