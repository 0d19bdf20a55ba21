"""What the integrity checks cost, to hold them to the rule: the checks must not cost more than 2% of a rerank.

Two arms in one run, in interleaved rounds (each round runs both arms, the order alternating): the checks as they
are ("checked"), and the same work with them switched off in this script only ("unchecked": the functions of
``SWITCHED_OFF`` patched with ``unittest.mock`` for the arm's turn). Per round and arm:

- rerank: what ``distilrank rerank`` does once its model is loaded (read the run and the topics, open the
  collection and its token cache, ``rerank_file`` with a journal into a fresh output); pairs/s;
- resume: the same command with ``--resume`` over a completed journal (the arm's own, written by its warm-up
  rerank: nothing is left to score, every chunk is restored from the journal and the run written);
- journal restore: the journal part alone (``Journal`` opened to resume, every record read back and restored by
  ``Reranker.rerank``), ``--repeats`` times;
- opens: the collection's docstore, its token cache, and the token cache after its files were touched (a copied
  cache: the seals' full SHA-1 read), each ``--repeats`` times.

Each ratio is checked time over unchecked time: the median of the rounds' ratios with its interval
(``pipeline.eval.speedups``); overhead = ratio - 1. "Of a rerank": the extra seconds the checks add to one
command (median of the rounds' differences) over the checked rerank command's seconds. The checked arm also
times the checking functions themselves ("direct": calls and seconds inside them), which stays readable when the
A/B difference of a rerank drowns in the machine's noise; where such a function also does work the unchecked
arm does too (decoding a record's JSON, loading the docstore's index), its time is an upper bound.

Data: the MS MARCO subset (``--data``, default ../shared/data/msmarco-subset, else carry/msmarco-subset), its
DL20 topics (``--topics``), the first ``--queries`` queries of a BM25 run (``--run``; default
carry/runs/dl20.bm25.trec.gz with the default data, else the project's MS MARCO-tuned BM25 over ``--data``, the
index built in the temporary folder), their top ``--depth`` reranked by ``--model`` (default the packaged
MiniLM) on the CPU. The docstore's index and the token cache are built in a temporary ``$DISTILRANK_CACHE``.

    python benchmarks/check_cost.py               # 20 queries x 100, 5 rounds: about 10 min on 2 idle cores
    python benchmarks/check_cost.py --queries 2 --depth 10 --rounds 1 --repeats 2 --out /tmp/check_cost.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
import types
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from common import (
    CARRY,
    MSMARCO_PASSAGES,
    RESULTS,
    SUBSET,
    device_description,
    machine,
    model_label,
    packaged_minilm,
    plain_file,
    write_results,
)

from pipeline.defaults import DEFAULT_HITS, RERANK_DEPTH
from pipeline.eval.speedups import speedup
from pipeline.io import data as data_module
from pipeline.io import runs as runs_module
from pipeline.io.data import DocStore, read_topics
from pipeline.io.runs import Run
from pipeline.io.textfiles import checked_id
from pipeline.rerank import stage
from pipeline.rerank.cross_encoder import CrossEncoder
from pipeline.rerank.options import RuntimeOptions
from pipeline.rerank.stage import Reranker, check_inputs, plan_chunks, rerank_file
from pipeline.rerank.token_cache import TokenCache
from pipeline.runtime import integrity, journal
from pipeline.runtime.journal import Journal, identity, journal_path, source_identity

DATA_DIRS = (SUBSET, CARRY / "msmarco-subset")
#: The default data's BM25 run (``prepare_gpu_inputs.py`` writes it, gzipped).
CARRY_RUNS, CARRY_RUN = CARRY / "runs", "dl20.bm25.trec"
CHECKED, UNCHECKED = "checked", "unchecked"
ARMS = (CHECKED, UNCHECKED)
RULE_PCT = 2.0
#: Bytes before a record's body on a journal line: ``{"crc":"1a2b3c4d",``.
CRC_PREFIX = len(b'{"crc":"%08x",' % 0)


# ---- the checks, and what stands in for them in the unchecked arm -----------------------------------------


def _parse_unchecked(self: Journal, line: bytes, lineno: int) -> dict[str, Any]:
    """A journal line's record, its checksum and shape not checked."""
    return json.loads(b"{" + line[CRC_PREFIX:-1])


def _heads_unchecked(record, run, depth, missing, plan, share) -> list[tuple[str, list[tuple[str, float]]]]:
    """A record's ranked heads as the journal holds them, not checked against the run and its plan."""
    return [(qid, [(str(d), float(s)) for d, s in head]) for qid, head, _ in record["queries"]]


def _index_unchecked(cache: Path, stat: os.stat_result):
    """The docstore's offset index loaded without its row checks (the zip's CRC-32s, checked by ``np.load``,
    stay: the index was read that way before the checks)."""
    if not cache.is_file():
        return None
    with np.load(cache, allow_pickle=False) as data:
        if int(data["size"]) != stat.st_size or int(data["mtime_ns"]) != stat.st_mtime_ns:
            return None
        return data["keys"], data["offsets"], data["lengths"]


@dataclass(frozen=True)
class Check:
    """A check: what it is, where it lives (``owners``' ``attribute``), what replaces it in the unchecked arm
    (``off``), and how the checked arm times it (``metered``: given a timing wrapper, the attribute's value)."""

    key: str
    what: str
    owners: tuple
    attribute: str
    off: Any
    metered: Callable[[Callable], Any]
    bound: str = ""


SWITCHED_OFF = (
    Check("journal_crc", "journal: the CRC-32 of each record line, computed on append and verified on read "
          "(pipeline.runtime.journal's zlib.crc32 returns 0)", (journal,), "zlib",
          types.SimpleNamespace(crc32=lambda data: 0), lambda wrap: types.SimpleNamespace(crc32=wrap(zlib.crc32))),
    Check("journal_records", "journal: each record line checked when read (checksum compared, a JSON object with a "
          "chunk number; Journal._parse replaced by a bare json.loads)", (Journal,), "_parse", _parse_unchecked,
          lambda wrap: wrap(Journal._parse), "includes decoding the record's JSON"),
    Check("restored_records", "rerank resume: each restored record checked against the run and its plan (its "
          "chunk, its queries in order, every docid a candidate and once, finite scores, counts; "
          "stage._recorded_heads replaced by a bare conversion)", (stage,), "_recorded_heads", _heads_unchecked,
          lambda wrap: wrap(stage._recorded_heads), "includes converting the records' scores"),
    Check("seals", "seals of the token cache's files checked on open (stat, 256 KiB sampled SHA-1, the full "
          "SHA-1 after a touch; integrity.check returns the seal recorded)", (integrity,), "check",
          lambda path, sealed: dict(sealed), lambda wrap: wrap(integrity.check)),
    Check("docstore_index", "the docstore's offset index checked on load (its arrays' shapes, ids in order, "
          "offsets within the collection; DocStore._cached_index without the row checks)", (DocStore,),
          "_cached_index", staticmethod(_index_unchecked), lambda wrap: staticmethod(wrap(DocStore._cached_index)),
          "includes loading the index"),
    Check("ids", "ids read from the topics and MS MARCO-format runs checked (empty, whitespace inside; "
          "checked_id returns the id stripped)", (data_module, runs_module), "checked_id",
          lambda value, what, path, lineno: value.strip(), lambda wrap: wrap(checked_id)),
)
STAYS_ON = (
    "the journal's header: the SHA-1 of the run, topics, collection and model files (journal.identity; "
    "its time is reported as 'input identities')",
    "a chunk recorded twice in a journal (a dict lookup a line), a torn last line dropped",
    "the token cache's offsets read once and their order checked, its ids checked against the vocabulary on "
    "each gather",
    "missing and empty passages, NaN scores, ids with whitespace refused when the run is written",
    "the model's layers checked against its config (at load, outside the timed work)",
)


class Meter:
    """Calls and seconds spent inside the checks, by check (the checked arm's direct accounting). A check called
    inside another (the CRC-32 of a record read back) counts its call, its seconds belong to the outer one."""

    def __init__(self) -> None:
        self.seconds: Counter = Counter()
        self.calls: Counter = Counter()
        self.inside = False

    def wrapper(self, key: str) -> Callable[[Callable], Callable]:
        def wrap(function: Callable) -> Callable:
            def timed(*args, **kwargs):
                self.calls[key] += 1
                if self.inside:
                    return function(*args, **kwargs)
                self.inside, start = True, time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    self.seconds[key] += time.perf_counter() - start
                    self.inside = False
            return timed
        return wrap

    def take(self) -> dict[str, dict[str, float]]:
        """What was spent since the last ``take``, by check; the meter starts again at zero."""
        spent = {key: {"calls": self.calls[key], "seconds": self.seconds[key]} for key in self.calls}
        self.seconds.clear()
        self.calls.clear()
        return spent


@contextlib.contextmanager
def arm(name: str, meter: Meter) -> Iterator[None]:
    """The checks metered (``checked``) or switched off (``unchecked``) while the block runs."""
    with contextlib.ExitStack() as stack:
        for check in SWITCHED_OFF:
            for owner in check.owners:
                value = check.metered(meter.wrapper(check.key)) if name == CHECKED else check.off
                stack.enter_context(mock.patch.object(owner, check.attribute, value))
        yield


# ---- inputs -----------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """The inputs and the model, shared by both arms, and each arm's completed journal."""

    args: argparse.Namespace
    work: Path
    collection: Path
    run_file: Path
    topics_file: Path
    encoder: CrossEncoder
    options: RuntimeOptions
    pairs: int
    meter: Meter
    templates: dict[str, Path]
    headers: dict[str, dict]

    @property
    def sources(self) -> dict[str, Path]:
        return {"run": self.run_file, "topics": self.topics_file, "passages": self.collection}


def data_folder(data: Path | None) -> Path:
    folder = next((d for d in ([data] if data else DATA_DIRS) if d.is_dir()), None)
    if folder is None:
        raise SystemExit(f"no data folder: give --data (looked in {', '.join(map(str, DATA_DIRS))})")
    return folder


def bm25_run(collection: Path, topics: dict[str, str], work: Path) -> Run:
    """The project's MS MARCO-tuned BM25 over ``collection`` for ``topics`` (the index built under ``work``)."""
    from pipeline.retrieval.bm25 import BM25, build_index

    index = build_index(collection, work / "bm25-index", threads=os.cpu_count() or 1)
    return BM25.msmarco(index).batch_search(topics, k=DEFAULT_HITS, progress=False)


def prepare_inputs(args: argparse.Namespace, work: Path) -> tuple[Path, Path, Path, str]:
    """The collection, and a run and topics file of the first ``--queries`` queries (each query's candidates
    all kept); and where the run came from."""
    folder = data_folder(args.data)
    collection = plain_file(folder, "collection.tsv", work)
    dl20 = folder / "queries.dl20.tsv"
    topics_file = args.topics or (dl20 if dl20.is_file() else next(iter(sorted(folder.glob("queries*.tsv"))), None))
    if collection is None or topics_file is None:
        raise SystemExit(f"{folder} needs collection.tsv[.gz] and a queries*.tsv (or give --topics)")
    topics = read_topics(topics_file)
    if args.run is not None:
        run, source = Run.read(args.run), str(args.run)
    elif (folder.resolve() in {d.resolve() for d in DATA_DIRS}
          and (carried := plain_file(CARRY_RUNS, CARRY_RUN, work)) is not None):
        run, source = Run.read(carried), f"{CARRY_RUN} (carry/runs)"
    else:
        wanted = dict(list(topics.items())[: args.queries])
        run, source = bm25_run(collection, wanted, work), f"BM25 (MS MARCO-tuned) over {collection}"
    qids = [qid for qid in run if qid in topics][: args.queries]
    if len(qids) < args.queries:
        raise SystemExit(f"only {len(qids)} queries of the run have text in {topics_file}, {args.queries} asked")
    run_file = run.subset(qids).write(work / "run.trec")
    topics_out = work / "topics.tsv"
    topics_out.write_text("".join(f"{qid}\t{topics[qid]}\n" for qid in qids), encoding="utf-8")
    return collection, run_file, topics_out, source


# ---- one command's work -----------------------------------------------------------------------------------


def command(bench: Bench, output: Path, resume: bool):
    """What ``distilrank rerank`` does once its model is loaded: read the run and topics, open the collection and
    its token cache, rerank into ``output`` with a journal (``resume``: from the journal there). Its seconds and
    timing."""
    start = time.perf_counter()
    run, topics = Run.read(bench.run_file), read_topics(bench.topics_file)
    with DocStore(bench.collection) as docstore:
        missing = check_inputs(run, topics, docstore, bench.args.depth)
        reranker = Reranker.from_options(bench.encoder, bench.options, docstore, chunk_pairs=bench.args.chunk_pairs,
                                         progress=False)
        timing = rerank_file(reranker, run, topics, docstore, output, bench.args.depth, bench.sources,
                             resume=resume, missing=missing)
    seconds = time.perf_counter() - start
    for leftover in (output, output.with_name(output.name + ".timing.json")):
        leftover.unlink(missing_ok=True)
    return seconds, timing


def expect(condition: bool, what: str) -> None:
    """A benchmark measuring the wrong work stops (and says what went wrong)."""
    if not condition:
        raise RuntimeError(f"check_cost: {what}")


def write_template(bench: Bench, name: str) -> None:
    """The arm's warm-up: a rerank whose completed journal is kept (the resume measurements' input)."""
    output = bench.work / f"template-{name}.trec"
    with mock.patch.object(Journal, "remove", lambda self: None):
        command(bench, output, resume=False)
    template = bench.work / f"{name}.journal"
    journal_path(output).rename(template)
    with open(template, "rb") as handle:
        header = json.loads(handle.readline())
    header.pop("journal")
    bench.templates[name], bench.headers[name] = template, header


def measure_rerank(bench: Bench, name: str, r: int) -> dict:
    bench.meter.take()
    seconds, timing = command(bench, bench.work / f"rerank-{name}-{r}.trec", resume=False)
    expect(timing.pairs == bench.pairs, f"the rerank scored {timing.pairs} pairs, not {bench.pairs}")
    return {"count": 1, "pairs": timing.pairs, "seconds": seconds, "pairs_per_s": timing.pairs / seconds,
            "checks": bench.meter.take()}


def measure_resume(bench: Bench, name: str, r: int) -> dict:
    output = bench.work / f"resume-{name}-{r}.trec"
    shutil.copyfile(bench.templates[name], journal_path(output))
    bench.meter.take()
    seconds, timing = command(bench, output, resume=True)
    expect(timing.pairs == 0 and timing.extra["resumed_pairs"] == bench.pairs,
           f"the resume scored {timing.pairs} pairs and restored {timing.extra['resumed_pairs']}")
    return {"count": 1, "pairs": bench.pairs, "seconds": seconds, "checks": bench.meter.take()}


def measure_restore(bench: Bench, name: str, reranker: Reranker, docstore: DocStore) -> dict:
    """The journal opened to resume and every record restored, ``--repeats`` times (nothing scored)."""
    run, topics = Run.read(bench.run_file), read_topics(bench.topics_file)
    missing = check_inputs(run, topics, docstore, bench.args.depth)
    plan = plan_chunks(run, bench.args.depth, missing, reranker.engine.chunk_pairs)
    path = bench.work / f"restore-{name}.journal"
    shutil.copyfile(bench.templates[name], path)
    bench.meter.take()
    start = time.perf_counter()
    for _ in range(bench.args.repeats):
        restored = Journal(path, bench.headers[name], resume=True)
        _, timing = reranker.rerank(run, topics, docstore, bench.args.depth, missing=missing, journal=restored,
                                    plan=plan)
        expect(timing.pairs == 0 and timing.extra["resumed_pairs"] == bench.pairs, "the restore scored pairs")
    return {"count": bench.args.repeats, "pairs": bench.pairs, "chunks": len(plan),
            "chunk_pairs": reranker.engine.chunk_pairs, "seconds": time.perf_counter() - start,
            "checks": bench.meter.take()}


def repeated(bench: Bench, work: Callable[[], object], before: Callable[[], object] | None = None) -> dict:
    """``work`` timed ``--repeats`` times (``before`` each time, untimed)."""
    bench.meter.take()
    seconds = 0.0
    for _ in range(bench.args.repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        work()
        seconds += time.perf_counter() - start
    return {"count": bench.args.repeats, "seconds": seconds, "checks": bench.meter.take()}


def measure_opens(bench: Bench, docstore: DocStore) -> dict[str, dict]:
    """Opening the docstore, its token cache, and the token cache after its files were touched."""
    files = TokenCache.files(docstore, bench.encoder.passage_cache(docstore, progress=False).key)

    def touch() -> None:
        now = time.time_ns()
        for name in ("ids", "offsets"):
            os.utime(files[name], ns=(now, now))

    return {"docstore_open": repeated(bench, lambda: DocStore(bench.collection).close()),
            "cache_open": repeated(bench, lambda: bench.encoder.passage_cache(docstore, progress=False)),
            "cache_open_touched": repeated(bench, lambda: bench.encoder.passage_cache(docstore, progress=False),
                                           before=touch)}


def renew_seals(bench: Bench) -> None:
    """The token cache opened with the checks on, untimed: the seals a touch left stale (the other arm's
    ``cache_open_touched``, whose unchecked opens never renew them) are renewed, so that the arm about to run
    does not pay the full SHA-1 in its first open."""
    with DocStore(bench.collection) as docstore:
        bench.encoder.passage_cache(docstore, progress=False)


def turn(bench: Bench, name: str, r: int) -> dict[str, dict]:
    """One arm's measurements of round ``r``."""
    results = {"rerank": measure_rerank(bench, name, r), "resume": measure_resume(bench, name, r)}
    with DocStore(bench.collection) as docstore:
        reranker = Reranker.from_options(bench.encoder, bench.options, docstore, chunk_pairs=bench.args.chunk_pairs,
                                         progress=False)
        results["restore"] = measure_restore(bench, name, reranker, docstore)
        results.update(measure_opens(bench, docstore))
    return results


def input_identities(bench: Bench) -> float:
    """Seconds to name the inputs in a journal's header (the SHA-1 of each input file and of the model)."""
    start = time.perf_counter()
    for path in bench.sources.values():
        identity(path)
    source_identity(bench.encoder.source)
    return time.perf_counter() - start


# ---- summary ----------------------------------------------------------------------------------------------

MEASUREMENTS = {  # key: (label, what one operation is)
    "rerank": ("rerank command", "command"),
    "resume": ("resume command (nothing left to score)", "command"),
    "restore": ("journal restore alone", "restore"),
    "docstore_open": ("docstore open", "open"),
    "cache_open": ("token cache open", "open"),
    "cache_open_touched": ("token cache open after a touch", "open"),
}


def compare(rounds: dict[str, list[dict]], key: str, rerank_s: float) -> dict:
    """One measurement's arms side by side: seconds an operation each (median), checked/unchecked time ratio
    (median of the rounds' ratios, interval), the overhead, the extra seconds an operation and their share of a
    rerank."""
    checked, unchecked = ([run[key] for run in rounds[name]] for name in ARMS)
    ratio = speedup([u["count"] for u in unchecked], [u["seconds"] for u in unchecked],
                    [c["count"] for c in checked], [c["seconds"] for c in checked])  # checked time / unchecked
    extra = float(np.median([c["seconds"] / c["count"] - u["seconds"] / u["count"]
                             for c, u in zip(checked, unchecked, strict=True)]))
    each = {name: float(np.median([m["seconds"] / m["count"] for m in runs])) for name, runs in
            ((CHECKED, checked), (UNCHECKED, unchecked))}
    return {"seconds": each, "time_ratio": {**ratio.to_dict(), "text": str(ratio)},
            "overhead_pct": {"median": 100 * (ratio.median - 1), "low": 100 * (ratio.low - 1),
                             "high": 100 * (ratio.high - 1)},
            "extra_s": extra, "of_rerank_pct": 100 * extra / rerank_s}


def direct(rounds: list[dict], key: str, rerank_s: float) -> dict[str, dict]:
    """The checked arm's seconds inside each check during ``key`` (median over rounds, an operation each), and
    their share of a rerank."""
    out = {}
    for check in SWITCHED_OFF:
        spent = [run[key]["checks"].get(check.key, {"calls": 0, "seconds": 0.0}) for run in rounds]
        seconds = float(np.median([s["seconds"] / run[key]["count"] for s, run in zip(spent, rounds, strict=True)]))
        calls = float(np.median([s["calls"] / run[key]["count"] for s, run in zip(spent, rounds, strict=True)]))
        out[check.key] = {"calls": calls, "seconds": seconds, "of_rerank_pct": 100 * seconds / rerank_s,
                          "upper_bound": check.bound}
    return out


def summarise(rounds: dict[str, list[dict]]) -> dict:
    rerank_s = float(np.median([run["rerank"]["seconds"] for run in rounds[CHECKED]]))
    summary = {key: compare(rounds, key, rerank_s) for key in MEASUREMENTS}
    throughput = {name: float(np.median([run["rerank"]["pairs_per_s"] for run in rounds[name]])) for name in ARMS}
    summary["rerank"]["pairs_per_s"] = throughput
    summary["rerank"]["throughput_ratio"] = throughput[CHECKED] / throughput[UNCHECKED]
    checks = {key: direct(rounds[CHECKED], key, rerank_s) for key in MEASUREMENTS}
    spent = {key: sum(c["of_rerank_pct"] for c in checks[key].values())
             for key in ("rerank", "resume", "cache_open_touched")}
    verdict = {"rule_pct": RULE_PCT, "rerank_direct_pct": spent["rerank"],
               "rerank_ab_pct": summary["rerank"]["overhead_pct"], "rerank_ab_too_wide":
               summary["rerank"]["time_ratio"]["too_wide"], "resume_direct_pct": spent["resume"],
               "touched_open_direct_pct": spent["cache_open_touched"],
               "within_rule": bool(max(spent.values()) <= RULE_PCT)}
    return {"rerank_seconds": rerank_s, "measurements": summary, "direct": checks, "verdict": verdict}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f} ms" if abs(seconds) < 10 else f"{seconds:,.1f} s"


def markdown(record: dict) -> str:
    meta, work, summary = record["meta"], record["work"], record["summary"]
    m = summary["measurements"]
    scale = MSMARCO_PASSAGES / work["passages"]
    lines = [f"# check_cost ({meta['device']}, {meta['when']})", "",
             f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, host {meta['machine']['host']}; "
             f"torch {meta['torch']}, {meta['threads']} threads. Load average (1, 5, 15 min) at start "
             f"{', '.join(f'{x:.2f}' for x in meta['load_start'])}, at end "
             f"{', '.join(f'{x:.2f}' for x in meta['load_end'])}. {meta['seconds']:.0f} s in all.", "",
             f"Work: {work['queries']} queries of {work['run']}, top {work['depth']} of each reranked by "
             f"{work['model']} = {work['pairs']:,} pairs in {work['chunks']} chunk(s) of at most "
             f"{work['chunk_pairs']:,} pairs; journal {work['journal_bytes']:,} bytes; collection "
             f"{work['passages']:,} passages; {meta['rounds']} interleaved rounds, {meta['repeats']} repeats of "
             "each cheap measurement a round.", "",
             f"Rerank command: {m['rerank']['pairs_per_s'][CHECKED]:,.1f} pairs/s checked, "
             f"{m['rerank']['pairs_per_s'][UNCHECKED]:,.1f} unchecked (throughput ratio "
             f"{m['rerank']['throughput_ratio']:.4f}).", "",
             "| measurement | checked | unchecked | checked/unchecked (time) | overhead | extra | of a rerank |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for key, (label, per) in MEASUREMENTS.items():
        r = m[key]
        lines.append(f"| {label} (one {per}) | {_ms(r['seconds'][CHECKED])} | {_ms(r['seconds'][UNCHECKED])} | "
                     f"{r['time_ratio']['text']} | {r['overhead_pct']['median']:+.2f}% | {_ms(r['extra_s'])} | "
                     f"{r['of_rerank_pct']:+.3f}% |")
    lines += ["", "Direct accounting (checked arm: time inside each check, median over rounds, share of a rerank; "
              "a check called inside another counts its calls, its time belongs to the outer one):",
              "", "| check | rerank: calls | rerank: time | of a rerank | resume: calls | resume: time | of a rerank |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for check in SWITCHED_OFF:
        a, b = summary["direct"]["rerank"][check.key], summary["direct"]["resume"][check.key]
        lines.append(f"| {check.key}{' (upper bound)' if check.bound else ''} | {a['calls']:.0f} | "
                     f"{_ms(a['seconds'])} | {a['of_rerank_pct']:.4f}% | {b['calls']:.0f} | {_ms(b['seconds'])} | "
                     f"{b['of_rerank_pct']:.4f}% |")
    v = summary["verdict"]
    identities = record["identity_seconds"]
    lines += ["", f"Input identities (the journal header's SHA-1s; on in both arms): {_ms(identities)} a command, "
              f"{100 * identities / summary['rerank_seconds']:.2f}% of a rerank.", "",
              f"**Rule (checks <= {RULE_PCT:g}% of a rerank, by direct accounting): "
              f"{'met' if v['within_rule'] else 'NOT met'}**: the rerank command's checks "
              f"{v['rerank_direct_pct']:.3f}%, a resume's {v['resume_direct_pct']:.3f}%, a token cache open after a "
              f"touch {v['touched_open_direct_pct']:.3f}%. A/B of the rerank command: "
              f"{v['rerank_ab_pct']['median']:+.2f}% (interval {v['rerank_ab_pct']['low']:+.2f}% to "
              f"{v['rerank_ab_pct']['high']:+.2f}%{'; too wide to call' if v['rerank_ab_too_wide'] else ''}).", "",
              f"The full SHA-1 after a touch reads the whole token cache ({work['cache_bytes'] / 1e6:,.1f} MB here): "
              f"at MS MARCO's {MSMARCO_PASSAGES:,} passages about {work['cache_bytes'] * scale / 1e9:.2f} GB, "
              f"{m['cache_open_touched']['extra_s'] * scale:.1f} s once after a copy (scaled from here).", "",
              "Switched off in the unchecked arm (this script only):", ""]
    lines += [f"- `{c['check']}`: {c['what']}" + (f" (direct time: upper bound, {c['bound']})" if c["bound"] else "")
              for c in record["switched_off"]]
    lines += ["", "On in both arms:", ""] + [f"- {what}" for what in record["stays_on"]]
    return "\n".join(lines) + "\n"


# ---- main -------------------------------------------------------------------------------------------------


def run_rounds(bench: Bench) -> tuple[dict[str, list[dict]], list[float]]:
    """Both arms each round, the order alternating; each arm's warm-up (its template journal) first."""
    for name in ARMS:
        with arm(name, bench.meter):
            write_template(bench, name)
    rounds: dict[str, list[dict]] = {name: [] for name in ARMS}
    identities = []
    for r in range(bench.args.rounds):
        identities.append(input_identities(bench))
        for name in ARMS if r % 2 == 0 else ARMS[::-1]:
            renew_seals(bench)  # outside the arm: the checks on and not metered, whichever arm runs next
            with arm(name, bench.meter):
                rounds[name].append(turn(bench, name, r))
        c, u = rounds[CHECKED][-1], rounds[UNCHECKED][-1]
        print(f"round {r + 1}/{bench.args.rounds}: rerank {c['rerank']['pairs_per_s']:.1f} vs "
              f"{u['rerank']['pairs_per_s']:.1f} pairs/s; resume {c['resume']['seconds']:.3f} vs "
              f"{u['resume']['seconds']:.3f} s; restore {c['restore']['seconds']:.3f} vs {u['restore']['seconds']:.3f} "
              f"s; token cache opens {c['cache_open']['seconds']:.3f} vs {u['cache_open']['seconds']:.3f} s "
              f"(checked vs unchecked)", flush=True)
    return rounds, identities


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=20, help="queries reranked (the run's first; default 20)")
    parser.add_argument("--depth", type=int, default=RERANK_DEPTH, help="candidates reranked a query (default "
                        "%(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of both arms (default 5)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="repeats a round of the cheap measurements: journal restore, opens (default 20)")
    parser.add_argument("--model", type=Path, default=None, help="cross-encoder (default: the packaged MiniLM)")
    parser.add_argument("--data", type=Path, default=None, help="folder with collection.tsv[.gz] and queries*.tsv "
                        "(default ../shared/data/msmarco-subset, else carry/msmarco-subset)")
    parser.add_argument("--topics", type=Path, default=None,
                        help="topics TSV (default: DATA/queries.dl20.tsv, else the first DATA/queries*.tsv)")
    parser.add_argument("--run", type=Path, default=None, help="first-stage run (default: carry/runs/dl20.bm25."
                        "trec.gz with the default data, else BM25 over DATA)")
    parser.add_argument("--chunk-pairs", type=int, default=None, help="pairs a chunk (a journal record; default: "
                        "the engine's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS / "check_cost_cpu.json",
                        help="results JSON, with a .md beside (default %(default)s)")
    args = parser.parse_args(argv)
    if min(args.queries, args.depth, args.rounds, args.repeats) < 1:
        parser.error("--queries, --depth, --rounds and --repeats must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start, started = os.getloadavg(), time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["DISTILRANK_CACHE"] = str(work / "cache")  # built here, never touching the user's cache
        collection, run_file, topics_file, run_source = prepare_inputs(args, work)
        options = RuntimeOptions(device="cpu")
        encoder = CrossEncoder(args.model or packaged_minilm(), **options.encoder_kwargs())
        with DocStore(collection) as docstore:  # the docstore's index and the token cache built, untimed
            passages = len(docstore)
            cache = encoder.passage_cache(docstore, progress=False)
            if cache is None:
                raise SystemExit(f"{encoder.source} cannot read passages from a token cache (see the log): nothing "
                                 "to measure its seals on")
            cache_bytes = sum(TokenCache.files(docstore, cache.key)[name].stat().st_size for name in ("ids", "offsets"))
        pairs = sum(min(len(ranking), args.depth) for _, ranking in Run.read(run_file).items())
        bench = Bench(args, work, collection, run_file, topics_file, encoder, options, pairs, Meter(), {}, {})
        print(f"{args.queries} queries x top {args.depth} = {pairs:,} pairs ({run_source}); {passages:,} passages; "
              f"{device_description('cpu')}; load average {load_start[0]:.2f}", flush=True)
        rounds, identities = run_rounds(bench)
        template = bench.templates[CHECKED]
        work_record = {"queries": args.queries, "depth": args.depth, "pairs": pairs, "run": run_source,
                       "model": model_label(encoder.source), "passages": passages,
                       "chunks": rounds[CHECKED][0]["restore"]["chunks"],
                       "chunk_pairs": rounds[CHECKED][0]["restore"]["chunk_pairs"],
                       "journal_bytes": template.stat().st_size, "cache_bytes": cache_bytes}
    meta = {"machine": machine(), "device": device_description("cpu"), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "rounds": args.rounds, "repeats": args.repeats,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(time.time() - started, 1),
            "load_start": load_start, "load_end": os.getloadavg()}
    record = {"meta": meta, "work": work_record, "identity_seconds": float(np.median(identities)),
              "switched_off": [{"check": c.key, "what": c.what, "bound": c.bound} for c in SWITCHED_OFF],
              "stays_on": list(STAYS_ON), "summary": summarise(rounds), "arms": rounds}
    table = write_results(args.out, record, markdown(record))
    v = record["summary"]["verdict"]
    print(f"rule (checks <= {RULE_PCT:g}% of a rerank, direct accounting): {'met' if v['within_rule'] else 'NOT met'}"
          f": rerank {v['rerank_direct_pct']:.3f}%, resume {v['resume_direct_pct']:.3f}%, token cache open after a "
          f"touch {v['touched_open_direct_pct']:.3f}%; A/B of the rerank {v['rerank_ab_pct']['median']:+.2f}%"
          f"{' (too wide to call)' if v['rerank_ab_too_wide'] else ''}")
    for key, (label, _) in MEASUREMENTS.items():
        r = record["summary"]["measurements"][key]
        print(f"  {label}: checked/unchecked {r['time_ratio']['text']}, overhead {r['overhead_pct']['median']:+.2f}%, "
              f"extra {_ms(r['extra_s'])} ({r['of_rerank_pct']:+.3f}% of a rerank)")
    print(f"done in {meta['seconds']}s (load average {meta['load_start'][0]:.2f} -> {meta['load_end'][0]:.2f}); "
          f"results written to {args.out} and {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
