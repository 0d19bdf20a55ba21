"""Reliability (issue: a full disk, a lost checkpoint, leftovers, ``--resume`` with changed options).

- A full disk, injected at the write calls (``FullDisk``: Python's file writes, ``posix_fallocate``, safetensors and
  ``torch.save`` fail as they do when the disk fills up) before the first byte and halfway through each file each
  writing command writes; and, on a small tmpfs where one can be mounted, for real (encode, rerank, train). Each
  ends with one line ``distilrank: error: PATH: no space left on the device (...)`` naming that file, exit 2, no
  traceback, no temporary file, no output that is not whole, and the same command (with ``--resume`` where the
  line says so) then finishes with the clean result.
- The checkpoint swap interrupted at each point, by a kill (the folder states it leaves) or by Ctrl-C: ``--resume``
  continues from the right step and ends with the uninterrupted run's weights; a checkpoint that is gone is refused.
- ``--resume`` with each option that changes the result changed: one line naming it and both values, exit 2,
  nothing changed; ``--save-every`` changed: accepted.
- Leftovers (a killed tokenize's temporary files, a Ctrl-C'd distill's ``checkpoint.tmp/``, an encode killed before
  its ``meta.json``) are gone after the next command.
"""
from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.runtime import diskspace

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")

TEMPORARY = re.compile(r"(\.tmp$|^\..*\.lock$|\.partial$|\.body$|^checkpoint\.(old|tmp)$)")
FULL_LINE = re.compile(r"^distilrank: error: (\S+): no space left on the device \(")


# ---- the world: small inputs shared by every test (never changed) ------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert, tiny_data) -> dict[str, str]:
    root = tmp_path_factory.mktemp("world")
    data = tiny_data(root / "data", queries=8, per_query=12)
    w = {key: str(path) for key, path in data.items()}
    msrun = root / "data" / "run.tsv"
    rows = (line.split() for line in data["run"].read_text().splitlines())
    msrun.write_text("".join(f"{qid}\t{docid}\t{rank}\n" for qid, _, docid, rank, _, _ in rows))
    w["msrun"] = str(msrun)
    w["teacher"] = str(tiny_bert(root / "teacher", layers=2, labels=1, seed=5))
    w["base"] = str(tiny_bert(root / "base", layers=2, labels=None, seed=6))
    (root / "meta.json").write_text('{"team": "t", "model_description": "tiny"}\n')
    w["meta"] = str(root / "meta.json")
    w["scores"] = str(root / "teacher.scores")
    assert main(["score", "--model", w["teacher"], "--run", w["run"], "--topics", w["topics"], "--collection",
                 w["collection"], "--output", w["scores"], "--score-depth", "4", "--device", "cpu"]) == 0
    return w


#: Every writing command's clean command line ({t}: the case's folder; other names: the world's files).
COMMANDS: dict[str, list[str]] = {
    "tokenize": ["--collection", "{collection}", "--model", "{teacher}", "--no-progress"],
    "encode": ["--model", "{base}", "--collection", "{collection}", "--output", "{t}/dense", "--device", "cpu",
               "--block", "32", "--no-progress"],
    "rerank": ["--run", "{run}", "--topics", "{topics}", "--collection", "{collection}", "--model", "{teacher}",
               "--output", "{t}/out.trec", "--depth", "4", "--chunk-pairs", "8", "--device", "cpu",
               "--no-progress"],
    "score": ["--model", "{teacher}", "--run", "{run}", "--topics", "{topics}", "--collection", "{collection}",
              "--output", "{t}/out.scores", "--score-depth", "4", "--chunk-queries", "2", "--device", "cpu"],
    "submit": ["--run", "{msrun}", "--out", "{t}/sub", "--metadata", "{meta}"],
    "train": ["--init", "{base}", "--topics", "{topics}", "--qrels", "{qrels}", "--run", "{run}", "--collection",
              "{collection}", "--output", "{t}/model", "--negatives", "3", "--batch-size", "4", "--max-steps", "3",
              "--save-every", "1", "--max-length", "48", "--device", "cpu", "--no-progress"],
    "distill": ["--procedure", "ranker-distill", "--teacher", "{teacher}", "--layers", "1", "--init-from", "teacher",
                "--topics", "{topics}", "--run", "{run}", "--collection", "{collection}", "--scores", "{scores}",
                "--output", "{t}/model", "--group-size", "4", "--score-depth", "4", "--batch-size", "4",
                "--max-steps", "3", "--save-every", "1", "--max-length", "48", "--device", "cpu", "--no-progress"],
}
#: The commands that journal or checkpoint: continued with --resume.
RESUMABLE = ("rerank", "score", "train", "distill")


def argv(command: str, w: dict[str, str], t: Path, *extra: str, **changes: str | None) -> list[str]:
    """The command line of ``command`` in folder ``t``; ``changes`` (``batch_size="2"``) replaces a flag's value
    (None drops the flag); ``extra`` is added at the end."""
    args = [command, *COMMANDS[command]]
    for name, value in changes.items():
        flag = "--" + name.replace("_", "-")
        at = args.index(flag) if flag in args else None
        takes_value = at is not None and at + 1 < len(args) and not args[at + 1].startswith("--")
        if at is not None:
            del args[at : at + (2 if takes_value else 1)]
        if value is not None:
            args += [flag, value]
    filled = [re.sub(r"\{(\w+)\}", lambda m: str(t) if m[1] == "t" else w[m[1]], a) for a in args]
    return filled + list(extra)


def invoke(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if TEMPORARY.search(p.name)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(code: int, err: str, fragment: str) -> str:
    """The one error line of a refusal (exit 2, no traceback) holding ``fragment``."""
    assert "Traceback" not in err, err
    assert code == 2, f"exit {code}\n{err}"
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and fragment in errors[0], err
    return errors[0]


# ---- an injected full disk ----------------------------------------------------------------------------------------


class FullDisk:
    """Files under ``root`` share ``budget`` bytes: a write past it fails as on a full disk, and the space free there
    is what is left of it. ``budget=None``: the bytes are counted (``written``), nothing fails."""

    def __init__(self, root: Path, budget: int | None = None):
        self.root, self.budget, self.written = os.path.realpath(root) + os.sep, budget, 0
        self.files: list[list] = []  # [the file's name, the bytes written into it] of each file opened, in order

    def mine(self, path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.path.realpath(path).startswith(self.root)

    def opened(self, path: str | os.PathLike) -> int:
        """A file is opened for writing: its index in ``files``. Its name is relative to the root, a temporary name
        (``pipeline.runtime.atomic``) as the name it stands for."""
        name = os.path.relpath(os.path.realpath(path), self.root)
        name = re.sub(r"(^|/)\.([^/]+)\.[^./]+\.tmp(?=/|$)", r"\1\2", name)
        self.files.append([name, 0])
        return len(self.files) - 1

    def charge(self, size: int, file: int) -> int:
        """Room for ``size`` more bytes into ``file``: all of them, or what is left (the write then fails)."""
        room = size if self.budget is None else max(0, min(size, self.budget - self.written))
        self.written += room
        self.files[file][1] += room
        return room

    def fill_points(self) -> dict[str, int]:
        """file name -> a budget that runs out halfway through the first write of that file."""
        points, before = {}, 0
        for name, size in self.files:
            if size and name not in points:
                points[name] = before + size // 2
            before += size
        return points

    def free(self) -> int | None:
        return None if self.budget is None else max(0, self.budget - self.written)

    def write_bytes(self, path: str | os.PathLike, data: bytes) -> bool:
        """Write what fits of ``data`` into ``path``; whether all of it did."""
        room = self.charge(len(data), self.opened(path))
        Path(path).write_bytes(data[:room])
        return room == len(data)

    @contextlib.contextmanager
    def active(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[FullDisk]:
        import transformers.modeling_utils as modeling
        from safetensors import SafetensorError
        from safetensors.torch import save as safetensors_bytes

        real_open, real_fdopen, real_fallocate = builtins.open, os.fdopen, os.posix_fallocate
        real_torch_save, real_safe_save = torch.save, modeling.safe_save_file
        real_free = diskspace.free_bytes
        disk = self

        class Filling:
            """A file whose writes charge the disk."""

            def __init__(self, handle, path):
                self._handle, self._file = handle, disk.opened(path)

            def write(self, data):
                room = disk.charge(len(data), self._file)
                if room < len(data):
                    self._handle.write(data[:room])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return self._handle.write(data)

            def writelines(self, lines):
                for line in lines:
                    self.write(line)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._handle.close()

            def __getattr__(self, name):
                return getattr(self._handle, name)

        def writing(mode: str) -> bool:
            return any(c in mode for c in "wax+")

        def fake_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            return Filling(handle, file) if writing(mode) and disk.mine(file) else handle

        def fake_fdopen(fd, mode="r", *args, **kwargs):
            handle, path = real_fdopen(fd, mode, *args, **kwargs), os.readlink(f"/proc/self/fd/{fd}")
            return Filling(handle, path) if writing(mode) and disk.mine(path) else handle

        def fake_fallocate(fd, offset, length):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if disk.mine(path):
                wanted = max(0, offset + length - os.fstat(fd).st_blocks * 512)
                if disk.charge(wanted, disk.opened(path)) < wanted:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fallocate(fd, offset, length)

        def fake_torch_save(obj, f, *args, **kwargs):
            if not disk.mine(f):
                return real_torch_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_torch_save(obj, buffer, *args, **kwargs)
            if not disk.write_bytes(f, buffer.getvalue()):  # torch's words for a short write: no errno
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

        def fake_safe_save(tensors, filename, metadata=None):
            if not disk.mine(filename):
                return real_safe_save(tensors, filename, metadata=metadata)
            if not disk.write_bytes(filename, safetensors_bytes(tensors, metadata=metadata)):
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

        def fake_free(path):
            return disk.free() if disk.mine(path) and disk.free() is not None else real_free(path)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(os, "fdopen", fake_fdopen)
        monkeypatch.setattr(os, "posix_fallocate", fake_fallocate)
        monkeypatch.setattr(torch, "save", fake_torch_save)
        monkeypatch.setattr(modeling, "safe_save_file", fake_safe_save)
        monkeypatch.setattr(diskspace, "free_bytes", fake_free)
        try:
            yield self
        finally:
            monkeypatch.undo()


def result(command: str, t: Path, out: str) -> object:
    """What a command made, in a form equal between two identical runs."""
    if command == "tokenize":
        return re.sub(r"\S*/", "", out)
    if command == "encode":
        return [(t / "dense" / name).read_bytes() for name in ("docids.npy", "embeddings.f16")]
    if command == "rerank":
        return (t / "out.trec").read_bytes()
    if command == "score":
        return (t / "out.scores").read_bytes()
    if command == "submit":
        return [(t / "sub" / name).read_bytes() for name in ("dev.txt.bz2", "metadata.json")]
    from safetensors.torch import load_file

    info = json.loads((t / "model" / "distilrank_train.json").read_text())
    weights = load_file(str(t / "model" / "model.safetensors"))
    return [info["groups"], [s.get("steps") for s in info["summaries"].values()], weights]


def assert_same(command: str, got: object, expected: object) -> None:
    """Two results of ``result`` are equal (a trained model's weights up to floating-point error)."""
    if command not in ("train", "distill"):
        assert got == expected
        return
    assert got[:2] == expected[:2]
    assert got[2].keys() == expected[2].keys()
    for name, value in got[2].items():
        torch.testing.assert_close(value, expected[2][name], atol=1e-5, rtol=1e-4)


def outputs_whole(t: Path, clean: dict[str, bytes]) -> list[str]:
    """Output files (not the journals, logs and checkpoints of a run to resume) that differ from the clean run's."""
    kept = re.compile(r"(\.journal$|^model/|^cache/|^dense/(meta\.json|embeddings\.f16)$)")
    now = snapshot(t)
    return [name for name, data in now.items() if not kept.search(name) and name in clean and clean[name] != data]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_full_disk_is_one_line_and_the_rerun_finishes(command, world, tmp_path, capsys, monkeypatch):
    """The disk fills up halfway through each file the command writes (the first time it writes it), and before
    the first: one line naming a file, exit 2, no temporary file, no output that is not whole; the rerun (with
    --resume where it journals or checkpoints) ends with the clean result."""
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    monkeypatch.setenv("DISTILRANK_CACHE", str(clean_dir / "cache"))
    with monkeypatch.context() as patch, FullDisk(clean_dir).active(patch) as counted:
        code, out, err = invoke(argv(command, world, clean_dir), capsys)
    assert code == 0, err
    clean, files = result(command, clean_dir, out), snapshot(clean_dir)
    points = {"nothing": 0, **counted.fill_points()}
    assert len(points) > 2, points
    for at, (name, budget) in enumerate(points.items()):
        t = tmp_path / f"case-{at}"
        t.mkdir()
        monkeypatch.setenv("DISTILRANK_CACHE", str(t / "cache"))
        with monkeypatch.context() as patch, FullDisk(t, budget).active(patch):
            code, out, err = invoke(argv(command, world, t), capsys)
        line = refused(code, err, "no space left on the device")
        named = FULL_LINE.match(line)
        assert named and named[1].startswith(str(t)), (name, line)
        if name != "nothing":  # the file that filled up; a checkpoint or the final model as a whole
            whole = re.sub(r"^model/(checkpoint)\.tmp/.*", r"model/\1", re.sub(r"^model/model/.*", "model", name))
            assert named[1] == str(t / whole), (name, line)
        resume = line.endswith(" with --resume: finished work is kept")  # what the line says to do, done
        assert "free)" in line and (not resume or command in RESUMABLE), line
        assert not leftovers(t), (name, leftovers(t))
        assert not outputs_whole(t, files), (name, outputs_whole(t, files))
        if (t / "model" / "config.json").is_file():  # a trained model appears whole or not at all
            assert_same(command, [0, 0, weights(t / "model")], [0, 0, clean[2]])
        code, out, err = invoke(argv(command, world, t, *(["--resume"] if resume else [])), capsys)
        assert code == 0, (name, err)
        assert_same(command, result(command, t, out), clean)
        assert not leftovers(t), (name, leftovers(t))


def test_disk_full_messages():
    """The bytes needed (when known) or written, and the space free, in people's units."""
    err = diskspace.disk_full("/x/embeddings.f16", needed=128_000)
    assert str(err).startswith("/x/embeddings.f16: no space left on the device (it needs 128.0 kB, ")
    assert isinstance(err, InputError)
    assert "3.5 MB written when it filled up" in str(diskspace.disk_full("/x/f", written=3_500_000))
    assert [diskspace.human(n) for n in (0, 999, 1000, 2_500_000_000)] == ["0 B", "999 B", "1.0 kB", "2.5 GB"]


def test_reserve_falls_back_to_a_free_space_check(tmp_path, monkeypatch):
    """Where posix_fallocate is not supported, the free space decides; the file gets its length either way."""

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    diskspace.reserve(tmp_path / "fits", 4096)
    assert (tmp_path / "fits").stat().st_size == 4096
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 1000)
    with pytest.raises(diskspace.DiskFull, match=r"it needs 4.1 kB, 1.0 kB free"):
        diskspace.reserve(tmp_path / "too-big", 4096)


# ---- a real full disk: a small tmpfs --------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (skipped where this process may not mount one)."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def resize(folder: Path, size: str) -> None:
    """Free space on the tmpfs: give it ``size`` (what a user freeing space does)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Fill the tmpfs at ``folder`` but ``leave`` bytes."""
    free = shutil.disk_usage(folder).free
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave))


def test_real_full_disk_encode_is_an_error_before_any_work(world, tmp_path, capsys):
    """The embeddings of 3,000 passages (192 kB) on a 64 kB tmpfs: refused at once naming their size, never a
    SIGBUS; nothing left; once there is space the same command encodes."""
    big = tmp_path / "big.tsv"
    big.write_text("".join(f"{i}\tpassage number {i} about volcano and piano\n" for i in range(3000)))
    with tmpfs(tmp_path / "disk", "64k") as disk:
        out = disk / "dense"
        args = ["encode", "--model", world["base"], "--collection", str(big), "--output", str(out), "--device", "cpu",
                "--no-progress"]
        code, _, err = invoke(args, capsys)
        line = refused(code, err, f"{out}/embeddings.f16: no space left on the device (it needs 192.0 kB, ")
        assert line.endswith("free); free some space and run the command again")
        assert list(disk.iterdir()) == []  # no folder, no lock
        resize(disk, "1m")
        code, out_text, err = invoke(args, capsys)
        assert code == 0, err
        assert "3000 passages x 32" in out_text


def test_real_full_disk_rerank_keeps_the_journal(world, tmp_path, capsys):
    """rerank into a full tmpfs: refused before any work (its lock cannot be written), nothing left; with two pages
    left: one line, exit 2, the journal kept; --resume after freeing space writes the run a clean rerank writes."""
    clean = tmp_path / "clean"
    clean.mkdir()
    assert invoke(argv("rerank", world, clean), capsys)[0] == 0
    with tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk, 0)
        code, _, err = invoke(argv("rerank", world, disk), capsys)
        refused(code, err, f"{disk}/out.trec: no space left on the device (0 B free); free some space and run the "
                "command again")
        assert [p.name for p in disk.iterdir()] == ["filler"]
        (disk / "filler").unlink()
        fill(disk, 8192)
        code, _, err = invoke(argv("rerank", world, disk), capsys)
        line = refused(code, err, "no space left on the device")
        assert FULL_LINE.match(line)[1].startswith(str(disk)) and line.endswith(" with --resume: finished work is kept")
        assert not leftovers(disk) and not (disk / "out.trec").exists()
        (disk / "filler").unlink()
        code, _, err = invoke(argv("rerank", world, disk, "--resume"), capsys)
        assert code == 0, err
        assert (disk / "out.trec").read_bytes() == (clean / "out.trec").read_bytes()


def test_real_full_disk_train_keeps_the_last_checkpoint(world, tmp_path, capsys):
    """train on a tmpfs too small for a checkpoint (torch.save's own error, no errno): one line, exit 2, no
    checkpoint.tmp; --resume after freeing space finishes with the clean run's weights."""
    clean = tmp_path / "clean"
    clean.mkdir()
    assert invoke(argv("train", world, clean), capsys)[0] == 0
    with tmpfs(tmp_path / "disk", "6m") as disk:
        code, _, err = invoke(argv("train", world, disk), capsys)
        refused(code, err, f"{disk}/model/checkpoint: no space left on the device (")
        assert not leftovers(disk), leftovers(disk)
        resize(disk, "64m")
        code, out, err = invoke(argv("train", world, disk, "--resume"), capsys)
        assert code == 0, err
        assert_same("train", result("train", disk, out), result("train", clean, out))


# ---- the checkpoint swap ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer_setup(tmp_path_factory, world):
    from pipeline.io.data import DocStore, read_qrels, read_topics
    from pipeline.train.groups import LabeledGroups
    from pipeline.train.options import TrainConfig
    from pipeline.train.recipes import load_encoder
    from pipeline.train.tasks import RankerTask
    from pipeline.train.trainer import CHECKPOINT, Trainer

    root = tmp_path_factory.mktemp("swap")

    def task():
        topics, qrels = read_topics(world["topics"]), read_qrels(world["qrels"])
        docstore = DocStore(world["collection"])
        source = LabeledGroups(topics, qrels, world["run"], negatives=3, seed=7, missing=docstore.missing)
        return RankerTask("lce", load_encoder(world["teacher"], 7, max_length=48), source, docstore, objective="lce",
                          seed=7)

    config = TrainConfig(epochs=2, batch_size=4, lr=1e-3, save_every=1, log_every=1, progress=False)

    def fit(folder: Path, resume: bool = False, **changes) -> dict:
        return Trainer(task(), folder, replace(config, **changes), "cpu").fit(resume=resume)

    fit(root / "full")
    for step in (2, 3):  # the checkpoints of steps 2 and 3 of the same run, with its log
        fit(root / f"at-{step}", stop_after=step)
        shutil.copytree(root / f"at-{step}" / CHECKPOINT, root / f"checkpoint-{step}")
    return root, fit


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def incomplete(folder: Path) -> Path:
    (folder / "trainer_state.pt").unlink()
    return folder


#: The folders a kill leaves at each point of a swap from the step-2 checkpoint to the step-3 one, and the step
#: ``--resume`` continues from.
KILLED = {
    "while-writing-the-new-one": ({"checkpoint": 2, "checkpoint.tmp": "partial"}, 2),
    "before-the-old-one-is-renamed-aside": ({"checkpoint": 2, "checkpoint.tmp": 3}, 2),
    "after-the-old-one-is-renamed-aside": ({"checkpoint.old": 2, "checkpoint.tmp": 3}, 2),
    "after-the-new-one-is-renamed-in": ({"checkpoint": 3, "checkpoint.old": 2}, 3),
    "while-removing-the-old-one": ({"checkpoint": 3, "checkpoint.old": "partial"}, 3),
}


@pytest.mark.parametrize("point", list(KILLED))
def test_checkpoint_swap_killed_then_resumed(point, trainer_setup):
    root, fit = trainer_setup
    folders, expected = KILLED[point]
    run = root / f"killed-{point}"
    shutil.copytree(root / "at-3", run, ignore=shutil.ignore_patterns("checkpoint"))
    for name, step in folders.items():
        shutil.copytree(root / f"checkpoint-{2 if step == 'partial' else step}", run / name)
        if step == "partial":
            incomplete(run / name)
    summary = fit(run, resume=True)
    assert summary["complete"] and summary["resumed_at"] == expected
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == []
    full = weights(root / "full")
    for name, value in weights(run).items():
        torch.testing.assert_close(value, full[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("at", [1, 2])
def test_checkpoint_swap_ctrl_c_keeps_a_complete_checkpoint(at, trainer_setup, monkeypatch):
    """Ctrl-C at either rename of a swap: the last complete checkpoint is in place, no checkpoint.tmp or .old."""
    from pipeline.train.trainer import CHECKPOINT

    root, fit = trainer_setup
    run = root / f"ctrl-c-{at}"
    shutil.copytree(root / "at-2", run)
    real, renames = Path.rename, []

    def rename(self, target):
        renames.append(target)
        if len(renames) == at:
            raise KeyboardInterrupt
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        fit(run, resume=True, stop_after=3)
    monkeypatch.undo()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == [CHECKPOINT]
    assert torch.load(run / CHECKPOINT / "trainer_state.pt", weights_only=False)["step"] == 2
    assert fit(run, resume=True)["resumed_at"] == 2


def test_resume_refuses_a_lost_checkpoint(trainer_setup):
    """The log records a checkpoint that is gone (or incomplete): refused, not silently trained from step 0."""
    root, fit = trainer_setup
    for damage in ("deleted", "incomplete"):
        run = root / f"lost-{damage}"
        shutil.copytree(root / "at-3", run)
        if damage == "deleted":
            shutil.rmtree(run / "checkpoint")
        else:
            incomplete(run / "checkpoint")
        before = snapshot(run)
        with pytest.raises(InputError, match=r"no complete checkpoint, but this run saved one at step 3"):
            fit(run, resume=True)
        assert snapshot(run) == before


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_again(trainer_setup):
    root, fit = trainer_setup
    run = root / "no-checkpoint-yet"
    run.mkdir()
    shutil.copy(root / "at-2" / "train_log.jsonl", run)
    lines = [line for line in (run / "train_log.jsonl").read_text().splitlines()
             if json.loads(line).get("event") != "checkpoint"]
    (run / "train_log.jsonl").write_text("\n".join(lines[:1]) + "\n")  # the start event alone
    assert fit(run, resume=True)["resumed_at"] == 0
    with pytest.raises(InputError, match="nothing to resume"):
        fit(root / "empty", resume=True)


def test_trainer_resume_compares_the_options_that_change_the_result(trainer_setup):
    root, fit = trainer_setup
    run = root / "changed"
    shutil.copytree(root / "at-2", run)
    with pytest.raises(InputError, match=r"--resume with batch_size 2, but the run being resumed has 4"):
        fit(run, resume=True, batch_size=2)
    summary = fit(run, resume=True, save_every=None, log_every=5)  # options that change nothing
    assert summary["complete"] and summary["resumed_at"] == 2


# ---- --resume with changed options (the command line) -----------------------------------------------------------


#: The runs ``interrupted`` stops after step 2 of 4.
FOUR_STEPS = {"max_steps": "4", "epochs": "2"}


@pytest.fixture(scope="module")
def interrupted(world, tmp_path_factory):
    """A distill and a train stopped after step 2 of 4 (as if killed; their checkpoints kept)."""
    from pipeline.train import recipes

    root = tmp_path_factory.mktemp("interrupted")
    original = recipes.run_phase
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipes, "run_phase", lambda task, folder, config, *args, **kwargs: original(
            task, folder, replace(config, stop_after=2), *args, **kwargs))
        for command in ("distill", "train"):
            (root / command).mkdir()
            assert main(argv(command, world, root / command, **FOUR_STEPS)) == 0
            assert (root / command / "model" / "checkpoint").is_dir()
    return root


#: distill: flag -> a changed value (None: a switch), each one that changes the result.
DISTILL_CHANGES = {
    "layers": "2", "init_from": "base", "head": "mean", "base": "{teacher}", "objective": "margin-mse",
    "temperature": "2", "teacher_temperature": "0.5", "random_negatives": "0", "label_weight": "0.5",
    "hidden_weight": "0.5", "group_size": "3", "negatives": "3", "negatives_depth": "50", "score_depth": "3",
    "progressive": "2", "progressive_steps": "3", "attention_weight": "0.5", "max_length": "40", "epochs": "3",
    "batch_size": "2", "accumulation": "2", "lr": "0.0002", "lrs": "0.0001,0.00005", "warmup": "0.2",
    "weight_decay": "0.1", "grad_clip": "0.5", "max_steps": "5", "precision": "fp32", "seed": "7",
}
#: train: a few, beside its own options.
TRAIN_CHANGES = {"batch_size": "2", "lr": "0.0002", "negatives": "2", "negatives_depth": "50", "short": "drop",
                 "max_length": "40", "seed": "7"}


def _changed_cases():
    for command, changes in (("distill", DISTILL_CHANGES), ("train", TRAIN_CHANGES)):
        for name, value in changes.items():
            yield pytest.param(command, name, value, id=f"{command}-{name}")
    yield pytest.param("distill", "layer_map", "1", id="distill-layer_map")
    yield pytest.param("distill", "bootstrap_from", "{base}", id="distill-bootstrap")


@pytest.mark.parametrize(("command", "name", "value"), list(_changed_cases()))
def test_resume_with_a_changed_option_is_refused(command, name, value, world, interrupted, capsys):
    t = interrupted / command
    before = snapshot(t)
    changes = {name: value.format(**world)}
    flag = "--" + name.replace("_", "-")
    if name == "layer_map":
        changes["layers"] = None
    if name == "bootstrap_from":
        changes.update(bootstrap_topics=world["topics"], bootstrap_run=world["run"])
        flag = "--bootstrap-from"
    code, _, err = invoke(argv(command, world, t, "--resume", **{**FOUR_STEPS, **changes}), capsys)
    line = refused(code, err, f"{t}/model/distilrank_options.json: --resume with {flag} ")
    assert "but the run being resumed has" in line and "start over with --overwrite" in line
    assert snapshot(t) == before


def test_resume_with_another_save_every_is_accepted(world, interrupted, tmp_path, capsys):
    """--save-every (and the progress bar) change nothing the run makes: the resumed run finishes like one never
    stopped."""
    clean = tmp_path / "clean"
    clean.mkdir()
    code, out, err = invoke(argv("distill", world, clean, **FOUR_STEPS), capsys)
    assert code == 0, err
    t = tmp_path / "resumed"
    shutil.copytree(interrupted / "distill", t)
    code, out, err = invoke(argv("distill", world, t, "--resume", **FOUR_STEPS, save_every="3"), capsys)
    assert code == 0, err
    assert_same("distill", result("distill", t, out), result("distill", clean, out))


# ---- leftovers ---------------------------------------------------------------------------------------------


def _tokenize_files(world) -> dict[str, Path]:
    from pipeline.io.data import DocStore
    from pipeline.rerank.model import load_tokenizer
    from pipeline.rerank.token_cache import TokenCache, fingerprint, plain_fast_tokenizer

    store = DocStore(world["collection"])
    return TokenCache.files(store, fingerprint(plain_fast_tokenizer(load_tokenizer(world["teacher"]))))


def test_stale_token_cache_temporaries_are_swept_unless_a_builder_holds_the_lock(world, tmp_path, capsys,
                                                                               monkeypatch):
    from pipeline.runtime.atomic import temp_prefix
    from pipeline.runtime.outputs import lock_path

    """A killed tokenize's temporary files are removed by the next command that opens the cache, not while another
    process holds the cache's lock (a live build)."""
    monkeypatch.setenv("DISTILRANK_CACHE", str(tmp_path / "cache"))
    args = argv("tokenize", world, tmp_path)
    assert invoke(args, capsys)[0] == 0
    files = _tokenize_files(world)
    stale = [files[k].parent / f"{temp_prefix(files[k])}x1y2z3.tmp" for k in ("ids", "offsets", "record")]
    for path in stale:
        path.write_bytes(b"left by a killed tokenize")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('ready', flush=True)\ntime.sleep(60)\n",
                               str(lock_path(files["record"]))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        assert invoke(args, capsys)[0] == 0
        assert all(path.exists() for path in stale)  # a live builder's files are not touched
    finally:
        holder.kill()
        holder.wait()
    assert invoke(args, capsys)[0] == 0
    assert not any(path.exists() for path in stale)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith((".tmp", ".lock"))]


def test_ctrl_c_while_distill_checkpoints_leaves_no_checkpoint_tmp(world, tmp_path, capsys, monkeypatch):
    """Ctrl-C while a checkpoint is written: exit 130, one line, no checkpoint.tmp/; --resume finishes the run."""
    real = torch.save

    def interrupted(obj, f, *args, **kwargs):
        if "checkpoint.tmp" in str(f):
            raise KeyboardInterrupt
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted)
    code, _, err = invoke(argv("distill", world, tmp_path), capsys)
    assert code == 130 and "distilrank: interrupted; finished work is kept" in err and "Traceback" not in err
    monkeypatch.undo()
    assert not leftovers(tmp_path), leftovers(tmp_path)
    code, _, err = invoke(argv("distill", world, tmp_path, "--resume"), capsys)
    assert code == 0, err


def test_checkpoint_tmp_of_a_killed_run_is_removed_by_the_next_start(world, interrupted, tmp_path, capsys):
    """kill -9 while a checkpoint is written leaves a partial checkpoint.tmp/: --resume removes it and continues."""
    shutil.copytree(interrupted / "distill", tmp_path, dirs_exist_ok=True)
    stale = tmp_path / "model" / "checkpoint.tmp"
    shutil.copytree(tmp_path / "model" / "checkpoint", stale)
    incomplete(stale)
    code, _, err = invoke(argv("distill", world, tmp_path, "--resume", **FOUR_STEPS), capsys)
    assert code == 0, err
    assert not leftovers(tmp_path), leftovers(tmp_path)


#: Runs the CLI with one function of the package replaced by ``kill -9`` of the process.
HARNESS = """
import importlib, os, signal, sys
module, name = sys.argv[1:3]
target = importlib.import_module(module)
def wrapped(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(target, name, wrapped)
from pipeline.cli import main
raise SystemExit(main(sys.argv[3:]))
"""


def test_encode_killed_before_its_meta_json_continues(world, tmp_path, capsys):
    """kill -9 between an encode's docids.npy and its meta.json: the next encode starts it again (no refusal)."""
    clean = tmp_path / "clean"
    clean.mkdir()
    assert invoke(argv("encode", world, clean), capsys)[0] == 0
    t = tmp_path / "killed"
    t.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", HARNESS, "pipeline.retrieval.embeddings", "_write_json",
                             *argv("encode", world, t)], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in (t / "dense").iterdir()) == ["docids.npy", "embeddings.f16"]
    code, _, err = invoke(argv("encode", world, t), capsys)
    assert code == 0, err
    assert result("encode", t, "") == result("encode", clean, "")
