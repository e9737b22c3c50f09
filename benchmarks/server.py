"""The simulated-engine server with and without request coalescing, side by side, under 32 concurrent clients.

Both servers are the app `zerosearch serve -c engine.kind=simulated` runs, in front of one SimulatedEngine over a
local model: "off" serves one request per engine call (the engine holds a lock), "on" wraps the engine in
BatchingEngine, as `serve` does by default for simulated engines. Rounds alternate off / on, so a noisy
neighbour on the machine hurts both alike. Every request is one query with its own question and answer, as a
Search-R1 style trainer sends them.

    python benchmarks/server.py --model tiny
    python benchmarks/server.py --model smollm2-135m --requests 64 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time

import httpx
import torch
import uvicorn

from zerosearch.data.world import build_world
from zerosearch.engines.batching import BatchingEngine
from zerosearch.engines.simulated import SimulatedEngine
from zerosearch.llm.local import TransformersGenerator, load_causal_lm
from zerosearch.server import create_app


def start(app) -> tuple[uvicorn.Server, str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def load(url: str, bodies: list[dict], clients: int) -> tuple[float, list[float], int]:
    """Send every body once from `clients` concurrent clients; return (seconds, latencies, errors)."""
    todo = iter(bodies)
    latencies: list[float] = []
    errors = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for body in todo:  # the clients share one iterator: each body is sent once
            t0 = time.perf_counter()
            r = await http.post("/retrieve", json=body)
            latencies.append(time.perf_counter() - t0)
            errors += r.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - t0, latencies, errors


def percentile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny' (random, built here) or a model name/folder")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16", help="weights of a real model")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=256, help="requests per round and setting")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=24, help="simulator output per query")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    world = build_world(seed=7)
    if args.model == "tiny":
        from zerosearch.llm.tiny import build_tiny_model, build_tiny_tokenizer

        tok = build_tiny_tokenizer([r["contents"] for r in world.corpus])
        model = build_tiny_model(tok)
    else:
        model, tok = load_causal_lm(args.model, dtype=args.dtype)
    generator = TransformersGenerator(model, tok, batch_size=args.max_batch)
    # greedy, one short document per query: the cost is the model's, and the same in both settings
    engine = SimulatedEngine(generator, topk=1, words=10, max_new_tokens=args.max_new_tokens, temperature=0.0)
    batching = BatchingEngine(engine, max_batch=args.max_batch, max_wait=args.max_wait_ms / 1000)
    servers = {"off": start(create_app(engine)), "on": start(create_app(batching))}
    questions = world.test
    bodies = [{"queries": [f"{q.question.rstrip('?')} facts"], "questions": [q.question],
               "golden_answers": [list(q.golden_answers)], "noise": "useful"}
              for q in (questions[i % len(questions)] for i in range(args.requests))]
    print(f"simulator {args.model} ({str(next(model.parameters()).dtype).replace('torch.', '')}), "
          f"{args.max_new_tokens} new tokens per query, {args.clients} clients, {args.requests} requests per "
          f"round, batching: up to {args.max_batch} queries / {args.max_wait_ms:g} ms, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    for _, url in servers.values():  # warm-up: first calls allocate and compile kernels
        asyncio.run(load(url, bodies[: args.clients], args.clients))
    totals = {name: [0.0, []] for name in servers}
    for rnd in range(args.rounds):
        for name, (_, url) in servers.items():
            seconds, lat, errors = asyncio.run(load(url, bodies, args.clients))
            totals[name][0] += seconds
            totals[name][1] += lat
            print(f"round {rnd + 1} batching {name:3s}: {len(bodies) / seconds:7.2f} requests/s, "
                  f"p50 {percentile(lat, 50):6.3f} s, p99 {percentile(lat, 99):6.3f} s, errors {errors}", flush=True)
    rates = {}
    for name, (seconds, lat) in totals.items():
        rates[name] = len(lat) / seconds
        print(f"all rounds batching {name:3s}: {rates[name]:7.2f} requests/s, p50 {percentile(lat, 50):6.3f} s, "
              f"p99 {percentile(lat, 99):6.3f} s")
    print(f"engine calls with batching: {batching.stats['batches']} for {batching.stats['queries']} queries")
    print(f"ratio (batching on / off): {rates['on'] / rates['off']:.1f}x requests/s")
    for server, _ in servers.values():
        server.should_exit = True
    batching.close()


if __name__ == "__main__":
    main()
