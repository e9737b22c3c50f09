"""The CPU demo: the paper's central comparison, offline, on the packaged SmolLM2-135M-Instruct.

Build the world → warm-start the policy with the simulated engine → RL-train one copy against the
simulated engine (noise curriculum) and one against the real engine (BM25), same steps and seed →
evaluate the warm start, both RL policies and the `direct` and `rag` baselines on held-out test questions
WITH THE REAL ENGINE → one table. `--quick` runs the same pipeline on tiny random models (a smoke test:
its numbers mean nothing).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .data.qa import atomic_write_text
from .settings import RunConfig, run_config_from_dict

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class DemoSettings:
    world_seed: int = 7
    entities: int = 300
    eval_questions: int = 100  # held-out test questions, the same for every method
    rl_questions: int = 400  # training questions the RL runs draw from (disjoint from the warm start's)
    baseline_model: str = "smollm2-135m"  # the untrained model behind `direct` and `rag`


@dataclass
class Demo:
    run: RunConfig
    demo: DemoSettings = field(default_factory=DemoSettings)


def load_demo_config(path: str | Path) -> Demo:
    data = yaml.safe_load(Path(path).read_text()) or {}
    section = data.pop("demo", {}) or {}
    return Demo(run_config_from_dict(data), DemoSettings(**section))


class _Log:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.t0, self.stages = say, time.perf_counter(), {}

    def stage(self, name: str):
        log = self

        class Stage:
            def __enter__(self):
                self.t = time.perf_counter()
                log.say(f"[{time.perf_counter() - log.t0:6.0f}s] {name}…")

            def __exit__(self, *exc):
                log.stages[name] = round(time.perf_counter() - self.t, 1)

        return Stage()


def _quick_models(out: Path, texts: list[str], seed: int) -> tuple[str, str]:
    from .llm.tiny import save_tiny

    policy = save_tiny(out / "tiny-policy", texts, seed=seed)
    simulator = save_tiny(out / "tiny-simulator", texts, seed=seed + 1)
    return str(policy), str(simulator)


def run_demo(out: str | Path, *, quick: bool = False, config: str | Path | None = None,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    from .agent.rollout import RolloutConfig
    from .data.world import build_world, write_world
    from .engines import EngineConfig
    from .evaluate import run_eval, write_report
    from .llm.local import TransformersGenerator, load_causal_lm
    from .train.grpo import train_policy
    from .train.warmstart import warmstart

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_demo_config(config or CONFIG_DIR / ("demo-quick.yaml" if quick else "demo-cpu.yaml"))
    run, ds = cfg.run, cfg.demo
    log = _Log(say)
    atomic_write_text(out / "config.json", json.dumps({"run": run.to_dict(), "demo": asdict(ds)}, indent=2))

    with log.stage("world"):
        world = build_world(seed=ds.world_seed, n_entities=ds.entities)
        paths = write_world(world, out / "world")
        train_q = world.train
        eval_q = world.test[: ds.eval_questions]
        # The warm start and the RL runs use disjoint training questions.
        n_ws = max(run.warmstart.demos * 2, run.warmstart.demos + 16)
        ws_q, rl_q = train_q[ds.rl_questions:], train_q[: ds.rl_questions]
        if len(ws_q) < n_ws:
            ws_q = train_q[-n_ws:]

    policy, sim_model, baseline_model = run.policy, run.engine.sim_model, ds.baseline_model
    if quick:
        texts = [r["contents"] for r in world.corpus] + [q.question for q in train_q]
        policy, sim_model = _quick_models(out, texts, ds.world_seed)
        baseline_model = policy

    with log.stage("simulator"):
        sim_cfg = copy.deepcopy(run.engine)
        sim_cfg.kind, sim_cfg.sim_model = "simulated", sim_model
        sim_cfg.topk = run.rollout.topk
        generator = None if sim_cfg.sim_url else TransformersGenerator.from_pretrained(
            sim_model, device=sim_cfg.device, dtype=sim_cfg.dtype, batch_size=sim_cfg.sim_batch_size)
        simulated = sim_cfg.build(generator=generator)
        real = EngineConfig(kind="bm25", corpus=str(paths["corpus"]), topk=run.rollout.topk).build()

    with log.stage("warm start (simulated engine)"):
        ws = warmstart(policy, simulated, ws_q, out / "warmstart", sft=run.warmstart.sft, n_demos=run.warmstart.demos,
                       topk=run.rollout.topk, max_obs_tokens=run.rollout.max_obs_tokens,
                       trainable_layers=run.trainable_layers)
        ws_dir, ws_real = ws["model_dir"], ws["real_searches"]
        del ws

    summaries = {}
    for name, engine in (("simulated", simulated), ("bm25", real)):
        with log.stage(f"RL with the {name} engine"):
            model, tok = load_causal_lm(ws_dir)
            summaries[name] = train_policy(
                ws_dir, engine, rl_q, out / f"rl-{name}", rollout_cfg=run.rollout, rl=run.rl,
                curriculum=run.curriculum, trainable_layers=run.trainable_layers, model=model, tokenizer=tok)
            del model

    eval_cfg = RolloutConfig(max_turns=run.rollout.max_turns, max_new_tokens=run.rollout.max_new_tokens,
                             topk=run.rollout.topk, temperature=0.0, max_obs_tokens=run.rollout.max_obs_tokens,
                             batch_size=max(run.rollout.batch_size, 50), bf16=run.rollout.bf16)
    rows = []
    methods = [
        ("direct (no search)", "direct", baseline_model, 0),
        ("rag (one retrieval)", "rag", baseline_model, 0),
        ("warm start", "agent", ws_dir, ws_real),
        ("RL, simulated engine", "agent", summaries["simulated"]["policy_dir"], summaries["simulated"]["real_searches"]),
        ("RL, real engine (BM25)", "agent", summaries["bm25"]["policy_dir"], summaries["bm25"]["real_searches"]),
    ]
    for label, method, model_path, train_real in methods:
        with log.stage(f"evaluate: {label}"):
            model, tok = load_causal_lm(model_path)
            report, preds = run_eval(method, model, tok, eval_q, real, eval_cfg)
            slug = label.split(" (")[0].replace(",", "").replace(" ", "-").lower()
            write_report(report, preds, out / "eval" / slug, title=label)
            rows.append({"method": label, "strict_em": report.strict_em, "cover_em": report.cover_em, "f1": report.f1,
                         "searches_per_question": report.searches_per_question, "n": report.n,
                         "training_real_searches": train_real, "per_hops": report.per_hops})
            del model
    result = {"rows": rows, "stages_seconds": log.stages, "seconds": round(time.perf_counter() - log.t0, 1),
              "eval_questions": len(eval_q), "quick": quick}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    atomic_write_text(out / "results.md", results_markdown(result))
    return result


def results_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# zerosearch CPU demo{' (quick: tiny random models, numbers mean nothing)' if result['quick'] else ''}",
        "",
        f"Evaluated with the real engine (BM25) on {result['eval_questions']} held-out test questions; "
        f"total {result['seconds']:.0f} s.",
        "",
        "| method | strict EM | cover EM | F1 | searches/question | training searches on a real engine |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['strict_em']:.1f} | {r['cover_em']:.1f} | {r['f1']:.1f} | "
                     f"{r['searches_per_question']:.2f} | {r['training_real_searches']} |")
    lines += ["", "Strict EM by hops:", ""]
    for r in result["rows"]:
        hops = ", ".join(f"{h}-hop {s['strict_em']:.1f} (n={s['n']})" for h, s in r["per_hops"].items())
        lines.append(f"- {r['method']}: {hops}")
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in result["stages_seconds"].items()), ""]
    return "\n".join(lines)
