"""Comparison configs: parsing, presets, the generic validator, validation of every input before any work."""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.experiment.config import (
    PRESET_DIR,
    Config,
    EvaluationSection,
    FirstStageSection,
    ModelSpec,
    RerankSection,
    available_presets,
    describe_keys,
    load_config,
    sections,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pipeline" / "resources" / "sample"


def _config(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _models(tmp_path: Path) -> tuple[Path, Path]:
    """Two folders that look like transformers models (enough for the input checks)."""
    folders = []
    for name in ("teacher", "student"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        folders.append(folder)
    return folders[0], folders[1]


BASE = f"""
name = "t"
[data]
collection = "{SAMPLE / 'passages.tsv'}"
topics = "{SAMPLE / 'queries.tsv'}"
qrels = "{SAMPLE / 'qrels.tsv'}"
[first_stage]
index = "idx"
hits = 50
[rerank]
depth = 20
[teacher]
model = "./teacher"
[[students]]
name = "small"
model = "./student"
"""


def test_presets_are_shipped_and_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert set(available_presets()) == {"demo", "msmarco-subset", "msmarco-subset-hybrid", "msmarco-dev"}
    monkeypatch.chdir(tmp_path)  # a preset's paths are relative to the current folder, package: ones to the package
    demo = load_config("demo")
    assert demo.source == PRESET_DIR / "demo.toml" and PRESET_DIR == ROOT / "pipeline" / "resources" / "configs"
    assert demo.data.topics == str(SAMPLE / "queries.tsv")  # package:sample/queries.tsv
    assert demo.first_stage.index == tmp_path / "indexes" / "demo-sample"
    assert demo.teacher.model == str(tmp_path / "models" / "demo-teacher") and not demo.teacher.is_hub_name
    assert demo.rerank.depth == 30 and demo.first_stage.hits == 100
    assert demo.evaluation.significance_level == 0.05
    assert [s.name for s in demo.rerankers] == ["teacher-6L", "student-2L"]
    assert load_config(PRESET_DIR / "demo.toml") == demo  # the file itself: still a preset
    dev = load_config("msmarco-dev")
    assert dev.first_stage.prebuilt == "msmarco-v1-passage" and dev.rerank.depth == 1000
    assert dev.data.topics == "msmarco-passage-dev-subset"  # a named set stays a name
    assert dev.teacher.model == "castorini/monobert-large-msmarco" and dev.teacher.is_hub_name
    monkeypatch.chdir(ROOT)  # the subset's presets name the project's files: run from the project root
    subset = load_config("msmarco-subset")
    assert subset.data.qids == ROOT / "configs" / "dl20-heldout.qids" and subset.data.qids.is_file()
    assert subset.data.collection == ROOT.parent / "shared" / "data" / "msmarco-subset" / "collection.tsv"
    hybrid = load_config("msmarco-subset-hybrid")
    assert hybrid.first_stage.dense == ROOT / "indexes" / "msmarco-subset.minilm" and hybrid.data == subset.data


def test_package_paths_name_the_shipped_files_in_any_config(tmp_path: Path):
    text = BASE.replace(f'"{SAMPLE / "queries.tsv"}"', '"package:sample/queries.tsv"')
    assert load_config(_config(tmp_path, text)).data.topics == str(SAMPLE / "queries.tsv")


def test_relative_paths_defaults_and_output(tmp_path: Path):
    config = load_config(_config(tmp_path, BASE))
    assert config.first_stage.index == tmp_path / "idx"
    assert config.teacher.model == str(tmp_path / "teacher") and config.teacher.name == "teacher"
    assert config.first_stage.k1 == 0.9 and config.first_stage.b == 0.4 and config.rerank.device == "auto"
    evaluation = config.evaluation
    assert evaluation.measures == () and evaluation.significance_test == "t-test" and evaluation.permutations == 10_000
    assert config.output == (Path.cwd() / "runs" / "t").resolve()
    assert load_config(_config(tmp_path, BASE), output=tmp_path / "o").output == tmp_path / "o"
    qrels = {"1": {"a": 2, "b": 0}}
    graded = ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "R(rel=2)@1000", "AP(rel=2)")
    assert config.resolved_measures(qrels) == (graded, "nDCG@10")


def test_name_defaults_to_the_file_and_models_to_folders_or_hub_names(tmp_path: Path):
    text = BASE.replace('name = "t"\n', "").replace('model = "./student"', 'model = "owner/student"')
    config = load_config(_config(tmp_path, text, "my-run.toml"))
    assert config.name == "my-run"
    assert config.students[0].model == "owner/student" and config.students[0].is_hub_name  # no such folder: a hub name
    (tmp_path / "owner" / "student").mkdir(parents=True)
    assert load_config(_config(tmp_path, text, "my-run.toml")).students[0].model == str(tmp_path / "owner" / "student")


def test_a_config_can_start_from_a_preset(tmp_path: Path):
    path = _config(tmp_path, 'name = "mine"\npreset = "demo"\n[rerank]\ndepth = 10\n[[students]]\nmodel = "./s2"\n')
    config = load_config(path)
    assert config.name == "mine" and config.rerank.depth == 10 and config.first_stage.hits == 100
    assert config.data.topics == str(SAMPLE / "queries.tsv")  # from the preset (a package: path)
    assert [s.name for s in config.students] == ["s2"] and config.students[0].model == str(tmp_path / "s2")


@pytest.mark.parametrize(
    "change, message",
    [
        ('preset = "nope"\n', "unknown preset 'nope'; available presets: .*demo"),
        ("[extra]\nx = 1\n", r"unknown key\(s\) \['extra'\] in the top level"),
        ("[evaluation]\nalpha = 0.01\n", r"\[evaluation\] 'alpha' is now called 'significance_level'"),
        ('[evaluation]\nmeasures = ["nDCG@10", "Bogus@3"]\n', "unknown measure 'Bogus@3'"),
        ('[evaluation]\nmeasures = ["nDCG@10"]\nplot_measure = "RR@10"\n', "plot_measure 'RR@10' must be one of"),
        ('[evaluation]\nsignificance_test = "wilcoxon"\n', r"\[evaluation\] significance_test must be one of"),
        ("[evaluation]\nsignificance_level = 1.5\n", r"significance_level: must be between 0 and 1, not 1.5"),
    ],
)
def test_bad_configs_are_refused(tmp_path: Path, change: str, message: str):
    with pytest.raises(InputError, match=message):
        top, table = change.split("[", 1) if "[" in change else (change, "")
        load_config(_config(tmp_path, top + BASE + ("[" + table if table else "")))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("depth = 20", "depth = 80", r"rerank.depth \(80\) cannot exceed first_stage.hits \(50\)"),
        ("depth = 20", 'depth = "20"', r"\[rerank\] depth must be an integer, not '20'"),
        ("depth = 20", "depth = 0", r"\[rerank\] depth must be at least 1, not 0"),
        ("hits = 50", "hits = 50.5", r"\[first_stage\] hits must be an integer"),
        ('index = "idx"', 'index = "idx"\nprebuilt = "msmarco-v1-passage"', r"\[first_stage\] needs exactly one of"),
        ('index = "idx"', 'index = "idx"\nkind = "vector"', r"\[first_stage\] kind must be one of \['bm25', 'dense'"),
        ('index = "idx"', 'index = "idx"\ndense = "dense"', r"'dense' needs kind = \"dense\" or \"hybrid\""),
        ('index = "idx"', 'index = "idx"\nkind = "dense"\ndense = "d"', r"kind = \"dense\" needs 'dense'.* no BM25"),
        ('index = "idx"', 'index = "idx"\nkind = "hybrid"', r"kind = \"hybrid\" needs 'dense'"),
        ('index = "idx"', 'index = "idx"\nkind = "hybrid"\ndense = "d"\nfusion = "max"', r"fusion must be one of"),
        ('index = "idx"', 'index = "idx"\nkind = "hybrid"\ndense = "d"\nfaiss = "lsh"', r"faiss must be one of"),
        ('index = "idx"', 'index = "idx"\nalpha = 0.5', r"\[first_stage\] 'alpha' is now called 'fusion_weight'"),
        ('name = "small"', 'name = "teacher"', r"unique; repeated: \['teacher'\]"),
        ('name = "small"', 'name = "hybrid"', r"\[students\[0\]\] name 'hybrid' is a first stage's"),
        ('name = "small"', 'name = "bm25"', r"\[students\[0\]\] name 'bm25' is a first stage's"),
        ('name = "small"', 'name = "a/b"', r"\[students\[0\]\] name 'a/b' cannot name files"),
        ('name = "t"', 'name = ""', r"name '' cannot name files \(it must be set"),
        ("[rerank]", '[rerank]\ndevice = "tpu"', r"\[rerank\] device: unknown device 'tpu'"),
        ('qrels = "', 'qrels_file = "', r"unknown key\(s\) \['qrels_file'\] in \[data\]"),
        ('model = "./teacher"', 'description = "no model"', r"\[teacher\] needs 'model'"),
        ("[[students]]", "[[students]]\nx = 1", r"unknown key\(s\) \['x'\] in \[students\[0\]\]"),
        ("[[students]]", "[[students]]\ninterpolation = 1.5",
         r"\[students\[0\]\] interpolation: the weight must be between 0 and 1, not 1.5"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, old: str, new: str, message: str):
    with pytest.raises(InputError, match=message) as err:
        load_config(_config(tmp_path, BASE.replace(old, new, 1)))
    assert str(err.value).startswith(str(tmp_path / "c.toml"))  # every message names the config file


def test_invalid_toml_and_missing_file(tmp_path: Path):
    with pytest.raises(InputError, match="invalid TOML"):
        load_config(_config(tmp_path, "name = \n"))
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(InputError, match=r"at least one \[\[students\]\]"):
        load_config(_config(tmp_path, BASE.split("[[students]]")[0]))


def test_sections_validate_themselves_when_built_in_code():
    """The same rules hold for a config made in Python (or changed with ``replace``) as for one read from TOML."""
    assert RerankSection().depth == 100 and RerankSection(precision="bfloat16").precision == "bf16"  # alias named
    assert FirstStageSection(index="idx", k1=1).k1 == 1.0 and FirstStageSection(index="idx").index == Path("idx")
    assert EvaluationSection(measures=["nDCG@10"]).measures == ("nDCG@10",)
    with pytest.raises(InputError, match="depth must be at least 1"):
        RerankSection(depth=0)
    with pytest.raises(InputError, match="warmup_queries must be an integer, not True"):
        RerankSection(warmup_queries=True)
    fast = RerankSection(device="cuda", attention="sdpa-padded", compile="static", bucket=32, cuda_graphs=True)
    assert fast.token_cache and fast.bucket == 32 and RerankSection(device="cpu", precision="int8").precision == "int8"
    with pytest.raises(InputError, match="attention"):
        RerankSection(attention="flash")
    with pytest.raises(InputError, match="cuda_graphs needs a CUDA device"):
        RerankSection(device="cpu", cuda_graphs=True)
    with pytest.raises(InputError, match="int8 runs on the CPU only"):
        RerankSection(device="cuda", precision="int8")
    with pytest.raises(InputError, match="needs exactly one of"):
        FirstStageSection()
    hybrid = FirstStageSection(kind="hybrid", index="idx", dense="d", fusion="rrf")
    assert (hybrid.label, hybrid.rrf_k, hybrid.fusion_weight) == ("Hybrid", 60, 1.0)
    assert "fused by rrf (k=60)" in hybrid.description
    assert FirstStageSection(kind="dense", run="given.trec").description == "the run file `given.trec`"
    config = load_config("demo")
    with pytest.raises(InputError, match=r"rerank.depth \(500\) cannot exceed"):
        replace(config, rerank=replace(config.rerank, depth=500))
    assert ModelSpec(model="/models/teacher-6L").name == "teacher-6L"


def test_describe_keys_lists_every_key_of_every_section():
    text = describe_keys()
    assert list(sections()) == ["data", "teacher", "first_stage", "rerank", "students", "evaluation"]
    for where, cls in sections().items():
        assert f"[{where}]" in text
        for f in fields(cls):
            assert f"  {f.name}" in text and f.metadata["help"] in text
    assert "  depth = 100: rerank depth" in text and "  topics (required):" in text and "[[students]]" in text
    assert "  source" not in text  # not a TOML key
    assert isinstance(Config.__dataclass_fields__["rerank"].default_factory(), RerankSection)


def test_input_check_names_every_missing_input(tmp_path: Path):
    text = BASE.replace(str(SAMPLE / "qrels.tsv"), str(tmp_path / "no-qrels.tsv")).replace(
        str(SAMPLE / "passages.tsv"), str(tmp_path / "no-collection.tsv"))
    config = load_config(_config(tmp_path, text))
    with pytest.raises(InputError) as err:
        config.check_inputs()
    message = str(err.value)
    for expected in ("qrels file not found", "no index at", "collection not found",
                     "model folder of 'teacher' not found", "model folder of 'small' not found"):
        assert expected in message
    teacher, student = _models(tmp_path)
    config = load_config(_config(tmp_path, BASE))
    config.check_inputs()  # everything present (the index is built from the collection)
    (student / "config.json").unlink()
    with pytest.raises(InputError, match="'small' has no config.json"):
        config.check_inputs()
    dense = load_config(_config(tmp_path, BASE.replace('index = "idx"', 'kind = "dense"\ndense = "nothing-here"')))
    with pytest.raises(InputError, match="no dense index at .*nothing-here .make one with 'distilrank encode'"):
        dense.check_inputs()


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_online_preset_fails_fast_offline(monkeypatch, variable: str):
    """Either offline variable alone is enough: the config never probes the network then."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1" if name == variable else "0")
    monkeypatch.setattr("socket.create_connection", lambda *a, **k: pytest.fail("the network was probed"))
    config = load_config("msmarco-dev")
    with pytest.raises(InputError, match="needs the network for the prebuilt index 'msmarco-v1-passage'.*offline"):
        config.check_inputs()
