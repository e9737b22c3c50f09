"""Client for any Search-R1 style `POST /retrieve` server (Search-R1's own, or zerosearch.server)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Sequence

import httpx

from ..retry import GaveUp, Transient, send, transient_status, with_retries
from .base import Document, SearchEngine, SearchRequest, SearchResult, check_topk


class MalformedResponse(ValueError):
    pass


def _document(item: Any, position: int) -> Document:
    """One entry of a result list: `{"document": {...}, "score": s}` or a bare document dict."""
    if not isinstance(item, dict):
        raise MalformedResponse(f"document {position} is a {type(item).__name__}, not an object")
    score = None
    if "document" in item:
        score = item.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise MalformedResponse(f"document {position} has a non-numeric score {score!r}")
        item = item["document"]
        if not isinstance(item, dict):
            raise MalformedResponse(f"document {position} is not an object")
    doc_id = str(item.get("id", position))
    if isinstance(item.get("contents"), str):
        return Document.from_contents(doc_id, item["contents"], None if score is None else float(score))
    if isinstance(item.get("text"), str):  # some servers return title and text separately
        return Document(doc_id, str(item.get("title", "")), item["text"], None if score is None else float(score))
    raise MalformedResponse(f"document {position} has no 'contents'")


class RemoteEngine(SearchEngine):
    """Sends each batch as one POST; failures come back as results with `error` set, never as exceptions.

    `url` is the full endpoint (`http://host:port/retrieve`) or the server root. When the server sends
    zerosearch's `meta` list, each result's engine/real/kind come from it, so a remote simulator is not
    counted as a real search.
    """

    name = "remote"
    real = True
    thread_safe = True  # httpx clients are thread-safe; each search is one HTTP call

    def __init__(self, url: str, *, topk: int = 3, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 token: str | None = None, client: httpx.Client | None = None) -> None:
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")
        url = url.rstrip("/")
        self.url = url if url.endswith("/retrieve") else url + "/retrieve"
        self.default_topk = check_topk(topk, 3)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own_client = client is None
        self.client = client if client is not None else httpx.Client(timeout=timeout)
        self.stats: Counter[str] = Counter()

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.url}

    def _payload(self, requests: Sequence[SearchRequest], k: int) -> dict[str, Any]:
        payload: dict[str, Any] = {"queries": [r.query for r in requests], "topk": k, "return_scores": True}
        if any(r.question is not None for r in requests):
            payload["questions"] = [r.question for r in requests]
        if any(r.golden_answers for r in requests):
            payload["golden_answers"] = [[str(a) for a in r.golden_answers] for r in requests]
        if any(r.noise is not None for r in requests):
            payload["noise"] = [r.noise for r in requests]
        return payload

    def _post(self, payload: dict[str, Any]) -> tuple[Any, str | None]:
        """(parsed JSON, None) or (None, error) after at most 1 + retries attempts."""

        def attempt() -> tuple[Any, str | None]:
            response = send(lambda: self.client.post(self.url, json=payload, headers=self.headers,
                                                     timeout=self.timeout), timeout=self.timeout)
            if transient_status(response.status_code):
                raise Transient(f"server error {response.status_code}: {response.text[:300]}")
            if response.status_code >= 400:
                return None, f"rejected with {response.status_code}: {response.text[:300]}"
            try:
                return response.json(), None
            except ValueError:
                return None, f"response is not JSON: {response.text[:300]!r}"

        try:
            return with_retries(attempt, retries=self.retries, backoff=self.backoff,
                                on_retry=lambda: self.stats.update(["retries"]))
        except GaveUp as e:
            return None, str(e)

    def search(self, requests: Sequence[SearchRequest], topk: int | None = None) -> list[SearchResult]:
        k = check_topk(topk, self.default_topk)
        if not requests:
            return []
        self.stats["requests"] += 1
        t0 = time.perf_counter()
        data, error = self._post(self._payload(requests, k))
        if error is None:
            rows = data.get("result") if isinstance(data, dict) else None
            if not isinstance(rows, list) or len(rows) != len(requests):
                got = f"{len(rows)} result lists" if isinstance(rows, list) else "no 'result' list"
                error = f"malformed response: {got} for {len(requests)} queries"
        per = (time.perf_counter() - t0) / len(requests)
        if error is not None:
            self.stats["failures"] += 1
            return [SearchResult(r.query, [], self.name, False, error=error, seconds=per) for r in requests]
        metas = data.get("meta")
        if not isinstance(metas, list) or len(metas) != len(requests):
            metas = [None] * len(requests)
        results = []
        for req, row, meta in zip(requests, rows, metas):
            result = SearchResult(req.query, [], self.name, True, seconds=per, meta={"url": self.url})
            if isinstance(meta, dict):
                result.engine = str(meta.get("engine") or self.name)
                result.real = meta.get("real") is not False
                result.kind = meta["kind"] if isinstance(meta.get("kind"), str) else None
                result.error = str(meta["error"]) if meta.get("error") is not None else None
                result.repaired = meta["repaired"] if isinstance(meta.get("repaired"), int) else 0
            try:
                if not isinstance(row, list):
                    raise MalformedResponse(f"result list is a {type(row).__name__}")
                result.documents = [_document(item, i) for i, item in enumerate(row)]
            except MalformedResponse as e:
                self.stats["malformed"] += 1
                result.error = f"malformed response: {e}"
            results.append(result)
        return results
