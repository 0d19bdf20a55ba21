"""Teacher score files: the teacher's scores for candidate lists, written once, reused by every student.

Format (text, one candidate a line, in the run's order)::

    # distilrank-scores {"fingerprint": "...", "depth": 30, "model": "...", "queries": 2, "pairs": 60}
    qid<TAB>docid<TAB>score

The fingerprint is a SHA-1 of the candidate lists (``qid<TAB>docid`` lines of the run's
top-``depth``, in order). Distillation recomputes it from the run it is given and refuses a score
file made for other candidate lists.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..atomic import atomic_write
from ..errors import InputError
from .groups import Ranking, iter_run_lists

MAGIC = "# distilrank-scores "
BLOCK = 1 << 22


class Fingerprint:
    """Incremental SHA-1 of candidate lists."""

    def __init__(self) -> None:
        self._sha = hashlib.sha1()

    def add(self, qid: str, docids: Iterable[str]) -> None:
        self._sha.update("".join(f"{qid}\t{d}\n" for d in docids).encode())

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def run_fingerprint(run_path: str | Path, depth: int | None) -> str:
    """The fingerprint of a run file's top-``depth`` candidate lists (streamed)."""
    fp = Fingerprint()
    for qid, ranking in iter_run_lists(run_path, depth):
        fp.add(qid, (d for d, _ in ranking))
    return fp.hexdigest()


def score_lines(lists: Iterable[tuple[str, Ranking]]) -> str:
    """The body lines of scored candidate lists (``qid<TAB>docid<TAB>score``): the one place they are written.
    NaN scores are refused."""
    lines = []
    for qid, scored in lists:
        for docid, score in scored:
            if math.isnan(score):
                raise ValueError(f"NaN score for query {qid}, docid {docid}: refusing to write it")
            lines.append(f"{qid}\t{docid}\t{score:.7g}\n")
    return "".join(lines)


#: The score column of a body line, with its tab: what the fingerprint leaves out (``qid<TAB>docid<NEWLINE>``).
_SCORE_COLUMN = re.compile(rb"\t[^\t\n]*\n")


def join_scores(parts: Sequence[Path], path: str | Path, depth: int | None, model: str, queries: int) -> dict:
    """Write the score file ``path`` atomically from body parts (``score_lines`` of consecutive whole queries, in
    order; ``queries`` lists in all): the header (fingerprint, counts), then the parts byte for byte."""
    sha, pairs = hashlib.sha1(), 0
    for part in parts:
        with open(part, "rb") as src:
            carry = b""
            while block := src.read(BLOCK):
                block, carry = carry + block, b""
                cut = block.rfind(b"\n") + 1
                block, carry = block[:cut], block[cut:]
                sha.update(_SCORE_COLUMN.sub(b"\n", block))
                pairs += block.count(b"\n")
            if carry:
                raise ValueError(f"{part}: the last line of a score part has no newline")
    header = {"fingerprint": sha.hexdigest(), "depth": depth, "model": model, "queries": queries, "pairs": pairs}
    with atomic_write(path, "wb") as out:
        out.write((MAGIC + json.dumps(header, sort_keys=True) + "\n").encode())
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, BLOCK)
    return header


def write_scores(path: str | Path, lists: Iterable[tuple[str, Ranking]], depth: int | None, model: str) -> dict:
    """Write scored candidate lists atomically; returns the header. NaN scores are refused."""
    path = Path(path)
    body = path.with_name(path.name + ".body")
    queries = 0
    try:
        with atomic_write(body) as out:
            for qid, scored in lists:
                out.write(score_lines([(qid, scored)]))
                queries += 1
        return join_scores([body], path, depth, model, queries)
    finally:
        body.unlink(missing_ok=True)


class ScoreFile:
    """A teacher score file: its header, a streamed reader, and the check against a run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("score file not found", self.path)
        with open(self.path, encoding="utf-8") as handle:
            first = handle.readline()
        if not first.startswith(MAGIC):
            raise InputError("not a distilrank score file (write one with 'distilrank score')", self.path, 1)
        try:
            self.header = json.loads(first[len(MAGIC):])
            self.fingerprint = str(self.header["fingerprint"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError("malformed score file header", self.path, 1) from None
        self.depth = self.header.get("depth")

    def check_run(self, run_path: str | Path) -> None:
        """Refuse the file when it was made for other candidate lists than ``run_path``'s top-depth."""
        if run_fingerprint(run_path, self.depth) != self.fingerprint:
            raise InputError(
                f"score file does not match the candidate lists of {run_path} (top-{self.depth}): "
                "it was written for another run or depth; rescore with 'distilrank score'", self.path, 1)

    def __iter__(self) -> Iterator[tuple[str, Ranking]]:
        """Stream ``(qid, [(docid, score), ...])``; the body is checked against the header's fingerprint."""
        fp = Fingerprint()
        current, scored = None, []
        with open(self.path, encoding="utf-8") as handle:
            handle.readline()
            for lineno, line in enumerate(handle, 2):
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 3:
                    raise InputError("expected 'qid<TAB>docid<TAB>score'", self.path, lineno)
                try:
                    score = float(parts[2])
                except ValueError:
                    raise InputError(f"score {parts[2]!r} is not a number", self.path, lineno) from None
                if parts[0] != current:
                    if current is not None:
                        fp.add(current, (d for d, _ in scored))
                        yield current, scored
                    current, scored = parts[0], []
                scored.append((parts[1], score))
        if current is not None:
            fp.add(current, (d for d, _ in scored))
            yield current, scored
        if fp.hexdigest() != self.fingerprint:
            raise InputError("score file body does not match its header's fingerprint (edited or truncated?)",
                             self.path)
