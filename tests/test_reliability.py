"""Failures that must not corrupt anything (the load test is in test_serve_cli.py, the killed training run
in test_train.py).

- The simulator's backend (an OpenAI-compatible server) dies mid-run: each affected request fails within
  its timeout with an error that names the cause, every failure is counted, nothing hangs, and the server
  answers again once the backend is back.
- A process killed while writing a report leaves the old report or the new one, never half of one.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections import Counter

import httpx
import uvicorn
from fastapi import FastAPI, Request

from zerosearch.engines.batching import BatchingEngine
from zerosearch.engines.simulated import SimulatedEngine
from zerosearch.llm.openai_compat import OpenAICompatGenerator
from zerosearch.server import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A uvicorn server in a thread on a fixed loopback port, which can be stopped and started again."""

    def __init__(self, app, port: int | None = None, grace: float = 0.2) -> None:
        self.app, self.port, self.grace = app, port or free_port(), grace
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> "LiveServer":
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="critical", lifespan="off",
                                timeout_graceful_shutdown=self.grace)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(10)
            assert not self.thread.is_alive(), "server did not stop"


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def fake_simulator_backend(state: dict) -> FastAPI:
    """An OpenAI-compatible chat server that writes one document; `state["hang"]` makes it stop answering."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        query = body["messages"][-1]["content"].split("Query: ")[-1].split("\n")[0]
        await asyncio.sleep(0.02)
        while state["hang"]:  # a wedged process: the connection stays open, nothing comes back
            await asyncio.sleep(0.05)
        return {"choices": [{"message": {"content": f"Doc 1: (Title: T) about {query}"}}],
                "usage": {"completion_tokens": 6}}

    return app


def test_simulator_backend_killed_mid_run_fails_fast_counts_and_recovers():
    state = {"hang": False}
    backend = LiveServer(fake_simulator_backend(state), grace=0.1).start()
    generator = OpenAICompatGenerator(f"{backend.url}/v1", "sim", timeout=0.5, max_retries=1, backoff=0.05)
    # every affected request must be answered within: queue + 2 attempts x 0.5 s + backoff, well under 5 s
    engine = BatchingEngine(SimulatedEngine(generator, topk=1), max_batch=32, max_wait=0.005, timeout=5.0)
    server = LiveServer(create_app(engine)).start()
    seen: list[tuple[str, int, float, str]] = []  # (phases the request lived through, status, seconds, error)
    phase = {"name": "up"}

    async def client(c: int, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            name = phase["name"]
            t0 = time.monotonic()
            r = await http.post("/retrieve", json={"queries": [f"c{c} q{i}"], "questions": ["who?"],
                                                   "golden_answers": [["x"]]})
            error = r.json().get("error") or ""
            seen.append((f"{name}>{phase['name']}", r.status_code, time.monotonic() - t0, error))
            i += 1

    async def main() -> None:
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=server.url, timeout=20, limits=httpx.Limits(max_connections=32)) as http:
            tasks = [asyncio.create_task(client(c, http, stop)) for c in range(32)]
            await asyncio.sleep(0.5)
            phase["name"] = "killed"
            state["hang"] = True  # first the backend is wedged: calls time out ...
            await asyncio.sleep(0.8)
            await asyncio.to_thread(backend.stop)  # ... then the process is gone: connections refused
            await asyncio.sleep(1.0)
            phase["name"] = "restarting"
            state["hang"] = False
            await asyncio.to_thread(backend.start)
            await asyncio.sleep(1.5)  # in-flight retries against the dead backend drain out
            phase["name"] = "back"
            await asyncio.sleep(0.7)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 15)  # nothing hangs

    try:
        asyncio.run(main())
        text = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
        backend.stop()
        engine.close()

    by_phase = {p: Counter(s for q, s, _, _ in seen if q == p) for p in ("up>up", "killed>killed", "back>back")}
    assert by_phase["up>up"][200] > 0 and set(by_phase["up>up"]) == {200}
    assert by_phase["killed>killed"][502] > 0 and set(by_phase["killed>killed"]) == {502}
    assert by_phase["back>back"][200] > 0 and set(by_phase["back>back"]) == {200}  # recovered
    failures = [(sec, err) for _, s, sec, err in seen if s != 200]
    assert all(s in (200, 502) for _, s, _, _ in seen)  # no 500s, no timeouts of the server itself
    assert max(sec for sec, _ in failures) < 5.0  # each within its timeout
    for _, err in failures:  # the error says what happened
        assert "gave up after 2 attempts" in err and ("timed out after 0.5s" in err or "ConnectError" in err), err
    assert any("timed out after 0.5s" in err for _, err in failures)  # the wedged in-flight calls
    assert any("ConnectError" in err for _, err in failures)  # the refused ones
    # every failure was counted, by the server and by the generator
    assert f'zerosearch_requests_total{{endpoint="/retrieve",code="502"}} {len(failures)}' in text
    assert metric(text, "zerosearch_result_errors_total") == len(failures)
    assert generator.stats["failures"] == len(failures)


def test_a_report_is_never_half_written_when_the_writer_is_killed(tmp_path):
    """The writer rewrites a 4 MB report in a loop and is SIGKILLed at some point of a write."""
    import subprocess
    import sys

    report = tmp_path / "report.json"
    script = (
        "import sys\n"
        "from zerosearch.io import atomic_write_text\n"
        "i = 0\n"
        "while True:\n"
        "    atomic_write_text(sys.argv[1], str(i % 10) * (4 << 20))\n"
        "    i += 1\n"
    )
    for delay in (0.05, 0.2, 0.4):
        proc = subprocess.Popen([sys.executable, "-c", script, str(report)])
        try:
            deadline = time.monotonic() + 30
            while not report.exists():
                assert proc.poll() is None and time.monotonic() < deadline, "the writer did not start"
                time.sleep(0.01)
            time.sleep(delay)
        finally:
            proc.kill()
            proc.wait(10)
        text = report.read_text()
        assert len(text) == 4 << 20 and len(set(text)) == 1  # a whole report, never a mix or a cut
