"""`zerosearch serve` as a user runs it: a real process on a loopback port, spoken to like Search-R1 does."""

import json
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


@pytest.fixture()
def bm25_server(tmp_path):
    from zerosearch.data.world import build_world, write_world

    world = build_world(seed=7, n_entities=300)
    paths = write_world(world, tmp_path / "w")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "zerosearch.cli", "serve", "--engine", "bm25", "--corpus",
                             str(paths["corpus"]), "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(proc.stdout.read().decode() if proc.poll() is not None else "server did not start")
        yield url, world
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
    bad = [b"", b"{", b"[]", b"null", b'"q"', b"{}", json.dumps({"queries": []}).encode(),
           json.dumps({"queries": "text"}).encode(), json.dumps({"queries": [1, 2]}).encode(),
           json.dumps({"queries": [""]}).encode(), json.dumps({"queries": ["   "]}).encode(),
           json.dumps({"queries": ["q" * 5000]}).encode(), json.dumps({"queries": ["q"] * 1000}).encode(),
           json.dumps({"queries": ["q"], "topk": -1}).encode(), json.dumps({"queries": ["q"], "topk": 0}).encode(),
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
