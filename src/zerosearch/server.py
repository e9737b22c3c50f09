"""A Search-R1 compatible retrieval server (`POST /retrieve`) in front of any SearchEngine.

Search-R1 clients send `{"queries": [...], "topk": k, "return_scores": bool}` and read `result`. Simulated
engines also need each query's own question, gold answers and noise decision, so those travel as optional
lists aligned with `queries`; a top-level `meta` list (ignored by Search-R1 clients) tells our RemoteEngine
which results were simulated.

What real clients send is served, never refused (their code often ignores the status): an empty query
list, blank queries (no documents for them), thousands of queries in one request (answered in chunks),
`topk` 0 or null (the default). Failures are loud: any failed query makes the response a 5xx whose body
has `error` and per-query `errors` but no `result`, so a client that only reads `result` stops instead of
handing the policy empty documents. A client that cannot send the question, answers or noise of each
query can use the server's own noise curriculum (`ServerCurriculum`, stepped by `step`, `X-Step` or
`POST /step`).

With a BatchingEngine (what `zerosearch serve` builds for simulated engines), concurrent requests are
answered by one batched engine call and wait for it without holding a thread; each has a timeout (504).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from .curriculum import NoiseSchedule
from .engines.base import NOISY, USEFUL, SearchEngine, SearchRequest, SearchResult, parse_noise
from .engines.batching import BatchingEngine

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ENDPOINTS = ("/retrieve", "/step", "/health", "/metrics")


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Metrics:
    """Prometheus counters and one latency histogram, exposed as text format 0.0.4."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter()
        self.results: Counter[str] = Counter()
        self.queries = 0
        self.engine_failures = 0
        self.engine_timeouts = 0
        self.result_errors = 0
        self.counts: Counter[str] = Counter()  # empty_queries, queries_without_question
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe_request(self, endpoint: str, code: int, seconds: float | None) -> None:
        with self.lock:
            self.requests[(endpoint, code)] += 1
            if code >= 400:
                self.errors[endpoint] += 1
            if seconds is not None:
                self.latency_sum += seconds
                self.latency_count += 1
                for i, b in enumerate(LATENCY_BUCKETS):
                    if seconds <= b:
                        self.buckets[i] += 1

    def observe_results(self, results: list[SearchResult]) -> None:
        with self.lock:
            self.queries += len(results)
            for r in results:
                self.results[r.kind or ("real" if r.real else "other")] += 1
                self.result_errors += r.error is not None

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def engine_failed(self, timeout: bool = False) -> None:
        with self.lock:
            self.engine_failures += 1
            self.engine_timeouts += timeout

    def render(self, batching: Counter[str] | None = None) -> str:
        with self.lock:
            out = ["# HELP zerosearch_requests_total HTTP requests by endpoint and status code.",
                   "# TYPE zerosearch_requests_total counter"]
            out += [f'zerosearch_requests_total{{endpoint="{e}",code="{c}"}} {n}'
                    for (e, c), n in sorted(self.requests.items())]
            out += ["# HELP zerosearch_errors_total HTTP responses with status >= 400, by endpoint.",
                    "# TYPE zerosearch_errors_total counter"]
            out += [f'zerosearch_errors_total{{endpoint="{e}"}} {n}' for e, n in sorted(self.errors.items())]
            out += ["# HELP zerosearch_queries_total Queries answered by the engine.",
                    "# TYPE zerosearch_queries_total counter",
                    f"zerosearch_queries_total {self.queries}",
                    "# HELP zerosearch_results_total Results by kind (useful / noisy for simulated, real).",
                    "# TYPE zerosearch_results_total counter"]
            kinds = {USEFUL: 0, NOISY: 0, "real": 0, **self.results}  # always expose the three kinds
            out += [f'zerosearch_results_total{{kind="{_label(k)}"}} {n}' for k, n in sorted(kinds.items())]
            out += ["# HELP zerosearch_result_errors_total Results whose engine reported a per-query error.",
                    "# TYPE zerosearch_result_errors_total counter",
                    f"zerosearch_result_errors_total {self.result_errors}",
                    "# HELP zerosearch_empty_queries_total Blank queries, answered with no documents and no search.",
                    "# TYPE zerosearch_empty_queries_total counter",
                    f"zerosearch_empty_queries_total {self.counts['empty_queries']}",
                    "# HELP zerosearch_queries_without_question_total Simulated queries sent without a question "
                    "or gold answers.",
                    "# TYPE zerosearch_queries_without_question_total counter",
                    f"zerosearch_queries_without_question_total {self.counts['queries_without_question']}",
                    "# HELP zerosearch_engine_failures_total Engine calls that raised.",
                    "# TYPE zerosearch_engine_failures_total counter",
                    f"zerosearch_engine_failures_total {self.engine_failures}",
                    "# HELP zerosearch_engine_timeouts_total Requests that got no answer from the engine in time.",
                    "# TYPE zerosearch_engine_timeouts_total counter",
                    f"zerosearch_engine_timeouts_total {self.engine_timeouts}",
                    "# HELP zerosearch_retrieve_seconds Latency of /retrieve requests.",
                    "# TYPE zerosearch_retrieve_seconds histogram"]
            out += [f'zerosearch_retrieve_seconds_bucket{{le="{b}"}} {n}' for b, n in zip(LATENCY_BUCKETS, self.buckets)]
            out += [f'zerosearch_retrieve_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                    f"zerosearch_retrieve_seconds_sum {self.latency_sum}",
                    f"zerosearch_retrieve_seconds_count {self.latency_count}"]
        if batching is not None:
            out += ["# HELP zerosearch_engine_batches_total Engine calls made for coalesced requests.",
                    "# TYPE zerosearch_engine_batches_total counter",
                    f"zerosearch_engine_batches_total {batching['batches']}",
                    "# HELP zerosearch_engine_batched_queries_total Queries answered by those calls.",
                    "# TYPE zerosearch_engine_batched_queries_total counter",
                    f"zerosearch_engine_batched_queries_total {batching['queries']}"]
        return "\n".join(out) + "\n"


def _label(value: str) -> str:
    """Escape a Prometheus label value (kinds come from engines, so they are not trusted)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _aligned(body: dict, key: str, n: int, check, broadcast: bool) -> list:
    """An optional per-query field: a list with one entry per query (or, if `broadcast`, one value for all)."""
    value = body.get(key)
    if value is None:
        return [check(None, key)] * n
    if broadcast and not isinstance(value, list):
        return [check(value, key)] * n
    if not isinstance(value, list):
        raise BadRequest(f"'{key}' must be a list with one entry per query")
    if len(value) != n:
        raise BadRequest(f"'{key}' has {len(value)} entries but there are {n} queries")
    return [check(v, f"{key}[{i}]") for i, v in enumerate(value)]


def _check_text(v: str, where: str) -> str:
    """JSON can smuggle lone surrogates ("\\ud800") that are not text: tokenizers and UTF-8 output choke on them."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{where} is not valid Unicode text (lone surrogate)") from None
    return v


def _check_question(v: Any, where: str) -> str | None:
    if v is not None and not isinstance(v, str):
        raise BadRequest(f"{where} must be a string or null")
    return v if v is None else _check_text(v, where)


def _check_answers(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
        raise BadRequest(f"{where} must be a list of strings")
    return tuple(_check_text(a, f"{where}[{i}]") for i, a in enumerate(v))


def _check_noise(v: Any, where: str) -> str | float | None:
    try:
        return None if v is None else parse_noise(v, where)
    except ValueError as e:
        raise BadRequest(str(e)) from None


@dataclass
class Retrieve:
    """A parsed /retrieve body. Blank queries (`<search> </search>`) are kept: they get no documents."""

    requests: list[SearchRequest]
    topk: int
    with_scores: bool
    step: int | None = None


def parse_retrieve(body: Any, *, max_queries: int, max_query_chars: int, max_topk: int,
                   default_topk: int) -> Retrieve:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    queries = body.get("queries")
    if not isinstance(queries, list):  # an empty list is a turn in which no row searched: answered, not refused
        raise BadRequest("'queries' must be a list of strings")
    if len(queries) > max_queries:
        raise BadRequest(f"too many queries: {len(queries)} > {max_queries} (the server's server.max_queries)")
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise BadRequest(f"queries[{i}] must be a string, not {type(q).__name__}")
        if len(q) > max_query_chars:
            raise BadRequest(f"queries[{i}] is longer than {max_query_chars} characters")
        _check_text(q, f"queries[{i}]")
    topk = body.get("topk")
    if topk is None or topk == 0 and _is_int(topk):  # Search-R1's server falls back to its default too
        topk = default_topk
    elif not _is_int(topk) or not 1 <= topk <= max_topk:
        raise BadRequest(f"'topk' must be an integer between 1 and {max_topk} (0 or null: the default "
                         f"{default_topk}), not {topk!r}")
    return_scores = body.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise BadRequest("'return_scores' must be true or false")
    step = body.get("step")
    if step is not None and (not _is_int(step) or step < 0):
        raise BadRequest(f"'step' must be a non-negative integer, not {step!r}")
    n = len(queries)
    questions = _aligned(body, "questions", n, _check_question, broadcast=False)
    answers = _aligned(body, "golden_answers", n, _check_answers, broadcast=False)
    noise = _aligned(body, "noise", n, _check_noise, broadcast=True)
    requests = [SearchRequest(queries[i], questions[i], answers[i], noise[i]) for i in range(n)]
    return Retrieve(requests, topk, return_scores, step)


def _finite(x: float | None) -> float | None:
    return None if x is None else float(x) if math.isfinite(x) else 0.0  # JSON has no NaN / inf


def _render(results: list[SearchResult], with_scores: bool) -> dict[str, Any]:
    rows = []
    for r in results:
        docs = []
        for d in r.documents:
            item = d.to_search_r1(with_scores)
            if with_scores:
                item["score"] = _finite(item["score"])
            docs.append(item)
        rows.append(docs)
    meta = [{"engine": r.engine, "real": r.real, "kind": r.kind, "error": r.error, "repaired": r.repaired}
            for r in results]
    return {"result": rows, "meta": meta}


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


class ServerCurriculum:
    """The noise curriculum for clients that cannot send `noise` (a stock Search-R1 client, verl's search
    tool): P(noisy) at the current step, the step set by a request's `step` field, an `X-Step` header or
    `POST /step` (which advances it by one without a body)."""

    def __init__(self, schedule: NoiseSchedule, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, not {total_steps}")
        self.schedule, self.total_steps, self.step = schedule, total_steps, 0
        self._lock = threading.Lock()

    def set(self, step: int | None = None) -> int:
        with self._lock:
            self.step = self.step + 1 if step is None else step
            return self.step

    def noise(self, step: int | None = None) -> float:
        return self.schedule(self.step if step is None else step, self.total_steps)


def create_app(engine: SearchEngine, *, token: str | None = None, max_queries: int = 4096,
               max_query_chars: int = 2000, max_topk: int = 50, default_topk: int | None = None,
               chunk_queries: int = 256, timeout: float | None = None,
               curriculum: ServerCurriculum | None = None) -> FastAPI:
    """The app. Large requests go to the engine `chunk_queries` at a time; with `timeout`, a request without
    an answer by then fails with 504 (a BatchingEngine has its own). `curriculum` supplies the noise of
    requests that do not say."""
    max_topk = min(max_topk, engine.max_topk)
    k_default = engine.default_topk if default_topk is None else default_topk
    if not _is_int(k_default) or not 1 <= k_default <= max_topk:
        raise ValueError(f"default topk must be between 1 and max_topk={max_topk}, not {k_default!r}")
    if max_queries < 1 or chunk_queries < 1 or (timeout is not None and timeout <= 0):
        raise ValueError("need max_queries >= 1, chunk_queries >= 1 and timeout > 0")
    app = FastAPI(title="zerosearch retrieval server", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    # Engines that are not thread-safe (a local model) see one call at a time; thread-safe ones (HTTP
    # backends) are not serialised, so a stuck call does not hold up the requests behind it.
    engine_lock = contextlib.nullcontext() if engine.thread_safe else threading.Lock()
    batching = engine if isinstance(engine, BatchingEngine) else None  # coalesces requests; has its own worker
    expected = f"Bearer {token}".encode() if token else None
    warned_context = threading.Event()
    app.state.metrics = metrics
    app.state.engine = engine
    app.state.curriculum = curriculum

    def authorised(request: Request) -> bool:
        if expected is None:
            return True
        return hmac.compare_digest(request.headers.get("authorization", "").encode(), expected)

    def run_engine(requests: list[SearchRequest], topk: int) -> list[SearchResult]:
        with engine_lock:
            return engine.search(requests, topk)

    async def answer(requests: list[SearchRequest], topk: int) -> list[SearchResult]:
        chunks = [requests[i : i + chunk_queries] for i in range(0, len(requests), chunk_queries)]
        if batching is not None:  # every chunk queues at once; the worker batches them with other requests
            parts = await asyncio.gather(*(batching.asearch(c, topk) for c in chunks))
        else:
            async def in_order() -> list[list[SearchResult]]:
                return [await run_in_threadpool(run_engine, c, topk) for c in chunks]

            try:
                parts = await asyncio.wait_for(in_order(), timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"no answer from the {engine.name} engine within {timeout:g}s") from None
        for chunk, part in zip(chunks, parts):
            if len(part) != len(chunk):
                raise RuntimeError(f"engine returned {len(part)} results for {len(chunk)} queries")
        return [r for part in parts for r in part]

    def add_context(parsed: Retrieve, header_step: str | None) -> None:
        """The curriculum's noise for requests that do not say; a loud warning when a simulator gets no
        question or answer (its useful documents are then written blind)."""
        if engine.real:
            return
        missing = sum(1 for r in parsed.requests if r.query.strip() and not (r.question and r.golden_answers))
        if missing:
            metrics.count("queries_without_question", missing)
            if not warned_context.is_set():
                warned_context.set()
                log.warning("%d simulated queries arrived without a question or gold answers: the simulator writes "
                            "their documents blind. Send `questions` and `golden_answers` (one per query) with "
                            "each /retrieve request; see README, 'Train with ZeroSearch from Search-R1 or verl'. "
                            "Counted in /metrics as zerosearch_queries_without_question_total; warned once.",
                            missing)
        if curriculum is None:
            return
        step = parsed.step
        if step is None and header_step is not None:
            if not header_step.strip().isdigit():
                raise BadRequest(f"the X-Step header must be a non-negative integer, not {header_step!r}")
            step = int(header_step)
        if step is not None:
            curriculum.set(step)
        p = curriculum.noise()
        for r in parsed.requests:
            if r.noise is None:
                r.noise = p

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        t0 = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # never let one request take the server down
            log.exception("unhandled error on %s", request.url.path)
            response = _error(500, "internal server error")
        path = request.url.path
        endpoint = path if path in ENDPOINTS else "other"
        seconds = time.perf_counter() - t0 if endpoint == "/retrieve" else None
        metrics.observe_request(endpoint, response.status_code, seconds)
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "engine": engine.name, "real": engine.real}

    @app.get("/metrics")
    async def get_metrics(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        stats = None if batching is None else batching.stats
        text = metrics.render(stats)
        if curriculum is not None:
            text += ("# HELP zerosearch_curriculum_step The server curriculum's step.\n"
                     "# TYPE zerosearch_curriculum_step gauge\n"
                     f"zerosearch_curriculum_step {curriculum.step}\n"
                     "# HELP zerosearch_curriculum_noise P(noisy) given to requests that do not say.\n"
                     "# TYPE zerosearch_curriculum_noise gauge\n"
                     f"zerosearch_curriculum_noise {curriculum.noise()}\n")
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.post("/step")
    async def post_step(request: Request) -> Response:
        """Advance the server curriculum by one step, or set it: `{"step": n}`."""
        if not authorised(request):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        if curriculum is None:
            return _error(409, "this server has no curriculum (start it with -c server.total_steps=N and the run's curriculum)")
        try:
            raw = await _read_body(request)
            body = json.loads(raw) if raw.strip() else {}
        except BadRequest as e:
            return _error(e.status, str(e))
        except (ValueError, RecursionError) as e:
            return _error(400, f"request body is not valid JSON: {e}")
        step = body.get("step") if isinstance(body, dict) else None
        if not isinstance(body, dict) or (step is not None and (not _is_int(step) or step < 0)):
            return _error(400, "body must be empty or {\"step\": a non-negative integer}")
        step = curriculum.set(step)
        return JSONResponse({"step": step, "total_steps": curriculum.total_steps, "noise": curriculum.noise()})

    @app.post("/retrieve")
    async def retrieve(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        try:
            raw = await _read_body(request)
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError) as e:
                raise BadRequest(f"request body is not valid JSON: {e}") from None
            parsed = parse_retrieve(body, max_queries=max_queries, max_query_chars=max_query_chars,
                                    max_topk=max_topk, default_topk=k_default)
            add_context(parsed, request.headers.get("x-step"))
        except BadRequest as e:
            return _error(e.status, str(e))
        requests = parsed.requests
        asked = [i for i, r in enumerate(requests) if r.query.strip()]
        blank = len(requests) - len(asked)
        if blank:  # `<search> </search>`: no search, no documents, counted
            metrics.count("empty_queries", blank)
        try:
            found = await answer([requests[i] for i in asked], parsed.topk) if asked else []
        except TimeoutError as e:
            metrics.engine_failed(timeout=True)
            log.warning("engine %s timed out: %s", engine.name, e)
            return _error(504, f"engine {engine.name} timed out: {e}")
        except Exception as e:
            metrics.engine_failed()
            log.warning("engine %s failed: %s", engine.name, e)
            return _error(502, f"engine {engine.name} failed: {type(e).__name__}: {e}")
        metrics.observe_results(found)
        failed = [r.error for r in found if r.error is not None]
        if failed:  # counted and logged, never silent (ZeroSearch bug B13)
            log.warning("%d of %d queries failed in engine %s: %s", len(failed), len(found), engine.name, failed[0])
            # No `result`: a Search-R1 client reads only that, and would hand the policy empty documents.
            errors: list[str | None] = [None] * len(requests)
            for i, r in zip(asked, found):
                errors[i] = r.error
            return JSONResponse({"error": f"engine {engine.name} failed for {len(failed)} of {len(requests)} "
                                          f"queries: {failed[0]}", "errors": errors}, status_code=502)
        results = [SearchResult(r.query, [], engine.name, False) for r in requests]
        for i, r in zip(asked, found):
            results[i] = r
        return JSONResponse(_render(results, parsed.with_scores))

    return app


def serve(engine: SearchEngine, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, *,
          batching: bool = False, max_batch: int = 32, max_wait: float = 0.01, timeout: float = 300.0,
          **limits: Any) -> None:
    """Serve `engine`; with `batching`, concurrent requests are coalesced into one engine call (see
    engines/batching.py) of at most `max_batch` queries, gathered for at most `max_wait` seconds."""
    import uvicorn

    if batching:
        engine = BatchingEngine(engine, max_batch=max_batch, max_wait=max_wait, timeout=timeout)
        limits.setdefault("chunk_queries", max_batch)
    app = create_app(engine, token=token, timeout=timeout, **limits)
    logging.basicConfig(level=logging.INFO)
    curriculum = app.state.curriculum
    log.info("zerosearch retrieval server: engine=%s real=%s on http://%s:%d/retrieve (token %s, batching %s, "
             "curriculum %s)", engine.name, engine.real, host, port, "required" if token else "off",
             f"up to {max_batch} queries / {max_wait * 1000:g} ms" if batching else "off",
             "off" if curriculum is None else f"{curriculum.noise(0):g} -> {curriculum.noise(curriculum.total_steps):g} "
             f"over {curriculum.total_steps} steps")
    try:
        # Keep idle connections longer than clients do (httpx: 5 s, uvicorn's default is also 5 s): a client
        # that reuses a connection the server is closing at that moment gets a reset instead of an answer.
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=75)
    finally:
        engine.close()
