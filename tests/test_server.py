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
    ("queries a string", {"queries": "paris"}, 400),
    ("query not a string", {"queries": ["ok", 3]}, 400),
    ("query null", {"queries": [None]}, 400),
    ("query too long", {"queries": ["a" * 2001]}, 400),
    ("too many queries", {"queries": ["q"] * 4097}, 400),
    ("step negative", {"queries": ["q"], "step": -1}, 400),
    ("step a string", {"queries": ["q"], "step": "3"}, 400),
    ("topk zero as a float", {"queries": ["q"], "topk": 0.0}, 400),
    ("topk string", {"queries": ["q"], "topk": "3"}, 400),
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


def test_one_failed_query_fails_the_request_loudly():
    with TestClient(create_app(PartlyFailingEngine())) as c:
        r = c.post("/retrieve", json={"queries": ["a", "b", " "]})
        assert r.status_code == 502 and "result" not in r.json()
        assert r.json()["errors"] == [None, "quota exceeded", None]
        assert "failed for 1 of 3 queries: quota exceeded" in r.json()["error"]
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
        assert "failed for 2 of 2 queries: connection refused" in body["error"]
        assert "result" not in body and body["errors"] == ["connection refused"] * 2
        assert "zerosearch_result_errors_total 2" in c.get("/metrics").text


def test_metrics_exposition(client):
    client.post("/retrieve", json={"queries": ["Nile", "Python"]})
    client.post("/retrieve", json={"queries": "Nile"})
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


# --- what Search-R1 / verl clients really send -------------------------------------------------------------


class CountingEngine(RecordingEngine):
    """A simulated-looking engine that answers any number of queries and can be made thread-safe."""

    max_topk = 10

    def __init__(self, thread_safe: bool = False) -> None:
        super().__init__()
        self.thread_safe = thread_safe


def test_search_r1_traffic_is_answered_not_refused():
    engine = CountingEngine()
    with TestClient(create_app(engine, default_topk=2)) as c:
        assert c.post("/retrieve", json={"queries": []}).json() == {"result": [], "meta": []}
        r = c.post("/retrieve", json={"queries": ["a", "", "  ", "b"], "topk": 0, "return_scores": True})
        assert r.status_code == 200
        result = r.json()["result"]
        assert [len(x) for x in result] == [2, 0, 0, 2]  # blank queries: no documents, and no search
        assert [q.query for q in engine.calls[-1][0]] == ["a", "b"]
        assert c.post("/retrieve", json={"queries": ["a"], "topk": None}).json()["result"][0].__len__() == 2
        big = c.post("/retrieve", json={"queries": [f"q{i}" for i in range(2560)], "topk": 3})
        assert big.status_code == 200 and len(big.json()["result"]) == 2560
        assert big.json()["result"][2559][0]["contents"].endswith("answer for None")
        assert [len(call[0]) for call in engine.calls[-10:]] == [256] * 10  # in chunks, in order
        text = c.get("/metrics").text
        assert "zerosearch_empty_queries_total 2" in text
        # a simulated engine asked for more documents than it writes: the client's error, not the engine's
        r = c.post("/retrieve", json={"queries": ["a"], "topk": 11})
        assert r.status_code == 400 and "between 1 and 10" in r.json()["error"]


def test_simulated_queries_without_question_are_warned_once_and_counted(caplog):
    engine = CountingEngine()
    with TestClient(create_app(engine)) as c, caplog.at_level("WARNING"):
        c.post("/retrieve", json={"queries": ["a", "b"]})
        c.post("/retrieve", json={"queries": ["c"], "questions": ["Who?"], "golden_answers": [["Ann"]]})
        c.post("/retrieve", json={"queries": ["d"]})
        assert "zerosearch_queries_without_question_total 3" in c.get("/metrics").text
    warnings = [r for r in caplog.records if "without a question" in r.getMessage()]
    assert len(warnings) == 1 and "golden_answers" in warnings[0].getMessage()


def test_server_curriculum_for_clients_that_send_no_noise():
    from zerosearch.curriculum import NoiseSchedule
    from zerosearch.server import ServerCurriculum

    engine = CountingEngine()
    curriculum = ServerCurriculum(NoiseSchedule(0.0, 0.5, base=4.0), total_steps=10)
    with TestClient(create_app(engine, curriculum=curriculum)) as c:
        noise = lambda: engine.calls[-1][0][0].noise  # noqa: E731
        c.post("/retrieve", json={"queries": ["a"]})
        assert noise() == 0.0
        assert c.post("/step").json() == {"step": 1, "total_steps": 10, "noise": pytest.approx(NoiseSchedule(0, 0.5)(1, 10))}
        c.post("/retrieve", json={"queries": ["a"]})
        assert noise() == pytest.approx(NoiseSchedule(0.0, 0.5)(1, 10))
        c.post("/retrieve", json={"queries": ["a"], "step": 10})
        assert noise() == pytest.approx(0.5)
        c.post("/retrieve", json={"queries": ["a"]}, headers={"X-Step": "5"})
        assert noise() == pytest.approx(NoiseSchedule(0.0, 0.5)(5, 10))
        c.post("/retrieve", json={"queries": ["a"], "noise": "useful"})  # a client that says wins
        assert noise() == "useful"
        assert c.post("/step", json={"step": 0}).json()["step"] == 0
        assert "zerosearch_curriculum_step 0" in c.get("/metrics").text
        assert c.post("/retrieve", json={"queries": ["a"]}, headers={"X-Step": "soon"}).status_code == 400
        assert c.post("/step", json={"step": -3}).status_code == 400
    with TestClient(create_app(CountingEngine())) as c:
        assert c.post("/step").status_code == 409


class StuckOnceEngine(SearchEngine):
    """An HTTP-backed engine whose first call hangs (a wedged backend) and whose later calls answer."""

    name = "simulated"
    real = False
    thread_safe = True

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def search(self, requests, topk=None):
        self.calls += 1
        if self.calls == 1:
            self.release.wait(10)
        return [SearchResult(r.query, [Document("1", "T", "x")], self.name, False, kind="useful") for r in requests]


@pytest.mark.parametrize("batching", [True, False])
def test_a_stuck_backend_call_does_not_block_later_requests(batching):
    from zerosearch.engines.batching import BatchingEngine

    stuck = StuckOnceEngine()
    engine = BatchingEngine(stuck, max_wait=0.001, timeout=0.5) if batching else stuck
    try:
        with TestClient(create_app(engine, timeout=0.5)) as c:
            assert c.post("/retrieve", json={"queries": ["a"]}).status_code == 504
            t0 = time.perf_counter()
            r = c.post("/retrieve", json={"queries": ["b"]})
            assert r.status_code == 200 and r.json()["result"][0][0]["contents"] == '"T"\nx'
            assert time.perf_counter() - t0 < 0.45  # not queued behind the stuck call
    finally:
        stuck.release.set()
        if batching:
            engine.close()
