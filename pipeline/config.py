"""Comparison configs: TOML files (``configs/*.toml``), presets, and validation of every input up front.

A config names the data, the first stage, the teacher and the students, and how to evaluate::

    name = "msmarco-subset"            # reports go to runs/NAME/ (under the current folder; or set output)
    preset = "msmarco-subset"          # optional: start from configs/PRESET.toml and override keys

    [data]
    collection = "../../shared/data/msmarco-subset/collection.tsv"   # optional with a prebuilt index
    topics = "../../shared/data/msmarco-subset/queries.dl20.tsv"     # a file or a Pyserini name
    # qids = "dl20-heldout.qids"      # optional: only these queries (ids one a line, or a topics TSV)
    qrels = "../../shared/data/msmarco-subset/qrels.dl20.tsv"

    [first_stage]
    index = "../indexes/msmarco-subset"   # built from data.collection when missing
    # prebuilt = "msmarco-v1-passage"     # or a Pyserini prebuilt index (online)
    # run = "../runs/dl20.bm25.trec"      # or a precomputed first-stage run (any retriever; needs data.collection, no Java)
    k1 = 0.82
    b = 0.68
    hits = 1000

    [rerank]
    depth = 100
    device = "auto"

    [teacher]
    name = "teacher"
    model = "../models/subset-teacher"

    [[students]]
    name = "student-2L-ranker-distill"
    model = "../models/subset-student-2L-ranker-distill"

    [evaluation]
    measures = ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@100"]

Relative paths are relative to the folder of the config file, except the default output folder
``runs/NAME``, which is under the current folder (``output = "..."`` or ``--output`` change it).
A model is a local folder or a Hugging Face hub name (``owner/name``, online or already in the local
cache). ``load_config`` checks the keys and values; ``Config.check_inputs`` checks that every file,
folder and model exists (and that the network is there when the config needs it) so that a
comparison fails before any work starts.
"""
from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import InputError

#: Where the presets live: ``configs/`` at the project root.
PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
SIGNIFICANCE_TESTS = ("t-test", "randomisation")


@dataclass(frozen=True)
class ModelSpec:
    """One reranker: its display name and its model (a folder path or a hub name)."""

    name: str
    model: str
    description: str = ""

    @property
    def is_hub_name(self) -> bool:
        return not Path(self.model).exists() and _looks_like_hub_name(self.model)


@dataclass(frozen=True)
class Config:
    """A validated comparison config (all paths absolute, all values typed)."""

    name: str
    source: Path | None
    topics: str
    qrels: str
    qids: Path | None  # optional: only these queries (a file of query ids, one a line, or a topics TSV)
    collection: Path | None
    index: Path | None
    prebuilt: str | None
    run: Path | None  # a precomputed first-stage run (any retriever) instead of BM25: needs no Java
    k1: float
    b: float
    hits: int
    threads: int
    depth: int
    device: str
    precision: str | None
    batch_tokens: int | None
    max_length: int | None
    warmup_queries: int
    chunk_queries: int  # queries per interleaved round; 0: about one engine chunk of pairs
    teacher: ModelSpec
    students: tuple[ModelSpec, ...]
    measures: tuple[str, ...]  # empty: the standard measures of the qrels (``default_measures``)
    plot_measure: str | None  # None: the first measure
    significance_test: str
    alpha: float
    permutations: int
    seed: int
    output: Path
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def resolved_measures(self, qrels: Mapping[str, Mapping[str, int]]) -> tuple[tuple[str, ...], str]:
        """The measures to report (the config's, else the qrels' standard ones) and the one to plot."""
        from .evaluate import default_measures

        measures = self.measures or tuple(default_measures(qrels))
        plot = self.plot_measure or measures[0]
        return (measures if plot in measures else (*measures, plot)), plot

    @property
    def rerankers(self) -> tuple[ModelSpec, ...]:
        """The teacher, then the students."""
        return (self.teacher, *self.students)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings."""
        out = asdict(self)
        out.pop("raw")
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}

    # ---- input checks -----------------------------------------------------------------------

    def needs_network(self) -> list[str]:
        """What in this config must come from the network (unless already cached locally)."""
        from .data import NAMED_QRELS, NAMED_TOPICS

        needs = []
        if self.prebuilt:
            needs.append(f"the prebuilt index {self.prebuilt!r}")
        if self.topics in NAMED_TOPICS and not Path(self.topics).exists():
            needs.append(f"the named topics {self.topics!r}")
        if self.qrels in NAMED_QRELS and not Path(self.qrels).exists():
            needs.append(f"the named qrels {self.qrels!r}")
        needs += [f"the model {m.model!r}" for m in self.rerankers if m.is_hub_name and not _hub_cached(m.model)]
        return needs

    def check_inputs(self) -> None:
        """Every input present, or one ``InputError`` naming all that is missing (before any work)."""
        problems: list[str] = []
        remote = self.needs_network()
        if remote and not _online():
            problems.append(
                "this config needs the network for " + ", ".join(remote) + ", but this machine is offline "
                "(HF_HUB_OFFLINE is set or huggingface.co cannot be reached); use local files instead, "
                "e.g. configs/msmarco-subset.toml or configs/demo.toml"
            )
        for label, value in (("topics", self.topics), ("qrels", self.qrels)):
            if not _is_named(value, label) and not Path(value).is_file():
                problems.append(f"{label} file not found: {value}")
        if self.qids is not None and not self.qids.is_file():
            problems.append(f"query id file (data.qids) not found: {self.qids}")
        if self.run is not None:
            if not self.run.is_file():
                problems.append(f"first-stage run file not found: {self.run}")
            if self.collection is None or not self.collection.is_file():
                problems.append(f"first_stage.run needs data.collection for the passage text (not found: {self.collection})")
        elif self.prebuilt is None:
            index_ok = self.index is not None and self.index.is_dir() and any(self.index.glob("segments_*"))
            if not index_ok and (self.collection is None or not self.collection.exists()):
                problems.append(
                    f"no index at {self.index} and no collection to build it from"
                    + (f" (collection not found: {self.collection})" if self.collection else "")
                )
        for spec in self.rerankers:
            if spec.is_hub_name:
                continue
            folder = Path(spec.model)
            if not folder.is_dir():
                problems.append(f"model folder of {spec.name!r} not found: {folder} "
                                "(train it with distilrank train / distill)")
            elif not (folder / "config.json").is_file():
                problems.append(f"model folder of {spec.name!r} has no config.json "
                                f"(not a transformers model): {folder}")
        if problems:
            where = f"{self.source}: " if self.source else ""
            raise InputError(where + "; ".join(problems))


# ---- loading ------------------------------------------------------------------------------------

_SECTIONS: dict[str, set[str]] = {
    "": {"name", "preset", "output", "data", "first_stage", "rerank", "teacher", "students", "evaluation"},
    "data": {"collection", "topics", "qrels", "qids"},
    "first_stage": {"index", "prebuilt", "run", "k1", "b", "hits", "threads"},
    "rerank": {"depth", "device", "precision", "batch_tokens", "max_length", "warmup_queries", "chunk_queries"},
    "teacher": {"name", "model", "description"},
    "students": {"name", "model", "description"},
    "evaluation": {"measures", "plot_measure", "significance_test", "alpha", "permutations", "seed"},
}


def available_presets() -> list[str]:
    """The preset names: the ``configs/*.toml`` files of the project."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml")) if PRESET_DIR.is_dir() else []


def preset_path(name: str) -> Path:
    """``configs/NAME.toml``; an unknown name is an error listing the presets."""
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise InputError(f"unknown preset {name!r}; available presets: {', '.join(available_presets()) or 'none'}")
    return path


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise InputError("config file not found", path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"invalid TOML: {err}", path) from None


def _merge(base: dict, override: Mapping) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def _resolve_paths(raw: dict, folder: Path) -> dict:
    """Relative paths of a config file made absolute against the file's folder (before merging)."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section, keys in (("data", ("collection", "topics", "qrels", "qids")), ("first_stage", ("index", "run"))):
        for key in keys:
            value = raw.get(section, {}).get(key)
            if isinstance(value, str) and not _is_named(value, key):
                raw[section][key] = str((folder / value).resolve())
    for key in ("output",):
        if isinstance(raw.get(key), str):
            raw[key] = str((folder / raw[key]).resolve())
    models = [raw.get("teacher", {})] + [s for s in raw.get("students", []) if isinstance(s, dict)]
    for spec in models:
        value = spec.get("model")
        if isinstance(value, str) and _local_looking(value, folder):
            spec["model"] = str((folder / value).resolve())
    if isinstance(raw.get("students"), list):
        raw["students"] = [dict(s) if isinstance(s, dict) else s for s in raw["students"]]
    return raw


def _local_looking(model: str, folder: Path) -> bool:
    """A model string that means a folder: it exists, or starts with ./ ../ / ~, or is not ``owner/name``."""
    return (folder / model).exists() or model.startswith((".", "/", "~")) or not _looks_like_hub_name(model)


def _looks_like_hub_name(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts)


def _is_named(value: str, key: str) -> bool:
    from .data import NAMED_QRELS, NAMED_TOPICS

    names = NAMED_TOPICS if key == "topics" else NAMED_QRELS if key == "qrels" else {}
    return value in names


def load_raw(path: str | Path) -> tuple[dict, Path]:
    """A config file with its ``preset`` chain merged under it, paths resolved; ``path`` may be a preset name."""
    path = Path(path)
    if not path.exists() and path.suffix != ".toml" and "/" not in str(path):
        path = preset_path(str(path))
    path = path.resolve()
    raw = _resolve_paths(_read_toml(path), path.parent)
    seen = {path}
    while "preset" in raw:
        preset = raw.pop("preset")
        if not isinstance(preset, str):
            raise InputError("'preset' must be a preset name (a string)", path)
        base_path = preset_path(preset).resolve()
        if base_path in seen:
            raise InputError(f"preset {preset!r} includes itself", path)
        seen.add(base_path)
        base = _resolve_paths(_read_toml(base_path), base_path.parent)
        students = raw.get("students")
        raw = _merge(base, raw)
        if students is not None:
            raw["students"] = students  # a list replaces the preset's list
    return raw, path


def _get(section: Mapping, key: str, kind: type | tuple, default: Any, where: str, path: Path | None) -> Any:
    value = section.get(key, default)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise InputError(f"{where}{key} must be {' or '.join(k.__name__ for k in kinds)}, not {value!r}", path)
    return value


def _check_keys(section: Mapping, allowed: set[str], where: str, path: Path | None) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise InputError(f"unknown key(s) {unknown} in [{where or 'top level'}]; allowed: {sorted(allowed)}", path)


def _model_spec(section: Any, where: str, path: Path | None) -> ModelSpec:
    if not isinstance(section, Mapping):
        raise InputError(f"[{where}] must be a table with 'name' and 'model'", path)
    _check_keys(section, _SECTIONS["students" if where.startswith("students") else "teacher"], where, path)
    model = _get(section, "model", str, None, f"{where}.", path)
    if not model:
        raise InputError(f"[{where}] needs 'model' (a folder or a Hugging Face hub name)", path)
    name = _get(section, "name", str, None, f"{where}.", path) or Path(model).name
    if not name or any(c in name for c in "/\\") or name in ("bm25", ".", ".."):
        raise InputError(f"[{where}] name {name!r} cannot name files (no slashes, not 'bm25')", path)
    return ModelSpec(name, model, _get(section, "description", str, "", f"{where}.", path))


def config_from_dict(raw: Mapping, source: Path | None = None, output: str | Path | None = None) -> Config:
    """Check keys, types and values of a parsed config (paths already absolute) and build ``Config``."""
    from .evaluate import _parse

    for section, allowed in _SECTIONS.items():
        table = raw if not section else raw.get(section, {})
        if section == "students":
            continue
        if not isinstance(table, Mapping):
            raise InputError(f"[{section}] must be a table", source)
        _check_keys(table, allowed, section, source)
    data, first, rerank = raw.get("data", {}), raw.get("first_stage", {}), raw.get("rerank", {})
    evaluation = raw.get("evaluation", {})
    name = _get(raw, "name", str, source.stem if source else None, "", source)
    if not name or any(c in name for c in "/\\"):
        raise InputError("'name' must be set and cannot contain slashes (it names runs/NAME)", source)
    topics = _get(data, "topics", str, None, "data.", source)
    qrels = _get(data, "qrels", str, None, "data.", source)
    if not topics or not qrels:
        raise InputError("[data] needs 'topics' and 'qrels'", source)
    collection = _get(data, "collection", str, None, "data.", source)
    qids = _get(data, "qids", str, None, "data.", source)
    index = _get(first, "index", str, None, "first_stage.", source)
    prebuilt = _get(first, "prebuilt", str, None, "first_stage.", source)
    first_run = _get(first, "run", str, None, "first_stage.", source)
    if sum(map(bool, (index, prebuilt, first_run))) != 1:
        raise InputError("[first_stage] needs exactly one of 'index' (a local folder), 'prebuilt' (a Pyserini name) "
                         "or 'run' (a precomputed run file)", source)
    from .retrieve import DEFAULT_B, DEFAULT_K1

    ints = {
        "hits": (_get(first, "hits", int, 1000, "first_stage.", source), 1),
        "threads": (_get(first, "threads", int, 1, "first_stage.", source), 1),
        "depth": (_get(rerank, "depth", int, 100, "rerank.", source), 1),
        "warmup_queries": (_get(rerank, "warmup_queries", int, 2, "rerank.", source), 0),
        "chunk_queries": (_get(rerank, "chunk_queries", int, 0, "rerank.", source), 0),
        "permutations": (_get(evaluation, "permutations", int, 10_000, "evaluation.", source), 1),
    }
    for key, (value, low) in ints.items():
        if value < low:
            raise InputError(f"{key} must be at least {low}, not {value}", source)
    if ints["depth"][0] > ints["hits"][0]:
        raise InputError(f"rerank.depth ({ints['depth'][0]}) cannot exceed first_stage.hits ({ints['hits'][0]})",
                         source)
    device = _get(rerank, "device", str, "auto", "rerank.", source)
    if device not in DEVICES and not device.startswith("cuda:"):
        raise InputError(f"rerank.device must be one of {list(DEVICES)} (or cuda:N), not {device!r}", source)
    precision = _get(rerank, "precision", str, None, "rerank.", source)
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"rerank.precision must be one of {list(PRECISIONS)}, not {precision!r}", source)
    teacher = _model_spec(raw.get("teacher"), "teacher", source)
    students_raw = raw.get("students", [])
    if not isinstance(students_raw, list) or not students_raw:
        raise InputError("at least one [[students]] table is needed", source)
    students = tuple(_model_spec(s, f"students[{i}]", source) for i, s in enumerate(students_raw))
    names = [teacher.name] + [s.name for s in students]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"reranker names must be unique; repeated: {dupes}", source)
    measures = _get(evaluation, "measures", list, [], "evaluation.", source)
    if not all(isinstance(m, str) for m in measures):
        raise InputError("evaluation.measures must be a list of ir-measures names", source)
    try:
        _parse(measures)
    except InputError as err:
        raise InputError(f"evaluation.measures: {err.message}", source) from None
    plot_measure = _get(evaluation, "plot_measure", str, None, "evaluation.", source)
    if plot_measure is not None and measures and plot_measure not in measures:
        raise InputError(f"evaluation.plot_measure {plot_measure!r} must be one of the measures {measures}", source)
    if plot_measure is not None:
        _parse([plot_measure])
    test = _get(evaluation, "significance_test", str, "t-test", "evaluation.", source)
    if test not in SIGNIFICANCE_TESTS:
        raise InputError(f"evaluation.significance_test must be one of {list(SIGNIFICANCE_TESTS)}, not {test!r}",
                         source)
    alpha = _get(evaluation, "alpha", float, 0.05, "evaluation.", source)
    if not 0 < alpha < 1:
        raise InputError(f"evaluation.alpha must be between 0 and 1, not {alpha}", source)
    batch_tokens = _get(rerank, "batch_tokens", int, None, "rerank.", source)
    max_length = _get(rerank, "max_length", int, None, "rerank.", source)
    if output is None:
        output = Path(raw["output"]) if isinstance(raw.get("output"), str) else Path("runs") / name
    return Config(
        name=name, source=source, topics=topics, qrels=qrels, qids=Path(qids) if qids else None,
        collection=Path(collection) if collection else None, index=Path(index) if index else None,
        prebuilt=prebuilt, run=Path(first_run) if first_run else None,
        k1=_get(first, "k1", float, DEFAULT_K1, "first_stage.", source),
        b=_get(first, "b", float, DEFAULT_B, "first_stage.", source),
        hits=ints["hits"][0], threads=ints["threads"][0], depth=ints["depth"][0], device=device,
        precision=precision, batch_tokens=batch_tokens, max_length=max_length,
        warmup_queries=ints["warmup_queries"][0], chunk_queries=ints["chunk_queries"][0],
        teacher=teacher, students=students, measures=tuple(measures), plot_measure=plot_measure,
        significance_test=test, alpha=alpha, permutations=ints["permutations"][0],
        seed=_get(evaluation, "seed", int, 0, "evaluation.", source), output=Path(output).resolve(), raw=dict(raw),
    )


def load_config(path: str | Path, output: str | Path | None = None) -> Config:
    """Read, merge (``preset``) and check a TOML config; ``path`` may also be a preset name."""
    raw, source = load_raw(path)
    return config_from_dict(raw, source, output)


# ---- network --------------------------------------------------------------------------------------


def _online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """False when the user asked for offline mode or ``host`` cannot be reached."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached(name: str) -> bool:
    """Whether a hub model's config is already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(name, "config.json")
    return isinstance(found, str)
