"""The demo's student under the study's recipes, on the embedded sample: which one the demo should train.

The demo's teacher is trained (or reused) as ``make demo`` trains it; then 2-layer students from the same teacher,
inputs and training scale (``DemoSettings``: epochs, lr, groups), one recipe each, changing only what the recipe
names; then one ``compare`` run over the demo preset's candidates and 30 evaluation queries ranks them all beside
the teacher and BM25 (nDCG@10, paired tests, pairs/s side by side).

    python benchmarks/demo_student.py --out benchmarks/results/demo_student_cpu.md

Run it from the repository root, as ``make demo`` runs: the preset's folders (indexes/, models/) are relative to
the current folder, so the demo's trained teacher and student are reused.

Recipes (``RECIPES``): the demo's own (2 of the teacher's layers, ranker distillation), the same with every
student layer and attention map matched to its teacher layer (``--hidden-weight 1``), and the paper's procedure
from the pretrained MiniLM (``lm-distill+ranker-distill``, distill's default) without and with the matching.
Trained students are kept in ``--work`` and reused when run again.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from common import CARRY, machine

from pipeline.eval.significance import compare as paired
from pipeline.experiment.compare import compare
from pipeline.experiment.config import ModelSpec
from pipeline.experiment.demo import (
    DemoSettings,
    run_demo,
    student_config,
    student_inputs,
    train_runs,
    trained,
)
from pipeline.experiment.report import environment
from pipeline.runtime.atomic import atomic_write
from pipeline.train.recipes import distill, read_info

#: A rehearsal's settings: one step per phase, small groups (the script's own test).
REHEARSAL = DemoSettings(max_steps=1, score_depth=8, boot_group=4, boot_batch=2, lce_batch=2, student_group=4,
                         student_batch=2, max_length=96)
#: Each recipe's changes to the demo's student (``student_config``).
RECIPES: dict[str, dict] = {
    "hidden-states": {"hidden_weight": 1.0},
    "lm-distill+ranker-distill": {"procedure": "lm-distill+ranker-distill", "init_from": "base"},
    "lm-distill+ranker-distill+hidden-states": {"procedure": "lm-distill+ranker-distill", "init_from": "base",
                                                "hidden_weight": 1.0},
}


def training_seconds(folder: Path) -> float:
    """The seconds of a trained student's phases, as its training record sums them."""
    return sum(phase["seconds"] for phase in read_info(folder)["summaries"].values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=CARRY / "demo-student",
                        help="the students and the comparison's runs (kept: a second run reuses the students)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_student_cpu.md"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", default="demo", help="the comparison: the demo preset, or a TOML file on it")
    parser.add_argument("--models", type=Path, help="the demo's teacher and student (default: the preset's)")
    parser.add_argument("--rehearsal", action="store_true", help="one training step per phase: checks the script")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out, work = args.out.resolve(), args.work.resolve()
    settings = REHEARSAL if args.rehearsal else DemoSettings()
    start, load = time.perf_counter(), os.getloadavg()[0]
    demo = run_demo(output=work / "demo", models=args.models, device=args.device, progress=False,
                    settings=settings, config=args.config)  # the teacher and the demo's own student
    config = demo.config
    topics, run = train_runs(config)
    inputs = student_inputs(config, topics, run)
    students, seconds = [config.students[0]], {}
    for name, recipe in RECIPES.items():
        folder = work / name
        if not trained(folder):
            cfg = replace(student_config(settings), **recipe)
            distill(config.teacher.model, inputs, folder, cfg, device=args.device, resume=folder.exists())
        seconds[name] = training_seconds(folder)
        students.append(ModelSpec(model=str(folder), name=f"student-2L-{name}",
                                  description=f"the demo's student, {name}"))
    own_recipe = student_config(settings)
    own_seconds = training_seconds(Path(config.students[0].model))
    comparison = compare(replace(config, students=tuple(students), output=work / "compare"), progress=False)
    report = (work / "compare" / "report.md").read_text()
    measure, own = comparison.plot_measure, comparison.pipeline(config.students[0].name)
    tests = {spec.name: paired(comparison.pipeline(spec.name).per_query[measure], own.per_query[measure])
             for spec in students[1:]}
    lines = [
        "# The demo's student under the study's recipes (embedded sample, CPU)",
        "",
        f"Machine: {machine()['cpu']}; torch threads {environment()['torch_threads']}; load average at the start "
        f"{load:.1f}; {time.perf_counter() - start:.0f} s in all.",
        "",
        "Every student: 2 layers, the demo's training scale (`DemoSettings`: "
        f"{settings.student_epochs} epochs, lr {settings.student_lr}, groups of {settings.student_group}, "
        f"batch {settings.student_batch}, no random passages), the same teacher and inputs; each recipe changes "
        "only what it names (`RECIPES` in `benchmarks/demo_student.py`).",
        "",
        "| student | recipe | training s |",
        "|---|---|---:|",
        f"| student-2L | the demo's own: `--procedure {own_recipe.procedure} --init-from {own_recipe.init_from}` | "
        f"{own_seconds:.0f} |",
        *(f"| student-2L-{name} | `{json.dumps(RECIPES[name])}` | {s:.0f} |" for name, s in seconds.items()),
        "",
        f"Each recipe against the demo's own student ({measure}, paired over the {comparison.num_queries} "
        "evaluation queries):",
        "",
        f"| student | {measure} | the demo's own | difference | p (t-test) | p (randomisation) |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {name} | {t.mean_a:.4f} | {t.mean_b:.4f} | {t.delta:+.4f} | {t.p_ttest:.3f} | {t.p_randomisation:.3f} |"
          for name, t in tests.items()),
        "",
        "The comparison (`compare`, one run):",
        "",
        report.split("\n", 2)[2].strip(),
        "",
        "Command: `python benchmarks/demo_student.py` (trained students are reused from `--work`).",
    ]
    with atomic_write(out) as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"wrote {out} ({len(comparison.pipelines)} pipelines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
