"""The same command on the same inputs gives the same run, even for a model folder without a ranking head: its
fresh head is drawn from a fixed seed (the caller's random state untouched), and a rerank journal names the model
and the head, so a killed rerank resumes to the bytes of an uninterrupted one and a resume with another model is
refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.defaults import SEED
from pipeline.errors import InputError
from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.engine import ScoringEngine
from pipeline.runtime.journal import identity

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent
QUERIES = ["what is a volcano", "piano keys", "coffee"]
PASSAGES = ["a volcano is a mountain that erupts", "the piano has black and white keys", "tea is not coffee"]

#: Runs the CLI (arguments after the first) in a child process that kills itself with SIGKILL (no clean-up of any
#: kind, as a real kill) once its journal holds as many finished chunks as the first argument says.
KILLED_AFTER = """
import os, signal, sys
from pipeline.runtime.journal import Journal
real = Journal.append
def append(journal, record):
    real(journal, record)
    if len(journal) == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
Journal.append = append
from pipeline.cli import main
sys.exit(main(sys.argv[2:]))
"""


def scores(encoder: CrossEncoder) -> np.ndarray:
    return ScoringEngine(encoder).score_pairs(QUERIES, PASSAGES)


def test_two_loads_of_a_headless_folder_score_alike_and_leave_the_callers_rng_alone(tmp_path, tiny_bert):
    folder = tiny_bert(tmp_path / "headless", labels=None)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = CrossEncoder(folder, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)  # the head came from its own seed, not the caller's stream
    assert first.new_head and (first.head_seed, first.head_init) == (SEED, f"seed {SEED}")
    np.testing.assert_array_equal(scores(CrossEncoder(folder, device="cpu")), scores(first))
    other = CrossEncoder(folder, device="cpu", head_seed=SEED + 1)
    assert not np.array_equal(scores(other), scores(first))
    from pipeline.train.recipes import load_encoder  # training draws the fresh head from its --seed

    np.testing.assert_array_equal(scores(load_encoder(folder, SEED + 1)), scores(other))
    saved = tiny_bert(tmp_path / "saved", labels=1)
    assert CrossEncoder(saved, device="cpu", head_seed=7).head_init == "saved"


def test_load_ranker_draws_a_headless_folders_head_from_its_seed_and_leaves_the_callers_rng_alone(tmp_path, tiny_bert):
    from pipeline.train.students import load_ranker, make_student

    folder = tiny_bert(tmp_path / "headless", labels=None)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = load_ranker(folder)
    assert torch.equal(torch.get_rng_state(), state)
    heads = [{name: w for name, w in model.state_dict().items() if name.startswith("classifier.")}
             for model in (first, load_ranker(folder), load_ranker(folder, seed=SEED + 1),
                           make_student(folder, 1, seed=SEED + 1))]
    assert heads[0] and heads[0].keys() == heads[1].keys() == heads[2].keys()
    assert all(torch.equal(heads[0][name], heads[1][name]) for name in heads[0])
    assert not torch.equal(heads[0]["classifier.weight"], heads[2]["classifier.weight"])
    assert all(torch.equal(heads[2][name], heads[3][name]) for name in heads[2])  # make_student passes its seed on
    assert torch.equal(torch.get_rng_state(), state)


def test_two_loads_of_the_packaged_minilm_score_alike(minilm_path):
    first, second = CrossEncoder(minilm_path, device="cpu"), CrossEncoder(minilm_path, device="cpu")
    assert first.new_head
    np.testing.assert_array_equal(scores(first), scores(second))


def test_a_killed_rerank_with_a_headless_model_resumes_to_the_bytes_of_an_uninterrupted_one(
        tmp_path, tiny_bert, tiny_data, capsys):
    from pipeline.io.data import DocStore, read_topics
    from pipeline.io.runs import Run
    from pipeline.rerank.stage import Reranker, rerank_file

    data = tiny_data(tmp_path / "data", queries=8, per_query=12)
    model = tiny_bert(tmp_path / "headless", labels=None)
    inputs = ["--run", str(data["run"]), "--topics", str(data["topics"]), "--collection", str(data["collection"])]
    options = ["--depth", "12", "--chunk-pairs", "12", "--device", "cpu", "--no-progress"]  # one query a chunk
    assert main(["rerank", *inputs, "--model", str(model), *options, "--output", str(tmp_path / "straight.trec")]) == 0

    output, journal = tmp_path / "killed.trec", tmp_path / "killed.trec.journal"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER, "3", "rerank", *inputs, "--model", str(model),
                             *options, "--output", str(output)], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not output.exists() and journal.read_bytes().count(b"\n") == 1 + 3  # the header and 3 chunks
    header = json.loads(journal.read_bytes().splitlines()[0])
    assert header["head"] == f"seed {SEED}" and header["model"] == identity(model)  # weights' content and head

    other = tiny_bert(tmp_path / "other", labels=1)  # another model folder: refused, one line naming the model
    capsys.readouterr()
    assert main(["rerank", *inputs, "--model", str(other), *options, "--output", str(output), "--resume"]) == 2
    err = capsys.readouterr().err  # (after transformers' own loading bar)
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith(f"distilrank: error: {journal}"), err
    assert f"model.path: the journal has '{model}', this run '{other}'" in last

    run, topics, docstore = Run.read(data["run"]), read_topics(data["topics"]), DocStore(data["collection"])
    sources = {"run": data["run"], "topics": data["topics"], "passages": data["collection"]}
    reseeded = Reranker(CrossEncoder(model, device="cpu", head_seed=SEED + 1), chunk_pairs=12, progress=False)
    with pytest.raises(InputError, match=f"head: the journal has 'seed {SEED}', this run 'seed {SEED + 1}'"):
        rerank_file(reseeded, run, topics, docstore, output, 12, sources, resume=True)

    assert journal.read_bytes().count(b"\n") == 1 + 3  # the refusals kept the journal
    assert main(["rerank", *inputs, "--model", str(model), *options, "--output", str(output), "--resume"]) == 0
    assert output.read_bytes() == (tmp_path / "straight.trec").read_bytes().replace(b" straight\n", b" killed\n")
    assert json.loads(Path(f"{output}.timing.json").read_text())["stages"][0]["resumed_queries"] == 3
    assert not journal.exists()
