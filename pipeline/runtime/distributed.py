"""One command on many processes (``torchrun``): the rules, written once.

- **Who**: rank, world size and local rank come from the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``); without them a process is rank 0 of 1 and every function here is a no-op, so nothing changes
  outside ``torchrun``.
- **Device** (``local_device``): under ``torchrun``, ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` where CUDA
  exists; ``auto`` means CPU otherwise. ``cuda:N`` is refused in a run of several processes (they would share
  one GPU). ``devices.resolve_device`` applies this rule, so every model of the package follows it.
- **Process group** (``start``): made on first need; gloo carries CPU tensors, NCCL CUDA tensors where the
  device is a GPU. Collectives here (``barrier``, ``gather``, ``all_sum``, ``on_main``, ``on_every``) only move
  small CPU objects. torch is imported only there, so the command line reads the context cheaply.
- **Rank 0 writes** (``on_main``): what one rank writes alone (a checkpoint, a record) is waited for by every rank,
  and its failure reaches every rank: a full disk on rank 0 stops each rank with the same one-line error instead of
  leaving the others waiting at the next collective.
- **Every rank's work** (``on_every``): what each rank does on its own and may fail on some ranks only (its part
  of an output on a full disk) is waited for the same way: every rank stops with the lowest failing rank's error.
- **Split** (``balanced_ranges``): units of work (chunks of whole queries) are cut into one contiguous range per
  rank with pair counts as even as the units allow: deterministic, and rank order is the units' order, so
  joining the ranks' parts in rank order gives the single-process output.
- **Output** (``write_output``): each rank writes its part atomically beside the output (``part_path``), within
  ``on_every`` (a failed part write stops every rank, and the parts written are removed); then rank 0 joins the
  parts into the final file (atomically) and removes them, within ``on_main``: every rank returns once the output
  exists, or stops with the join's error. A single process with the default join (concatenation) writes the output
  itself: its one part would be the output, copied.
"""
from __future__ import annotations

import atexit
import bisect
import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, one_line
from .atomic import atomic_write

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: How long a rank waits for the others at a collective: ranks finish their shares at different times, and rank
#: 0 joins the parts while the others wait. A dead rank is noticed by torchrun, which stops the group.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Context:
    """This process's place in the run: rank ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (even a run of one process)

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, saves and joins the parts."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def context() -> Context:
    """The process's ``Context`` from torchrun's environment (rank 0 of 1 without it)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return Context()
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK={rank} WORLD_SIZE={world}: not a valid place in a run")
    return Context(rank, world, local, launched=True)


def local_device(name: str, ctx: Context | None = None) -> str:
    """The device name ``name`` (already normalised: ``auto``, ``cpu``, ``cuda``, ``cuda:N``) means for this
    process (see the module docstring); outside torchrun, ``name`` itself."""
    ctx = ctx or context()
    if not ctx.launched or name == "cpu":
        return name
    import torch
    if name.startswith("cuda:") and ctx.distributed:
        raise InputError(f"--device {name} in a run of {ctx.world_size} processes: each process takes "
                         "cuda:LOCAL_RANK; use --device cuda (or auto)")
    if name in ("auto", "cuda"):
        if not torch.cuda.is_available():
            return "cpu" if name == "auto" else name  # plain 'cuda' without CUDA: refused by the caller
        if ctx.local_rank >= torch.cuda.device_count():
            raise InputError(f"local rank {ctx.local_rank} but {torch.cuda.device_count()} GPUs on this machine: "
                             "start at most one process per GPU (--nproc-per-node)")
        return f"cuda:{ctx.local_rank}"
    return name


def start(device: str | torch.device | None = None, ctx: Context | None = None) -> Context:
    """Join the process group (once) when there are several processes; returns the context. ``device``: where
    this process computes (default: ``local_device('auto')``); a GPU adds NCCL for CUDA tensors."""
    import torch

    ctx = ctx or context()
    if not ctx.distributed or torch.distributed.is_initialized():
        return ctx
    device = torch.device(device if device is not None else local_device("auto", ctx))
    backend = "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"
    torch.distributed.init_process_group(backend=backend, timeout=TIMEOUT)
    atexit.register(stop)
    log.info("rank %d of %d joined the process group (%s, device %s)", ctx.rank, ctx.world_size, backend, device)
    return ctx


def stop() -> None:
    """Leave the process group (registered to run at exit by ``start``)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(ctx: Context | None = None) -> None:
    """Wait until every rank gets here (an all-reduce of a CPU tensor: gloo, whatever the device)."""
    ctx = start(ctx=ctx)
    if ctx.distributed:
        import torch

        torch.distributed.all_reduce(torch.zeros(1))


def _shared(work: Callable[[], Any], runs: bool, ctx: Context) -> Any:
    """Run ``work`` where ``runs`` (on this rank), then share any rank's failure: one all-reduce of a failure flag;
    when a rank failed, every rank's error is gathered (an ``InputError`` whole, any other as a one-line
    ``RuntimeError`` naming its rank) and every rank raises the lowest failing rank's: that rank its own exception.
    ``work``'s result on this rank (``None`` where it did not run)."""
    if not ctx.distributed:
        return work() if runs else None
    start(ctx=ctx)
    import torch

    result, error = None, None
    if runs:
        try:
            result = work()
        except Exception as exc:  # every kind: the other ranks must learn of it (signals reach every rank anyway)
            error = exc
    failed = torch.tensor([0.0 if error is None else 1.0])
    torch.distributed.all_reduce(failed)
    if failed.item():
        errors = gather(error if error is None or isinstance(error, InputError)
                        else RuntimeError(f"rank {ctx.rank} failed: {one_line(error)}"), ctx)
        first = next(rank for rank, shared in enumerate(errors) if shared is not None)
        raise error if first == ctx.rank else errors[first]
    return result


def on_main(work: Callable[[], Any], ctx: Context | None = None) -> None:
    """Run ``work`` on rank 0 alone while every other rank waits for it, and raise its error on every rank: rank 0
    its own, the others the same ``InputError`` (a full disk stays a one-line ``DiskFull``) or a ``RuntimeError``
    quoting any other. No rank is left waiting for rank 0 at a later collective. It costs one all-reduce of one
    number (a barrier's cost); the error travels only when there is one. A single process just runs ``work``."""
    ctx = ctx or context()
    _shared(work, ctx.is_main, ctx)


def on_every(work: Callable[[], Any], ctx: Context | None = None) -> Any:
    """Run ``work`` on every rank, wait for every rank to finish it, and raise the lowest failing rank's error on
    every rank (that rank its own, the others the same ``InputError`` or a ``RuntimeError`` quoting any other), so
    that a failure on some ranks only leaves none waiting at a later collective. Returns this rank's result of
    ``work``. The cost of ``on_main``; a single process just runs ``work``."""
    return _shared(work, True, ctx or context())


def all_sum(values: Sequence[float], ctx: Context | None = None) -> list[float]:
    """The element-wise sum of ``values`` over the ranks (float64, on CPU)."""
    ctx = start(ctx=ctx)
    if not ctx.distributed:
        return [float(v) for v in values]
    import torch

    tensor = torch.tensor(list(values), dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def gather(obj: Any, ctx: Context | None = None) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    ctx = start(ctx=ctx)
    if not ctx.distributed:
        return [obj]
    import torch

    objects: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(objects, obj)
    return objects


def balanced_ranges(weights: Sequence[int], parts: int) -> list[range]:
    """``parts`` contiguous ranges of unit indices covering ``weights`` in order, each range's total weight as
    close to ``sum / parts`` as whole units allow (every cut at the prefix sum nearest its target); some ranges
    are empty when there are fewer units than parts."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    prefix = [0]
    for weight in weights:
        prefix.append(prefix[-1] + int(weight))
    total, cuts = prefix[-1], [0]
    for r in range(1, parts):
        target = total * r / parts
        at = bisect.bisect_left(prefix, target)
        if at > 0 and (at == len(prefix) or target - prefix[at - 1] <= prefix[at] - target):
            at -= 1  # the nearer of the two prefix sums around the target (ties: the earlier cut)
        cuts.append(min(max(at, cuts[-1]), len(weights)))
    cuts.append(len(weights))
    return [range(cuts[i], cuts[i + 1]) for i in range(parts)]


def part_path(output: str | Path, ctx: Context) -> Path:
    """Where rank ``ctx.rank`` writes its part of ``output``: beside it, named for the rank and world size."""
    output = Path(output)
    return output.with_name(f"{output.name}.part{ctx.rank}-of-{ctx.world_size}")


def concatenate(parts: Sequence[Path], output: Path) -> None:
    """Join ``parts`` byte for byte, in order, into ``output`` by ``atomic_write`` (its rules: a link written
    through, a replaced file's mode kept)."""
    with atomic_write(output, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)


def write_output(output: str | Path, write_part: Callable[[Path], Any],
                 join: Callable[[Sequence[Path], Path], Any] = concatenate, ctx: Context | None = None) -> Path:
    """Write ``output`` from every rank's share: ``write_part(path)`` writes this rank's part atomically, then rank
    0 ``join``s the parts in rank order into ``output`` and removes them (a single process: one part, or with the
    default join ``output`` itself, written by ``write_part``); every rank returns once the output exists, or
    raises the first failing rank's error in writing its part (``on_every``: each rank removes the part it wrote)
    or the join's (``on_main``: the parts are removed either way)."""
    output, ctx = Path(output), ctx or context()
    if not ctx.distributed and join is concatenate:
        write_part(output)
        return output
    part = part_path(output, ctx)
    try:
        on_every(lambda: write_part(part), ctx)  # a rank's failure (a full disk) stops every rank with the same line
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    parts = [part_path(output, Context(r, ctx.world_size, launched=ctx.launched)) for r in range(ctx.world_size)]

    def join_parts() -> None:
        try:
            join(parts, output)
        finally:
            for part in parts:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()

    on_main(join_parts, ctx)  # its failure (a full disk) stops every rank with the same line
    return output
