"""Dense first stage: encode (fp16, normalised, resumable after a kill, fingerprints), faiss indexes, search, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SAMPLE

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.eval.evaluate import evaluate
from pipeline.io.data import DocStore, read_qrels, read_topics
from pipeline.io.runs import Run
from pipeline.retrieval.biencoder import BiEncoder
from pipeline.retrieval.dense import DenseRetriever
from pipeline.retrieval.embeddings import PROGRESS, DenseIndex, encode_collection
from pipeline.retrieval.factory import open_dense
from pipeline.retrieval.faiss_index import KINDS, FaissParams, build, build_beside, load, rescore

pytestmark = pytest.mark.usefixtures("one_thread")

COLLECTION = SAMPLE / "passages.tsv"  # 320 real-looking passages, 30 graded queries


@pytest.fixture(scope="module")
def encoder_dir(tiny_bert, tmp_path_factory) -> Path:
    """A tiny random bi-encoder (no ranking head): fast, and deterministic."""
    return tiny_bert(tmp_path_factory.mktemp("enc") / "tiny-encoder", labels=None)


@pytest.fixture(scope="module")
def encoder(encoder_dir: Path) -> BiEncoder:
    return BiEncoder(encoder_dir, device="cpu")


@pytest.fixture(scope="module")
def encoded(encoder: BiEncoder, tmp_path_factory) -> DenseIndex:
    """The sample collection encoded with the tiny encoder, with every faiss index beside it."""
    index = encode_collection(encoder, COLLECTION, tmp_path_factory.mktemp("dense") / "sample.tiny", block=64,
                              progress=False)
    for kind in KINDS:
        build_beside(index, kind, FaissParams(nlist=8, nprobe=8, pq_m=16, pq_bits=6))
    return index


def test_encode_stores_normalised_fp16_rows_in_docstore_order(encoded: DenseIndex, encoder: BiEncoder):
    store = DocStore(COLLECTION)
    matrix = encoded.embeddings()
    assert matrix.dtype == np.float16 and matrix.shape == (len(store), encoder.dim) == (320, 32)
    assert [str(d) for d in encoded.docids] == [str(k) for k in store.keys]
    np.testing.assert_allclose(np.linalg.norm(matrix.astype(np.float32), axis=1), 1.0, atol=2e-3)
    rows = [0, 17, 319]
    expected = encoder.embed(store.get_many([encoded.docid(r) for r in rows])).numpy()
    np.testing.assert_allclose(matrix[rows].astype(np.float32), expected, atol=2e-3)
    meta = json.loads((encoded.path / "meta.json").read_text())
    assert meta["complete"] and meta["encoder"]["fingerprint"] == encoder.fingerprint
    assert meta["collection"]["passages"] == 320 and not (encoded.path / PROGRESS).exists()
    assert set(meta["faiss"]) == set(KINDS) and meta["faiss"]["ivfpq"]["nlist"] == 8


def test_each_faiss_index_against_exact_search(encoded: DenseIndex, encoder: BiEncoder):
    topics = read_topics(SAMPLE / "queries.tsv")
    queries = encoder.embed(list(topics.values())).numpy()
    exact = queries @ encoded.embeddings().astype(np.float32).T
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    found = {}
    for kind in KINDS:
        retriever = DenseRetriever(encoded.path, encoder, faiss=kind)
        run = retriever.batch_search(topics, k=10, progress=False)
        assert all(len(r) == 10 for r in run.rankings.values())
        rows = {d: i for i, d in enumerate(str(x) for x in encoded.docids)}
        found[kind] = np.array([[rows[d] for d, _ in run[q]] for q in topics])
    overlap = {kind: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found[kind], truth, strict=True)])
               for kind in KINDS}
    assert overlap["flat"] == 1.0  # exact: the same top 10 as numpy (fp16 rows, fp32 dot products)
    assert overlap["hnsw"] >= 0.95
    assert overlap["ivfpq"] >= 0.5  # 12 bytes a vector: coarse, but far above chance (10/320)
    scores = DenseRetriever(encoded.path, encoder, faiss="flat").search(next(iter(topics.values())), k=3)
    np.testing.assert_allclose([s for _, s in scores], np.sort(exact[0])[::-1][:3], atol=1e-5)


def test_refine_rescores_ivfpq_hits_exactly(encoded: DenseIndex, encoder: BiEncoder):
    """refine fetches k x refine IVF-PQ hits and keeps the top k by the exact fp16-row score: every score is the
    exact one, the order follows it, and recall against exact search does not fall (rises here)."""
    topics = read_topics(SAMPLE / "queries.tsv")
    queries = encoder.embed(list(topics.values())).numpy()
    matrix = encoded.embeddings().astype(np.float32)
    exact = queries @ matrix.T
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    rows = {str(d): i for i, d in enumerate(encoded.docids)}

    def found(refine: int | None) -> tuple[np.ndarray, np.ndarray]:
        run = DenseRetriever(encoded.path, encoder, faiss="ivfpq", refine=refine).batch_search(topics, k=10,
                                                                                                progress=False)
        return (np.array([[rows[d] for d, _ in run[q]] for q in topics]),
                np.array([[s for _, s in run[q]] for q in topics]))

    plain, _ = found(None)
    refined, scores = found(8)
    np.testing.assert_allclose(scores, np.take_along_axis(exact, refined, axis=1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()

    def recall(rows_found: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows_found, truth, strict=True)]))

    assert recall(refined) > recall(plain) and recall(refined) >= 0.9


def test_rescore_keeps_the_exact_top_k_of_the_candidates():
    embeddings = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]], dtype=np.float16)
    queries = np.array([[1, 0], [0, 1]], dtype=np.float32)
    candidates = np.array([[1, 3, 2, -1], [0, 3, -1, -1]])  # -1: fewer candidates than asked (as faiss pads)
    scores, rows = rescore(embeddings, queries, candidates, k=3)
    np.testing.assert_array_equal(rows, [[3, 2, 1], [3, 0, -1]])
    np.testing.assert_allclose(scores[0], [0.8, 0.6, 0.0], atol=1e-3)
    np.testing.assert_allclose(scores[1, :2], [0.6, 0.0], atol=1e-3)


def test_saved_index_searches_like_a_fresh_one(encoded: DenseIndex):
    queries = encoded.embeddings()[:5].astype(np.float32)
    for kind in ("flat", "hnsw"):
        fresh, saved = build(encoded.embeddings(), kind), load(encoded, kind)
        np.testing.assert_array_equal(fresh.search(queries, 5)[1], saved.search(queries, 5)[1])


def test_a_mismatched_encoder_or_collection_is_refused(encoded: DenseIndex, tiny_bert, tmp_path: Path, capsys):
    other = BiEncoder(tiny_bert(tmp_path / "other", labels=None, seed=1), device="cpu")
    with pytest.raises(InputError, match="encoded with 'tiny-encoder'.*not with 'other'"):
        DenseRetriever(encoded.path, other)
    with pytest.raises(InputError, match="encoded with"):
        encode_collection(other, COLLECTION, encoded.path, progress=False)
    changed = tmp_path / "changed.tsv"
    changed.write_text(COLLECTION.read_text().replace("monsoon", "monsoons", 1))
    encoder = BiEncoder(Path(encoded.meta["encoder"]["source"]), device="cpu")
    with pytest.raises(InputError, match="another collection"):
        encode_collection(encoder, changed, encoded.path, progress=False)
    with pytest.raises(InputError, match="another collection"):
        encoded.check_collection(changed)
    topics, out = SAMPLE / "queries.tsv", tmp_path / "run.trec"
    code = main(["retrieve", "--dense", str(encoded.path), "--encoder", str(tmp_path / "other"), "--topics",
                 str(topics), "--output", str(out)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("distilrank:")]
    assert code == 2 and len(errors) == 1 and "encoded with 'tiny-encoder'" in errors[0]
    assert not out.exists()


KILLER = textwrap.dedent("""
    import os, signal, sys
    import torch
    from pipeline.retrieval.biencoder import BiEncoder
    from pipeline.retrieval.embeddings import encode_collection

    class KilledOnThirdBlock(BiEncoder):
        calls = 0
        def embed(self, texts):
            type(self).calls += 1
            if self.calls == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as a real kill
            return super().embed(texts)

    torch.set_num_threads(1)
    encode_collection(KilledOnThirdBlock(sys.argv[1], device="cpu"), sys.argv[2], sys.argv[3], block=16,
                      progress=False)
""")


def test_a_killed_encode_resumes_where_it_stopped(encoder_dir: Path, encoder: BiEncoder, encoded: DenseIndex,
                                                  tmp_path: Path):
    output = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(encoder_dir), str(COLLECTION), str(output)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert json.loads((output / PROGRESS).read_text())["done"] == 32  # two blocks of 16 flushed
    with pytest.raises(InputError, match="not finished .32 of 320"):
        DenseIndex.open(output)

    class Counting(BiEncoder):
        texts: list[str] = []

        def embed(self, texts):
            self.texts.extend(texts)
            return super().embed(texts)

    resumed = encode_collection(Counting(encoder_dir, device="cpu"), COLLECTION, output, block=16, progress=False)
    assert len(Counting.texts) == 320 - 32  # only the rows not flushed before the kill
    assert resumed.complete and not (output / PROGRESS).exists()
    np.testing.assert_allclose(resumed.embeddings().astype(np.float32), encoded.embeddings().astype(np.float32),
                               atol=2e-3)
    again = encode_collection(Counting(encoder_dir, device="cpu"), COLLECTION, output, progress=False)
    assert again.complete and len(Counting.texts) == 320 - 32  # finished: nothing encoded again


def test_cli_encode_builds_faiss_indexes_once(encoder_dir: Path, tmp_path: Path, capsys):
    output = tmp_path / "sample.tiny"
    args = ["encode", "--model", str(encoder_dir), "--collection", str(COLLECTION), "--output", str(output),
            "--faiss", "flat", "ivfpq", "--nlist", "4", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "320 passages x 32" in printed and "faiss flat" in printed and "faiss ivfpq" in printed
    assert main(args) == 0
    assert capsys.readouterr().out.count("already built with these parameters") == 2
    assert main([*args[:-5], "--faiss", "ivfpq", "--nlist", "2", "--no-progress"]) == 0  # other parameters: rebuilt
    assert "already built" not in capsys.readouterr().out
    assert DenseIndex.open(output).meta["faiss"]["ivfpq"]["nlist"] == 2
    built = (output / "faiss.ivfpq").stat().st_mtime_ns
    assert main([*args[:-5], "--faiss", "ivfpq", "--nlist", "2", "--nprobe", "2", "--refine", "4",
                 "--no-progress"]) == 0  # search defaults only: noted, not rebuilt
    assert "search defaults now" in capsys.readouterr().out
    noted = DenseIndex.open(output).meta["faiss"]["ivfpq"]
    assert (noted["nlist"], noted["nprobe"], noted["refine"]) == (2, 2, 4) and "build_seconds" in noted
    assert (output / "faiss.ivfpq").stat().st_mtime_ns == built
    retriever = DenseRetriever(output, BiEncoder(encoder_dir, device="cpu"))
    assert retriever.kind == "flat" and DenseRetriever(output, retriever.encoder, faiss="ivfpq").params.refine == 4
    run = tmp_path / "refined.trec"
    assert main(["retrieve", "--dense", str(output), "--faiss", "ivfpq", "--refine", "2", "--topics",
                 str(SAMPLE / "queries.tsv"), "--output", str(run), "--hits", "20", "--device", "cpu"]) == 0
    assert len(run.read_text().splitlines()) == 30 * 20
    assert main(["encode", "--model", str(encoder_dir), "--collection", str(COLLECTION), "--output",
                 str(tmp_path / "bad"), "--block", "0"]) == 2


def test_dense_retrieval_with_the_minilm_on_the_sample(sample_dense: Path, tmp_path: Path):
    """The real MiniLM: dense retrieval (HNSW, the index's default) ranks the sample's graded passages well."""
    run_path = tmp_path / "dense.trec"
    assert main(["retrieve", "--dense", str(sample_dense), "--topics", str(SAMPLE / "queries.tsv"), "--output",
                 str(run_path), "--hits", "100", "--device", "cpu"]) == 0
    lines = run_path.read_text().splitlines()
    assert len(lines) == 30 * 100 and lines[0].split()[-1] == "dense"
    ndcg = evaluate(Run.read(run_path), read_qrels(SAMPLE / "qrels.tsv"), ["nDCG@10"])["nDCG@10"]
    assert ndcg > 0.6


def test_prebuilt_dense_names_fail_fast_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run.trec"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "retrieve", "--dense",
                           "msmarco-v1-passage.tct_colbert-v2-hnp", "--encoder", "castorini/tct_colbert-v2-hnp-msmarco",
                           "--topics", str(SAMPLE / "queries.tsv"), "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not out.exists()
    (line,) = proc.stderr.strip().splitlines()
    assert "Pyserini prebuilt dense index" in line and "needs the network" in line and "distilrank encode" in line
    with pytest.raises(InputError, match="hub name and this machine is offline"):
        BiEncoder("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(InputError, match="no dense index in this folder"):
        open_dense(tmp_path)


def test_reranking_with_the_stored_embeddings(encoded: DenseIndex, encoder: BiEncoder):
    retriever = DenseRetriever(encoded.path, encoder, faiss="flat")
    topics = {"q": "how do volcanoes erupt"}
    candidates = [encoded.docid(r) for r in (5, 40, 7, 300, 12)]
    run = Run({"q": [(d, 10.0 - i) for i, d in enumerate(candidates)]})
    reranked, timing = retriever.rerank(run, topics, depth=3)
    query = encoder.embed(["how do volcanoes erupt"]).numpy()[0]
    cosines = {d: float(encoded.embeddings()[encoded.rows([d])[0]].astype(np.float32) @ query) for d in candidates[:3]}
    assert [d for d, _ in reranked["q"][:3]] == sorted(cosines, key=cosines.get, reverse=True)
    assert [s for _, s in reranked["q"][:3]] == pytest.approx(sorted(cosines.values(), reverse=True), abs=1e-5)
    assert [d for d, _ in reranked["q"][3:]] == candidates[3:]  # below the depth: first-stage order kept
    assert (timing.queries, timing.pairs) == (1, 3)
    with pytest.raises(InputError, match="not in the dense index"):
        retriever.rerank(Run({"q": [("no-such-passage", 1.0)]}), topics)
