"""RL training of a search policy with TRL's GRPOTrainer and our multi-turn rollout.

TRL owns the optimisation (group advantages, clipped policy loss, KL, checkpoints); we own the rollout.
`rollout_func` returns prompt ids, completion ids, sampling log-probs and `env_mask` (0 on observation and
invalid-action tokens, which TRL multiplies into its loss mask). The curriculum's noise probability is
read from `trainer.state.global_step / max_steps` on every rollout and handed to the simulated engine.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import protocol
from ..agent.rollout import RolloutStats, Trajectory, rollout
from ..curriculum import NoiseSchedule
from ..data.qa import QAExample
from ..engines.base import NOISY, USEFUL, SearchEngine
from ..engines.ledger import SERPAPI_PRICE_PER_1000, SearchCost, metered
from ..io import append_jsonl, atomic_write_text, read_jsonl, write_jsonl
from ..llm.decoding import use_bf16
from ..metrics import check_reward, rl_reward, score_answer
from ..settings import ALGORITHMS, RLConfig, RolloutConfig
from .tracking import place_tensorboard_logs, tracker_args

def build_dataset(examples: Sequence[QAExample]):
    from datasets import Dataset

    return Dataset.from_list(
        [
            {"prompt": protocol.chat_prompt(ex.question), "question": ex.question,
             "golden_answers": list(ex.golden_answers), "id": ex.id}
            for ex in examples
        ]
    )


@dataclass
class StepLedger:
    """Per-step counts that the reward function logs and the run summary keeps."""

    totals: Counter = field(default_factory=Counter)

    def add(self, trajs: Sequence[Trajectory]) -> dict[str, float]:
        n = max(len(trajs), 1)
        searches = [s for t in trajs for s in t.searches]
        c = Counter(
            searches=len(searches),
            real_searches=sum(s.real for s in searches),
            useful=sum(s.kind == USEFUL for s in searches),
            noisy=sum(s.kind == NOISY for s in searches),
            search_errors=sum(s.error is not None for s in searches),
            invalid=sum(t.invalid_actions > 0 for t in trajs),
            answered=sum(t.answer is not None for t in trajs),
            repeated=sum(t.repeated_searches > 0 for t in trajs),
            trajectories=len(trajs),
        )
        self.totals.update(c)
        return {
            "searches_per_question": c["searches"] / n,
            "invalid_action_rate": c["invalid"] / n,
            "answer_rate": c["answered"] / n,
            "repeated_query_rate": c["repeated"] / n,
            "useful": float(c["useful"]),
            "noisy": float(c["noisy"]),
            "real_searches": float(c["real_searches"]),
            "search_errors": float(c["search_errors"]),
        }


# The cost ledger's counts that metrics.jsonl adds per step (StepLedger already writes real_searches and
# search_errors), so that a resumed run can add up what the steps it keeps cost.
STEP_COST_KEYS = ("simulated_searches", "simulated_tokens", "simulated_seconds", "cached_searches")


def cost_of_rows(rows: Sequence[dict[str, Any]], price_per_1000: float) -> SearchCost:
    """The search cost of the steps whose metrics.jsonl rows are given."""
    keys = {"real_searches": "real_searches", "failed_searches": "search_errors", **{k: k for k in STEP_COST_KEYS}}
    return SearchCost.from_dict({k: sum(r.get(key) or 0 for r in rows) for k, key in keys.items()}, price_per_1000)


class SearchRollout:
    """The `rollout_func` handed to GRPOTrainer (a callable object, so it can keep counters)."""

    def __init__(
        self,
        engine: SearchEngine,
        rollout_cfg: RolloutConfig,
        examples: Sequence[QAExample],
        schedule: NoiseSchedule | None,
        seed: int = 0,
        log_path: str | Path | None = None,
        price_per_1000: float = SERPAPI_PRICE_PER_1000,
        repeat_penalty: float = 0.0,
        reward: str = "f1",
    ) -> None:
        self.engine = metered(engine, price_per_1000)
        self.repeat_penalty, self.reward = repeat_penalty, check_reward(reward)
        self.cfg = rollout_cfg
        self.schedule = schedule if not engine.real else None
        self.by_prompt = {protocol.instruction(ex.question): ex for ex in examples}
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._seeded = False
        self.ledger = StepLedger()
        self.last: dict[str, float] = {}
        self.log_path = Path(log_path) if log_path else None
        self._twin = None
        self.last_rewards: list[float] | None = None

    @property
    def cost(self) -> SearchCost:
        """What the searches of this process's rollouts cost so far."""
        return self.engine.ledger

    def _generation_model(self, model):
        """With bf16 on a CPU, sample from a bfloat16 twin refreshed from the trained weights every step:
        autocast would re-cast every weight at every decoding step. TRL recomputes the log-probs it trains on
        from the fp32 model, so the twin only changes how fast trajectories are sampled. A LoRA policy's twin
        is a plain model with the adapters merged in: no adapter products at each decoding step."""
        device = next(model.parameters()).device
        if device.type != "cpu" or not use_bf16(self.cfg.bf16, device):
            return model, self.cfg
        lora = hasattr(model, "merge_and_unload")  # a peft model
        with torch.no_grad():
            if self._twin is None:
                twin = copy.deepcopy(model)
                self._twin = _plain_forwards((twin.merge_and_unload() if lora else twin).to(torch.bfloat16).eval())
            elif lora:  # only the adapted layers change: base weight + B A, layer by layer
                for name, m in model.get_base_model().named_modules():
                    if hasattr(m, "base_layer") and hasattr(m, "get_delta_weight"):
                        delta = sum(m.get_delta_weight(a) for a in m.active_adapters)
                        self._twin.get_submodule(name).weight.copy_(m.base_layer.weight + delta)
            else:
                for dst, src in zip(self._twin.parameters(), model.parameters()):
                    dst.copy_(src)
        return self._twin, dataclasses.replace(self.cfg, bf16=False)

    @contextmanager
    def _policy(self, trainer):
        """The policy with all its weights on this process: gathered under DeepSpeed ZeRO-3, summoned under
        FSDP (as TRL does for its own generation), merely unwrapped on one device or under DDP."""
        accelerator = trainer.accelerator
        if str(getattr(accelerator, "distributed_type", "")).split(".")[-1] not in ("DEEPSPEED", "FSDP"):
            yield accelerator.unwrap_model(trainer.model)  # DDP replicas and single devices hold every weight
            return
        from trl.models import unwrap_model_for_generation

        with unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as model:
            dist = getattr(trainer, "_dist", None)
            with dist.summon_full_params(trainer.model_wrapped, recurse=False) if dist is not None else nullcontext():
                yield model

    def noise_at(self, step: int, total: int) -> float | None:
        return None if self.schedule is None else self.schedule(step, total)

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        examples = []
        for p in prompts:
            content = p[-1]["content"] if isinstance(p, list) else p
            if content not in self.by_prompt:
                raise KeyError("a prompt the rollout does not know: was the dataset built with build_dataset()?")
            examples.append(self.by_prompt[content])
        step, total = trainer.state.global_step, trainer.state.max_steps
        p = self.noise_at(step, total)
        if not self._seeded:  # on several GPUs each process samples its own trajectories
            self.generator.manual_seed(self.seed + getattr(trainer.accelerator, "process_index", 0))
            self._seeded = True
        tokenizer = trainer.processing_class
        cost_before = self.cost.copy()
        t0 = time.perf_counter()
        with self._policy(trainer) as model:
            gen_model, cfg = self._generation_model(model)
            was_training = gen_model.training
            gen_model.eval()
            stats = RolloutStats()
            trajs = rollout(gen_model, tokenizer, examples, self.engine, cfg, noise=p, generator=self.generator,
                            stats=stats)
            if was_training:
                gen_model.train()
        scores = [score_answer(t.answer, ex.golden_answers) for t, ex in zip(trajs, examples)]
        self.last_rewards = [rl_reward(s, t.repeated_searches, self.repeat_penalty, self.reward) for t, s in zip(trajs, scores)]
        self.last = self.ledger.add(trajs)
        self.last["batch_trajectories"] = len(trajs)
        if getattr(trainer, "num_generations", None):
            self.last["informative_groups"] = informative_fraction(self.last_rewards, trainer.num_generations)
        self.last.update(noise_p=p if p is not None else 0.0, rollout_seconds=time.perf_counter() - t0,
                         search_seconds=stats.engine_seconds, policy_tokens=stats.generated_tokens)
        step_cost = self.cost - cost_before
        self.last.update({k: getattr(step_cost, k) for k in STEP_COST_KEYS})
        if self.log_path is not None:
            append_jsonl(self.log_path, ({"step": step, "id": ex.id, "f1": s.f1, "reward": r, **t.to_dict()}
                                         for t, ex, s, r in zip(trajs, examples, scores, self.last_rewards)))
        return {
            "prompt_ids": [t.prompt_ids for t in trajs],
            "completion_ids": [t.completion_ids for t in trajs],
            "logprobs": [t.logprobs for t in trajs],
            "env_mask": [t.env_mask for t in trajs],
            "zs_reward": list(self.last_rewards),
            "zs_f1": [s.f1 for s in scores],
            "zs_strict_em": [s.strict_em for s in scores],
            "zs_cover_em": [s.cover_em for s in scores],
        }


def _plain_forwards(twin):
    """accelerate (autocast, fp32 outputs) and the trainer (fused LM head) replace `forward` on the model
    instance with closures over the ORIGINAL model; a deep copy keeps them, so the twin would run the fp32
    weights under autocast and never its own. The plain class forwards are what we want."""
    for m in twin.modules():
        m.__dict__.pop("forward", None)
    return twin


def informative_fraction(rewards: Sequence[float], group: int) -> float:
    """Share of groups (consecutive `group` rewards) whose rewards are not all equal: the groups with a
    non-zero advantage, i.e. the ones an update can learn from."""
    groups = [rewards[i : i + group] for i in range(0, len(rewards), group)]
    return sum(len(set(g)) > 1 for g in groups) / max(len(groups), 1)


def f1_reward(prompts, completions, zs_reward, zs_f1, zs_strict_em, zs_cover_em, log_metric=None,
              **kwargs) -> list[float]:
    """Reward = token F1 of the policy's own answer (`rl.reward: em`: strict EM; 0 without an answer), less
    `rl.repeat_penalty` for an episode that repeated a search; F1 and the EM variants are logged."""
    if log_metric is not None:
        n = max(len(zs_f1), 1)
        log_metric("f1", sum(zs_f1) / n)
        log_metric("strict_em", sum(zs_strict_em) / n)
        log_metric("cover_em", sum(zs_cover_em) / n)
    return list(zs_reward)


def micro_batches(batch: int, most: int) -> int:
    """How many equal micro-batches of at most `most` rows a step of `batch` rows is split into."""
    return next(k for k in range(1, batch + 1) if batch % k == 0 and batch // k <= most)


def make_grpo_config(rl: RLConfig, out_dir: str | Path, temperature: float, max_completion_length: int):
    from trl import GRPOConfig

    preset = ALGORITHMS[rl.algorithm]
    batch = rl.questions_per_step * rl.num_generations
    accumulate = micro_batches(batch, rl.micro_batch_size)  # one rollout, one optimizer step, several passes
    return GRPOConfig(
        output_dir=str(out_dir),
        use_cpu=not torch.cuda.is_available(),
        bf16=use_bf16(rl.bf16),
        max_steps=rl.steps,
        per_device_train_batch_size=batch // accumulate,
        gradient_accumulation_steps=accumulate,
        num_generations=rl.num_generations,
        learning_rate=rl.learning_rate,
        lr_scheduler_type="constant_with_warmup" if rl.warmup_ratio else "constant",
        warmup_steps=rl.warmup_ratio,  # transformers 5 reads a float below 1 as a share of the steps
        weight_decay=rl.weight_decay,
        max_grad_norm=rl.max_grad_norm,
        beta=rl.beta,
        epsilon=rl.epsilon,
        temperature=max(temperature, 1e-3),  # log-probs of the update use the sampling temperature
        max_completion_length=max_completion_length,
        gradient_checkpointing=rl.gradient_checkpointing,
        logging_steps=1,
        save_strategy="steps" if rl.save_steps else "no",
        save_steps=rl.save_steps or rl.steps,
        save_total_limit=1,  # a resumed run needs the last checkpoint only (each holds the optimizer state)
        **tracker_args(rl.report_to),
        seed=rl.seed,
        data_seed=rl.seed,
        shuffle_dataset=True,
        log_completions=False,
        disable_tqdm=True,
        **preset,
    )


def keep_rows_until(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Keep the JSON lines of `path` whose "step" is <= last_step; drop the rest and any unreadable line.
    Returns the rows kept (none when there is no file)."""
    if not path.exists():
        return []
    kept = [row for row in read_jsonl(path, skip_broken=True)
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= last_step]
    write_jsonl(path, kept)
    return kept


class _MetricsLog:
    """Writes one JSON line per optimizer step (TRL's logs + our rollout ledger) to metrics.jsonl."""

    def __init__(self, path: Path, rollout_fn: SearchRollout) -> None:
        from transformers import TrainerCallback

        self.path, self.rollout_fn = path, rollout_fn
        outer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                outer.t0 = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kw):
                if not logs or "loss" not in logs or not state.is_world_process_zero:  # one writer on several GPUs
                    return
                row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
                row.update(outer.rollout_fn.last)
                row["seconds"] = time.perf_counter() - getattr(outer, "t0", time.perf_counter())
                append_jsonl(outer.path, [row])

        self.callback = Callback()


def train_policy(
    policy: str,
    engine: SearchEngine,
    examples: Sequence[QAExample],
    out_dir: str | Path,
    *,
    rollout_cfg: RolloutConfig,
    rl: RLConfig,
    curriculum: NoiseSchedule | None = None,
    resume: bool = False,
    model=None,
    tokenizer=None,
    price_per_1000: float = SERPAPI_PRICE_PER_1000,
) -> dict[str, Any]:
    """RL-train `policy` against `engine`; write the policy, metrics.jsonl, summary.json and plots to out_dir.

    The summary's `search_cost` prices the run's real searches at `price_per_1000` USD per 1,000."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from transformers import set_seed

    from ..llm.local import load_causal_lm
    from .plots import plot_training
    from .freeze import lora_config, train_top_layers
    from .trl_compat import compact_lm_head_on_cpu, search_grpo_trainer_class

    compact_lm_head_on_cpu()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not examples:
        raise ValueError("no training questions")
    set_seed(rl.seed)
    if model is None:
        model, tokenizer = load_causal_lm(policy)
    model.train()
    n_trainable = train_top_layers(model, rl.trainable_layers)
    curriculum = curriculum or NoiseSchedule()
    ckpt_dir = out / "checkpoints"
    last_ckpt = None
    if resume:
        from transformers.trainer_utils import get_last_checkpoint

        last_ckpt = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.exists() else None
        if last_ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {ckpt_dir}")
    metrics_path = out / "metrics.jsonl"
    cost_before = SearchCost(price_per_1000=price_per_1000)  # of the steps a resumed run keeps
    done = 0  # steps kept from an earlier run
    if not resume:
        metrics_path.unlink(missing_ok=True)
        (out / "rollouts.jsonl").unlink(missing_ok=True)
    else:
        # Steps after the checkpoint are run again: drop their rows (and a line cut by the kill).
        done = int(Path(last_ckpt).name.rsplit("-", 1)[-1])
        kept = keep_rows_until(metrics_path, done)  # "step" = the step the row reports, 1-based
        keep_rows_until(out / "rollouts.jsonl", done - 1)  # "step" = global_step when the rollout ran
        cost_before = cost_of_rows(kept, price_per_1000)
    rollout_fn = SearchRollout(engine, rollout_cfg, examples, curriculum, seed=rl.seed,
                               log_path=out / "rollouts.jsonl", price_per_1000=price_per_1000,
                               repeat_penalty=rl.repeat_penalty, reward=rl.reward)
    log = _MetricsLog(metrics_path, rollout_fn)
    max_len = (rollout_cfg.max_turns + 1) * (rollout_cfg.max_new_tokens + rollout_cfg.max_obs_tokens + 64)
    args = make_grpo_config(rl, ckpt_dir, rollout_cfg.temperature, max_len)
    peft_config = lora_config(rl.lora_r, rl.lora_alpha)
    trainer = search_grpo_trainer_class()(
        model=model,
        peft_config=peft_config,
        reward_funcs=[f1_reward],
        args=args,
        train_dataset=build_dataset(examples),
        processing_class=tokenizer,
        rollout_func=rollout_fn,
        callbacks=[log.callback],
        skip_uninformative=rl.skip_uninformative,
    )
    if peft_config is not None:
        n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    place_tensorboard_logs(trainer, out, fresh=not resume)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last_ckpt)
    seconds = time.perf_counter() - t0
    policy_dir = out / "policy"
    if peft_config is None:
        train_top_layers(model, 0)
        trainer.save_model(str(policy_dir))
    else:  # the adapters merged in: a plain model, as every other command expects
        trainer.model.merge_and_unload().save_pretrained(str(policy_dir))
    tokenizer.save_pretrained(str(policy_dir))
    cost = cost_before + rollout_fn.cost
    summary = {
        "policy": str(policy),
        "engine": engine.describe(),
        "steps": trainer.state.global_step,
        "seconds": seconds,  # of this process
        "resumed_from_step": done,
        # every step's own time, those kept from before a resume included (no set-up or checkpoint saving)
        "step_seconds": round(sum(r.get("seconds") or 0 for r in read_jsonl(metrics_path, skip_broken=True)), 1),
        "rollout": asdict(rollout_cfg),
        "rl": asdict(rl),
        "curriculum": asdict(curriculum) if not engine.real else None,
        "searches": dict(rollout_fn.ledger.totals),  # of this process's steps (not those before a resume)
        "real_searches": cost.real_searches,
        "search_cost": cost.to_dict(),
        "trainable_parameters": n_trainable,
        "policy_dir": str(policy_dir),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    plot_training(metrics_path, out, reward=rl.reward)
    return summary
