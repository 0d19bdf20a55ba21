"""``distilrank submit`` and ``distilrank validate``: MS MARCO passage leaderboard files."""
from __future__ import annotations

import argparse

from ..runtime.outputs import claim_output

EXAMPLE_SUBMIT = "distilrank submit --run runs/dev/student.trec --out submissions/20261126-myteam --metadata meta.json"
EXAMPLE_VALIDATE = ("distilrank validate --run submissions/20261126-myteam/dev.txt.bz2 --topics queries.dev.small.tsv "
                    "--qrels qrels.dev.small.tsv")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "submit", help="write an MS MARCO passage leaderboard submission (bz2 run + metadata.json)",
        description="Write DIR/<split>.txt.bz2 in the leaderboard's format (qid<TAB>pid<TAB>rank, ranks 1..N, at most "
        "1000 per query) and DIR/metadata.json (team, model_description, paper, code, type). Fields not given "
        "in --metadata keep placeholders starting with 'FILL IN' that you must replace before submitting; "
        "type defaults to 'reranking'.", epilog=f"example: {EXAMPLE_SUBMIT}")
    p.add_argument("--run", required=True, help="run file to submit (TREC or MS MARCO format)")
    p.add_argument("--out", required=True, help="submission folder to write (e.g. submissions/yyyymmdd-team)")
    p.add_argument("--metadata", default=None,
                   help='a JSON file or an inline JSON object, e.g. \'{"team": "X", "model_description": "..."}\'')
    p.add_argument("--split", choices=("dev", "eval"), default="dev",
                   help="which queries the run answers (default dev)")
    p.set_defaults(func=_submit)

    p = subparsers.add_parser(
        "validate", help="check a leaderboard run file and print the official MRR@10",
        description="Check a run in the MS MARCO passage format (plain or .bz2): line format, numeric ids, duplicate "
        "passages or ranks, ranks not starting at 1, rank gaps, more than 1000 passages for a query and, with "
        "--topics, missing queries and queries not in the topics. Prints every problem found (exit 2) or 'valid' "
        "(exit 0); with --qrels also MRR@10 as the official MS MARCO evaluation script computes it.",
        epilog=f"example: {EXAMPLE_VALIDATE}")
    p.add_argument("--run", required=True, help="run file: qid<TAB>pid<TAB>rank, plain or .bz2")
    p.add_argument("--topics", default=None, help="topics TSV (qid<TAB>query) the run must answer, all and only")
    p.add_argument("--qrels", default=None, help="TREC qrels for the official MRR@10")
    p.set_defaults(func=_validate)


def _submit(args: argparse.Namespace) -> int:
    from ..eval.submit import (
        is_inline,
        load_metadata,
        placeholder_fields,
        submission_paths,
        validate_run,
        write_submission,
    )
    from ..io.runs import Run

    metadata = load_metadata(args.metadata)  # bad metadata fails before anything is written
    inputs = {"--run": args.run, "--metadata": None if is_inline(args.metadata) else args.metadata}
    with claim_output(args.out, inputs, folder=True, also=submission_paths(args.out, args.split)):
        run = Run.read(args.run)
        run_path, meta_path = write_submission(run, args.out, metadata, split=args.split, source=args.run)
    check = validate_run(run_path)
    print(f"wrote {run_path} ({check.num_queries} queries, {check.num_rows} rows) and {meta_path}")
    missing = placeholder_fields(metadata)
    if missing:
        print(f"NOTE: fill in {', '.join(missing)} in {meta_path} before submitting (they hold placeholders)")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ..eval.submit import validate_run
    from ..io.data import read_qrels, read_topics

    topics = read_topics(args.topics) if args.topics else None
    qrels = read_qrels(args.qrels) if args.qrels else None
    result = validate_run(args.run, topics=topics, qrels=qrels)
    print(f"{result.path}: {result.num_queries} queries, {result.num_rows} rows")
    if not result.valid:
        print(f"INVALID: {sum(result.counts.values())} problem(s)")
        for reason in result.reasons():
            print(f"  - {reason}")
        if qrels is not None:
            print("MRR @10 not computed: fix the problems above first")
        return 2
    print("valid")
    if result.mrr10 is not None:
        print(f"MRR @10: {result.mrr10:.4f} (official MS MARCO definition, over {_judged(qrels)} judged queries)")
    return 0


def _judged(qrels) -> int:
    return sum(1 for docs in qrels.values() if any(g >= 1 for g in docs.values()))
