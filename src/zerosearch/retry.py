"""The retry policy of every HTTP client here (remote search servers, SerpAPI, OpenAI-compatible servers).

A timeout, a connection error, 429 or a 5xx may pass: it is tried again after an exponential back-off
(`backoff`, then twice that, ... at most MAX_BACKOFF seconds), at most `retries` times. Any other answer is
final, a 4xx above all: the same request would be refused again.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

MAX_BACKOFF = 30.0

T = TypeVar("T")


class Transient(Exception):
    """A failure that another attempt may not meet; its message says what happened."""


class GaveUp(Exception):
    """Every attempt failed with a Transient error; the message lists the distinct causes, in order."""

    def __init__(self, errors: list[str], attempts: int) -> None:
        self.errors, self.attempts = errors, attempts
        causes = "; ".join(dict.fromkeys(errors))
        super().__init__(f"{causes}; gave up after {attempts} attempt{'s' * (attempts > 1)}")


def transient_status(status: int) -> bool:
    return status == 429 or status >= 500


def send(request: Callable[[], httpx.Response], *, timeout: float, where: str = "",
         detail: bool = True) -> httpx.Response:
    """One HTTP call; a timeout or a transport error becomes Transient. `where` names the server in the message;
    `detail=False` leaves the exception's text out of it (it may quote a URL that holds an API key)."""
    at = f" ({where})" if where else ""
    try:
        return request()
    except httpx.TimeoutException as e:
        raise Transient(f"timed out after {timeout}s: {type(e).__name__}{at}") from e
    except httpx.TransportError as e:
        text = f": {e}" if detail and str(e) else ""
        raise Transient(f"connection error: {type(e).__name__}{text}{at}") from e


def with_retries(attempt: Callable[[], T], *, retries: int, backoff: float,
                 on_retry: Callable[[], None] = lambda: None) -> T:
    """`attempt()`'s result, calling it up to 1 + retries times while it raises Transient; GaveUp after that.

    `on_retry` runs before each wait (the clients count their retries with it). The wait goes through
    `time.sleep`, looked up at each call."""
    errors: list[str] = []

    def recorded() -> T:
        try:
            return attempt()
        except Transient as e:
            errors.append(str(e))
            raise

    policy = Retrying(
        stop=stop_after_attempt(retries + 1),
        wait=wait_exponential(multiplier=backoff, max=MAX_BACKOFF),
        retry=retry_if_exception_type(Transient),
        before_sleep=lambda _state: on_retry(),
        reraise=True,
    )
    try:
        return policy(recorded)
    except Transient:
        raise GaveUp(errors, retries + 1) from None
