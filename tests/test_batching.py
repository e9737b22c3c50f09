"""BatchingEngine: concurrent searches meet in one engine call, results go back to their own callers."""

import asyncio
import threading
import time

import pytest
from fastapi.testclient import TestClient

from zerosearch.engines.base import Document, SearchEngine, SearchRequest, SearchResult
from zerosearch.engines.batching import BatchingEngine
from zerosearch.server import create_app


class CountingEngine(SearchEngine):
    """Echoes each query; records the size of every call; can be made slow, failing or stuck."""

    name = "counting"
    real = False

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[int, int]] = []  # (queries, topk)
        self.active = self.max_active = 0
        self.fail: str | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()

    def search(self, requests, topk=None):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.gate.wait()
            time.sleep(self.delay)
            self.calls.append((len(requests), topk))
            if self.fail:
                raise RuntimeError(self.fail)
            return [SearchResult(r.query, [Document(str(j), "", f"{r.query} {r.question}") for j in range(topk)],
                                 self.name, False, kind="useful") for r in requests]
        finally:
            with self.lock:
                self.active -= 1


def _concurrently(n, fn):
    out, errors = [None] * n, [None] * n

    def run(i):
        try:
            out[i] = fn(i)
        except Exception as e:
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    return out, errors


def test_concurrent_searches_are_coalesced_and_split_back():
    inner = CountingEngine(delay=0.05)
    engine = BatchingEngine(inner, max_batch=8, max_wait=0.05)
    try:
        out, errors = _concurrently(32, lambda i: engine.search([SearchRequest(f"q{i}", question=f"who{i}")], topk=2))
    finally:
        engine.close()
    assert errors == [None] * 32
    for i, results in enumerate(out):  # every caller gets its own result, not a neighbour's
        assert [r.query for r in results] == [f"q{i}"]
        assert results[0].documents[0].text == f"q{i} who{i}" and len(results[0].documents) == 2
    sizes = [n for n, _ in inner.calls]
    assert sum(sizes) == 32 and max(sizes) <= 8
    assert len(sizes) < 32  # coalesced: fewer engine calls than requests
    assert inner.max_active == 1  # one call at a time: the wrapped engine needs no locking
    assert engine.stats["batches"] == len(sizes) and engine.stats["queries"] == 32


def test_multi_query_requests_stay_whole_and_topk_is_not_mixed():
    inner = CountingEngine(delay=0.02)
    engine = BatchingEngine(inner, max_batch=5, max_wait=0.05)
    try:
        def call(i):
            k = 1 + i % 2
            return k, engine.search([SearchRequest(f"q{i}-{j}") for j in range(3)], topk=k)

        out, errors = _concurrently(10, call)
    finally:
        engine.close()
    assert errors == [None] * 10
    for i, (k, results) in enumerate(out):
        assert [r.query for r in results] == [f"q{i}-{j}" for j in range(3)]
        assert all(len(r.documents) == k for r in results)
    assert all(n % 3 == 0 for n, _ in inner.calls)  # a request is never split across calls
    assert all(n <= 5 for n, _ in inner.calls)  # 3 + 3 > 5: one request per call here


def test_an_engine_error_reaches_every_caller_of_the_batch_and_the_worker_survives():
    inner = CountingEngine(delay=0.05)
    inner.fail = "model crashed"
    engine = BatchingEngine(inner, max_batch=16, max_wait=0.05)
    try:
        _, errors = _concurrently(6, lambda i: engine.search([SearchRequest(f"q{i}")]))
        assert all(isinstance(e, RuntimeError) and "model crashed" in str(e) for e in errors)
        assert engine.stats["failures"] >= 1
        inner.fail = None
        assert [r.query for r in engine.search([SearchRequest("again")])] == ["again"]
    finally:
        engine.close()


def test_a_stuck_engine_times_out_each_caller_and_recovers():
    inner = CountingEngine()
    inner.gate.clear()  # the engine hangs
    engine = BatchingEngine(inner, max_batch=4, max_wait=0.0, timeout=0.3)
    try:
        t0 = time.monotonic()
        _, errors = _concurrently(6, lambda i: engine.search([SearchRequest(f"q{i}")]))
        assert time.monotonic() - t0 < 5
        assert all(isinstance(e, TimeoutError) and "within 0.3s" in str(e) for e in errors)
        assert engine.stats["timeouts"] == 6
        inner.gate.set()  # the engine comes back: callers that gave up while queued cost nothing
        time.sleep(0.1)
        assert [r.query for r in engine.search([SearchRequest("later")])] == ["later"]
        assert sum(n for n, _ in inner.calls) < 6 + 1
    finally:
        inner.gate.set()
        engine.close()


def test_async_callers_share_a_batch():
    inner = CountingEngine(delay=0.05)
    engine = BatchingEngine(inner, max_batch=32, max_wait=0.05)

    async def main():
        return await asyncio.gather(*(engine.asearch([SearchRequest(f"q{i}")]) for i in range(20)))

    try:
        out = asyncio.run(main())
    finally:
        engine.close()
    assert [r[0].query for r in out] == [f"q{i}" for i in range(20)]
    assert len(inner.calls) <= 3


def test_empty_search_closed_engine_and_bad_settings():
    engine = BatchingEngine(CountingEngine())
    assert engine.search([]) == []
    with pytest.raises(ValueError):
        engine.search([SearchRequest("q")], topk=0)
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.search([SearchRequest("q")])
    for bad in ({"max_batch": 0}, {"max_wait": -1}, {"timeout": 0}):
        with pytest.raises(ValueError):
            BatchingEngine(CountingEngine(), **bad)


def test_server_answers_504_when_the_batched_engine_times_out():
    inner = CountingEngine()
    inner.gate.clear()
    engine = BatchingEngine(inner, timeout=0.2)
    try:
        with TestClient(create_app(engine)) as c:
            r = c.post("/retrieve", json={"queries": ["q"]})
            assert r.status_code == 504 and "within 0.2s" in r.json()["error"]
            assert c.get("/health").status_code == 200
            text = c.get("/metrics").text
            assert "zerosearch_engine_timeouts_total 1" in text
            inner.gate.set()
            assert c.post("/retrieve", json={"queries": ["q"]}).status_code == 200
            assert "zerosearch_engine_batches_total" in c.get("/metrics").text
    finally:
        inner.gate.set()
        engine.close()
