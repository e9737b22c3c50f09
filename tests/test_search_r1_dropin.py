"""`zerosearch serve` as a drop-in for Search-R1 and verl users: a real server process spoken to by a client
that behaves like Search-R1's (it never looks at the status code and reads `.json()["result"]`), and a served
simulator that gets the official SFT prompt byte for byte, as the released ZeroSearch simulators expect."""

from __future__ import annotations

import threading

import httpx
import pytest
from fastapi import FastAPI, Request

from tests.test_reliability import LiveServer, free_port
from tests.test_serve_cli import serve_process
from tests.test_simulated import OFFICIAL_USEFUL


class SearchR1LikeClient:
    """What a Search-R1 training loop does with the retrieval server: one POST per turn with every row's
    query, no status check, the passages rendered as `Doc i(Title: t) text` from the first line of
    `contents` (the title) and the rest (the text)."""

    def __init__(self, url: str, topk: int = 3) -> None:
        self.url, self.topk = url, topk

    def batch_search(self, queries: list[str], **extra) -> list[str]:
        payload = {"queries": queries, "topk": self.topk, "return_scores": True, **extra}
        results = httpx.post(f"{self.url}/retrieve", json=payload, timeout=60).json()["result"]
        return [self.passages(r) for r in results]

    @staticmethod
    def passages(result: list[dict]) -> str:
        lines = []
        for i, item in enumerate(result):
            title, _, text = item["document"]["contents"].partition("\n")
            lines.append(f"Doc {i + 1}(Title: {title}) {text}\n")
        return "".join(lines)


@pytest.fixture(scope="module")
def bm25_url(tmp_path_factory):
    from zerosearch.data.world import build_world, write_world

    paths = write_world(build_world(seed=7, n_entities=300), tmp_path_factory.mktemp("w"))
    with serve_process("-c", "engine.kind=bm25", "-c", f"engine.corpus={paths['corpus']}") as url:
        yield url


def test_search_r1_traffic_against_bm25(bm25_url):
    client = SearchR1LikeClient(bm25_url)
    assert client.batch_search([]) == []  # a turn in which no row searched
    texts = client.batch_search(["Ulvil Infirmary founder", "", "   "])  # `<search> </search>` sends ""
    assert texts[0].startswith('Doc 1(Title: "') and texts[0].count("\nDoc ") == 2 and texts[1:] == ["", ""]
    big = client.batch_search([f"Ulvil Infirmary {i}" for i in range(512 * 5)])  # 512 prompts x 5 rollouts
    assert len(big) == 2560 and all(t.count("Doc ") == 3 for t in big)
    client.topk = 0  # falls back to the server's default (3)
    assert client.batch_search(["Ulvil Infirmary"])[0].count("(Title: ") == 3
    metrics = httpx.get(f"{bm25_url}/metrics").text
    assert "zerosearch_empty_queries_total 2" in metrics
    assert 'code="200"} 4' in metrics and 'zerosearch_errors_total{endpoint="/retrieve"}' not in metrics


def test_dead_simulator_backend_is_a_5xx_without_result():
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with serve_process("-c", "engine.kind=simulated", "-c", f"engine.sim_url={dead}", "-c", "engine.retries=0",
                       "-c", "engine.timeout=1") as url:
        r = httpx.post(f"{url}/retrieve", json={"queries": ["a", "", "b"], "questions": ["Who?"] * 3,
                                                "golden_answers": [["Ann"]] * 3}, timeout=30)
        assert r.status_code == 502
        body = r.json()
        assert "result" not in body and "failed for 2 of 3 queries" in body["error"]
        assert body["errors"][1] is None and "ConnectError" in body["errors"][0]
        with pytest.raises(KeyError):  # the Search-R1 client stops, instead of feeding empty documents
            SearchR1LikeClient(url).batch_search(["a"])


def fake_backend(seen: list[dict]) -> FastAPI:
    """An OpenAI-compatible chat server that records each body and writes five documents."""
    app = FastAPI()
    lock = threading.Lock()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        with lock:
            seen.append(body)
        docs = "\n\n".join(f"Doc {i}: (Title: T{i}) text {i}." for i in range(1, 6))
        return {"choices": [{"message": {"content": docs}}], "usage": {"completion_tokens": 60}}

    return app


def test_served_simulator_gets_the_official_prompt_byte_for_byte():
    seen: list[dict] = []
    backend = LiveServer(fake_backend(seen)).start()
    try:
        with serve_process("-c", "engine.kind=simulated", "-c", f"engine.sim_url={backend.url}/v1",
                           "-c", "engine.sim_model=sim", "-c", "server.batch=false", "-c", "server.total_steps=10",
                           "-c", "curriculum.end=1.0") as url:
            # the server's own curriculum: step 0 of 10 gives P(noisy) = 0, so a client that sends no noise
            # gets useful documents
            texts = SearchR1LikeClient(url, topk=3).batch_search(
                ["hamlet author"], questions=["who wrote hamlet"], golden_answers=[["William Shakespeare"]])
            assert httpx.post(f"{url}/step", json={"step": 10}).json()["noise"] == 1.0
            assert "zerosearch_curriculum_noise 1.0" in httpx.get(f"{url}/metrics").text
    finally:
        backend.stop()
    body, = seen
    assert body["messages"] == [{"role": "system", "content": ""}, {"role": "user", "content": OFFICIAL_USEFUL}]
    assert body["max_tokens"] >= 600 and body["temperature"] == 0.8
    # cut at `Doc 4` as the original does; clean titles
    assert texts == ["".join(f"Doc {i}(Title: \"T{i}\") text {i}.\n" for i in range(1, 4))]
