"""The one ranking type of the pipeline, ``Run``, and its TREC and MS MARCO file formats.

A run maps a query id to a ``Ranking``, a ranked list of ``(docid, score)``. The order of that list *is* the
ranking: evaluation, writing and reranking all follow it, so ties are never re-broken by a tool
downstream. Rankings built from scores are sorted by score (descending) with ties kept in their
input order (a stable sort), so the same input always gives the same ranking.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..runtime.atomic import atomic_write
from .textfiles import BOM, checked_id, iter_lines

FORMATS = ("trec", "msmarco")
#: One query's ranking: its (docid, score) list, best first.
Ranking = list[tuple[str, float]]
#: The warning of a run file without rows (read as a run of no queries), after the file's name.
EMPTY = "%s: the run is empty (no ranked documents)"
log = logging.getLogger(__name__)


def run_format(path: str | Path) -> str:
    """``msmarco`` when the first non-blank line has three tab-separated fields, else ``trec``."""
    path = Path(path)
    if not path.is_file():
        raise InputError("run file not found", path)
    line = next((line for _, line in iter_lines(path) if line.strip()), "")
    return "msmarco" if "\t" in line and len(line.split("\t")) == 3 else "trec"


def warn_if_empty(path: str | Path) -> None:
    """Warn, naming the file, when the run file ``path`` holds no rows (read up to its first): what streams a run
    reads an empty one as a run of no queries, as ``Run.read`` does."""
    if not any(line.strip() for _, line in iter_lines(path)):
        log.warning(EMPTY, path)


def iter_run_rows(path: str | Path, start: int = 0, first_line: int = 1,
                  lines: int | None = None) -> Iterator[tuple[int, str, str, int, float]]:
    """Stream ``(lineno, qid, docid, rank, score)`` from a TREC or MS MARCO run file (format from the first
    line; MS MARCO rows score ``-rank``). A malformed line, an id with whitespace inside, a bad number or a NaN or
    infinite score raises ``InputError``. A part of the file: ``lines`` lines from the byte offset ``start`` (a
    line's first byte), numbered from ``first_line`` (``textfiles.iter_lines``)."""
    path = Path(path)
    fmt = run_format(path)
    for lineno, line in iter_lines(path, start=start, first_line=first_line, lines=lines):
        if not line.strip():
            continue
        parts = line.split("\t") if fmt == "msmarco" else line.split()
        if fmt == "msmarco" and len(parts) != 3:
            raise InputError("expected 'qid<TAB>docid<TAB>rank' (MS MARCO run format)", path, lineno)
        if fmt == "trec" and len(parts) != 6:
            raise InputError("expected 'qid Q0 docid rank score tag' (TREC run format)", path, lineno)
        try:
            rank = int(parts[3] if fmt == "trec" else parts[2])
            score = float(parts[4]) if fmt == "trec" else -float(rank)
        except ValueError:
            raise InputError("rank or score is not a number", path, lineno) from None
        if not math.isfinite(score):
            raise InputError("score is NaN" if math.isnan(score) else "score is infinite", path, lineno)
        if fmt == "msmarco":  # TREC fields are split at whitespace: their ids cannot hold any
            parts[0], parts[1] = checked_id(parts[0], "query id", path, lineno), checked_id(parts[1], "docid", path,
                                                                                          lineno)
        yield lineno, parts[0], parts[2 if fmt == "trec" else 1], rank, score


@dataclass
class QuerySpan:
    """Where one query's rows are in a run file: its first byte, its lines (with blank lines after its rows)
    and its rows. A span with ``qid`` None holds blank lines only."""

    qid: str | None
    offset: int
    lines: int = 0
    rows: int = 0


def query_spans(path: str | Path, start: int, end: int) -> list[QuerySpan]:
    """The spans of the queries whose lines begin in the bytes ``[start, end)`` of a run file, without parsing
    the rows (a fast scan for cutting a huge run into parts: ``join_spans`` puts the scans of consecutive byte
    ranges together). The first span may continue a query begun before ``start``."""
    path = Path(path)
    sep = b"\t" if run_format(path) == "msmarco" else None
    spans: list[QuerySpan] = []
    with open(path, "rb") as handle:
        if start > 0:  # to the first line beginning at or after start
            handle.seek(start - 1)
            start += len(handle.readline()) - 1
        handle.seek(start)
        position = start
        current = None
        for line in handle:
            if position >= end:
                break
            if line.strip():
                field = line[len(BOM):] if position == 0 and line.startswith(BOM) else line  # the text rule's BOM
                qid = field.split(sep, 1)[0].decode("utf-8", errors="replace")
                if current is None or qid != current.qid:
                    current = QuerySpan(qid, position)
                    spans.append(current)
                current.rows += 1
            elif current is None:
                current = QuerySpan(None, position)
                spans.append(current)
            current.lines += 1
            position += len(line)
    return spans


def join_spans(parts: Iterable[list[QuerySpan]], path: str | Path) -> tuple[int, list[QuerySpan]]:
    """The spans of a whole run file from the ``query_spans`` of its consecutive byte ranges: a part's first span
    continuing the previous part's last query (or holding blank lines only) is folded into it. Returns the
    lines before the first query and the spans; a query whose rows are not together is an ``InputError``."""
    joined: list[QuerySpan] = []
    blank = 0
    for part in parts:
        for span in part:
            if joined and span.qid in (None, joined[-1].qid):
                joined[-1].lines += span.lines
                joined[-1].rows += span.rows
            elif span.qid is None:
                blank += span.lines
            else:
                joined.append(QuerySpan(span.qid, span.offset, span.lines, span.rows))
    seen: dict[str, int] = {}
    line = 1 + blank
    for span in joined:
        if span.qid in seen:
            raise InputError(f"query {span.qid} appears again after other queries (first on line {seen[span.qid]}): "
                             "the run must keep each query's rows together (sort it by query id first)", path, line)
        seen[span.qid] = line
        line += span.lines
    return blank, joined


def rank_rows(entries: list[tuple[int, str, float, int]]) -> Ranking:
    """One query's ``(rank, docid, score, lineno)`` rows as a ranking: by rank, then score, then file order."""
    entries.sort(key=lambda e: (e[0], -e[2], e[3]))
    return [(docid, score) for _, docid, score, _ in entries]


class Run:
    """Query id -> ranked list of (docid, score), best first."""

    def __init__(self, rankings: Mapping[str, Ranking] | None = None, name: str = "run"):
        self.rankings: dict[str, Ranking] = dict(rankings or {})
        self.name = name

    @classmethod
    def from_scores(cls, scores: Mapping[str, Iterable[tuple[str, float]]], name: str = "run") -> Run:
        """Rank each query's (docid, score) pairs by score, descending; ties keep input order."""
        return cls({qid: sorted(pairs, key=lambda p: -p[1]) for qid, pairs in scores.items()}, name)

    def __len__(self) -> int:
        return len(self.rankings)

    def __iter__(self) -> Iterator[str]:
        return iter(self.rankings)

    def __contains__(self, qid: object) -> bool:
        return qid in self.rankings

    def __getitem__(self, qid: str) -> Ranking:
        return self.rankings[qid]

    def items(self):
        return self.rankings.items()

    @property
    def num_pairs(self) -> int:
        """The number of (query, docid) pairs in the run."""
        return sum(len(r) for r in self.rankings.values())

    def top(self, k: int) -> Run:
        """The first ``k`` documents of every query."""
        return Run({qid: r[:k] for qid, r in self.rankings.items()}, self.name)

    def subset(self, qids: Iterable[str]) -> Run:
        """The rankings of the given queries (those present), in the given order."""
        return Run({q: self.rankings[q] for q in qids if q in self.rankings}, self.name)

    def to_ir_measures(self) -> dict[str, dict[str, float]]:
        """qid -> {docid: score} where the scores encode our ranks, so tools cannot re-break ties."""
        return {qid: {doc: float(len(r) - i) for i, (doc, _) in enumerate(r)} for qid, r in self.rankings.items()}

    # ---- files ---------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | Path, name: str | None = None) -> Run:
        """Read a TREC (``qid Q0 docid rank score tag``) or MS MARCO (``qid\tdocid\trank``) run.

        The format is detected from the first line. Rows are ordered by rank within each query.
        A docid twice for the same query, a malformed line or a bad number raises ``InputError``; an empty file
        is read as an empty run, with a warning.
        """
        rows: dict[str, list[tuple[int, str, float, int]]] = {}
        seen: dict[str, dict[str, int]] = {}
        for lineno, qid, docid, rank, score in iter_run_rows(path):
            first = seen.setdefault(qid, {}).setdefault(docid, lineno)
            if first != lineno:
                raise InputError(f"duplicate docid {docid} for query {qid} (first on line {first})", path, lineno)
            rows.setdefault(qid, []).append((rank, docid, score, lineno))
        if not rows:
            log.warning(EMPTY, path)
        return cls({qid: rank_rows(entries) for qid, entries in rows.items()}, name or Path(path).stem)

    def lines(self, fmt: str = "trec", tag: str | None = None, max_rank: int | None = None) -> Iterator[str]:
        """The run's lines in ``fmt`` (``trec``: ``qid Q0 docid rank score tag``; ``msmarco``:
        ``qid<TAB>docid<TAB>rank``): the one place a run file's line is written. A NaN or infinite score, an empty
        id or one with whitespace inside is a ``ValueError`` (it could not be read back)."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown run format {fmt!r}; expected one of {FORMATS}")
        tag = tag or self.name
        for qid, ranking in self.rankings.items():
            for rank, (docid, score) in enumerate(ranking[:max_rank], 1):
                if docid.split() != [docid] or (rank == 1 and qid.split() != [qid]):
                    raise ValueError(f"query id {qid!r} or docid {docid!r} is empty or holds whitespace: refusing "
                                     "to write it (it could not be read back)")
                if not math.isfinite(score):
                    kind = "NaN" if math.isnan(score) else "infinite"
                    raise ValueError(f"{kind} score for query {qid}, docid {docid}: refusing to write it")
                yield f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n" if fmt == "trec" else f"{qid}\t{docid}\t{rank}\n"

    def write(self, path: str | Path, fmt: str = "trec", tag: str | None = None, max_rank: int | None = None) -> Path:
        """Write the run atomically (temporary file, then rename): nothing is left behind on an error."""
        path = Path(path)
        with atomic_write(path) as out:
            out.writelines(self.lines(fmt, tag, max_rank))
        return path
