"""The wheel carries the package data (the presets, the embedded sample), and an installed copy finds its presets
from any folder: nothing is read from the checkout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["pipeline/resources/configs/demo.toml", "pipeline/resources/configs/msmarco-subset.toml",
           "pipeline/resources/configs/msmarco-subset-hybrid.toml", "pipeline/resources/configs/msmarco-dev.toml",
           "pipeline/resources/sample/passages.tsv", "pipeline/resources/sample/queries.tsv",
           "pipeline/resources/sample/qrels.tsv", "pipeline/resources/sample/queries.train.tsv",
           "pipeline/resources/sample/qrels.train.tsv", "pipeline/resources/sample/queries.unlabeled.tsv"]
CHECK = """
import json, pipeline
from pipeline.experiment.config import available_presets, load_config
demo = load_config("demo")
print(json.dumps({"package": pipeline.__file__, "presets": available_presets(), "source": str(demo.source),
                  "collection": str(demo.data.collection), "index": str(demo.first_stage.index)}))
"""


def test_wheel_ships_the_presets_and_an_unpacked_copy_finds_them(tmp_path: Path):
    source = tmp_path / "source"  # a copy: building in the checkout would write build/ and egg-info there
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--no-index", "--no-cache-dir", "-q", "-w", str(tmp_path / "dist")], check=True,
                   capture_output=True)
    wheel = next((tmp_path / "dist").glob("distilrank-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert set(SHIPPED) <= names, sorted(set(SHIPPED) - names)
        archive.extractall(tmp_path / "installed")

    elsewhere = tmp_path / "elsewhere"  # no configs/, no pipeline/ here
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "installed")}
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=elsewhere, env=env, capture_output=True, text=True,
                         check=True).stdout
    found = json.loads(out)
    installed = tmp_path / "installed" / "pipeline"
    assert found["package"] == str(installed / "__init__.py")  # the unpacked copy, not the checkout
    assert found["presets"] == ["demo", "msmarco-dev", "msmarco-subset", "msmarco-subset-hybrid"]
    assert found["source"] == str(installed / "resources" / "configs" / "demo.toml")
    assert found["collection"] == str(installed / "resources" / "sample" / "passages.tsv")
    assert found["index"] == str(elsewhere / "indexes" / "demo-sample")  # what the user makes: the current folder
