import time

import httpx
import pytest

from zerosearch.engines.base import SearchRequest
from zerosearch.engines.remote import RemoteEngine
from zerosearch.retry import MAX_BACKOFF, GaveUp, Transient, send, transient_status, with_retries


@pytest.fixture
def sleeps(monkeypatch):
    waits = []
    monkeypatch.setattr(time, "sleep", waits.append)
    return waits


def flaky(outcomes):
    """An attempt that raises or returns the next outcome each call."""
    calls = []

    def attempt():
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return attempt, calls


def test_transient_failures_are_retried_until_one_succeeds(sleeps):
    attempt, calls = flaky([Transient("busy"), Transient("busy"), "done"])
    retried = []
    assert with_retries(attempt, retries=3, backoff=0.5, on_retry=lambda: retried.append(1)) == "done"
    assert len(calls) == 3 and len(retried) == 2
    assert sleeps == [0.5, 1.0]


def test_giving_up_names_each_distinct_cause_once_in_order(sleeps):
    attempt, calls = flaky([Transient("timed out"), Transient("HTTP 503"), Transient("timed out")])
    with pytest.raises(GaveUp) as e:
        with_retries(attempt, retries=2, backoff=0.0)
    assert len(calls) == 3 and e.value.attempts == 3
    assert str(e.value) == "timed out; HTTP 503; gave up after 3 attempts"
    attempt, _ = flaky([Transient("refused")])
    with pytest.raises(GaveUp, match=r"^refused; gave up after 1 attempt$"):
        with_retries(attempt, retries=0, backoff=1.0)


def test_backoff_doubles_up_to_the_cap(sleeps):
    attempt, _ = flaky([Transient("x")] * 9)
    with pytest.raises(GaveUp):
        with_retries(attempt, retries=8, backoff=0.5)
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_BACKOFF, MAX_BACKOFF]


def test_other_errors_are_not_retried(sleeps):
    attempt, calls = flaky([KeyError("a bug"), "never reached"])
    with pytest.raises(KeyError):
        with_retries(attempt, retries=3, backoff=0.5)
    assert len(calls) == 1 and sleeps == []


@pytest.mark.parametrize("status,transient", [
    (200, False), (400, False), (401, False), (404, False), (422, False), (429, True), (500, True), (502, True),
    (503, True), (504, True),
])
def test_which_statuses_are_transient(status, transient):
    assert transient_status(status) is transient


def test_send_turns_transport_errors_into_transient_ones():
    request = httpx.Request("GET", "https://serp.test/search?api_key=SECRET")

    def fail(error):
        def call():
            raise error
        return call

    with pytest.raises(Transient, match=r"^timed out after 2.5s: ReadTimeout \(server A\)$"):
        send(fail(httpx.ReadTimeout("slow", request=request)), timeout=2.5, where="server A")
    with pytest.raises(Transient, match=r"^connection error: ConnectError: refused$"):
        send(fail(httpx.ConnectError("refused", request=request)), timeout=1.0)
    with pytest.raises(Transient) as e:
        send(fail(httpx.ConnectError(f"cannot reach {request.url}", request=request)), timeout=1.0, detail=False)
    assert str(e.value) == "connection error: ConnectError"
    assert send(lambda: httpx.Response(404), timeout=1.0).status_code == 404  # statuses are the caller's


def test_remote_engine_retries_429_as_the_other_clients_do(sleeps):
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(429, text="slow down")
        return httpx.Response(200, json={"result": [[{"id": "1", "contents": '"T"\nbody'}]]})

    engine = RemoteEngine("http://search.test", backoff=0.25, client=httpx.Client(transport=httpx.MockTransport(handler)))
    result, = engine.search([SearchRequest("q")])
    assert result.ok and len(calls) == 2 and sleeps == [0.25]
    assert engine.stats["retries"] == 1
