"""The speed phase's measurements: how many pairs a second each model shape trains and scores on this device, and
the share of the study's pairs that a maximum length truncates. Real pairs: dev lists and the held-out lists."""
from __future__ import annotations

import random
import time
from pathlib import Path

import torch
from common import sync

from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.engine import ScoringEngine
from pipeline.train.groups import iter_run_lists
from pipeline.train.recipes import load_encoder
from pipeline.train.students import make_student
from pipeline.train.trainer import autocast_dtype

from .design import LONG_LENGTH
from .inputs import StudyInputs

#: Pairs measured: the BM25 top DEV_DEPTH of DEV_LISTS random dev queries, and every held-out list.
DEV_LISTS, DEV_DEPTH = 200, 30
#: Training steps a shape takes untimed (allocation, autotuning), then timed.
WARMUP_STEPS, TIMED_STEPS = 3, 5
#: Training batches' worth of pairs a shape scores (timed), after SCORE_WARMUP pairs untimed.
SCORED_BATCHES, SCORE_WARMUP = 20, 256
#: The length the truncation shares are measured at (long enough for every pair of the study).
FULL_LENGTH = 512


def sample_pairs(inputs: StudyInputs, seed: int) -> tuple[list[str], list[str]]:
    """The measured pairs' queries and passage texts."""
    rng = random.Random(seed)
    dev_lists = list(iter_run_lists(inputs.dev_run, DEV_DEPTH))
    pairs = [(inputs.dev[q], d) for q, r in rng.sample(dev_lists, min(len(dev_lists), DEV_LISTS)) for d, _ in r]
    pairs += [(inputs.held_q[q], d) for q, r in inputs.held_run.items() for d, _ in r]
    return [q for q, _ in pairs], inputs.docstore.get_many([d for _, d in pairs])


def truncated_shares(encoder: CrossEncoder, queries: list[str], texts: list[str], lengths: tuple[int, ...]) -> dict:
    """Length -> the share of the pairs longer than it, in tokens of ``encoder``'s pair template (the query cut
    at its own maximum, as the encoder cuts it)."""
    tokens = [len(q) + len(p) + encoder.template.num_special
              for q, p in zip(encoder.tokenize(queries, encoder.query_max_length),
                              encoder.tokenize(texts, FULL_LENGTH), strict=True)]
    return {str(n): sum(t > n for t in tokens) / len(tokens) for n in lengths}


def train_rate(shaped: CrossEncoder, queries: list[str], texts: list[str], batch_pairs: int,
               device: torch.device) -> float:
    """Training pairs/s of ``shaped``'s model: forward, backward and an AdamW step on batches of ``batch_pairs``
    pairs, under the training's autocast. The loss (the logits' logsumexp) stands in for the study's: a step
    costs the same whatever the loss."""
    model = shaped.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    dtype = autocast_dtype(None, device)
    model.train()
    start = 0.0
    for step in range(WARMUP_STEPS + TIMED_STEPS):
        if step == WARMUP_STEPS:
            sync(device)
            start = time.perf_counter()
        at = (step * batch_pairs) % max(len(queries) - batch_pairs, 1)
        batch = {k: v.to(device) for k, v in shaped.encode(queries[at: at + batch_pairs],
                                                           texts[at: at + batch_pairs]).items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).logits.float().logsumexp(0).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    model.eval()
    return TIMED_STEPS * batch_pairs / (time.perf_counter() - start)


def score_rate(scorer: CrossEncoder, queries: list[str], texts: list[str], device: torch.device) -> float:
    """Scoring pairs/s of the engine over ``scorer`` (after a warm-up)."""
    engine = ScoringEngine(scorer)
    engine.score_pairs(queries[:SCORE_WARMUP], texts[:SCORE_WARMUP])
    sync(device)
    start = time.perf_counter()
    engine.score_pairs(queries, texts)
    sync(device)
    return len(queries) / (time.perf_counter() - start)


def measure(inputs: StudyInputs, minilm: Path, shapes: tuple[int, ...], device: torch.device, description: str) -> dict:
    """The speed row: train and score pairs/s per shape (MiniLM with that many layers) and the truncation shares."""
    s = inputs.scale
    queries, texts = sample_pairs(inputs, s.seed)
    encoder = load_encoder(minilm, s.seed, max_length=FULL_LENGTH)
    truncated = truncated_shares(encoder, queries, texts, (s.max_length, LONG_LENGTH))
    batch_pairs = s.batch_size * s.group_size
    timed_q, timed_t = queries[: SCORED_BATCHES * batch_pairs], texts[: SCORED_BATCHES * batch_pairs]
    train_pps, score_pps = {}, {}
    for layers in shapes:
        model = make_student(load_encoder(minilm, s.seed, s.max_length).model, layers).to(device)
        shaped = CrossEncoder.from_model(model, encoder.tokenizer, device=device, precision="fp32",
                                         max_length=s.max_length)
        train_pps[str(layers)] = train_rate(shaped, timed_q, timed_t, batch_pairs, device)
        scorer = CrossEncoder.from_model(model, encoder.tokenizer, device=device,
                                         precision="bf16" if device.type == "cuda" else "fp32",
                                         max_length=s.max_length)
        score_pps[str(layers)] = score_rate(scorer, timed_q, timed_t, device)
        print(f"  {layers} layers: train {train_pps[str(layers)]:,.0f} pairs/s, score "
              f"{score_pps[str(layers)]:,.0f} pairs/s", flush=True)
        del model, shaped, scorer
    print(f"  truncated at {s.max_length} tokens: {truncated[str(s.max_length)]:.1%} of {len(queries)} pairs "
          f"(at {LONG_LENGTH}: {truncated[str(LONG_LENGTH)]:.1%})", flush=True)
    return {"device": description, "max_length": s.max_length, "train pairs/s": train_pps,
            "score pairs/s": score_pps, "truncated share": truncated, "pairs measured": len(queries)}
