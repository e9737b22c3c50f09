"""The paper's central comparison as a pipeline of resumable stages, offline, on the packaged SmolLM2-135M.

Build the world → (optionally) pre-train the simulator on the world's corpus → collect real (BM25)
searches on training questions and tune the simulator on them → check the simulators → warm-start the
policy with the tuned simulator → RL-train copies of the warm start, one per arm (tuned simulator with the
noise curriculum, at constant noise, the prompt-only simulator, the real engine), same steps and seed, and
each again with every seed of `demo.extra_seeds` →
evaluate every policy on held-out test questions WITH THE REAL ENGINE → one table with paired bootstrap
intervals, and one learning-curve figure.

`zerosearch demo` (preset demo-cpu, ≤ 20 minutes) and `zerosearch experiment` (preset experiment-cpu,
≤ 90 minutes) run this pipeline with different settings (`zerosearch/configs/`). Each finished stage
writes its result to OUT/stages/; a run started again in the same folder skips those stages and resumes an
interrupted RL arm from its last checkpoint. `--quick` runs the pipeline on tiny random models (a smoke
test: its numbers mean nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .data.qa import QAExample
from .io import atomic_write_text
from .settings import RunConfig, load_demo_settings


def _slug(name: str) -> str:
    """A file or folder name for a stage, a method or a simulator."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def release_memory() -> None:
    """Hand a finished stage's memory back before the next one starts. A trainer and its model hold each other
    (callbacks, hooks), so only the cycle collector frees them; and glibc keeps freed blocks below its mmap
    threshold (up to 32 MB: most of a 135M model's tensors) in its heap unless trimmed. A pipeline process
    that had pre-trained, tuned and warm-started held 10.3 GB when its first RL step began; one that resumed
    at RL, 3.0 GB (RL then peaks at ~11 GB)."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)  # glibc only
        if trim is not None:
            trim(0)


class Stages:
    """Runs each named stage once. A finished stage's JSON result is kept in OUT/stages/<name>.json and read
    back, not recomputed, when the pipeline runs again in the same folder. Stages run in order and each may
    use what any earlier one made, so once a stage runs, the ones after it run too (never a stale result) —
    except a stage that names the earlier stages it `needs`: it runs again only when one of those did (an
    evaluation needs only the stage that trained its policy)."""

    def __init__(self, out: Path, say: Callable[[str], None]) -> None:
        self.dir, self.say, self.t0, self.seconds = out / "stages", say, time.perf_counter(), {}
        self.ran: set[str] = set()  # the stages run (not read back) this time
        self.upstream_reused = True

    def __call__(self, name: str, fn: Callable[[], Any], needs: Sequence[str] | None = None) -> Any:
        path = self.dir / f"{_slug(name)}.json"
        if needs is not None and not set(needs) <= set(self.seconds):  # self.seconds: every stage called so far
            raise ValueError(f"stage {name!r} needs stages not run before it: {sorted(set(needs) - set(self.seconds))}")
        upstream_ran = bool(self.ran if needs is None else self.ran.intersection(needs))
        if path.exists() and not upstream_ran:
            saved = json.loads(path.read_text())
            self.seconds[name] = saved["seconds"]
            self.say(f"[{time.perf_counter() - self.t0:6.0f}s] {name}: done in an earlier run")
            return saved["result"]
        self.say(f"[{time.perf_counter() - self.t0:6.0f}s] {name}…")
        # what a killed attempt of this stage left (an RL checkpoint) may be continued only if nothing it
        # uses was made anew
        self.upstream_reused = not upstream_ran
        self.ran.add(name)
        path.unlink(missing_ok=True)
        t = time.perf_counter()
        result = fn()
        self.seconds[name] = round(time.perf_counter() - t, 1)
        release_memory()
        atomic_write_text(path, json.dumps({"result": result, "seconds": self.seconds[name]}, indent=2))
        return result


def _quick_models(out: Path, texts: list[str], seed: int) -> tuple[str, str]:
    from .llm.tiny import save_tiny

    policy = save_tiny(out / "tiny-policy", texts, seed=seed)
    simulator = save_tiny(out / "tiny-simulator", texts, seed=seed + 1)
    return str(policy), str(simulator)


def _simulator(model_path: str, style: str, run: RunConfig):
    from .engines import build_engine

    # in `engine.dtype`: the presets ask for bfloat16 (half the memory traffic per generated token)
    cfg = replace(run.engine, kind="simulated", sim_model=model_path, sim_style=style, sim_url=None)
    return build_engine(cfg)


def _prepare_folder(out: Path, settings: dict[str, Any], fresh: bool, say: Callable[[str], None]) -> None:
    """A run folder belongs to one set of settings: resuming with others would mix two runs in one table. Two
    changes are not others: a setting added to zerosearch since the folder was made, at its default (the
    folder's stages ran as that default does), and seeds appended to `demo.extra_seeds` (their arms run after
    every finished one, so a finished run takes another seed without redoing the rest)."""
    saved = out / "config.json"
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
    if fresh and out.exists():
        if any(out.iterdir()) and not saved.exists():
            raise ValueError(f"{out} is not a run folder of this pipeline (no config.json); not deleting it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if saved.exists():
        added = _added_seeds(_as_read_now(json.loads(saved.read_text())), settings)
        if added is None:
            raise ValueError(f"{out} holds a run with other settings ({saved}); pass --fresh to start it over, "
                             "or choose another --out")
        if added:
            say(f"{out}: a run of these settings, now with extra seeds {added}: their arms run after the finished "
                "ones, then their evaluations")
    atomic_write_text(saved, json.dumps(settings, indent=2))


def _added_seeds(before: dict[str, Any] | None, now: dict[str, Any]) -> list[int] | None:
    """The seeds `now` appends to `before`'s demo.extra_seeds ([] for the same settings); None when the two
    differ otherwise."""
    if before is None:
        return None
    old, new = before["demo"]["extra_seeds"], now["demo"]["extra_seeds"]

    def rest(s: dict[str, Any]) -> dict[str, Any]:
        return {**s, "demo": {**s["demo"], "extra_seeds": None}}

    return new[len(old):] if rest(before) == rest(now) and new[: len(old)] == old else None


def _as_read_now(settings: dict[str, Any]) -> dict[str, Any] | None:
    """A folder's saved settings as this version of zerosearch reads them (settings added since take their
    defaults); None when this version does not know one of them."""
    from .settings import DemoSettings, build_section, run_config_from_dict

    try:
        run, ds = run_config_from_dict(settings["run"]), build_section(DemoSettings, settings["demo"], "demo")
    except (KeyError, TypeError, ValueError):
        return None
    return json.loads(json.dumps(_folder_settings(run, ds, settings.get("quick"))))


def _folder_settings(run: RunConfig, ds, quick: bool) -> dict[str, Any]:
    """What a run folder's config.json holds: every setting but the search price, which changes no stage,
    only what the table says the searches cost (a folder can be priced again)."""
    settings = {"run": run.to_dict(), "demo": asdict(ds), "quick": quick}
    settings["run"]["engine"].pop("price_per_1000")
    return settings


def split_rl_questions(questions: Sequence[QAExample], n: int, *, balance_hops: bool = False
                       ) -> tuple[list[QAExample], list[QAExample]]:
    """The first `n` questions for RL (with `balance_hops`: single- and two-hop in turn) and the others, in
    their order, for the simulator's data and the warm start."""
    from .train.warmstart import in_turn

    pool = in_turn(questions, lambda q: q.metadata["hops"]) if balance_hops else list(questions)
    chosen = {id(q) for q in pool[:n]}
    return pool[:n], [q for q in questions if id(q) not in chosen]


def with_multi_hop_share(questions: Sequence[QAExample], share: float | None) -> list[QAExample]:
    """`questions` with `share` of them multi-hop: all of the kind that would run short and the first ones of
    the other, in their order (None: all of them)."""
    if share is None:
        return list(questions)
    multi = [q for q in questions if q.metadata["hops"] > 1]
    single = [q for q in questions if q.metadata["hops"] == 1]
    if share == 0.0 or share == 1.0:
        keep = single if share == 0.0 else multi
    elif (n_single := round(len(multi) * (1 - share) / share)) <= len(single):
        keep = multi + single[:n_single]
    else:
        keep = single + multi[: round(len(single) * share / (1 - share))]
    if not keep:
        raise ValueError(f"no RL questions with a multi-hop share of {share}: the RL questions hold "
                         f"{len(single)} single-hop and {len(multi)} multi-hop")
    chosen = {id(q) for q in keep}
    return [q for q in questions if id(q) in chosen]


def run_demo(out: str | Path, *, quick: bool = False, config: str | Path | Sequence[str] = (), fresh: bool = False,
             say: Callable[[str], None] = print, default: str = "demo-cpu") -> dict[str, Any]:
    """Run (or resume) the pipeline in `out`. `config`: settings files, preset names or KEY=VALUE overrides
    (see settings.load_settings); without a file, the preset `default` (demo-quick with `quick`)."""
    from .curriculum import NoiseSchedule
    from .data.world import build_world, write_world
    from .engines import EngineConfig, build_engine
    from .engines.ledger import SearchCost
    from .evaluate import run_eval, write_report
    from .llm.local import load_causal_lm
    from .simtune.check import check_simulator, report_markdown, write_check
    from .simtune.collect import collect
    from .simtune.label import label_samples, sft_record, write_sft_set
    from .simtune.samples import read_samples, split_by_question, write_samples
    from .simtune.pretrain import pretrain_simulator
    from .simtune.tune import tune_simulator
    from .settings import SFTConfig
    from .engines.simulated import SimulatedEngine
    from .train.grpo import train_policy
    from .train.warmstart import warmstart

    out = Path(out)
    items = [str(config)] if isinstance(config, (str, Path)) else list(config)
    run, ds = load_demo_settings(items, "demo-quick" if quick else default)
    price = run.engine.price_per_1000
    k = run.engine.topk
    arms = ds.all_arms()
    _prepare_folder(out, _folder_settings(run, ds, quick), fresh, say)
    stage = Stages(out, say)

    world = build_world(seed=ds.world_seed, n_entities=ds.entities)
    paths = write_world(world, out / "world")
    train_q = [q for q in world.train if q.metadata["hops"] in ds.hops]
    eval_q = [q for q in world.test if q.metadata["hops"] in ds.hops]
    eval_q = eval_q[: ds.eval_questions] if ds.eval_questions else eval_q
    # RL draws from its own training questions; the simulator's data and the warm start use the others.
    rl_q, side_q = split_rl_questions(train_q, ds.rl_questions, balance_hops=ds.rl_balance_hops)
    # the RL questions a share leaves out are left unused (the warm start's questions stay as they were)
    rl_q = with_multi_hop_share(rl_q, ds.rl_multi_hop_share)
    real = build_engine(EngineConfig(kind="bm25", corpus=str(paths["corpus"]), topk=k))

    policy, base_model = run.policy, ds.baseline_model
    if quick:
        texts = [r["contents"] for r in world.corpus] + [q.question for q in world.train]
        policy, base_model = _quick_models(out, texts, ds.world_seed)

    def sft(steps: int, batch: int, lr: float, layers: int = 0) -> SFTConfig:
        return SFTConfig(steps=steps, batch_size=batch, learning_rate=lr, bf16=run.rl.bf16, seed=run.rl.seed,
                         trainable_layers=layers)

    sim_base = base_model
    if ds.pretrain_steps:
        def pretrain() -> dict[str, Any]:
            summary = pretrain_simulator(base_model, world.corpus, out / "simulator-pretrain",
                                         sft=sft(ds.pretrain_steps, ds.pretrain_batch_size, ds.pretrain_lr))
            return {"model_dir": summary["model_dir"], "seconds": summary["seconds"], "epochs": summary["epochs"]}

        sim_base = stage("simulator pre-training on the corpus", pretrain)["model_dir"]

    sim_dir = out / "simulator"

    def collect_searches() -> dict[str, Any]:
        (sim_dir / "searches.jsonl").unlink(missing_ok=True)
        collected = collect(side_q, real, sim_dir / "searches.jsonl", topk=k, price_per_1000=price)
        tune_s, held = split_by_question(read_samples(sim_dir / "searches.jsonl"), 0.1, seed=ds.world_seed)
        labelled, label_counts = label_samples(tune_s, ds.simtune_label, k=k, seed=ds.world_seed)
        write_sft_set([sft_record(x, words=run.engine.sim_words) for x in labelled], sim_dir / "sft.jsonl")
        write_samples(held, sim_dir / "heldout.jsonl")
        return {"searches": collected["searches"], "labels": label_counts, "search_cost": collected["search_cost"]}

    collected = stage("simulator data: real searches on training questions", collect_searches)

    def tune(base: str, folder: Path) -> dict[str, Any]:
        from .io import read_jsonl

        records = read_jsonl(sim_dir / "sft.jsonl")[: ds.simtune_steps * ds.simtune_batch_size]
        summary = tune_simulator(base, records, folder, sft=sft(ds.simtune_steps, ds.simtune_batch_size, ds.simtune_lr,
                                                                ds.simtune_trainable_layers))
        return {"model_dir": summary["model_dir"], "seconds": summary["seconds"]}

    tuned_dir = stage("simulator tuning", lambda: tune(sim_base, sim_dir))["model_dir"]
    checked_sims = {"tuned": (tuned_dir, "sft")}
    if ds.pretrain_steps and ds.compare_unpretrained:
        checked_sims["tuned, no pre-training"] = (
            stage("simulator tuning without pre-training", lambda: tune(base_model, out / "simulator-unpretrained"))[
                "model_dir"], "sft")
    if any(a.engine == "prompt" for a in arms):
        checked_sims["prompt"] = (base_model, "prompt")

    engines: dict[str, Any] = {"bm25": real}

    def engine(name: str):
        if name not in engines:
            path, style = checked_sims[name]
            engines[name] = _simulator(path, style, run)
        return engines[name]

    def check() -> dict[str, Any]:
        held = read_samples(sim_dir / "heldout.jsonl")
        final = [s for s in held if s.needed == s.golden_answers][: ds.simtune_check_queries]
        first = [s for s in held if s.needed != s.golden_answers][: ds.simtune_check_queries]
        reports = {}
        for name in checked_sims:
            result = check_simulator(engine(name), final + first, k=k)
            write_check(result, sim_dir / "check", _slug(name))
            reports[name] = result["report"]
            if name != "tuned" and not any(a.engine == name for a in arms):
                engines.pop(name).close()  # checked only: free its memory
        atomic_write_text(sim_dir / "check" / "report.md", report_markdown(reports))
        return reports

    checks = stage("simulator check", check)

    def warm() -> dict[str, Any]:
        ws = warmstart(policy, engine("tuned"), side_q, out / "warmstart", cfg=run.warmstart, topk=k,
                       max_obs_tokens=run.rollout.max_obs_tokens, max_turn_tokens=run.rollout.max_new_tokens,
                       price_per_1000=price)
        return {"model_dir": ws["model_dir"], "real_searches": ws["real_searches"], "demos": ws["demos"],
                "demo_counts": ws["demo_counts"], "search_cost": ws["search_cost"]}

    ws = stage("warm start (tuned simulator)", warm)

    summaries = {}
    for arm in arms:
        def rl(arm=arm) -> dict[str, Any]:
            arm_dir = out / f"rl-{arm.name}"
            resume = stage.upstream_reused and any((arm_dir / "checkpoints").glob("checkpoint-*"))
            if resume:
                say(f"         resuming {arm.label} from its last checkpoint")
            else:
                shutil.rmtree(arm_dir / "checkpoints", ignore_errors=True)
            curriculum = run.curriculum if arm.noise is None else NoiseSchedule.constant(arm.noise)
            rl_cfg, arm_engine = run.rl, engine(arm.engine)
            if arm.seed is not None:  # a draw of its own: the policy's sampling and the simulator's noise draws
                rl_cfg = replace(run.rl, seed=arm.seed)
                if isinstance(arm_engine, SimulatedEngine):
                    arm_engine.reseed(arm.seed)
            model, tok = load_causal_lm(ws["model_dir"])
            return train_policy(ws["model_dir"], arm_engine, rl_q, arm_dir, rollout_cfg=run.rollout, rl=rl_cfg,
                                curriculum=curriculum, resume=resume, model=model, tokenizer=tok, price_per_1000=price)

        summaries[arm.name] = stage(arm.label, rl)
    for name, e in engines.items():
        if name != "bm25":  # the real engine still serves the evaluations
            e.close()

    # greedy, in one batch (fewest decode steps); the training protocol otherwise
    eval_cfg = replace(run.rollout, temperature=0.0, batch_size=min(len(eval_q), 256))
    built = collected["searches"]

    def spent(stage_result: dict[str, Any]) -> SearchCost:
        """A stage's searches at this run's price (a folder's price may change without re-running a stage)."""
        return SearchCost.from_dict(stage_result["search_cost"], price)

    # A method's search cost: its own training's searches, and the real searches that built its simulator.
    nothing, building = SearchCost(price_per_1000=price), spent(collected)
    methods = [("warm start (tuned simulator)", "agent", ws["model_dir"], ws["real_searches"], built, "warm",
                spent(ws) + building)]
    if ds.baselines:
        methods = [("direct (no search)", "direct", base_model, 0, 0, "direct", nothing),
                   ("rag (one retrieval)", "rag", base_model, 0, 0, "rag", nothing)] + methods
    for arm in arms:
        tuned = arm.engine == "tuned"
        methods.append((arm.label, "agent", summaries[arm.name]["policy_dir"], summaries[arm.name]["real_searches"],
                        built if tuned else 0, arm.name, spent(summaries[arm.name]) + (building if tuned else nothing)))
    rows = []
    for label, method, model_path, train_real, sim_real, key, cost in methods:
        slug = _slug(label)

        def evaluate(label=label, method=method, model_path=model_path, slug=slug) -> dict[str, Any]:
            # evaluation only generates: bfloat16 weights are faster than autocasting fp32 ones
            model, tok = load_causal_lm(model_path, dtype="bfloat16" if run.rollout.bf16 else "float32")
            report, preds = run_eval(method, model, tok, eval_q, real, eval_cfg, price_per_1000=price)
            write_report(report, preds, out / "eval" / slug, title=label)
            return report.to_dict()

        # stale only when the stage that trained its policy ran: an agent's stage is named by its label, the
        # baselines' untrained model by none
        report = stage(f"evaluate: {label}", evaluate, needs=[label] if method == "agent" else [])
        rows.append({"method": label, "key": key, "eval_dir": str(out / "eval" / slug),
                     "strict_em": report["strict_em"], "cover_em": report["cover_em"], "f1": report["f1"],
                     "searches_per_question": report["searches_per_question"], "n": report["n"],
                     "no_answer_rate": report["no_answer_rate"], "training_real_searches": train_real,
                     "simulator_real_searches": sim_real, "search_cost": cost.to_dict(),
                     "per_hops": report["per_hops"]})

    from .experiment import compare, plot_learning

    comparisons = compare(rows, ds)
    figure = plot_learning(out, arms, rows, comparisons, reward=run.rl.reward)
    result = {"rows": rows, "comparisons": comparisons, "stages_seconds": stage.seconds,
              "seconds": round(sum(stage.seconds.values()), 1), "eval_questions": len(eval_q),
              "hops": list(ds.hops), "quick": quick, "simulator_check": checks,
              "simulator_labels": collected["labels"], "collected_searches": collected["searches"],
              "search_price_per_1000": price,
              # a resumed arm's stage time is its last attempt's; its steps' own times add up all attempts
              "resumed_arms": {arm.label: {"from_step": summaries[arm.name].get("resumed_from_step", 0),
                                           "step_seconds": summaries[arm.name].get("step_seconds")}
                               for arm in arms if summaries[arm.name].get("resumed_from_step")},
              "figure": str(figure) if figure else None}
    from .experiment import results_markdown

    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    atomic_write_text(out / "results.md", results_markdown(result))
    return result
