"""Training groups, streamed from run files: the data side of every training procedure.

- ``iter_run_lists(path)`` streams a run file query by query (the file must keep each query's rows
  together, as every retriever writes them), so a 500k-query train run never sits in memory.
- ``LabeledGroups``: for each query, one positive from the qrels and ``negatives`` hard negatives
  sampled from its run top-``negatives_depth`` (LCE groups, positive at index 0).
- ``ScoredGroups``: groups of ``group_size`` candidates sampled from teacher-scored lists, with the
  teacher's scores (for ranker distillation), sorted by teacher score (best first); optionally
  ``random_negatives`` of them drawn from teacher-scored random passages of the collection
  (``random_passages``), so that a student sees off-topic passages beside BM25's hard ones.

Sampling is deterministic: each query's draw depends only on (seed, epoch, qid), so it does not
depend on the order or the subset of queries read; the order of groups in an epoch comes from a
seeded shuffle buffer.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io.runs import Ranking, iter_run_rows, rank_rows
from .options import GROUP_SIZE, NEGATIVES, NEGATIVES_DEPTH, SEED


@dataclass(frozen=True)
class Group:
    """One training group: a query and its candidates (index 0 is the positive in LCE groups)."""

    qid: str
    query: str
    docids: tuple[str, ...]
    teacher: tuple[float, ...] | None = None  # teacher scores of the docids (ranker distillation)
    labels: tuple[int, ...] | None = None  # qrels grades of the docids where known (0 otherwise)


@dataclass
class GroupStats:
    """What building the groups of one pass skipped, padded or dropped (reported to the user)."""

    queries: int = 0  # queries in the run file
    groups: int = 0
    not_in_topics: int = 0
    no_positive: int = 0  # queries without a judged positive present in the collection
    padded: int = 0  # groups padded from beyond the top-k candidates
    dropped: int = 0  # groups dropped: too few candidates even after padding (or policy 'drop')
    unjudged: int = 0  # queries without qrels at all

    def summary(self) -> str:
        parts = [f"{self.groups} groups from {self.queries} queries"]
        for name in ("not_in_topics", "unjudged", "no_positive", "padded", "dropped"):
            value = getattr(self, name)
            if value:
                parts.append(f"{value} {name.replace('_', ' ')}")
        return ", ".join(parts)


def iter_run_lists(path: str | Path, depth: int | None = None, start: int = 0, first_line: int = 1,
                   lines: int | None = None) -> Iterator[tuple[str, Ranking]]:
    """Stream ``(qid, ranking)`` from a TREC or MS MARCO run file, one query at a time (or from a part of it:
    ``start``, ``first_line`` and ``lines`` as ``runs.iter_run_rows`` takes them).

    Each query's rows must be contiguous (a query seen again after another one is an error:
    sort the file by query first, e.g. ``sort -s -k1,1``). Rows are ordered by rank; ``depth``
    keeps the first ``depth`` of each query.
    """
    seen: set[str] = set()
    current: str | None = None
    rows: list[tuple[int, str, float, int]] = []
    for lineno, qid, docid, rank, score in iter_run_rows(path, start, first_line, lines):
        if qid != current:
            if current is not None:
                yield current, rank_rows(rows)[:depth]
            if qid in seen:
                raise InputError(
                    f"query {qid} appears again after other queries: the run must keep each query's rows "
                    "together (sort it by query id first)", path, lineno)
            seen.add(qid)
            current, rows = qid, []
        rows.append((rank, docid, score, lineno))
    if current is not None:
        yield current, rank_rows(rows)[:depth]


def query_rng(seed: int, epoch: int, qid: str) -> random.Random:
    """The random generator of one query's draw in one epoch (independent of reading order)."""
    return random.Random(f"{seed}:{epoch}:{qid}")


def shuffled(items: Iterable, seed: int, epoch: int, buffer: int = 100_000) -> Iterator:
    """A seeded shuffle through a buffer of ``buffer`` items (a full shuffle for smaller inputs)."""
    rng = random.Random(f"shuffle:{seed}:{epoch}")
    pool: list = []
    for item in items:
        pool.append(item)
        if len(pool) >= buffer:
            i = rng.randrange(len(pool))
            pool[i], pool[-1] = pool[-1], pool[i]
            yield pool.pop()
    rng.shuffle(pool)
    yield from pool


def random_passages(docstore, qid: str, k: int, seed: int, exclude: Iterable[str] = ()) -> list[str]:
    """``k`` distinct passage ids drawn uniformly from the collection for query ``qid`` (not in ``exclude``);
    the draw depends only on (seed, qid)."""
    excluded = set(exclude)
    if k > len(docstore) - len(excluded):
        raise InputError(f"cannot draw {k} random passages from a collection of {len(docstore)}")
    rng = random.Random(f"random:{seed}:{qid}")
    picked: list[str] = []
    while len(picked) < k:
        docid = docstore.docid_at(rng.randrange(len(docstore)))
        if docid not in excluded and docid not in picked:
            picked.append(docid)
    return picked


class LabeledGroups:
    """LCE groups: 1 positive (qrels) + ``negatives`` hard negatives from the run's top-``negatives_depth``.

    The positive is drawn among the query's judged passages with grade >= ``min_grade`` that the
    collection holds (``min_grade`` defaults to 2 for graded qrels, else 1). Negatives are drawn
    without replacement from the top-``negatives_depth`` candidates not judged relevant (any grade >= 1 is
    excluded, so TREC DL's "related" passages are never negatives). With fewer than ``negatives``
    such candidates the group is padded from the rest of the run's list (``short="pad"``, the
    default) and dropped if still short, or dropped at once (``short="drop"``).
    """

    def __init__(
        self,
        topics: dict[str, str],
        qrels: dict[str, dict[str, int]],
        run_path: str | Path,
        negatives: int = NEGATIVES,
        negatives_depth: int = NEGATIVES_DEPTH,
        min_grade: int | None = None,
        short: str = "pad",
        seed: int = SEED,
        missing: Callable[[Sequence[str]], list[str]] | None = None,
    ):
        if short not in ("pad", "drop"):
            raise ValueError(f"short must be 'pad' or 'drop', not {short!r}")
        if negatives < 1:
            raise InputError(f"need at least 1 negative per group, got {negatives}")
        graded = any(g > 1 for docs in qrels.values() for g in docs.values())
        self.topics, self.qrels, self.run_path = topics, qrels, Path(run_path)
        self.negatives, self.negatives_depth, self.short, self.seed = negatives, negatives_depth, short, seed
        self.min_grade = min_grade if min_grade is not None else (2 if graded else 1)
        self.missing = missing  # returns the ids the collection lacks
        self.stats = GroupStats()

    @property
    def group_size(self) -> int:
        return 1 + self.negatives

    def iter_groups(self, epoch: int = 0) -> Iterator[Group]:
        """The groups of one epoch, in run-file order (``self.stats`` counts this pass)."""
        stats = self.stats = GroupStats()
        for qid, ranking in iter_run_lists(self.run_path):
            stats.queries += 1
            if qid not in self.topics:
                stats.not_in_topics += 1
                continue
            judged = self.qrels.get(qid)
            if not judged:
                stats.unjudged += 1
                continue
            positives = sorted(d for d, g in judged.items() if g >= self.min_grade)
            if positives and self.missing is not None:
                absent = set(self.missing(positives))
                positives = [d for d in positives if d not in absent]
            if not positives:
                stats.no_positive += 1
                continue
            rng = query_rng(self.seed, epoch, qid)
            positive = rng.choice(positives)
            pool = [d for d, _ in ranking[: self.negatives_depth] if judged.get(d, 0) < 1]
            if len(pool) >= self.negatives:
                negs = rng.sample(pool, self.negatives)
            elif self.short == "pad":
                rest = [d for d, _ in ranking[self.negatives_depth :] if judged.get(d, 0) < 1]
                if len(pool) + len(rest) < self.negatives:
                    stats.dropped += 1
                    continue
                negs = pool + rng.sample(rest, self.negatives - len(pool))
                rng.shuffle(negs)
                stats.padded += 1
            else:
                stats.dropped += 1
                continue
            stats.groups += 1
            docids = (positive, *negs)
            yield Group(qid, self.topics[qid], docids, labels=tuple(judged.get(d, 0) for d in docids))

    def count(self) -> int:
        """The number of groups an epoch yields (one pass over the run, no text read)."""
        return sum(1 for _ in self.iter_groups(0))


class ScoredGroups:
    """Ranker-distillation groups: ``group_size`` candidates sampled from each teacher-scored list.

    ``lists`` is a callable returning a fresh iterator of ``(qid, [(docid, teacher_score), ...])``
    (a score file or a run), of which the first ``depth`` candidates count (all by default). Lists
    shorter than ``group_size - random_negatives`` are dropped (counted). With ``random_negatives`` = K,
    K members of each group come from ``random`` (qid -> teacher-scored random passages, at least K a
    query: ``ScoreFile.random_lists``). With ``qrels``, each group carries the grades of its candidates
    (for an optional label loss).
    """

    def __init__(
        self,
        topics: dict[str, str],
        lists: Callable[[], Iterable[tuple[str, Ranking]]],
        group_size: int = GROUP_SIZE,
        seed: int = SEED,
        qrels: dict[str, dict[str, int]] | None = None,
        depth: int | None = None,
        random_negatives: int = 0,
        random: dict[str, Ranking] | None = None,
    ):
        if group_size < 2:
            raise InputError(f"a distillation group needs at least 2 candidates, got {group_size}")
        if not 0 <= random_negatives < group_size:
            raise InputError(f"--random-negatives {random_negatives} must be at least 0 and less than --group-size "
                             f"{group_size}")
        if random_negatives and not random:
            raise InputError("random negatives need teacher-scored random passages: score with --random-negatives")
        self.topics, self.lists, self.group_size, self.seed, self.qrels = topics, lists, group_size, seed, qrels
        self.depth, self.random_negatives, self.random = depth, random_negatives, random or {}
        self.stats = GroupStats()

    def iter_groups(self, epoch: int = 0) -> Iterator[Group]:
        stats = self.stats = GroupStats()
        for qid, scored in self.lists():
            stats.queries += 1
            if qid not in self.topics:
                stats.not_in_topics += 1
                continue
            scored = scored[: self.depth]
            k = self.random_negatives
            if len(scored) < self.group_size - k:
                stats.dropped += 1
                continue
            rng = query_rng(self.seed, epoch, qid)
            if k:
                pool = self.random.get(qid, [])
                if len(pool) < k:
                    raise InputError(f"query {qid} has {len(pool)} teacher-scored random passages, fewer than "
                                     f"--random-negatives {k}: score again with more")
                scored = scored + [pool[i] for i in rng.sample(range(len(pool)), k)]
                chosen = rng.sample(range(len(scored) - k), self.group_size - k) + list(range(len(scored) - k,
                                                                                               len(scored)))
            else:
                chosen = rng.sample(range(len(scored)), self.group_size)
            picked = sorted(chosen, key=lambda i: (-scored[i][1], i))
            docids = tuple(scored[i][0] for i in picked)
            teacher = tuple(float(scored[i][1]) for i in picked)
            if any(math.isnan(t) for t in teacher):
                raise InputError(f"NaN teacher score for query {qid}")
            judged = self.qrels.get(qid, {}) if self.qrels is not None else None
            labels = tuple(judged.get(d, 0) for d in docids) if judged is not None else None
            stats.groups += 1
            yield Group(qid, self.topics[qid], docids, teacher=teacher, labels=labels)

    def count(self) -> int:
        return sum(1 for _ in self.iter_groups(0))
