"""Atomic outputs: modes from the umask, writes through links, standard output, clean-up on failure and signals."""
from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest

from pipeline.runtime.atomic import atomic_write, replace_dir, scratch_dir
from pipeline.runtime.interrupts import Interrupted, exit_code, signals_raise


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_the_umask_mode_replaced_file_keeps_its_mode(tmp_path: Path, umask_022):
    path = tmp_path / "run.trec"
    with atomic_write(path) as out:
        out.write("x\n")
    assert mode(path) == 0o644
    path.chmod(0o640)
    with atomic_write(path) as out:
        out.write("y\n")
    assert (mode(path), path.read_text()) == (0o640, "y\n")
    os.umask(0o077)
    with atomic_write(tmp_path / "private.json") as out:
        out.write("{}")
    assert mode(tmp_path / "private.json") == 0o600


def test_a_symlink_output_is_written_through(tmp_path: Path):
    target = tmp_path / "real" / "run.trec"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "link.trec"
    link.symlink_to(target)
    with atomic_write(link) as out:
        out.write("new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.trec"]


@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_standard_output(name: str, capsys: pytest.CaptureFixture):
    with atomic_write(name) as out:
        out.write("1 Q0 d 1 1.0 t\n")
    assert capsys.readouterr().out == "1 Q0 d 1 1.0 t\n"
    assert Path("/dev/stdout").is_symlink() or not Path("/dev/stdout").is_file()


def test_device_is_written_into_not_replaced():
    with atomic_write("/dev/null") as out:
        out.write("discarded")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_failure_leaves_nothing(tmp_path: Path):
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "out.trec") as out:
            out.write("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_sigterm_raises_and_cleans_up(tmp_path: Path):
    with pytest.raises(Interrupted) as err:
        with signals_raise():
            with atomic_write(tmp_path / "out.trec") as out, scratch_dir(tmp_path / "index") as work:
                out.write("partial")
                (work / "segment").write_text("x")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # interrupted long before
    assert exit_code(err.value) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_replace_dir_swaps_folders_with_the_umask_mode(tmp_path: Path, umask_022):
    index = tmp_path / "index"
    index.mkdir()
    (index / "old").write_text("old")
    with scratch_dir(index) as work:
        assert work.name.startswith(".index.") and work.name.endswith(".tmp") and mode(work) == 0o700
        built = work / "built"
        built.mkdir(mode=0o700)
        (built / "new").write_text("new")
        replace_dir(built, index)
    assert [p.name for p in index.iterdir()] == ["new"] and mode(index) == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["index"]
