"""The training loop shared by every procedure: AdamW, linear warmup and decay, gradient
accumulation, autocast (bf16/fp16 on CUDA), seeding, a tqdm bar with the running loss, a JSONL log,
checkpoints (``save_pretrained`` + optimizer/scheduler/RNG state) and ``resume``.

The running loss is an exponential moving average with bias correction (``RunningMean``), so a short run
reports its recent steps, not its first. With an ``evaluator`` and ``eval_every``, held-out effectiveness is
measured before the first step, every ``eval_every`` steps and at the end: ``eval`` events in the log and a
learning-curve PNG beside it (``curves.py``). A resumed run first drops the log records of steps after its
checkpoint (they are trained again), so the log tells one run.

What a step computes lives in a ``Task`` (see ``tasks.py``): ``build(device)`` makes the trainable
modules and ``examples(epoch)`` the data. There is no global state: everything lives on the Trainer.

Under ``torchrun`` (``pipeline.distributed``) the same loop is data-parallel: ``batch_size`` is per process, so
the global batch is ``batch_size x world size``; every rank walks the same global batches and takes every
world-size-th example of each (``_micro_batches``), the trainable modules are wrapped in
``DistributedDataParallel`` (gradients averaged over the ranks), and each rank's loss is weighted so that the
averaged gradient is the gradient of the global batch's mean loss: the loss curve equals a single process's at
the same global batch (floating-point tolerance; with dropout, the masks differ). Rank 0 alone logs, saves and
checkpoints (with every rank's RNG state); ``resume`` needs the same number of processes.

Checkpoints survive a kill at any moment: a new one is written beside the last (``checkpoint.tmp/``, its state file
last) and swapped in by renames that leave a complete one in place throughout (``recover_checkpoint`` tidies a
swap stopped halfway); the final model appears whole (``config.json`` last). ``resume`` continues from the last
complete checkpoint, refuses one saved under options that change the result (``TrainConfig``'s ``result``
metadata; the first that differs is named), and refuses to start over when the log records a checkpoint that is
gone. A full disk is a one-line ``DiskFull`` that keeps the last checkpoint; under ``torchrun`` everything rank 0
writes alone (a checkpoint, the final model, each log record, a held-out evaluation with its learning curve) is
waited for with ``distributed.on_main``, so its failure stops every rank with the same line. That costs one
all-reduce of one number per write (every ``log_every`` steps, every evaluation, every checkpoint), none on a step
that writes nothing.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import InputError, one_line
from ..runtime import distributed
from ..runtime.atomic import atomic_write, scratch_dir, temp_glob
from ..runtime.devices import is_int8, resolve_device, resolve_dtype
from ..runtime.diskspace import size_of, space_checked
from ..runtime.progress import bar as progress_bar
from .curves import read_log
from .options import TrainConfig, plain, refuse_changed, result_fields

CHECKPOINT = "checkpoint"
#: A checkpoint being written, and the one it replaces while the new one is renamed into place.
CHECKPOINT_TMP, CHECKPOINT_OLD = CHECKPOINT + ".tmp", CHECKPOINT + ".old"
#: The final model is saved into a scratch folder named for this, then moved into the output.
FINAL = "model"
STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.jsonl"
CURVE_FILE = "learning_curve.png"
#: Held-out effectiveness of the modules in training (called in eval mode, under no gradient).
Evaluator = Callable[[dict[str, torch.nn.Module]], dict[str, float]]

log = logging.getLogger(__name__)


class Task(Protocol):
    """What the Trainer trains: modules, data and the loss of one micro-batch."""

    name: str

    def build(self, device: torch.device) -> dict[str, torch.nn.Module]:
        """The trainable modules on ``device``; ``"model"`` is the one saved with ``save_pretrained``."""

    def num_examples(self) -> int:
        """Examples (groups) in one epoch."""

    def examples(self, epoch: int) -> Iterator[Any]:
        """The examples of ``epoch`` in training order (deterministic under the task's seed)."""

    def loss(self, modules: dict[str, torch.nn.Module], examples: list,
             device: torch.device) -> tuple[torch.Tensor, dict]:
        """The mean loss over ``examples`` and extra metrics to log."""

    def save(self, modules: dict[str, torch.nn.Module], path: Path) -> None:
        """Save the trained model (``save_pretrained`` and the tokenizer) into ``path``."""


def autocast_dtype(precision: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training (weights stay fp32): bf16 by default on CUDA, none on CPU."""
    if is_int8(precision):
        raise InputError("int8 is a scoring precision (quantized linear layers); train in fp32 or bf16")
    dtype = resolve_dtype(precision, device)
    if dtype == torch.float16 and device.type != "cuda":
        raise InputError("fp16 training needs a CUDA device (use bf16 or fp32 on CPU)")
    return None if dtype == torch.float32 else dtype


class RunningMean:
    """An exponential moving average of the loss with Adam's bias correction: after ``k`` steps the weights
    ``(1 - beta) * beta**(k - i)`` of the steps sum to 1 (the first step weighs 3% after 25 steps at 0.98)."""

    def __init__(self, beta: float = 0.98):
        self.beta, self.average, self.steps = beta, 0.0, 0

    def update(self, value: float) -> float:
        self.steps += 1
        self.average = self.beta * self.average + (1 - self.beta) * value
        return self.value

    @property
    def value(self) -> float | None:
        return self.average / (1 - self.beta ** self.steps) if self.steps else None


def recover_checkpoint(output: Path) -> Path | None:
    """Tidy what an interrupted save left in ``output`` and return its complete checkpoint (None: there is none).

    A ``checkpoint.tmp/`` being written and an unfinished final save are removed; a swap stopped halfway leaves
    the new ``checkpoint/`` with the ``checkpoint.old/`` it replaces (removed), or only ``checkpoint.old/`` (put back
    in place). A checkpoint is complete when its state file, written last, is there."""
    final, old = output / CHECKPOINT, output / CHECKPOINT_OLD
    for stale in [output / CHECKPOINT_TMP, *output.glob(temp_glob(output / FINAL))]:
        shutil.rmtree(stale, ignore_errors=True)
    if (final / STATE_FILE).is_file():
        shutil.rmtree(old, ignore_errors=True)
    elif (old / STATE_FILE).is_file():
        shutil.rmtree(final, ignore_errors=True)
        old.rename(final)
        log.info("%s: the checkpoint being replaced when the run stopped is back in place", final)
    return final if (final / STATE_FILE).is_file() else None


def started(output: Path) -> bool:
    """Whether a training run has begun in ``output``: its log or a checkpoint is there."""
    return any((output / name).exists() for name in (LOG_FILE, CHECKPOINT, CHECKPOINT_OLD, CHECKPOINT_TMP))


class Trainer:
    """Runs a ``Task`` for ``config`` into ``output`` (log, checkpoint, final model); ``evaluator`` measures
    held-out effectiveness every ``config.eval_every`` steps."""

    def __init__(self, task: Task, output: str | Path, config: TrainConfig, device: str | torch.device = "auto",
                 evaluator: Evaluator | None = None):
        if config.batch_size < 1 or config.accumulation < 1 or config.batch_size < config.accumulation:
            raise InputError("batch size and accumulation must be >= 1, with batch size >= accumulation")
        if config.eval_every is not None and (config.eval_every < 1 or evaluator is None):
            raise InputError("eval_every needs an evaluator (held-out run, topics and qrels) and must be >= 1")
        self.task, self.output, self.config, self.evaluator = task, Path(output), config, evaluator
        self.device = resolve_device(device)
        self.dtype = autocast_dtype(config.precision, self.device)
        self.ctx = distributed.start(self.device)

    @property
    def global_batch(self) -> int:
        """Examples per optimizer step over all processes: ``batch_size`` x world size."""
        return self.config.batch_size * self.ctx.world_size

    # ---- schedule -------------------------------------------------------------------------------

    def _plan(self) -> tuple[int, int]:
        """(steps per epoch, total steps)."""
        n = self.task.num_examples()
        if n == 0:
            raise InputError(f"{self.task.name}: no training examples (see the counts above)")
        per_epoch = math.ceil(n / self.global_batch)
        total = per_epoch * self.config.epochs
        if self.config.max_steps:
            total = min(total, self.config.max_steps)
        return per_epoch, max(total, 1)

    def _base_lr(self) -> float:
        return self.config.epoch_lrs[0] if self.config.epoch_lrs else self.config.lr

    def _lr_lambda(self, per_epoch: int, total: int):
        cfg = self.config
        warmup = int(cfg.warmup * total)
        base = self._base_lr()

        def factor(step: int) -> float:
            epoch = min(step // per_epoch, cfg.epochs - 1)
            peak = (cfg.epoch_lrs[min(epoch, len(cfg.epoch_lrs) - 1)] / base) if cfg.epoch_lrs else 1.0
            if step < warmup:
                return peak * (step + 1) / (warmup + 1)
            return peak * max(0.0, (total - step) / max(1, total - warmup))

        return factor

    # ---- setup: modules, optimizer and data in one place ------------------------------------------

    def _setup(self):
        torch.manual_seed(self.config.seed)
        random.seed(self.config.seed)
        np.random.seed(self.config.seed)
        modules = self.task.build(self.device)
        if self.ctx.rank:  # dropout masks differ between ranks; rank 0 draws as a single process does
            torch.manual_seed(self.config.seed + self.ctx.rank)
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        lr = self._base_lr()
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr, fused=self.device.type == "cuda" or None)
        per_epoch, total = self._plan()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_lambda(per_epoch, total))
        return modules, optimizer, scheduler, per_epoch, total

    def _wrap(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
        """The modules the loss runs: each trainable one in ``DistributedDataParallel`` when there are several
        processes (the unwrapped ones are saved and checkpointed)."""
        if not self.ctx.distributed:
            return modules
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return {name: DistributedDataParallel(m, device_ids=ids) if any(p.requires_grad for p in m.parameters())
                else m for name, m in modules.items()}

    def _batches(self, epoch: int, skip: int) -> Iterator[list]:
        """The global batches of ``epoch`` after the first ``skip``."""
        batch: list = []
        done = 0
        for example in self.task.examples(epoch):
            batch.append(example)
            if len(batch) == self.global_batch:
                if done >= skip:
                    yield batch
                done += 1
                batch = []
        if batch and done >= skip:
            yield batch

    def _micro_batches(self, batch: list) -> list[tuple[list, float]]:
        """This rank's micro-batches of a global batch, each with the weight of its mean loss: its share of the
        global batch. Several processes: the rank's examples are ``batch[rank::world]``, and a micro-batch left
        empty runs one example at weight 0 (every rank must take part in each gradient exchange)."""
        cfg, ctx = self.config, self.ctx
        mine = batch[ctx.rank :: ctx.world_size]
        chunks = [mine[i :: cfg.accumulation] for i in range(cfg.accumulation)]
        if not ctx.distributed:
            return [(chunk, len(chunk) / len(batch)) for chunk in chunks if chunk]
        return [(chunk, len(chunk) / len(batch)) if chunk else (batch[:1], 0.0) for chunk in chunks]

    # ---- checkpoints ------------------------------------------------------------------------------

    @staticmethod
    def _rng_state() -> dict:
        return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def _save_checkpoint(self, modules, optimizer, scheduler, scaler, step: int, epoch: int, in_epoch: int) -> None:
        rngs = distributed.gather(self._rng_state(), self.ctx)
        distributed.on_main(lambda: self._write_checkpoint(modules, optimizer, scheduler, scaler, step, epoch,
                                                           in_epoch, rngs), self.ctx)

    def _write_checkpoint(self, modules, optimizer, scheduler, scaler, step: int, epoch: int, in_epoch: int,
                          rngs: list[dict]) -> None:
        """Write ``checkpoint.tmp/``, then swap it in: the old checkpoint renamed aside, the new one renamed into
        place, the old one removed, so that a complete checkpoint exists at every moment (``recover_checkpoint``).
        Ctrl-C or a full disk (``DiskFull``) removes the new one and keeps the last complete one."""
        tmp, final, old = (self.output / name for name in (CHECKPOINT_TMP, CHECKPOINT, CHECKPOINT_OLD))
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with space_checked(final, needed=size_of(final), written=lambda: size_of(tmp), whole=True):
                self.task.save(modules, tmp)
                state = {
                    "step": step, "epoch": epoch, "in_epoch": in_epoch, "config": asdict(self.config),
                    "modules": {k: m.state_dict() for k, m in modules.items() if k != "model"},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng_ranks": rngs, "world_size": self.ctx.world_size,
                }
                torch.save(state, tmp / STATE_FILE)  # last: a checkpoint with its state file is complete
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
            tmp.rename(final)
        except BaseException:
            if old.exists() and not final.exists():
                old.rename(final)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        self._log({"event": "checkpoint", "step": step})

    def _saved_step(self) -> int | None:
        """The step of the last checkpoint this run's log records (None: it saved none)."""
        path = self.output / LOG_FILE
        records = read_log(path) if path.is_file() else []
        steps = [r["step"] for r in records if r.get("event") == "checkpoint"]
        return steps[-1] if steps else None

    def _resume(self, modules, optimizer, scheduler, scaler) -> tuple[int, int, int]:
        """Where a resumed run continues: the last complete checkpoint (loaded), or step 0 for a run stopped before
        its first; a run whose log records a checkpoint that is gone or incomplete is refused, as is a folder that
        holds no run at all."""
        distributed.on_main(lambda: recover_checkpoint(self.output), self.ctx)
        folder = self.output / CHECKPOINT
        if (folder / STATE_FILE).is_file():
            return self._load_checkpoint(modules, optimizer, scheduler, scaler)
        saved = self._saved_step()
        if saved is not None:
            raise InputError(f"no complete checkpoint, but this run saved one at step {saved} ({LOG_FILE}): it was "
                             "deleted or damaged, so --resume cannot continue; start over with --overwrite", folder)
        if not (self.output / LOG_FILE).is_file():
            raise InputError("nothing to resume: no checkpoint in the output folder", folder)
        log.info("%s: stopped before its first checkpoint; training again from step 0", self.output)
        return 0, 0, 0

    def _load_checkpoint(self, modules, optimizer, scheduler, scaler) -> tuple[int, int, int]:
        """Load the checkpoint into the modules, optimizer, scheduler and RNGs; refused (``InputError``) when it is
        damaged, made by another number of processes or under options that change the result."""
        from safetensors.torch import load_file

        folder = self.output / CHECKPOINT
        try:
            state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
            weights = load_file(str(folder / "model.safetensors"))
        except Exception as exc:  # torch's and safetensors' errors of a damaged file vary
            raise InputError(f"damaged checkpoint ({one_line(exc)}); start over with --overwrite", folder) from None
        saved = state.get("config") or {}
        refuse_changed({f.name: plain(saved[f.name]) for f in result_fields(TrainConfig) if f.name in saved},
                       {f.name: plain(getattr(self.config, f.name)) for f in result_fields(TrainConfig)
                        if f.name in saved}, folder)
        made_by = state.get("world_size", 1)
        if made_by != self.ctx.world_size:
            raise InputError(f"the checkpoint was made by {made_by} process(es), this run has {self.ctx.world_size}: "
                             "resume with as many (the global batch and the data order depend on it)", folder)
        missing, unexpected = modules["model"].load_state_dict(weights, strict=False)
        if unexpected or [k for k in missing if "position_ids" not in k]:
            raise InputError(f"checkpoint does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})",
                             folder)
        for name, sd in state["modules"].items():
            modules[name].load_state_dict(sd)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        rng = state["rng_ranks"][self.ctx.rank] if "rng_ranks" in state else state["rng"]  # older checkpoints
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        return state["step"], state["epoch"], state["in_epoch"]

    # ---- the loop -----------------------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        """Append ``record`` to the log: rank 0's work, run within ``distributed.on_main``."""
        line = json.dumps(record) + "\n"
        with space_checked(self.output / LOG_FILE, needed=len(line)), \
                open(self.output / LOG_FILE, "a", encoding="utf-8") as out:
            out.write(line)

    def _trim_log(self, step: int) -> None:
        """Drop the records of steps after ``step`` (a resumed run trains them again): rank 0's work, like ``_log``."""
        path = self.output / LOG_FILE
        if path.is_file():
            records = read_log(path)
            kept = [r for r in records if r.get("event") in ("start", "resume") or r.get("step", 0) <= step]
            with atomic_write(path) as out:
                out.write("".join(json.dumps(r) + "\n" for r in kept))

    def _save_model(self, modules) -> None:
        """The trained model into ``output``, all or nothing: saved into a scratch folder there, its files moved
        into place with ``config.json`` (what marks a trained model) last."""
        with scratch_dir(self.output / FINAL) as work:
            with space_checked(self.output, written=lambda: size_of(work), whole=True):
                self.task.save(modules, work)
            for file in sorted(work.iterdir(), key=lambda f: f.name == "config.json"):
                os.replace(file, self.output / file.name)

    def _evaluate(self, modules, step: int) -> None:
        """Held-out effectiveness at ``step`` into the log, and the learning curve redrawn: rank 0's work, run within
        ``distributed.on_main`` (the other ranks wait for it, and its failure, a full disk, stops every rank)."""
        from .curves import plot_log

        for module in modules.values():
            module.eval()
        started = time.perf_counter()
        with torch.no_grad():
            scores = self.evaluator(modules)
        for module in modules.values():
            module.train()
        self._log({"event": "eval", "step": step, "examples": step * self.global_batch,
                   "seconds": round(time.perf_counter() - started, 3), **scores})
        plot_log(self.output / LOG_FILE, self.output / CURVE_FILE, title=self.task.name)

    def fit(self, resume: bool = False) -> dict:
        """Train; returns a summary (steps, final running loss, seconds). Saves the model into ``output``.

        ``steps`` counts every step of the run, ``steps_this_run`` those of this process (it resumed at step
        ``resumed_at``); ``seconds`` is this process's time."""
        cfg = self.config
        self.output.mkdir(parents=True, exist_ok=True)
        modules, optimizer, scheduler, per_epoch, total = self._setup()
        scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        step = epoch = in_epoch = 0
        if resume:
            step, epoch, in_epoch = self._resume(modules, optimizer, scheduler, scaler)

        def begin() -> None:  # rank 0: the log's first record of this process
            if resume:
                self._trim_log(step)
                self._log({"event": "resume", "step": step})
                return
            recover_checkpoint(self.output)  # a fresh start: an earlier run's state must not be resumed later
            shutil.rmtree(self.output / CHECKPOINT, ignore_errors=True)
            (self.output / LOG_FILE).unlink(missing_ok=True)
            self._log({"event": "start", "task": self.task.name, "device": str(self.device), "steps": total,
                       "steps_per_epoch": per_epoch, "examples": self.task.num_examples(), "config": asdict(cfg),
                       "world_size": self.ctx.world_size, "global_batch": self.global_batch})

        distributed.on_main(begin, self.ctx)
        for module in modules.values():
            module.train()
        train = self._wrap(modules)

        def autocast():
            return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

        bar = progress_bar(total=total, initial=step, desc=self.task.name,
                           enabled=cfg.progress if self.ctx.is_main else False)
        evaluate = self.evaluator is not None and cfg.eval_every is not None
        if evaluate and step == 0:
            distributed.on_main(functools.partial(self._evaluate, modules, 0), self.ctx)
        running, started, interrupted, first_step = RunningMean(), time.perf_counter(), False, step
        while step < total and not interrupted:
            for batch in self._batches(epoch, in_epoch):
                micro = self._micro_batches(batch)
                loss_value, metrics = 0.0, {}
                for i, (chunk, weight) in enumerate(micro):
                    with contextlib.ExitStack() as stack:
                        if i < len(micro) - 1:  # gradients are exchanged once, after the last micro-batch
                            for module in train.values():
                                if hasattr(module, "no_sync"):
                                    stack.enter_context(module.no_sync())
                        with autocast():
                            loss, metrics = self.task.loss(train, chunk, self.device)
                        # DistributedDataParallel averages over the ranks: scaled back to a sum of shares
                        scaled = loss * (weight * self.ctx.world_size)
                        (scaler.scale(scaled) if scaler else scaled).backward()
                    loss_value += float(loss.detach() * weight)
                if self.ctx.distributed:  # the global batch's mean loss, and each metric averaged over the ranks
                    names = sorted(metrics)
                    totals = distributed.all_sum([loss_value] + [float(metrics[k]) for k in names], self.ctx)
                    loss_value = totals[0]
                    metrics = {k: v / self.ctx.world_size for k, v in zip(names, totals[1:], strict=True)}
                if scaler:
                    scaler.unscale_(optimizer)
                params = [p for g in optimizer.param_groups for p in g["params"]]
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                in_epoch += 1
                if not math.isfinite(loss_value):
                    raise RuntimeError(f"{self.task.name}: loss is {loss_value} at step {step}; "
                                       "lower the learning rate")
                running.update(loss_value)
                bar.update(1)
                bar.set_postfix(loss=f"{running.value:.4f}")
                if step % cfg.log_every == 0 or step == total:  # rank 0 writes, the others wait (one all-reduce)
                    record = {"step": step, "epoch": epoch, "loss": loss_value, "running_loss": running.value,
                              "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 3),
                              **{k: float(v) for k, v in metrics.items()}}
                    distributed.on_main(functools.partial(self._log, record), self.ctx)
                if evaluate and (step % cfg.eval_every == 0 or step == total):
                    distributed.on_main(functools.partial(self._evaluate, modules, step), self.ctx)
                if step >= total:
                    break
                if (cfg.save_every and step % cfg.save_every == 0) or (cfg.stop_after and step >= cfg.stop_after):
                    self._save_checkpoint(modules, optimizer, scheduler, scaler, step, epoch, in_epoch)
                if cfg.stop_after and step >= cfg.stop_after:
                    interrupted = True
                    break
            else:
                epoch, in_epoch = epoch + 1, 0
                if epoch >= cfg.epochs:
                    break
                self._save_checkpoint(modules, optimizer, scheduler, scaler, step, epoch, in_epoch)
        bar.close()
        seconds = time.perf_counter() - started
        summary = {"task": self.task.name, "steps": step, "total_steps": total, "running_loss": running.value,
                   "seconds": round(seconds, 3), "complete": step >= total, "resumed_at": first_step,
                   "steps_this_run": step - first_step}

        def end() -> None:  # rank 0: the model saved, the end logged
            if step >= total:
                self._save_model(modules)
            self._log({"event": "end", **summary})
            if step >= total:  # finished, logged: the checkpoint goes last (a kill before: resumed)
                shutil.rmtree(self.output / CHECKPOINT, ignore_errors=True)

        distributed.on_main(end, self.ctx)  # every rank returns once the model is saved (or with its error)
        return summary
