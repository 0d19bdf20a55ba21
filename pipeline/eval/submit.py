"""MS MARCO passage leaderboard files: write a submission, validate a run file.

A submission is a folder holding the run in the leaderboard's format (``qid<TAB>pid<TAB>rank``, ranks
1..N, at most 1,000 passages per query), bz2-compressed as ``dev.txt.bz2`` or ``eval.txt.bz2``, and
``metadata.json`` with the fields the leaderboard shows (team, model description, paper, code,
type ``full ranking`` or ``reranking``).

The validator checks a run file (plain or ``.bz2``) for every problem at once and reports them all;
with qrels it also gives MRR@10 as the official MS MARCO evaluation script computes it (see
``pipeline.evaluate.msmarco_mrr10``).
"""
from __future__ import annotations

import bz2
import itertools
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io.runs import Run
from ..io.textfiles import iter_lines, read_text
from ..runtime.atomic import atomic_write
from .evaluate import msmarco_mrr10

MAX_PER_QUERY = 1000
SPLITS = ("dev", "eval")
TYPES = ("full ranking", "reranking")
PLACEHOLDER = "FILL IN"
#: The leaderboard's metadata fields; defaults with ``FILL IN`` placeholders the user must replace.
DEFAULT_METADATA = {
    "team": f"{PLACEHOLDER}: team or individual name shown on the leaderboard",
    "model_description": f"{PLACEHOLDER}: e.g. BM25 + distilled 2-layer BERT cross-encoder (distilrank)",
    "paper": "",
    "code": "",
    "type": "reranking",
}
#: How many examples of each kind of problem ``validate_run`` keeps (the count covers them all).
EXAMPLES_PER_PROBLEM = 5


def is_inline(source: object) -> bool:
    """Whether a ``--metadata`` value is an inline JSON object rather than a file name."""
    return isinstance(source, str) and source.lstrip().startswith("{")


def submission_paths(out_dir: str | Path, split: str) -> tuple[Path, Path]:
    """The two files of a submission: ``OUT/<split>.txt.bz2`` and ``OUT/metadata.json``."""
    return Path(out_dir) / f"{split}.txt.bz2", Path(out_dir) / "metadata.json"


def load_metadata(source: str | Path | Mapping | None) -> dict[str, str]:
    """Submission metadata from a JSON file, an inline JSON object, or a mapping, over the defaults.

    Unknown fields and a ``type`` other than ``full ranking``/``reranking`` are errors.
    """
    where = None
    if source is None:
        given: Mapping = {}
    elif isinstance(source, Mapping):
        given = source
    elif is_inline(source):
        try:
            given = json.loads(str(source))
        except json.JSONDecodeError as err:
            raise InputError(f"--metadata is not valid JSON: {err.msg} at character {err.pos}") from None
    else:
        where = Path(source)
        if not where.is_file():
            raise InputError("metadata JSON file not found", where)
        try:
            given = json.loads(read_text(where))
        except json.JSONDecodeError as err:
            raise InputError(f"not valid JSON: {err.msg}", where, err.lineno) from None
    if not isinstance(given, Mapping):
        raise InputError("metadata must be a JSON object", where)
    unknown = sorted(set(given) - set(DEFAULT_METADATA))
    if unknown:
        raise InputError(f"unknown metadata field(s) {unknown}; expected {sorted(DEFAULT_METADATA)}", where)
    metadata = {**DEFAULT_METADATA, **{k: str(v) for k, v in given.items()}}
    if metadata["type"] not in TYPES:
        raise InputError(f"metadata type must be one of {list(TYPES)}, not {metadata['type']!r}", where)
    return metadata


def placeholder_fields(metadata: Mapping[str, str]) -> list[str]:
    """The metadata fields still holding a ``FILL IN`` placeholder."""
    return [k for k, v in metadata.items() if str(v).startswith(PLACEHOLDER)]


def is_leaderboard_id(value: str) -> bool:
    """Whether ``value`` is an id (or rank) the leaderboard takes: ASCII digits only (what ``validate_run``
    checks, and what ``write_submission`` writes)."""
    return value.isascii() and value.isdigit()


def write_submission(
    run: Run, out_dir: str | Path, metadata: str | Path | Mapping | None = None, split: str = "dev",
    source: str | Path | None = None,
) -> tuple[Path, Path]:
    """Write ``OUT/<split>.txt.bz2`` (top 1,000 per query, MS MARCO format) and ``OUT/metadata.json``.

    Both files are written atomically and together: either both appear or neither (a full disk, Ctrl-C).
    An empty run, or one with a query or passage id that is not a number (``validate_run`` would reject the
    file), is an ``InputError`` naming ``source`` (the run's file) before anything is written. Returns their paths.
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {list(SPLITS)}, not {split!r}")
    meta = load_metadata(metadata)
    if not run.rankings:
        raise InputError("the run is empty: nothing to submit", source)
    for qid, ranking in run.items():
        bad = next((i for i in [qid, *(d for d, _ in ranking[:MAX_PER_QUERY])] if not is_leaderboard_id(i)), None)
        if bad is not None:
            what = "query id" if bad == qid else f"passage id of query {qid}"
            raise InputError(f"{what} {bad!r} is not a number: the leaderboard takes numeric ids only", source)
    run_path, meta_path = submission_paths(out_dir, split)
    with atomic_write(meta_path) as meta_out:
        json.dump(meta, meta_out, indent=2)
        meta_out.write("\n")
        meta_out.flush()  # written before the run file is renamed into place: a failure of either removes both
        with atomic_write(run_path, "wb") as raw, bz2.open(raw, "wt", encoding="utf-8") as out:
            out.writelines(run.lines("msmarco", max_rank=MAX_PER_QUERY))
    return run_path, meta_path


# ---- validation ---------------------------------------------------------------------------------


@dataclass
class Validation:
    """The outcome of ``validate_run``: every problem found, grouped by kind, and run statistics."""

    path: Path
    problems: dict[str, list[str]] = field(default_factory=dict)  # kind -> examples
    counts: Counter = field(default_factory=Counter)  # kind -> number of occurrences
    num_queries: int = 0
    num_rows: int = 0
    mrr10: float | None = None
    run: Run | None = None

    @property
    def valid(self) -> bool:
        return not self.counts

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        examples = self.problems.setdefault(kind, [])
        if len(examples) < EXAMPLES_PER_PROBLEM:
            examples.append(example)

    def reasons(self) -> list[str]:
        """One line per kind of problem: the kind, how many times, and the first examples."""
        lines = []
        for kind, examples in self.problems.items():
            more = self.counts[kind] - len(examples)
            tail = f" (and {more} more)" if more > 0 else ""
            lines.append(f"{kind} x{self.counts[kind]}: {'; '.join(examples)}{tail}")
        return lines


def validate_run(
    path: str | Path, topics: Mapping[str, str] | None = None, qrels: Mapping[str, Mapping[str, int]] | None = None
) -> Validation:
    """Check a leaderboard run file (``qid<TAB>pid<TAB>rank``, plain or ``.bz2``) and report every problem.

    Checks: line format and numeric ids/ranks, a passage twice for a query, a rank twice, ranks not
    starting at 1, gaps in the ranks, more than 1,000 passages for a query, and with ``topics``,
    queries of the topics missing from the run and queries of the run not in the topics. With
    ``qrels``, ``mrr10`` is the official MS MARCO MRR@10 of the run (computed on a valid file only).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("run file not found", path)
    result = Validation(path)
    rows: dict[str, list[tuple[int, str]]] = {}
    try:
        for lineno, line in iter_lines(path, bz2.open if path.suffix == ".bz2" else open):
            if not line.strip():
                result.add("empty line", f"line {lineno}")
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                result.add("not 'qid<TAB>pid<TAB>rank'", f"line {lineno}: {line[:60]!r}")
                continue
            qid, pid, rank = (p.strip() for p in parts)
            bad = [name for name, value in (("qid", qid), ("pid", pid), ("rank", rank))
                   if not is_leaderboard_id(value)]
            if bad:
                result.add("non-numeric id or rank", f"line {lineno}: {'/'.join(bad)} in {line[:60]!r}")
                continue
            rows.setdefault(qid, []).append((int(rank), pid))
            result.num_rows += 1
    except (OSError, EOFError) as err:  # a damaged .bz2 stream
        raise InputError(f"cannot read run file: {err}", path) from None
    if not result.num_rows and not result.counts:
        result.add("empty run", "no lines")
    result.num_queries = len(rows)
    for qid, entries in rows.items():
        pids = Counter(pid for _, pid in entries)
        for pid, n in pids.items():
            if n > 1:
                result.add("passage ranked twice for a query", f"query {qid}, pid {pid} ({n} times)")
        ranks = Counter(rank for rank, _ in entries)
        for rank, n in sorted(ranks.items()):
            if n > 1:
                result.add("rank used twice for a query", f"query {qid}, rank {rank} ({n} times)")
        ordered = sorted(ranks)
        if ordered[0] != 1:
            result.add("ranks do not start at 1", f"query {qid} starts at rank {ordered[0]}")
        gaps = [(a, b) for a, b in itertools.pairwise(ordered) if b != a + 1]
        if gaps:
            a, b = gaps[0]
            more = f" (+{len(gaps) - 1} gaps)" if len(gaps) > 1 else ""
            result.add("gap in ranks", f"query {qid}: rank {a} then {b}{more}")
        if len(entries) > MAX_PER_QUERY:
            result.add(f"more than {MAX_PER_QUERY} passages for a query", f"query {qid}: {len(entries)}")
    if topics is not None:
        for qid in topics:
            if qid not in rows:
                result.add("query of the topics missing from the run", f"query {qid}")
        for qid in rows:
            if qid not in topics:
                result.add("query not in the topics", f"query {qid}")
    result.run = Run({q: [(pid, -float(r)) for r, pid in sorted(e)] for q, e in rows.items()}, path.name)
    if qrels is not None and result.valid:
        result.mrr10 = msmarco_mrr10(result.run, qrels)
    return result
