"""Coalesce concurrent searches into one batched call of the wrapped engine.

A simulated engine answers 32 queries in one batched generation for little more than the cost of one, but
a retrieval server receives them as 32 separate HTTP requests. `BatchingEngine` lets those requests meet:
the first to arrive waits up to `max_wait` seconds for others (and requests keep queueing while the engine
is busy), then up to `max_batch` queries go to the engine in one call and the results are split back to
their callers. An error of that call is raised to every request of the batch; a request that is not
answered within `timeout` seconds fails with a TimeoutError instead of waiting for ever.

One worker thread feeds the wrapped engine, so an engine that is not thread-safe (a local model) never
sees two calls at once, and `search` itself may be called from any number of threads. A call of a
thread-safe engine (an HTTP backend) that is still running when every caller of its batch has timed out
is left behind: it finishes on its own thread and the worker moves on, so one stuck backend call never
makes the requests that arrive after it time out too.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Sequence

from .base import SearchEngine, SearchRequest, SearchResult, check_topk

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class _Pending:
    requests: list[SearchRequest]
    topk: int
    future: Future = field(default_factory=Future)


class BatchingEngine(SearchEngine):
    thread_safe = True  # the server may call `search` from many threads without a lock

    def __init__(self, engine: SearchEngine, *, max_batch: int = 32, max_wait: float = 0.01,
                 timeout: float = 300.0) -> None:
        if max_batch < 1 or max_wait < 0 or timeout <= 0:
            raise ValueError("need max_batch >= 1, max_wait >= 0 and timeout > 0")
        self.engine = engine
        self.name, self.real, self.default_topk = engine.name, engine.real, engine.default_topk
        self.max_topk = engine.max_topk
        self.max_batch, self.max_wait, self.timeout = max_batch, max_wait, timeout
        self.stats: Counter[str] = Counter()  # batches, queries, timeouts, failures: read by /metrics
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._held: _Pending | None = None  # arrived during a batch it could not join; opens the next one
        self._worker = threading.Thread(target=self._run, name=f"batch-{engine.name}", daemon=True)
        self._worker.start()

    def describe(self) -> dict:
        return {**self.engine.describe(), "batching": {"max_batch": self.max_batch, "max_wait": self.max_wait,
                                                      "timeout": self.timeout}}

    # ------------------------------------------------------------------ callers
    def submit(self, requests: Sequence[SearchRequest], topk: int | None = None) -> Future:
        """Queue a search; the future resolves to its results (or the engine's exception)."""
        if not self._worker.is_alive():
            raise RuntimeError(f"the batching engine in front of {self.name} is closed")
        item = _Pending(list(requests), check_topk(topk, self.default_topk, limit=self.max_topk))
        if not item.requests:
            item.future.set_result([])
        else:
            self._queue.put(item)
        return item.future

    def search(self, requests: Sequence[SearchRequest], topk: int | None = None) -> list[SearchResult]:
        future = self.submit(requests, topk)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            self._timed_out(future)
        raise AssertionError("unreachable")

    async def asearch(self, requests: Sequence[SearchRequest], topk: int | None = None) -> list[SearchResult]:
        """`search` for an event loop: waits without holding a thread."""
        future = self.submit(requests, topk)
        try:
            # shield: a timeout here must not cancel the shared batch, only this caller's wait
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout)
        except asyncio.TimeoutError:
            self._timed_out(future)
        raise AssertionError("unreachable")

    def _timed_out(self, future: Future) -> None:
        future.cancel()  # still queued: the worker skips it; already running: its result is dropped
        with self._lock:
            self.stats["timeouts"] += 1
        raise TimeoutError(f"no answer from the {self.name} engine within {self.timeout:g}s")

    # ------------------------------------------------------------------ worker
    def _next_batch(self) -> list[_Pending] | None:
        first = self._held or self._queue.get()
        self._held = None
        if first is _STOP:
            return None
        batch, size = [first], len(first.requests)
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch:
            try:  # requests that queued while the engine was busy are taken at once, without waiting
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP or item.topk != first.topk or size + len(item.requests) > self.max_batch:
                self._held = item
                break
            batch.append(item)
            size += len(item.requests)
        return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            # callers that timed out while queued are dropped before they cost any compute
            batch = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            if not self.engine.thread_safe:
                self._answer(batch)
                continue
            call = threading.Thread(target=self._answer, args=(batch,), name=f"call-{self.name}", daemon=True)
            call.start()
            # every caller of this batch has given up by then: what the call returns later is dropped
            call.join(self.timeout)
            if call.is_alive():
                with self._lock:
                    self.stats["abandoned"] += 1
                log.warning("a %s engine call of %d queries is still running after %gs; left behind",
                            self.name, sum(len(p.requests) for p in batch), self.timeout)

    def _answer(self, batch: list[_Pending]) -> None:
        requests = [r for p in batch for r in p.requests]
        try:
            results = self.engine.search(requests, batch[0].topk)
            if len(results) != len(requests):
                raise RuntimeError(f"engine returned {len(results)} results for {len(requests)} queries")
        except Exception as e:  # every waiting caller gets the error; the worker lives on
            with self._lock:
                self.stats["failures"] += 1
            log.warning("batched search of %d queries failed: %s", len(requests), e)
            for p in batch:
                p.future.set_exception(e)
            return
        with self._lock:
            self.stats["batches"] += 1
            self.stats["queries"] += len(requests)
        start = 0
        for p in batch:
            p.future.set_result(results[start : start + len(p.requests)])
            start += len(p.requests)

    def close(self) -> None:
        if self._worker.is_alive():
            self._queue.put(_STOP)
            self._worker.join(timeout=self.timeout)
        self.engine.close()
