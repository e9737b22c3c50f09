"""A Search-R1 compatible retrieval server (`POST /retrieve`) in front of any SearchEngine.

Search-R1 clients send `{"queries": [...], "topk": k, "return_scores": bool}` and read `result`. Simulated
engines also need each query's own question, gold answers and noise decision, so those travel as optional
lists aligned with `queries`; a top-level `meta` list (ignored by Search-R1 clients) tells our RemoteEngine
which results were simulated.

With a BatchingEngine (what `zerosearch serve` builds for simulated engines), concurrent requests are
answered by one batched engine call and wait for it without holding a thread; each has a timeout (504).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from .engines.base import NOISY, USEFUL, SearchEngine, SearchRequest, SearchResult
from .engines.batching import BatchingEngine

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ENDPOINTS = ("/retrieve", "/health", "/metrics")


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
    if v is None or v in (USEFUL, NOISY):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0:
        return float(v)
    raise BadRequest(f"{where} must be 'useful', 'noisy', a probability in [0, 1] or null, not {v!r}")


def parse_retrieve(body: Any, *, max_queries: int, max_query_chars: int, max_topk: int,
                   default_topk: int) -> tuple[list[SearchRequest], int, bool]:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    queries = body.get("queries")
    if not isinstance(queries, list) or not queries:
        raise BadRequest("'queries' must be a non-empty list of strings")
    if len(queries) > max_queries:
        raise BadRequest(f"too many queries: {len(queries)} > {max_queries}")
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise BadRequest(f"queries[{i}] must be a string, not {type(q).__name__}")
        if not q.strip():
            raise BadRequest(f"queries[{i}] is empty")
        if len(q) > max_query_chars:
            raise BadRequest(f"queries[{i}] is longer than {max_query_chars} characters")
        _check_text(q, f"queries[{i}]")
    topk = body.get("topk")
    if topk is None:
        topk = default_topk
    elif not _is_int(topk) or not 1 <= topk <= max_topk:
        raise BadRequest(f"'topk' must be an integer between 1 and {max_topk}, not {topk!r}")
    return_scores = body.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise BadRequest("'return_scores' must be true or false")
    n = len(queries)
    questions = _aligned(body, "questions", n, _check_question, broadcast=False)
    answers = _aligned(body, "golden_answers", n, _check_answers, broadcast=False)
    noise = _aligned(body, "noise", n, _check_noise, broadcast=True)
    requests = [SearchRequest(queries[i], questions[i], answers[i], noise[i]) for i in range(n)]
    return requests, topk, return_scores


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


def create_app(engine: SearchEngine, *, token: str | None = None, max_queries: int = 256,
               max_query_chars: int = 2000, max_topk: int = 50, default_topk: int | None = None) -> FastAPI:
    k_default = engine.default_topk if default_topk is None else default_topk
    if not _is_int(k_default) or not 1 <= k_default <= max_topk:
        raise ValueError(f"default topk must be between 1 and max_topk={max_topk}, not {k_default!r}")
    app = FastAPI(title="zerosearch retrieval server", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    engine_lock = threading.Lock()  # engines are not thread-safe (some wrap a local model)
    batching = engine if isinstance(engine, BatchingEngine) else None  # coalesces requests; has its own worker
    expected = f"Bearer {token}".encode() if token else None
    app.state.metrics = metrics
    app.state.engine = engine

    def authorised(request: Request) -> bool:
        if expected is None:
            return True
        return hmac.compare_digest(request.headers.get("authorization", "").encode(), expected)

    def run_engine(requests: list[SearchRequest], topk: int) -> list[SearchResult]:
        with engine_lock:
            return engine.search(requests, topk)

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
        return PlainTextResponse(metrics.render(stats), media_type="text/plain; version=0.0.4")

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
            requests, topk, with_scores = parse_retrieve(
                body, max_queries=max_queries, max_query_chars=max_query_chars, max_topk=max_topk,
                default_topk=k_default)
        except BadRequest as e:
            return _error(e.status, str(e))
        try:
            if batching is not None:
                results = await batching.asearch(requests, topk)
            else:
                results = await run_in_threadpool(run_engine, requests, topk)
            if len(results) != len(requests):
                raise RuntimeError(f"engine returned {len(results)} results for {len(requests)} queries")
        except TimeoutError as e:
            metrics.engine_failed(timeout=True)
            log.warning("engine %s timed out: %s", engine.name, e)
            return _error(504, f"engine {engine.name} timed out: {e}")
        except Exception as e:
            metrics.engine_failed()
            log.warning("engine %s failed: %s", engine.name, e)
            return _error(502, f"engine {engine.name} failed: {type(e).__name__}: {e}")
        metrics.observe_results(results)
        failed = [r.error for r in results if r.error is not None]
        if failed:  # counted and logged, never silent (ZeroSearch bug B13)
            log.warning("%d of %d queries failed in engine %s: %s", len(failed), len(results), engine.name, failed[0])
        if failed and len(failed) == len(results) and not any(r.documents for r in results):
            # Nothing to return: a Search-R1 client reading only `result` would see empty lists and feed the
            # policy "no information"; an error status makes it retry or stop instead.
            body = {"error": f"engine {engine.name} failed for every query: {failed[0]}", **_render(results, with_scores)}
            return JSONResponse(body, status_code=502)
        return JSONResponse(_render(results, with_scores))

    return app


def serve(engine: SearchEngine, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, *,
          batching: bool = False, max_batch: int = 32, max_wait: float = 0.01, timeout: float = 300.0,
          **limits: Any) -> None:
    """Serve `engine`; with `batching`, concurrent requests are coalesced into one engine call (see
    engines/batching.py) of at most `max_batch` queries, gathered for at most `max_wait` seconds."""
    import uvicorn

    if batching:
        engine = BatchingEngine(engine, max_batch=max_batch, max_wait=max_wait, timeout=timeout)
    app = create_app(engine, token=token, **limits)
    logging.basicConfig(level=logging.INFO)
    log.info("zerosearch retrieval server: engine=%s real=%s on http://%s:%d/retrieve (token %s, batching %s)",
             engine.name, engine.real, host, port, "required" if token else "off",
             f"up to {max_batch} queries / {max_wait * 1000:g} ms" if batching else "off")
    try:
        # Keep idle connections longer than clients do (httpx: 5 s, uvicorn's default is also 5 s): a client
        # that reuses a connection the server is closing at that moment gets a reset instead of an answer.
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=75)
    finally:
        engine.close()
