"""The bad-input corpus (issue 11): every command given missing, empty, malformed, non-UTF-8, BOM, CRLF,
duplicate, NaN/inf, unknown, mistyped or dangerous inputs and outputs.

Each case is data: a command (the clean command line of ``CLEAN`` with some flags changed), the files the case
writes into its own folder, and the outcome expected: exit 0 with the clean command's result, or exit 2 with one
line ``distilrank: error: FILE[:LINE]: message``. After every case: no traceback, the shared inputs unchanged,
no output left by a refused command, no temporary or lock file anywhere. Placeholders: ``{t}`` the case's folder,
``{w}`` the shared world (``world``), ``{c}`` ``{q}`` ``{qrels}`` ``{run}`` ``{msrun}`` ``{model}`` ``{base}``
``{teacher}`` ``{student}`` ``{three}`` (a 3-label classifier) ``{scores}`` ``{index}`` ``{blank_index}`` (an
index whose passages are all blank) ``{config}`` ``{meta}`` its files.

Cheap commands run in this process (``pipeline.cli.main``); signals, ``kill -9`` and two writers at once run in
subprocesses at the end of the module.
"""
from __future__ import annotations

import bz2
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")

BOM = b"\xef\xbb\xbf"
TEMPORARY = re.compile(r"(\.tmp$|^\..*\.lock$|\.partial$|\.body$)")

#: The clean command line of every command; a case changes some flags (a value of None drops the flag).
CLEAN: dict[str, dict[str, str | None]] = {
    "index": {"--collection": "{c}", "--index": "{t}/idx"},
    "retrieve": {"--index": "{index}", "--topics": "{q}", "--output": "{t}/out.trec", "--hits": "5"},
    "encode": {"--model": "{base}", "--collection": "{c}", "--output": "{t}/dense", "--device": "cpu",
               "--no-progress": None},
    "evaluate": {"--run": "{run}", "--qrels": "{qrels}"},
    "tokenize": {"--collection": "{c}", "--model": "{model}", "--no-progress": None},
    "rerank": {"--run": "{run}", "--topics": "{q}", "--collection": "{c}", "--model": "{model}",
               "--output": "{t}/out.trec", "--depth": "4", "--device": "cpu", "--no-progress": None},
    "score": {"--model": "{model}", "--run": "{run}", "--topics": "{q}", "--collection": "{c}",
              "--output": "{t}/out.scores", "--score-depth": "4", "--device": "cpu"},
    "train": {"--init": "{base}", "--topics": "{q}", "--qrels": "{qrels}", "--run": "{run}", "--collection": "{c}",
              "--output": "{t}/teacher", "--negatives": "3", "--batch-size": "4", "--max-steps": "1",
              "--max-length": "48", "--device": "cpu", "--no-progress": None},
    "distill": {"--procedure": "ranker-distill", "--teacher": "{teacher}", "--layers": "1", "--topics": "{q}",
                "--run": "{run}", "--collection": "{c}", "--scores": "{scores}", "--output": "{t}/student",
                "--group-size": "4", "--score-depth": "4", "--batch-size": "4", "--max-steps": "1",
                "--max-length": "48", "--device": "cpu", "--no-progress": None},
    "compare": {"--config": "{config}", "--output": "{t}/cmp", "--no-progress": None},
    "submit": {"--run": "{msrun}", "--out": "{t}/sub", "--metadata": "{meta}"},
    "validate": {"--run": "{msrun}", "--topics": "{q}", "--qrels": "{qrels}"},
    "demo": {"--output": "{t}/demo", "--models": "{t}/models", "--no-progress": None},  # only refusals: minutes
}
#: Where each command's result lies (compared with the clean command's for the cases that must not change it).
RESULT = {"index": "idx", "encode": "dense/docids.npy", "retrieve": "out.trec", "rerank": "out.trec",
          "score": "out.scores",
          "train": "teacher/distilrank_train.json", "distill": "student/distilrank_train.json",
          "compare": "cmp/report.json", "submit": "sub/dev.txt.bz2"}


# ---- the world: small clean inputs shared by every case (never changed) -------------------------------------


class World(dict):
    """Placeholder -> path of the clean inputs."""

    def text(self, key: str) -> str:
        return Path(self[key]).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert, tiny_data) -> World:
    root = tmp_path_factory.mktemp("world")
    data = tiny_data(root / "data", queries=8, per_query=12)
    w = World(w=str(root), c=str(data["collection"]), q=str(data["topics"]), qrels=str(data["qrels"]),
              run=str(data["run"]))
    msrun = root / "data" / "run.tsv"
    rows = (line.split() for line in w.text("run").splitlines())
    msrun.write_text("".join(f"{qid}\t{docid}\t{rank}\n" for qid, _, docid, rank, _, _ in rows))
    w["msrun"] = str(msrun)
    w["model"] = str(tiny_bert(root / "model", layers=2, labels=1, seed=3))
    w["student"] = str(tiny_bert(root / "student", layers=1, labels=1, seed=4))
    w["teacher"] = str(tiny_bert(root / "teacher", layers=2, labels=1, seed=5))
    w["base"] = str(tiny_bert(root / "base", layers=2, labels=None, seed=6))
    w["three"] = str(tiny_bert(root / "three", layers=1, labels=3, seed=7))
    (root / "meta.json").write_text('{"team": "t", "model_description": "tiny"}\n')
    w["meta"] = str(root / "meta.json")
    w["config"] = str(root / "compare.toml")
    Path(w["config"]).write_text(config_text(w))
    from pipeline.retrieval.bm25 import build_index

    w["index"] = str(build_index(w["c"], root / "index"))
    blank = root / "blank.tsv"  # no-break spaces: Lucene keeps such a passage (its trim leaves them), Python's strips
    blank.write_text("".join(f"{line.split(chr(9))[0]}\t\u00a0\n" for line in w.text("c").splitlines()))
    w["blank_index"] = str(build_index(blank, root / "blank-index"))
    w["scores"] = str(root / "teacher.scores")
    assert main(["score", "--model", w["teacher"], "--run", w["run"], "--topics", w["q"], "--collection", w["c"],
                 "--output", w["scores"], "--score-depth", "4", "--device", "cpu"]) == 0
    return w


def config_text(w: World, **changes: str) -> str:
    """The compare config over the world's files; ``changes`` replaces whole ``key = value`` lines."""
    lines = {
        "name": '"bad-input"', "collection": f'"{w["c"]}"', "topics": f'"{w["q"]}"', "qrels": f'"{w["qrels"]}"',
        "run": f'"{w["run"]}"', "hits": "12", "depth": "4", "device": '"cpu"', "warmup_queries": "0",
        "teacher": f'"{w["model"]}"', "student": f'"{w["student"]}"', "measures": '["nDCG@10"]',
        "permutations": "50", **changes}
    return (f'name = {lines["name"]}\n[data]\ncollection = {lines["collection"]}\ntopics = {lines["topics"]}\n'
            f'qrels = {lines["qrels"]}\n[first_stage]\nrun = {lines["run"]}\nhits = {lines["hits"]}\n'
            f'[rerank]\ndepth = {lines["depth"]}\ndevice = {lines["device"]}\n'
            f'warmup_queries = {lines["warmup_queries"]}\n'
            f'[teacher]\nname = "teacher"\nmodel = {lines["teacher"]}\n[[students]]\nname = "student"\n'
            f'model = {lines["student"]}\n[evaluation]\nmeasures = {lines["measures"]}\n'
            f'permutations = {lines["permutations"]}\n')


# ---- file contents a case writes: derived from the world's clean files ---------------------------------------

Content = Callable[[World], bytes]


def same(key: str) -> Content:
    return lambda w: Path(w[key]).read_bytes()


def bom(key: str) -> Content:
    return lambda w: BOM + Path(w[key]).read_bytes()


def crlf(key: str) -> Content:
    return lambda w: Path(w[key]).read_bytes().replace(b"\n", b"\r\n")


def not_utf8(key: str, line: int = 3) -> Content:
    """Line ``line`` of the file gets a Latin-1 byte (0xE9, 'é' in Latin-1)."""

    def make(w: World) -> bytes:
        lines = Path(w[key]).read_bytes().split(b"\n")
        lines[line - 1] = lines[line - 1] + b" caf\xe9"
        return b"\n".join(lines)

    return make


def edit(key: str, line: int, new: str | None) -> Content:
    """Line ``line`` replaced by ``new`` (None: removed)."""

    def make(w: World) -> bytes:
        lines = w.text(key).split("\n")
        if new is None:
            del lines[line - 1]
        else:
            lines[line - 1] = new.format(*lines[line - 1].split())
        return "\n".join(lines).encode()

    return make


def append(key: str, text: str) -> Content:
    return lambda w: Path(w[key]).read_bytes() + text.encode()


def text(value: str | bytes) -> Content:
    return lambda w: value.encode() if isinstance(value, str) else value


def config(**changes: str) -> Content:
    return lambda w: config_text(w, **changes).encode()


def same_in(key: str, name: str) -> Content:
    """A file of a world folder (a model's ``config.json``, ...)."""
    return lambda w: (Path(w[key]) / name).read_bytes()


def layers(key: str, count: int) -> Content:
    """A model's ``config.json`` saying it has ``count`` layers."""
    return lambda w: json.dumps({**json.loads((Path(w[key]) / "config.json").read_text()),
                                 "num_hidden_layers": count}).encode()


def without_first_candidate(w: World) -> bytes:
    """The collection without the run's first candidate."""
    first = w.text("run").split()[2]
    return "".join(line + "\n" for line in w.text("c").splitlines() if line.split("\t")[0] != first).encode()


# ---- the cases --------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One command on one bad (or merely unusual) input, and what must come of it."""

    id: str
    command: str
    flags: dict[str, str | None] = field(default_factory=dict)  # changes to CLEAN[command]
    files: dict[str, Content] = field(default_factory=dict)  # written into the case's folder first
    code: int = 2
    message: str = ""  # a fragment of the error line (exit 2) or of stderr/stdout (exit 0)
    where: str | None = None  # the error line (exit 0: a warning) names this file, e.g. "{t}/run.trec:3"
    result: str | None = None  # exit 0: "same" (the clean result) or a fragment of stdout
    extra: tuple[str, ...] = ()  # flags added at the end
    links: dict[str, str] = field(default_factory=dict)  # symbolic links made in the case's folder: name -> target
    dirs: tuple[str, ...] = ()  # empty folders made in the case's folder
    absent: str = ""  # a fragment the error line must not hold
    check: Callable[[Path], bool] | None = None  # exit 0: a further check of the case's folder

    def argv(self) -> list[str]:
        flags = {**CLEAN[self.command], **self.flags}
        out = [self.command]
        for flag, value in flags.items():
            if value is None and flag in self.flags:
                continue  # dropped by the case
            out += [flag] if value is None else [flag, value]
        return out + list(self.extra)


def bad_file(command: str, flag: str, name: str, key: str, kind: str, **expect) -> Case:
    """The common defects of one input file of one command (see ``DEFECTS``)."""
    content, code, message, line = DEFECTS[kind](key)
    where = f"{{t}}/{name}" + (f":{line}" if line else "")
    return Case(f"{command}-{flag.strip('-')}-{kind}", command, {flag: f"{{t}}/{name}"},
                {} if content is None else {name: content}, code, message, where if code else None,
                "same" if code == 0 else None, **expect)


#: kind -> (content, exit code, message, line)
DEFECTS: dict[str, Callable[[str], tuple[Content | None, int, str, int | None]]] = {
    "missing": lambda key: (None, 2, "not found", None),
    "non-utf8": lambda key: (not_utf8(key, 3), 2, "line is not valid UTF-8", 3),
    "bom": lambda key: (bom(key), 0, "", None),
    "crlf": lambda key: (crlf(key), 0, "", None),
}


def defects(command: str, flag: str, name: str, key: str, kinds=("missing", "non-utf8", "bom", "crlf")) -> list[Case]:
    return [bad_file(command, flag, name, key, kind) for kind in kinds]


def folder_instead(command: str, flag: str, message: str = "") -> Case:
    return Case(f"{command}-{flag.strip('-')}-is-a-folder", command, {flag: "{t}/dir"}, message=message,
                dirs=("dir",))


CASES: list[Case] = [
    # ---- index ---------------------------------------------------------------------------------------------
    *defects("index", "--collection", "c.tsv", "c"),
    Case("index-collection-empty", "index", {"--collection": "{t}/c.tsv"}, {"c.tsv": text("")},
         message="collection is empty", where="{t}/c.tsv"),
    Case("index-collection-no-tab", "index", {"--collection": "{t}/c.tsv"}, {"c.tsv": edit("c", 2, "{0}")},
         message="expected 'pid<TAB>passage'", where="{t}/c.tsv:2"),
    Case("index-collection-duplicate-id", "index", {"--collection": "{t}/c.tsv"},
         {"c.tsv": append("c", "5\tagain\n")}, message="duplicate document id 5", where="{t}/c.tsv"),
    Case("index-collection-jsonl-bad-line", "index", {"--collection": "{t}/c.jsonl"},
         {"c.jsonl": text('{"id": "1", "contents": "a"}\n{"id": "2"}\n')},
         message='expected a JSON object with "id" and "contents"', where="{t}/c.jsonl:2"),
    Case("index-collection-jsonl-folder-empty", "index", {"--collection": "{t}/dir"}, dirs=("dir",),
         message="no .jsonl files in collection folder", where="{t}/dir"),
    Case("index-collection-jsonl-bom", "index", {"--collection": "{t}/c.jsonl"},
         {"c.jsonl": text(BOM + b'{"id": "1", "contents": "a volcano"}\n')}, code=0, message=""),
    Case("index-exists-without-force", "index", {"--index": "{t}/idx"}, dirs=("idx",),
         message="index directory already exists (pass --force", where="{t}/idx"),
    Case("index-output-is-the-collection", "index", {"--collection": "{t}/c.tsv", "--index": "{t}/c.tsv"},
         {"c.tsv": same("c")}, extra=("--force",), message="the output is also the input --collection",
         where="{t}/c.tsv"),
    Case("index-output-holds-the-collection", "index", {"--collection": "{t}/idx/c.tsv", "--index": "{t}/idx"},
         {"idx/c.tsv": same("c")}, extra=("--force",), message="is inside this output folder, which is replaced",
         where="{t}/idx"),
    Case("index-output-is-a-file", "index", {"--index": "{t}/idx"}, {"idx": text("x")}, extra=("--force",),
         message="exists and is not a folder", where="{t}/idx"),
    Case("index-output-under-a-file", "index", {"--index": "{t}/f/idx"}, {"f": text("x")},
         message="is a file, not a folder", where="{t}/f/idx"),
    Case("index-output-unwritable", "index", {"--index": "/proc/distilrank/idx"},
         message="cannot write the output here", where="/proc/distilrank/idx"),
    Case("index-threads-zero", "index", {"--threads": "0"}, message="--threads must be at least 1"),
    # ---- encode ----------------------------------------------------------------------------------------------
    *defects("encode", "--collection", "c.tsv", "c"),
    folder_instead("encode", "--collection", "collection file not found"),
    Case("encode-collection-duplicate-id", "encode", {"--collection": "{t}/c.tsv"},
         {"c.tsv": append("c", "5\tagain\n")}, message="duplicate document id 5", where="{t}/c.tsv"),
    Case("encode-model-missing", "encode", {"--model": "{t}/none"}, message="bi-encoder folder has no config.json",
         where="{t}/none"),
    Case("encode-model-hub-name-offline", "encode", {"--model": "owner/encoder"},
         message="is a hub name and this machine is offline"),
    Case("encode-output-is-the-collection", "encode", {"--collection": "{t}/c.tsv", "--output": "{t}/c.tsv"},
         {"c.tsv": same("c")}, message="the output is also the input --collection", where="{t}/c.tsv"),
    Case("encode-output-is-another-folder", "encode", {"--output": "{t}/dir"}, {"dir/notes.txt": text("mine")},
         message="output folder exists and is not a dense index", where="{t}/dir"),
    Case("encode-output-under-a-file", "encode", {"--output": "{t}/f/dense"}, {"f": text("x")},
         message="is a file, not a folder", where="{t}/f/dense"),
    Case("encode-block-zero", "encode", {"--block": "0"}, message="--block must be at least 1"),
    # ---- tokenize (the passage token cache) ----------------------------------------------------------------
    *defects("tokenize", "--collection", "c.tsv", "c", kinds=("missing", "non-utf8")),
    folder_instead("tokenize", "--collection", "collection file not found"),
    Case("tokenize-collection-bom", "tokenize", {"--collection": "{t}/c.tsv"}, {"c.tsv": bom("c")}, code=0,
         result="96 passages"),
    Case("tokenize-collection-crlf", "tokenize", {"--collection": "{t}/c.tsv"}, {"c.tsv": crlf("c")}, code=0,
         result="96 passages"),
    Case("tokenize-collection-id-with-whitespace", "tokenize", {"--collection": "{t}/c.tsv"},
         {"c.tsv": edit("c", 6, "{0} b\t{1}")}, message="document id '5 b' holds whitespace", where="{t}/c.tsv:6"),
    Case("tokenize-collection-jsonl-id-with-whitespace", "tokenize", {"--collection": "{t}/c.jsonl"},
         {"c.jsonl": text('{"id": "1", "contents": "a"}\n{"id": "2 3", "contents": "b"}\n')},
         message="document id '2 3' holds whitespace", where="{t}/c.jsonl:2"),
    Case("tokenize-model-missing", "tokenize", {"--model": "{t}/none"}, message="model folder not found",
         where="{t}/none"),
    Case("tokenize-model-hub-name-offline", "tokenize", {"--model": "owner/ranker"}, message="offline"),
    # ---- retrieve --------------------------------------------------------------------------------------------
    Case("retrieve-dense-not-an-index", "retrieve", {"--index": None, "--dense": "{t}/dir"}, dirs=("dir",),
         message="no dense index in this folder", where="{t}/dir"),
    Case("retrieve-dense-prebuilt-name-offline", "retrieve",
         {"--index": None, "--dense": "msmarco-v1-passage.tct_colbert-v2-hnp",
          "--encoder": "castorini/tct_colbert-v2-hnp-msmarco"}, message="needs the network"),
    Case("retrieve-hybrid-without-bm25", "retrieve", {"--index": None, "--dense": "{t}/dir"}, dirs=("dir",),
         extra=("--hybrid",), message="--hybrid needs --index or --prebuilt"),
    Case("retrieve-no-first-stage", "retrieve", {"--index": None}, message="BM25 needs --index or --prebuilt"),
    Case("retrieve-renamed-alpha", "retrieve", extra=("--alpha", "1"),
         message="'--alpha' is now called '--fusion-weight': interpolation: the weight W of BM25"),
    *defects("retrieve", "--topics", "q.tsv", "q"),
    folder_instead("retrieve", "--topics", "is a folder; expected a file"),
    Case("retrieve-topics-empty", "retrieve", {"--topics": "{t}/q.tsv"}, {"q.tsv": text("")},
         message="no queries in topics file", where="{t}/q.tsv"),
    Case("retrieve-topics-no-tab", "retrieve", {"--topics": "{t}/q.tsv"}, {"q.tsv": edit("q", 2, "{0}")},
         message="expected 'qid<TAB>query'", where="{t}/q.tsv:2"),
    Case("retrieve-topics-duplicate-id", "retrieve", {"--topics": "{t}/q.tsv"},
         {"q.tsv": append("q", "100\tagain\n")}, message="duplicate query id 100", where="{t}/q.tsv:9"),
    Case("retrieve-topics-empty-query", "retrieve", {"--topics": "{t}/q.tsv"}, {"q.tsv": edit("q", 2, "{0}\t ")},
         message="empty query for qid 101", where="{t}/q.tsv:2"),
    Case("retrieve-index-missing", "retrieve", {"--index": "{t}/none"}, message="no Lucene index",
         where="{t}/none"),
    Case("retrieve-index-empty-folder", "retrieve", {"--index": "{t}/dir"}, dirs=("dir",),
         message="no Lucene index", where="{t}/dir"),
    Case("retrieve-output-is-the-topics", "retrieve", {"--topics": "{t}/q.tsv", "--output": "{t}/q.tsv"},
         {"q.tsv": same("q")}, message="the output is also the input --topics", where="{t}/q.tsv"),
    Case("retrieve-output-links-to-the-topics", "retrieve", {"--topics": "{t}/q.tsv", "--output": "{t}/link"},
         {"q.tsv": same("q")}, links={"link": "q.tsv"}, message="the output is also the input --topics",
         where="{t}/link"),
    Case("retrieve-output-in-the-index", "retrieve", {"--output": "{index}/run.trec"},
         message="inside the input folder --index", where="{index}/run.trec"),
    Case("retrieve-output-is-a-folder", "retrieve", {"--output": "{t}/dir"}, dirs=("dir",),
         message="is a folder; the output here is a file", where="{t}/dir"),
    Case("retrieve-output-under-a-file", "retrieve", {"--output": "{t}/f/out.trec"}, {"f": text("x")},
         message="is a file, not a folder", where="{t}/f/out.trec"),
    Case("retrieve-output-unwritable", "retrieve", {"--output": "/proc/distilrank/out.trec"},
         message="cannot write the output here", where="/proc/distilrank/out.trec"),
    Case("retrieve-output-symlink-written-through", "retrieve", {"--output": "{t}/link"},
         {"real.trec": text("old\n")}, links={"link": "real.trec"}, code=0, result="40 hits",
         check=lambda t: (t / "link").is_symlink() and (t / "real.trec").read_text().count(" Q0 ") == 40),
    Case("retrieve-output-stdout", "retrieve", {"--output": "-"}, code=0, result="Q0"),
    Case("retrieve-hits-zero", "retrieve", {"--hits": "0"}, message="--hits must be at least 1"),
    Case("retrieve-hits-not-a-number", "retrieve", {"--hits": "ten"}, message="invalid int value: 'ten'"),
    # ---- evaluate --------------------------------------------------------------------------------------------
    *defects("evaluate", "--run", "run.trec", "run"),
    *defects("evaluate", "--qrels", "qrels.tsv", "qrels"),
    folder_instead("evaluate", "--run", "not found"),
    Case("evaluate-run-empty", "evaluate", {"--run": "{t}/run.trec"}, {"run.trec": text("")}, code=0,
         message="the run is empty", where="{t}/run.trec"),
    Case("evaluate-run-msmarco-format", "evaluate", {"--run": "{msrun}"}, code=0, result="nDCG@10"),
    Case("evaluate-run-five-columns", "evaluate", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 2, "{0} Q0 {2} {3} {4}")}, message="expected 'qid Q0 docid rank score tag'",
         where="{t}/run.trec:2"),
    Case("evaluate-run-bad-rank", "evaluate", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 4, "{0} Q0 {2} first {4} {5}")}, message="rank or score is not a number",
         where="{t}/run.trec:4"),
    Case("evaluate-run-nan", "evaluate", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 5, "{0} Q0 {2} {3} nan {5}")}, message="score is NaN", where="{t}/run.trec:5"),
    Case("evaluate-run-inf", "evaluate", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 5, "{0} Q0 {2} {3} inf {5}")}, message="score is infinite",
         where="{t}/run.trec:5"),
    Case("evaluate-run-duplicate-docid", "evaluate", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 2, "{0} Q0 3 {3} {4} {5}")}, message="duplicate docid", where="{t}/run.trec"),
    Case("evaluate-qrels-three-columns", "evaluate", {"--qrels": "{t}/qrels.tsv"},
         {"qrels.tsv": edit("qrels", 2, "{0} {2} {3}")}, message="expected 'qid 0 docid grade'",
         where="{t}/qrels.tsv:2"),
    Case("evaluate-qrels-bad-grade", "evaluate", {"--qrels": "{t}/qrels.tsv"},
         {"qrels.tsv": edit("qrels", 2, "{0} 0 {2} high")}, message="grade 'high' is not an integer",
         where="{t}/qrels.tsv:2"),
    Case("evaluate-qrels-conflicting-grades", "evaluate", {"--qrels": "{t}/qrels.tsv"},
         {"qrels.tsv": append("qrels", "100 0 0 0\n")}, message="conflicting grades", where="{t}/qrels.tsv"),
    Case("evaluate-qrels-empty", "evaluate", {"--qrels": "{t}/qrels.tsv"}, {"qrels.tsv": text("")},
         message="no judgments in qrels file", where="{t}/qrels.tsv"),
    Case("evaluate-qrels-query-absent-from-run", "evaluate", {"--qrels": "{t}/qrels.tsv"},
         {"qrels.tsv": append("qrels", "999 0 5 1\n")}, code=0,
         message="1 judged queries are absent from the run and count as 0"),
    Case("evaluate-unknown-measure", "evaluate", extra=("--metrics", "nDCG@ten"), message="unknown measure"),
    # ---- rerank ----------------------------------------------------------------------------------------------
    *defects("rerank", "--run", "run.trec", "run"),
    *defects("rerank", "--topics", "q.tsv", "q"),
    *defects("rerank", "--collection", "c.tsv", "c"),
    Case("rerank-run-empty", "rerank", {"--run": "{t}/run.trec"}, {"run.trec": text("")}, code=0,
         message="the run is empty", where="{t}/run.trec"),
    Case("rerank-run-nan", "rerank", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 5, "{0} Q0 {2} {3} NaN {5}")}, message="score is NaN", where="{t}/run.trec:5"),
    Case("rerank-run-inf-with-interpolation", "rerank", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 1, "{0} Q0 {2} {3} inf {5}")}, extra=("--interpolation", "0.5"),
         message="score is infinite", where="{t}/run.trec:1"),
    Case("rerank-run-malformed", "rerank", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 3, "{0} {2}")}, message="expected 'qid Q0 docid rank score tag'",
         where="{t}/run.trec:3"),
    Case("rerank-run-unknown-docid", "rerank", {"--run": "{t}/run.trec"},
         {"run.trec": append("run", "100 Q0 ghost 13 1.0 bm25\n")}, extra=("--depth", "20"),
         message="candidate docids are not in the collection: ghost (query 100)", where="{c}"),
    Case("rerank-run-unknown-docid-skipped", "rerank", {"--run": "{t}/run.trec"},
         {"run.trec": append("run", "100 Q0 ghost 13 1.0 bm25\n")}, extra=("--depth", "20", "--skip-missing"),
         code=0, message="skipped 1 missing", where="{c}"),
    Case("rerank-index-unknown-docid", "rerank", {"--run": "{t}/run.trec", "--collection": None, "--index": "{index}"},
         {"run.trec": append("run", "100 Q0 ghost 13 1.0 bm25\n")}, extra=("--depth", "20"),
         message="candidate docids are not in the collection: ghost (query 100)", where="{index}"),
    Case("rerank-index-unknown-docid-skipped", "rerank",
         {"--run": "{t}/run.trec", "--collection": None, "--index": "{index}"},
         {"run.trec": append("run", "100 Q0 ghost 13 1.0 bm25\n")}, extra=("--depth", "20", "--skip-missing"),
         code=0, message="skipped 1 missing", where="{index}"),
    Case("rerank-run-unknown-query", "rerank", {"--run": "{t}/run.trec"},
         {"run.trec": append("run", "999 Q0 3 1 1.0 bm25\n")}, message="have no text in the topics: 999"),
    Case("rerank-topics-duplicate-id", "rerank", {"--topics": "{t}/q.tsv"},
         {"q.tsv": append("q", "101\tagain\n")}, message="duplicate query id 101", where="{t}/q.tsv:9"),
    Case("rerank-collection-duplicate-id", "rerank", {"--collection": "{t}/c.tsv"},
         {"c.tsv": append("c", "7\tagain\n")}, message="duplicate document id 7 (first on line 8)",
         where="{t}/c.tsv:97"),
    Case("rerank-collection-empty", "rerank", {"--collection": "{t}/c.tsv"}, {"c.tsv": text("")},
         message="collection is empty", where="{t}/c.tsv"),
    Case("rerank-collection-no-tab", "rerank", {"--collection": "{t}/c.tsv"}, {"c.tsv": edit("c", 6, "{0}")},
         message="expected 'pid<TAB>passage'", where="{t}/c.tsv:6"),
    Case("rerank-collection-empty-passage", "rerank", {"--collection": "{t}/c.tsv"},
         {"c.tsv": lambda w: "".join(f"{line.split(chr(9))[0]}\t\n" for line in w.text("c").splitlines()).encode()},
         message="passages of query 100 are empty", where="{t}/c.tsv"),
    Case("rerank-collection-empty-passage-skipped", "rerank", {"--collection": "{t}/c.tsv"},
         {"c.tsv": lambda w: "".join(f"{line.split(chr(9))[0]}\t\n" for line in w.text("c").splitlines()).encode()},
         extra=("--skip-missing",), code=0, message="skipped 0 missing and 32 empty passages", where="{t}/c.tsv"),
    Case("rerank-index-empty-passage", "rerank", {"--collection": None, "--index": "{blank_index}"},
         message="passages of query 100 are empty", where="{blank_index}"),
    Case("rerank-index-empty-passage-skipped", "rerank", {"--collection": None, "--index": "{blank_index}"},
         extra=("--skip-missing",), code=0, message="skipped 0 missing and 32 empty passages", where="{blank_index}"),
    Case("rerank-model-more-layers-than-its-weights", "rerank", {"--model": "{t}/m"},
         {"m/config.json": layers("model", 3), **{f"m/{n}": same_in("model", n) for n in (
             "model.safetensors", "tokenizer.json", "tokenizer_config.json")}},
         message="num_hidden_layers is 3, but the weights hold 2 layers (layer 2 is missing)",
         where="{t}/m/config.json"),
    Case("rerank-model-fewer-layers-than-its-weights", "rerank", {"--model": "{t}/m"},
         {"m/config.json": layers("model", 1), **{f"m/{n}": same_in("model", n) for n in (
             "model.safetensors", "tokenizer.json", "tokenizer_config.json")}},
         message="the weights hold 2 layers (layer 1 is beyond it)", where="{t}/m/config.json"),
    Case("rerank-run-is-where-the-journal-goes", "rerank", {"--run": "{t}/out.trec.journal"},
         {"out.trec.journal": same("run")}, extra=("--resume",),
         message="the output's file out.trec.journal is also the input --run", where="{t}/out.trec",
         absent="delete"),
    Case("rerank-index-not-an-index", "rerank", {"--collection": None, "--index": "{t}/dir"}, dirs=("dir",),
         message="no Lucene index", where="{t}/dir"),
    Case("rerank-index-instead-of-collection", "rerank", {"--collection": None, "--index": "{index}"}, code=0,
         result="8 queries"),
    Case("rerank-model-missing", "rerank", {"--model": "{t}/none"}, message="model folder not found",
         where="{t}/none"),
    Case("rerank-model-no-config", "rerank", {"--model": "{t}/dir"}, dirs=("dir",),
         message="model folder has no config.json", where="{t}/dir"),
    Case("rerank-model-is-a-file", "rerank", {"--model": "{t}/m.bin"}, {"m.bin": text("x")},
         message="model path is a file", where="{t}/m.bin"),
    Case("rerank-model-config-not-json", "rerank", {"--model": "{t}/m"}, {"m/config.json": text("{not json")},
         message="cannot load model config"),
    Case("rerank-model-no-tokenizer", "rerank", {"--model": "{t}/m"},
         {f"m/{n}": same_in("model", n) for n in ("config.json", "model.safetensors")},
         message="model folder has no tokenizer files"),
    Case("rerank-model-three-labels", "rerank", {"--model": "{three}"}, message="3-label classification head"),
    Case("rerank-model-hub-name-offline", "rerank", {"--model": "nobody/no-such-model"},
         message="cannot be fetched offline"),
    Case("rerank-output-is-the-collection", "rerank", {"--collection": "{t}/c.tsv", "--output": "{t}/c.tsv"},
         {"c.tsv": same("c")}, message="the output is also the input --collection", where="{t}/c.tsv"),
    Case("rerank-output-is-the-run", "rerank", {"--run": "{t}/run.trec", "--output": "{t}/run.trec"},
         {"run.trec": same("run")}, message="the output is also the input --run", where="{t}/run.trec"),
    Case("rerank-output-is-the-run-by-dotdot", "rerank", {"--run": "{t}/run.trec", "--output": "{t}/d/../run.trec"},
         {"run.trec": same("run")}, dirs=("d",), message="the output is also the input --run",
         where="{t}/d/../run.trec"),
    Case("rerank-output-is-the-topics", "rerank", {"--topics": "{t}/q.tsv", "--output": "{t}/q.tsv"},
         {"q.tsv": same("q")}, message="the output is also the input --topics", where="{t}/q.tsv"),
    Case("rerank-output-links-to-the-collection", "rerank", {"--collection": "{t}/c.tsv", "--output": "{t}/l"},
         {"c.tsv": same("c")}, links={"l": "c.tsv"}, message="the output is also the input --collection",
         where="{t}/l"),
    Case("rerank-timing-file-is-the-run", "rerank", {"--run": "{t}/out.trec.timing.json"},
         {"out.trec.timing.json": same("run")}, message="the output's file out.trec.timing.json is also the input",
         where="{t}/out.trec"),
    Case("rerank-output-in-the-model", "rerank", {"--model": "{t}/m", "--output": "{t}/m/run.trec"},
         {f"m/{n}": same_in("model", n) for n in ("config.json", "model.safetensors", "tokenizer.json",
                                                  "tokenizer_config.json")},
         message="inside the input folder --model", where="{t}/m/run.trec"),
    Case("rerank-output-is-a-folder", "rerank", {"--output": "{t}/dir"}, dirs=("dir",),
         message="is a folder; the output here is a file", where="{t}/dir"),
    Case("rerank-output-under-a-file", "rerank", {"--output": "{t}/f/out.trec"}, {"f": text("x")},
         message="is a file, not a folder", where="{t}/f/out.trec"),
    Case("rerank-output-unwritable", "rerank", {"--output": "/proc/distilrank/out.trec"},
         message="cannot write the output here", where="/proc/distilrank/out.trec"),
    Case("rerank-output-new-folders", "rerank", {"--output": "{t}/a/b/out.trec"}, code=0, result="8 queries"),
    Case("rerank-depth-zero", "rerank", {"--depth": "0"}, message="--depth must be at least 1"),
    Case("rerank-interpolation-out-of-range", "rerank", extra=("--interpolation", "2"),
         message="--interpolation must be between 0 and 1"),
    Case("rerank-interpolation-nan", "rerank", extra=("--interpolation", "nan"),
         message="--interpolation must be between 0 and 1"),
    Case("rerank-renamed-alpha", "rerank", extra=("--alpha", "0.5"),
         message="'--alpha' is now called '--interpolation': the cross-encoder's weight W"),
    Case("rerank-batch-tokens-zero", "rerank", extra=("--batch-tokens", "0"), message="--batch-tokens must be"),
    Case("rerank-device-unknown", "rerank", {"--device": "tpu"}, message="unknown device 'tpu'"),
    Case("rerank-msmarco-run", "rerank", {"--run": "{msrun}"}, code=0, result="8 queries"),
    Case("rerank-journal-without-resume", "rerank", files={"out.trec.journal": text('{"journal": "x"}\n')},
         message="a journal of an unfinished run is here: continue it with --resume", where="{t}/out.trec.journal"),
    Case("rerank-resume-journal-of-another-run", "rerank", extra=("--resume",),
         files={"out.trec.journal": text('{"journal": "distilrank-journal", "command": "rerank"}\n')},
         message="this journal was made for another run", where="{t}/out.trec.journal:1"),
    Case("rerank-resume-not-a-journal", "rerank", extra=("--resume",), files={"out.trec.journal": text("x\n")},
         message="not a distilrank journal", where="{t}/out.trec.journal:1"),
    Case("rerank-resume-without-journal", "rerank", extra=("--resume",), code=0, result="8 queries"),
    Case("rerank-resume-output-is-the-run", "rerank", {"--run": "{t}/run.trec", "--output": "{t}/run.trec"},
         {"run.trec": same("run")}, extra=("--resume",), message="refusing to overwrite an input"),
    Case("rerank-resume-on-stdout", "rerank", {"--output": "-"}, extra=("--resume",),
         message="a run on standard output is written by one process without a journal"),
    # ---- score -----------------------------------------------------------------------------------------------
    *defects("score", "--run", "run.trec", "run"),
    *defects("score", "--topics", "q.tsv", "q", kinds=("missing", "non-utf8", "bom")),
    *defects("score", "--collection", "c.tsv", "c", kinds=("missing", "non-utf8", "bom")),
    Case("score-output-is-the-run", "score", {"--run": "{t}/run.trec", "--output": "{t}/run.trec"},
         {"run.trec": same("run")}, message="the output is also the input --run", where="{t}/run.trec"),
    Case("score-output-is-a-folder", "score", {"--output": "{t}/dir"}, dirs=("dir",),
         message="is a folder; the output here is a file", where="{t}/dir"),
    Case("score-output-under-a-file", "score", {"--output": "{t}/f/out.scores"}, {"f": text("x")},
         message="is a file, not a folder", where="{t}/f/out.scores"),
    Case("score-output-unwritable", "score", {"--output": "/proc/distilrank/out.scores"},
         message="cannot write the output here"),
    Case("score-output-is-the-collection", "score", {"--collection": "{t}/c.tsv", "--output": "{t}/c.tsv"},
         {"c.tsv": same("c")}, message="the output is also the input --collection", where="{t}/c.tsv"),
    Case("score-run-empty", "score", {"--run": "{t}/run.trec"}, {"run.trec": text("")}, code=0,
         message="the run is empty", where="{t}/run.trec"),
    Case("score-run-unknown-docid", "score", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 1, "{0} Q0 ghost {3} {4} {5}")}, message="docid ghost of query 100 is not in the "
         "collection", where="{t}/run.trec"),
    Case("score-run-unknown-query", "score", {"--run": "{t}/run.trec"},
         {"run.trec": append("run", "999 Q0 3 1 1.0 bm25\n")}, message="query 999 of the run is not in the topics",
         where="{t}/run.trec"),
    Case("score-model-missing", "score", {"--model": "{t}/none"}, message="model folder not found"),
    Case("score-depth-zero", "score", {"--score-depth": "0"}, message="--score-depth must be at least 1"),
    Case("score-chunk-queries-zero", "score", extra=("--chunk-queries", "0"),
         message="--chunk-queries must be at least 1"),
    Case("score-output-stdout", "score", {"--output": "-"}, message="give a file name, not standard output"),
    Case("score-resume-journal-of-another-run", "score", extra=("--resume",),
         files={"out.scores.journal": text('{"journal": "distilrank-journal", "command": "score"}\n')},
         message="this journal was made for another run", where="{t}/out.scores.journal:1"),
    Case("score-resume-without-journal", "score", extra=("--resume",), code=0, result="wrote"),
    # ---- train -----------------------------------------------------------------------------------------------
    *defects("train", "--qrels", "qrels.tsv", "qrels"),
    *defects("train", "--run", "run.trec", "run", kinds=("missing", "non-utf8", "bom")),
    *defects("train", "--topics", "q.tsv", "q", kinds=("missing", "non-utf8", "crlf")),
    *defects("train", "--collection", "c.tsv", "c", kinds=("missing", "non-utf8")),
    Case("train-init-missing", "train", {"--init": "{t}/none"}, message="not found", where="{t}/none"),
    Case("train-output-is-the-init", "train", {"--init": "{t}/m", "--output": "{t}/m"},
         {f"m/{n}": same_in("base", n) for n in ("config.json", "model.safetensors", "tokenizer.json",
                                                 "tokenizer_config.json")},
         message="the output is also the input --init", where="{t}/m"),
    Case("train-output-inside-the-init", "train", {"--init": "{t}/m", "--output": "{t}/m/ft"},
         {f"m/{n}": same_in("base", n) for n in ("config.json", "model.safetensors", "tokenizer.json",
                                                 "tokenizer_config.json")},
         message="inside the input folder --init", where="{t}/m/ft"),
    Case("train-output-holds-a-model", "train", {"--output": "{t}/teacher"}, {"teacher/config.json": text("{}")},
         message="already holds a trained model: pass --resume to continue it, or --overwrite", where="{t}/teacher"),
    Case("train-output-holds-a-checkpoint", "train", {"--output": "{t}/teacher"},
         {"teacher/checkpoint/trainer_state.pt": text("x")}, message="already holds an interrupted run's checkpoint",
         where="{t}/teacher"),
    Case("train-overwrite", "train", {"--output": "{t}/teacher"}, {"teacher/config.json": text("{}")},
         extra=("--overwrite",), code=0, result="teacher saved"),
    Case("train-resume-nothing", "train", extra=("--resume",), message="nothing to resume",
         where="{t}/teacher"),
    Case("train-resume-empty-folder", "train", dirs=("teacher",), extra=("--resume",), message="nothing to resume",
         where="{t}/teacher"),
    Case("train-resume-and-overwrite", "train", extra=("--resume", "--overwrite"),
         message="--resume and --overwrite exclude each other"),
    Case("train-output-is-a-file", "train", {"--output": "{t}/f"}, {"f": text("x")},
         message="exists and is not a folder", where="{t}/f"),
    Case("train-output-unwritable", "train", {"--output": "/proc/distilrank/t"},
         message="cannot write the output here"),
    Case("train-exclude-qids-missing", "train", extra=("--exclude-qids", "{t}/none.qids"), message="not found",
         where="{t}/none.qids"),
    Case("train-exclude-qids-not-utf8", "train", extra=("--exclude-qids", "{t}/x.qids"),
         files={"x.qids": text(b"100\n101\n\xff\n")}, message="line is not valid UTF-8", where="{t}/x.qids:3"),
    Case("train-exclude-qids-empty", "train", extra=("--exclude-qids", "{t}/x.qids"), files={"x.qids": text("#\n")},
         message="no query ids in file", where="{t}/x.qids"),
    Case("train-exclude-qids-all", "train", extra=("--exclude-qids", "{q}"),
         message="every query of the topics is excluded"),
    Case("train-exclude-qids-bom", "train", extra=("--exclude-qids", "{t}/x.qids"),
         files={"x.qids": text(BOM + b"100\n")}, code=0, result="teacher saved"),
    Case("train-bootstrap-incomplete", "train", extra=("--bootstrap-from", "{base}"),
         message="--bootstrap-from, --bootstrap-topics and --bootstrap-run go together"),
    Case("train-batch-size-zero", "train", {"--batch-size": "0"}, message="batch size and accumulation must be"),
    Case("train-collection-lacks-every-positive", "train", {"--collection": "{t}/c.tsv"},
         {"c.tsv": text("9999\tnothing relevant\n")}, message="no training examples"),
    Case("train-lrs-bad", "train", extra=("--bootstrap-lrs", "fast"), message="expected comma-separated learning"),
    # ---- distill ---------------------------------------------------------------------------------------------
    Case("distill-teacher-missing", "distill", {"--teacher": "{t}/none"}, message="teacher folder has no config.json",
         where="{t}/none"),
    Case("distill-output-is-the-teacher", "distill", {"--teacher": "{t}/m", "--output": "{t}/m"},
         {f"m/{n}": same_in("teacher", n) for n in ("config.json", "model.safetensors", "tokenizer.json",
                                                    "tokenizer_config.json")},
         message="the output is also the input --teacher", where="{t}/m"),
    Case("distill-output-inside-the-teacher", "distill", {"--output": "{teacher}/student"},
         message="inside the input folder --teacher", where="{teacher}/student"),
    Case("distill-layers-above-the-teacher", "distill", {"--layers": "9", "--scores": None},
         message="--layers 9: the student takes its layers from"),
    Case("distill-layers-zero", "distill", {"--layers": "0"}, message="--layers must be at least 1"),
    Case("distill-scores-missing", "distill", {"--scores": "{t}/none.scores"}, message="score file not found",
         where="{t}/none.scores"),
    Case("distill-scores-not-a-score-file", "distill", {"--scores": "{run}"},
         message="not a distilrank score file", where="{run}:1"),
    Case("distill-scores-not-utf8", "distill", {"--scores": "{t}/s.scores"}, {"s.scores": not_utf8("scores", 4)},
         message="line is not valid UTF-8", where="{t}/s.scores:4"),
    Case("distill-scores-bom", "distill", {"--scores": "{t}/s.scores"}, {"s.scores": bom("scores")}, code=0,
         result="student saved"),
    Case("distill-scores-crlf", "distill", {"--scores": "{t}/s.scores"}, {"s.scores": crlf("scores")}, code=0,
         result="student saved"),
    Case("distill-scores-for-another-run", "distill", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 1, None)}, message="score file does not match the candidate lists"),
    Case("distill-scores-nan", "distill", {"--scores": "{t}/s.scores"},
         {"s.scores": edit("scores", 3, "{0}\t{1}\tnan")},
         message="is not a finite number", where="{t}/s.scores:3"),
    Case("distill-scores-edited", "distill", {"--scores": "{t}/s.scores"},
         {"s.scores": edit("scores", 3, "{0}\t999\t{2}")}, message="does not match its header's fingerprint"),
    Case("distill-fine-tune-without-qrels", "distill", {"--procedure": "fine-tune"}, message="needs --qrels"),
    Case("distill-unknown-procedure", "distill", {"--procedure": "magic"}, message="invalid choice: 'magic'"),
    Case("distill-init-from-missing-folder", "distill", extra=("--init-from", "{t}/none"), message="not found"),
    Case("distill-output-holds-a-model", "distill", {"--output": "{t}/student"}, {"student/config.json": text("{}")},
         message="already holds a trained model", where="{t}/student"),
    Case("distill-output-is-a-file", "distill", {"--output": "{t}/f"}, {"f": text("x")},
         message="exists and is not a folder", where="{t}/f"),
    Case("distill-output-unwritable", "distill", {"--output": "/proc/distilrank/s"},
         message="cannot write the output here"),
    Case("distill-output-is-the-scores", "distill", {"--scores": "{t}/s", "--output": "{t}/s"},
         {"s": same("scores")}, message="the output is also the input --scores", where="{t}/s"),
    Case("distill-overwrite", "distill", {"--output": "{t}/student"}, {"student/config.json": text("{}")},
         extra=("--overwrite",), code=0, result="student saved"),
    Case("distill-resume-nothing", "distill", extra=("--resume",), message="nothing to resume", where="{t}/student"),
    *defects("distill", "--run", "run.trec", "run", kinds=("missing", "non-utf8", "bom")),
    *defects("distill", "--collection", "c.tsv", "c", kinds=("missing", "non-utf8")),
    # ---- compare ---------------------------------------------------------------------------------------------
    Case("compare-config-missing", "compare", {"--config": "{t}/none.toml"}, message="config file not found",
         where="{t}/none.toml"),
    Case("compare-config-not-utf8", "compare", {"--config": "{t}/c.toml"}, {"c.toml": not_utf8("config", 2)},
         message="line is not valid UTF-8", where="{t}/c.toml:2"),
    Case("compare-config-bom", "compare", {"--config": "{t}/c.toml"}, {"c.toml": bom("config")}, code=0,
         result="report.md"),
    Case("compare-config-crlf", "compare", {"--config": "{t}/c.toml"}, {"c.toml": crlf("config")}, code=0,
         result="report.md"),
    Case("compare-config-invalid-toml", "compare", {"--config": "{t}/c.toml"}, {"c.toml": text("name = \n")},
         message="invalid TOML", where="{t}/c.toml"),
    Case("compare-config-unknown-key", "compare", {"--config": "{t}/c.toml"},
         {"c.toml": append("config", "speed = 1\n")}, message="unknown key(s) ['speed']"),
    Case("compare-config-model-missing", "compare", {"--config": "{t}/c.toml"},
         {"c.toml": config(student='"/nonexistent/student"')}, message="model folder of 'student' not found"),
    Case("compare-config-unknown-measure", "compare", {"--config": "{t}/c.toml"},
         {"c.toml": config(measures='["nDCG@ten"]')}, message="unknown measure"),
    Case("compare-config-depth-above-hits", "compare", {"--config": "{t}/c.toml"},
         {"c.toml": config(depth="40")}, message="cannot exceed"),
    Case("compare-first-stage-run-nan", "compare", {"--config": "{t}/c.toml"},
         {"c.toml": config(run='"run.trec"'), "run.trec": edit("run", 2, "{0} Q0 {2} {3} nan {5}")},
         message="score is NaN", where="{t}/run.trec:2"),
    Case("compare-topics-not-utf8", "compare", {"--config": "{t}/c.toml"},
         {"c.toml": config(topics='"q.tsv"'), "q.tsv": not_utf8("q", 2)}, message="line is not valid UTF-8",
         where="{t}/q.tsv:2"),
    Case("compare-output-is-a-file", "compare", {"--output": "{t}/f"}, {"f": text("x")},
         message="exists and is not a folder", where="{t}/f"),
    Case("compare-output-unwritable", "compare", {"--output": "/proc/distilrank/cmp"},
         message="cannot write the output here"),
    Case("compare-output-holds-its-run", "compare", {"--config": "{t}/c.toml", "--output": "{t}"},
         {"c.toml": config(run='"teacher.trec"'), "teacher.trec": same("run")},
         message="the output's file teacher.trec is also the input"),
    Case("compare-output-in-a-model", "compare", {"--output": "{model}/cmp"}, message="inside the input folder"),
    Case("compare-no-skip-missing-advice", "compare", {"--config": "{t}/c.toml"},
         {"c.toml": config(collection='"c.tsv"'), "c.tsv": without_first_candidate}, message="not in the collection",
         where="{t}/c.tsv", absent="--skip-missing"),
    # ---- submit and validate -----------------------------------------------------------------------------------
    *defects("submit", "--run", "run.tsv", "msrun"),
    *defects("submit", "--metadata", "meta.json", "meta", kinds=("missing", "bom", "crlf")),
    Case("submit-metadata-not-utf8", "submit", {"--metadata": "{t}/meta.json"},
         {"meta.json": text(b'{"team": "caf\xe9"}\n')}, message="line is not valid UTF-8", where="{t}/meta.json:1"),
    Case("submit-metadata-invalid-json", "submit", {"--metadata": "{t}/meta.json"}, {"meta.json": text("{team}")},
         message="not valid JSON", where="{t}/meta.json:1"),
    Case("submit-metadata-unknown-field", "submit", {"--metadata": '{"teem": "x"}'},
         message="unknown metadata field(s) ['teem']"),
    Case("submit-run-empty", "submit", {"--run": "{t}/run.tsv"}, {"run.tsv": text("")},
         message="the run is empty: nothing to submit", where="{t}/run.tsv"),
    Case("submit-run-non-numeric-passage-id", "submit", {"--run": "{t}/run.trec"},
         {"run.trec": edit("run", 2, "{0} Q0 p{2} {3} {4} {5}")},
         message="passage id of query 100 'p", where="{t}/run.trec"),
    Case("submit-run-non-numeric-query-id", "submit", {"--run": "{t}/run.tsv"},
         {"run.tsv": lambda w: w.text("msrun").replace("100\t", "q100\t").encode()},
         message="query id 'q100' is not a number: the leaderboard takes numeric ids only", where="{t}/run.tsv"),
    Case("validate-topics-id-with-whitespace", "validate", {"--topics": "{t}/q.tsv"},
         {"q.tsv": edit("q", 2, "{0} b\t{1}")}, message="query id '101 b' holds whitespace",
         where="{t}/q.tsv:2"),
    Case("evaluate-msmarco-run-id-with-whitespace", "evaluate", {"--run": "{t}/run.tsv"},
         {"run.tsv": edit("msrun", 2, "{0}\t{1} x\t{2}")}, message="holds whitespace", where="{t}/run.tsv:2"),
    Case("submit-out-is-a-file", "submit", {"--out": "{t}/f"}, {"f": text("x")},
         message="exists and is not a folder", where="{t}/f"),
    Case("submit-out-unwritable", "submit", {"--out": "/proc/distilrank/sub"}, message="cannot write the output"),
    Case("submit-run-inside-out", "submit", {"--run": "{t}/sub/dev.txt.bz2", "--out": "{t}/sub"},
         {"sub/dev.txt.bz2": lambda w: bz2.compress(Path(w["msrun"]).read_bytes())},
         message="the output's file dev.txt.bz2 is also the input --run", where="{t}/sub"),
    *defects("validate", "--run", "run.tsv", "msrun"),
    *defects("validate", "--topics", "q.tsv", "q", kinds=("non-utf8", "bom")),
    Case("validate-run-bz2-not-utf8", "validate", {"--run": "{t}/run.txt.bz2"},
         {"run.txt.bz2": lambda w: bz2.compress(not_utf8("msrun", 3)(w))}, message="line is not valid UTF-8",
         where="{t}/run.txt.bz2:3"),
    Case("validate-run-with-problems", "validate", {"--run": "{t}/run.tsv"},
         {"run.tsv": edit("msrun", 2, "{0}\t{1}\t1")}, message="INVALID: 2 problem(s)"),
    Case("demo-output-is-a-file", "demo", {"--output": "{t}/f"}, {"f": text("x")},
         message="exists and is not a folder", where="{t}/f"),
    Case("demo-models-unwritable", "demo", {"--models": "/proc/distilrank/models"},
         message="cannot write the output here"),
    Case("validate-run-damaged-bz2", "validate", {"--run": "{t}/run.txt.bz2"}, {"run.txt.bz2": text(b"BZh9 broken")},
         message="cannot read run file", where="{t}/run.txt.bz2"),
]


# ---- running a case -----------------------------------------------------------------------------------------


def fill(value: str, w: World, t: Path) -> str:
    for key, path in sorted(w.items(), key=lambda kv: -len(kv[0])):
        value = value.replace("{" + key + "}", str(path))
    return value.replace("{t}", str(t))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def leftovers(*folders: Path) -> list[str]:
    """Temporary, lock and partial files, and hidden temporary folders (``pipeline.runtime.atomic`` names)."""
    return [str(p) for folder in folders for p in folder.rglob("*") if TEMPORARY.search(p.name)]


def wrong_modes(folder: Path, before: dict[str, str]) -> list[str]:
    """New files and folders whose permissions are not the umask's (0644 and 0755 under umask 022)."""
    from pipeline.runtime.atomic import default_mode

    return [f"{p}: {oct(stat.S_IMODE(p.stat().st_mode))}" for p in folder.rglob("*")
            if not p.is_symlink() and str(p.relative_to(folder)) not in before
            and stat.S_IMODE(p.stat().st_mode) != default_mode(folder=p.is_dir())]


def invoke(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def prepare(case: Case, w: World, t: Path) -> None:
    for name, content in case.files.items():
        path = t / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content(w))
    for name in case.dirs:
        (t / name).mkdir(parents=True, exist_ok=True)
    for name, target in case.links.items():
        (t / name).symlink_to(target)


_clean_results: dict[str, tuple[str, bytes]] = {}


def clean_result(command: str, w: World, root: Path, capsys) -> tuple[str, bytes]:
    """The clean command's stdout and result file (run once per command)."""
    if command not in _clean_results:
        t = root / f"clean-{command}"
        t.mkdir()
        code, out, err = invoke([fill(a, w, t) for a in Case("clean", command).argv()], capsys)
        assert code == 0, err
        _clean_results[command] = (normalise(out, w, t), result_bytes(command, t))
    return _clean_results[command]


def normalise(out: str, w: World, t: Path) -> str:
    """Stdout without the folders and the timings that differ from run to run."""
    out = out.replace(str(t), "<case>").replace(str(Path(w["w"]) / "data"), "<case>").replace(w["w"], "<world>")
    return re.sub(r"\d+(\.\d+)?( ?s\b|s,| ms|ms| pairs/s|,\d{3} pairs/s)", "<time>", out)


def result_bytes(command: str, t: Path) -> bytes:
    """What the command produced, in a form that does not change between identical runs."""
    path = t / RESULT[command] if command in RESULT else None
    if path is None:
        return b""
    if command == "index":
        from pipeline.retrieval.bm25 import IndexDocStore

        store = IndexDocStore.open(path)
        return json.dumps([len(store), "0" in store, store.get("0") if "0" in store else None]).encode()
    if command in ("train", "distill"):
        info = json.loads(path.read_text())
        return json.dumps([info["groups"], [s.get("steps") for s in info["summaries"].values()]]).encode()
    if command == "compare":
        report = json.loads(path.read_text())
        return json.dumps([p["metrics"] for p in report["pipelines"]], sort_keys=True).encode()
    if command == "submit":
        return bz2.decompress(path.read_bytes())
    return path.read_bytes()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, tmp_path: Path, tmp_path_factory, capsys):
    t = tmp_path / "case"
    t.mkdir()
    prepare(case, world, t)
    before_world, before_case = snapshot(Path(world["w"])), snapshot(t)
    code, out, err = invoke([fill(a, world, t) for a in case.argv()], capsys)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code == case.code, f"exit {code}, expected {case.code}\n{err}"
    assert snapshot(Path(world["w"])) == before_world, "a shared input changed"
    assert not leftovers(t, Path(world["w"])), leftovers(t, Path(world["w"]))
    if case.code == 2:
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 or case.message.startswith("INVALID"), err
        line = (errors or [out])[-1] if not case.message.startswith("INVALID") else out
        assert case.message in line, f"{case.message!r} not in {line!r}"
        assert not case.absent or case.absent not in line, line
        if case.where:
            assert f"{fill(case.where, world, t)}:" in line, f"{case.where} not named in {line!r}"
        for name, digest in before_case.items():  # the case's own inputs unchanged
            assert snapshot(t).get(name) == digest, f"{name} changed"
        if not case.message.startswith("INVALID"):
            assert set(snapshot(t)) == set(before_case), "a refused command left output"
        return
    assert case.message in err + out, f"{case.message!r} not in {err + out!r}"
    if case.where:
        warning = next((line for line in err.splitlines() if case.message in line), "")
        assert f"{fill(case.where, world, t)}: " in warning, f"{case.where} not named in {warning!r}"
    assert not wrong_modes(t, before_case), wrong_modes(t, before_case)
    if case.result == "same":
        clean_out, clean_bytes = clean_result(case.command, world, tmp_path_factory.mktemp("clean"), capsys)
        assert normalise(out, world, t) == clean_out
        assert result_bytes(case.command, t) == clean_bytes
    elif case.result:
        assert case.result in out, out
    assert case.check is None or case.check(t)


# ---- signals, kill -9 and two writers: subprocesses ---------------------------------------------------------

#: Runs the CLI with one function of the package wrapped so that, when called (``call``), when it returns
#: (``return``) or once its context is entered (``context``), the process blocks (``block``: prints "ready" and
#: sleeps), signals itself (``N``) or has a timer signal it a little later (``later:N``). Ctrl-C is Python's own
#: even when the test run was started where SIGINT is ignored (``nohup``, a background job of a script).
HARNESS = """
import contextlib, importlib, os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)
module, name, style, action = sys.argv[1:5]
target = importlib.import_module(module)
original = getattr(target, name)

def act():
    if action == "block":
        print("ready", flush=True)
        time.sleep(60)
    elif action.startswith("later:"):
        threading.Timer(0.5, os.kill, (os.getpid(), int(action[6:]))).start()
    else:
        os.kill(os.getpid(), int(action))
        time.sleep(5)

if style == "call":
    def wrapped(*args, **kwargs):
        act()
        return original(*args, **kwargs)
elif style == "return":
    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        act()
        return result
else:
    @contextlib.contextmanager
    def wrapped(*args, **kwargs):
        with original(*args, **kwargs) as handle:
            act()
            yield handle
setattr(target, name, wrapped)
from pipeline.cli import main
raise SystemExit(main(sys.argv[5:]))
"""


def harness(argv: list[str], module: str, name: str, style: str, action: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", HARNESS, module, name, style, action, *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def argv_of(command: str, w: World, t: Path, **flags: str) -> list[str]:
    return [fill(a, w, t) for a in Case("x", command, dict(flags)).argv()]


def test_two_writers_then_sigterm(world: World, tmp_path: Path, capsys):
    """A second rerank into the same output fails at once naming the first; SIGTERM stops the first cleanly."""
    first = harness(argv_of("rerank", world, tmp_path), "pipeline.io.runs", "atomic_write", "context", "block")
    try:
        assert first.stdout.readline() == "ready\n", first.stderr.read()
        assert any(tmp_path.glob(".out.trec.*.tmp"))  # the first is writing its temporary file
        code, out, err = invoke(argv_of("rerank", world, tmp_path), capsys)
        assert code == 2 and f"{tmp_path}/out.trec: process {first.pid} is writing this output" in err
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 128 + signal.SIGTERM
        stderr = first.stderr.read()
        assert "terminated (SIGTERM); finished work is kept" in stderr and "Traceback" not in stderr
    finally:
        first.kill()
        first.wait()
    assert [p.name for p in tmp_path.iterdir()] == ["out.trec.journal"]  # kept for --resume (issue 14)


def test_kill_9_leaves_what_the_next_run_removes(world: World, tmp_path: Path, capsys):
    """kill -9 while the output is written leaves a temporary file, the lock and the journal; a fresh run
    refuses to start over the journal, and --resume sweeps the leftovers and writes the output."""
    killed = harness(argv_of("rerank", world, tmp_path), "pipeline.io.runs", "atomic_write", "context",
                     str(int(signal.SIGKILL)))
    assert killed.wait(timeout=120) == -signal.SIGKILL
    assert sorted(p.name.split(".")[-1] for p in tmp_path.iterdir()) == ["journal", "lock", "tmp"]
    code, out, err = invoke(argv_of("rerank", world, tmp_path), capsys)
    assert code == 2 and "continue it with --resume" in err
    code, out, err = invoke([*argv_of("rerank", world, tmp_path), "--resume"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.trec", "out.trec.timing.json"]


def test_two_trainers_then_ctrl_c(world: World, tmp_path: Path, capsys):
    first = harness(argv_of("train", world, tmp_path), "pipeline.train.recipes", "run_phase", "call", "block")
    try:
        assert first.stdout.readline() == "ready\n", first.stderr.read()
        code, out, err = invoke(argv_of("train", world, tmp_path), capsys)
        assert code == 2 and f"process {first.pid} is writing this output" in err
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130
        stderr = first.stderr.read()
        assert "distilrank: interrupted" in stderr and "Traceback" not in stderr
    finally:
        first.kill()
        first.wait()
    assert list(tmp_path.iterdir()) == []  # the empty output folder is gone too


def test_ctrl_c_while_retrieve_starts(world: World, tmp_path: Path):
    """Ctrl-C while pyserini and the JVM start: one line, exit 130, no output."""
    starting = harness(argv_of("retrieve", world, tmp_path), "pipeline.retrieval.bm25", "import_pyserini", "call",
                       f"later:{int(signal.SIGINT)}")
    assert starting.wait(timeout=120) == 130
    stderr = starting.stderr.read()
    assert stderr.strip().splitlines()[-1] == "distilrank: interrupted" and "Traceback" not in stderr, stderr
    assert "could not be imported" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_java_indexes(world: World, tmp_path: Path):
    """Ctrl-C reaches Python, not the JVM (which would exit at once): the scratch folder is removed."""
    (tmp_path / "c.tsv").write_text("".join(f"{i}\t{' '.join(['volcano piano glacier coffee'] * 20)} {i}\n"
                                            for i in range(20000)))
    argv = argv_of("index", world, tmp_path, **{"--collection": str(tmp_path / "c.tsv")})
    started = time.perf_counter()
    indexing = harness(argv, "pipeline.retrieval.bm25", "import_pyserini", "return", f"later:{int(signal.SIGINT)}")
    assert indexing.wait(timeout=120) == 130, indexing.stderr.read()  # Ctrl-C while Lucene indexes
    assert "Traceback" not in indexing.stderr.read() and time.perf_counter() - started < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tsv"]


def test_logs_in_a_file_are_quiet(world: World, tmp_path: Path):
    """stderr that is not a terminal gets no Lucene INFO, SLF4J notices, colour codes or progress frames."""
    commands = [argv_of("index", world, tmp_path), argv_of("retrieve", world, tmp_path),
                argv_of("rerank", world, tmp_path, **{"--model": world["base"], "--no-progress": None})]
    script = "import sys\nfrom pipeline.cli import main\nfor argv in sys.argv[1:]:\n    main(argv.split('\\x1f'))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script, *("\x1f".join(a) for a in commands)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.count("written to") == 3, done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if "WARNING" not in line] == [], done.stderr  # only our warning: the new head
    assert len(lines) == 1 and "no ranking head found" in lines[0]
    for noise in ("INFO", "SLF4J", "\x1b[", "\r", "Loading weights", "LOAD REPORT"):
        assert noise not in done.stderr
