"""A TextGenerator backed by one or more OpenAI-compatible servers (vLLM, SGLang, `trl vllm-serve`...).

Every request has a timeout and a bounded number of retries, so a dead or stuck server turns into
failed generations (with `error` set) rather than a hung training run.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from ..retry import GaveUp, Transient, send, transient_status, with_retries
from .base import Generation, GenerationOptions, Messages, TextGenerator


@dataclass(frozen=True)
class RequestPolicy:
    """How each request is sent: its timeout in seconds, the retries after a transient failure (the first
    after `backoff` seconds, see zerosearch.retry) and how many requests of a batch are in flight at once."""

    timeout: float
    max_retries: int
    backoff: float
    concurrency: int

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.max_retries < 0 or self.backoff < 0 or self.concurrency < 1:
            raise ValueError("need timeout > 0, max_retries >= 0, backoff >= 0 and concurrency >= 1")


class OpenAICompatGenerator(TextGenerator):
    name = "openai"
    thread_safe = True  # every request is its own HTTP call; the counters are locked

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 16,
        system_prompt: str | None = "",
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__()
        self.base_urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()]
        if not self.base_urls:
            raise ValueError("base_url is empty")
        self.policy = RequestPolicy(timeout, max_retries, backoff, concurrency)
        self.model = model
        self.system_prompt = system_prompt
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._owns_client = client is None
        self.client = client or httpx.Client(
            timeout=timeout, limits=httpx.Limits(max_connections=concurrency * len(self.base_urls))
        )
        self._next = itertools.count()
        self._lock = threading.Lock()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _base(self) -> str:
        with self._lock:
            i = next(self._next)
        return self.base_urls[i % len(self.base_urls)]

    def _messages(self, prompt: Messages) -> Messages:
        messages = [dict(m) for m in prompt]
        if self.system_prompt is not None and not (messages and messages[0].get("role") == "system"):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def _generate(self, prompts: list[Messages], options: GenerationOptions) -> list[Generation]:
        # options.banned is not enforced: the API has no sequence-level ban
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": options.max_new_tokens,
            "temperature": options.temperature,
        }
        if options.stop:
            params["stop"] = list(options.stop)
        if options.seed is not None:
            params["seed"] = options.seed
        bodies = [{**params, "messages": self._messages(p)} for p in prompts]
        workers = min(self.policy.concurrency, len(bodies))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-gen") as pool:
            return list(pool.map(self._request, bodies))

    def _request(self, body: dict[str, Any]) -> Generation:
        self._count("requests")
        try:
            gen = self._attempts(body)
        except Exception as e:  # a bug or odd transport must not take down the whole batch
            gen = Generation(text="", error=f"{type(e).__name__}: {e}")
        if gen.error is not None:
            self._count("failures")
        else:
            self._count("tokens", gen.n_tokens)
        return gen

    def _attempts(self, body: dict[str, Any]) -> Generation:
        try:
            return with_retries(lambda: self._attempt(body), retries=self.policy.max_retries,
                                backoff=self.policy.backoff, on_retry=lambda: self._count("retries"))
        except GaveUp as e:
            return Generation(text="", error=str(e))

    def _attempt(self, body: dict[str, Any]) -> Generation:
        # each attempt moves to the next server, so a dead one is skipped on retry
        url = self._base() + "/chat/completions"
        timeout = self.policy.timeout
        r = send(lambda: self.client.post(url, json=body, headers=self._headers, timeout=timeout),
                 timeout=timeout, where=url)
        if transient_status(r.status_code):
            raise Transient(f"HTTP {r.status_code} from {url}: {r.text[:200]}")
        if r.status_code >= 400:
            return Generation(text="", error=f"HTTP {r.status_code} from {url}: {r.text[:500]}")
        return _parse(r, url)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def _parse(r: httpx.Response, url: str) -> Generation:
    try:
        data = r.json()
        text = data["choices"][0]["message"]["content"] or ""
        if not isinstance(text, str):
            raise TypeError(f"content is {type(text).__name__}")
        usage = data.get("usage") or {}
        n_tokens = int(usage.get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        error = f"malformed response from {url} ({type(e).__name__}: {e}): {r.text[:200]}"
        return Generation(text="", error=error)
    return Generation(text=text, n_tokens=n_tokens)
