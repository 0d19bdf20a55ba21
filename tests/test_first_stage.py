"""The first stage of a comparison on the embedded sample: index built when missing, BM25 cached, a run file instead."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.experiment.config import FirstStageSection
from pipeline.experiment.first_stage import RUN_FILE, CachedFirstStage, timed_search
from pipeline.io.data import DocStore, read_topics
from pipeline.io.runs import Run
from pipeline.retrieval.bm25 import BM25, IndexDocStore, index_present

SAMPLE = Path(__file__).resolve().parent.parent / "pipeline" / "resources" / "sample"
BM25_RUN = RUN_FILE.format("bm25")


@pytest.fixture(scope="module")
def topics() -> dict[str, str]:
    return dict(list(read_topics(SAMPLE / "queries.tsv").items())[:6])


def test_timed_search_charges_every_query_the_mean(sample_index: Path, topics):
    run, timing = timed_search(BM25(sample_index), topics, k=5, stage="bm25", threads=1)
    assert list(run) == list(topics) and all(len(r) <= 5 for r in run.rankings.values())
    assert (timing.stage, timing.queries, timing.pairs, timing.latency) == ("bm25", 6, run.num_pairs, "mean")
    assert timing.latencies_s == [pytest.approx(timing.wall_s / 6)] * 6 and timing.extra == {"threads": 1}


def test_index_built_when_missing_then_the_run_cached_until_its_key_changes(tmp_path: Path, topics):
    section = FirstStageSection(index=tmp_path / "index", hits=20)
    first = CachedFirstStage(section, SAMPLE / "passages.tsv", tmp_path / "out")
    (tmp_path / "out").mkdir()
    run, timing = first.run(topics)
    assert index_present(tmp_path / "index")
    assert [t.stage for t in first.timings] == ["index", "bm25"] and timing.extra["cached"] is False
    written = Run.read(tmp_path / "out" / BM25_RUN)
    assert {q: [d for d, _ in r] for q, r in written.items()} == {q: [d for d, _ in r] for q, r in run.items()}
    key = json.loads((tmp_path / "out" / f"{BM25_RUN}.json").read_text())["key"]
    assert key["hits"] == 20 and key["segments"] and key["index"] == str(tmp_path / "index")

    again = CachedFirstStage(section, SAMPLE / "passages.tsv", tmp_path / "out")
    cached_run, cached = again.run(topics)
    assert cached.extra["cached"] is True and cached.wall_s == pytest.approx(timing.wall_s, abs=1e-6)
    assert [t.stage for t in again.timings] == ["bm25"] and cached_run.rankings.keys() == run.rankings.keys()
    assert again._searcher is None  # a cached run starts no searcher (no JVM work)

    deeper = CachedFirstStage(replace(section, hits=30), SAMPLE / "passages.tsv", tmp_path / "out")
    _, fresh = deeper.run(topics)  # another depth: searched again
    assert fresh.extra["cached"] is False
    fewer = CachedFirstStage(section, SAMPLE / "passages.tsv", tmp_path / "out")
    _, other = fewer.run(dict(list(topics.items())[:3]))  # other topics: searched again
    assert other.extra["cached"] is False and other.queries == 3


def test_passages_come_from_the_collection_else_from_the_index(sample_index: Path):
    from_file = CachedFirstStage(FirstStageSection(index=sample_index), SAMPLE / "passages.tsv", Path("unused"))
    from_index = CachedFirstStage(FirstStageSection(index=sample_index), None, Path("unused"))
    assert isinstance(from_file.docstore(), DocStore) and isinstance(from_index.docstore(), IndexDocStore)
    assert from_file.docstore().get("1000") == from_index.docstore().get("1000")  # the sample's first passage


def test_a_precomputed_run_is_restricted_to_the_topics_and_cut_at_hits(tmp_path: Path, topics):
    qids = list(topics)
    Run({q: [(f"d{i}", 10.0 - i) for i in range(8)] for q in [*qids[:2], "elsewhere"]}).write(tmp_path / "given.trec")
    first = CachedFirstStage(FirstStageSection(run=tmp_path / "given.trec", hits=3), SAMPLE / "passages.tsv", tmp_path)
    run, timing = first.run(topics)
    assert list(run) == qids[:2] and all(len(r) == 3 for r in run.rankings.values())
    assert timing.extra == {"source": str(tmp_path / "given.trec"), "cached": True} and timing.pairs == 6
    assert not (tmp_path / BM25_RUN).exists()
    with pytest.raises(InputError, match="ranks none of the topics' queries"):
        first.run({"other": "query"})


def test_dense_and_hybrid_first_stages_are_cached_by_kind(sample_index: Path, sample_dense: Path, tmp_path: Path,
                                                          topics):
    out = tmp_path / "out"
    out.mkdir()
    dense = CachedFirstStage(FirstStageSection(kind="dense", dense=sample_dense, hits=20), SAMPLE / "passages.tsv",
                             out, device="cpu")
    run, timing = dense.run(topics)
    assert (dense.name, timing.stage, timing.extra["cached"]) == ("dense", "dense", False)
    assert all(len(r) == 20 for r in run.rankings.values()) and (out / "dense.trec").is_file()
    key = json.loads((out / "dense.trec.json").read_text())["key"]
    assert key["kind"] == "dense" and "hnsw" in key["dense"]["faiss"] and "k1" not in key
    assert isinstance(dense.docstore(), DocStore)

    section = FirstStageSection(kind="hybrid", index=sample_index, dense=sample_dense, fusion="rrf", hits=20)
    hybrid = CachedFirstStage(section, SAMPLE / "passages.tsv", out, device="cpu")
    fused, _ = hybrid.run(topics)
    assert (out / "hybrid.trec").is_file() and list(fused) == list(topics)
    again = CachedFirstStage(section, SAMPLE / "passages.tsv", out, device="cpu")
    _, cached = again.run(topics)
    assert cached.extra["cached"] is True and again._searcher is None
    _, other = CachedFirstStage(replace(section, rrf_k=10), SAMPLE / "passages.tsv", out, device="cpu").run(topics)
    assert other.extra["cached"] is False  # another fusion: fused again


def test_a_dense_index_of_another_collection_is_refused(sample_dense: Path, tmp_path: Path, topics):
    other = tmp_path / "other.tsv"
    other.write_text((SAMPLE / "passages.tsv").read_text().replace("monsoon", "monsoons", 1))
    first = CachedFirstStage(FirstStageSection(kind="dense", dense=sample_dense), other, tmp_path, device="cpu")
    with pytest.raises(InputError, match="encoded from another collection"):
        first.run(topics)
