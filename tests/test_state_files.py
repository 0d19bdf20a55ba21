"""Damaged state files (the reliability issue): every file the project writes and later trusts (journals, the
token cache, the docstore's offset index, the dense index, teacher score files, training logs) is checked when it
is read back. A damaged copy (truncated, edited at the same size, a key missing) is refused with one line naming
the file (and line), exit 2, no output and no traceback; a torn last journal line still resumes, byte for byte;
a bad line in the middle of a journal is refused without losing the journal."""
from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.io.data import DocStore
from pipeline.runtime import distributed, integrity
from pipeline.train.curves import read_log
from pipeline.train.recipes import finished_summary
from pipeline.train.scores import ScoreFile

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert, tiny_data) -> dict[str, Path]:
    """Tiny inputs, a ranker, a bi-encoder, and the clean outputs of rerank and score made from them."""
    root = tmp_path_factory.mktemp("state")
    w = dict(tiny_data(root / "data", queries=6, per_query=8))
    w["model"] = tiny_bert(root / "model", layers=2, labels=1, seed=3)
    w["encoder"] = tiny_bert(root / "encoder", layers=1, labels=None, seed=6)
    w["reranked"], w["scores"] = root / "clean" / "out.trec", root / "clean" / "out.scores"  # tag "out", as below
    assert main(rerank_argv(w, w["reranked"])) == 0
    assert main(score_argv(w, w["scores"])) == 0
    return w


def rerank_argv(w: dict[str, Path], output: Path, **changes: Path) -> list[str]:
    files = {**w, **changes}
    return ["rerank", "--run", str(files["run"]), "--topics", str(files["topics"]), "--collection",
            str(files["collection"]), "--model", str(files["model"]), "--output", str(output), "--depth", "4",
            "--device", "cpu", "--chunk-pairs", "8", "--no-progress"]


def score_argv(w: dict[str, Path], output: Path) -> list[str]:
    return ["score", "--model", str(w["model"]), "--run", str(w["run"]), "--topics", str(w["topics"]),
            "--collection", str(w["collection"]), "--output", str(output), "--score-depth", "4", "--device", "cpu",
            "--chunk-queries", "2"]


def refused(argv: list[str], capsys, where: str | Path) -> str:
    """Run the command; it must refuse with one line naming ``where`` (``FILE`` or ``FILE:LINE``), exit 2."""
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert f"{where}:" in errors[0], errors[0]
    return errors[0]


def _ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


def interrupted(argv: list[str]) -> None:
    """Run a journaling command to its last chunk, then stop it (Ctrl-C) before its output is written."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distributed, "write_output", _ctrl_c)
        assert main(argv) == 130


def with_crc(record: dict) -> bytes:
    """A journal line as the journal writes it (a valid checksum)."""
    body = json.dumps(record, separators=(",", ":")).encode()
    return b'{"crc":"%08x",' % zlib.crc32(body) + body[1:] + b"\n"


def record_of(line: bytes) -> dict:
    return json.loads(b"{" + line[len(b'{"crc":"12345678",') :])


# ---- journals ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_journal(world, tmp_path_factory) -> list[bytes]:
    """The lines of the rerank journal of the world's run, every chunk finished (3 chunks of 2 queries)."""
    folder = tmp_path_factory.mktemp("journal")
    interrupted(rerank_argv(world, folder / "out.trec"))
    lines = (folder / "out.trec.journal").read_bytes().splitlines(keepends=True)
    assert len(lines) == 4 and all(line.startswith(b'{"crc":"') for line in lines[1:])
    return lines


def damaged_journals(lines: list[bytes]) -> dict[str, tuple[bytes, int, str]]:
    """name -> (journal bytes, the line refused, a fragment of the refusal)."""
    ghost = record_of(lines[2])
    ghost["queries"][0][1][0][0] = "999"  # not a candidate of the query (nor a passage)
    no_pairs = record_of(lines[2])
    del no_pairs["pairs"]
    edited = lines[2].replace(b'"queries":[["', b'"queries":[[" ', 1)[:-2] + b"\n"  # same size, checksum wrong
    assert len(edited) == len(lines[2])
    return {
        "edited at the same size": (b"".join([*lines[:2], edited, lines[3]]), 3, "checksum does not match"),
        "garbage in the middle": (b"".join([*lines[:2], b"garbage\n", *lines[2:]]), 3, "checksum does not match"),
        "a line duplicated": (b"".join([*lines[:3], lines[2], lines[3]]), 4, "chunk 1 is recorded twice"),
        "a docid that is no candidate": (b"".join([*lines[:2], with_crc(ghost), lines[3]]), 3, "not its candidates"),
        "a key missing": (b"".join([*lines[:2], with_crc(no_pairs), lines[3]]), 3, "malformed record"),
    }


@pytest.mark.parametrize("damage", ["edited at the same size", "garbage in the middle", "a line duplicated",
                                    "a docid that is no candidate", "a key missing"])
def test_a_damaged_rerank_journal_is_refused_and_kept(world, full_journal, damage, tmp_path, capsys):
    content, line, message = damaged_journals(full_journal)[damage]
    journal = tmp_path / "out.trec.journal"
    journal.write_bytes(content)
    error = refused([*rerank_argv(world, tmp_path / "out.trec"), "--resume"], capsys, f"{journal}:{line}")
    assert message in error and f"keep its first {line - 1} lines" in error
    assert journal.read_bytes() == content  # the finished chunks are not lost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.trec.journal"]
    journal.write_bytes(b"".join(content.splitlines(keepends=True)[: line - 1]))  # what the message says to do
    assert main([*rerank_argv(world, tmp_path / "out.trec"), "--resume"]) == 0
    assert (tmp_path / "out.trec").read_bytes() == world["reranked"].read_bytes()


def test_a_torn_last_journal_line_resumes_to_the_same_bytes(world, full_journal, tmp_path, capsys):
    (tmp_path / "out.trec.journal").write_bytes(b"".join(full_journal[:3]) + full_journal[3][:25])
    assert main([*rerank_argv(world, tmp_path / "out.trec"), "--resume"]) == 0
    assert "dropping a torn last record" in capsys.readouterr().err
    assert (tmp_path / "out.trec").read_bytes() == world["reranked"].read_bytes()


def test_a_score_journal_with_other_candidates_is_refused(world, tmp_path, capsys):
    output = tmp_path / "out.scores"
    interrupted(score_argv(world, output))
    journal = output.with_name("out.scores.journal")
    lines = journal.read_bytes().splitlines(keepends=True)
    torn = b"".join(lines[:-1]) + lines[-1][:30]
    record = record_of(lines[2])
    record["body"] = record["body"].replace("\t", "\t1", 1)  # a docid the run does not have there
    journal.write_bytes(b"".join([*lines[:2], with_crc(record), *lines[3:]]))
    error = refused([*score_argv(world, output), "--resume"], capsys, f"{journal}:3")
    assert "chunk 1 holds other candidates than the run's" in error and journal.is_file()
    journal.write_bytes(torn)  # killed while writing its last record: resumes to the same bytes
    assert main([*score_argv(world, output), "--resume"]) == 0
    assert output.read_bytes() == world["scores"].read_bytes()


def test_the_users_run_in_the_journals_place_is_not_called_a_journal(world, tmp_path, capsys):
    run = tmp_path / "out.trec.journal"
    shutil.copy(world["run"], run)
    error = refused([*rerank_argv(world, tmp_path / "out.trec", run=run), "--resume"], capsys, tmp_path / "out.trec")
    assert "the output's file out.trec.journal is also the input --run" in error and "delete" not in error
    assert run.read_bytes() == world["run"].read_bytes()


# ---- caches of a collection: the docstore's offset index and the token cache -----------------------------------


def flip_a_byte(path: Path, keep_mtime: bool = False) -> None:
    """Change one byte in the middle of ``path`` (same size), its mtime kept when asked (a damage no stat sees)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def own_collection(world, tmp_path: Path) -> Path:
    """A copy of the collection, so that its caches are this test's own."""
    return Path(shutil.copy(world["collection"], tmp_path / "collection.tsv"))


@pytest.mark.parametrize("damage", ["truncated", "edited at the same size", "a key missing"])
def test_a_damaged_docstore_index_is_refused(world, tmp_path, damage, capsys):
    collection = own_collection(world, tmp_path)
    cache = DocStore(collection)._cache_path()
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:-100])
    elif damage == "edited at the same size":
        flip_a_byte(cache)
    else:
        with np.load(cache) as data:
            kept = {k: data[k] for k in data.files if k != "lengths"}
        with open(cache, "wb") as out:
            np.savez(out, **kept)
    error = refused(rerank_argv(world, tmp_path / "out.trec", collection=collection), capsys, cache)
    assert "damaged docstore index" in error and "delete it" in error
    assert not (tmp_path / "out.trec").exists()
    cache.unlink()  # what the message says: it is built again
    assert main(rerank_argv(world, tmp_path / "out.trec", collection=collection)) == 0


@pytest.mark.parametrize("damage", ["truncated", "edited at the same size", "edited, its mtime kept",
                                    "a key missing"])
def test_a_damaged_token_cache_is_refused(world, tmp_path, damage, capsys):
    collection = own_collection(world, tmp_path)
    assert main(["tokenize", "--collection", str(collection), "--model", str(world["model"]), "--no-progress"]) == 0
    capsys.readouterr()
    store = DocStore(collection)
    ids = next(store.cache_file("x").parent.glob(f"{store.cache_file('tokens-').name}*.ids"))
    record = ids.with_suffix(".json")
    if damage == "truncated":
        ids.write_bytes(ids.read_bytes()[:-2])
    elif damage == "a key missing":
        record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "seals"}))
    else:
        flip_a_byte(ids, keep_mtime=damage == "edited, its mtime kept")
    error = refused(rerank_argv(world, tmp_path / "out.trec", collection=collection), capsys, record)
    assert "corrupt token cache" in error and "tokenize --rebuild" in error


def test_a_copied_token_cache_is_checked_whole_once_then_cheaply(world, tmp_path, capsys):
    collection = own_collection(world, tmp_path)
    assert main(["tokenize", "--collection", str(collection), "--model", str(world["model"]), "--no-progress"]) == 0
    store = DocStore(collection)
    ids = next(store.cache_file("x").parent.glob(f"{store.cache_file('tokens-').name}*.ids"))
    os.utime(ids, ns=(1, 1))  # as a copy without -p: the same bytes, another mtime
    assert main(rerank_argv(world, tmp_path / "out.trec", collection=collection)) == 0
    assert json.loads(ids.with_suffix(".json").read_text())["seals"]["ids"]["mtime_ns"] == 1  # renewed
    assert (tmp_path / "out.trec").read_bytes() == world["reranked"].read_bytes()


def test_seals_refuse_a_changed_file_and_renew_a_touched_one(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(bytes(range(256)) * 4096)  # 1 MiB: sampled, not read whole
    sealed = integrity.seal(path)
    assert integrity.check(path, sealed) == sealed
    os.utime(path, ns=(5, 5))
    assert integrity.check(path, sealed) == {**sealed, "mtime_ns": 5}
    flip_a_byte(path)
    with pytest.raises(integrity.BrokenSeal, match="changed since it was written"):
        integrity.check(path, sealed)
    with pytest.raises(integrity.BrokenSeal, match="missing or incomplete"):
        integrity.check(path, {"bytes": 1})


# ---- the dense index -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dense(world, tmp_path_factory) -> Path:
    """The collection encoded with the tiny bi-encoder, an HNSW index beside it."""
    output = tmp_path_factory.mktemp("dense") / "index"
    assert main(["encode", "--model", str(world["encoder"]), "--collection", str(world["collection"]), "--output",
                 str(output), "--device", "cpu", "--faiss", "hnsw", "--no-progress"]) == 0
    return output


def damage_dense(folder: Path, damage: str) -> Path:
    """Damage a copy of a dense index folder; the file damaged."""
    meta = folder / "meta.json"
    if damage == "meta.json: a key missing":
        data = json.loads(meta.read_text())
        del data["dim"]
        meta.write_text(json.dumps(data))
        return meta
    if damage == "meta.json: garbage":
        meta.write_text("{not json")
        return meta
    name, how = damage.split(": ")
    path = folder / name
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-64])
    else:
        flip_a_byte(path, keep_mtime=how == "edited, its mtime kept")
    return folder if name in ("embeddings.f16", "docids.npy") and how != "truncated" else path


@pytest.mark.parametrize("damage", ["meta.json: a key missing", "meta.json: garbage", "embeddings.f16: truncated",
                                    "embeddings.f16: edited, its mtime kept", "docids.npy: edited at the same size",
                                    "faiss.hnsw: truncated", "faiss.hnsw: edited at the same size"])
def test_a_damaged_dense_index_is_refused(world, dense, tmp_path, damage, capsys):
    folder = Path(shutil.copytree(dense, tmp_path / "index"))
    where = damage_dense(folder, damage)
    error = refused(["retrieve", "--dense", str(folder), "--topics", str(world["topics"]), "--output",
                     str(tmp_path / "out.trec"), "--hits", "5", "--device", "cpu"], capsys, where)
    assert "damaged dense index" in error and "delete" in error
    assert not (tmp_path / "out.trec").exists()


def test_an_encode_progress_claiming_unwritten_rows_is_refused(world, tmp_path, capsys):
    output = tmp_path / "index"
    argv = ["encode", "--model", str(world["encoder"]), "--collection", str(world["collection"]), "--output",
            str(output), "--device", "cpu", "--block", "16", "--no-progress"]
    with pytest.MonkeyPatch.context() as patch:  # killed once the folder is made, before any row is encoded
        patch.setattr("pipeline.retrieval.embeddings._encode_rows", _ctrl_c)
        assert main(argv) == 130
    rows = len(DocStore(world["collection"]))
    progress = output / "progress.json"
    progress.write_text(json.dumps({"done": rows, "encode_seconds": 1.0}))
    error = refused(argv, capsys, progress)
    assert f"claims {rows} passages encoded, but row 0 was never written" in error
    progress.write_text(json.dumps({"done": rows + 1, "encode_seconds": 1.0}))
    assert "'done' must be a count of passages" in refused(argv, capsys, progress)
    progress.unlink()  # what the message says
    assert main(argv) == 0


# ---- teacher score files and training logs -------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["a score edited at the same size", "truncated", "a key missing"])
def test_a_damaged_score_file_is_refused(world, tmp_path, damage):
    path = tmp_path / "s.scores"
    lines = world["scores"].read_text().splitlines(keepends=True)
    if damage == "a score edited at the same size":
        qid, docid, score = lines[3].rstrip("\n").split("\t")
        lines[3] = f"{qid}\t{docid}\t{score[:-1]}{'1' if score[-1] != '1' else '2'}\n"
    elif damage == "truncated":
        lines = lines[:-1]
    else:
        header = json.loads(lines[0].split(" ", 2)[2])
        del header["fingerprint"]
        lines[0] = f"# distilrank-scores {json.dumps(header)}\n"
    path.write_text("".join(lines))
    with pytest.raises(InputError) as err:
        list(ScoreFile(path))
    assert str(err.value).startswith(f"{path}:") and "rescore with 'distilrank score'" in str(err.value)


def test_a_training_log_drops_a_torn_last_line_and_refuses_a_bad_one(tmp_path):
    folder = tmp_path / "phase"
    folder.mkdir()
    log = folder / "train_log.jsonl"
    log.write_text('{"event": "start"}\n{"event": "end", "steps": 3}\n{"event": "ev')
    assert read_log(log) == [{"event": "start"}, {"event": "end", "steps": 3}]
    assert finished_summary(folder) == {"steps": 3}
    log.write_text('{"event": "start"}\nnot json\n{"event": "end", "steps": 3}\n')
    with pytest.raises(InputError) as err:
        finished_summary(folder)
    assert str(err.value).startswith(f"{log}:2: damaged training log line")

