"""Docstore fetch rate for random ids and its memory, measured in one run.

Fetches ``--fetches`` random ids (default 100,000) from the offset-indexed TSV docstore, one by
one and in batches of 1,000 (as the reranker does), and reports passages/s (target: at least
50,000/s on this CPU) and the resident memory the docstore adds. ``--synthetic N`` first writes
an N-line collection (8841823 = the full MS MARCO passage collection) to show the memory at scale.

    python benchmarks/docstore_speed.py                       # the shared subset
    python benchmarks/docstore_speed.py --synthetic 8841823   # full MS MARCO scale (writes ~400 MB to /tmp)
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from common import SUBSET


def rss_mb() -> float:
    """Resident set size of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_synthetic(path: Path, n: int) -> None:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    with open(path, "w") as out:
        for pid in range(n):
            out.write(f"{pid}\t{' '.join(rng.choices(words, k=8))}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", type=Path, default=SUBSET / "collection.tsv")
    parser.add_argument("--synthetic", type=int, default=0, help="write and use a synthetic collection of N passages")
    parser.add_argument("--fetches", type=int, default=100_000)
    args = parser.parse_args()

    from pipeline.io.data import DocStore

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DISTILRANK_CACHE"] = tmp  # measure a cold build too
        collection = args.collection
        if args.synthetic:
            collection = Path(tmp) / "synthetic.tsv"
            write_synthetic(collection, args.synthetic)
        before = rss_mb()
        start = time.perf_counter()
        store = DocStore(collection)
        build = time.perf_counter() - start
        start = time.perf_counter()
        store = DocStore(collection)
        load = time.perf_counter() - start
        index_mb = (store.keys.nbytes + store.offsets.nbytes + store.lengths.nbytes) / 2**20
        rng = random.Random(0)
        ids = [str(k) for k in rng.choices(store.keys.tolist(), k=args.fetches)]

        start = time.perf_counter()
        for docid in ids[: args.fetches // 10]:
            store.get(docid)
        single = (args.fetches // 10) / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(0, len(ids), 1000):
            store.get_many(ids[i : i + 1000])
        batched = len(ids) / (time.perf_counter() - start)
        after = rss_mb()

    print(f"collection: {collection.name}, {len(store):,} passages")
    print(f"offset index: built in {build:.2f} s, loaded from cache in {load:.3f} s, {index_mb:.1f} MB "
          f"({index_mb * 2**20 / len(store):.0f} bytes/passage)")
    print(f"fetch rate, random ids: {batched:,.0f} passages/s in batches of 1,000; {single:,.0f} passages/s one by one "
          f"(target >= 50,000/s): ratio to target {batched / 50_000:.1f}x")
    print(f"resident memory added by the docstore (RSS, incl. touched mmap pages): {after - before:.0f} MB; "
          f"process peak {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
