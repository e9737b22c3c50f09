import asyncio
import json
import socket
import threading
import time

import httpx
import pytest

from zerosearch.llm.openai_compat import OpenAICompatGenerator


def reply(text, tokens=None):
    body = {"choices": [{"message": {"role": "assistant", "content": text}}]}
    if tokens is not None:
        body["usage"] = {"completion_tokens": tokens}
    return httpx.Response(200, json=body)


def make(handler, base="http://sim/v1", **kw):
    kw.setdefault("backoff", 0.001)
    kw.setdefault("timeout", 5.0)
    return OpenAICompatGenerator(base, "sim-model", client=httpx.Client(transport=httpx.MockTransport(handler)), **kw)


def user(text):
    return [{"role": "user", "content": text}]


def test_request_body_and_tokens(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seen = []

    def handler(request):
        seen.append((str(request.url), request.headers.get("authorization"), json.loads(request.content)))
        return reply("hello", tokens=7)

    gen = make(handler, api_key="sk-test")
    [out] = gen.generate([user("q")], max_new_tokens=32, temperature=0.5, stop=["</doc>"], seed=3)
    assert out.ok and out.text == "hello" and out.n_tokens == 7
    url, auth, body = seen[0]
    assert url == "http://sim/v1/chat/completions"
    assert auth == "Bearer sk-test"
    assert body == {
        "model": "sim-model",
        "max_tokens": 32,
        "temperature": 0.5,
        "stop": ["</doc>"],
        "seed": 3,
        "messages": [{"role": "system", "content": ""}, {"role": "user", "content": "q"}],
    }
    assert gen.stats["requests"] == 1 and gen.stats["tokens"] == 7 and gen.stats["failures"] == 0


def test_no_system_prompt_no_stop_no_seed_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seen = []

    def handler(request):
        seen.append((request.headers.get("authorization"), json.loads(request.content)))
        return reply("x")

    [out] = make(handler, system_prompt=None).generate([user("q")])
    auth, body = seen[0]
    assert auth is None
    assert "stop" not in body and "seed" not in body
    assert body["messages"] == [{"role": "user", "content": "q"}]
    assert out.ok and out.n_tokens == 0


def test_api_key_from_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return reply("x")

    make(handler).generate([user("q")])
    assert seen == ["Bearer sk-env"]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_transient_status_then_succeeds(status):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(status, text="busy") if len(calls) < 3 else reply("ok", tokens=2)

    gen = make(handler, max_retries=3)
    [out] = gen.generate([user("q")])
    assert out.ok and out.text == "ok"
    assert len(calls) == 3
    assert gen.stats["retries"] == 2 and gen.stats["failures"] == 0 and gen.stats["tokens"] == 2


def test_retries_connection_errors_with_exponential_backoff(monkeypatch):
    sleeps = []
    monkeypatch.setattr(time, "sleep", sleeps.append)

    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    gen = make(handler, max_retries=3, backoff=0.5)
    [out] = gen.generate([user("q")])
    assert not out.ok and out.text == ""
    assert "ConnectError" in out.error and "4 attempts" in out.error
    assert sleeps == [0.5, 1.0, 2.0]
    assert gen.stats["requests"] == 1 and gen.stats["retries"] == 3 and gen.stats["failures"] == 1


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_are_not_retried(status):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(status, text="bad request: max_tokens too large")

    gen = make(handler, max_retries=3)
    [out] = gen.generate([user("q")])
    assert len(calls) == 1
    assert not out.ok and f"HTTP {status}" in out.error and "max_tokens too large" in out.error
    assert gen.stats["retries"] == 0 and gen.stats["failures"] == 1


def test_timeouts_are_retried_then_reported():
    calls = []

    def handler(request):
        calls.append(1)
        raise httpx.ReadTimeout("read timed out", request=request)

    gen = make(handler, max_retries=2, timeout=1.5)
    [out] = gen.generate([user("q")])
    assert len(calls) == 3
    assert not out.ok and "timed out after 1.5s" in out.error and "3 attempts" in out.error
    assert gen.stats["retries"] == 2 and gen.stats["failures"] == 1


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json={"error": "oops"}),
        httpx.Response(200, json={"choices": [{"message": {"content": 5}}]}),
    ],
)
def test_malformed_response_is_an_error(response):
    calls = []

    def handler(request):
        calls.append(1)
        return response

    gen = make(handler, max_retries=3)
    [out] = gen.generate([user("q")])
    assert not out.ok and out.text == "" and "malformed response" in out.error
    assert len(calls) == 1 and gen.stats["failures"] == 1


def test_order_kept_under_concurrency():
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def handler(request):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        q = json.loads(request.content)["messages"][-1]["content"]
        time.sleep(0.02 * (int(q) % 3))  # later prompts often finish first
        with lock:
            in_flight -= 1
        return reply(f"answer {q}", tokens=1)

    gen = make(handler, concurrency=4)
    outs = gen.generate([user(str(i)) for i in range(20)])
    assert [o.text for o in outs] == [f"answer {i}" for i in range(20)]
    assert 1 < peak <= 4
    assert gen.stats["requests"] == 20 and gen.stats["tokens"] == 20


def test_one_failure_does_not_spoil_the_batch():
    def handler(request):
        q = json.loads(request.content)["messages"][-1]["content"]
        return httpx.Response(400, text="no") if q == "bad" else reply(q)

    outs = make(handler).generate([user("a"), user("bad"), user("c")])
    assert [o.ok for o in outs] == [True, False, True]
    assert outs[2].text == "c"


def test_several_base_urls_round_robin():
    hosts = []

    def handler(request):
        hosts.append(request.url.host)
        return reply("x")

    gen = make(handler, base="http://a:6001/v1, http://b:6001/v1/", concurrency=1)
    gen.generate([user(str(i)) for i in range(6)])
    assert hosts == ["a", "b"] * 3


def test_retry_moves_to_the_next_server():
    hosts = []

    def handler(request):
        hosts.append(request.url.host)
        if request.url.host == "a":
            raise httpx.ConnectError("refused", request=request)
        return reply("from b")

    [out] = make(handler, base="http://a/v1,http://b/v1").generate([user("q")])
    assert out.text == "from b" and hosts == ["a", "b"]


def test_empty_batch_and_bad_arguments():
    assert make(lambda r: reply("x")).generate([]) == []
    with pytest.raises(ValueError):
        OpenAICompatGenerator(" , ", "m")
    with pytest.raises(ValueError):
        OpenAICompatGenerator("http://a/v1", "m", concurrency=0)


# ---- a real server on loopback that dies in the middle of a batch ----


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_killed_mid_batch_fails_fast_and_counts():
    import uvicorn
    from fastapi import FastAPI, Request

    app = FastAPI()
    dying = threading.Event()
    answered = set()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        q = (await request.json())["messages"][-1]["content"]
        if q == "kill" or dying.is_set():
            dying.set()
            await asyncio.sleep(60)  # stuck: never answers
        answered.add(q)
        return {"choices": [{"message": {"content": f"ok {q}"}}], "usage": {"completion_tokens": 2}}

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", timeout_graceful_shutdown=2.5)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)

    gen = OpenAICompatGenerator(
        f"http://127.0.0.1:{port}/v1", "m", timeout=1.0, max_retries=1, backoff=0.05, concurrency=2
    )
    try:
        prompts = [user(q) for q in ["a", "b", "c", "kill", "e", "f", "g", "h", "i", "j"]]
        result = {}
        worker = threading.Thread(target=lambda: result.setdefault("outs", gen.generate(prompts)), daemon=True)
        start = time.monotonic()
        worker.start()
        assert dying.wait(10), "the batch never reached the server"
        # the server stops listening at once but holds the stuck connections open for 2.5s
        server.should_exit = True
        worker.join(30)
        elapsed = time.monotonic() - start
        assert not worker.is_alive(), "generate() hung after the server died"
        outs = result["outs"]
        thread.join(10)
        assert not thread.is_alive(), "server did not stop"
    finally:
        server.should_exit = True
        gen.close()

    # the stuck request times out after 1s, its retry and every later request are refused at once
    assert elapsed < 8
    # which requests beat "kill" to the server depends on thread timing; the rest must fail
    assert sum(o.ok for o in outs[:3]) >= 2  # two workers: two of a, b, c finished before "kill" was sent
    for p, o in zip(prompts, outs):
        q = p[-1]["content"]
        if q in answered:
            assert o.text == f"ok {q}"
        else:
            assert not o.ok and o.text == "" and "gave up after 2 attempts" in o.error, o.error
    assert "timed out after 1.0s" in outs[3].error and "ConnectError" in outs[3].error
    failed = sum(not o.ok for o in outs)
    assert failed == len(prompts) - len(answered) >= 5
    assert gen.stats["failures"] == failed
    assert gen.stats["requests"] == len(prompts)
    assert gen.stats["retries"] >= failed
