"""Shared fixtures: a tiny tokenizer + 2-layer Llama built in the test, a small world, engines that record."""

from __future__ import annotations

import os
from typing import Sequence

import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tiny models' matrix products are far too small to split between threads, and on a shared machine every
# parallel region waits a scheduler tick for a descheduled thread (a 4x64 linear: 8 ms on 2 threads, 0.05 ms
# on one). Set before torch is imported, so that subprocesses (served engines, killed runs) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)  # torch may have been imported before this file (by a plugin)

from zerosearch.data.world import build_world  # noqa: E402
from zerosearch.engines.base import Document, SearchEngine, SearchRequest, SearchResult  # noqa: E402


class RecordingEngine(SearchEngine):
    """Returns one document echoing the query and records every request it gets."""

    name = "fake"
    real = True

    def __init__(self, text: str = "some text about {query}") -> None:
        self.text = text
        self.calls: list[list[SearchRequest]] = []

    def search(self, requests: Sequence[SearchRequest], topk: int | None = None) -> list[SearchResult]:
        self.calls.append(list(requests))
        return [SearchResult(r.query, [Document(str(i), "T", self.text.format(query=r.query))], self.name, True)
                for i, r in enumerate(requests)]

    @property
    def requests(self) -> list[SearchRequest]:
        return [r for call in self.calls for r in call]


@pytest.fixture(scope="session")
def world():
    return build_world(seed=3, n_entities=60)


@pytest.fixture(scope="session")
def tiny_tokenizer(world):
    from zerosearch.llm.tiny import build_tiny_tokenizer

    texts = [r["contents"] for r in world.corpus] + [q.question for q in world.train]
    return build_tiny_tokenizer(texts)


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    from zerosearch.llm.tiny import build_tiny_model

    return build_tiny_model(tiny_tokenizer, seed=0)


@pytest.fixture()
def recording_engine():
    return RecordingEngine()
