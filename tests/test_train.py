import json

import pytest
import torch

from zerosearch import protocol
from zerosearch.agent.env import observation_ids
from zerosearch.agent.rollout import prompt_ids, rollout
from zerosearch.settings import RolloutConfig
from zerosearch.curriculum import NoiseSchedule
from zerosearch.data.qa import QAExample
from zerosearch.engines.simulated import SimulatedEngine
from zerosearch.curriculum import NoiseSchedule
from zerosearch.settings import RLConfig
from zerosearch.train.grpo import SearchRollout, train_policy
from zerosearch.train.sft import SFTConfig, TokenizedExample, sft_train

from .conftest import RecordingEngine
from .test_simulated import EchoGenerator


def _questions(n):
    return [QAExample(str(i), f"what is the capital of land{i}", ["paris"]) for i in range(n)]


def test_grpo_run_writes_policy_metrics_and_plots(tiny_model, tiny_tokenizer, tmp_path):
    engine = RecordingEngine()
    summary = train_policy("tiny", engine, _questions(8), tmp_path, rollout_cfg=RolloutConfig(max_turns=1, max_new_tokens=8),
                           rl=RLConfig(steps=2, questions_per_step=2, num_generations=2), model=tiny_model,
                           tokenizer=tiny_tokenizer)
    assert summary["steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "f1", "strict_em", "cover_em", "searches_per_question", "invalid_action_rate", "noise_p",
                "useful", "noisy", "seconds", "simulated_searches", "simulated_tokens", "simulated_seconds"):
        assert key in rows[0]
    for name in ("reward.png", "searches.png", "noise.png", "summary.json", "policy/config.json"):
        assert (tmp_path / name).exists()
    assert summary["real_searches"] == len(engine.requests)
    cost = json.loads((tmp_path / "summary.json").read_text())["search_cost"]
    assert cost["real_searches"] == len(engine.requests) == sum(r["real_searches"] for r in rows)
    assert cost["real_cost_usd"] == pytest.approx(len(engine.requests) * 586.7 / 64 / 1000, abs=1e-4)
    assert cost["simulated_searches"] == 0 and cost["summary"].startswith(f"{len(engine.requests)} real search")


class _Trainer:
    """The parts of a GRPOTrainer that the rollout reads."""

    def __init__(self, model, tok, step, max_steps):
        self.model, self.processing_class = model, tok
        self.state = type("S", (), {"global_step": step, "max_steps": max_steps})()
        self.accelerator = type("A", (), {"unwrap_model": staticmethod(lambda m: m)})()


def test_curriculum_noise_comes_from_the_trainer_step(tiny_model, tiny_tokenizer):
    from .scripted import ScriptedLM

    qs = _questions(2)
    scripts = {f"land{i}": ["<search> q </search>", "<answer> paris </answer>"] for i in range(2)}
    model = ScriptedLM(tiny_tokenizer, scripts)
    gen = EchoGenerator()
    sim = SimulatedEngine(gen, topk=2)
    seen = []
    original = sim.search
    sim.search = lambda reqs, topk=None: seen.append([r.noise for r in reqs]) or original(reqs, topk)
    fn = SearchRollout(sim, RolloutConfig(max_turns=1, max_new_tokens=16, temperature=0), qs,
                       NoiseSchedule(0.0, 0.75))
    prompts = [protocol.chat_prompt(q.question) for q in qs]
    for step in (0, 50, 100):
        out = fn(prompts, _Trainer(model, tiny_tokenizer, step, 100))
        assert set(out) >= {"prompt_ids", "completion_ids", "logprobs", "env_mask"}
        assert len(out["completion_ids"]) == 2 and out["zs_f1"] == [1.0, 1.0]
    assert [s[0] for s in seen] == pytest.approx([0.0, 0.25, 0.75])
    # each step's simulated searches and simulator seconds go to that step's metrics; the ledger keeps the total
    assert fn.last["simulated_searches"] == 2 and fn.last["simulated_seconds"] > 0 and fn.last["real_searches"] == 0
    assert fn.cost.simulated_searches == 6 and fn.cost.real_searches == 0
    real = SearchRollout(RecordingEngine(), RolloutConfig(), qs, NoiseSchedule(0.0, 0.75))
    assert real.noise_at(50, 100) is None  # real engines get no noise


def test_resume_continues_the_step_count_and_schedule(tiny_tokenizer, tmp_path):
    from zerosearch.llm.tiny import build_tiny_model

    sim = SimulatedEngine(EchoGenerator(), topk=2)
    kw = dict(rollout_cfg=RolloutConfig(max_turns=1, max_new_tokens=6), curriculum=NoiseSchedule(0.0, 0.5),
              tokenizer=tiny_tokenizer)
    train_policy("tiny", sim, _questions(8), tmp_path, rl=RLConfig(steps=2, questions_per_step=2, num_generations=2,
                 save_steps=1), model=build_tiny_model(tiny_tokenizer), **kw)
    assert (tmp_path / "checkpoints" / "checkpoint-2").exists()
    # what steps 1-2 searched (this tiny policy does not search: the rows are made to say it did)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({**json.loads(line), "simulated_searches": 5, "simulated_tokens": 40,
                                           "real_searches": 1.0}) + "\n" for line in metrics.read_text().splitlines()))
    # a longer run resumed from the checkpoint of step 2
    summary = train_policy("tiny", sim, _questions(8), tmp_path, rl=RLConfig(steps=4, questions_per_step=2,
                           num_generations=2, save_steps=1), resume=True, model=build_tiny_model(tiny_tokenizer), **kw)
    assert summary["steps"] == 4
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    sched = NoiseSchedule(0.0, 0.5)
    assert rows[2]["noise_p"] == pytest.approx(sched(2, 4)) and rows[3]["noise_p"] == pytest.approx(sched(3, 4))
    # the cost of the resumed run covers the steps before the checkpoint too
    cost = summary["search_cost"]
    assert cost["simulated_searches"] == 10 + rows[2]["simulated_searches"] + rows[3]["simulated_searches"]
    assert cost["simulated_tokens"] == 80 and cost["real_searches"] == summary["real_searches"] == 2


def test_run_killed_after_a_checkpoint_resumes_with_the_same_steps_and_noise_schedule(tmp_path):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from . import killable_training

    root = Path(__file__).resolve().parents[1]
    # killed while step 4 runs: step 3 is logged but its checkpoint (every 2 steps) was never written
    proc = subprocess.Popen([sys.executable, "-m", "tests.killable_training", str(tmp_path), "--stall-at", "3"],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "stalled").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never reached step 4"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait(10)
    run = tmp_path / "run"
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]

    summary = killable_training.run(tmp_path, resume=True)
    assert summary["steps"] == killable_training.STEPS
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # step 3 was run again, and logged once
    # the time of a resumed run counts the steps it kept from the killed one
    assert summary["resumed_from_step"] == 2
    assert summary["step_seconds"] == pytest.approx(sum(r["seconds"] for r in rows), abs=0.1)
    assert summary["step_seconds"] > sum(r["seconds"] for r in rows[2:]) > 0
    sched = NoiseSchedule(0.0, 0.5)
    assert [r["noise_p"] for r in rows] == pytest.approx([sched(s, 4) for s in range(4)])
    rollout_steps = [json.loads(x)["step"] for x in (run / "rollouts.jsonl").read_text().splitlines()]
    assert sorted(set(rollout_steps)) == [0, 1, 2, 3] and rollout_steps == sorted(rollout_steps)


def test_resume_drops_rows_after_the_checkpoint_and_a_cut_line(tmp_path):
    from zerosearch.train.grpo import keep_rows_until

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    keep_rows_until(path, 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_resume_without_checkpoint_is_a_clear_error(tiny_model, tiny_tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_policy("tiny", RecordingEngine(), _questions(4), tmp_path, rollout_cfg=RolloutConfig(),
                     rl=RLConfig(steps=1), resume=True, model=tiny_model, tokenizer=tiny_tokenizer)


def _demo(tok, q, search: bool) -> TokenizedExample:
    ids = prompt_ids(tok, q)
    mask = [0] * len(ids)
    if search:
        for text, env in (("<search> capital </search>", False), ("the answer is paris", True),
                          ("<answer> paris </answer>", False)):
            seg = observation_ids(tok, text, 64) if env else tok(text, add_special_tokens=False).input_ids
            ids, mask = ids + seg, mask + [0 if env else 1] * len(seg)
    else:
        seg = tok("<answer> london </answer>", add_special_tokens=False).input_ids
        ids, mask = ids + seg, mask + [1] * len(seg)
    return TokenizedExample(ids, mask)


def _success_rate(model, tok, qs, engine, seed):
    trajs = rollout(model, tok, qs, engine, RolloutConfig(max_turns=1, max_new_tokens=12, temperature=1.0),
                    generator=torch.Generator().manual_seed(seed))
    return sum(t.answer == "paris" for t in trajs) / len(trajs)


@pytest.mark.parametrize("lora_r", [0, 8])
def test_grpo_wiring_learns_a_trivial_search_task(tmp_path, lora_r):
    """A real learning test: a policy that half the time answers without searching (wrongly) learns, from
    the F1 reward alone, to search first and answer from the documents; with LoRA adapters (at a larger
    learning rate: 1e-2 and more made this tiny model unlearn the format) too, merged into the saved policy."""
    from zerosearch.llm.tiny import build_tiny_model, build_tiny_tokenizer

    torch.manual_seed(0)
    qs = _questions(16)
    # a vocabulary of this task's words keeps sequences short enough to learn in seconds
    tok = build_tiny_tokenizer([q.question for q in qs] * 4 + [
        "<search> capital </search> the answer is paris <answer> paris </answer> <answer> london </answer>"] * 20,
        vocab_size=400)
    model = build_tiny_model(tok, seed=0)
    demos = [_demo(tok, q.question, search=i % 2 == 0) for i, q in enumerate(qs)]
    sft_train(model, tok, demos, tmp_path / "ws", SFTConfig(steps=60, batch_size=16, learning_rate=1e-2, warmup_ratio=0.0))
    engine = RecordingEngine("the answer is paris")
    eval_qs = qs * 4
    before = _success_rate(model, tok, eval_qs, engine, seed=1)
    assert 0.15 <= before <= 0.85, f"the warm start should leave room to learn, got {before}"
    searched_before = len(engine.requests)
    summary = train_policy("tiny", engine, qs, tmp_path / "rl", rollout_cfg=RolloutConfig(max_turns=1,
                           max_new_tokens=12, temperature=1.0), rl=RLConfig(steps=15, questions_per_step=4,
                           num_generations=4, learning_rate=5e-3 if lora_r else 2e-3, seed=0, lora_r=lora_r),
                           model=model, tokenizer=tok, price_per_1000=1000.0)
    # every search of the run reached the (real) engine and is priced: $1 each here
    trained = len(engine.requests) - searched_before
    rows = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert trained > 0 and summary["search_cost"]["real_searches"] == trained == sum(r["real_searches"] for r in rows)
    assert summary["search_cost"]["real_cost_usd"] == pytest.approx(trained)
    if lora_r:  # the saved policy is a plain model with the adapters merged in
        from zerosearch.llm.local import load_causal_lm

        assert not (tmp_path / "rl" / "policy" / "adapter_config.json").exists()
        assert summary["trainable_parameters"] < sum(p.numel() for p in model.parameters()) / 2
        model, _ = load_causal_lm(str(tmp_path / "rl" / "policy"))
    after = _success_rate(model.eval(), tok, eval_qs, engine, seed=1)
    print("success rate before", before, "after", after)
    assert after >= before + 0.25, (before, after)


@pytest.fixture
def native_bf16(monkeypatch):
    """The bf16 paths as on a CPU with AVX512-BF16 / AMX, whatever this one has (tiny models: fast either way)."""
    monkeypatch.setattr("zerosearch.llm.decoding.CPU_BF16", True)


def test_bf16_falls_back_to_float32_on_a_cpu_without_native_bfloat16(tiny_model, tiny_tokenizer, tmp_path,
                                                                    monkeypatch, caplog):
    import zerosearch.llm.decoding as decoding
    from zerosearch.llm.local import load_causal_lm
    from zerosearch.train.grpo import make_grpo_config

    monkeypatch.setattr(decoding, "CPU_BF16", False)
    monkeypatch.setattr(decoding, "_warned_bf16", False)
    fn = SearchRollout(RecordingEngine(), RolloutConfig(max_turns=1, max_new_tokens=4, bf16=True), _questions(1), None)
    model, cfg = fn._generation_model(tiny_model)
    assert model is tiny_model and decoding.KVBatch(model, 0, cfg.bf16).bf16 is False  # no twin, no autocast
    assert make_grpo_config(RLConfig(bf16=True), tmp_path, 1.0, 64).bf16 is False
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    loaded, _ = load_causal_lm(str(tmp_path / "m"), dtype="bfloat16")
    assert next(loaded.parameters()).dtype == torch.float32
    assert sum("no native bfloat16" in r.getMessage() for r in caplog.records) == 1  # said once
    monkeypatch.setattr(decoding, "CPU_BF16", True)
    assert decoding.use_bf16(True) and not decoding.use_bf16(False) and decoding.use_bf16(True, "cuda")


def test_bf16_sampling_twin_follows_the_trained_weights(tiny_model, tiny_tokenizer, native_bf16):
    qs = _questions(2)
    fn = SearchRollout(RecordingEngine(), RolloutConfig(max_turns=1, max_new_tokens=4, bf16=True), qs, None)
    twin, cfg = fn._generation_model(tiny_model)
    assert next(twin.parameters()).dtype == torch.bfloat16 and cfg.bf16 is False
    with torch.no_grad():
        next(tiny_model.parameters()).add_(1.0)
    twin2, _ = fn._generation_model(tiny_model)
    assert twin2 is twin
    assert torch.allclose(next(twin.parameters()).float(), next(tiny_model.parameters()), atol=0.05)
    prompts = [protocol.chat_prompt(q.question) for q in qs]
    out = fn(prompts, _Trainer(tiny_model, tiny_tokenizer, 0, 1))
    assert len(out["completion_ids"]) == 2
    assert next(tiny_model.parameters()).dtype == torch.float32  # the trained model itself is untouched


def test_bf16_twin_of_a_lora_policy_is_a_plain_model_with_the_adapters_merged(tiny_model, tiny_tokenizer, native_bf16):
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # adapters that change the outputs (B starts at zero)
    fn = SearchRollout(RecordingEngine(), RolloutConfig(max_turns=1, max_new_tokens=4, bf16=True), _questions(1), None)
    twin, _ = fn._generation_model(policy)
    assert not any("lora" in name for name, _ in twin.named_parameters())
    assert next(twin.parameters()).dtype == torch.bfloat16
    ids = torch.tensor([prompt_ids(tiny_tokenizer, "what is the capital of land0")])
    with torch.no_grad():
        want, got, base = policy(ids).logits, twin(ids).logits.float(), policy.get_base_model()
        with policy.disable_adapter():
            plain = policy(ids).logits
    assert not torch.allclose(want, plain, atol=0.1)  # the adapters matter here ...
    assert torch.allclose(got, want, atol=0.1)  # ... and the twin samples with them
    assert any("lora" in name for name, _ in base.named_parameters())  # the policy itself keeps its adapters
    with torch.no_grad():  # a training step later: the same twin, with the new adapters merged in
        for name, p in policy.named_parameters():
            if "lora_A" in name:
                p.mul_(-1.0)
        before, want = want, policy(ids).logits
    assert not torch.allclose(want, before, atol=0.1)
    twin2, _ = fn._generation_model(policy)
    with torch.no_grad():
        got = twin2(ids).logits.float()
    assert twin2 is twin and torch.allclose(got, want, atol=0.1)


def test_bf16_twin_runs_its_own_weights_when_the_trainer_wrapped_forward(tiny_model, tiny_tokenizer, native_bf16):
    """accelerate and the trainer replace `forward` on the model instance; the twin must not inherit those
    closures, which would run the fp32 model under autocast instead of the twin's bfloat16 weights."""
    calls = []
    original = tiny_model.forward

    def wrapped(*a, **kw):
        calls.append(1)
        return original(*a, **kw)

    tiny_model.forward = wrapped
    fn = SearchRollout(RecordingEngine(), RolloutConfig(max_turns=1, max_new_tokens=4, bf16=True), _questions(1), None)
    twin, _ = fn._generation_model(tiny_model)
    with torch.no_grad():
        logits = twin(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert not calls and logits.dtype == torch.bfloat16


@pytest.mark.parametrize("algorithm", ["grpo", "dapo"])
def test_leaving_zero_advantage_rows_out_of_the_update_keeps_the_gradient(tiny_tokenizer, tmp_path, algorithm):
    """Dynamic sampling without re-sampling: the rows of groups with equal rewards are dropped from the update
    (and the padding only they needed), and the loss is rescaled, so the gradient is the one of all rows."""
    from zerosearch.llm.tiny import build_tiny_model
    from zerosearch.train.grpo import build_dataset, f1_reward, make_grpo_config
    from zerosearch.train.trl_compat import search_grpo_trainer_class

    qs = _questions(4)
    rl = RLConfig(algorithm=algorithm, steps=1, questions_per_step=2, num_generations=2)
    model = build_tiny_model(tiny_tokenizer, seed=0)
    fn = SearchRollout(RecordingEngine(), RolloutConfig(max_turns=1, max_new_tokens=4), qs, None)
    trainer = search_grpo_trainer_class()(
        model=model, reward_funcs=[f1_reward], args=make_grpo_config(rl, tmp_path, 1.0, 64),
        train_dataset=build_dataset(qs), processing_class=tiny_tokenizer, rollout_func=fn, skip_uninformative=True)
    g = torch.Generator().manual_seed(0)
    b, tp, tc, vocab = 6, 7, 9, tiny_tokenizer.vocab_size
    prompt_mask = torch.ones(b, tp, dtype=torch.long)
    prompt_mask[:, :2] = 0  # left padding in every row
    prompt_mask[1, :] = 1  # ...except row 1, an uninformative row
    completion_mask = torch.ones(b, tc, dtype=torch.long)
    completion_mask[[0, 2, 3, 4], 5:] = 0  # right padding everywhere but in rows 1 and 5 (uninformative)
    inputs = {
        "prompt_ids": torch.randint(5, vocab, (b, tp), generator=g), "prompt_mask": prompt_mask,
        "completion_ids": torch.randint(5, vocab, (b, tc), generator=g), "completion_mask": completion_mask,
        "tool_mask": (torch.rand(b, tc, generator=g) > 0.3).long(),
        "advantages": torch.tensor([0.7, 0.0, -0.7, 1.2, -1.2, 0.0]),
        "num_items_in_batch": completion_mask.sum().float(),
    }

    shapes = []
    model.get_input_embeddings().register_forward_hook(lambda m, a, o: shapes.append(tuple(a[0].shape)))

    def grads(skip):
        trainer.skip_uninformative = skip
        model.zero_grad()
        trainer._compute_loss(model, dict(inputs)).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    full, skipped = grads(False), grads(True)
    assert shapes == [(6, tp + tc), (4, tp - 2 + 5)]  # 4 informative rows, padding only rows 1 and 5 needed cut
    assert len(full) == len(skipped)
    for a, s in zip(full, skipped):
        torch.testing.assert_close(s, a, rtol=1e-4, atol=1e-6)


def test_informative_rows_keep_one_row_when_no_group_has_signal():
    from zerosearch.train.grpo import informative_fraction
    from zerosearch.train.trl_compat import informative_rows

    inputs = {"prompt_ids": torch.ones(2, 3, dtype=torch.long), "prompt_mask": torch.ones(2, 3, dtype=torch.long),
              "completion_ids": torch.ones(2, 4, dtype=torch.long), "completion_mask": torch.ones(2, 4, dtype=torch.long),
              "advantages": torch.zeros(2)}
    out, scale = informative_rows(inputs, mean_over_rows=True)
    assert out["completion_ids"].shape[0] == 1 and scale == 0.0
    assert informative_fraction([1.0, 1.0, 0.0, 1.0, 0.5, 0.5], 2) == pytest.approx(1 / 3)


def _tensorboard_scalars(folder) -> dict[str, list[int]]:
    """Tag -> steps of the scalars in a folder's event files (TFRecord framing: length, crc, event, crc)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    steps: dict[str, list[int]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    steps.setdefault(v.tag, []).append(event.step)
    return steps


def test_report_to_tensorboard_writes_the_sft_losses_in_the_run_folder(tiny_model, tiny_tokenizer, tmp_path):
    demos = [_demo(tiny_tokenizer, q.question, search=True) for q in _questions(4)]
    cfg = SFTConfig(steps=2, batch_size=2, report_to="tensorboard")
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events.out.tfevents.0.earlier-run").write_bytes(b"")
    sft_train(tiny_model, tiny_tokenizer, demos, tmp_path, cfg)
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and "earlier-run" not in events[0].name  # a fresh run does not mix in old curves
    assert _tensorboard_scalars(tmp_path / "tensorboard")["train/loss"] == [1, 2]
    assert not list((tmp_path / "checkpoints").rglob("events.out.tfevents.*"))


def test_report_to_tensorboard_writes_the_grpo_metrics_next_to_metrics_jsonl(tiny_model, tiny_tokenizer, tmp_path):
    train_policy("tiny", RecordingEngine(), _questions(4), tmp_path, rollout_cfg=RolloutConfig(max_turns=1, max_new_tokens=8),
                 rl=RLConfig(steps=1, questions_per_step=2, num_generations=2, report_to="tensorboard"),
                 model=tiny_model, tokenizer=tiny_tokenizer)
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars["train/loss"] == scalars["train/reward"] == scalars["train/f1"] == [1]
    assert (tmp_path / "metrics.jsonl").exists()


def test_unknown_report_to_is_a_clear_error():
    from zerosearch.settings import run_config_from_dict

    for make in (lambda: RLConfig(report_to="mlflow"), lambda: SFTConfig(report_to="tensorbord")):
        with pytest.raises(ValueError, match="report_to must be one of none, tensorboard, wandb, trackio"):
            make()
    with pytest.raises(ValueError, match="warmstart.sft: report_to must be one of"):
        run_config_from_dict({"warmstart": {"sft": {"report_to": "all"}}})
    assert run_config_from_dict({"rl": {"report_to": "wandb"}}).rl.report_to == "wandb"


def test_repeat_penalty_lowers_the_reward_of_an_episode_that_searched_a_query_twice(tiny_model, tiny_tokenizer):
    from zerosearch.train.grpo import f1_reward

    from .scripted import ScriptedLM

    qs = _questions(2)
    scripts = {"land0": ["<search> Capital q </search>", "<search> capital  Q </search>", "<answer> paris </answer>"],
               "land1": ["<search> q </search>", "<search> r </search>", "<answer> paris </answer>"]}
    model = ScriptedLM(tiny_tokenizer, scripts)
    prompts = [protocol.chat_prompt(q.question) for q in qs]
    cfg = RolloutConfig(max_turns=2, max_new_tokens=16, temperature=0)
    outs = {}
    for penalty in (0.0, 0.25):
        fn = SearchRollout(RecordingEngine(), cfg, qs, None, repeat_penalty=penalty)
        outs[penalty] = fn(prompts, _Trainer(model, tiny_tokenizer, 0, 1))
        assert fn.last["repeated_query_rate"] == 0.5  # the same query, case and spacing aside
    assert outs[0.0]["zs_f1"] == outs[0.25]["zs_f1"] == [1.0, 1.0]
    assert outs[0.0]["zs_reward"] == [1.0, 1.0]
    assert outs[0.25]["zs_reward"] == [0.75, 1.0]
    assert f1_reward(None, None, **{k: v for k, v in outs[0.25].items() if k.startswith("zs_")}) == [0.75, 1.0]
    with pytest.raises(ValueError, match="repeat_penalty"):
        RLConfig(repeat_penalty=1.5)


def test_em_reward_pays_only_the_exact_answer_where_f1_pays_a_word_too_many_in_part(tiny_model, tiny_tokenizer):
    from zerosearch.settings import run_config_from_dict

    from .scripted import ScriptedLM

    qs = _questions(2)
    scripts = {"land0": ["<answer> paris </answer>"], "land1": ["<answer> paris city </answer>"]}
    model = ScriptedLM(tiny_tokenizer, scripts)
    prompts = [protocol.chat_prompt(q.question) for q in qs]
    cfg = RolloutConfig(max_turns=2, max_new_tokens=16, temperature=0)
    rewards = {r: SearchRollout(RecordingEngine(), cfg, qs, None, reward=r)(prompts, _Trainer(model, tiny_tokenizer, 0, 1))
               for r in ("f1", "em")}
    assert rewards["f1"]["zs_reward"] == [1.0, pytest.approx(2 / 3)]
    assert rewards["em"]["zs_reward"] == [1.0, 0.0]
    assert rewards["em"]["zs_f1"] == rewards["f1"]["zs_f1"]  # F1 is still logged
    assert run_config_from_dict({"rl": {"reward": "em"}}).rl.reward == "em"
    with pytest.raises(ValueError, match="unknown reward 'cover_em'; choose one of f1, em"):
        RLConfig(reward="cover_em")


def test_micro_batches_make_one_rollout_and_one_optimizer_step_with_the_gradient_of_one_pass(tiny_tokenizer, tmp_path):
    """A step of 8 trajectories in micro-batches of at most 3 rows (4 passes of 2) is one rollout of all 8 and
    one optimizer step whose gradient is the one of a single pass over the 8 rows."""
    from transformers import TrainerCallback

    from zerosearch.llm.tiny import build_tiny_model
    from zerosearch.train.grpo import build_dataset, f1_reward, make_grpo_config, micro_batches
    from zerosearch.train.trl_compat import search_grpo_trainer_class

    assert [micro_batches(16, m) for m in (16, 8, 5, 1, 100)] == [1, 2, 4, 16, 1]
    assert micro_batches(12, 16) == 1 and micro_batches(12, 5) == 3
    with pytest.raises(ValueError, match="micro_batch_size"):
        RLConfig(micro_batch_size=0)

    class Rewarded(SearchRollout):
        """Rewards that differ within every group, so that every row is in the update."""

        def __call__(self, prompts, trainer):
            self.sizes.append(len(prompts))
            out = super().__call__(prompts, trainer)
            self.last_rewards = out["zs_reward"] = [(i * 0.37) % 1.0 for i in range(len(prompts))]
            return out

    def step_gradient(micro):
        torch.manual_seed(0)
        model = build_tiny_model(tiny_tokenizer, seed=0)
        qs = _questions(8)
        rl = RLConfig(steps=1, questions_per_step=4, num_generations=2, micro_batch_size=micro, max_grad_norm=1e9)
        fn = Rewarded(RecordingEngine(), RolloutConfig(max_turns=1, max_new_tokens=6, temperature=1.0), qs, None)
        fn.sizes = []
        grads = []

        class Grab(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, **kw):
                grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))

        args = make_grpo_config(rl, tmp_path / str(micro), 1.0, 64)
        assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == {8: (8, 1), 3: (2, 4)}[micro]
        trainer = search_grpo_trainer_class()(
            model=model, reward_funcs=[f1_reward], args=args, train_dataset=build_dataset(qs),
            processing_class=tiny_tokenizer, rollout_func=fn, callbacks=[Grab()], skip_uninformative=True)
        trainer.train()
        assert fn.sizes == [8] and trainer.state.global_step == 1 and len(grads) == 1
        return grads[0]

    one, split = step_gradient(8), step_gradient(3)
    assert one.abs().sum() > 0
    torch.testing.assert_close(split, one, rtol=1e-3, atol=1e-6)
