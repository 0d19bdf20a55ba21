"""``distilrank encode``: passage embeddings of a collection with a bi-encoder, and faiss indexes over them."""
from __future__ import annotations

import argparse

from ..defaults import MAX_LENGTH
from ..runtime.devices import PRECISIONS
from ..runtime.outputs import claim_output, named_inputs

EXAMPLE = ("distilrank encode --model MINILM_DIR --collection collection.tsv --output indexes/msmarco-subset.minilm "
           "--faiss flat hnsw")


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..retrieval.embeddings import CPU_BLOCK, GPU_BLOCK
    from ..retrieval.faiss_index import KINDS, FaissParams

    defaults = FaissParams()
    p = subparsers.add_parser(
        "encode", help="embed a collection with a bi-encoder into a dense index (resumable), with faiss indexes",
        description="Embed every passage of a collection (TSV pid<TAB>passage, or a JSONL file) with a bi-encoder "
        "(mean pooling, normalised; e.g. the packaged MiniLM) into OUTPUT: fp16 embeddings, memory-mapped, with "
        "the encoder's and the collection's fingerprints recorded (a mismatch is refused). Passages are batched by "
        "token length; a killed encode continues where it stopped when rerun. --faiss builds indexes beside the "
        "embeddings: flat (exact inner product), hnsw, ivfpq (8.8M passages in about 0.5 GB).",
        epilog=f"example: {EXAMPLE}")
    p.add_argument("--model", required=True, help="bi-encoder folder (sentence-transformers style, mean pooling)")
    p.add_argument("--collection", required=True, help="collection TSV (pid<TAB>passage) or JSONL file")
    p.add_argument("--output", required=True, help="dense index folder (e.g. indexes/NAME); an unfinished one resumes")
    p.add_argument("--faiss", nargs="+", choices=KINDS, default=[], metavar="KIND",
                   help=f"faiss indexes to build after encoding: {', '.join(KINDS)} (default none: exact search "
                   "is built in memory when searching)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--max-length", type=int, default=MAX_LENGTH, help="tokens per passage (default %(default)s)")
    p.add_argument("--batch-tokens", type=int, default=None,
                   help="padded tokens per batch (default: the bi-encoder's for the device)")
    p.add_argument("--block", type=int, default=None,
                   help=f"passages between checkpoints (default {CPU_BLOCK} on CPU, {GPU_BLOCK} on CUDA)")
    p.add_argument("--hnsw-m", type=int, default=defaults.hnsw_m, help=f"HNSW links a node (default {defaults.hnsw_m})")
    p.add_argument("--ef-construction", type=int, default=defaults.ef_construction,
                   help=f"HNSW build candidates (default {defaults.ef_construction})")
    p.add_argument("--ef-search", type=int, default=defaults.ef_search,
                   help=f"HNSW search candidates recorded as the index's default (default {defaults.ef_search})")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default about 4 sqrt(passages))")
    p.add_argument("--pq-m", type=int, default=None, help="PQ bytes a passage (default dim / 8)")
    p.add_argument("--nprobe", type=int, default=defaults.nprobe,
                   help=f"IVF lists searched, recorded as the index's default (default {defaults.nprobe})")
    p.add_argument("--refine", type=int, default=defaults.refine, metavar="FACTOR",
                   help="IVF-PQ: re-score the top hits x FACTOR exactly with the stored embeddings, recorded as the "
                   f"index's default (default {defaults.refine})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_encode)


def _encode(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..retrieval.biencoder import BiEncoder
    from ..retrieval.embeddings import encode_collection
    from ..retrieval.faiss_index import SEARCH_PARAMS, FaissParams, build_beside, index_file

    if args.block is not None and args.block < 1:
        raise InputError("--block must be at least 1")
    params = FaissParams(hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search,
                         nlist=args.nlist, pq_m=args.pq_m, nprobe=args.nprobe, refine=args.refine)
    with claim_output(args.output, named_inputs(args, "model", "collection"), folder=True):
        encoder = BiEncoder(args.model, device=args.device, precision=args.precision, max_length=args.max_length,
                            batch_tokens=args.batch_tokens)
        index = encode_collection(encoder, args.collection, args.output, block=args.block,
                                  progress=False if args.no_progress else None)
        print(f"{index.count} passages x {index.dim} (fp16) in {args.output}")
        for kind in args.faiss:
            wanted = params.resolve(index.count, index.dim).of(kind)
            noted = index.meta.get("faiss", {}).get(kind, {})
            built = {k: v for k, v in wanted.items() if k not in SEARCH_PARAMS}
            if not index_file(index, kind).is_file() or any(noted.get(k) != v for k, v in built.items()):
                print(f"faiss {kind}: {build_beside(index, kind, params)}")
            elif any(noted.get(k) != v for k, v in wanted.items()):  # only search defaults changed: no rebuild
                index.record_faiss(kind, {**noted, **wanted})
                print(f"faiss {kind}: already built; search defaults now {wanted}")
            else:
                print(f"faiss {kind}: already built with these parameters")
    return 0
