"""How verl finds our pieces: the agent-loop YAML, the manager, the reward function, the parquet rows and
the launch scripts' Hydra overrides, each through verl's own loading code."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import hydra
import numpy as np
import pytest
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
from verl.protocol import DataProto

from zerosearch.data.world import build_world
from zerosearch.integrations.verl import AGENT_NAME
from zerosearch.integrations.verl.agent_loop import ZeroSearchAgentLoop
from zerosearch.integrations.verl.export import verl_rows, write_parquet
from zerosearch.integrations.verl.manager import ZeroSearchAgentLoopManager
from zerosearch.integrations.verl.manager_keys import STEP_KEY, TOTAL_KEY, VALIDATE_KEY

from .conftest import ScriptedServer

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("grpo", "ppo", "reinforce_pp")


def dry_run(script: str, **env) -> tuple[str, list[str]]:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "verl" / f"{script}.sh"), "trainer.save_freq=7"],
                         env={**os.environ, "DRY_RUN": "1", **env}, capture_output=True, text=True, check=True).stdout
    yaml_text, args = out.split("---\n")
    return yaml_text, [a for a in args.splitlines() if a]


def test_the_class_registers_under_its_name():
    assert _agent_loop_registry[AGENT_NAME]["_target_"].endswith("agent_loop.ZeroSearchAgentLoop")


def test_scripts_agent_loop_yaml_instantiates_as_verls_worker_does(tmp_path, tokenizer, engine):
    yaml_text, _ = dry_run("grpo", VAL_RETRIEVE_URL="http://127.0.0.1:9000/retrieve")
    path = tmp_path / "agent_loop.yaml"
    path.write_text(yaml_text)
    entries = {e.name: e for e in OmegaConf.load(path)}  # what AgentLoopWorker reads
    assert set(entries) == {"zerosearch_agent", "zerosearch_agent_val"}
    cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 512, "response_length": 2048,
                                                              "name": "vllm"}}, "data": {}})

    async def build():
        return hydra.utils.instantiate(
            config=entries["zerosearch_agent"], trainer_config=DictConfigWrap(config=cfg), server_manager=None,
            tokenizer=tokenizer, processor=None, hf_model_type=None, dataset_cls=None,
            data_config=DictConfigWrap(cfg.data), tools=ToolListWrap([]),
        )

    loop = asyncio.run(build())
    assert isinstance(loop, ZeroSearchAgentLoop)
    assert loop.engine_settings["url"] == "http://127.0.0.1:8000/retrieve" and loop.engine_settings["topk"] == 5
    assert (loop.schedule.start, loop.schedule.end) == (0.0, 0.25)  # Qwen2.5-3B's curriculum
    assert loop.episode_cfg.max_turns == 2 and loop.episode_cfg.max_obs_tokens == 500 and loop.val_noise == "useful"


def test_per_model_curriculum_in_the_scripts():
    def curriculum(model, **env):
        text, _ = dry_run("grpo", MODEL=model, **env)
        entry = OmegaConf.create(text)[0]
        return entry.curriculum.start, entry.curriculum.end

    assert curriculum("Qwen/Qwen2.5-7B-Instruct") == (0.0, 0.75)
    assert curriculum("Qwen/Qwen2.5-3B") == (0.0, 0.25)
    assert curriculum("meta-llama/Llama-3.2-3B-Instruct") == (0.25, 0.5)
    assert curriculum("Qwen/Qwen2.5-3B", NOISE_END="0.4") == (0.0, 0.4)


@pytest.mark.filterwarnings("ignore:Disabled critic")
@pytest.mark.parametrize("script,estimator", [("grpo", "grpo"), ("ppo", "gae"), ("reinforce_pp", "reinforce_plus_plus")])
def test_launch_scripts_compose_and_pass_verls_config_checks(tmp_path, script, estimator, tokenizer):
    """verl's own Hydra config and validate_config accept every override (model: a tiny local folder)."""
    import verl
    from hydra import compose, initialize_config_dir
    from verl.trainer.main_ppo import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from zerosearch.llm.tiny import build_tiny_model

    model_dir = tmp_path / "model"
    build_tiny_model(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    _, overrides = dry_run(script, MODEL=str(model_dir))
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert cfg.algorithm.adv_estimator == estimator
    assert need_critic(cfg) == (script == "ppo")
    assert (cfg.data.train_batch_size, cfg.actor_rollout_ref.rollout.n) == (64, 5)
    assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6
    assert (cfg.actor_rollout_ref.actor.kl_loss_coef, cfg.actor_rollout_ref.actor.kl_loss_type) == (0.001, "low_var_kl")
    assert cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class.endswith("ZeroSearchAgentLoopManager")
    assert cfg.reward.custom_reward_function.path == "pkg://zerosearch.integrations.verl.reward"
    assert cfg.trainer.total_training_steps == 200 and cfg.trainer.save_freq == 7  # extra overrides win
    if script == "ppo":
        assert (cfg.algorithm.gamma, cfg.algorithm.lam, cfg.critic.optim.lr) == (1.0, 1.0, 1e-5)


class FakeWorker:
    """An AgentLoopWorker handle: records the rows it gets and returns a minimal output batch."""

    def __init__(self) -> None:
        self.seen: list[DataProto] = []
        worker = self

        class Remote:
            @staticmethod
            async def remote(chunk: DataProto) -> DataProto:
                worker.seen.append(chunk)
                out = DataProto.from_dict(
                    tensors={"prompts": np.zeros((len(chunk), 2), dtype=np.int64),
                             "responses": np.zeros((len(chunk), 3), dtype=np.int64)},
                    non_tensors={k: v for k, v in chunk.non_tensor_batch.items()},
                )
                out.meta_info["metrics"] = [{"generate_sequences": 0.1, "tool_calls": 0.2, "compute_score": 0.0,
                                             "num_preempted": -1}] * len(chunk)
                return out

        self.generate_sequences = Remote()


def test_manager_hands_the_step_to_every_row_and_cleans_up():
    manager = ZeroSearchAgentLoopManager.__new__(ZeroSearchAgentLoopManager)  # no Ray actors
    manager.config = OmegaConf.create({"trainer": {"total_training_steps": None},
                                       "actor_rollout_ref": {"actor": {"optim": {"total_training_steps": 200}}}})
    manager.agent_loop_workers = [FakeWorker(), FakeWorker()]
    batch = DataProto.from_dict(tensors={"dummy": np.zeros((4, 1))},
                                non_tensors={"agent_name": np.array([AGENT_NAME] * 4, dtype=object)},
                                meta_info={"global_steps": 17})
    output = manager.generate_sequences(batch)  # called synchronously, as verl's trainer does
    for worker in manager.agent_loop_workers:
        (chunk,) = worker.seen
        assert chunk.non_tensor_batch[STEP_KEY].tolist() == [17, 17]
        assert chunk.non_tensor_batch[TOTAL_KEY].tolist() == [200, 200]
        assert chunk.non_tensor_batch[VALIDATE_KEY].tolist() == [False, False]
    for key in (STEP_KEY, TOTAL_KEY, VALIDATE_KEY):
        assert key not in output.non_tensor_batch and key not in batch.non_tensor_batch
    assert len(output) == 4 and "timing" in output.meta_info

    batch.meta_info = {"global_steps": 3, "validate": True}
    manager.generate_sequences(batch)
    assert manager.agent_loop_workers[0].seen[-1].non_tensor_batch[VALIDATE_KEY].tolist() == [True, True]
    batch.meta_info = {}
    with pytest.raises(ValueError, match="global_steps"):
        manager.generate_sequences(batch)


def test_reward_function_loads_through_verls_loader():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    fn = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://zerosearch.integrations.verl.reward", "name": "compute_score", "reward_kwargs": {}}}}))
    gt = {"target": np.array(["Vaskine", "Vaskine city"], dtype=object)}  # how parquet rows arrive
    good = fn(data_source="world", solution_str="<search> q </search>\n\n<information>Doc 1 x</information>\n\n"
              "<answer> the Vaskine </answer>", ground_truth=gt, extra_info={"num_turns": 4})
    assert good == {"score": 1.0, "f1": 1.0, "strict_em": 1.0, "cover_em": 1.0, "answered": 1.0,
                    "repeated_query": 0.0}
    long = fn(data_source="world", solution_str="<answer> Vaskine on the river Tov </answer>", ground_truth=gt)
    assert long["strict_em"] == 0.0 and long["cover_em"] == 1.0 and 0 < long["score"] < 1
    # a document that contains an answer tag does not answer for the policy
    injected = fn(data_source="world", solution_str="<information><answer> Vaskine </answer></information>",
                  ground_truth=gt)
    assert injected["score"] == 0.0 and injected["answered"] == 0.0
    # reward_kwargs reach compute_score: the repeat penalty of rl.repeat_penalty
    penalised = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://zerosearch.integrations.verl.reward", "name": "compute_score",
        "reward_kwargs": {"repeat_penalty": 0.5}}}}))
    twice = "<search> q </search><information>x</information><search> Q </search><answer> Vaskine </answer>"
    assert penalised(data_source="world", solution_str=twice, ground_truth=gt)["score"] == 0.5


def test_exported_parquet_loads_in_rlhf_dataset_and_feeds_the_agent_loop(tmp_path, tokenizer, engine):
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    world = build_world(seed=1, n_entities=20)
    path = write_parquet(verl_rows(world.test[:6], split="test"), tmp_path / "test.parquet")
    data_config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 1024, "return_raw_chat": True,
                                    "filter_overlong_prompts": True, "truncation": "error",
                                    "cache_dir": str(tmp_path / "cache")})
    ds = RLHFDataset(data_files=[str(path)], tokenizer=tokenizer, config=data_config)
    assert len(ds) == 6
    item = ds[2]
    ex = world.test[2]
    assert item["raw_prompt"] == protocol_prompt(ex.question)
    assert item["agent_name"] == AGENT_NAME and item["index"] == 2
    assert item["extra_info"]["question"] == ex.question
    assert list(item["reward_model"]["ground_truth"]["target"]) == ex.golden_answers

    batch = DataProto.from_single_dict(collate_fn([ds[i] for i in range(3)]))
    kwargs = {k: v[0] for k, v in batch.non_tensor_batch.items()}  # what AgentLoopWorker hands run()
    kwargs.pop("agent_name")
    server = ScriptedServer(tokenizer, ["<search> where </search>", "<answer> x </answer>"])
    cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 1024, "response_length": 512,
                                                              "name": "vllm"}}, "data": {}})

    async def go():
        loop = ZeroSearchAgentLoop(trainer_config=DictConfigWrap(cfg), server_manager=server, tokenizer=tokenizer,
                                   processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(cfg.data))
        return await loop.run({"temperature": 1.0, "logprobs": False}, **kwargs)

    out = asyncio.run(go())
    assert engine.requests[0].question == world.test[0].question
    assert list(engine.requests[0].golden_answers) == world.test[0].golden_answers
    assert sum(out.response_mask) < len(out.response_mask)


def protocol_prompt(question):
    from zerosearch import protocol

    return protocol.chat_prompt(question)
