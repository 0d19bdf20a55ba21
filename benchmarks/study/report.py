"""The study's report: the Markdown tables of every row in the state, each target of ``design.TARGETS`` checked
against the rows, the cost per model shape, and the learning-curve PNGs beside it."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tabulate import tabulate

from pipeline.train.curves import eval_points, plot_curves

from .design import (
    LEVER_FAMILIES,
    LEVERS,
    LONG_LENGTH,
    MEASURES,
    PROCEDURE_ROWS,
    PROCEDURE_TABLES,
    SHAPES,
    STUDENT_LAYERS,
    TARGETS,
    Targets,
    group_pairs,
)
from .state import State

#: The measure the targets are set on.
TARGET_MEASURE = "nDCG@10"
#: The column of the share of the teacher's gain over BM25 that a student keeps.
KEPT = "kept of the teacher's gain"
#: The reference rows, in the table's order.
REFERENCES = ("ref-random", "ref-bm25", "ref-biencoder", "teacher")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def best_student(rows: dict[str, dict], layers: int) -> tuple[str, dict] | None:
    """The ``layers``-layer student row with the highest target measure (name without ``student-``), if any."""
    mine = [(k.removeprefix("student-"), r) for k, r in rows.items()
            if k.startswith("student-") and r.get("layers") == layers]
    return max(mine, key=lambda item: item[1][TARGET_MEASURE]) if mine else None


def teacher_gain(rows: dict[str, dict]) -> float | None:
    """The teacher's gain over BM25 on the target measure (None without both rows)."""
    bm25, teacher = rows.get("ref-bm25"), rows.get("teacher")
    return teacher[TARGET_MEASURE] - bm25[TARGET_MEASURE] if bm25 and teacher else None


def kept_share(rows: dict[str, dict], row: dict) -> float | None:
    """The share of the teacher's gain over BM25 on the target measure that ``row`` keeps (negative: below BM25);
    None without the BM25 and teacher rows or when the teacher gains nothing over BM25 (no share to speak of)."""
    gain = teacher_gain(rows)
    if gain is None or gain <= 0:
        return None
    return (row[TARGET_MEASURE] - rows["ref-bm25"][TARGET_MEASURE]) / gain


def target_lines(rows: dict[str, dict], targets: Targets = TARGETS) -> list[str]:
    """One line a target the rows can answer, each saying met or NOT met."""
    m, lines = TARGET_MEASURE, []
    bm25, teacher, gain = rows.get("ref-bm25"), rows.get("teacher"), teacher_gain(rows)
    if gain is not None:
        lines.append(f"Target: teacher >= BM25 + {targets.teacher_gain:.2f} {m}: {teacher[m]:.4f} vs {bm25[m]:.4f} "
                     f"+ {targets.teacher_gain:.2f}: {verdict(gain >= targets.teacher_gain)}.")
    for n in STUDENT_LAYERS:
        best = best_student(rows, n)
        if best is None:
            continue
        name, row = best
        share, kept = targets.kept_share.get(n), kept_share(rows, row)
        if share is not None and kept is not None:
            lines.append(f"Target: the best {n}-layer student ({name}) keeps >= {share:.0%} of the teacher's gain "
                         f"over BM25: {kept:.0%} ({verdict(kept >= share)}).")
        times = targets.speedup.get(n)
        if times is not None and teacher and teacher.get("pairs/s") and row.get("pairs/s"):
            ratio = row["pairs/s"] / teacher["pairs/s"]
            lines.append(f"Target: the best {n}-layer student ({name}) reranks >= {times:g}x as fast as the teacher: "
                         f"{row['pairs/s']:,.0f} vs {teacher['pairs/s']:,.0f} pairs/s, {ratio:.2f}x "
                         f"({verdict(ratio >= times)}).")
    sizes = sorted({r["layers"] for k, r in rows.items() if k.startswith("student-")} - set(STUDENT_LAYERS))
    for n in sizes:  # sizes the targets do not cover (4 layers, where 2 and 3 fall short): measured, not judged
        name, row = best_student(rows, n)
        share = kept_share(rows, row)
        kept = f"keeps {share:.0%} of the teacher's gain over BM25" if share is not None else f"{row[m]:.4f}"
        ratio = (f", reranks {row['pairs/s'] / teacher['pairs/s']:.2f}x as fast as the teacher"
                 if teacher and teacher.get("pairs/s") and row.get("pairs/s") else "")
        lines.append(f"Measured (no target at this size): the best {n}-layer student ({name}) {kept}{ratio}.")
    first, second = targets.better
    for n in table_sizes(PROCEDURE_ROWS):  # the paper's ordering at every size of the table
        names = [procedure_student(n, p) for p in (first, second)]
        a, b = (rows.get(f"student-{name}") for name in names)
        if a and b:
            lines.append(f"Target: {names[0]} >= {names[1]}: {a[m]:.4f} vs {b[m]:.4f} ({verdict(a[m] >= b[m])}).")
    return lines


def table_sizes(table: dict[str, dict]) -> tuple[int, ...]:
    """The students' sizes (layers) of a procedures' table, in its order."""
    return tuple(dict.fromkeys(lever["layers"] for lever in table.values()))


def procedure_student(layers: int, procedure: str) -> str:
    """The student of the study's procedures table (``PROCEDURE_ROWS``) with ``layers`` and ``procedure``."""
    return next(n for n, lever in PROCEDURE_ROWS.items()
                if (lever["layers"], lever["procedure"]) == (layers, procedure))


def write_table(state: State, results: Path, device: str, held: int, labeled: int, dev: int) -> None:
    """The Markdown report of every row in ``state`` into ``results``, and the learning-curve PNGs beside it.
    ``device`` describes this call's device (the speed phase's is used when it ran); ``held``, ``labeled``,
    ``dev``: the number of held-out, labeled training and dev queries."""
    rows = state.rows()
    speed, scores = rows.pop("speed", None), rows.pop("scores", None)
    s = state.scale

    def cells(row: dict) -> list[str]:
        return [*(f"{row[m]:.4f}" for m in MEASURES), f"{row['pairs/s']:,.0f}" if row.get("pairs/s") else "-",
                f"{row['train s']:.0f}" if row.get("train s") else "-"]

    def kept(row: dict) -> str:
        share = kept_share(rows, row)
        return f"{share:.0%}" if share is not None else "-"

    def curve(name: str) -> str:
        log = state.log(name)
        points = eval_points(log) if log.is_file() else []
        if not points:
            return "-"
        best = max(points, key=lambda p: p[2])
        return f"{best[2]:.4f} @ {best[1] * group_pairs(name, s):,} pairs"

    head = ["system", "layers", *MEASURES, "rerank pairs/s", "train s"]
    refs = [[rows[k]["system"], rows[k]["layers"], *cells(rows[k])] for k in REFERENCES if k in rows]
    levers = [[n, json.dumps(LEVERS[n]) if LEVERS[n] else "(default)", *cells(rows[f"student-{n}"]),
               kept(rows[f"student-{n}"]), curve(n)] for n in LEVERS if f"student-{n}" in rows]
    tables = {f"x {{{', '.join(map(str, table_sizes(names)))}}} layers {title}":
              [[n, *cells(rows[f"student-{n}"]), kept(rows[f"student-{n}"]), curve(n)]
               for n in names if f"student-{n}" in rows] for title, names in PROCEDURE_TABLES.values()}
    parts = [
        "# Distillation study\n",
        f"`python benchmarks/distill_study.py` on {speed['device'] if speed else device}, in phases "
        f"(`--state`); scale: `{json.dumps(asdict(s))}`. Held out: {held} queries (BM25 top-100 reranked); "
        f"{labeled} labeled training queries; {dev} unlabeled dev queries. Rerank pairs/s: the small held-out "
        "rerank (per-call overheads in); the speed table has the engine's pairs/s per shape.\n",
        tabulate(refs, head, tablefmt="github"),
    ]
    if levers:
        parts += ["\n## Students, one lever at a time (against `2L`)\n",
                  tabulate(levers, ["student", "lever", *head[2:], KEPT, "best on the curve"], tablefmt="github")]
    for title, procs in tables.items():
        if procs:
            parts += [f"\n## The four procedures {title}\n",
                      tabulate(procs, ["student", *head[2:], KEPT, "best on the curve"], tablefmt="github")]
    targets = target_lines(rows)
    if targets:
        parts += ["\n## Targets\n", *(f"- {line}" for line in targets)]
    if speed:
        shapes = [[f"{n} layers", f"{speed['train pairs/s'][str(n)]:,.0f}", f"{speed['score pairs/s'][str(n)]:,.0f}"]
                  for n in SHAPES]
        share = speed["truncated share"]
        parts += ["\n## Cost per model shape (the speed phase)\n",
                  tabulate(shapes, ["MiniLM width", "train pairs/s", "score pairs/s (engine)"], tablefmt="github"),
                  f"\nPairs longer than {speed['max_length']} tokens: {share[str(speed['max_length'])]:.1%}; longer "
                  f"than {LONG_LENGTH}: {share[str(LONG_LENGTH)]:.1%} (of {speed['pairs measured']} pairs of dev and "
                  "held-out lists)."]
    if scores:
        parts.append(f"\nTeacher scores: {scores['pairs']:,} pairs of {scores['queries']:,} queries in "
                     f"{scores['seconds']:.0f}s.")
    results.parent.mkdir(parents=True, exist_ok=True)
    parts += write_curves(state, rows, results)
    results.write_text("\n".join(parts) + "\n", encoding="utf-8")
    print(f"  written {results}", flush=True)


def write_curves(state: State, rows: dict[str, dict], results: Path) -> list[str]:
    """The held-out learning curves of each family of levers and of the procedures, as PNGs beside ``results``
    (the floor: BM25 in random order, BM25 and the teacher as references); the report's lines naming them."""
    references = {rows[k]["system"]: rows[k][TARGET_MEASURE] for k in ("ref-random", "ref-bm25", "teacher")
                  if k in rows}
    lines = []
    for suffix, names in (*LEVER_FAMILIES.items(), *((group, tuple(table)) for group, (_, table)
                                                      in PROCEDURE_TABLES.items())):
        logs = {n: state.log(n) for n in names if state.log(n).is_file()}
        if len(logs) > 1:  # a figure compares
            png = results.with_name(f"{results.stem}_{suffix}.png")
            plot_curves(logs, png, title=f"held-out nDCG@10 while training ({suffix})", references=references)
            lines.append(f"\nLearning curves ({suffix}): `{png.name}`.")
    return lines
