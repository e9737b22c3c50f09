import json
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from zerosearch.engines.base import Document, SearchEngine, SearchRequest, SearchResult
from zerosearch.engines.bm25 import BM25Engine
from zerosearch.engines.remote import RemoteEngine
from zerosearch.engines.serp import SERPAPI_URL, SerpEngine
from zerosearch.server import create_app

CORPUS = [
    {"id": "0", "contents": '"Paris"\nParis is the capital and largest city of France.'},
    {"id": "1", "contents": '"Berlin"\nBerlin is the capital of Germany.'},
    {"id": "2", "contents": '"Mount Everest"\nMount Everest is the highest mountain above sea level.'},
]


class EchoSimulator(SearchEngine):
    """Stands in for a simulated engine: one document that echoes the hidden context it received."""

    name = "simulated"
    real = False

    def search(self, requests, topk=None):
        return [SearchResult(r.query, [Document(str(i), r.question or "", f"{list(r.golden_answers)} {r.noise}", 0.5)],
                             self.name, False, kind="noisy" if r.noise == "noisy" else "useful", repaired=i)
                for i, r in enumerate(requests)]


def _serve(app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def live_servers():
    """A BM25 server (with a token) and a simulated one, on free loopback ports."""
    started = [_serve(create_app(BM25Engine(CORPUS, topk=2), token="tok")), _serve(create_app(EchoSimulator()))]
    yield {"bm25": started[0][2], "sim": started[1][2]}
    for server, thread, _ in started:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------- RemoteEngine against the real server

def test_remote_against_live_bm25_server(live_servers):
    with RemoteEngine(live_servers["bm25"] + "/retrieve", token="tok", topk=1) as engine:
        results = engine.search([SearchRequest("capital of France"), SearchRequest("highest mountain")])
        assert [r.ok for r in results] == [True, True]
        assert [r.documents[0].id for r in results] == ["0", "2"]
        doc = results[0].documents[0]
        assert (doc.title, doc.text) == ("Paris", "Paris is the capital and largest city of France.")
        assert doc.score > 0
        assert all(r.real and r.engine == "bm25" and r.kind is None for r in results)
        assert len(engine.search([SearchRequest("capital")], topk=2)[0].documents) == 2
        assert engine.stats["requests"] == 2 and engine.stats["failures"] == 0


def test_remote_wrong_token_is_an_error_not_retried(live_servers):
    with RemoteEngine(live_servers["bm25"], token="bad", backoff=0) as engine:
        result, = engine.search([SearchRequest("Paris")])
        assert not result.ok and "401" in result.error and result.documents == []
        assert engine.stats["retries"] == 0 and engine.stats["failures"] == 1


def test_remote_simulated_server_passes_hidden_context_and_meta(live_servers):
    with RemoteEngine(live_servers["sim"]) as engine:
        results = engine.search([
            SearchRequest("q0", "question 0", ["a0"], "useful"),
            SearchRequest("q1"),
            SearchRequest("q2", "question 2", ["a2", "b2"], "noisy"),
        ])
        assert [r.documents[0].title for r in results] == ["question 0", "", "question 2"]
        assert [r.documents[0].text for r in results] == ["['a0'] useful", "[] None", "['a2', 'b2'] noisy"]
        assert [r.kind for r in results] == ["useful", "useful", "noisy"]
        assert [r.repaired for r in results] == [0, 1, 2]
        assert all(r.real is False and r.engine == "simulated" for r in results)


def test_remote_server_down_gives_error_results():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    with RemoteEngine(f"http://127.0.0.1:{port}", retries=2, backoff=0.001, timeout=2) as engine:
        results = engine.search([SearchRequest("a"), SearchRequest("b")])
        assert all(not r.ok and "connection error" in r.error and not r.real for r in results)
        assert engine.stats == {"requests": 1, "retries": 2, "failures": 1}


# ---------------------------------------------------------------- RemoteEngine with a mock transport

def _remote(handler, **kw):
    kw.setdefault("backoff", 0.001)
    return RemoteEngine("http://search.test/retrieve", client=httpx.Client(transport=httpx.MockTransport(handler)), **kw)


def _ok(request):
    n = len(json.loads(request.content)["queries"])
    return httpx.Response(200, json={"result": [[{"id": "7", "contents": '"T"\nbody'}]] * n})


def test_remote_retries_5xx_then_succeeds():
    calls = []

    def handler(request):
        calls.append(json.loads(request.content))
        return httpx.Response(503, text="busy") if len(calls) < 3 else _ok(request)

    engine = _remote(handler, retries=3)
    result, = engine.search([SearchRequest("q")])
    assert result.ok and result.real and result.engine == "remote"
    assert (result.documents[0].id, result.documents[0].title, result.documents[0].text) == ("7", "T", "body")
    assert result.documents[0].score is None  # bare documents carry no score
    assert len(calls) == 3
    assert calls[0] == {"queries": ["q"], "topk": 3, "return_scores": True}
    assert engine.stats == {"requests": 1, "retries": 2}


def test_remote_gives_up_after_bounded_retries_with_backoff(monkeypatch):
    sleeps = []
    monkeypatch.setattr("zerosearch.engines.remote.time.sleep", sleeps.append)
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(500, text="boom")

    engine = _remote(handler, retries=3, backoff=0.5)
    results = engine.search([SearchRequest("a"), SearchRequest("b")])
    assert len(calls) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert all(not r.ok and "500" in r.error and r.documents == [] for r in results)
    assert engine.stats == {"requests": 1, "retries": 3, "failures": 1}


def test_remote_timeout_is_retried_then_reported():
    calls = []

    def handler(request):
        calls.append(1)
        raise httpx.ReadTimeout("too slow", request=request)

    engine = _remote(handler, retries=1)
    result, = engine.search([SearchRequest("q")])
    assert len(calls) == 2 and "timed out after" in result.error and "gave up after 2 attempts" in result.error
    assert engine.stats["failures"] == 1


def test_remote_4xx_is_not_retried():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(400, json={"error": "'topk' must be an integer between 1 and 50"})

    engine = _remote(handler, retries=3)
    result, = engine.search([SearchRequest("q")], topk=60)
    assert len(calls) == 1
    assert "400" in result.error and "topk" in result.error
    assert engine.stats["retries"] == 0


@pytest.mark.parametrize("reply", [
    httpx.Response(200, text="not json"),
    httpx.Response(200, json=["not", "an", "object"]),
    httpx.Response(200, json={"results": []}),
    httpx.Response(200, json={"result": [[]]}),  # one list for two queries
    httpx.Response(200, json={"result": "nope"}),
], ids=["not-json", "not-object", "no-result", "wrong-count", "result-not-list"])
def test_remote_malformed_response_errors_every_result(reply):
    engine = _remote(lambda request: reply, retries=2)
    results = engine.search([SearchRequest("a"), SearchRequest("b")])
    assert len(results) == 2 and all(not r.ok and r.documents == [] for r in results)
    assert engine.stats["failures"] == 1 and engine.stats["retries"] == 0


def test_remote_malformed_entry_only_errors_its_result():
    reply = {"result": [[{"document": {"id": 1, "contents": '"A"\nx'}, "score": 2.5}], [{"document": 5}]]}
    engine = _remote(lambda request: httpx.Response(200, json=reply))
    good, bad = engine.search([SearchRequest("a"), SearchRequest("b")])
    assert good.ok and good.documents[0] == Document("1", "A", "x", 2.5)
    assert not bad.ok and "malformed" in bad.error


def test_remote_sends_hidden_context_only_when_present():
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return _ok(request)

    engine = _remote(handler)
    engine.search([SearchRequest("a"), SearchRequest("b", "Q?", ["x"], 0.3)], topk=2)
    assert seen[0] == {"queries": ["a", "b"], "topk": 2, "return_scores": True, "questions": [None, "Q?"],
                       "golden_answers": [[], ["x"]], "noise": [None, 0.3]}
    assert engine.search([]) == []
    assert len(seen) == 1


# ---------------------------------------------------------------- SerpEngine (mock transport only)

def _organic(n):
    return [{"position": i + 1, "title": f"Title {i}", "link": f"https://example.com/{i}", "snippet": f"Snippet {i}."}
            for i in range(n)]


def _serp(handler, tmp_path, **kw):
    kw.setdefault("backoff", 0.001)
    return SerpEngine(api_key="KEY", cache_dir=tmp_path, client=httpx.Client(transport=httpx.MockTransport(handler)), **kw)


def test_serp_cuts_to_topk_and_keeps_title_and_snippet_apart(tmp_path):
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, json={"organic_results": _organic(10)})

    engine = _serp(handler, tmp_path, topk=3)
    result, = engine.search([SearchRequest("who wrote hamlet")])
    assert result.ok and result.real and result.engine == "serp" and result.meta["cached"] is False
    assert [d.id for d in result.documents] == [f"https://example.com/{i}" for i in range(3)]
    assert (result.documents[0].title, result.documents[0].text) == ("Title 0", "Snippet 0.")
    url = seen[0].url
    assert str(url).startswith(SERPAPI_URL)
    assert dict(url.params) == {"engine": "google", "q": "who wrote hamlet", "num": "3", "gl": "us", "hl": "en",
                                "api_key": "KEY"}


def test_serp_cache_hit_makes_no_call(tmp_path):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(200, json={"organic_results": _organic(5)})

    engine = _serp(handler, tmp_path, topk=2, location="Austin, Texas")
    first, = engine.search([SearchRequest("q")])
    assert len(calls) == 1 and first.real
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and "KEY" not in files[0].read_text()
    assert not list(tmp_path.glob(".*"))  # the atomic write left no temporary file behind

    again = _serp(handler, tmp_path, topk=2, location="Austin, Texas")
    second, = again.search([SearchRequest("q")])
    assert len(calls) == 1
    assert second.meta["cached"] is True and second.real is False
    assert second.documents == first.documents
    again.search([SearchRequest("q")], topk=3)  # different parameters: a new call
    assert len(calls) == 2


def test_serp_missing_key(monkeypatch, tmp_path):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="SERPAPI_API_KEY"):
        SerpEngine(cache_dir=tmp_path)
    monkeypatch.setenv("SERPAPI_API_KEY", "from-env")
    assert SerpEngine(cache_dir=tmp_path).api_key == "from-env"


def test_serp_retries_then_fails(tmp_path):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(503, json={"error": "overloaded"})

    engine = _serp(handler, tmp_path, retries=2)
    result, = engine.search([SearchRequest("q")])
    assert len(calls) == 3
    assert not result.ok and "503" in result.error and "overloaded" in result.error and "KEY" not in result.error
    assert result.documents == [] and not result.real
    assert not list(tmp_path.glob("*.json"))  # failures are not cached


def test_serp_retry_then_success_and_4xx_not_retried(tmp_path):
    calls = []

    def flaky(request):
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"organic_results": _organic(1)})

    result, = _serp(flaky, tmp_path, retries=2).search([SearchRequest("q")])
    assert result.ok and len(calls) == 2

    calls.clear()

    def rejected(request):
        calls.append(1)
        return httpx.Response(401, json={"error": "Invalid API key."})

    result, = _serp(rejected, tmp_path, retries=2).search([SearchRequest("other")])
    assert len(calls) == 1 and "Invalid API key" in result.error


def test_serp_batch_in_order_and_empty_page(tmp_path):
    def handler(request):
        q = request.url.params["q"]
        if q == "nothing":
            return httpx.Response(200, json={"error": "Google hasn't returned any results for this query."})
        return httpx.Response(200, json={"organic_results": [{"title": q, "link": f"https://x/{q}", "snippet": "s"}]})

    queries = [f"q{i}" for i in range(6)] + ["nothing"]
    results = _serp(handler, tmp_path).search([SearchRequest(q) for q in queries])
    assert [r.query for r in results] == queries
    assert [r.documents[0].title for r in results[:6]] == queries[:6]
    assert results[6].ok and results[6].documents == []
