"""Flags made from dataclass fields: every training option of ``train`` / ``distill`` is a flag with its field's
default and help, ``--depth`` on train/score/distill is refused with the new name, and the runtime options
(``RuntimeOptions``) reach the cross-encoder and the scoring engine from the flags and from a config's [rerank]."""
from __future__ import annotations

import argparse
import json
import typing
from dataclasses import MISSING, fields, is_dataclass

import pytest

from pipeline.cli import build_parser, main
from pipeline.cli.flags import flag_name, flagged
from pipeline.cli.rerank import runtime_options
from pipeline.cli.train import BOOTSTRAP_PHASE, LAYERS, LM_PHASE
from pipeline.experiment.config import RerankSection, config_from_dict
from pipeline.rerank.options import RuntimeOptions
from pipeline.train.options import (
    BOOTSTRAP_TRAINING,
    LM_TRAINING,
    RANK_TRAINING,
    BootstrapConfig,
    DistillConfig,
    TrainConfig,
)


def _command(name: str) -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def _field_default(f, base):
    if base is not None:
        return getattr(base, f.name)
    return None if f.default is MISSING else f.default


#: command -> (dataclass, flag prefix, instance holding the defaults or None, only these fields or None,
#: fields without a default on the command line)
FLAGGED = {
    "train": [(TrainConfig, "", TrainConfig(), None, {"lr"}), (BootstrapConfig, "bootstrap-", None, None, set()),
              (TrainConfig, "bootstrap-", BOOTSTRAP_TRAINING, BOOTSTRAP_PHASE, set()),
              (RuntimeOptions, "", None, ("device", "token_cache"), set())],
    "distill": [(DistillConfig, "", None, None, set(LAYERS)), (TrainConfig, "", RANK_TRAINING, None, set()),
                (TrainConfig, "lm-", LM_TRAINING, LM_PHASE, set()), (BootstrapConfig, "bootstrap-", None, None, set()),
                (TrainConfig, "bootstrap-", BOOTSTRAP_TRAINING, BOOTSTRAP_PHASE, set()),
                (RuntimeOptions, "", None, ("device", "token_cache"), set())],
    "score": [(RuntimeOptions, "", None, None, set())],
    "rerank": [(RuntimeOptions, "", None, None, set())],
}


def _is_switch(cls: type, name: str) -> bool:
    hint = typing.get_type_hints(cls)[name]
    return hint is bool or bool in typing.get_args(hint)


@pytest.mark.parametrize("command", list(FLAGGED))
def test_every_field_is_a_flag_with_its_default_and_help(command):
    actions = _command(command)._option_string_actions
    for cls, prefix, base, only, unset in FLAGGED[command]:
        for f in flagged(cls):
            if only is not None and f.name not in only:
                continue
            name, default = flag_name(f, prefix), _field_default(f, base)
            if _is_switch(cls, f.name) and default is not False:  # on (or decided later): --no-NAME turns it off
                name = f"--{prefix}no-{name[2 + len(prefix):]}"
            action = actions[name]
            assert f.metadata["help"] in action.help, name
            assert action.default == (None if f.name in unset else default), name
            if default not in (None, (), False, True) and f.name not in unset - {"lr"}:
                assert f"(default {default if not isinstance(default, tuple) else ','.join(map(str, default))})" \
                    in action.help, name


def test_every_field_of_the_training_dataclasses_is_a_flag_or_a_nested_phase():
    for cls in (TrainConfig, BootstrapConfig, DistillConfig, RuntimeOptions):
        hints = typing.get_type_hints(cls)
        nested = {f.name for f in fields(cls)
                  if any(is_dataclass(t) for t in (hints[f.name], *typing.get_args(hints[f.name])))}
        rest = {f.name for f in fields(cls)} - {f.name for f in flagged(cls)} - nested
        assert rest == ({"stop_after"} if cls is TrainConfig else set()), cls  # a tests' hook, no flag
        assert all(f.metadata.get("help") for f in flagged(cls)), cls


def test_flags_build_the_dataclasses(tmp_path, monkeypatch):
    """The values of the flags land in the dataclasses the recipe gets: main phase, LM phase, bootstrap."""
    import pipeline.train.recipes as recipes

    got = {}
    monkeypatch.setattr(recipes, "distill", lambda teacher, inputs, output, cfg, **kw: got.update(cfg=cfg, **kw))
    monkeypatch.setattr(recipes.Inputs, "load", staticmethod(lambda *a, **kw: argparse.Namespace(docstore=None, **kw)))
    for name in ("t.tsv", "r.trec", "c.tsv", "b.tsv", "br.trec"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "teacher").mkdir()
    assert main(["distill", "--procedure", "fine-tune", "--teacher", str(tmp_path / "teacher"), "--layer-map", "0,2",
                 "--topics", str(tmp_path / "t.tsv"), "--run", str(tmp_path / "r.trec"), "--collection",
                 str(tmp_path / "c.tsv"), "--output", str(tmp_path / "out"), "--head", "mean", "--lr", "2e-4",
                 "--max-steps", "5", "--lm-epochs", "3", "--weight-decay", "0", "--precision", "bfloat16",
                 "--progressive", "4,3", "--no-progress", "--no-token-cache", "--device", "cpu",
                 "--bootstrap-from", str(tmp_path / "teacher"), "--bootstrap-topics", str(tmp_path / "b.tsv"),
                 "--bootstrap-run", str(tmp_path / "br.trec"), "--bootstrap-depth", "6",
                 "--bootstrap-lrs", "1e-4,5e-5"]) == 0
    cfg = got["cfg"]
    assert (cfg.procedure, cfg.layer_map, cfg.layers, cfg.head, cfg.progressive) == ("fine-tune", (0, 2), 2, "mean",
                                                                                    (4, 3))
    assert (cfg.rank.lr, cfg.rank.max_steps, cfg.rank.weight_decay, cfg.rank.precision, cfg.rank.progress) == (
        2e-4, 5, 0.0, "bf16", False)
    assert (cfg.lm.epochs, cfg.lm.lr, cfg.lm.batch_size, cfg.lm.max_steps) == (
        3, LM_TRAINING.lr, LM_TRAINING.batch_size, 5)
    boot = cfg.bootstrap
    assert (boot.score_depth, boot.train.epoch_lrs, boot.train.lr, boot.train.warmup, boot.train.max_steps) == (
        6, (1e-4, 5e-5), 1e-4, BOOTSTRAP_TRAINING.warmup, 5)
    assert got["device"] == "cpu"


@pytest.mark.parametrize("command, new", [("train", "--negatives-depth"), ("score", "--score-depth"),
                                          ("distill", "--score-depth")])
def test_depth_is_refused_with_the_new_name(command, new, capsys):
    assert main([command, "--depth", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"distilrank: error: '--depth' is now called '{new}': ")


@pytest.mark.parametrize("flags, message", [
    (["--batch-tokens", "0"], "--batch-tokens must be at least 1"),
    (["--device", "tpu"], "--device: unknown device 'tpu'"),
    (["--bucket", "0"], "--bucket must be at least 1"),
])
def test_bad_runtime_flags_are_one_line_errors(flags, message, tmp_path, capsys):
    for command in ("rerank", "score"):
        assert main([command, "--run", "r", "--topics", "t", "--collection", "c", "--model", "m", "--output",
                     str(tmp_path / "o"), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert not list(tmp_path.iterdir())


def test_runtime_flags_reach_the_encoder_and_the_engine(tmp_path, tiny_bert):
    from pipeline.rerank.cross_encoder import CrossEncoder
    from pipeline.rerank.engine import ScoringEngine

    args = _command("rerank").parse_args(["--run", "r", "--topics", "t", "--collection", "c", "--model", "m",
                                          "--output", "o", "--batch-tokens", "1024", "--bucket", "16", "--attention",
                                          "sdpa-padded", "--precision", "float32", "--no-token-cache", "--compile",
                                          "--device", "CPU"])
    options = runtime_options(args)
    assert options == RuntimeOptions(device="cpu", precision="fp32", batch_tokens=1024, compile="dynamic",
                                     attention="sdpa-padded", bucket=16, token_cache=False)
    encoder = CrossEncoder(tiny_bert(tmp_path / "model"), **{**options.encoder_kwargs(), "compile": None})
    settings = ScoringEngine(encoder, **options.engine_kwargs()).settings()
    assert (settings["batch_tokens"], settings["bucket"], settings["attention"], settings["precision"]) == (
        1024, 16, "sdpa-padded", "float32")
    assert options.passage_cache(encoder, None) is None  # token cache off: nothing is read or built


def test_score_batch_tokens_reaches_the_engine(tmp_path, tiny_bert, tiny_data):
    data = tiny_data(tmp_path / "data", queries=3, per_query=6)
    output = tmp_path / "t.scores"
    assert main(["score", "--model", str(tiny_bert(tmp_path / "model")), "--run", str(data["run"]), "--topics",
                 str(data["topics"]), "--collection", str(data["collection"]), "--output", str(output),
                 "--score-depth", "4", "--random-negatives", "0", "--batch-tokens", "1024", "--bucket", "16",
                 "--device", "cpu"]) == 0
    stage = json.loads((tmp_path / "t.scores.timing.json").read_text())["stages"][0]
    assert stage["batch_tokens"] == 1024 and stage["pairs"] == 12


def test_the_rerank_section_is_the_runtime_options():
    assert issubclass(RerankSection, RuntimeOptions)
    section = {f.name: f for f in fields(RerankSection)}
    for f in fields(RuntimeOptions):
        assert section[f.name].default == f.default and section[f.name].metadata is f.metadata
    raw = {"name": "x", "data": {"topics": "t", "qrels": "q"}, "first_stage": {"run": "r"}, "teacher": {"model": "m"},
           "students": [{"model": "s"}], "rerank": {"batch_tokens": 2048, "attention": "sdpa-padded",
                                                    "precision": "bfloat16", "token_cache": False}}
    rerank = config_from_dict(raw).rerank
    assert rerank.engine_kwargs() == {"batch_tokens": 2048, "bucket": None, "cuda_graphs": False}
    assert rerank.encoder_kwargs() == {"device": "auto", "precision": "bf16", "compile": None,
                                       "attention": "sdpa-padded"}
    assert not rerank.token_cache


@pytest.mark.parametrize("token_cache", [True, False])
def test_rerank_run_takes_the_runtime_options(tmp_path, tiny_bert, texts, token_cache):
    from pipeline.io.data import DocStore
    from pipeline.io.runs import Run
    from pipeline.rerank.cross_encoder import CrossEncoder
    from pipeline.rerank.stage import rerank_run

    (tmp_path / "c.tsv").write_text("".join(f"p{i}\t{t}\n" for i, t in enumerate(texts(8, 1, 3, 30))))
    encoder = CrossEncoder(tiny_bert(tmp_path / "model"), device="cpu")
    run = Run({"1": [(f"p{i}", 8.0 - i) for i in range(8)]})
    options = RuntimeOptions(batch_tokens=768, bucket=16, token_cache=token_cache)
    reranked, timing = rerank_run(encoder, run, {"1": "cat dog river"}, DocStore(tmp_path / "c.tsv"), depth=6,
                                  options=options)
    assert (timing.extra["batch_tokens"], timing.extra["bucket"], timing.extra["token_cache"]) == (768, 16,
                                                                                                  token_cache)
    assert sorted(d for d, _ in reranked["1"]) == sorted(d for d, _ in run["1"])
