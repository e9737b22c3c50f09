"""`ZeroSearchAgentLoop`: the search protocol as a verl agent loop (import only where verl is installed).

verl builds one instance per sample through Hydra from the agent-loop YAML named by
`actor_rollout_ref.rollout.agent.agent_loop_config_path`; every key of our entry besides `name` and
`_target_` arrives here as a keyword argument (engine, curriculum, turn and token limits). Rows select the
loop with their `agent_name` column (`zerosearch export verl` writes "zerosearch_agent").

Generation is token in, token out through `server_manager.generate` (vLLM or SGLang); the turn logic is
`episode.run_episode` over `zerosearch.agent.env`, neither of which imports verl. The curriculum needs the
trainer's step, which verl does not hand to agent loops: `ZeroSearchAgentLoopManager` (manager.py) adds it
to every row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from ... import protocol
from ...curriculum import NoiseSchedule
from ...engines import EngineConfig, SearchEngine, SearchRequest, SearchResult, build_engine
from ...engines.base import NOISY, parse_noise
from . import AGENT_NAME
from .episode import EpisodeConfig, run_episode
from .manager_keys import STEP_KEY, TOTAL_KEY, VALIDATE_KEY, config_total_steps

log = logging.getLogger(__name__)

DEFAULT_ENGINE = {"kind": "remote", "url": "http://127.0.0.1:8000/retrieve", "topk": 5, "timeout": 120.0}
# Keep the stop string in the returned tokens: the action is parsed from them. Each server names it its own way.
_KEEP_STOP = {"vllm": {"include_stop_str_in_output": True}, "sglang": {"no_stop_trim": True}}

# Agent loops are created per sample; engines (HTTP clients, loaded simulators) and the threads that call
# them are shared by every loop of a worker process.
_lock = threading.Lock()
_engines: dict[str, SearchEngine] = {}
_pools: dict[int, ThreadPoolExecutor] = {}


def _plain(value: Any) -> Any:
    """OmegaConf containers (what Hydra passes for nested YAML) as plain dicts and lists."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - verl always brings omegaconf
        pass
    return value


def shared_engine(settings: dict[str, Any]) -> SearchEngine:
    key = json.dumps(settings, sort_keys=True, default=str)
    with _lock:
        if key not in _engines:
            _engines[key] = build_engine(EngineConfig.from_dict(settings))
        return _engines[key]


def _pool(workers: int) -> ThreadPoolExecutor:
    with _lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zerosearch-search")
        return _pools[workers]


@register(AGENT_NAME)
class ZeroSearchAgentLoop(AgentLoopBase):
    def __init__(
        self,
        *args: Any,
        max_turns: int = 2,
        max_turn_tokens: int = 500,
        max_obs_tokens: int = 500,
        force_final_answer: bool = False,
        engine: dict[str, Any] | None = None,
        curriculum: dict[str, Any] | None = None,
        val_noise: str | float | None = None,
        search_workers: int = 64,
        server_stop: bool = True,
        fail_on_search_error: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("name", None)  # the registry entry's own name travels with the Hydra config
        super().__init__(*args, **kwargs)
        self.episode_cfg = EpisodeConfig(
            max_turns=int(max_turns), max_turn_tokens=int(max_turn_tokens), max_obs_tokens=int(max_obs_tokens),
            response_length=int(self.rollout_config.response_length), force_final_answer=bool(force_final_answer),
        )
        settings = {**DEFAULT_ENGINE, **(_plain(engine) or {})}
        EngineConfig.from_dict(settings)  # unknown keys fail here, at start-up, not at the first search
        self.engine_settings = settings
        curriculum = _plain(curriculum)
        self.schedule = NoiseSchedule(**curriculum) if curriculum else None
        val_noise = _plain(val_noise)
        self.val_noise = None if val_noise is None else parse_noise(val_noise, "val_noise", text=True)
        if int(search_workers) < 1:
            raise ValueError(f"search_workers must be >= 1, not {search_workers}")
        self.search_workers = int(search_workers)
        self.server_stop = bool(server_stop)
        self.fail_on_search_error = bool(fail_on_search_error)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        self.eos_ids = [eos] if eos is not None else []

    def noise_for(self, row: dict[str, Any]) -> str | float | None:
        """P(noisy) for this row's searches: the curriculum at the trainer's step (or val_noise in validation)."""
        if bool(row.get(VALIDATE_KEY, False)) and self.val_noise is not None:
            return self.val_noise
        if self.schedule is None:
            return None
        if self.schedule.kind == "constant":
            return self.schedule(0, 1)
        step, total = row.get(STEP_KEY), row.get(TOTAL_KEY)
        if step is None:
            raise ValueError(
                "the noise curriculum needs the trainer's step: set actor_rollout_ref.rollout.agent."
                "agent_loop_manager_class=zerosearch.integrations.verl.manager.ZeroSearchAgentLoopManager "
                "(or give a constant curriculum, kind: constant)"
            )
        total = int(total) if total else config_total_steps(self.config)
        if not total:
            raise ValueError("the noise curriculum needs the number of training steps: set trainer.total_training_steps")
        return self.schedule(int(step), int(total))

    def _sampling_params(self, sampling_params: dict[str, Any]) -> dict[str, Any]:
        params = dict(sampling_params)
        if self.server_stop:  # the episode cuts at the stop strings anyway; this saves the server the tokens
            params["stop"] = list(protocol.STOP_STRINGS)
            params.update(_KEEP_STOP.get(str(self.rollout_config.name), {}))
        return params

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        question, answers = sample_fields(kwargs)
        noise = self.noise_for(kwargs)
        prompt_ids = await self.ct_build_initial_tokens(list(kwargs["raw_prompt"]))
        params = self._sampling_params(sampling_params)
        request_id = uuid4().hex  # one per trajectory: the server manager keeps its turns on one server
        priority = int(kwargs.get("priority", 0))
        engine = shared_engine(self.engine_settings)
        topk = int(self.engine_settings.get("topk", 5))
        loop = asyncio.get_running_loop()

        async def generate(context: list[int], max_tokens: int):
            out = await self.server_manager.generate(
                request_id=request_id, prompt_ids=context, sampling_params={**params, "max_tokens": max_tokens},
                priority=priority,
            )
            return list(out.token_ids), (list(out.log_probs) if out.log_probs else None)

        async def search(request: SearchRequest) -> SearchResult:
            result = (await loop.run_in_executor(_pool(self.search_workers),
                                                 lambda: engine.search([request], topk=topk)))[0]
            if result.error is not None and self.fail_on_search_error:
                raise RuntimeError(f"search for {request.query!r} failed: {result.error} "
                                   "(set fail_on_search_error: false to train through failures)")
            return result

        ep = await run_episode(prompt_ids, question, answers, tokenizer=self.tokenizer, generate=generate,
                               search=search, cfg=self.episode_cfg, noise=noise, eos_ids=self.eos_ids)
        want_logprobs = bool(sampling_params.get("logprobs"))
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=ep.completion_ids,
            response_mask=ep.env_mask,
            response_logprobs=ep.logprobs if want_logprobs and ep.logprobs is not None else None,
            num_turns=1 + len(ep.turns) + len(ep.searches) + ep.invalid_actions,  # user, assistant and environment
            metrics=AgentLoopMetrics(generate_sequences=ep.generate_seconds, tool_calls=ep.search_seconds),
            extra_fields={
                "turn_scores": [], "tool_rewards": [],  # the schema verl's own loops keep
                "zs_searches": len(ep.searches),
                "zs_search_errors": sum(s.error is not None for s in ep.searches),
                "zs_noisy": sum(s.kind == NOISY for s in ep.searches),
                "zs_invalid_actions": ep.invalid_actions,
                "zs_answered": ep.answer is not None,
                "zs_unexecuted_final_search": ep.unexecuted_final_search,
                "zs_truncated": ep.truncated,
                "zs_noise_p": noise if isinstance(noise, float) else None,
            },
        )


def sample_fields(row: dict[str, Any]) -> tuple[str, list[str]]:
    """The question and gold answers of this row, for the simulator (and nothing else: the reward reads
    reward_model.ground_truth)."""
    from .reward import gold_answers

    extra = _plain(row.get("extra_info")) or {}
    question = extra.get("question") if isinstance(extra, dict) else None
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the row has no extra_info.question; write the data with `zerosearch export verl`")
    answers = extra.get("golden_answers")
    if answers is None:
        reward_model = _plain(row.get("reward_model")) or {}
        answers = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    return question, gold_answers(answers)
