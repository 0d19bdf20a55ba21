"""The inputs of every phase, derived from the input files on each call (cheap) into the state's ``inputs/``.

Split (fixed): the held-out half of the labeled DL20 queries (``heldout.qids`` beside the data, else
``configs/dl20-heldout.qids``) is only evaluated, the other half trains; the unlabeled dev queries carry the
distillation.
"""
from __future__ import annotations

from pathlib import Path

from common import CARRY, HELDOUT_QIDS, SUBSET, packaged_minilm, plain_file

from pipeline.io.data import DocStore, read_qids, read_qrels, read_topics
from pipeline.io.runs import Run
from pipeline.train.groups import iter_run_lists
from pipeline.train.heldout import HeldOut
from pipeline.train.recipes import Inputs

from .design import MEASURES, Scale

#: Candidates of a held-out query that a row reranks, and of a labeled training query that the teacher learns from.
LIST_DEPTH = 100


def default_data() -> Path:
    """The subset's files: the shared subset beside the repository, else the carried copy."""
    return SUBSET if SUBSET.is_dir() else CARRY / "msmarco-subset"


def default_minilm() -> Path:
    """The pretrained MiniLM: the carried bf16 copy, else the packaged one."""
    carried = CARRY / "minilm"
    return carried if (carried / "config.json").is_file() else packaged_minilm()


def write_topics(path: Path, topics: dict[str, str]) -> Path:
    path.write_text("".join(f"{q}\t{t}\n" for q, t in topics.items()), encoding="utf-8")
    return path


class StudyInputs:
    """Topics, qrels, runs and the docstore of the study, split into held-out, labeled training and dev queries."""

    def __init__(self, data: Path, runs: Path, folder: Path, scale: Scale):
        """Read ``data`` (collection.tsv[.gz], queries.dl20.tsv, qrels.dl20.tsv, queries.dev.small.tsv, optionally
        heldout.qids) and ``runs`` (dl20.bm25.trec[.gz], dev.bm25.trec[.gz]); write the derived files into
        ``folder``."""
        self.scale = scale
        folder.mkdir(exist_ok=True)
        collection = plain_file(data, "collection.tsv", folder)
        dl20_path, dev_path = plain_file(runs, "dl20.bm25.trec", folder), plain_file(runs, "dev.bm25.trec", folder)
        if collection is None or dl20_path is None or dev_path is None:
            raise SystemExit(f"need collection.tsv[.gz] in {data} and dl20/dev.bm25.trec[.gz] in {runs} "
                             "(benchmarks/prepare_gpu_inputs.py makes them)")
        self.docstore = DocStore(collection)
        labeled = read_topics(data / "queries.dl20.tsv")
        self.qrels = read_qrels(data / "qrels.dl20.tsv")
        held_file = data / "heldout.qids"
        held = set(read_qids(held_file if held_file.is_file() else HELDOUT_QIDS))
        self.held_q = {q: t for q, t in labeled.items() if q in held}
        self.train_q = {q: t for q, t in labeled.items() if q not in held}
        dev = read_topics(data / "queries.dev.small.tsv")
        self.dev = dict(list(dev.items())[: scale.dev_queries]) if scale.dev_queries else dev
        dl20_run = Run.read(dl20_path)
        self.held_run = dl20_run.subset(self.held_q).top(LIST_DEPTH)
        self.held_qrels = {q: d for q, d in self.qrels.items() if q in self.held_q}

        self.train_topics = write_topics(folder / "train.tsv", self.train_q)
        self.train_qrels = folder / "train.qrels"
        self.train_qrels.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in self.qrels.items()
                                            if q in self.train_q for d, g in docs.items()))
        self.train_run = dl20_run.subset(self.train_q).top(LIST_DEPTH).write(folder / "train.bm25.trec")
        self.dev_topics = write_topics(folder / "dev.tsv", self.dev)
        self.dev_run = folder / f"dev.top{scale.max_score_depth}.bm25.trec"
        with open(self.dev_run, "w", encoding="utf-8") as out:  # streamed: only the chosen dev queries
            for qid, ranking in iter_run_lists(dev_path, scale.max_score_depth):
                if qid in self.dev:
                    out.writelines(Run({qid: ranking}).lines(tag="bm25"))
        self.distill_run = folder / "distill.bm25.trec"  # the dev lists, then the labeled half's top-100
        with open(self.distill_run, "w", encoding="utf-8") as out:
            out.write(self.dev_run.read_text())
            out.write(self.train_run.read_text())
        self.distill_inputs = Inputs.load(write_topics(folder / "distill.tsv", {**self.dev, **self.train_q}),
                                          self.distill_run, collection, self.train_qrels, docstore=self.docstore)

    def summary(self) -> str:
        return (f"{len(self.train_q)} labeled training queries, {len(self.held_q)} held out, {len(self.dev)} dev "
                f"queries, {len(self.docstore)} passages")

    def teacher_inputs(self) -> Inputs:
        """The labeled half's top-100 with its qrels: what the teacher's LCE learns from."""
        return Inputs.load(self.train_topics, self.train_run, self.docstore.path, self.train_qrels,
                           docstore=self.docstore)

    def heldout(self) -> HeldOut:
        """The learning curves' held-out evaluation: the top ``eval_depth`` of each held-out list."""
        return HeldOut(self.held_run, self.held_q, self.held_qrels, self.docstore, depth=self.scale.eval_depth,
                       measures=MEASURES[:2])
