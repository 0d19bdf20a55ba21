"""Students (issue 12): the mean-pooling head, in-memory students scoring with their own layers, the running loss,
random negatives, layer maps, the teacher temperature, each objective, the label loss, the student bootstrap and
the held-out learning curve (log events, PNG, resume), on tiny models and generated data."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.io.data import DocStore, read_qrels, read_topics
from pipeline.io.runs import Run
from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.engine import ScoringEngine
from pipeline.rerank.heads import HEAD_KEY, MeanPoolBertForSequenceClassification, mean_of_tokens, with_head
from pipeline.train.curves import eval_points, plot_curves
from pipeline.train.groups import LabeledGroups, ScoredGroups, random_passages
from pipeline.train.heldout import HeldOut
from pipeline.train.options import RANDOM_NEGATIVES, RANDOM_SHARE, DistillConfig, TrainConfig
from pipeline.train.recipes import Inputs, build_student, load_encoder, score_run
from pipeline.train.scores import ScoreFile, write_scores
from pipeline.train.tasks import RankerTask
from pipeline.train.trainer import CURVE_FILE, LOG_FILE, RunningMean, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--max-length", "48", "--no-progress", "--device", "cpu"]
QUERIES = ["what is a volcano", "what is a piano", "tell me about comets"]
PASSAGES = ["a volcano erupts lava", "the piano has keys and strings and pedals", "comets have tails of ice"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_bert, tiny_data):
    root = tmp_path_factory.mktemp("students")
    data = tiny_data(root / "data", queries=6, per_query=10)
    teacher = tiny_bert(root / "teacher", layers=4, labels=1)
    return root, data, teacher


def _inputs(data) -> list[str]:
    return ["--topics", str(data["topics"]), "--run", str(data["run"]), "--collection", str(data["collection"])]


def _scores(encoder: CrossEncoder) -> np.ndarray:
    return ScoringEngine(encoder).score_pairs(QUERIES, PASSAGES)


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / LOG_FILE).read_text().splitlines()]


# ---- the mean-pooling head ----------------------------------------------------------------------------


def test_mean_of_tokens_leaves_padding_out():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    expected = torch.tensor([[2.0], [4.0]])
    torch.testing.assert_close(mean_of_tokens(hidden, mask), expected)
    torch.testing.assert_close(mean_of_tokens(hidden, mask.bool()[:, None, None, :]), expected)  # SDPA-style mask
    torch.testing.assert_close(mean_of_tokens(hidden[1:], None), expected[1:])


def test_mean_head_saves_and_loads_three_ways(env, tmp_path):
    """CrossEncoder reads the config flag; plain transformers loads the copied class with trust_remote_code; the
    engine's length-sorted, padded batches give each pair's own score."""
    from transformers import AutoModelForSequenceClassification

    _, _, teacher = env
    encoder = CrossEncoder(teacher, device="cpu")
    cls_scores = _scores(encoder)
    encoder.model = with_head(encoder.model, "mean")
    assert isinstance(encoder.model, MeanPoolBertForSequenceClassification)
    mean_scores = _scores(encoder)
    assert not np.allclose(mean_scores, cls_scores)
    engine = ScoringEngine(encoder)
    one_by_one = np.array([engine.score_pairs([q], [p])[0] for q, p in zip(QUERIES, PASSAGES, strict=True)])
    np.testing.assert_allclose(mean_scores, one_by_one, rtol=1e-4, atol=1e-5)
    saved = encoder.save_pretrained(tmp_path / "mean")
    config = json.loads((saved / "config.json").read_text())
    assert config[HEAD_KEY] == "mean" and (saved / "heads.py").is_file()
    np.testing.assert_allclose(_scores(CrossEncoder(saved, device="cpu")), mean_scores, rtol=1e-5, atol=1e-6)
    plain = AutoModelForSequenceClassification.from_pretrained(saved, trust_remote_code=True).eval()
    batch = encoder.encode(QUERIES, PASSAGES)
    with torch.no_grad():
        np.testing.assert_allclose(plain(**batch).logits[:, 0].numpy(), mean_scores, rtol=1e-4, atol=1e-5)
    back = with_head(encoder.model, "cls")  # the same weights under the [CLS] head again
    encoder.model = back
    np.testing.assert_allclose(_scores(encoder), cls_scores, rtol=1e-5, atol=1e-6)
    assert HEAD_KEY not in back.config.to_dict()


def test_mean_head_is_refused_for_other_architectures():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    model = RobertaForSequenceClassification(RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                           num_attention_heads=2, intermediate_size=32, num_labels=1))
    with pytest.raises(ValueError, match="BERT"):
        with_head(model, "mean")


# ---- students in memory ---------------------------------------------------------------------------------


def test_in_memory_student_scores_with_its_own_layers(env, tmp_path):
    """The forward the engine calls follows ``CrossEncoder.model``: a student cut from the teacher scores in
    memory exactly as its saved folder does, not as the teacher."""
    _, _, teacher = env
    full = _scores(CrossEncoder(teacher, device="cpu"))
    cfg = DistillConfig(layer_map=(0, 3), init_from="teacher", max_length=48)
    student = build_student(teacher, teacher, cfg, seed=0)
    assert len(student.model.base_model.encoder.layer) == 2
    in_memory = _scores(student)
    assert not np.allclose(in_memory, full)
    reloaded = CrossEncoder(student.save_pretrained(tmp_path / "student"), device="cpu")
    np.testing.assert_allclose(in_memory, _scores(reloaded), rtol=1e-5, atol=1e-6)
    source = CrossEncoder(teacher, device="cpu").model.base_model.encoder.layer
    torch.testing.assert_close(reloaded.model.base_model.encoder.layer[1].output.dense.weight,
                               source[3].output.dense.weight)
    # initialised from the teacher, the student keeps the teacher's head
    torch.testing.assert_close(reloaded.model.classifier.weight,
                               CrossEncoder(teacher, device="cpu").model.classifier.weight)


def test_running_mean_is_bias_corrected():
    running = RunningMean(0.98)
    assert running.value is None
    assert running.update(2.0) == pytest.approx(2.0)  # not 0.02 * 2, nor a start that weighs 100%
    for _ in range(24):
        running.update(1.0)
    first_weight = 0.02 * 0.98 ** 24 / (1 - 0.98 ** 25)
    assert running.value == pytest.approx(1.0 + first_weight)
    assert first_weight < 0.04


# ---- random negatives --------------------------------------------------------------------------------------


def test_random_passages_are_seeded_distinct_and_exclude(env):
    _, data, _ = env
    docstore = DocStore(data["collection"])
    drawn = random_passages(docstore, "q1", 5, seed=3, exclude=["0", "1"])
    assert drawn == random_passages(docstore, "q1", 5, seed=3, exclude=["0", "1"])
    assert len(set(drawn)) == 5 and not {"0", "1"} & set(drawn) and not docstore.missing(drawn)
    assert drawn != random_passages(docstore, "q2", 5, seed=3)
    with pytest.raises(InputError, match="cannot draw"):
        random_passages(docstore, "q1", len(docstore) + 1, seed=3)


def test_score_file_with_random_negatives_and_mixed_groups(env, tmp_path):
    root, data, teacher = env
    inputs = Inputs.load(data["topics"], data["run"], data["collection"])
    path = tmp_path / "teacher.scores"
    header = score_run(teacher, inputs, path, depth=6, device="cpu", random_negatives=3)
    assert header["random_negatives"] == 3 and header["pairs"] == 6 * (6 + 3)
    scores = ScoreFile(path)
    scores.check_run(data["run"])  # the fingerprint is the run's: random rows are not part of it
    lists, random = dict(scores), scores.random_lists()
    assert all(len(r) == 6 for r in lists.values()) and all(len(r) == 3 for r in random.values())
    assert not any({d for d, _ in random[q]} & {d for d, _ in lists[q]} for q in lists)
    topics = read_topics(data["topics"])
    groups = ScoredGroups(topics, lambda: iter(scores), group_size=4, seed=1, depth=5, random_negatives=2,
                          random=random)
    for group in groups.iter_groups(0):
        randoms = {d for d, _ in random[group.qid]}
        assert sum(d in randoms for d in group.docids) == 2
        assert {d for d in group.docids if d not in randoms} <= {d for d, _ in lists[group.qid][:5]}
        assert list(group.teacher) == sorted(group.teacher, reverse=True)
    with pytest.raises(InputError, match="fewer than"):
        list(ScoredGroups(topics, lambda: iter(scores), group_size=6, random_negatives=4, random=random).iter_groups())
    with pytest.raises(InputError, match="score with --random-negatives"):
        ScoredGroups(topics, lambda: iter(scores), group_size=4, random_negatives=2)


def test_old_score_files_read_as_before(tmp_path):
    path = tmp_path / "old.scores"
    write_scores(path, [("q1", [("a", 1.0), ("b", 0.5)])], 2, "m")
    assert "random" not in path.read_text() and ScoreFile(path).random_lists() == {}
    assert list(ScoreFile(path)) == [("q1", [("a", 1.0), ("b", 0.5)])]


# ---- distill options end to end -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scores(env):
    root, data, teacher = env
    path = root / "teacher.scores"
    assert main(["score", "--model", str(teacher), *_inputs(data), "--output", str(path), "--score-depth", "8",
                 "--random-negatives", "4", "--device", "cpu"]) == 0
    return path


def _distill(env, scores, name: str, *extra: str) -> Path:
    root, data, teacher = env
    out = root / name
    args = ["distill", "--procedure", "ranker-distill", "--teacher", str(teacher), "--base", str(teacher),
            "--output", str(out), *_inputs(data), "--scores", str(scores), "--qrels", str(data["qrels"]),
            "--group-size", "4", "--batch-size", "4", "--max-steps", "2", *FAST, *extra]
    if "--layer-map" not in extra:
        args += ["--layers", "2"]
    assert main(args) == 0
    return out


@pytest.mark.parametrize("objective", ["kl", "margin-mse", "mse"])
def test_each_objective_trains(env, scores, objective):
    out = _distill(env, scores, f"objective-{objective}", "--objective", objective)
    info = json.loads((out / "distilrank_train.json").read_text())
    assert info["config"]["objective"] == objective
    losses = [r["loss"] for r in _log(out) if "loss" in r]
    assert losses and all(np.isfinite(losses))


def test_teacher_temperature_changes_the_target(env, scores):
    """A lower teacher temperature sharpens the teacher's distribution: the same student's first KL differs."""
    same = _distill(env, scores, "temperature-same", "--temperature", "1")
    sharp = _distill(env, scores, "temperature-sharp", "--temperature", "1", "--teacher-temperature", "0.1")
    assert json.loads((sharp / "distilrank_train.json").read_text())["config"]["teacher_temperature"] == 0.1
    first = [next(r["loss"] for r in _log(folder) if "loss" in r) for folder in (same, sharp)]
    assert first[0] != pytest.approx(first[1])


def test_layer_map_mean_head_random_negatives_and_label_loss(env, scores):
    out = _distill(env, scores, "levers", "--layer-map", "0,2", "--head", "mean", "--random-negatives", "2",
                   "--label-weight", "0.5", "--init-from", "teacher")
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config[HEAD_KEY] == "mean"
    info = json.loads((out / "distilrank_train.json").read_text())
    assert info["config"]["layer_map"] == [0, 2] and info["config"]["random_negatives"] == 2
    assert any("label_loss" in r for r in _log(out))
    assert isinstance(CrossEncoder(out, device="cpu").model, MeanPoolBertForSequenceClassification)


def test_random_passages_are_scored_and_drawn_by_default(env, capsys):
    """``score`` scores RANDOM_NEGATIVES random passages a query unless told otherwise, and ``distill`` draws one
    member in RANDOM_SHARE of each group from them; a score file without them is refused, naming the file, until
    ``--random-negatives 0``."""
    root, data, teacher = env
    made = {}
    for name, extra in (("default", []), ("without", ["--random-negatives", "0"])):
        made[name] = root / f"{name}.scores"
        assert main(["score", "--model", str(teacher), *_inputs(data), "--output", str(made[name]),
                     "--score-depth", "8", "--device", "cpu", *extra]) == 0
    assert ScoreFile(made["default"]).random_negatives == RANDOM_NEGATIVES
    assert all(len(p) == RANDOM_NEGATIVES for p in ScoreFile(made["default"]).random_lists().values())
    assert ScoreFile(made["without"]).random_negatives == 0
    capsys.readouterr()
    args = ["distill", "--procedure", "ranker-distill", "--teacher", str(teacher), "--base", str(teacher),
            *_inputs(data), "--group-size", "8", "--batch-size", "4", "--max-steps", "1", "--layers", "2", *FAST]
    refused = root / "refused"
    assert main([*args, "--scores", str(made["without"]), "--output", str(refused)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(made["without"]) in err and "--random-negatives 0" in err
    assert not refused.exists()
    default = root / "default-config"
    assert main([*args, "--scores", str(made["default"]), "--output", str(default)]) == 0
    config = json.loads((default / "distilrank_train.json").read_text())["config"]
    assert config["random_negatives"] == 8 // RANDOM_SHARE
    assert main([*args, "--scores", str(made["without"]), "--output", str(root / "none"), "--random-negatives",
                 "0"]) == 0


def test_lm_distillation_follows_the_layer_map(env, scores):
    out = _distill(env, scores, "lm-map", "--layer-map", "1,3", "--lm-batch-size", "8", "--lm-pairs-per-query", "2",
                   "--procedure", "lm-distill+ranker-distill")
    assert json.loads((out / "lm-distill" / "config.json").read_text())["num_hidden_layers"] == 2
    assert json.loads((out / "distilrank_train.json").read_text())["summaries"]["lm-distill"]["steps"] >= 1


def test_student_bootstrap_runs_before_ranker_distillation(env, scores):
    root, data, teacher = env
    out = _distill(env, scores, "bootstrapped", "--bootstrap-from", str(teacher), "--bootstrap-topics",
                   str(data["topics"]), "--bootstrap-run", str(data["run"]), "--bootstrap-group-size", "4",
                   "--bootstrap-batch-size", "4", "--bootstrap-score-depth", "6", "--bootstrap-max-steps", "1")
    info = json.loads((out / "distilrank_train.json").read_text())
    assert list(info["summaries"]) == ["bootstrap", "ranker-distill"]
    assert json.loads((out / "bootstrap" / "model" / "config.json").read_text())["num_hidden_layers"] == 2


def test_held_out_learning_curve_logged_and_plotted(env, scores, tmp_path):
    root, data, _ = env
    qids = tmp_path / "held.qids"
    qids.write_text("100\n101\n102\n")
    curve = ["--eval-every", "1", "--eval-run", str(data["run"]), "--eval-topics", str(data["topics"]),
             "--eval-qrels", str(data["qrels"]), "--eval-qids", str(qids), "--eval-depth", "10"]
    out = _distill(env, scores, "curve", *curve)  # 2 steps: 6 queries, 4 groups a step
    evals = [r for r in _log(out) if r.get("event") == "eval"]
    assert [e["step"] for e in evals] == [0, 1, 2]
    assert all(0.0 <= e["nDCG@10"] <= 1.0 and "RR(rel=2)@10" in e for e in evals)
    assert (out / CURVE_FILE).read_bytes()[:4] == b"\x89PNG"
    png = plot_curves({"a": out / LOG_FILE, "b": out / LOG_FILE}, tmp_path / "curves.png", references={"BM25": 0.5})
    assert png.read_bytes()[:4] == b"\x89PNG" and len(eval_points(out / LOG_FILE)) == 3


def test_resumed_curve_evaluates_each_step_once(env, tmp_path):
    """Killed after logging step 4 but before checkpointing it (simulated: a stop at step 3, then step 4's records
    appended), then resumed: the log keeps one evaluation per step, equal to an uninterrupted run's."""
    _, data, teacher = env
    docstore = DocStore(data["collection"])
    topics, qrels = read_topics(data["topics"]), read_qrels(data["qrels"])
    heldout = HeldOut(Run.read(data["run"]), topics, qrels, docstore, depth=10)

    def fit(folder, resume=False, **extra):
        source = LabeledGroups(topics, qrels, data["run"], negatives=3, seed=1)
        task = RankerTask("lce", load_encoder(teacher, 1, max_length=48), source, docstore, objective="lce", seed=1)
        config = TrainConfig(epochs=1, batch_size=1, lr=1e-3, max_steps=5, eval_every=1, progress=False, **extra)
        return Trainer(task, folder, config, "cpu", heldout.evaluator(task.encoder, torch.device("cpu"))).fit(resume)

    fit(tmp_path / "parts", stop_after=3)
    with open(tmp_path / "parts" / LOG_FILE, "a") as log:
        log.write(json.dumps({"step": 4, "loss": 9.0}) + "\n" + json.dumps({"event": "eval", "step": 4}) + "\n")
    fit(tmp_path / "parts", resume=True)
    steps = [r["step"] for r in _log(tmp_path / "parts") if r.get("event") == "eval"]
    assert steps == [0, 1, 2, 3, 4, 5]
    assert 9.0 not in [r.get("loss") for r in _log(tmp_path / "parts")]
    fit(tmp_path / "whole")
    whole = [r["nDCG@10"] for r in _log(tmp_path / "whole") if r.get("event") == "eval"]
    resumed = [r["nDCG@10"] for r in _log(tmp_path / "parts") if r.get("event") == "eval"]
    assert resumed == pytest.approx(whole, abs=1e-6)


def test_eval_flags_go_together(env, scores, capsys):
    root, data, teacher = env
    args = ["distill", "--procedure", "ranker-distill", "--teacher", str(teacher), "--layers", "1", "--output",
            str(root / "noeval"), *_inputs(data), "--scores", str(scores), *FAST]
    assert main([*args, "--eval-every", "2"]) == 2
    assert "--eval-every needs --eval-run" in capsys.readouterr().err
    assert main([*args, "--eval-run", str(data["run"])]) == 2
    assert "need --eval-every" in capsys.readouterr().err


def test_students_from_the_base_need_only_the_teacher_scores(env, scores, capsys):
    """With --scores and --base, the teacher's weights may be elsewhere (a GPU call carries its scores, not it)."""
    root, data, teacher = env
    absent = root / "teacher-not-here"
    args = ["distill", "--procedure", "ranker-distill", "--teacher", str(absent), "--base", str(teacher),
            "--layers", "1", *_inputs(data), "--scores", str(scores), "--group-size", "4", "--batch-size", "4",
            "--max-steps", "1", *FAST]
    assert main([*args, "--output", str(root / "no-teacher")]) == 0
    assert main([*args, "--output", str(root / "no-teacher-init"), "--init-from", "teacher"]) == 2
    assert "teacher folder has no config.json" in capsys.readouterr().err


def test_a_damaged_config_is_refused_naming_the_folder(tmp_path):
    from pipeline.train.students import make_student

    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    for build in (lambda: make_student(folder, 1), lambda: make_student(folder, 1, init="random")):
        with pytest.raises(InputError, match="damaged"):
            build()
