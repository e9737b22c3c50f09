import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from zerosearch.engines.base import Document, SearchEngine, SearchResult
from zerosearch.engines.bm25 import BM25Engine
from zerosearch.server import create_app

CORPUS = [
    {"id": "0", "contents": '"Paris"\nParis is the capital and largest city of France.'},
    {"id": "1", "contents": '"Berlin"\nBerlin is the capital of Germany.'},
    {"id": "2", "contents": '"Mount Everest"\nMount Everest is the highest mountain above sea level.'},
    {"id": "3", "contents": '"Nile"\nThe Nile is a major river in northeastern Africa.'},
    {"id": "4", "contents": '"Python"\nPython is a programming language created by Guido van Rossum.'},
]


class RecordingEngine(SearchEngine):
    """Simulated-looking engine that remembers every request it was given."""

    name = "fake"
    real = False

    def __init__(self) -> None:
        self.calls = []

    def search(self, requests, topk=None):
        self.calls.append((list(requests), topk))
        out = []
        for i, r in enumerate(requests):
            kind = r.noise if isinstance(r.noise, str) else "useful"
            docs = [Document(f"{i}-{j}", f"T{j}", f"answer for {r.question}", 1.0 / (j + 1)) for j in range(topk)]
            out.append(SearchResult(r.query, docs, self.name, False, kind=kind, repaired=1))
        return out


class FailingEngine(SearchEngine):
    name = "broken"

    def search(self, requests, topk=None):
        raise RuntimeError("model crashed")


class PartlyFailingEngine(SearchEngine):
    name = "partial"

    def search(self, requests, topk=None):
        return [SearchResult(r.query, [], self.name, True, error="quota exceeded" if i == 1 else None)
                for i, r in enumerate(requests)]


class SlowEngine(SearchEngine):
    name = "slow"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def search(self, requests, topk=None):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.entered.set()
        self.release.wait(10)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return [SearchResult(r.query, [], self.name, True) for r in requests]


@pytest.fixture(scope="module")
def bm25():
    return BM25Engine(CORPUS, topk=2)


@pytest.fixture
def client(bm25):
    with TestClient(create_app(bm25)) as c:
        yield c


def test_search_r1_shape_with_scores(client):
    r = client.post("/retrieve", json={"queries": ["capital of France", "highest mountain"], "topk": 1,
                                       "return_scores": True})
    assert r.status_code == 200
    body = r.json()
    assert len(body["result"]) == 2
    first = body["result"][0][0]
    assert set(first) == {"document", "score"}
    assert first["document"] == {"id": "0", "contents": '"Paris"\nParis is the capital and largest city of France.'}
    assert first["score"] > 0
    assert body["result"][1][0]["document"]["id"] == "2"
    assert body["meta"] == [{"engine": "bm25", "real": True, "kind": None, "error": None, "repaired": 0}] * 2


def test_bare_documents_and_default_topk(client):
    r = client.post("/retrieve", json={"queries": ["capital"]})
    assert r.status_code == 200
    docs = r.json()["result"][0]
    assert len(docs) == 2  # the engine's default top-k
    assert all(set(d) == {"id", "contents"} for d in docs)


def test_server_default_topk():
    with TestClient(create_app(RecordingEngine(), default_topk=4)) as c:
        assert len(c.post("/retrieve", json={"queries": ["q"]}).json()["result"][0]) == 4


def test_each_query_gets_its_own_question_answers_and_noise():
    engine = RecordingEngine()
    with TestClient(create_app(engine)) as c:
        r = c.post("/retrieve", json={
            "queries": ["q0", "q1", "q2"], "topk": 2,
            "questions": ["who0?", None, "who2?"],
            "golden_answers": [["a0"], [], ["a2", "b2"]],
            "noise": ["useful", 0.25, "noisy"],
        })
        assert r.status_code == 200, r.text
        (requests, topk), = engine.calls
        assert topk == 2
        assert [q.query for q in requests] == ["q0", "q1", "q2"]
        assert [q.question for q in requests] == ["who0?", None, "who2?"]
        assert [tuple(q.golden_answers) for q in requests] == [("a0",), (), ("a2", "b2")]
        assert [q.noise for q in requests] == ["useful", 0.25, "noisy"]
        meta = r.json()["meta"]
        assert [m["kind"] for m in meta] == ["useful", "useful", "noisy"]
        assert all(m["real"] is False and m["engine"] == "fake" and m["repaired"] == 1 for m in meta)

        c.post("/retrieve", json={"queries": ["x", "y"], "noise": 0.5})
        assert [q.noise for q in engine.calls[-1][0]] == [0.5, 0.5]
        c.post("/retrieve", json={"queries": ["x", "y"], "noise": "noisy"})
        assert [q.noise for q in engine.calls[-1][0]] == ["noisy", "noisy"]
        c.post("/retrieve", json={"queries": ["x"]})
        q, = engine.calls[-1][0]
        assert (q.question, tuple(q.golden_answers), q.noise) == (None, (), None)

        text = c.get("/metrics").text
        assert 'zerosearch_results_total{kind="useful"} 5' in text
        assert 'zerosearch_results_total{kind="noisy"} 3' in text


BAD = [
    ("invalid json", b"{not json", 400),
    ("empty body", b"", 400),
    ("body is a list", b'["a"]', 400),
    ("body is a string", b'"paris"', 400),
    ("missing queries", {}, 400),
    ("queries null", {"queries": None}, 400),
    ("empty queries", {"queries": []}, 400),
    ("queries a string", {"queries": "paris"}, 400),
    ("query not a string", {"queries": ["ok", 3]}, 400),
    ("query null", {"queries": [None]}, 400),
    ("empty query", {"queries": [""]}, 400),
    ("whitespace query", {"queries": ["  \n\t"]}, 400),
    ("query too long", {"queries": ["a" * 2001]}, 400),
    ("too many queries", {"queries": ["q"] * 257}, 400),
    ("topk string", {"queries": ["q"], "topk": "3"}, 400),
    ("topk zero", {"queries": ["q"], "topk": 0}, 400),
    ("topk negative", {"queries": ["q"], "topk": -2}, 400),
    ("topk above limit", {"queries": ["q"], "topk": 51}, 400),
    ("topk bool", {"queries": ["q"], "topk": True}, 400),
    ("topk float", {"queries": ["q"], "topk": 2.5}, 400),
    ("return_scores not bool", {"queries": ["q"], "return_scores": "yes"}, 400),
    ("questions wrong length", {"queries": ["a", "b"], "questions": ["x"]}, 400),
    ("questions a string", {"queries": ["a"], "questions": "x"}, 400),
    ("question not a string", {"queries": ["a"], "questions": [1]}, 400),
    ("answers wrong length", {"queries": ["a", "b"], "golden_answers": [["x"]]}, 400),
    ("answers a string", {"queries": ["a"], "golden_answers": "x"}, 400),
    ("answers entry not strings", {"queries": ["a"], "golden_answers": [["x", 1]]}, 400),
    ("answers entry a string", {"queries": ["a"], "golden_answers": ["x"]}, 400),
    ("noise above one", {"queries": ["a"], "noise": 1.5}, 400),
    ("noise negative", {"queries": ["a"], "noise": -0.1}, 400),
    ("noise unknown string", {"queries": ["a"], "noise": "sometimes"}, 400),
    ("noise bool", {"queries": ["a"], "noise": True}, 400),
    ("noise list wrong length", {"queries": ["a", "b"], "noise": [0.1]}, 400),
    ("noise list bad entry", {"queries": ["a", "b"], "noise": [0.1, "loud"]}, 400),
    ("body over 1 MB", {"queries": ["q"], "pad": "x" * (1 << 20)}, 413),
    # hostile: inputs that are valid JSON to a lenient parser but would crash or mislead a later stage
    ("lone surrogate in query", b'{"queries": ["\\ud800 paris"]}', 400),
    ("lone surrogate in question", b'{"queries": ["q"], "questions": ["\\udfff"]}', 400),
    ("lone surrogate in answer", b'{"queries": ["q"], "golden_answers": [["ok", "\\ud83d"]]}', 400),
    ("nested 100k deep", b'{"queries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    ("NaN noise", b'{"queries": ["q"], "noise": NaN}', 400),
    ("Infinity topk", b'{"queries": ["q"], "topk": Infinity}', 400),
    ("5000-digit topk", b'{"queries": ["q"], "topk": ' + b"9" * 5000 + b"}", 400),
    ("overflowing float noise", b'{"queries": ["q"], "noise": 1e400}', 400),
    ("invalid utf-8", b'{"queries": ["\xff\xfe"]}', 400),
    ("duplicate key overrides queries", b'{"queries": ["q"], "queries": 5}', 400),
    ("answers nested a level too deep", {"queries": ["q"], "golden_answers": [[["x"]]]}, 400),
    ("queries an object", {"queries": {"0": "q"}}, 400),
]


@pytest.mark.parametrize("body,status", [(b, s) for _, b, s in BAD], ids=[n for n, _, _ in BAD])
def test_bad_input_is_rejected_and_server_stays_up(client, body, status):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/retrieve", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/retrieve", json={"queries": ["Berlin"]}).status_code == 200


def test_enough_hostile_inputs_are_covered():
    assert len(BAD) >= 30


def test_wrong_method_or_path_is_4xx(client):
    assert client.get("/retrieve").status_code == 405
    assert client.put("/retrieve", content=b"{}").status_code == 405
    assert client.post("/search", json={"queries": ["q"]}).status_code == 404
    assert client.post("/retrieve", json={"queries": ["Berlin"]}).status_code == 200


def test_oversized_body_without_content_length(client):
    def chunks():
        for _ in range(20):
            yield b"x" * 100_000

    r = client.post("/retrieve", content=chunks())
    assert r.status_code == 413
    assert client.get("/health").status_code == 200


def test_engine_failure_is_reported_and_counted():
    with TestClient(create_app(FailingEngine())) as c:
        r = c.post("/retrieve", json={"queries": ["q"]})
        assert r.status_code == 502
        assert "model crashed" in r.json()["error"]
        assert c.get("/health").json() == {"status": "ok", "engine": "broken", "real": True}
        metrics = c.get("/metrics").text
        assert "zerosearch_engine_failures_total 1" in metrics
        assert 'zerosearch_requests_total{endpoint="/retrieve",code="502"} 1' in metrics


def test_per_request_errors_pass_through_meta():
    with TestClient(create_app(PartlyFailingEngine())) as c:
        meta = c.post("/retrieve", json={"queries": ["a", "b"]}).json()["meta"]
        assert [m["error"] for m in meta] == [None, "quota exceeded"]
        assert "zerosearch_result_errors_total 1" in c.get("/metrics").text


class DeadBackendEngine(SearchEngine):
    """A simulated engine whose generator is down: every result carries an error and no documents."""

    name = "simulated"
    real = False

    def search(self, requests, topk=None):
        return [SearchResult(r.query, [], self.name, False, kind="useful", error="connection refused")
                for r in requests]


def test_every_query_failed_is_an_error_status_not_empty_results():
    with TestClient(create_app(DeadBackendEngine())) as c:
        r = c.post("/retrieve", json={"queries": ["a", "b"]})
        assert r.status_code == 502
        body = r.json()
        assert "failed for every query: connection refused" in body["error"]
        assert [m["error"] for m in body["meta"]] == ["connection refused"] * 2
        assert "zerosearch_result_errors_total 2" in c.get("/metrics").text


def test_metrics_exposition(client):
    client.post("/retrieve", json={"queries": ["Nile", "Python"]})
    client.post("/retrieve", json={"queries": []})
    client.get("/health")
    text = client.get("/metrics").text
    assert 'zerosearch_requests_total{endpoint="/retrieve",code="200"} 1' in text
    assert 'zerosearch_requests_total{endpoint="/retrieve",code="400"} 1' in text
    assert 'zerosearch_requests_total{endpoint="/health",code="200"} 1' in text
    assert 'zerosearch_errors_total{endpoint="/retrieve"} 1' in text
    assert "zerosearch_queries_total 2" in text
    assert 'zerosearch_results_total{kind="real"} 2' in text
    assert "# TYPE zerosearch_retrieve_seconds histogram" in text
    assert 'zerosearch_retrieve_seconds_bucket{le="+Inf"} 2' in text
    assert "zerosearch_retrieve_seconds_count 2" in text


def test_bearer_token(bm25):
    with TestClient(create_app(bm25, token="s3cret")) as c:
        assert c.get("/health").status_code == 200
        body = {"queries": ["Paris"]}
        assert c.post("/retrieve", json=body).status_code == 401
        assert c.post("/retrieve", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/retrieve", json=body, headers={"Authorization": "s3cret"}).status_code == 401
        assert c.get("/metrics").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert c.post("/retrieve", json=body, headers=good).status_code == 200
        assert c.get("/metrics", headers=good).status_code == 200


def test_engine_calls_are_serialised_and_health_stays_responsive():
    engine = SlowEngine()
    with TestClient(create_app(engine)) as c:
        codes = []
        threads = [threading.Thread(target=lambda: codes.append(c.post("/retrieve", json={"queries": ["q"]}).status_code))
                   for _ in range(2)]
        for t in threads:
            t.start()
        assert engine.entered.wait(5)
        t0 = time.perf_counter()
        assert c.get("/health").status_code == 200  # answered while a search is blocked
        assert c.get("/metrics").status_code == 200
        assert time.perf_counter() - t0 < 2
        engine.release.set()
        for t in threads:
            t.join(10)
        assert codes == [200, 200]
        assert engine.max_active == 1


def test_invalid_default_topk():
    with pytest.raises(ValueError):
        create_app(RecordingEngine(), default_topk=0)
