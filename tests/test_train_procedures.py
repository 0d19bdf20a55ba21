"""The CLI end to end on tiny models: teacher training (plain and bootstrapped), teacher scores, the four
distillation procedures, resume, and the refusals (mismatching score file, hidden states across tokenizers)."""
import json
import logging
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.train import PROCEDURES, uses_lm_distill
from pipeline.train.options import RANDOM_SHARE

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--max-length", "48", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_bert, tiny_data):
    root = tmp_path_factory.mktemp("procedures")
    data = tiny_data(root / "data", queries=6, per_query=10)
    base = tiny_bert(root / "base", layers=4, labels=None)
    return root, data, base


def _inputs(data):
    return ["--topics", str(data["topics"]), "--run", str(data["run"]), "--collection", str(data["collection"])]


@pytest.fixture(scope="module")
def teacher(env):
    root, data, base = env
    out = root / "teacher"
    args = ["train", "--init", str(base), *_inputs(data), "--qrels", str(data["qrels"]), "--output", str(out),
            "--negatives", "3", "--epochs", "2", "--batch-size", "4", "--lr", "1e-3",
            "--bootstrap-from", str(base), "--bootstrap-topics", str(data["topics"]),
            "--bootstrap-run", str(data["run"]), "--bootstrap-group-size", "4", "--bootstrap-batch-size", "4",
            "--bootstrap-depth", "8", *FAST]
    assert main(args) == 0
    return out


def test_bootstrapped_teacher(teacher):
    info = json.loads((teacher / "distilrank_train.json").read_text())
    assert info["summaries"]["bootstrap"]["steps"] == 4  # 6 queries / 4 per batch x 2 epochs
    assert info["summaries"]["lce"]["complete"] and Path(info["init"]).name == "base"
    header = (teacher / "bootstrap" / "biencoder.scores").read_text().splitlines()[0]
    assert '"depth": 8' in header and '"pairs": 48' in header
    assert (teacher / "model.safetensors").is_file() and not (teacher / "checkpoint").exists()
    from pipeline.rerank.cross_encoder import CrossEncoder
    from pipeline.rerank.engine import ScoringEngine

    encoder = CrossEncoder(teacher, device="cpu")
    assert encoder.max_length == 48  # the saved setting of the training
    assert ScoringEngine(encoder).score_pairs(["what is a piano"], ["piano piano"]).shape == (1,)


def test_train_resume_skips_finished_phases(teacher, env, caplog):
    root, data, base = env
    args = ["train", "--init", str(base), *_inputs(data), "--qrels", str(data["qrels"]), "--output", str(teacher),
            "--negatives", "3", "--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--resume", *FAST,
            "--bootstrap-from", str(base), "--bootstrap-topics", str(data["topics"]),
            "--bootstrap-run", str(data["run"]), "--bootstrap-group-size", "4", "--bootstrap-batch-size", "4",
            "--bootstrap-depth", "8"]  # the options it was trained with (other ones are refused)
    with caplog.at_level(logging.INFO, logger="pipeline.train.recipes"):
        assert main(args) == 0
    assert "bootstrap: already finished" in caplog.text and "teacher-lce: already finished" in caplog.text
    from pipeline.train.recipes import read_info

    summaries = read_info(teacher)["summaries"]  # the resumed run keeps what the finished phases recorded
    assert summaries["bootstrap"]["steps"] > 0 and summaries["lce"]["steps"] > 0


@pytest.fixture(scope="module")
def scores(env, teacher):
    root, data, _ = env
    path = root / "teacher.scores"
    assert main(["score", "--model", str(teacher), *_inputs(data), "--output", str(path), "--score-depth",
                 "8", "--device", "cpu"]) == 0
    return path


@pytest.mark.parametrize("procedure", [*PROCEDURES, None], ids=[*PROCEDURES, "default"])
def test_each_procedure_end_to_end(procedure, env, teacher, scores):
    """Each procedure, and ``distill`` without ``--procedure``: the paper's lm-distill+ranker-distill."""
    root, data, _ = env
    out = root / f"student-{procedure or 'default'}"
    hidden = procedure == "lm-distill+ranker-distill"
    args = ["distill", *(["--procedure", procedure] if procedure else []), "--teacher", str(teacher), "--layers", "2",
            "--output", str(out), *_inputs(data), "--scores", str(scores), "--qrels", str(data["qrels"]),
            "--group-size", "4", "--score-depth", "8", "--batch-size", "4", "--lm-batch-size", "16",
            "--lm-pairs-per-query", "4", "--max-steps", "2", *FAST, *(["--hidden-weight", "0.5"] if hidden else [])]
    assert main(args) == 0
    procedure = procedure or "lm-distill+ranker-distill"
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(out))
    assert config.num_hidden_layers == 2 and config.num_labels == 1
    info = json.loads((out / "distilrank_train.json").read_text())
    assert info["procedure"] == procedure
    assert info["config"]["random_negatives"] == 4 // RANDOM_SHARE  # by default, one in RANDOM_SHARE of a group
    assert ("lm-distill" in info["summaries"]) == uses_lm_distill(procedure)
    if uses_lm_distill(procedure):
        assert (out / "lm-distill" / "model.safetensors").is_file()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "end" and log[-1]["steps"] >= 1
    assert any("hidden_loss" in r for r in log) == hidden


def test_mismatching_score_file_is_refused(env, teacher, scores, capsys):
    root, data, _ = env
    other = root / "other.trec"
    other.write_text("".join(line + "\n" for line in data["run"].read_text().splitlines()[1:]))
    out = root / "refused"
    code = main(["distill", "--procedure", "ranker-distill", "--teacher", str(teacher), "--layers", "1",
                 "--output", str(out), "--topics", str(data["topics"]), "--run", str(other),
                 "--collection", str(data["collection"]), "--scores", str(scores), *FAST])
    assert code == 2
    assert "does not match the candidate lists" in capsys.readouterr().err
    assert not (out / "config.json").exists()


def test_fine_tune_needs_qrels(env, teacher, capsys):
    root, data, _ = env
    code = main(["distill", "--procedure", "fine-tune", "--teacher", str(teacher), "--layers", "1",
                 "--output", str(root / "noqrels"), *_inputs(data), *FAST])
    assert code == 2 and "needs --qrels" in capsys.readouterr().err


def test_hidden_state_matching_refuses_another_tokenizer(env, teacher, scores, capsys, tiny_bert):
    root, data, _ = env
    other = tiny_bert(root / "other-vocab", layers=1,
                      vocab=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "a", "the"))
    common = ["--teacher", str(teacher), "--layers", "1", *_inputs(data), "--scores", str(scores), "--init-from",
              str(other), "--qrels", str(data["qrels"]), "--group-size", "4", "--score-depth", "8",
              "--max-steps", "1", "--batch-size", "4", *FAST]
    code = main(["distill", "--procedure", "lm-distill+ranker-distill", "--output", str(root / "s1"), *common])
    assert code == 2 and "needs the student to use the teacher's tokenizer" in capsys.readouterr().err
    # score-only distillation works across tokenizers
    assert main(["distill", "--procedure", "ranker-distill", "--output", str(root / "s2"), *common]) == 0


def test_train_excludes_held_out_queries(env):
    root, data, base = env
    held_out = root / "held-out.qids"
    held_out.write_text("# held out\n100\n101\n")
    out = root / "teacher-excluded"
    assert main(["train", "--init", str(base), *_inputs(data), "--qrels", str(data["qrels"]), "--output", str(out),
                 "--exclude-qids", str(held_out), "--negatives", "3", "--batch-size", "4", *FAST]) == 0
    info = json.loads((out / "distilrank_train.json").read_text())
    assert info["groups"] == "4 groups from 6 queries, 2 not in topics"
    assert info["bootstrap"] is None and info["summaries"]["lce"]["steps"] == 1


def test_dropped_layers_follow_the_teacher_stage_by_stage():
    from pipeline.train.students import dropped_layers

    assert dropped_layers(6, [4, 3, 2]) == [[1, 2, 3, 5], [1, 3, 5], [3, 5]]
    assert dropped_layers(6, [2]) == [[2, 5]]


def test_progressive_dropping_with_hidden_state_matching(env, teacher, scores):
    """Ranker distillation with every student layer and attention map matched to its trained-teacher layer,
    dropping 4 -> 3 -> 2 layers: each stage starts from the last one's trained model."""
    from transformers import AutoConfig

    from pipeline.train.options import DistillConfig, TrainConfig
    from pipeline.train.recipes import Inputs, distill, read_info

    root, data, _ = env
    out = root / "student-progressive"
    cfg = DistillConfig(procedure="ranker-distill", layers=2, init_from="teacher", progressive=(3,),
                        progressive_steps=2, hidden_weight=0.5, attention_weight=0.5, group_size=4, score_depth=8,
                        max_length=48, rank=TrainConfig(batch_size=4, max_steps=2, progress=False))
    inputs = Inputs.load(data["topics"], data["run"], data["collection"], data["qrels"])
    distill(teacher, inputs, out, cfg, scores=scores, device="cpu")
    assert set(read_info(out)["summaries"]) == {"ranker-distill-3L", "ranker-distill"}
    assert AutoConfig.from_pretrained(str(out / "stage-3L")).num_hidden_layers == 3
    assert AutoConfig.from_pretrained(str(out)).num_hidden_layers == 2
    for folder in (out / "stage-3L", out):
        log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        assert any("hidden_loss" in r for r in log) and log[-1]["event"] == "end" and log[-1]["steps"] == 2


@pytest.mark.parametrize("change, message", [
    ({"procedure": "fine-tune"}, "trains on labels alone"),
    ({"init_from": "base"}, "needs --init-from teacher"),
    ({"progressive": (2,)}, "the stages must shrink"),
])
def test_progressive_dropping_refusals(env, teacher, scores, change, message):
    from pipeline.errors import InputError
    from pipeline.train.options import DistillConfig
    from pipeline.train.recipes import Inputs, distill

    root, data, _ = env
    cfg = DistillConfig(**{"procedure": "ranker-distill", "layers": 2, "init_from": "teacher", "progressive": (3,),
                           **change})
    inputs = Inputs.load(data["topics"], data["run"], data["collection"], data["qrels"])
    with pytest.raises(InputError, match=message):
        distill(teacher, inputs, root / "refused-progressive", cfg, scores=scores, device="cpu")
    assert not (root / "refused-progressive").exists()


def test_procedures_name_their_phases():
    from pipeline.errors import InputError
    from pipeline.train import is_fine_tune, procedure_phases

    assert [procedure_phases(p) for p in PROCEDURES] == [
        ("fine-tune",), ("ranker-distill",), ("lm-distill", "fine-tune"), ("lm-distill", "ranker-distill")]
    assert [uses_lm_distill(p) for p in PROCEDURES] == [False, False, True, True]
    assert [is_fine_tune(p) for p in PROCEDURES] == [True, False, True, False]
    with pytest.raises(InputError, match="unknown procedure 'lm-distill'; expected one of fine-tune, "):
        uses_lm_distill("lm-distill")
