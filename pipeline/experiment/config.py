"""Comparison configs: one dataclass per TOML section, defaults and help text written once, one validator.

A config names the data, the first stage, the teacher and the students, and how to evaluate::

    name = "msmarco-subset"            # reports go to runs/NAME/ (under the current folder; or set output)
    preset = "msmarco-subset"          # optional: start from a preset (available_presets) and override keys

    [data]
    collection = "../../shared/data/msmarco-subset/collection.tsv"   # optional with a prebuilt index
    topics = "../../shared/data/msmarco-subset/queries.dl20.tsv"     # a file or a Pyserini name
    # qids = "dl20-heldout.qids"      # optional: only these queries (ids one a line, or a topics TSV)
    qrels = "../../shared/data/msmarco-subset/qrels.dl20.tsv"

    [first_stage]
    index = "../indexes/msmarco-subset"   # built from data.collection when missing
    # prebuilt = "msmarco-v1-passage"     # or a Pyserini prebuilt index (online)
    # run = "../runs/dl20.bm25.trec"      # or a precomputed run (any retriever; needs data.collection, no Java)
    k1 = 0.82
    b = 0.68
    hits = 1000
    # kind = "hybrid"                     # or "dense"; default "bm25"
    # dense = "../indexes/msmarco-subset.minilm"   # a dense index folder (distilrank encode)
    # fusion = "rrf"                      # or "interpolation" (fusion_weight x BM25 + dense, each normalised)

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
    significance_level = 0.05

Every key, its default and its help are the fields of the section classes below (``describe_keys`` lists
them); the sections are the section-typed fields of ``Config``. Each section checks its own values when it
is made (``Section``: types and the field metadata ``min``, ``choices``, ``check``; then ``check()`` for rules
between fields), so a config built in code is held to the same rules as one read from TOML.

Relative paths are relative to the folder of the config file, except the default output folder
``runs/NAME``, which is under the current folder (``output = "..."`` or ``--output`` change it). The presets ship
inside the package (``PRESET_DIR``): their relative paths are relative to the current folder, where the indexes,
models and runs of a project are. In any config, ``package:REST`` names a file shipped with the package
(``RESOURCES``, e.g. ``package:sample/passages.tsv``, the embedded sample).
A model is a local folder or a Hugging Face hub name (``pipeline.hub.is_hub_name``; online or already in the
local cache). ``Config.check_inputs`` checks that every file, folder and model exists (and that the network
is there when the config needs it), so that a comparison fails before any work starts.
"""
from __future__ import annotations

import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_B, DEFAULT_HITS, DEFAULT_K1, FIRST_STAGES, RERANK_DEPTH
from ..errors import InputError, renamed
from ..eval.evaluate import default_measures, parse_measures
from ..eval.significance import DEFAULT_PERMUTATIONS, DEFAULT_SEED
from ..io.data import NAMED_QRELS, NAMED_TOPICS
from ..io.textfiles import read_text
from ..rerank.options import RuntimeOptions, check_interpolation
from ..retrieval.bm25 import index_present
from ..retrieval.embeddings import META as DENSE_META
from ..retrieval.faiss_index import KINDS as FAISS_KINDS
from ..retrieval.fusion import DEFAULT_FUSION_WEIGHT, DEFAULT_RRF_K, FUSIONS
from ..runtime.devices import precision_name
from ..runtime.hub import hub_cached, is_hub_name, online

#: The files shipped with the package (package data): the embedded sample and the presets. A config's path
#: ``package:REST`` names ``RESOURCES / REST``.
RESOURCES = Path(__file__).resolve().parents[1] / "resources"
PACKAGE_PATH = "package:"
#: Where the presets live: ``PRESET_DIR / NAME.toml`` is the preset ``NAME``.
PRESET_DIR = RESOURCES / "configs"
SIGNIFICANCE_TESTS = ("t-test", "randomisation")
#: How reports name the first stages (``FIRST_STAGES``).
FIRST_STAGE_LABELS = {"bm25": "BM25", "dense": "Dense", "hybrid": "Hybrid"}


def _help(text: str, **rules: Any) -> dict[str, Any]:
    """Field metadata: the help text and the rules the validator applies (``min``, ``choices``, ``check``,
    ``path``: how a relative path is resolved, ``formerly``: the key's old name, refused with a hint)."""
    return {"help": text, **rules}


def _probability(value: float) -> float:
    if not 0 < value < 1:
        raise InputError(f"must be between 0 and 1, not {value}")
    return value


def _file_name(value: str) -> str:
    """``value`` when it can name a file or folder (``runs/NAME``, ``NAME.trec``)."""
    if not value or any(c in value for c in "/\\") or value in (".", ".."):
        raise InputError(f"name {value!r} cannot name files (it must be set, without slashes)")
    return value


class Section:
    """Base of the config sections: every field checked against its type and metadata once the dataclass is made."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(f, getattr(self, f.name), hints[f.name]))
        self.check()

    def check(self) -> None:
        """Rules between fields (none by default)."""


@dataclass(frozen=True, kw_only=True)
class DataSection(Section):
    """[data]: the collection, the queries and their judgments."""

    topics: str = field(metadata=_help("topics TSV (qid<TAB>query) or a Pyserini name (online)",
                                       path=NAMED_TOPICS))
    qrels: str = field(metadata=_help("TREC qrels (qid 0 docid grade) or a Pyserini name (online)", path=NAMED_QRELS))
    collection: Path | None = field(default=None, metadata=_help(
        "collection TSV or JSONL: passage text, and the source of the index when it is missing", path="file"))
    qids: Path | None = field(default=None, metadata=_help(
        "only these queries: a file of query ids, one a line, or a topics TSV", path="file"))


@dataclass(frozen=True, kw_only=True)
class FirstStageSection(Section):
    """[first_stage]: where the candidates come from and how many. ``kind`` bm25 needs exactly one of index,
    prebuilt, run; dense needs dense (or run); hybrid needs index or prebuilt, and dense (or run)."""

    kind: str = field(default="bm25", metadata=_help(
        "bm25, dense (a bi-encoder over a faiss index) or hybrid (BM25 and dense fused)", choices=FIRST_STAGES))
    index: Path | None = field(default=None, metadata=_help(
        "a local Lucene index folder (built from data.collection when missing)", path="file"))
    prebuilt: str | None = field(default=None, metadata=_help("a Pyserini prebuilt index name (online)"))
    run: Path | None = field(default=None, metadata=_help(
        "a precomputed first-stage run file (any retriever; needs data.collection, no Java)", path="file"))
    k1: float = field(default=DEFAULT_K1, metadata=_help("BM25 k1", min=0))
    b: float = field(default=DEFAULT_B, metadata=_help("BM25 b", min=0))
    dense: Path | None = field(default=None, metadata=_help(
        "a dense index folder made by 'distilrank encode' (kind dense or hybrid)", path="file"))
    encoder: Path | None = field(default=None, metadata=_help(
        "the query encoder: the bi-encoder the dense index was encoded with (default: the one recorded in it)",
        path="file"))
    faiss: str | None = field(default=None, metadata=_help(
        "the faiss index searched (default: the first built of flat, hnsw, ivfpq; none built: exact search)",
        choices=FAISS_KINDS))
    ef_search: int | None = field(default=None, metadata=_help("HNSW search candidates (default: as built)", min=1))
    nprobe: int | None = field(default=None, metadata=_help("IVF lists searched (default: as built)", min=1))
    refine: int | None = field(default=None, metadata=_help(
        "re-score the top hits x refine exactly with the stored embeddings, for IVF-PQ (default: as built)", min=1))
    fusion: str = field(default=FUSIONS[0], metadata=_help(
        "hybrid fusion: interpolation (fusion_weight x BM25 + dense, each normalised, as Pyserini's) or rrf",
        choices=FUSIONS))
    fusion_weight: float = field(default=DEFAULT_FUSION_WEIGHT, metadata=_help(
        "hybrid interpolation: the weight of BM25's normalised score against the dense one's", min=0,
        formerly="alpha"))
    rrf_k: int = field(default=DEFAULT_RRF_K, metadata=_help("reciprocal rank fusion constant", min=0))
    hits: int = field(default=DEFAULT_HITS, metadata=_help("first-stage hits (candidates) kept per query", min=1))
    threads: int = field(default=1, metadata=_help("BM25 search and indexing threads, faiss search threads", min=1))

    def check(self) -> None:
        bm25 = sum(value is not None for value in (self.index, self.prebuilt))
        given = self.run is not None
        if given and (bm25 or self.dense is not None) or not given and self.kind == "bm25" and (
                bm25 != 1 or self.dense is not None):
            raise InputError("needs exactly one of 'index' (a local folder), 'prebuilt' (a Pyserini name) "
                             "or 'run' (a precomputed run file); 'dense' needs kind = \"dense\" or \"hybrid\" "
                             "(and no 'run')")
        if given:
            return
        if self.kind == "dense" and (bm25 or self.dense is None):
            raise InputError("kind = \"dense\" needs 'dense' (a dense index folder) or 'run', and no BM25 index")
        elif self.kind == "hybrid" and (bm25 != 1 or self.dense is None):
            raise InputError("kind = \"hybrid\" needs 'dense' (a dense index folder) and one of 'index' or "
                             "'prebuilt' (or a precomputed 'run')")

    @property
    def label(self) -> str:
        """How reports name this first stage."""
        return FIRST_STAGE_LABELS[self.kind]

    @property
    def description(self) -> str:
        """The first stage and its settings in a few words (reports)."""
        if self.run is not None:
            return f"the run file `{self.run.name}`"
        bm25 = f"BM25 (k1={self.k1}, b={self.b}) from `{Path(str(self.prebuilt or self.index)).name}`"
        dense = f"dense retrieval from `{self.dense.name if self.dense else ''}` (faiss {self.faiss or 'as built'})"
        fusion = f"weight {self.fusion_weight:g}" if self.fusion == "interpolation" else f"k={self.rrf_k}"
        return {"bm25": bm25, "dense": dense, "hybrid": f"{bm25} and {dense} fused by {self.fusion} ({fusion})"}[
            self.kind]


@dataclass(frozen=True, kw_only=True)
class RerankSection(Section, RuntimeOptions):
    """[rerank]: how every reranker runs (the same for all, so their speeds compare): the runtime options
    (``RuntimeOptions``: device, precision, batch_tokens, compile, attention, bucket, cuda_graphs, token_cache;
    token caches are built before the timed rounds) and the keys below."""

    depth: int = field(default=RERANK_DEPTH, metadata=_help(
        "rerank depth: candidates reranked per query (the rest keep their first-stage order)", min=1))
    max_length: int | None = field(default=None, metadata=_help(
        "tokens per (query, passage) pair (default: each model's saved setting)", min=1))
    warmup_queries: int = field(default=2, metadata=_help("queries through each reranker before timing", min=0))
    chunk_queries: int = field(default=0, metadata=_help(
        "queries per interleaved round (0: about one engine chunk of pairs, at least 10 rounds)", min=0))

    def check(self) -> None:
        if self.device == "cpu" and self.cuda_graphs:
            raise InputError("[rerank] cuda_graphs needs a CUDA device, but device is 'cpu'")
        if self.precision is not None and precision_name(self.precision) == "int8" and self.device.startswith("cuda"):
            raise InputError("[rerank] precision int8 runs on the CPU only; set device = 'cpu'")


@dataclass(frozen=True, kw_only=True)
class ModelSpec(Section):
    """[teacher] and each [[students]]: one reranker, its display name, its model and how it weighs the first stage."""

    model: str = field(metadata=_help("a model folder or a Hugging Face hub name", path="model"))
    name: str = field(default="", metadata=_help("the display name, also the run file's (default: the folder's name)"))
    description: str = field(default="", metadata=_help("one line for the report"))
    interpolation: float | None = field(default=None, metadata=_help(
        "this reranker's weight W against the first stage (rerank --interpolation): W x its score + (1 - W) x the "
        "first stage's, both min-max normalised per query (default: its score alone)",
        check=lambda weight: check_interpolation(weight, "the weight")))

    def check(self) -> None:
        if not self.model:
            raise InputError("'model' must name a folder or a Hugging Face hub name")
        name = self.name or Path(self.model).name
        if _file_name(name) in FIRST_STAGES:
            raise InputError(f"name {name!r} is a first stage's")
        object.__setattr__(self, "name", name)

    @property
    def is_hub_name(self) -> bool:
        return not Path(self.model).exists() and is_hub_name(self.model)


@dataclass(frozen=True, kw_only=True)
class EvaluationSection(Section):
    """[evaluation]: measures, significance tests and the plot."""

    measures: tuple[str, ...] = field(default=(), metadata=_help(
        "ir-measures names (default: the qrels' standard measures, graded or binary)"))
    plot_measure: str | None = field(default=None, metadata=_help(
        "the measure plotted and compared (default: the first)"))
    significance_test: str = field(default="t-test", metadata=_help(
        "the paired test behind the table's marks", choices=SIGNIFICANCE_TESTS))
    significance_level: float = field(default=0.05, metadata=_help(
        "a difference is marked significant when p < this", check=_probability, formerly="alpha"))
    permutations: int = field(default=DEFAULT_PERMUTATIONS, metadata=_help("permutations of the randomisation test",
                                                                           min=1))
    seed: int = field(default=DEFAULT_SEED, metadata=_help("seed of the randomisation test"))

    def check(self) -> None:
        parse_measures(self.measures)
        if self.plot_measure is not None:
            if self.measures and self.plot_measure not in self.measures:
                raise InputError(f"plot_measure {self.plot_measure!r} must be one of the measures "
                                 f"{list(self.measures)}")
            parse_measures([self.plot_measure])


@dataclass(frozen=True, kw_only=True)
class Config(Section):
    """A validated comparison config (all paths absolute, all values typed): the sections and where reports go."""

    name: str = field(default="", metadata=_help("names runs/NAME and the reports (default: the config file's name)"))
    data: DataSection = field(metadata=_help("[data]"))
    teacher: ModelSpec = field(metadata=_help("[teacher]"))
    first_stage: FirstStageSection = field(default_factory=FirstStageSection, metadata=_help("[first_stage]"))
    rerank: RerankSection = field(default_factory=RerankSection, metadata=_help("[rerank]"))
    students: tuple[ModelSpec, ...] = field(default=(), metadata=_help("[[students]]"))
    evaluation: EvaluationSection = field(default_factory=EvaluationSection, metadata=_help("[evaluation]"))
    output: Path | None = field(default=None, metadata=_help("the folder for runs and reports (default runs/NAME)",
                                                            path="file"))
    source: Path | None = field(default=None, compare=False, metadata=_help("the config file read", toml=False))

    def check(self) -> None:
        _file_name(self.name)
        if not self.students:
            raise InputError("at least one [[students]] table is needed")
        names = [spec.name for spec in self.rerankers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(f"reranker names must be unique; repeated: {repeated}")
        if self.rerank.depth > self.first_stage.hits:
            raise InputError(f"rerank.depth ({self.rerank.depth}) cannot exceed first_stage.hits "
                             f"({self.first_stage.hits})")
        object.__setattr__(self, "output", (self.output or Path("runs") / self.name).resolve())

    def resolved_measures(self, qrels: Mapping[str, Mapping[str, int]]) -> tuple[tuple[str, ...], str]:
        """The measures to report (the config's, else the qrels' standard ones) and the one to plot."""
        measures = self.evaluation.measures or tuple(default_measures(qrels))
        plot = self.evaluation.plot_measure or measures[0]
        return (measures if plot in measures else (*measures, plot)), plot

    @property
    def rerankers(self) -> tuple[ModelSpec, ...]:
        """The teacher, then the students."""
        return (self.teacher, *self.students)

    # ---- input checks -----------------------------------------------------------------------

    def input_paths(self) -> dict[str, Any]:
        """The files and folders the comparison reads, labelled by their keys: what it must never write."""
        data, first = self.data, self.first_stage
        return {"--config": self.source, "data.topics": data.topics, "data.qrels": data.qrels,
                "data.qids": data.qids, "data.collection": data.collection, "first_stage.run": first.run,
                "first_stage.index": first.index if first.index and index_present(first.index) else None,
                "first_stage.dense": first.dense, "first_stage.encoder": first.encoder,
                "model": [spec.model for spec in self.rerankers if not spec.is_hub_name]}

    def needs_network(self) -> list[str]:
        """What in this config must come from the network (unless already cached locally)."""
        data = self.data
        needs = []
        if self.first_stage.prebuilt:
            needs.append(f"the prebuilt index {self.first_stage.prebuilt!r}")
        if data.topics in NAMED_TOPICS and not Path(data.topics).exists():
            needs.append(f"the named topics {data.topics!r}")
        if data.qrels in NAMED_QRELS and not Path(data.qrels).exists():
            needs.append(f"the named qrels {data.qrels!r}")
        needs += [f"the model {m.model!r} (read as a Hugging Face hub name: no such folder)"
                  for m in self.rerankers if m.is_hub_name and not hub_cached(m.model)]
        return needs

    def check_inputs(self) -> None:
        """Every input present, or one ``InputError`` naming all that is missing (before any work)."""
        data, first = self.data, self.first_stage
        problems: list[str] = []
        remote = self.needs_network()
        if remote and not online():
            problems.append(
                "this config needs the network for " + ", ".join(remote) + ", but this machine is offline "
                "(HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set, or huggingface.co cannot be reached); use local "
                "files instead, e.g. the presets msmarco-subset or demo"
            )
        for label, value, names in (("topics", data.topics, NAMED_TOPICS), ("qrels", data.qrels, NAMED_QRELS)):
            if value not in names and not Path(value).is_file():
                problems.append(f"{label} file not found: {value}")
        if data.qids is not None and not data.qids.is_file():
            problems.append(f"query id file (data.qids) not found: {data.qids}")
        collection_ok = data.collection is not None and data.collection.exists()
        if first.run is not None:
            if not first.run.is_file():
                problems.append(f"first-stage run file not found: {first.run}")
            if not collection_ok or not data.collection.is_file():
                problems.append(f"first_stage.run needs data.collection for the passage text (not found: "
                                f"{data.collection})")
        else:
            if first.index is not None and not index_present(first.index) and not collection_ok:
                problems.append(f"no index at {first.index} and no collection to build it from"
                                + (f" (collection not found: {data.collection})" if data.collection else ""))
            if first.dense is not None and not (first.dense / DENSE_META).is_file():
                problems.append(f"no dense index at {first.dense} (make one with 'distilrank encode')")
            if first.encoder is not None and not (first.encoder / "config.json").is_file():
                problems.append(f"query encoder folder has no config.json: {first.encoder}")
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
            raise InputError("; ".join(problems), self.source)


# ---- the validator: types and metadata ----------------------------------------------------------------


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kinds(hint: Any) -> tuple[tuple[Any, ...], bool]:
    """The accepted types of an annotation, and whether ``None`` is one of them."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (hint,), False


def _label(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return f"a list of {_label(typing.get_args(kind)[0])}"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}.get(
        kind, getattr(kind, "__name__", str(kind)))


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (an int is a float, a string a path, a list a tuple); anything else is an error."""
    if typing.get_origin(kind) is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(name, item, typing.get_args(kind)[0]) for item in value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    elif isinstance(value, kind):
        return value
    raise InputError(f"{name} must be {_label(kind)}, not {value!r}")


def _checked(f: Field, value: Any, hint: Any) -> Any:
    """One field's value checked against its annotation and its metadata (``min``, ``choices``, ``check``)."""
    kinds, optional = _kinds(hint)
    if value is None:
        if optional:
            return None
        raise InputError(f"{f.name} must be set")
    value = _coerce(f.name, value, kinds[0])
    rules = f.metadata
    if "min" in rules and value < rules["min"]:
        raise InputError(f"{f.name} must be at least {rules['min']}, not {value}")
    if "choices" in rules and value not in rules["choices"]:
        raise InputError(f"{f.name} must be one of {list(rules['choices'])}, not {value!r}")
    if "check" in rules:
        try:
            value = rules["check"](value)
        except InputError as err:
            raise InputError(f"{f.name}: {err.message}") from None
    return value


def _keys(cls: type) -> dict[str, Field]:
    """The TOML keys of a section: its fields, less the ones not read from files."""
    return {f.name: f for f in fields(cls) if f.metadata.get("toml", True)}


def _section_type(hint: Any) -> tuple[type | None, bool]:
    """The section class of a field (or ``None``) and whether it is an array of tables (``[[students]]``)."""
    kind = _kinds(hint)[0][0]
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return (item, True) if is_dataclass(item) else (None, False)
    return (kind, False) if is_dataclass(kind) else (None, False)


def _build(cls: type, table: Any, where: str) -> Any:
    """A section from its TOML table: unknown and renamed keys refused, required keys asked for, sections nested."""
    label = f"[{where}]" if where else "the top level"
    if not isinstance(table, Mapping):
        raise InputError(f"{label} must be a table")
    keys = _keys(cls)
    new_names = {f.metadata["formerly"]: name for name, f in keys.items() if "formerly" in f.metadata}
    for key in table:
        if key in new_names:
            raise InputError(f"{label} {renamed(key, new_names[key], keys[new_names[key]].metadata['help'])}")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise InputError(f"unknown key(s) {unknown} in {label}; allowed: {sorted(keys)}")
    values: dict[str, Any] = {}
    for name, f in keys.items():
        section, many = _section_type(_hints(cls)[name])
        if name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                raise InputError(f"{label} needs {name!r}" + ("" if section else f" ({f.metadata['help']})"))
            if section is None or many:
                continue
        value = table.get(name, {})
        if section is not None and many:
            if not isinstance(value, list):
                raise InputError(f"[[{name}]] must be an array of tables")
            value = tuple(_build(section, item, f"{name}[{i}]") for i, item in enumerate(value))
        elif section is not None:
            value = _build(section, value, name)
        values[name] = value
    try:
        return cls(**values)
    except InputError as err:
        raise InputError(f"{label} {err.message}" if where else err.message) from None


def sections() -> dict[str, type]:
    """The TOML sections (``data``, ``first_stage``, ...) and their classes, in the order of ``Config``."""
    out = {}
    for name in _keys(Config):
        section, _ = _section_type(_hints(Config)[name])
        if section is not None:
            out[name] = section
    return out


def describe_keys() -> str:
    """Every config key with its default and help, section by section (``distilrank compare --keys``)."""
    lines = []
    for where, cls in {"": Config, **sections()}.items():
        many = where and _section_type(_hints(Config)[where])[1]
        lines.append(f"[[{where}]]" if many else f"[{where}]" if where else "top level (and preset = NAME)")
        for name, f in _keys(cls).items():
            if name in sections():
                continue
            if f.default is MISSING and f.default_factory is MISSING:
                name += " (required)"
            elif f.default not in (None, "", ()):
                name += f" = {f.default!r}"
            lines.append(f"  {name}: {f.metadata['help']}")
    return "\n".join(lines)


# ---- loading ------------------------------------------------------------------------------------


def available_presets() -> list[str]:
    """The preset names: the ``PRESET_DIR/*.toml`` files shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml")) if PRESET_DIR.is_dir() else []


def preset_path(name: str) -> Path:
    """``PRESET_DIR/NAME.toml``; an unknown name is an error listing the presets."""
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise InputError(f"unknown preset {name!r}; available presets: {', '.join(available_presets()) or 'none'}")
    return path


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise InputError("config file not found", path)
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"invalid TOML: {err}", path) from None


def _merge(base: dict, override: Mapping) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def _local_looking(model: str, folder: Path) -> bool:
    """A model string that means a folder: it exists, starts with ./ ../ / ~, or is no hub name."""
    return (folder / model).exists() or model.startswith((".", "/", "~")) or not is_hub_name(model)


def _paths_base(path: Path) -> Path:
    """Where the relative paths of the config file ``path`` (resolved) start: its own folder, or for a preset the
    current folder (the module docstring says why)."""
    return Path.cwd() if path.parent == PRESET_DIR else path.parent


def _resolve_table(table: dict, cls: type, folder: Path) -> dict:
    """The relative paths of one table made absolute against ``folder`` (``package:REST``: against ``RESOURCES``),
    following each field's ``path`` rule."""
    table = dict(table)
    for name, f in _keys(cls).items():
        rule, value = f.metadata.get("path"), table.get(name)
        if rule is None or not isinstance(value, str):
            continue
        if value.startswith(PACKAGE_PATH):
            table[name] = str((RESOURCES / value.removeprefix(PACKAGE_PATH)).resolve())
            continue
        if rule == "model" and not _local_looking(value, folder):
            continue
        if isinstance(rule, Mapping) and value in rule:  # a named set (topics, qrels)
            continue
        table[name] = str((folder / Path(value).expanduser()).resolve())
    return table


def _resolve_paths(raw: dict, folder: Path) -> dict:
    """Relative paths of a config file made absolute against ``folder`` (``_paths_base``; before merging)."""
    raw = _resolve_table(raw, Config, folder)
    for name, cls in sections().items():
        value = raw.get(name)
        if isinstance(value, dict):
            raw[name] = _resolve_table(value, cls, folder)
        elif isinstance(value, list):
            raw[name] = [_resolve_table(v, cls, folder) if isinstance(v, dict) else v for v in value]
    return raw


def load_raw(path: str | Path) -> tuple[dict, Path]:
    """A config file with its ``preset`` chain merged under it, paths resolved; ``path`` may be a preset name."""
    path = Path(path)
    if not path.exists() and path.suffix != ".toml" and "/" not in str(path):
        path = preset_path(str(path))
    path = path.resolve()
    raw = _resolve_paths(_read_toml(path), _paths_base(path))
    seen = {path}
    while "preset" in raw:
        preset = raw.pop("preset")
        if not isinstance(preset, str):
            raise InputError("'preset' must be a preset name (a string)", path)
        base_path = preset_path(preset).resolve()
        if base_path in seen:
            raise InputError(f"preset {preset!r} includes itself", path)
        seen.add(base_path)
        base = _resolve_paths(_read_toml(base_path), _paths_base(base_path))
        students = raw.get("students")
        raw = _merge(base, raw)
        if students is not None:
            raw["students"] = students  # a list replaces the preset's list
    return raw, path


def config_from_dict(raw: Mapping, source: Path | None = None, output: str | Path | None = None) -> Config:
    """Check keys, types and values of a parsed config (paths already absolute) and build ``Config``."""
    raw = dict(raw)
    if source is not None:
        raw.setdefault("name", source.stem)
    if output is not None:
        raw["output"] = str(output)
    try:
        return replace(_build(Config, raw, ""), source=source)
    except InputError as err:
        raise InputError(err.message, source) from None


def load_config(path: str | Path, output: str | Path | None = None) -> Config:
    """Read, merge (``preset``) and check a TOML config; ``path`` may also be a preset name."""
    raw, source = load_raw(path)
    return config_from_dict(raw, source, output)
