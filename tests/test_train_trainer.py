"""The training loop on a tiny BERT: loss goes down, resume continues the same run, student copies, a batch run in
length-sorted chunks (scores, and hidden states matched)."""
from pathlib import Path

import pytest
import torch

from pipeline.errors import InputError
from pipeline.io.data import DocStore, read_qrels, read_topics
from pipeline.train.groups import Group, LabeledGroups
from pipeline.train.lm_distill import HiddenMatcher
from pipeline.train.options import TrainConfig
from pipeline.train.recipes import load_encoder
from pipeline.train.students import evenly_spaced_layers, make_student
from pipeline.train.tasks import RankerTask, length_chunks, pair_inputs, pair_scores
from pipeline.train.trainer import CHECKPOINT, LOG_FILE, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_bert, tiny_data):
    root = tmp_path_factory.mktemp("trainer")
    data = tiny_data(root / "data", queries=8)
    model = tiny_bert(root / "tiny", layers=2)
    return root, data, model


def _task(data, model, seed=7):
    topics, qrels = read_topics(data["topics"]), read_qrels(data["qrels"])
    docstore = DocStore(data["collection"])
    source = LabeledGroups(topics, qrels, data["run"], negatives=3, seed=seed, missing=docstore.missing)
    return RankerTask("lce", load_encoder(model, seed, max_length=48), source, docstore, objective="lce", seed=seed)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_training_lowers_the_loss(setup):
    root, data, model = setup
    config = TrainConfig(epochs=30, batch_size=8, lr=5e-3, warmup=0.0, progress=False, log_every=1)
    summary = Trainer(_task(data, model), root / "fit", config, "cpu").fit()
    losses = [r["loss"] for r in map(eval_json, (root / "fit" / LOG_FILE).read_text().splitlines()) if "loss" in r]
    assert summary["complete"] and len(losses) == 30
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]
    assert (root / "fit" / "config.json").is_file() and not (root / "fit" / CHECKPOINT).exists()


@pytest.fixture
def varied_pairs(tmp_path, texts) -> tuple[DocStore, list[Group]]:
    """A docstore of 24 passages of 1 to 60 words, and 3 groups of 8 of them."""
    (tmp_path / "collection.tsv").write_text("".join(f"{i}\t{t}\n" for i, t in enumerate(texts(24, 3, 1, 60))))
    groups = [Group(str(q), f"query {q}", tuple(str(i) for i in range(q, 24, 3))) for q in range(3)]
    return DocStore(tmp_path / "collection.tsv"), groups


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_gradients(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert found.keys() == expected.keys() and expected
    for name, grad in expected.items():
        torch.testing.assert_close(found[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_length_sorted_chunks_give_the_padded_batchs_scores_and_gradients(tmp_path, tiny_bert, varied_pairs):
    """The trainer's chunks (a batch's pairs sorted by length, each chunk padded to its own longest pair) give the
    scores, in the groups' order, and the gradients of the batch padded to its longest pair."""
    docstore, groups = varied_pairs
    encoder = load_encoder(tiny_bert(tmp_path / "model"), 7, max_length=48)
    model = encoder.model.float().eval()
    weights = torch.arange(24.0).view(3, 8)  # a loss that tells the pairs apart
    found = []
    for chunk_tokens in (None, 64):
        model.zero_grad()
        scores = pair_scores(encoder, model, groups, docstore, torch.device("cpu"), chunk_tokens=chunk_tokens)
        (weights * scores).sum().backward()
        found.append((scores.detach(), gradients(model)))
    (padded, padded_grads), (chunked, chunked_grads) = found
    assert chunked.shape == (3, 8) and len(length_chunks(pair_inputs(encoder, groups, docstore), "cpu", 64)) > 2
    torch.testing.assert_close(chunked, padded, atol=1e-5, rtol=1e-4)
    assert_same_gradients(chunked_grads, padded_grads)


def test_hidden_state_matching_in_chunks_gives_the_padded_batchs_loss_and_gradients(tmp_path, tiny_bert,
                                                                                    varied_pairs):
    """LM distillation's matching run chunk by chunk (hidden states and attention maps, each chunk weighed by its
    share of the tokens and of the token pairs) gives the loss, the logits in the batch's order and the gradients
    of the batch padded as one."""
    docstore, groups = varied_pairs
    teacher = load_encoder(tiny_bert(tmp_path / "teacher", layers=4, seed=1), 7, max_length=48)
    student = load_encoder(tiny_bert(tmp_path / "student"), 7, max_length=48)
    matcher = HiddenMatcher(teacher, student)
    modules = {"model": student.model.float().eval()}
    modules.update(matcher.build(modules["model"], torch.device("cpu")))
    encoded = pair_inputs(student, groups, docstore)
    found = []
    for chunk_tokens in (None, 64):
        modules["model"].zero_grad()
        loss, logits = matcher.match(modules, encoded, torch.device("cpu"), chunk_tokens)
        (loss + (torch.arange(24.0) * logits.view(-1)).sum()).backward()
        found.append((loss.detach(), logits.detach(), gradients(modules["model"])))
    (padded_loss, padded_logits, padded_grads), (loss, logits, grads) = found
    assert logits.shape == (24, 1) and padded_loss > 0
    torch.testing.assert_close(loss, padded_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logits, padded_logits, atol=1e-5, rtol=1e-4)
    assert_same_gradients(grads, padded_grads)


def eval_json(line: str) -> dict:
    import json

    return json.loads(line)


def test_resume_continues_the_same_run(setup):
    root, data, model = setup
    config = dict(epochs=2, batch_size=4, accumulation=2, lr=1e-3, progress=False, log_every=1)
    Trainer(_task(data, model), root / "full", TrainConfig(**config), "cpu").fit()
    interrupted = Trainer(_task(data, model), root / "parts", TrainConfig(**config, stop_after=3), "cpu").fit()
    assert not interrupted["complete"] and (root / "parts" / CHECKPOINT / "trainer_state.pt").is_file()
    resumed = Trainer(_task(data, model), root / "parts", TrainConfig(**config), "cpu").fit(resume=True)
    assert resumed["complete"] and resumed["steps"] == 4
    assert (resumed["resumed_at"], resumed["steps_this_run"]) == (3, 1)  # the summary counts this process's steps
    full, parts = _weights(root / "full"), _weights(root / "parts")
    for name, value in full.items():
        torch.testing.assert_close(parts[name], value, atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="nothing to resume"):
        Trainer(_task(data, model), root / "empty", TrainConfig(**config), "cpu").fit(resume=True)


def test_copying_all_layers_gives_identical_outputs(setup):
    _, _, model = setup
    teacher = load_encoder(model, 0)
    batch = teacher.encode(["what is a volcano"], ["a volcano is a mountain"])
    student = make_student(teacher.model, None).eval()
    teacher.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(student(**batch).logits, teacher.model(**batch).logits)
    one = make_student(teacher.model, [1])
    assert one.config.num_hidden_layers == 1
    torch.testing.assert_close(one.base_model.encoder.layer[0].output.dense.weight,
                               teacher.model.base_model.encoder.layer[1].output.dense.weight)


def test_evenly_spaced_layers():
    assert evenly_spaced_layers(6, 3) == [1, 3, 5]
    assert evenly_spaced_layers(6, 2) == [2, 5]
    assert evenly_spaced_layers(6, 6) == list(range(6))
    with pytest.raises(InputError):
        evenly_spaced_layers(6, 7)


def test_random_student_shape(setup):
    _, _, model = setup
    student = make_student(model, 1, init="random", hidden=16, heads=2, intermediate=32)
    assert (student.config.num_hidden_layers, student.config.hidden_size) == (1, 16)


def test_random_student_is_seeded_and_leaves_the_callers_random_state(setup):
    _, _, model = setup
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    first = make_student(model, 1, init="random", seed=3)
    assert torch.equal(torch.rand(3), expected)
    second = make_student(model, 1, init="random", seed=3)
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
