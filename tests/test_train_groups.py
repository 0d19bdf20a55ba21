"""Training groups from qrels + run files, streamed run reading, teacher score files."""
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.train.groups import LabeledGroups, ScoredGroups, iter_run_lists
from pipeline.train.scores import ScoreFile, run_fingerprint, write_scores


def _run(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines, rank = [], {}
    for qid, docid in rows:
        rank[qid] = rank.get(qid, 0) + 1
        lines.append(f"{qid} Q0 {docid} {rank[qid]} {100 - rank[qid]} bm25")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_iter_run_lists_streams_queries_in_rank_order(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("1 Q0 b 2 5.0 x\n1 Q0 a 1 6.0 x\n2 Q0 c 1 3.0 x\n")
    assert [(q, [d for d, _ in r]) for q, r in iter_run_lists(path)] == [("1", ["a", "b"]), ("2", ["c"])]
    assert [len(r) for _, r in iter_run_lists(path, depth=1)] == [1, 1]
    path.write_text("1 Q0 a 1 6.0 x\n2 Q0 c 1 3.0 x\n1 Q0 b 2 5.0 x\n")
    with pytest.raises(InputError, match="appears again") as err:
        list(iter_run_lists(path))
    assert err.value.line == 3


def test_labeled_groups_positive_first_negatives_unjudged_and_deterministic(tmp_path):
    run = _run(tmp_path / "run.trec", [("q1", f"d{i}") for i in range(10)] + [("q2", "x1"), ("q3", "y1")])
    topics = {"q1": "query one", "q2": "query two", "q3": "query three"}
    qrels = {"q1": {"d3": 3, "d5": 1, "d7": 2, "d0": 0}, "q2": {"x1": 1}}
    groups = LabeledGroups(topics, qrels, run, negatives=4, negatives_depth=6, seed=1)
    first = list(groups.iter_groups(0))
    assert [g.qid for g in first] == ["q1"]
    g = first[0]
    assert g.docids[0] in ("d3", "d7")  # graded qrels: positives have grade >= 2
    assert len(set(g.docids)) == 5 and "d5" not in g.docids  # "related" (grade 1) is never a negative
    assert g.labels[0] >= 2 and all(label == 0 for label in g.labels[1:])
    # top-6 minus judged-relevant d3, d5 leaves 4 negatives: d0 (grade 0) may be a negative
    assert set(g.docids[1:]) <= {"d0", "d1", "d2", "d4"}
    assert groups.stats.no_positive == 1 and groups.stats.unjudged == 1 and groups.stats.groups == 1
    assert list(groups.iter_groups(0)) == first  # same seed and epoch: same draw
    assert LabeledGroups(topics, qrels, run, negatives=4, negatives_depth=6, seed=1).count() == 1


def test_labeled_groups_pad_or_drop_when_short(tmp_path):
    run = _run(tmp_path / "run.trec", [("q1", f"d{i}") for i in range(6)])
    topics, qrels = {"q1": "q"}, {"q1": {"d0": 1}}
    padded = LabeledGroups(topics, qrels, run, negatives=4, negatives_depth=3, short="pad")
    (group,) = list(padded.iter_groups(0))
    assert padded.stats.padded == 1 and {"d1", "d2"} <= set(group.docids[1:])
    dropped = LabeledGroups(topics, qrels, run, negatives=4, negatives_depth=3, short="drop")
    assert list(dropped.iter_groups(0)) == [] and dropped.stats.dropped == 1
    too_few = LabeledGroups(topics, qrels, run, negatives=9, negatives_depth=3)
    assert list(too_few.iter_groups(0)) == [] and too_few.stats.dropped == 1


def test_positive_missing_from_collection_is_skipped(tmp_path):
    run = _run(tmp_path / "run.trec", [("q1", f"d{i}") for i in range(6)])
    groups = LabeledGroups({"q1": "q"}, {"q1": {"zz": 2}}, run, negatives=2, missing=lambda ids: list(ids))
    assert list(groups.iter_groups(0)) == [] and groups.stats.no_positive == 1


def test_scored_groups_sorted_by_teacher(tmp_path):
    lists = [("q1", [(f"d{i}", float(i)) for i in range(8)]), ("q2", [("a", 1.0)])]
    source = ScoredGroups({"q1": "q", "q2": "r"}, lambda: iter(lists), group_size=4, seed=3, qrels={"q1": {"d7": 1}})
    (group,) = list(source.iter_groups(0))
    assert list(group.teacher) == sorted(group.teacher, reverse=True) and len(group.docids) == 4
    assert group.labels == tuple(1 if d == "d7" else 0 for d in group.docids)
    assert source.stats.dropped == 1


def test_score_file_round_trip_and_refuses_other_run(tmp_path):
    run = _run(tmp_path / "run.trec", [("q1", "a"), ("q1", "b"), ("q1", "c"), ("q2", "d")])
    lists = [(q, [(d, 0.5) for d, _ in r]) for q, r in iter_run_lists(run, 2)]
    header = write_scores(tmp_path / "t.scores", lists, 2, "teacher")
    assert header["fingerprint"] == run_fingerprint(run, 2) and header["pairs"] == 3
    scores = ScoreFile(tmp_path / "t.scores")
    scores.check_run(run)
    assert list(scores) == lists
    other = _run(tmp_path / "other.trec", [("q1", "a"), ("q1", "c"), ("q2", "d")])
    with pytest.raises(InputError, match="does not match the candidate lists"):
        scores.check_run(other)
    text = (tmp_path / "t.scores").read_text().replace("q2\td", "q2\te")
    (tmp_path / "edited.scores").write_text(text)
    with pytest.raises(InputError, match="fingerprint"):
        list(ScoreFile(tmp_path / "edited.scores"))
    (tmp_path / "plain.tsv").write_text("q1\ta\t1.0\n")
    with pytest.raises(InputError, match="not a distilrank score file"):
        ScoreFile(tmp_path / "plain.tsv")
