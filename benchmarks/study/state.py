"""The study's folder (``--state``), and what of it travels between GPU calls or machines (``--pack`` /
``--unpack``).

Layout: ``scale.json`` (the ``Scale``), ``rows/NAME.json`` (one a finished row or phase),
``logs/NAME.jsonl`` (the training logs), ``teacher/``, ``scores/teacher.scores``, ``work/NAME`` (a student in
progress, moved to ``students/NAME`` once its row is written), ``lm-distilled/KEY`` (an LM-distillation phase that
students agreeing on its settings share) and ``inputs/`` (derived from the input files on every call).
"""
from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import asdict, fields, replace
from pathlib import Path

from .design import STUDENTS, Scale

#: The device returns files of at most 16 MiB.
PACK_PART = 15 * 2**20
#: What later calls need, besides the teacher (packed in bf16).
PACKED = ("scale.json", "rows", "logs", "scores")


class State:
    """The study's folder: the scale, the rows, the logs, the teacher, its scores, the students in progress
    (``work/NAME``) and the finished ones (``students/NAME``, for ``compare`` and for use)."""

    def __init__(self, folder: Path, overrides: dict | None = None, sample: bool = False):
        """Open ``folder``: its saved scale, or for a new state ``Scale.sample()`` (``sample``) or ``Scale()`` with
        ``overrides`` (field -> value) applied and saved."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for sub in ("rows", "logs", "work", "students"):
            (folder / sub).mkdir(exist_ok=True)
        overrides = overrides or {}
        path = folder / "scale.json"
        if path.is_file():
            self.scale = Scale(**json.loads(path.read_text()))
            if overrides:
                print(f"the state {folder} keeps its scale; ignoring --"
                      + ", --".join(name.replace("_", "-") for name in overrides))
        else:
            self.scale = replace(Scale.sample() if sample else Scale(), **overrides)
            path.write_text(json.dumps(asdict(self.scale), indent=2))

    @staticmethod
    def overrides(values: dict) -> dict:
        """The ``Scale`` fields given in ``values`` (e.g. ``vars(args)``; None: not given)."""
        return {f.name: values[f.name] for f in fields(Scale) if values.get(f.name) is not None}

    def row(self, name: str) -> dict | None:
        """The saved row or phase result ``name``, if any and ``current``."""
        path = self.folder / "rows" / f"{name}.json"
        row = json.loads(path.read_text()) if path.is_file() else None
        return row if row is not None and current(name, row) else None

    def rows(self) -> dict[str, dict]:
        """Every saved row and phase result that is ``current``, by name."""
        rows = {p.stem: json.loads(p.read_text()) for p in sorted((self.folder / "rows").glob("*.json"))}
        return {name: row for name, row in rows.items() if current(name, row)}

    def save_row(self, name: str, row: dict) -> None:
        path = self.folder / "rows" / f"{name}.json"
        path.with_suffix(".tmp").write_text(json.dumps(row, indent=2))
        path.with_suffix(".tmp").rename(path)

    def student(self, name: str) -> Path:
        """Where the finished student ``name`` is kept."""
        return self.folder / "students" / name

    def lm_distilled(self, key: str) -> Path:
        """Where the finished LM-distillation phase with settings ``key`` is kept for every student that has it."""
        return self.folder / "lm-distilled" / key

    def log(self, name: str) -> Path:
        """Where the training log of ``name`` (a student, ``teacher-bootstrap``, ``teacher-lce``) is kept."""
        return self.folder / "logs" / f"{name}.jsonl"


def current(name: str, row: dict) -> bool:
    """Whether a saved row still describes the student the design names: a student's row saved under another
    definition of its lever (a default changed since) is not, and trains again when asked for."""
    if not name.startswith("student-") or "lever" not in row:
        return True
    lever = STUDENTS.get(name.removeprefix("student-"))
    return lever is not None and json.loads(json.dumps(lever)) == row["lever"]


def holds_files(folder: Path) -> bool:
    """Whether an earlier call left work in ``folder`` (then it resumes: finished phases skipped, an interrupted
    one continued from its checkpoint)."""
    return folder.is_dir() and any(folder.iterdir())


def pack(state: Path, out: Path, teacher: bool = True) -> list[Path]:
    """What later calls need (rows, logs, scores and, with ``teacher``, the teacher in bf16), gzipped, as
    ``study-state.tar.partNN`` in ``out``. Without the teacher it is what students that read only the teacher's
    scores train from (a few MB: small enough to carry to another machine)."""
    out.mkdir(parents=True, exist_ok=True)
    tar_path = out / "study-state.tar"
    with tarfile.open(tar_path, "w:gz", compresslevel=9) as tar:
        for item in PACKED:
            if (state / item).exists():
                tar.add(state / item, arcname=item)
        if teacher and (state / "teacher" / "model.safetensors").is_file():
            tmp = out / "teacher.tmp"
            _bf16_copy(state / "teacher", tmp)
            tar.add(tmp, arcname="teacher")
            shutil.rmtree(tmp)
    parts = []
    with open(tar_path, "rb") as src:
        while chunk := src.read(PACK_PART):
            parts.append(out / f"study-state.tar.part{len(parts):02d}")
            parts[-1].write_bytes(chunk)
    tar_path.unlink()
    return parts


def _bf16_copy(model: Path, target: Path) -> None:
    """The files of the model folder ``model`` into ``target``, its floating-point weights in bf16."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for item in model.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy2(item, target / item.name)
    weights = load_file(str(model / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
              str(target / "model.safetensors"), metadata={"format": "pt"})


def unpack(parts_dir: Path, state: Path) -> None:
    """Restore what ``pack`` wrote into ``state`` (the teacher folder replaced as a whole: removed when the pack
    has none)."""
    parts = sorted(parts_dir.glob("study-state.tar.part*"))
    if not parts:
        raise SystemExit(f"no study-state.tar.part* in {parts_dir}")
    state.mkdir(parents=True, exist_ok=True)
    tar_path = state / "study-state.tar"
    with open(tar_path, "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    shutil.rmtree(state / "teacher", ignore_errors=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(state, filter="data")
    tar_path.unlink()
