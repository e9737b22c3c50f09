"""Policy trajectories per minute of RL training: the step as it was on 2026-12-02 vs the step shipped now,
side by side in one process, against the real engine (BM25) and against the tuned simulator.

"before" is the demo's step of that day: 16 trajectories a step (4 questions x 4), every row in the update,
and the sampling twin as it was built then (a deep copy that kept accelerate's and the trainer's `forward`
closures, so it sampled from the fp32 model under autocast instead of its own bfloat16 weights).
"now" is `zerosearch train` today: the twin samples from its own packed bfloat16 weights, groups whose
rewards are all equal are left out of the update (`rl.skip_uninformative`, the same gradient), and
`--questions` questions a step (more trajectories share each decoding step; the update takes them in
micro-batches of at most `rl.micro_batch_size` rows, one optimizer step), and, with
`-c engine.sim_share_duplicates=true`, the identical searches of a turn written once.
"lora" is "now" with LoRA adapters for the update (`-c rl.lora_r=16`, at 10x the learning rate): no weight
gradients or optimizer state for the base weights; the twin samples from the merged weights.

Each variant runs `--steps` RL steps of `train_policy` from the same warm start, timed from the call to
its return (trainer set-up and the first step's one-off costs included, as a user pays them).

    python benchmarks/rl_step.py                      # after `make demo`: its warm start and simulator
    python benchmarks/rl_step.py --policy runs/demo/warmstart/model --simulator runs/demo/simulator/model
    python benchmarks/rl_step.py --engines simulator --variants now --questions 16 -c engine.sim_batch_size=128
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from zerosearch.data.world import build_world, write_world
from zerosearch.demo import _simulator
from zerosearch.engines import EngineConfig, build_engine
from zerosearch.settings import load_demo_settings
from zerosearch.llm.decoding import use_bf16
from zerosearch.llm.local import load_causal_lm
from zerosearch.train import grpo
from zerosearch.train.grpo import SearchRollout, train_policy

_CURRENT_TWIN = SearchRollout._generation_model
VARIANTS = ("before", "now", "lora")


def _twin_as_before(self, model):
    """The sampling twin as it was built before the fix: a deep copy that keeps the instance-level forward."""
    # without native bfloat16 the fallback to float32 (llm.decoding.use_bf16) applies to "before" too
    if not use_bf16(self.cfg.bf16) or next(model.parameters()).device.type != "cpu":
        return model, self.cfg
    if self._twin is None:
        self._twin = copy.deepcopy(model).to(torch.bfloat16).eval()
    with torch.no_grad():
        for dst, src in zip(self._twin.parameters(), model.parameters()):
            dst.copy_(src)
    return self._twin, dataclasses.replace(self.cfg, bf16=False)


def run(variant: str, engine, policy: str, questions, out: Path, run_cfg, steps: int, per_step: int) -> dict:
    before = variant == "before"
    SearchRollout._generation_model = _twin_as_before if before else _CURRENT_TWIN
    rl = dataclasses.replace(run_cfg.rl, steps=steps, questions_per_step=4 if before else per_step,
                             skip_uninformative=not before, save_steps=0)
    if variant == "lora":
        rl = dataclasses.replace(rl, lora_r=16, learning_rate=10 * rl.learning_rate)
    if hasattr(engine, "share_duplicates"):  # the simulator: "before" wrote every search on its own
        engine.share_duplicates = run_cfg.engine.sim_share_duplicates and not before
    model, tok = load_causal_lm(policy)
    t0 = time.perf_counter()
    train_policy(policy, engine, questions, out, rollout_cfg=run_cfg.rollout, rl=rl, curriculum=run_cfg.curriculum,
                 model=model, tokenizer=tok)
    seconds = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    n = sum(r["batch_trajectories"] for r in rows)
    informative = sum(r.get("informative_groups", 0.0) for r in rows) / len(rows)
    return {"trajectories": n, "seconds": seconds, "per_minute": 60 * n / seconds, "informative": informative,
            "rollout": sum(r["rollout_seconds"] for r in rows), "search": sum(r["search_seconds"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="runs/demo/warmstart/model", help="the warm-started policy to train")
    ap.add_argument("--simulator", default="runs/demo/simulator/model", help="the tuned simulator")
    ap.add_argument("--config", "-c", action="append", default=None,
                    help="rollout / RL / curriculum settings: a file, a preset or key=value, repeatable "
                         "(default: demo-cpu)")
    ap.add_argument("--steps", type=int, default=4, help="RL steps per variant")
    ap.add_argument("--questions", type=int, default=None, help="questions a step now (default: the config's)")
    ap.add_argument("--engines", default="bm25,simulator")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="which variants to run ('before' always runs)")
    args = ap.parse_args()
    for path in (args.policy, args.simulator):
        if not Path(path).exists():
            raise SystemExit(f"{path} does not exist: run `make demo` first, or pass --policy / --simulator")
    asked = args.variants.split(",")
    if unknown := set(asked) - set(VARIANTS):
        raise SystemExit(f"unknown variant(s) {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}")
    variants = ["before", *(v for v in VARIANTS[1:] if v in asked)]
    run_cfg, demo = load_demo_settings(args.config or [], default="demo-cpu")
    per_step = args.questions or run_cfg.rl.questions_per_step
    world = build_world(seed=demo.world_seed, n_entities=demo.entities)
    tmp = Path(tempfile.mkdtemp(prefix="rl-step-"))
    paths = write_world(world, tmp / "world")
    questions = [q for q in world.train if q.metadata["hops"] in demo.hops][: demo.rl_questions]
    k = run_cfg.engine.topk
    engines = {"bm25": lambda: build_engine(EngineConfig(kind="bm25", corpus=str(paths["corpus"]), topk=k)),
               "simulator": lambda: _simulator(args.simulator, "sft", run_cfg)}
    g = run_cfg.rl.num_generations
    print(f"policy {args.policy}; {args.steps} RL steps per variant; before: 4 questions x {g} a step, "
          f"now: {per_step} x {g}; torch threads {torch.get_num_threads()}", flush=True)
    for name in args.engines.split(","):
        engine = engines[name]()
        results = {}
        for variant in variants:
            r = run(variant, engine, args.policy, questions, tmp / f"{name}-{variant}", run_cfg, args.steps, per_step)
            results[variant] = r
            print(f"{name:9s} {variant:6s} {r['trajectories']:4d} trajectories in {r['seconds']:6.1f} s: "
                  f"{r['per_minute']:6.1f} trajectories/min (rollout {r['rollout']:.0f} s, of which search "
                  f"{r['search']:.0f} s; informative groups {r['informative']:.0%})", flush=True)
        for variant in variants[1:]:
            ratio = results[variant]["per_minute"] / results["before"]["per_minute"]
            print(f"{name:9s} ratio ({variant} / before): {ratio:.2f}x trajectories per minute", flush=True)
        engine.close()
    SearchRollout._generation_model = _CURRENT_TWIN
    del grpo


if __name__ == "__main__":
    main()
