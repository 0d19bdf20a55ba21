"""Past one process: rerank and score under torchrun (2 processes, gloo), data-parallel training, a run killed
with SIGKILL that resumes from its journal, and a full disk on rank 0 (at a checkpoint, a log record, a learning
curve, the join of the ranks' parts) or on rank 1 (its part of the output), or an output another process writes,
which stops every rank. Every run here
uses one thread per process (torchrun's default): scores are then the same to the bit in one process and in two."""
from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.cli import main
from pipeline.runtime.outputs import claim_output
from pipeline.train.options import RANDOM_NEGATIVES

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
TRAIN_SCRIPT = Path(__file__).with_name("torchrun_train.py")


def _env() -> dict[str, str]:
    """The environment of a child process: this checkout first on the path, one thread, offline."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


def _torchrun(*args: str, timeout: int = 300, **env: str) -> None:
    done = subprocess.run([*TORCHRUN, *args], env={**_env(), **env}, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _inputs(data: dict[str, Path]) -> list[str]:
    return ["--run", str(data["run"]), "--topics", str(data["topics"]), "--collection", str(data["collection"])]


def test_two_processes_write_the_bytes_of_one(tmp_path, tiny_bert, tiny_data):
    """One process reads passage text; two processes start with no token cache, build it once (one builds, the
    other waits for it) and read token ids from it: the same bytes."""
    data = tiny_data(tmp_path / "data", queries=8, per_query=12)
    model = tiny_bert(tmp_path / "model")
    rerank = ["rerank", *_inputs(data), "--model", str(model), "--depth", "10", "--chunk-pairs", "20",
              "--device", "cpu", "--no-progress"]
    score = ["score", *_inputs(data), "--model", str(model), "--score-depth", "10", "--chunk-queries", "2",
             "--device", "cpu"]
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
    assert main([*rerank, "--output", str(tmp_path / "one" / "run.trec"), "--no-token-cache"]) == 0
    assert main([*score, "--output", str(tmp_path / "one" / "t.scores"), "--no-token-cache"]) == 0
    # Both commands in one torchrun job (as distill scores, then trains): the script calls the CLI twice.
    script = tmp_path / "both.py"
    script.write_text("import sys\nfrom pipeline.cli import main\n"
                      f"sys.exit(main({[*rerank, '--output', str(tmp_path / 'two' / 'run.trec')]!r}) or "
                      f"main({[*score, '--output', str(tmp_path / 'two' / 't.scores')]!r}))\n")
    cache = tmp_path / "cache"
    _torchrun(str(script), DISTILRANK_CACHE=str(cache))
    names = sorted(p.name for p in cache.iterdir())  # the docstore's offsets and one token cache; nothing else
    assert len(names) == 4 and sum(n.endswith(".offsets.npz") for n in names) == 1, names
    assert sum(".tokens-" in n for n in names) == 3 and not any(n.startswith(".") for n in names), names
    pairs = {"run.trec": 8 * 10, "t.scores": 8 * (10 + RANDOM_NEGATIVES)}  # score's random passages too
    for name in ("run.trec", "t.scores"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
        timing = json.loads((tmp_path / "two" / f"{name}.timing.json").read_text())["stages"][0]
        assert timing["world_size"] == 2 and [r["rank"] for r in timing["ranks"]] == [0, 1]
        assert all(r["pairs"] > 0 and r["wall_s"] > 0 for r in timing["ranks"])
        assert sum(r["pairs"] for r in timing["ranks"]) == timing["pairs"] == pairs[name]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        ["run.trec", "run.trec.timing.json", "t.scores", "t.scores.timing.json"])  # no parts, no journals left


def test_data_parallel_training_follows_one_process_at_the_same_global_batch(tmp_path, tiny_bert, tiny_data):
    from safetensors.torch import load_file

    data = tiny_data(tmp_path / "data", queries=8)
    model = tiny_bert(tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # dropout masks differ by rank
    (model / "config.json").write_text(json.dumps(config))
    driver = runpy.run_path(str(TRAIN_SCRIPT))
    driver["main"](data["topics"].parent, model, tmp_path / "one", 4)
    _torchrun(str(TRAIN_SCRIPT), str(data["topics"].parent), str(model), str(tmp_path / "two"), "2")

    def curve(folder: Path) -> list[float]:
        records = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        return [r["loss"] for r in records if "loss" in r]

    reference = curve(tmp_path / "one" / "full")
    assert len(reference) == 4  # 8 groups, 4 a step, 2 epochs
    lr = driver["config"](4).lr
    start = json.loads((tmp_path / "two" / "full" / "train_log.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2 and start["global_batch"] == 4 and start["steps"] == 4
    trained = load_file(str(tmp_path / "one" / "full" / "model.safetensors"))
    initial = load_file(str(model / "model.safetensors"))
    assert max(float((trained[k] - initial[k]).abs().max()) for k in initial) > 1e-4  # the weights did move
    for run in ("full", "resumed"):
        assert curve(tmp_path / "two" / run) == pytest.approx(reference, abs=1e-5)
        weights = load_file(str(tmp_path / "two" / run / "model.safetensors"))
        for name, tensor in trained.items():
            # A softmax over a group ignores a shift shared by the group, so LCE gives the classifier's bias no
            # gradient but float noise, which Adam turns into steps of up to lr: the bias is bounded by that.
            bound = len(reference) * lr if name == "classifier.bias" else 1e-5
            torch.testing.assert_close(weights[name], tensor, atol=bound, rtol=0)


def _stop(command: list[str], journal: Path, chunks: int, signum: int) -> tuple[int, str]:
    """Run the CLI in a child process, send it ``signum`` once ``journal`` holds ``chunks`` finished chunks; its
    exit code and stderr."""
    child = subprocess.Popen([sys.executable, "-m", "pipeline", *command], env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (journal.is_file() and journal.read_bytes().count(b"\n") >= 1 + chunks):  # header + chunk lines
        assert child.poll() is None and time.monotonic() < deadline, "the rerank ended before it was stopped"
        time.sleep(0.01)
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=60)
    return child.returncode, stderr


def test_a_stopped_or_killed_rerank_resumes_to_the_same_bytes(tmp_path, tiny_bert, tiny_data):
    data = tiny_data(tmp_path / "data", queries=30, per_query=10)
    model = tiny_bert(tmp_path / "model")
    args = ["rerank", *_inputs(data), "--model", str(model), "--depth", "10", "--chunk-pairs", "10",
            "--device", "cpu", "--no-progress"]  # one query a chunk
    assert main([*args, "--output", str(tmp_path / "straight.trec")]) == 0
    output, journal = tmp_path / "killed.trec", tmp_path / "killed.trec.journal"
    code, stderr = _stop([*args, "--output", str(output)], journal, 1, signal.SIGTERM)
    assert code == 143 and stderr.count("\n") == 1, stderr
    assert stderr.startswith("distilrank: terminated (SIGTERM); finished work is kept: the same command with --resume")
    assert journal.is_file() and sorted(p.name for p in tmp_path.glob("killed*")) == ["killed.trec.journal"]
    code, _ = _stop([*args, "--output", str(output), "--resume"], journal, journal.read_bytes().count(b"\n"),
                    signal.SIGKILL)
    done = journal.read_bytes().count(b"\n") - 1
    assert code == -signal.SIGKILL and not output.exists() and 2 <= done < 30
    assert main([*args, "--output", str(output)]) == 2  # a fresh run never overwrites a journal
    assert main([*args, "--output", str(output), "--depth", "5", "--resume"]) == 2  # made for another run
    assert main([*args, "--output", str(output), "--resume"]) == 0
    assert output.read_bytes() == (tmp_path / "straight.trec").read_bytes().replace(b" straight\n", b" killed\n")
    timing = json.loads((tmp_path / "killed.trec.timing.json").read_text())["stages"][0]
    assert timing["resumed_queries"] == done and timing["queries"] + timing["resumed_queries"] == 30
    assert not journal.exists()


def test_an_interrupted_score_resumes_to_the_same_bytes(tmp_path, tiny_bert, tiny_data, monkeypatch, capsys):
    """Ctrl-C while the third chunk is journaled (token cache on): exit 130, one line, the journal kept and no
    output; --resume writes the bytes of an uninterrupted run."""
    from pipeline.runtime.journal import Journal

    data = tiny_data(tmp_path / "data", queries=6, per_query=10)
    model = tiny_bert(tmp_path / "model")
    args = ["score", *_inputs(data), "--model", str(model), "--score-depth", "8", "--chunk-queries", "1",
            "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "straight.scores")]) == 0
    appended, real = [], Journal.append

    def interrupted_at_the_third(journal, record):
        if len(appended) == 2:
            raise KeyboardInterrupt  # Ctrl-C once the third chunk is scored
        appended.append(record)
        return real(journal, record)

    monkeypatch.setattr(Journal, "append", interrupted_at_the_third)
    output = tmp_path / "stopped.scores"
    capsys.readouterr()
    assert main([*args, "--output", str(output)]) == 130
    last = capsys.readouterr().err.splitlines()[-1]  # after the libraries' own loading bars
    assert last.startswith("distilrank: interrupted; finished work is kept")
    assert not output.exists() and Path(f"{output}.journal").read_bytes().count(b"\n") == 3  # header + 2 chunks
    monkeypatch.setattr(Journal, "append", real)
    assert main([*args, "--output", str(output), "--resume"]) == 0
    assert output.read_bytes() == (tmp_path / "straight.scores").read_bytes()
    timing = json.loads(Path(f"{output}.timing.json").read_text())["stages"][0]
    assert (timing["resumed_queries"], timing["queries"], timing["pairs"]) == (2, 4, 4 * (8 + RANDOM_NEGATIVES))
    assert timing["token_cache"] and sorted(p.name for p in tmp_path.glob("stopped*")) == [
        "stopped.scores", "stopped.scores.timing.json"]


def test_bad_input_found_while_scoring_drops_the_journal(tmp_path, tiny_bert, tiny_data, capsys):
    """A journal is kept for --resume after a signal, not after bad input (its inputs must change, and a journal
    of other inputs is refused): a docid the collection lacks, found in the third chunk, leaves nothing."""
    data = tiny_data(tmp_path / "data", queries=6, per_query=10)
    lines = data["run"].read_text().splitlines(keepends=True)
    qids = list(dict.fromkeys(line.split()[0] for line in lines))
    data["run"].write_text("".join(line.replace(" Q0 ", " Q0 nowhere-", 1) if line.split()[0] == qids[2] else line
                                   for line in lines))
    model = tiny_bert(tmp_path / "model")
    output = tmp_path / "out.scores"
    assert main(["score", *_inputs(data), "--model", str(model), "--score-depth", "8", "--chunk-queries", "1",
                 "--device", "cpu", "--output", str(output)]) == 2
    assert "not in the collection" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model"]


# ---- what rank 0 does alone, what every rank does, and their failures (``on_main``, ``on_every``) ----------------

#: Each rank runs ``on_main`` three times: work that succeeds, a full disk, and another error; then ``on_every`` four
#: times, the errors by rank: none, a full disk on rank 1, another error on rank 1, another error on rank 0 and a full
#: disk on rank 1. What it saw goes into ``OUT/RANK.json`` (``ON_MAIN.py OUT``).
ON_MAIN = """
import json, os, sys
from pathlib import Path
from pipeline.runtime import distributed
from pipeline.runtime.diskspace import DiskFull

rank, ran, outcomes = int(os.environ["RANK"]), [], []
FULL = DiskFull("no space left on the device (0 B free)", "out/checkpoint")
DENIED = PermissionError(13, "Permission denied")
for share, errors in [(distributed.on_main, (None, None)), (distributed.on_main, (FULL, None)),
                      (distributed.on_main, (DENIED, None)), (distributed.on_every, (None, None)),
                      (distributed.on_every, (None, FULL)), (distributed.on_every, (None, DENIED)),
                      (distributed.on_every, (DENIED, FULL))]:
    def work(error=errors[rank]):
        ran.append(rank)
        if error is not None:
            raise error
        return rank
    try:
        outcomes.append(share(work))
    except Exception as exc:
        outcomes.append([type(exc).__name__, str(exc)])
distributed.barrier()
Path(sys.argv[1], f"{rank}.json").write_text(json.dumps({"ran": ran, "outcomes": outcomes}))
"""


def test_on_main_and_on_every_raise_the_first_failing_ranks_error_on_every_rank(tmp_path):
    """``on_main`` runs on rank 0 alone, ``on_every`` on each rank (returning its result); a failure anywhere stops
    every rank with the lowest failing rank's error: that rank's own, a full disk whole elsewhere, any other error
    quoted in a ``RuntimeError`` naming its rank."""
    script = tmp_path / "on_main.py"
    script.write_text(ON_MAIN)
    _torchrun(str(script), str(tmp_path), timeout=120)
    seen = {rank: json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)}
    full = ["DiskFull", "out/checkpoint: no space left on the device (0 B free)"]
    denied = ["PermissionError", "[Errno 13] Permission denied"]
    quoted = "failed: PermissionError: [Errno 13] Permission denied"
    assert seen[0]["ran"] == [0] * 7 and seen[1]["ran"] == [1] * 4
    assert seen[0]["outcomes"] == [None, full, denied, 0, full, ["RuntimeError", f"rank 1 {quoted}"], denied]
    assert seen[1]["outcomes"] == [None, full, ["RuntimeError", f"rank 0 {quoted}"], 1, full, denied,
                                   ["RuntimeError", f"rank 0 {quoted}"]]


#: One rank of ``torchrun`` running ``distilrank``: ``RANK.py OUT MODE COMMAND_JSON [FLAGS]``. Its stderr goes to
#: ``OUT/stderr.MODE.RANK`` and the exit code the command returned to ``OUT/code.MODE.RANK`` (torchrun stops the
#: other ranks once one exits with an error, so a process's own exit code may be that SIGTERM's). Rank 0's disk fills
#: up as it writes, by MODE: ``full`` its second checkpoint's state file, ``log`` the log record of step 2, ``plot``
#: any learning curve, ``join`` the output joined from the ranks' parts (as it copies rank 1's part); ``part``: rank
#: 1's disk fills up as it writes its own part of a run file (after its first line).
RANK = """
import errno, json, os, sys
from pathlib import Path

out, mode, command = Path(sys.argv[1]), sys.argv[2], json.loads(Path(sys.argv[3]).read_text()) + sys.argv[4:]
rank = os.environ["RANK"]
os.dup2(os.open(out / f"stderr.{mode}.{rank}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
if mode == "log" and rank == "0":
    import pipeline.train.trainer as trainer

    class Log:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, text):
            if text.startswith('{"step": 2,'):
                raise FULL
            return self.file.write(text)

    trainer.open = lambda *args, **kwargs: Log(open(*args, **kwargs))
if mode == "plot" and rank == "0":
    from matplotlib.figure import Figure

    def savefig(self, *args, **kwargs):
        raise FULL

    Figure.savefig = savefig
if mode == "full" and rank == "0":
    import torch

    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        if str(f).endswith("checkpoint.tmp/trainer_state.pt"):
            saves.append(f)
            if len(saves) == 2:
                raise FULL
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
if mode == "join" and rank == "0":
    import shutil

    real_copy = shutil.copyfileobj

    def copyfileobj(src, dst, *args):
        if getattr(src, "name", "").endswith(".part1-of-2"):
            raise FULL
        return real_copy(src, dst, *args)

    shutil.copyfileobj = copyfileobj
if mode == "part" and rank == "1":
    from pipeline.io.runs import Run

    real_lines = Run.lines

    def lines(self, *args, **kwargs):
        for number, line in enumerate(real_lines(self, *args, **kwargs)):
            if number == 1:
                raise FULL
            yield line

    Run.lines = lines
from pipeline.cli import main

code = main(command)
(out / f"code.{mode}.{rank}").write_text(str(code))
sys.exit(code)
"""


def _ranks(out: Path, mode: str, *flags: str, timeout: int = 300) -> dict[int, tuple[int, str]]:
    """Run ``out/command.json`` under torchrun (2 ranks, ``RANK``); each rank's exit code and stderr. A run that
    outlasts ``timeout`` (a rank waiting for another) is stopped and fails the test."""
    child = subprocess.Popen([*TORCHRUN, str(out / "rank.py"), str(out), mode, str(out / "command.json"), *flags],
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.terminate()  # torchrun stops its ranks
        try:
            log, _ = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            log, _ = child.communicate()
        pytest.fail(f"still running after {timeout} s: a rank waits for another\n{log[-3000:]}")
    ranks = {}
    for rank in (0, 1):
        code = out / f"code.{mode}.{rank}"
        assert code.is_file(), f"rank {rank} did not finish its command\n{log[-3000:]}"
        ranks[rank] = (int(code.read_text()), (out / f"stderr.{mode}.{rank}").read_text())
    return ranks


def _stopped_by_a_full_disk(ranks: dict[int, tuple[int, str]], path: Path) -> None:
    """Every rank returned 2 with the same one line: ``path``'s disk is full, ``--resume`` continues."""
    for rank, (code, stderr) in ranks.items():
        assert code == 2 and stderr.count("\n") == 1, (rank, stderr)
        assert stderr.startswith(f"distilrank: error: {path}: no space left on the device ("), (rank, stderr)
        assert stderr.endswith("free some space and run the command again with --resume: finished work is kept\n")
    assert ranks[0][1] == ranks[1][1]


def _train_command(tmp_path: Path, tiny_bert, tiny_data, *flags: str, heldout: bool = False) -> Path:
    """Write ``tmp_path/command.json`` (train a teacher: 4 steps of 2 groups, a checkpoint after each but the last;
    with ``heldout``, evaluated on the training queries' top 4 before step 1, after step 2 and at the end; ``flags``
    added) and ``rank.py``; the output folder."""
    data = tiny_data(tmp_path / "data", queries=8)
    output = tmp_path / "teacher"
    evaluation = ["--eval-every", "2", "--eval-depth", "4", "--eval-run", str(data["run"]), "--eval-topics",
                  str(data["topics"]), "--eval-qrels", str(data["qrels"])] if heldout else []
    (tmp_path / "command.json").write_text(json.dumps([
        "train", "--init", str(tiny_bert(tmp_path / "model")), "--topics", str(data["topics"]), "--qrels",
        str(data["qrels"]), "--run", str(data["run"]), "--collection", str(data["collection"]), "--output",
        str(output), "--negatives", "3", "--batch-size", "1", "--max-steps", "4", "--save-every", "1",
        "--max-length", "48", "--device", "cpu", "--no-progress", *evaluation, *flags]))
    (tmp_path / "rank.py").write_text(RANK)
    return output


def test_a_full_disk_on_rank_0_at_a_checkpoint_stops_every_rank_and_keeps_the_last(tmp_path, tiny_bert, tiny_data):
    """Rank 0's disk fills up as it writes the second checkpoint: every rank stops with the same one line naming
    the checkpoint and exit code 2 (none is left waiting for rank 0), the first checkpoint is kept whole, and the
    same command with --resume continues from it to the end."""
    output = _train_command(tmp_path, tiny_bert, tiny_data)  # saves at steps 1, 2, 3
    _stopped_by_a_full_disk(_ranks(tmp_path, "full"), output / "checkpoint")
    assert sorted(p.name for p in output.iterdir()) == ["checkpoint", "distilrank_options.json", "train_log.jsonl"]
    state = torch.load(output / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert (state["step"], state["world_size"]) == (1, 2)
    ranks = _ranks(tmp_path, "resume", "--resume")
    assert [code for code, _ in ranks.values()] == [0, 0]
    assert not any("error:" in stderr or "Traceback" in stderr for _, stderr in ranks.values()), ranks
    events = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [(e["event"], e["step"]) for e in events if e.get("event") in ("checkpoint", "resume")] == [
        ("checkpoint", 1), ("resume", 1), ("checkpoint", 2), ("checkpoint", 3)]
    assert (output / "model.safetensors").is_file() and not (output / "checkpoint").exists()


def test_a_full_disk_on_rank_0_at_a_log_record_or_a_learning_curve_stops_every_rank(tmp_path, tiny_bert, tiny_data):
    """Rank 0's disk fills up as it appends the loss of step 2 to the log, then (resumed) as it draws the learning
    curve after step 2's evaluation: each time every rank stops with the same one line naming that file and exit
    code 2 (none is left waiting at the next gradient exchange), and the checkpoint of step 1 is kept; resumed once
    more, the run finishes with a log that tells one run."""
    output = _train_command(tmp_path, tiny_bert, tiny_data, "--log-every", "1", heldout=True)
    _stopped_by_a_full_disk(_ranks(tmp_path, "log"), output / "train_log.jsonl")
    state = torch.load(output / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 1 and (output / "learning_curve.png").is_file()  # drawn after the evaluation at step 0
    _stopped_by_a_full_disk(_ranks(tmp_path, "plot", "--resume"), output / "learning_curve.png")
    assert torch.load(output / "checkpoint" / "trainer_state.pt", weights_only=False)["step"] == 1
    ranks = _ranks(tmp_path, "resume", "--resume")
    assert [code for code, _ in ranks.values()] == [0, 0]
    assert not any("error:" in stderr or "Traceback" in stderr for _, stderr in ranks.values()), ranks
    events = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [(e.get("event", "loss"), e.get("step")) for e in events] == [
        ("start", None), ("eval", 0), ("loss", 1), ("checkpoint", 1), ("resume", 1), ("resume", 1), ("loss", 2),
        ("eval", 2), ("checkpoint", 2), ("loss", 3), ("checkpoint", 3), ("loss", 4), ("eval", 4), ("end", None)]
    assert (output / "model.safetensors").is_file() and not (output / "checkpoint").exists()


def _rerank_command(tmp_path: Path, tiny_bert, tiny_data) -> Path:
    """Write ``tmp_path/command.json`` (rerank 4 queries' top 5, in chunks of 10 pairs: one chunk per rank) and
    ``rank.py``; the output file."""
    data = tiny_data(tmp_path / "data", queries=4, per_query=6)
    output = tmp_path / "out" / "run.trec"
    (tmp_path / "command.json").write_text(json.dumps([
        "rerank", *_inputs(data), "--model", str(tiny_bert(tmp_path / "model")), "--depth", "5", "--chunk-pairs",
        "10", "--device", "cpu", "--no-progress", "--output", str(output)]))
    (tmp_path / "rank.py").write_text(RANK)
    return output


def test_a_full_disk_on_rank_0_as_it_joins_the_parts_stops_every_rank(tmp_path, tiny_bert, tiny_data):
    """Rank 0's disk fills up as it joins the ranks' parts of a rerank: every rank stops with the same one line
    naming the output and exit code 2 (none is left waiting for the join), nothing is at the output's name and the
    parts are gone, the journals are kept, and the same command with --resume writes the output from them."""
    output = _rerank_command(tmp_path, tiny_bert, tiny_data)
    _stopped_by_a_full_disk(_ranks(tmp_path, "join"), output)
    journals = ["run.trec.rank0-of-2.journal", "run.trec.rank1-of-2.journal"]
    assert sorted(p.name for p in output.parent.iterdir()) == journals
    ranks = _ranks(tmp_path, "resume", "--resume")
    assert [code for code, _ in ranks.values()] == [0, 0], ranks
    assert sorted(p.name for p in output.parent.iterdir()) == ["run.trec", "run.trec.timing.json"]
    assert len(output.read_text().splitlines()) == 4 * 6


def test_a_full_disk_on_rank_1_as_it_writes_its_part_stops_every_rank(tmp_path, tiny_bert, tiny_data):
    """Rank 1's disk fills up as it writes its part of a rerank (rank 0's part is written): every rank stops with the
    same one line naming rank 1's part and exit code 2 (rank 0 is not left waiting for it), nothing is at the
    output's name and no part or temporary file is left, the journals are kept, and the same command with --resume
    writes the bytes of one process."""
    output = _rerank_command(tmp_path, tiny_bert, tiny_data)
    _stopped_by_a_full_disk(_ranks(tmp_path, "part"), output.with_name("run.trec.part1-of-2"))
    assert sorted(p.name for p in output.parent.iterdir()) == ["run.trec.rank0-of-2.journal",
                                                               "run.trec.rank1-of-2.journal"]
    ranks = _ranks(tmp_path, "resume", "--resume")
    assert [code for code, _ in ranks.values()] == [0, 0], ranks
    assert sorted(p.name for p in output.parent.iterdir()) == ["run.trec", "run.trec.timing.json"]
    alone = tmp_path / "alone" / "run.trec"
    assert main([*json.loads((tmp_path / "command.json").read_text())[:-1], str(alone)]) == 0
    assert output.read_bytes() == alone.read_bytes()


def test_an_output_another_process_writes_stops_every_rank(tmp_path, tiny_bert, tiny_data):
    """Rank 0 cannot take the output's lock (this test holds it, as another run writing the output would): every
    rank stops with the same one line naming the output and the holder, exit code 2, none left waiting for rank 0;
    nothing is written."""
    output = _rerank_command(tmp_path, tiny_bert, tiny_data)
    with claim_output(output):
        ranks = _ranks(tmp_path, "locked", timeout=120)
    line = (f"distilrank: error: {output}: process {os.getpid()} is writing this output (lock .run.trec.lock); wait "
            "for it to finish or choose another output\n")
    assert ranks == {0: (2, line), 1: (2, line)}
    assert not any(output.parent.iterdir())
