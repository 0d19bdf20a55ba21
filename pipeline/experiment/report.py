"""Reports of a comparison: a paper-ready Markdown table, a complete JSON record and a speed/quality plot.

``write_reports`` writes ``report.md``, ``report.json`` and ``effectiveness_vs_speed.png`` into the
comparison's folder. All three are rendered in memory first and then each is written atomically, so an
interruption leaves either no report or a complete one.

Significance marks (paired test of the config, ``t-test`` by default, at ``evaluation.significance_level``):
``*`` a student differs from the teacher, ``†`` a reranker differs from the first stage (BM25, dense or hybrid).
The full p-values of both tests
(paired t-test and randomisation test) are in ``report.json``, with the machine and the versions
(``environment``).
"""
from __future__ import annotations

import io
import json
import os
import platform
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..eval.significance import PairedTest
from ..eval.speedups import CONFIDENCE, MAX_SPREAD, MIN_ROUNDS
from ..runtime.atomic import atomic_write
from ..runtime.hub import is_hub_name
from .results import Comparison, PipelineResult

MARK_TEACHER, MARK_FIRST_STAGE = "*", "†"
MARK_TOO_WIDE = "(!)"
REPORT_FILES = ("report.md", "report.json", "effectiveness_vs_speed.png")
#: The packages whose versions a report records.
VERSIONED = ("distilrank", "torch", "transformers", "pyserini", "ir-measures", "numpy", "scipy")


def environment() -> dict[str, Any]:
    """The hardware and software versions a result was measured with."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "memory_gib": memory,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None, "versions": versions,
    }


def _p(comparison: Comparison, test: PairedTest) -> float:
    return test.p_ttest if comparison.config.evaluation.significance_test == "t-test" else test.p_randomisation


def marks(comparison: Comparison, result: PipelineResult, measure: str) -> str:
    """The significance marks of ``result`` on ``measure``."""
    tests = comparison.significance.get(result.name, {})
    level = comparison.config.evaluation.significance_level
    out = ""
    if "teacher" in tests and _p(comparison, tests["teacher"][measure]) < level:
        out += MARK_TEACHER
    first = comparison.first_stage.name
    if first in tests and _p(comparison, tests[first][measure]) < level:
        out += MARK_FIRST_STAGE
    return out


def _params(result: PipelineResult) -> str:
    n = result.model_info.get("parameters")
    if not n:
        return ""
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def _shape(result: PipelineResult) -> str:
    info = result.model_info
    return f"{info['layers']}x{info['hidden']}" if info.get("layers") else ""


def _model_label(result: PipelineResult) -> str:
    """A hub name as is, a local folder by its name."""
    model = result.model or ""
    return model if is_hub_name(model) and not Path(model).exists() else Path(model).name


def _source_label(value: object) -> str:
    return Path(str(value)).name if "/" in str(value) else str(value)


def table_rows(comparison: Comparison, plain: bool = False) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the main table: one row per pipeline."""
    primary = comparison.plot_measure
    header = ["Pipeline", "Model", "Layers x width", "Params", *comparison.measures,
              f"Δ {primary} vs teacher", "pairs/s", "p50 ms/query", "p95 ms/query", "Speedup vs teacher"]
    teacher_value = comparison.teacher.metrics[primary]
    rows = []
    label = comparison.config.first_stage.label
    for result in comparison.pipelines:
        first = result.kind == "first_stage"
        mixed = "" if result.interpolation is None else f" (W {result.interpolation:g})"
        cells = [result.name if first else f"{label} + {result.name}{mixed}",
                 label if first else _model_label(result), _shape(result), _params(result)]
        for measure in comparison.measures:
            value = f"{result.metrics[measure]:.4f}"
            cells.append(value if plain else value + marks(comparison, result, measure))
        delta = result.metrics[primary] - teacher_value
        cells.append("" if result.kind == "teacher" else
                     f"{delta:+.4f} ({100 * delta / teacher_value:+.1f}%)" if teacher_value else f"{delta:+.4f}")
        if first:
            cells += ["", "", "", ""]
        else:
            t = result.timing
            cells += [f"{t.pairs_per_s:,.0f}", f"{t.latency_ms(50):.1f}", f"{t.latency_ms(95):.1f}",
                      "1.00x" if result.kind == "teacher" else _speedup_cell(comparison, result)]
        rows.append(cells)
    return header, rows


def _speedup_cell(comparison: Comparison, result: PipelineResult) -> str:
    """The median speedup over the rounds and its interval; the pooled ratio when there are no rounds."""
    spread = comparison.speedup_spread(result)
    if spread is None:
        return f"{comparison.speedup(result):.2f}x"
    return (f"{spread.median:.2f}x [{spread.low:.2f}-{spread.high:.2f}]"
            + (f" {MARK_TOO_WIDE}" if spread.too_wide else ""))


def _too_wide_note(comparison: Comparison) -> list[str]:
    """A warning under the table for each speedup whose rounds disagree too much to call."""
    notes = [f"{MARK_TOO_WIDE} Speedup of {r.name}: {spread}: the rounds disagree too much to call it (a loaded "
             "machine?); rerun on a quieter machine or with more queries." for r in comparison.pipelines
             if r.kind == "student" and (spread := comparison.speedup_spread(r)) is not None and spread.too_wide]
    return [*notes, ""] if notes else []


def stage_rows(comparison: Comparison) -> tuple[list[str], list[list[Any]]]:
    """End-to-end time per stage and per pipeline (the first stage's time + that reranker's time)."""
    first = comparison.first_stage
    retrieval = first.timing
    header = ["Stage", "Queries", "Pairs", "Wall s", "ms/query", f"End-to-end s ({first.name} + stage)"]
    rows = []
    for stage in comparison.stages:
        if stage.stage == "index":
            rows.append(["index (built once)", "", "", f"{stage.wall_s:.2f}", "", ""])
    cached = " (cached)" if retrieval.extra.get("cached") else ""
    for label, t in [(f"{first.name}{cached}", retrieval)] + [(f"rerank: {r.name}", r.timing)
                                                              for r in comparison.pipelines if r.kind != "first_stage"]:
        end_to_end = t.wall_s if t is retrieval else retrieval.wall_s + t.wall_s
        rows.append([label, t.queries, t.pairs, f"{t.wall_s:.2f}", f"{1000 * t.wall_s / max(t.queries, 1):.1f}",
                     f"{end_to_end:.2f}"])
    return header, rows


def _legend(comparison: Comparison) -> str:
    evaluation = comparison.config.evaluation
    test = ("paired t-test" if evaluation.significance_test == "t-test"
            else f"paired randomisation test ({evaluation.permutations:,} permutations)")
    return (f"{MARK_TEACHER} differs significantly from the teacher, {MARK_FIRST_STAGE} from "
            f"{comparison.config.first_stage.label} ({test}, "
            f"p < {evaluation.significance_level}; "
            f"{comparison.num_queries} queries; no correction for multiple comparisons). Speedup: rerank pairs/s over "
            "the teacher's, same candidates, same engine, interleaved rounds after a warm-up: the median of the "
            f"rounds' ratios [a {CONFIDENCE:.0%} order-statistic interval of it; the rounds' range when they are "
            f"few]; {MARK_TOO_WIDE}: too wide to call (high/low above {MAX_SPREAD}, or under {MIN_ROUNDS} rounds).")


def render_markdown(comparison: Comparison, environment: dict[str, Any]) -> str:
    """``report.md``: the main table, the legend, the stage times and the setting."""
    cfg, first, data = comparison.config, comparison.config.first_stage, comparison.config.data
    header, rows = table_rows(comparison)
    stage_header, stage_table = stage_rows(comparison)
    device = environment.get("gpu") or environment.get("cpu") or "unknown"
    lines = [
        f"# {cfg.name}: full vs distilled pipelines",
        "",
        f"First stage: {first.description}, top {first.hits}, top {cfg.rerank.depth} reranked; "
        f"{comparison.num_queries} judged queries of "
        f"`{_source_label(data.topics)}` (qrels `{_source_label(data.qrels)}`"
        + (f", queries of `{_source_label(data.qids)}`" if data.qids else "") + ").",
        "",
        tabulate(rows, header, tablefmt="github", disable_numparse=True),
        "",
        _legend(comparison),
        "",
        *_too_wide_note(comparison),
        "## Time per stage",
        "",
        tabulate(stage_table, stage_header, tablefmt="github", disable_numparse=True),
        "",
        f"Measured on {device} ({environment.get('cpu_count')} CPU cores, "
        f"torch {environment['versions'].get('torch')}, "
        f"{environment.get('torch_threads')} threads) on {comparison.started}; total {comparison.seconds:.1f} s. "
        "The plot `effectiveness_vs_speed.png` shows the same numbers; `report.json` has everything "
        "(per-query p-values of both tests, timings, config, versions).",
        "",
    ]
    return "\n".join(lines)


def render_json(comparison: Comparison, environment: dict[str, Any]) -> str:
    """``report.json``: every number, the config, the hardware and the versions."""
    record = {
        "name": comparison.config.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "started": comparison.started,
        "seconds": round(comparison.seconds, 3),
        "num_queries": comparison.num_queries,
        "measures": list(comparison.measures),
        "plot_measure": comparison.plot_measure,
        "pipelines": [
            {
                "name": r.name, "kind": r.kind, "model": r.model, "description": r.description,
                "interpolation": r.interpolation,
                "run_file": r.run_path.name, "metrics": r.metrics, "model_info": r.model_info,
                "timing": r.timing.to_dict(),
                "speedup_vs_teacher": comparison.speedup(r),
                "speedup_rounds": (spread.to_dict() if (spread := comparison.speedup_spread(r)) else None),
                "marks": {m: marks(comparison, r, m) for m in comparison.measures},
            }
            for r in comparison.pipelines
        ],
        "significance": {
            name: {other: {m: t.as_dict() for m, t in tests.items()} for other, tests in against.items()}
            for name, against in comparison.significance.items()
        },
        "significance_marks": {"teacher": MARK_TEACHER, "first_stage": MARK_FIRST_STAGE,
                               "test": comparison.config.evaluation.significance_test,
                               "significance_level": comparison.config.evaluation.significance_level},
        "stages": [stage.to_dict() for stage in comparison.stages],
        "per_query": {r.name: r.per_query for r in comparison.pipelines},
        "config": asdict(comparison.config),
        "environment": environment,
    }
    return json.dumps(record, indent=2, default=str) + "\n"


def render_plot(comparison: Comparison) -> bytes:
    """``effectiveness_vs_speed.png``: rerank pairs/s (log x) against the plotted measure, the first stage as a
    line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measure = comparison.plot_measure
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    try:
        rerankers = [r for r in comparison.pipelines if r.kind != "first_stage"]
        for result in rerankers:
            x, y = result.pairs_per_s or 0.0, result.metrics[measure]
            teacher = result.kind == "teacher"
            ax.scatter([x], [y], s=70 if teacher else 50, marker="s" if teacher else "o", zorder=3,
                       color="tab:red" if teacher else "tab:blue")
            ax.annotate(result.name, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
        first = comparison.first_stage.metrics[measure]
        ax.axhline(first, color="gray", linestyle="--", linewidth=1,
                   label=f"{comparison.config.first_stage.label} ({first:.3f})")
        values = [r.metrics[measure] for r in comparison.pipelines]
        pad = 0.08 * ((max(values) - min(values)) or 0.1)
        ax.set_ylim(min(values) - pad, max(values) + pad)
        ax.set_xscale("log")
        speeds = [r.pairs_per_s for r in rerankers if r.pairs_per_s]
        if speeds:
            ax.set_xlim(min(speeds) / 2, max(speeds) * 2)
        ax.set_xlabel("rerank throughput (pairs/s, log scale)")
        ax.set_ylabel(measure)
        ax.set_title(f"{comparison.config.name}: effectiveness vs speed", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def terminal_table(comparison: Comparison) -> str:
    """The main table for the terminal (with the legend)."""
    header, rows = table_rows(comparison)
    return tabulate(rows, header, tablefmt="simple", disable_numparse=True) + "\n" + _legend(comparison)


def write_reports(comparison: Comparison) -> dict[str, Any]:
    """Render all three reports (``REPORT_FILES``) in memory, then write each atomically; returns their paths."""
    env = environment()
    rendered = dict(zip(REPORT_FILES, (render_markdown(comparison, env).encode("utf-8"),
                                       render_json(comparison, env).encode("utf-8"), render_plot(comparison)),
                        strict=True))
    paths = {}
    for name, data in rendered.items():
        path = comparison.output / name
        with atomic_write(path, "wb") as out:
            out.write(data)
        paths[name] = path
    return paths
