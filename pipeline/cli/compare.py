"""``distilrank compare`` (full vs distilled pipelines from a TOML config) and ``distilrank demo``."""
from __future__ import annotations

import argparse
import contextlib

from ..runtime.outputs import claim_output

EXAMPLE_COMPARE = "distilrank compare --config msmarco-subset"


class _ListKeys(argparse.Action):
    """``--keys``: print every config key with its default and help, then exit (like ``--version``)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from ..experiment.config import describe_keys

        print(describe_keys())
        parser.exit()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="compare BM25 + teacher with BM25 + each student: effectiveness, significance, speed",
        description="Run the comparison of a TOML config (a file, or a preset shipped with distilrank: demo, "
        "msmarco-subset, msmarco-subset-hybrid, msmarco-dev; see configs/README.md): one cached BM25 pass, every "
        "reranker over the same candidates (warm-up, then timed in interleaved rounds), ir-measures metrics, "
        "paired t-test and randomisation test of each student against the teacher and BM25, speed (pairs/s, "
        "p50/p95 latency, time per stage, speedup). Writes report.md, report.json and effectiveness_vs_speed.png "
        "into runs/NAME/ (or --output). All inputs are checked before any work starts.",
        epilog=f"example: {EXAMPLE_COMPARE}")
    p.add_argument("--config", required=True, help="a TOML config file or a preset name (its paths relative to the "
                   "current folder)")
    p.add_argument("--keys", nargs=0, action=_ListKeys, help="list every config key, its default and help, and exit")
    p.add_argument("--output", default=None, help="folder for runs and reports (default: the config's, runs/NAME)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_compare)

    p = subparsers.add_parser(
        "demo", help="the whole job on the embedded sample: index, BM25, teacher, 2-layer student, compare",
        description="On the embedded sample collection (pipeline/resources/sample): build the index, BM25, fine-tune "
        "a teacher from the packaged pretrained MiniLM, distil a 2-layer student from it, then compare them "
        "(the demo preset) and print the table and where the report is. Minutes on a laptop CPU; trained "
        "models are reused on later runs unless --retrain.")
    p.add_argument("--output", default=None, help="folder for runs and reports (default runs/demo)")
    p.add_argument("--models", default=None,
                   help="folder for the two trained models (default models/ under the current folder)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto or cuda")
    p.add_argument("--retrain", action="store_true", help="train the teacher and the student again")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)


def _show(comparison) -> None:
    from ..experiment.report import REPORT_FILES, terminal_table

    print()
    print(terminal_table(comparison))
    print()
    for name in REPORT_FILES:
        print(f"{name}: {comparison.output / name}")


def _compare(args: argparse.Namespace) -> int:
    from ..experiment.compare import compare, written_files
    from ..experiment.config import load_config

    config = load_config(args.config, args.output)
    with claim_output(config.output, config.input_paths(), folder=True, also=written_files(config)):
        _show(compare(config, progress=False if args.no_progress else None))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..experiment.demo import run_demo

    with contextlib.ExitStack() as claims:
        for folder in (args.output, args.models):
            if folder is not None:
                claims.enter_context(claim_output(folder, folder=True))
        comparison = run_demo(output=args.output, models=args.models, device=args.device, retrain=args.retrain,
                              progress=False if args.no_progress else None)
    _show(comparison)
    print(f"demo finished in {comparison.seconds:.0f} s; the report is {comparison.output / 'report.md'}")
    return 0
