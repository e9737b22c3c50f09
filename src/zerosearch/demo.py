"""The CPU demo: the paper's central comparison, offline, on the packaged SmolLM2-135M-Instruct.

Build the world → collect real (BM25) searches on training questions and tune a SmolLM2 simulator on
them → check the tuned and the prompt-only simulator → warm-start the policy with the tuned simulator →
RL-train copies against the tuned simulator, the prompt-only simulator (noise curriculum) and the real
engine, same steps and seed → evaluate the warm start, the RL policies and the `direct` and `rag`
baselines on held-out test questions WITH THE REAL ENGINE → one table. `--quick` runs the same pipeline
on tiny random models (a smoke test: its numbers mean nothing).
"""

from __future__ import annotations

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
    baseline_model: str = "smollm2-135m"  # the untrained model behind `direct`, `rag` and the prompt-only simulator
    # Question kinds the demo trains and evaluates on. A simulator knows the final answer it is given, not the
    # bridge entity of a two-hop question; a 135M one tuned for minutes cannot have learned the world's bridges.
    hops: tuple[int, ...] = (1, 2)
    # simulation tuning: real searches collected on training questions outside the RL pool
    simtune_label: str = "contains"
    simtune_steps: int = 30
    simtune_batch_size: int = 8
    simtune_lr: float = 3e-4
    simtune_trainable_layers: int = 15  # only the top n decoder blocks of the simulator are tuned (CPU speed)
    simtune_check_queries: int = 30
    prompt_simulator_arm: bool = True  # also RL-train against the untuned, prompt-only simulator


@dataclass
class Demo:
    run: RunConfig
    demo: DemoSettings = field(default_factory=DemoSettings)


def load_demo_config(path: str | Path) -> Demo:
    data = yaml.safe_load(Path(path).read_text()) or {}
    section = data.pop("demo", {}) or {}
    if "hops" in section:
        section["hops"] = tuple(section["hops"])
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


def _simulator(model_path: str, style: str, run: RunConfig):
    from .engines.simulated import SimulatedEngine
    from .llm.local import TransformersGenerator

    e = run.engine
    # A frozen simulator runs in bfloat16: half the memory traffic per generated token.
    gen = TransformersGenerator.from_pretrained(model_path, device=e.device, dtype="bfloat16", batch_size=e.sim_batch_size)
    return SimulatedEngine(gen, style=style, topk=run.rollout.topk, noise=e.noise, temperature=e.sim_temperature,
                           words=e.sim_words, seed=e.seed, answer_guard=e.sim_answer_guard)


def run_demo(out: str | Path, *, quick: bool = False, config: str | Path | None = None,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    from .agent.rollout import RolloutConfig
    from .data.world import build_world, write_world
    from .engines import EngineConfig
    from .evaluate import run_eval, write_report
    from .llm.local import load_causal_lm
    from .simtune.check import check_simulator, report_markdown, write_check
    from .simtune.collect import collect, read_samples
    from .simtune.label import label_samples, sft_record, split_by_question, write_samples, write_sft_set
    from .simtune.tune import tune_simulator
    from .train.grpo import train_policy
    from .train.sft import SFTConfig
    from .train.warmstart import warmstart

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_demo_config(config or CONFIG_DIR / ("demo-quick.yaml" if quick else "demo-cpu.yaml"))
    run, ds = cfg.run, cfg.demo
    k = run.rollout.topk
    log = _Log(say)
    atomic_write_text(out / "config.json", json.dumps({"run": run.to_dict(), "demo": asdict(ds)}, indent=2))

    with log.stage("world"):
        world = build_world(seed=ds.world_seed, n_entities=ds.entities)
        paths = write_world(world, out / "world")
        train_q = [q for q in world.train if q.metadata["hops"] in ds.hops]
        eval_q = [q for q in world.test if q.metadata["hops"] in ds.hops][: ds.eval_questions]
        # RL draws from its own training questions; the simulator's data and the warm start use the others.
        rl_q, side_q = train_q[: ds.rl_questions], train_q[ds.rl_questions :]
        real = EngineConfig(kind="bm25", corpus=str(paths["corpus"]), topk=k).build()

    policy, base_model = run.policy, ds.baseline_model
    if quick:
        texts = [r["contents"] for r in world.corpus] + [q.question for q in world.train]
        policy, base_model = _quick_models(out, texts, ds.world_seed)

    sim_dir = out / "simulator"
    with log.stage("simulator data: real searches on training questions"):
        (sim_dir / "searches.jsonl").unlink(missing_ok=True)
        collected = collect(side_q, real, sim_dir / "searches.jsonl", topk=k)
        tune_s, held = split_by_question(read_samples(sim_dir / "searches.jsonl"), 0.1, seed=ds.world_seed)
        labelled, label_counts = label_samples(tune_s, ds.simtune_label, k=k, seed=ds.world_seed)
        records = [sft_record(x, words=run.engine.sim_words) for x in labelled]
        write_sft_set(records, sim_dir / "sft.jsonl")
        write_samples(held, sim_dir / "heldout.jsonl")
    with log.stage("simulator tuning"):
        n_sft = ds.simtune_steps * ds.simtune_batch_size
        tuned = tune_simulator(base_model, records[:n_sft], sim_dir,
                               sft=SFTConfig(steps=ds.simtune_steps, batch_size=ds.simtune_batch_size,
                                             learning_rate=ds.simtune_lr, bf16=run.rl.bf16, seed=run.rl.seed,
                                             trainable_layers=ds.simtune_trainable_layers))
        tuned_dir = tuned["model_dir"]
        del tuned
    with log.stage("simulator check (tuned vs prompt-only)"):
        engines = {"tuned": _simulator(tuned_dir, "sft", run)}
        if ds.prompt_simulator_arm:
            engines["prompt"] = _simulator(base_model, "prompt", run)
        checks = {}
        final_hop = [s for s in held if s.needed == s.golden_answers][: ds.simtune_check_queries]
        for name, eng in engines.items():
            result = check_simulator(eng, final_hop, k=k)
            write_check(result, sim_dir / "check", name)
            checks[name] = result["report"]
        atomic_write_text(sim_dir / "check" / "report.md", report_markdown(checks))

    with log.stage("warm start (tuned simulator)"):
        ws = warmstart(policy, engines["tuned"], side_q, out / "warmstart", sft=run.warmstart.sft,
                       n_demos=run.warmstart.demos, topk=k, max_obs_tokens=run.rollout.max_obs_tokens,
                       require_facts=run.warmstart.require_facts)
        ws_dir, ws_real = ws["model_dir"], ws["real_searches"]
        del ws

    arms = [("tuned-simulator", engines["tuned"])]
    if ds.prompt_simulator_arm:
        arms.append(("prompt-simulator", engines["prompt"]))
    arms.append(("bm25", real))
    summaries = {}
    for name, engine in arms:
        with log.stage(f"RL with the {name} engine"):
            model, tok = load_causal_lm(ws_dir)
            summaries[name] = train_policy(
                ws_dir, engine, rl_q, out / f"rl-{name}", rollout_cfg=run.rollout, rl=run.rl,
                curriculum=run.curriculum, model=model, tokenizer=tok)
            del model

    eval_cfg = RolloutConfig(max_turns=run.rollout.max_turns, max_new_tokens=run.rollout.max_new_tokens,
                             topk=k, temperature=0.0, max_obs_tokens=run.rollout.max_obs_tokens,
                             batch_size=len(eval_q), bf16=run.rollout.bf16)  # one batch: fewest decode steps
    methods = [
        ("direct (no search)", "direct", base_model, 0, 0),
        ("rag (one retrieval)", "rag", base_model, 0, 0),
        ("warm start (tuned simulator)", "agent", ws_dir, ws_real, collected["searches"]),
    ]
    labels = {"tuned-simulator": "RL, tuned simulator", "prompt-simulator": "RL, prompt-only simulator",
              "bm25": "RL, real engine (BM25)"}
    for name, _ in arms:
        built = collected["searches"] if name == "tuned-simulator" else 0
        methods.append((labels[name], "agent", summaries[name]["policy_dir"], summaries[name]["real_searches"], built))
    rows, warm_em = [], None
    for label, method, model_path, train_real, sim_real in methods:
        with log.stage(f"evaluate: {label}"):
            # evaluation only generates: bfloat16 weights are faster than autocasting fp32 ones
            model, tok = load_causal_lm(model_path, dtype="bfloat16" if run.rollout.bf16 else "float32")
            report, preds = run_eval(method, model, tok, eval_q, real, eval_cfg)
            em = {p["id"]: p["strict_em"] for p in preds}
            slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
            write_report(report, preds, out / "eval" / slug, title=label)
            rows.append({"method": label, "strict_em": report.strict_em, "cover_em": report.cover_em, "f1": report.f1,
                         "searches_per_question": report.searches_per_question, "n": report.n,
                         "no_answer_rate": report.no_answer_rate, "training_real_searches": train_real,
                         "simulator_real_searches": sim_real, "per_hops": report.per_hops,
                         "vs_warm_start": paired_change(warm_em, em) if warm_em is not None else None})
            if model_path == ws_dir:
                warm_em = em
            del model
    result = {"rows": rows, "stages_seconds": log.stages, "seconds": round(time.perf_counter() - log.t0, 1),
              "eval_questions": len(eval_q), "quick": quick, "simulator_check": checks,
              "simulator_labels": label_counts, "collected_searches": collected["searches"]}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    atomic_write_text(out / "results.md", results_markdown(result))
    return result


def paired_change(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Questions a policy gets right that the warm start got wrong (gained), and the reverse (lost). With 80
    questions a strict-EM gap of a few points is a few questions: the pair shows whether it is a few flips
    both ways or a change in one direction."""
    if after.keys() != before.keys():
        raise ValueError("paired comparison needs the same questions")
    return {"gained": sum(after[i] > before[i] for i in after), "lost": sum(after[i] < before[i] for i in after)}


def vs_warm_start(row: dict[str, Any]) -> str:
    change = row.get("vs_warm_start")
    return f"+{change['gained']} / -{change['lost']}" if change else "-"


def results_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# zerosearch CPU demo{' (quick: tiny random models, numbers mean nothing)' if result['quick'] else ''}",
        "",
        f"Evaluated with the real engine (BM25) on {result['eval_questions']} held-out test questions; "
        f"total {result['seconds']:.0f} s.",
        "",
        "| method | strict EM | cover EM | F1 | searches/question | no answer (%) | questions gained / lost vs warm start "
        "| RL/warm-start searches on a real engine | real searches to build its simulator |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['strict_em']:.1f} | {r['cover_em']:.1f} | {r['f1']:.1f} | "
                     f"{r['searches_per_question']:.2f} | {r['no_answer_rate']:.1f} | {vs_warm_start(r)} | "
                     f"{r['training_real_searches']} | {r['simulator_real_searches']} |")
    lines += ["", "Strict EM by hops:", ""]
    for r in result["rows"]:
        hops = ", ".join(f"{h}-hop {s['strict_em']:.1f} (n={s['n']})" for h, s in r["per_hops"].items())
        lines.append(f"- {r['method']}: {hops}")
    checks = result.get("simulator_check") or {}
    if checks:
        lines += ["", "Simulators on held-out final-hop queries (see simulator/check/report.md):", "",
                  "| simulator | format valid | useful with answer | noisy with answer (leak) | titles shared with BM25 |",
                  "|---|---:|---:|---:|---:|"]
        for name, c in checks.items():
            lines.append(f"| {name} | {c['format_valid']:.1f} | {c['useful_contains_answer']['contains_target']:.1f} | "
                         f"{c['noisy_contains_answer']['contains_target']:.1f} | {c['fidelity_title_overlap']:.1f} |")
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in result["stages_seconds"].items()), ""]
    return "\n".join(lines)
