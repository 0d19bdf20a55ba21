"""Comparison configs: parsing, presets, validation of every input before any work."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import available_presets, load_config
from pipeline.errors import InputError

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
model = "teacher"
[[students]]
name = "small"
model = "student"
"""


def test_presets_are_shipped_and_load():
    assert {"demo", "msmarco-subset", "msmarco-dev"} <= set(available_presets())
    demo = load_config("demo")
    assert demo.source == ROOT / "configs" / "demo.toml"
    assert demo.topics == str(SAMPLE / "queries.tsv")  # relative to the config file
    assert demo.index == ROOT / "indexes" / "demo-sample"
    assert demo.depth == 30 and demo.hits == 100
    assert [s.name for s in demo.rerankers] == ["teacher-6L", "student-2L"]
    assert load_config(ROOT / "configs" / "demo.toml") == demo
    dev = load_config("msmarco-dev")
    assert dev.prebuilt == "msmarco-v1-passage" and dev.depth == 1000 and dev.topics == "msmarco-passage-dev-subset"
    assert dev.teacher.model == "castorini/monobert-large-msmarco" and dev.teacher.is_hub_name
    subset = load_config("msmarco-subset")
    assert subset.qids is not None and subset.qids.name.endswith(".qids")


def test_relative_paths_defaults_and_output(tmp_path: Path):
    config = load_config(_config(tmp_path, BASE))
    assert config.index == tmp_path / "idx"
    assert config.teacher.model == str(tmp_path / "teacher") and config.teacher.name == "teacher"
    assert config.k1 == 0.9 and config.b == 0.4 and config.device == "auto"
    assert config.measures == () and config.significance_test == "t-test" and config.permutations == 10_000
    assert config.output == (Path.cwd() / "runs" / "t").resolve()
    assert load_config(_config(tmp_path, BASE), output=tmp_path / "o").output == tmp_path / "o"
    qrels = {"1": {"a": 2, "b": 0}}
    assert config.resolved_measures(qrels) == (("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "R(rel=2)@1000", "AP(rel=2)"), "nDCG@10")


def test_a_config_can_start_from_a_preset(tmp_path: Path):
    path = _config(tmp_path, 'name = "mine"\npreset = "demo"\n[rerank]\ndepth = 10\n[[students]]\nmodel = "s2"\n')
    config = load_config(path)
    assert config.name == "mine" and config.depth == 10 and config.hits == 100
    assert config.topics == str(SAMPLE / "queries.tsv")  # from the preset, relative to the preset's file
    assert [s.name for s in config.students] == ["s2"] and config.students[0].model == str(tmp_path / "s2")


@pytest.mark.parametrize(
    "change, message",
    [
        ('preset = "nope"\n', "unknown preset 'nope'; available presets: .*demo"),
        ("[extra]\nx = 1\n", r"unknown key\(s\) \['extra'\]"),
        ('[evaluation]\nmeasures = ["nDCG@10", "Bogus@3"]\n', "unknown measure 'Bogus@3'"),
        ('[evaluation]\nmeasures = ["nDCG@10"]\nplot_measure = "RR@10"\n', "plot_measure 'RR@10' must be one of"),
        ('[evaluation]\nsignificance_test = "wilcoxon"\n', "significance_test must be one of"),
    ],
)
def test_bad_configs_are_refused(tmp_path: Path, change: str, message: str):
    with pytest.raises(InputError, match=message):
        load_config(_config(tmp_path, change.split("[")[0] + BASE + ("[" + change.split("[", 1)[1] if "[" in change else "")))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("depth = 20", "depth = 80", r"rerank.depth \(80\) cannot exceed first_stage.hits \(50\)"),
        ("depth = 20", 'depth = "20"', "depth must be int"),
        ('index = "idx"', 'index = "idx"\nprebuilt = "msmarco-v1-passage"', "exactly one of 'index'"),
        ('name = "small"', 'name = "teacher"', r"unique; repeated: \['teacher'\]"),
        ("[rerank]", '[rerank]\ndevice = "tpu"', "rerank.device must be one of"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, old: str, new: str, message: str):
    with pytest.raises(InputError, match=message):
        load_config(_config(tmp_path, BASE.replace(old, new, 1)))


def test_invalid_toml_and_missing_file(tmp_path: Path):
    with pytest.raises(InputError, match="invalid TOML"):
        load_config(_config(tmp_path, "name = \n"))
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(InputError, match=r"at least one \[\[students\]\]"):
        load_config(_config(tmp_path, BASE.split("[[students]]")[0]))


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


def test_online_preset_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config("msmarco-dev")
    with pytest.raises(InputError, match="needs the network for the prebuilt index 'msmarco-v1-passage'.*offline"):
        config.check_inputs()
