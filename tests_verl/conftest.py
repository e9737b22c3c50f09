"""Fixtures for the verl adapter tests: the real verl classes, on CPU, with a scripted server manager.

Run by `make test-verl` in .venv-verl (verl's transformers pin differs from the main environment's).
"""

from __future__ import annotations

import os
from typing import Sequence

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")

from verl.workers.rollout.replica import TokenOutput  # noqa: E402

from zerosearch.engines.base import Document, SearchEngine, SearchRequest, SearchResult  # noqa: E402

WORDS = ["what is the capital of Quorath", "Brelesk founded the city", "the answer is Vaskine", "I do not know"]


@pytest.fixture(scope="session")
def tokenizer():
    from zerosearch.llm.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer(WORDS)


class ScriptedServer:
    """Stands in for verl's LLMServerClient: answers each `generate` with the next scripted turn, as token
    ids (plus an optional tail the server produced past the stop string), and records every call."""

    def __init__(self, tokenizer, turns: Sequence[str], tail: str = "", logprob: float = -0.5) -> None:
        self.tokenizer, self.turns, self.tail, self.logprob = tokenizer, list(turns), tail, logprob
        self.calls: list[dict] = []

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.calls.append({"request_id": request_id, "prompt_ids": list(prompt_ids),
                           "sampling_params": dict(sampling_params), **kwargs})
        text = self.turns[len(self.calls) - 1]
        ids = self.ids(text + self.tail)
        if text.endswith("<eos>"):
            ids = self.ids(text[: -len("<eos>")]) + [self.tokenizer.eos_token_id]
        ids = ids[: sampling_params["max_tokens"]]
        return TokenOutput(token_ids=ids, log_probs=[self.logprob] * len(ids), stop_reason="completed")


class RecordingEngine(SearchEngine):
    name, real = "fake", False

    def __init__(self) -> None:
        self.requests: list[SearchRequest] = []

    def search(self, requests: Sequence[SearchRequest], topk: int | None = None) -> list[SearchResult]:
        self.requests.extend(requests)
        return [SearchResult(r.query, [Document("0", "Quorath", f"Brelesk founded the city ({r.query})")],
                             self.name, False, kind="useful") for r in requests]


@pytest.fixture()
def engine(monkeypatch):
    from zerosearch.integrations.verl import agent_loop

    eng = RecordingEngine()
    monkeypatch.setattr(agent_loop, "shared_engine", lambda settings: eng)
    return eng
