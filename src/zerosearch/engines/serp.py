"""Google through SerpAPI, with an on-disk cache so a repeated query is paid for once.

`real` on a result means "this call reached the paid engine": fresh answers are real, cache hits are not
(they cost nothing), and carry `meta["cached"] = True`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import httpx

from ..io import atomic_write_text
from ..retry import GaveUp, Transient, send, transient_status, with_retries
from .base import Document, SearchEngine, SearchRequest, SearchResult, check_topk

SERPAPI_URL = "https://serpapi.com/search.json"
KEY_ENV = "SERPAPI_API_KEY"
DEFAULT_CACHE = Path("~/.cache/zerosearch/serp")


class SerpEngine(SearchEngine):
    name = "serp"
    real = True

    def __init__(self, *, api_key: str | None = None, topk: int = 3, cache_dir: str | Path | None = None,
                 timeout: float = 20.0, retries: int = 2, backoff: float = 1.0, location: str | None = None,
                 gl: str = "us", hl: str = "en", client: httpx.Client | None = None, workers: int = 4) -> None:
        self.api_key = api_key or os.environ.get(KEY_ENV)
        if not self.api_key:
            raise ValueError(f"SerpAPI needs an API key: pass api_key= or set the {KEY_ENV} environment variable")
        if retries < 0 or backoff < 0 or timeout <= 0 or workers < 1:
            raise ValueError("retries and backoff must be >= 0, timeout > 0 and workers >= 1")
        self.default_topk = check_topk(topk, 3)
        self.cache_dir = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE).expanduser()
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.location = location
        self.gl, self.hl = gl, hl
        self.workers = workers
        self._own_client = client is None
        self.client = client if client is not None else httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def _params(self, query: str, k: int) -> dict[str, Any]:
        params: dict[str, Any] = {"engine": "google", "q": query, "num": k, "gl": self.gl, "hl": self.hl}
        if self.location:
            params["location"] = self.location
        return params

    def _cache_path(self, params: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(params, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return self.cache_dir / f"{key}.json"

    @staticmethod
    def _read_cache(path: Path) -> list | None:
        try:
            organic = json.loads(path.read_text(encoding="utf-8")).get("organic_results")
        except (OSError, ValueError, AttributeError):
            return None
        return organic if isinstance(organic, list) else None

    def _write_cache(self, path: Path, params: dict[str, Any], organic: list) -> None:
        atomic_write_text(path, json.dumps({"params": params, "organic_results": organic}, ensure_ascii=False))

    def _fetch(self, params: dict[str, Any]) -> tuple[list | None, str | None]:
        """(organic_results, None) or (None, error) after at most 1 + retries attempts."""
        try:
            return with_retries(lambda: self._attempt(params), retries=self.retries, backoff=self.backoff)
        except GaveUp as e:
            return None, str(e)

    def _attempt(self, params: dict[str, Any]) -> tuple[list | None, str | None]:
        # the exception's text may quote the URL, which holds the key
        response = send(lambda: self.client.get(SERPAPI_URL, params={**params, "api_key": self.api_key},
                                                timeout=self.timeout), timeout=self.timeout, detail=False)
        try:
            data = response.json()
        except ValueError:
            data = None
        message = data.get("error") if isinstance(data, dict) else None
        if transient_status(response.status_code):
            raise Transient(f"SerpAPI {response.status_code}: {message or 'server error'}")
        if response.status_code >= 400:
            return None, f"SerpAPI {response.status_code}: {message or 'request rejected'}"
        if not isinstance(data, dict):
            return None, "SerpAPI answered with something that is not a JSON object"
        organic = data.get("organic_results")
        if organic is None:
            # SerpAPI reports an empty result page as an "error" with status 200
            if message is None or "any results" in message:
                return [], None
            return None, f"SerpAPI: {message}"
        if not isinstance(organic, list):
            return None, "SerpAPI 'organic_results' is not a list"
        return organic, None

    def _one(self, request: SearchRequest, k: int) -> SearchResult:
        t0 = time.perf_counter()
        params = self._params(request.query, k)
        path = self._cache_path(params)
        organic, error = self._read_cache(path), None
        cached = organic is not None
        if not cached:
            organic, error = self._fetch(params)
            if error is None:
                try:
                    self._write_cache(path, params, organic)
                except OSError:
                    pass  # a read-only cache must not fail the search
        docs = []
        for position, item in enumerate((organic or [])[:k], 1):  # SerpAPI may return more than `num`
            if not isinstance(item, dict):
                continue
            docs.append(Document(str(item.get("link") or item.get("position") or position),
                                 str(item.get("title") or ""), str(item.get("snippet") or "")))
        return SearchResult(request.query, docs, self.name, real=not cached and error is None, error=error,
                            seconds=time.perf_counter() - t0, meta={"cached": cached})

    def search(self, requests: Sequence[SearchRequest], topk: int | None = None) -> list[SearchResult]:
        k = check_topk(topk, self.default_topk)
        if len(requests) <= 1:
            return [self._one(r, k) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(requests))) as pool:
            return list(pool.map(lambda r: self._one(r, k), requests))
