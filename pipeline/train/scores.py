"""Teacher score files: the teacher's scores for candidate lists, written once, reused by every student.

Format (text, one candidate a line, in the run's order)::

    # distilrank-scores {"fingerprint": "...", "depth": 30, "model": "...", "queries": 2, "pairs": 60}
    qid<TAB>docid<TAB>score
    qid<TAB>docid<TAB>score<TAB>random

A file scored with random negatives (header ``"random_negatives": K``) ends each query's list with K
passages drawn at random from the collection, marked ``random`` in a fourth column: iterating a
``ScoreFile`` gives the run's candidates, ``random_lists`` the random ones.

The fingerprint is a SHA-1 of the candidate lists (``qid<TAB>docid`` lines of the run's
top-``depth``, in order; random rows left out). Distillation recomputes it from the run it is given
and refuses a score file made for other candidate lists. The header's ``sha1`` is the SHA-1 of the body's
bytes: reading the file checks both as it streams (no extra read), so a truncated or edited file (a score
changed at the same size included) is refused once read; files written before the digest was recorded are
checked by their fingerprint alone.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import InputError
from ..io.runs import Ranking
from ..io.textfiles import iter_lines
from ..runtime.atomic import atomic_write, scratch_dir
from ..runtime.diskspace import size_of, space_checked
from .groups import iter_run_lists

MAGIC = "# distilrank-scores "
RANDOM_FLAG = "\trandom"
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


def score_lines(lists: Iterable[tuple[str, Ranking]], random_negatives: int = 0) -> str:
    """The body lines of scored candidate lists (``qid<TAB>docid<TAB>score``, the last ``random_negatives`` of
    each list flagged ``random``): the one place they are written. NaN and infinite scores are refused."""
    lines = []
    for qid, scored in lists:
        candidates = len(scored) - random_negatives
        for i, (docid, score) in enumerate(scored):
            if not math.isfinite(score):
                raise ValueError(f"{score} score for query {qid}, docid {docid}: refusing to write it")
            lines.append(f"{qid}\t{docid}\t{score:.7g}{RANDOM_FLAG if i >= candidates else ''}\n")
    return "".join(lines)


#: What the fingerprint leaves out of the body: random rows whole, and the score column of the others (with its
#: tab), so that ``qid<TAB>docid<NEWLINE>`` remains (``Fingerprint``).
_RANDOM_ROW = re.compile(rb"^[^\n]*" + re.escape(RANDOM_FLAG.encode()) + rb"\n", re.MULTILINE)
_SCORE_COLUMN = re.compile(rb"\t[^\t\n]*\n")


def join_scores(parts: Sequence[Path], path: str | Path, depth: int | None, model: str, queries: int,
                random_negatives: int = 0) -> dict:
    """Write the score file ``path`` atomically from body parts (``score_lines`` of consecutive whole queries, in
    order; ``queries`` lists in all): the header (fingerprint, counts), then the parts byte for byte."""
    sha, body, pairs = hashlib.sha1(), hashlib.sha1(), 0
    for part in parts:
        with open(part, "rb") as src:
            carry = b""
            while block := src.read(BLOCK):
                body.update(block)
                block, carry = carry + block, b""
                cut = block.rfind(b"\n") + 1
                block, carry = block[:cut], block[cut:]
                sha.update(_SCORE_COLUMN.sub(b"\n", _RANDOM_ROW.sub(b"", block)))
                pairs += block.count(b"\n")
            if carry:
                raise ValueError(f"{part}: the last line of a score part has no newline")
    header = {"fingerprint": sha.hexdigest(), "sha1": body.hexdigest(), "depth": depth, "model": model,
              "queries": queries, "pairs": pairs}
    if random_negatives:
        header["random_negatives"] = random_negatives
    with atomic_write(path, "wb") as out:
        out.write((MAGIC + json.dumps(header, sort_keys=True) + "\n").encode())
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, BLOCK)
    return header


def write_scores(path: str | Path, lists: Iterable[tuple[str, Ranking]], depth: int | None, model: str,
                 random_negatives: int = 0) -> dict:
    """Write scored candidate lists atomically; returns the header. NaN scores are refused. With
    ``random_negatives`` = K, the last K entries of every list are random passages (flagged)."""
    queries = 0
    with scratch_dir(path) as work:  # the body first (the header needs its counts), then header + body
        body = work / "body"
        with space_checked(path, written=lambda: size_of(body)), open(body, "w", encoding="utf-8") as out:
            for qid, scored in lists:
                out.write(score_lines([(qid, scored)], random_negatives))
                queries += 1
        return join_scores([body], path, depth, model, queries, random_negatives)


class ScoreFile:
    """A teacher score file: its header, a streamed reader, and the check against a run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("score file not found", self.path)
        first = next((line for _, line in iter_lines(self.path)), "")
        if not first.startswith(MAGIC):
            raise InputError("not a distilrank score file (write one with 'distilrank score')", self.path, 1)
        try:
            self.header = json.loads(first[len(MAGIC):])
            self.fingerprint = str(self.header["fingerprint"])
            self.sha1 = self.header.get("sha1")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise InputError("malformed score file header (rescore with 'distilrank score')", self.path, 1) from None
        self.depth = self.header.get("depth")
        self.random_negatives = int(self.header.get("random_negatives", 0))

    def check_run(self, run_path: str | Path) -> None:
        """Refuse the file when it was made for other candidate lists than ``run_path``'s top-depth."""
        if run_fingerprint(run_path, self.depth) != self.fingerprint:
            raise InputError(
                f"score file does not match the candidate lists of {run_path} (top-{self.depth}): "
                "it was written for another run or depth; rescore with 'distilrank score'", self.path, 1)

    def check_random(self, wanted: int) -> None:
        """Refuse the file when its lists hold fewer teacher-scored random passages a query than ``wanted``."""
        if self.random_negatives < wanted:
            raise InputError(
                f"has {self.random_negatives} teacher-scored random passages a query, fewer than --random-negatives "
                f"{wanted}: score with 'distilrank score --random-negatives {wanted}', or distill with "
                "--random-negatives 0", self.path, 1)

    def _rows(self) -> Iterator[tuple[str, str, float, bool]]:
        """``(qid, docid, score, is_random)`` of every body row; once the last is read, the body is checked against
        the header's fingerprint and digest."""
        fp, body = Fingerprint(), hashlib.sha1()
        current, docids = None, []
        lines = iter_lines(self.path)
        next(lines)  # the header
        for lineno, line in lines:
            body.update(line.encode() + b"\n")
            parts = line.split("\t")
            if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != RANDOM_FLAG.strip()):
                raise InputError("expected 'qid<TAB>docid<TAB>score[<TAB>random]'", self.path, lineno)
            try:
                score = float(parts[2])
            except ValueError:
                raise InputError(f"score {parts[2]!r} is not a number", self.path, lineno) from None
            if not math.isfinite(score):
                raise InputError(f"score {parts[2]!r} is not a finite number", self.path, lineno)
            if len(parts) == 3:
                if parts[0] != current and current is not None:
                    fp.add(current, docids)
                    docids = []
                current = parts[0]
                docids.append(parts[1])
            yield parts[0], parts[1], score, len(parts) == 4
        if current is not None:
            fp.add(current, docids)
        if fp.hexdigest() != self.fingerprint:
            raise InputError("score file body does not match its header's fingerprint (edited or truncated?): "
                             "rescore with 'distilrank score'", self.path)
        if self.sha1 is not None and body.hexdigest() != self.sha1:
            raise InputError("score file body does not match its header's digest (edited or truncated?): "
                             "rescore with 'distilrank score'", self.path)

    def random_lists(self) -> dict[str, Ranking]:
        """The teacher-scored random passages of each query (empty without ``random_negatives``)."""
        lists: dict[str, Ranking] = {}
        if self.random_negatives:
            for qid, docid, score, is_random in self._rows():
                if is_random:
                    lists.setdefault(qid, []).append((docid, score))
        return lists

    def __iter__(self) -> Iterator[tuple[str, Ranking]]:
        """Stream ``(qid, [(docid, score), ...])`` of the run's candidates; the body is checked against the
        header once read (``_rows``)."""
        current, scored = None, []
        for qid, docid, score, is_random in self._rows():
            if is_random:
                continue
            if qid != current:
                if current is not None:
                    yield current, scored
                current, scored = qid, []
            scored.append((docid, score))
        if current is not None:
            yield current, scored
