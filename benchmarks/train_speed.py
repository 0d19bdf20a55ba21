"""Training speed: a batch's pairs run sorted by length in chunks, each padded to its own longest pair (the
trainer's way: ``pipeline.train.tasks.length_chunks``), against the whole batch padded to its longest pair, side by
side in one run.

Per shape (``--layers``: that many evenly spaced layers of the packaged MiniLM as a 1-logit cross-encoder; 6 is
the study's teacher, 3 and 2 its students): training steps of listwise KL to random teacher scores on groups of
``--group-size`` random passages of the collection for a query, ``--groups`` groups a step (the study's students:
8 x 16 = 128 pairs, 128 tokens at most), each step the forward, the backward and an AdamW update; with
``--lm-distill`` LM distillation's step instead (hidden states and attention maps matched to the packaged
MiniLM's, 6 layers). Every arm (the padded batch; chunks of each ``--chunk-tokens`` budget) runs ``--steps`` steps
a round on the same batches, in a process of its own as a training run is (one process running both arms slows
the padded one: its large activations are allocated anew while the chunks' smaller ones are about, 1.9-2.0x
measured that way against 1.5-1.6x in the trainer), after one untimed step; rounds run the arms in a rotating
order, and each ratio is the median of the rounds' ratios with its interval (``pipeline.eval.speedups``). First
the check: in eval mode the chunks' scores (their matching loss) equal the padded batch's (the largest difference
is reported), and the padding share of the padded batches is reported.

Text: as ``rerank_speed.py`` (``--data``: the MS MARCO subset, else synthetic text with MS MARCO-like lengths).
No network and no pyserini needed. ``--out FILE`` writes JSON (and FILE.md).

    python benchmarks/train_speed.py --layers 2,6 --out benchmarks/results/train_speed_cpu.json  # 10 min, 2 cores
    python benchmarks/train_speed.py --layers 2 --lm-distill --out benchmarks/results/train_speed_lm_cpu.json
    python benchmarks/train_speed.py --layers 2 --steps 1 --rounds 1 --chunk-tokens 4096  # a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import cpu_description, interleaved, machine, packaged_minilm, ratio, timed, write_results
from rerank_speed import load_data

from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.model import load_tokenizer
from pipeline.train.groups import Group
from pipeline.train.lm_distill import HiddenMatcher
from pipeline.train.losses import listwise_kl_loss
from pipeline.train.students import make_student
from pipeline.train.tasks import CHUNK_TOKENS, pair_inputs, pair_scores

PADDED = "padded batch"


def arm_name(chunk_tokens: int) -> str:
    return f"chunks of {chunk_tokens} tokens"


def make_batches(store, queries: list[str], count: int, groups: int, size: int, seed: int) -> list[list[Group]]:
    """``count`` batches of ``groups`` groups: a random query, ``size`` random passages, random teacher scores."""
    rng = np.random.default_rng(seed)
    batches = []
    for b in range(count):
        batch = []
        for g in range(groups):
            docids = [str(k) for k in store.keys[rng.choice(len(store), size=size, replace=False)]]
            batch.append(Group(f"q{seed}-{b}-{g}", queries[rng.integers(len(queries))], tuple(docids),
                               teacher=tuple(rng.normal(size=size).tolist())))
        batches.append(batch)
    return batches


def batch_loss(encoder: CrossEncoder, modules: dict, groups: list[Group], store, chunk_tokens: int | None,
               matcher: HiddenMatcher | None) -> torch.Tensor:
    """A step's loss: listwise KL to the groups' teacher scores, or with ``matcher`` LM distillation's hidden-state
    and attention matching."""
    if matcher is not None:
        return matcher.match(modules, pair_inputs(encoder, groups, store), encoder.device, chunk_tokens)[0]
    scores = pair_scores(encoder, encoder.model, groups, store, encoder.device, chunk_tokens=chunk_tokens)
    return listwise_kl_loss(scores, torch.tensor([g.teacher for g in groups], dtype=torch.float32))


def train_steps(encoder: CrossEncoder, modules: dict, optimizer: torch.optim.Optimizer, batches: list[list[Group]],
                store, chunk_tokens: int | None, matcher: HiddenMatcher | None) -> None:
    """One training step (forward, loss, backward, update) a batch."""
    for groups in batches:
        batch_loss(encoder, modules, groups, store, chunk_tokens, matcher).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def shape_encoder(layers: int, max_length: int) -> CrossEncoder:
    """That many evenly spaced layers of the packaged MiniLM, a 1-logit cross-encoder in fp32 on the CPU."""
    return CrossEncoder.from_model(make_student(packaged_minilm(), layers), load_tokenizer(packaged_minilm()),
                                   device="cpu", precision="fp32", max_length=max_length)


def setup(args, layers: int) -> tuple[CrossEncoder, dict, HiddenMatcher | None]:
    """The model of ``layers`` layers, its training modules and, with ``--lm-distill``, its matcher to the packaged
    MiniLM (6 layers)."""
    encoder = shape_encoder(layers, args.max_length)
    modules: dict = {"model": encoder.model}
    matcher = HiddenMatcher(shape_encoder(6, args.max_length), encoder) if args.lm_distill else None
    if matcher is not None:
        modules.update(matcher.build(encoder.model, encoder.device))
    return encoder, modules, matcher


def worker(args, store, queries: list[str]) -> dict:
    """One arm's round in this process: an untimed step, then ``--steps`` timed ones (``--arm``: the chunk
    budget, 0 for the padded batch)."""
    encoder, modules, matcher = setup(args, args.layers[0])
    encoder.model.train()
    optimizer = torch.optim.AdamW([p for m in modules.values() for p in m.parameters()], lr=1e-5)
    batches = make_batches(store, queries, args.steps + 1, args.groups, args.group_size,
                           seed=1000 * args.layers[0] + args.round)

    def steps(part: list[list[Group]]) -> None:
        train_steps(encoder, modules, optimizer, part, store, args.arm or None, matcher)

    steps(batches[:1])  # allocations, the optimizer's state
    return timed(encoder.device, args.steps * args.groups * args.group_size, lambda: steps(batches[1:]))


def run_worker(args, layers: int, arm: int, round_: int) -> dict:
    """``worker`` in a process of its own; its result."""
    command = [sys.executable, __file__, "--worker", "--layers", str(layers), "--arm", str(arm), "--round",
               str(round_), "--groups", str(args.groups), "--group-size", str(args.group_size), "--max-length",
               str(args.max_length), "--steps", str(args.steps)] + (["--lm-distill"] if args.lm_distill else [])
    command += ["--data", str(args.data)] if args.data else []
    command += ["--threads", str(args.threads)] if args.threads else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"a timing process failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_shape(args, layers: int, store, queries: list[str]) -> dict:
    """The check and the padding share (in this process) and the interleaved timing of one shape."""
    encoder, modules, matcher = setup(args, layers)
    check = make_batches(store, queries, 1, args.groups, args.group_size, seed=layers)[0]
    encoder.model.eval()
    compared_what = "loss" if matcher else "scores"
    with torch.no_grad():  # the scores, or the matching loss, of the chunks against the padded batch's
        compared = (lambda c: batch_loss(encoder, modules, check, store, c, matcher)) if matcher else (
            lambda c: pair_scores(encoder, encoder.model, check, store, encoder.device, chunk_tokens=c))
        largest = max(float((compared(c) - compared(None)).abs().max()) for c in args.chunk_tokens)
    batches = [b for r in range(args.rounds) for b in make_batches(store, queries, args.steps + 1, args.groups,
                                                                    args.group_size, seed=1000 * layers + r)[1:]]
    padding = 1.0 - float(np.mean([pair_inputs(encoder, groups, store)["attention_mask"].float().mean()
                                   for groups in batches]))
    arms = {PADDED: 0, **{arm_name(c): c for c in args.chunk_tokens}}
    measured = interleaved({name: (lambda r, a=a: run_worker(args, layers, a, r)) for name, a in arms.items()},
                           args.rounds)
    row = {"layers": layers, "largest_difference": largest, "padding_share": round(padding, 4),
           "pairs_per_s": {name: float(np.median([r["pairs_per_s"] for r in runs])) for name, runs in measured.items()},
           "ratios": {arm_name(c): ratio(measured, arm_name(c), PADDED) for c in args.chunk_tokens},
           "rounds": measured}
    print(f"{layers} layers: padding {padding:.1%} of the padded batches' tokens; chunked {compared_what} within "
          f"{largest:.1e} of the padded batch's; " + "; ".join(
              f"{name} {value:.1f} pairs/s" for name, value in row["pairs_per_s"].items()), flush=True)
    for name, found in row["ratios"].items():
        print(f"  {name} over the padded batch: {found['text']}", flush=True)
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    arms = list(rows[0]["pairs_per_s"])
    lines = [f"# Training speed: length-sorted chunks against one padded batch ({meta['when']})", "",
             f"Machine: {meta['device']} ({meta['machine']['cpu']}), torch {meta['torch']}; load average "
             f"{meta['load_average'][0]:.1f} at the end. Text: {meta['text']}. A step: {meta['pairs']} pairs "
             f"({meta['groups']} groups of {meta['group_size']}), at most {meta['max_length']} tokens, forward, "
             f"{meta['step']}, backward and AdamW; {meta['steps']} steps an arm a round (after an untimed one), each "
             f"in a process of its own, {meta['rounds']} rounds in a rotating order. Ratios: median of the rounds' "
             "ratios over the padded batch (95% interval). Largest difference: of the chunks' scores (with LM "
             "distillation, their loss) from the padded batch's, in eval mode.", "",
             "| layers | padding share | largest difference | " + " | ".join(f"{a} pairs/s" for a in arms)
             + " | " + " | ".join(f"{a} / padded" for a in arms[1:]) + " |",
             "|---:|---:|---:|" + "---:|" * (2 * len(arms) - 1)]
    for row in rows:
        cells = [f"{row['pairs_per_s'][a]:.1f}" for a in arms]
        ratios = [row["ratios"][a]["text"].split(" (")[0] + f" [{row['ratios'][a]['low']:.2f}-"
                  f"{row['ratios'][a]['high']:.2f}]" for a in arms[1:]]
        lines.append(f"| {row['layers']} | {row['padding_share']:.1%} | {row['largest_difference']:.1e} | "
                     + " | ".join(cells + ratios) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="collection.tsv[.gz] and queries*.tsv (default: the "
                   "MS MARCO subset)")
    p.add_argument("--layers", default="2,3,6", help="comma-separated layer counts (default 2,3,6)")
    p.add_argument("--groups", type=int, default=8, help="groups a step (default 8)")
    p.add_argument("--group-size", type=int, default=16, help="passages a group (default 16)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--chunk-tokens", default=str(CHUNK_TOKENS),
                   help=f"comma-separated chunk budgets (default the trainer's, {CHUNK_TOKENS})")
    p.add_argument("--lm-distill", action="store_true", help="LM distillation's step instead: the student's hidden "
                   "states and attention maps matched to the packaged MiniLM's (6 layers)")
    p.add_argument("--steps", type=int, default=2, help="steps an arm a round (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="write results as JSON (and a .md table beside)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one arm's round (run_worker)
    p.add_argument("--arm", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.layers = [int(x) for x in args.layers.split(",")]
    args.chunk_tokens = [int(x) for x in args.chunk_tokens.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        store, queries, source = load_data(args.data, Path(tmp))
        if args.worker:
            print(json.dumps(worker(args, store, queries)))
            return 0
        print(f"text: {source} ({len(store):,} passages); torch {torch.__version__}, {torch.get_num_threads()} "
              "threads", flush=True)
        rows = [measure_shape(args, layers, store, queries) for layers in args.layers]
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "text": source, "torch": torch.__version__,
            "device": f"{cpu_description()}, {torch.get_num_threads()} torch threads", "machine": machine(),
            "step": "LM distillation" if args.lm_distill else "listwise KL",
            "pairs": args.groups * args.group_size, "groups": args.groups, "group_size": args.group_size,
            "max_length": args.max_length, "steps": args.steps, "rounds": args.rounds,
            "seconds": round(time.time() - started, 1), "load_average": os.getloadavg()}
    print(f"done in {meta['seconds']}s (load average {meta['load_average'][0]:.1f})")
    if args.out:
        table = write_results(args.out, {"meta": meta, "rows": rows}, markdown(rows, meta))
        print(f"results written to {args.out} and {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
