"""The output guard: an input is never overwritten, an unwritable output fails before any work, one writer."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.runtime.outputs import claim_output, lock_path

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "c.tsv").write_text("1\tpassage\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    return tmp_path


def refused(path, inputs, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        with claim_output(path, inputs, **kwargs):
            raise AssertionError("claimed")
    return str(err.value)


def test_output_equal_to_an_input_is_refused_however_it_is_spelled(files: Path):
    (files / "link.tsv").symlink_to(files / "c.tsv")
    os.link(files / "c.tsv", files / "hard.tsv")
    (files / "sub").mkdir()
    for spelling in (files / "c.tsv", files / "sub" / ".." / "c.tsv", files / "link.tsv", files / "hard.tsv"):
        message = refused(spelling, {"--collection": files / "c.tsv"})
        assert message == f"{spelling}: the output is also the input --collection; refusing to overwrite an input " \
                          "(choose another output)"
    assert (files / "c.tsv").read_text() == "1\tpassage\n"


def test_a_file_the_output_also_writes_is_checked(files: Path):
    message = refused(files / "run", {"--run": files / "run.timing.json"}, also=[files / "run.timing.json"])
    assert "the output's file run.timing.json is also the input --run" in message


def test_folders_inside_inputs_or_holding_inputs(files: Path):
    assert "is also the input --init" in refused(files / "model", {"--init": files / "model"}, folder=True)
    assert "inside the input folder --init" in refused(files / "model" / "ft", {"--init": files / "model"}, folder=True)
    message = refused(files, {"--collection": files / "c.tsv"}, folder=True, replaces=True)
    assert "is inside this output folder, which is replaced whole" in message
    with claim_output(files / "out", {"--init": [files / "model", None]}, folder=True) as out:
        out.mkdir()


@pytest.mark.parametrize("output, folder, message", [
    ("model", False, "is a folder; the output here is a file"),
    ("c.tsv", True, "exists and is not a folder"),
    ("c.tsv/run.trec", False, "c.tsv is a file, not a folder"),
    ("/proc/distilrank/run.trec", False, "cannot write the output here"),
])
def test_outputs_that_cannot_be_written(files: Path, output: str, folder: bool, message: str):
    assert message in refused(files / output, {}, folder=folder)


def test_stdout_needs_no_claim(files: Path):
    with claim_output("-", {"--run": files / "c.tsv"}) as out:
        assert str(out) == "-"


def test_failure_removes_the_folders_it_made_and_stale_temporaries_are_swept(files: Path):
    with pytest.raises(RuntimeError):
        with claim_output(files / "a" / "b" / "student", {}, folder=True) as out:
            out.mkdir()
            raise RuntimeError("training failed")
    assert not (files / "a").exists()
    (files / ".run.trec.x1y2.tmp").write_text("left by kill -9")
    (files / ".run.trec.d3e4.tmp").mkdir()
    with claim_output(files / "run.trec", {}) as out:
        assert lock_path(out).read_text() == f"{os.getpid()}\n"
        out.write_text("run")
    assert sorted(p.name for p in files.iterdir()) == ["c.tsv", "model", "run.trec"]


def test_a_second_writer_fails_at_once_naming_the_first(files: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pipeline.runtime.outputs import claim_output\n"
         f"with claim_output({str(files / 'run.trec')!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline() == "held\n"
        message = refused(files / "run.trec", {})
        assert f"process {holder.pid} is writing this output" in message
    finally:
        holder.kill()
        holder.wait()
    with claim_output(files / "run.trec", {}):  # the lock died with its holder
        with claim_output(files / "run.trec", {}):  # and a claim inside a claim of this process is allowed
            pass


def test_building_waits_for_the_process_building_the_same_file(tmp_path: Path):
    """The processes of a torchrun job that all open an unbuilt cache: the second waits for the first, then finds
    the file built; no lock file is left."""
    from pipeline.runtime.outputs import building

    cache = tmp_path / "cache" / "x.npz"
    builder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from pipeline.runtime.outputs import building\n"
         f"with building({str(cache)!r}):\n    print('building', flush=True)\n    time.sleep(1.5)\n"
         f"    Path({str(cache)!r}).write_text('built')\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert builder.stdout.readline() == "building\n"
        assert not cache.exists()
        with building(cache):
            assert cache.read_text() == "built"  # it waited for the builder
        assert builder.wait(timeout=60) == 0
    finally:
        builder.kill()
        builder.wait()
    assert [p.name for p in cache.parent.iterdir()] == ["x.npz"]
