"""``distilrank tokenize``: build a collection's passage token cache for a model's tokenizer ahead of time."""
from __future__ import annotations

import argparse

EXAMPLE = "distilrank tokenize --collection collection.tsv --model models/teacher"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tokenize", help="build the passage token cache of a collection for a model's tokenizer",
        description="Tokenize every passage of a collection once (no special tokens, cut at 512 tokens) with a "
        "model's fast tokenizer into the token cache under $DISTILRANK_CACHE (default ~/.cache/distilrank): a "
        "memory-mapped array of token ids and an offset index, shared by every model with the same tokenizer. "
        "rerank, score, train and distill build it on first use anyway (unless --no-token-cache); this builds it "
        "ahead of time. An existing cache is reused unless --rebuild.",
        epilog=f"example: {EXAMPLE}")
    p.add_argument("--collection", required=True, help="collection TSV (pid<TAB>passage) or JSONL")
    p.add_argument("--model", required=True, help="model folder or hub name whose tokenizer to use")
    p.add_argument("--rebuild", action="store_true", help="build the cache again even if it exists (e.g. corrupt)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_tokenize)


def _tokenize(args: argparse.Namespace) -> int:
    from ..io.data import DocStore
    from ..rerank.model import load_tokenizer
    from ..rerank.token_cache import TokenCache

    store = DocStore(args.collection)
    cache = TokenCache.open(store, load_tokenizer(args.model), rebuild=args.rebuild,
                            progress=False if args.no_progress else None)
    files = TokenCache.files(store, cache.key)
    size = sum(f.stat().st_size for f in files.values())
    print(f"token cache of {store.path}: {len(cache)} passages, {cache.record['tokens']} tokens "
          f"({cache.record['dtype']}), {size / 1e6:.1f} MB in {files['ids'].parent}")
    return 0
