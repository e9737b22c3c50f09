"""`zerosearch serve` as a user runs it: a real process on a loopback port, spoken to like Search-R1 does."""

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(*args: str):
    """`zerosearch serve ARGS` on a free loopback port; yields its URL once /health answers."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "zerosearch.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not start")
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def bm25_server(tmp_path):
    from zerosearch.data.world import build_world, write_world

    world = build_world(seed=7, n_entities=300)
    paths = write_world(world, tmp_path / "w")
    # --batch: the coalescing path (on by default only for simulated engines) under the tests below
    with serve_process("-c", "engine.kind=bm25", "-c", f"engine.corpus={paths['corpus']}", "-c", "server.batch=true",
                       "-c", "server.batch_wait_ms=2") as url:
        yield url, world


def test_search_r1_client_and_gold_recall(bm25_server):
    url, world = bm25_server
    single = [q for q in world.test if q.metadata["hops"] == 1]
    body = {"queries": [q.question for q in single], "topk": 3, "return_scores": True}
    r = httpx.post(f"{url}/retrieve", json=body, timeout=30)
    assert r.status_code == 200
    result = r.json()["result"]
    assert len(result) == len(single)
    first = result[0][0]
    assert set(first) == {"document", "score"} and set(first["document"]) == {"id", "contents"}
    assert first["document"]["contents"].startswith('"')
    hits = sum(q.metadata["gold_doc_ids"][0] in {d["document"]["id"] for d in docs} for q, docs in zip(single, result))
    assert hits / len(single) >= 0.9
    bare = httpx.post(f"{url}/retrieve", json={"queries": ["x"], "topk": 2, "return_scores": False}).json()["result"]
    assert all(set(d) == {"id", "contents"} for d in bare[0])


def test_twenty_malformed_requests_get_4xx_and_the_server_stays_up(bm25_server):
    url, _ = bm25_server
    bad = [b"", b"{", b"[]", b"null", b'"q"', b"{}", json.dumps({"queries": None}).encode(),
           json.dumps({"queries": "text"}).encode(), json.dumps({"queries": [1, 2]}).encode(),
           json.dumps({"queries": [None]}).encode(), json.dumps({"queries": ["q"], "step": -1}).encode(),
           json.dumps({"queries": ["q" * 5000]}).encode(), json.dumps({"queries": ["q"] * 5000}).encode(),
           json.dumps({"queries": ["q"], "topk": -1}).encode(), json.dumps({"queries": ["q"], "topk": 2.5}).encode(),
           json.dumps({"queries": ["q"], "topk": 10**9}).encode(), json.dumps({"queries": ["q"], "topk": "3"}).encode(),
           json.dumps({"queries": ["q"], "topk": True}).encode(), json.dumps({"queries": ["q"], "noise": 2}).encode(),
           json.dumps({"queries": ["q"], "questions": ["a", "b"]}).encode(),
           json.dumps({"queries": ["q"], "golden_answers": "x"}).encode(), b"\xff\xfe garbage"]
    assert len(bad) >= 20
    for body in bad:
        r = httpx.post(f"{url}/retrieve", content=body, headers={"content-type": "application/json"}, timeout=10)
        assert 400 <= r.status_code < 500, (body[:40], r.status_code, r.text)
        assert r.json()  # a clear JSON message
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_2000_requests_from_32_concurrent_clients_all_succeed(bm25_server):
    url, world = bm25_server
    queries = [q.question for q in world.test[:50]]
    # the answer each query must get, from one request; any mix-up between concurrent clients shows
    expected = httpx.post(f"{url}/retrieve", json={"queries": queries, "topk": 2}, timeout=30).json()["result"]
    statuses, wrong = {}, []

    async def client(c: int, http: httpx.AsyncClient) -> None:
        for i in range(c, 2000, 32):
            q = i % len(queries)
            r = await http.post("/retrieve", json={"queries": [queries[q]], "topk": 2})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200 and r.json()["result"] != [expected[q]]:
                wrong.append(i)

    async def main() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=32)) as http:
            await asyncio.gather(*(client(c, http) for c in range(32)))

    asyncio.run(main())
    assert statuses == {200: 2000}
    assert wrong == []
    metrics = httpx.get(f"{url}/metrics").text
    assert 'zerosearch_requests_total{endpoint="/retrieve",code="200"} 2001' in metrics
    batches = int(re.search(r"^zerosearch_engine_batches_total (\d+)$", metrics, re.MULTILINE).group(1))
    assert batches < 2000  # concurrent requests shared engine calls
