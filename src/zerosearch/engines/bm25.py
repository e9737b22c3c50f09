"""The offline real engine: BM25 (bm25s) over a FlashRAG-format corpus jsonl."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import bm25s
import numpy as np

from ..io import read_jsonl
from .base import Document, SearchEngine, SearchRequest, SearchResult, check_topk


class BM25Engine(SearchEngine):
    name = "bm25"
    real = True

    def __init__(self, corpus: str | Path | Sequence[dict], topk: int = 3) -> None:
        rows = read_jsonl(corpus) if isinstance(corpus, (str, Path)) else list(corpus)
        if not rows:
            raise ValueError(f"corpus {corpus} is empty")
        self.docs = []
        for n, r in enumerate(rows):
            if "contents" not in r:
                raise ValueError(f"corpus row {n} has no 'contents' field (FlashRAG format: id, contents)")
            self.docs.append(Document.from_contents(str(r.get("id", n)), r["contents"]))
        self.default_topk = topk
        self._retriever = bm25s.BM25()
        tokens = bm25s.tokenize([d.contents for d in self.docs], stopwords="en", show_progress=False)
        self._retriever.index(tokens, show_progress=False)

    def search(self, requests: Sequence[SearchRequest], topk: int | None = None) -> list[SearchResult]:
        k = min(check_topk(topk, self.default_topk), len(self.docs))
        if not requests:
            return []
        t0 = time.perf_counter()
        tokens = bm25s.tokenize([r.query for r in requests], stopwords="en", show_progress=False)
        # bm25s cannot score a query whose tokens are all stop words or unknown: give those no documents.
        empty = [len(ids) == 0 for ids in tokens.ids]
        if all(empty):
            idx = np.zeros((len(requests), 0), dtype=int)
            scores = np.zeros((len(requests), 0))
        else:
            idx, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        per = (time.perf_counter() - t0) / len(requests)
        results = []
        for i, req in enumerate(requests):
            docs = [] if empty[i] else [
                Document(d.id, d.title, d.text, float(s))
                for d, s in ((self.docs[int(j)], s) for j, s in zip(idx[i], scores[i]))
                if s > 0
            ]
            results.append(SearchResult(req.query, docs, self.name, True, seconds=per))
        return results
