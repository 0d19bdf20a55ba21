"""The distributed rules that need no second process: context, device, split, parts joined in rank order, rank 0's
work, every rank's work and their errors (``on_main``, ``on_every``; two ranks: ``test_scale_out.py``)."""
from __future__ import annotations

import sys

import pytest

from pipeline.errors import InputError
from pipeline.runtime import distributed
from pipeline.runtime.diskspace import DiskFull
from pipeline.runtime.distributed import Context, balanced_ranges, context, local_device, part_path, write_output


def test_balanced_ranges_are_contiguous_deterministic_and_even():
    weights = [100, 100, 100, 100, 37, 100, 100, 20]
    ranges = balanced_ranges(weights, 2)
    assert ranges == [range(3), range(3, 8)]  # 300 | 357: the cut nearest half of 657
    assert [sum(weights[i] for i in r) for r in ranges] == [300, 357]
    assert balanced_ranges(weights, 3) == balanced_ranges(weights, 3)
    for parts in (1, 2, 3, 5, 8, 11):
        ranges = balanced_ranges(weights, parts)
        assert len(ranges) == parts
        assert [i for r in ranges for i in r] == list(range(len(weights)))  # each unit once, in order
    assert balanced_ranges([5], 3) == [range(0), range(1), range(1, 1)]  # fewer units than parts
    assert balanced_ranges([], 2) == [range(0), range(0)]
    assert [len(r) for r in balanced_ranges([1] * 10, 4)] == [2, 3, 2, 3]


def test_context_comes_from_torchruns_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert context() == Context() and not context().distributed and context().is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert context() == Context(3, 4, 1, launched=True)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InputError, match="not a valid place"):
        context()


def test_one_device_rule(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    alone, rank1 = Context(), Context(1, 2, 1, launched=True)
    assert local_device("auto", alone) == "auto" and local_device("cuda:1", alone) == "cuda:1"
    assert local_device("auto", rank1) == "cpu" and local_device("cpu", rank1) == "cpu"
    with pytest.raises(InputError, match="each process takes cuda:LOCAL_RANK"):
        local_device("cuda:0", rank1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert local_device("auto", rank1) == "cuda:1" and local_device("cuda", rank1) == "cuda:1"
    with pytest.raises(InputError, match="at most one process per GPU"):
        local_device("cuda", Context(2, 3, 2, launched=True))


def test_write_output_in_one_process_writes_the_output_or_one_part_it_joins(tmp_path):
    out = write_output(tmp_path / "run.trec", lambda path: path.write_text("q1 Q0 d1 1 1.0 t\n"))
    assert out.read_text() == "q1 Q0 d1 1 1.0 t\n"
    assert part_path(out, Context(1, 2)).name == "run.trec.part1-of-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.trec"]
    write_output(tmp_path / "x", lambda path: path.write_text("body\n"),
                 lambda parts, path: path.write_text("header\n" + parts[0].read_text()))
    assert (tmp_path / "x").read_text() == "header\nbody\n" and not (tmp_path / "x.part0-of-1").exists()


def test_concatenate_joins_parts_in_order(tmp_path):
    parts = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for part, text in zip(parts, ("x\n", "", "y\nz\n"), strict=True):
        part.write_text(text)
    distributed.concatenate(parts, tmp_path / "out")
    assert (tmp_path / "out").read_text() == "x\ny\nz\n"


def test_on_main_in_one_process_runs_the_work_and_raises_its_error(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    done: list[int] = []
    distributed.on_main(lambda: done.append(1))
    assert done == [1]
    full = DiskFull("no space left on the device (0 B free)", "out/checkpoint")

    def fill_up() -> None:
        raise full

    with pytest.raises(DiskFull) as err:
        distributed.on_main(fill_up)
    assert err.value is full


def test_on_every_in_one_process_runs_the_work_and_raises_its_error_without_torch(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)  # outside torchrun, neither imports torch
    assert distributed.on_every(lambda: 7) == 7
    distributed.on_main(lambda: None)
    broken = ValueError("not a number")

    def fail() -> None:
        raise broken

    for share in (distributed.on_every, distributed.on_main):
        with pytest.raises(ValueError) as err:
            share(fail)
        assert err.value is broken


def test_an_input_error_crosses_processes_whole():
    """Pickled and read back (as ``on_main`` sends rank 0's error to the others): its class, message, file, line."""
    import pickle

    for err in (InputError("bad row", "run.trec", 3), DiskFull("no space left", "out/checkpoint"), InputError("x")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert (back.message, back.path, back.line) == (err.message, err.path, err.line)
