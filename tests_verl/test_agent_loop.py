"""ZeroSearchAgentLoop against verl's real AgentLoopBase with a scripted server manager."""

from __future__ import annotations

import asyncio

import pytest
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, DictConfigWrap

from zerosearch import protocol
from zerosearch.agent.env import answer_opening_ids, invalid_action_ids, observation_ids
from zerosearch.integrations.verl.agent_loop import ZeroSearchAgentLoop
from zerosearch.integrations.verl.manager_keys import STEP_KEY, TOTAL_KEY, VALIDATE_KEY

from .conftest import ScriptedServer

QUESTION = "What is the capital of Quorath?"


def config(response_length=1024, name="vllm", total_steps=10):
    return OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"prompt_length": 512, "response_length": response_length, "name": name}},
        "data": {}, "trainer": {"total_training_steps": total_steps},
    })


def row(**extra):
    return {"raw_prompt": protocol.chat_prompt(QUESTION), "index": 0, "priority": 3,
            "extra_info": {"question": QUESTION, "golden_answers": ["Vaskine"], "index": 0},
            "reward_model": {"style": "rule", "ground_truth": {"target": ["Vaskine"]}}, **extra}


def run(tokenizer, server, row_kwargs, sampling=None, cfg=None, **loop_kwargs) -> tuple[AgentLoopOutput, ZeroSearchAgentLoop]:
    async def go():
        c = cfg or config()
        loop = ZeroSearchAgentLoop(trainer_config=DictConfigWrap(c), server_manager=server, tokenizer=tokenizer,
                                   processor=None, dataset_cls=None, data_config=DictConfigWrap(c.data),
                                   **loop_kwargs)
        params = sampling or {"temperature": 1.0, "top_p": 1.0, "logprobs": True}
        return await loop.run(params, **row_kwargs), loop

    return asyncio.run(go())


def ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def test_search_then_answer_ids_mask_and_logprobs(tokenizer, engine):
    turns = ["<think> find it </think><search> capital of Quorath </search>", "<answer> Vaskine </answer>"]
    server = ScriptedServer(tokenizer, turns)
    out, _ = run(tokenizer, server, row(**{STEP_KEY: 5, TOTAL_KEY: 10}), max_turns=2,
                 curriculum={"start": 0.0, "end": 0.5})

    t1, t2 = ids(tokenizer, turns[0]), ids(tokenizer, turns[1])
    obs = observation_ids(tokenizer, "Doc 1(Title: Quorath) Brelesk founded the city (capital of Quorath)", 500)
    assert out.response_ids == t1 + obs + t2
    assert out.response_mask == [1] * len(t1) + [0] * len(obs) + [1] * len(t2)
    assert out.response_logprobs == [-0.5] * len(t1) + [0.0] * len(obs) + [-0.5] * len(t2)
    # token in, token out: the second turn continues from exactly the ids of the first turn and observation
    assert server.calls[1]["prompt_ids"] == server.calls[0]["prompt_ids"] + t1 + obs
    assert out.prompt_ids == server.calls[0]["prompt_ids"]
    assert tokenizer.decode(out.prompt_ids).endswith("Question: What is the capital of Quorath?\n<|im_end|>\n<|im_start|>assistant\n")
    # one trajectory keeps one request id; stops and the budget go to the server
    assert server.calls[0]["request_id"] == server.calls[1]["request_id"] and server.calls[0]["priority"] == 3
    params = server.calls[0]["sampling_params"]
    assert params["stop"] == ["</search>", "</answer>"] and params["include_stop_str_in_output"] is True
    assert params["max_tokens"] == 500
    # the simulator sees this sample's question and answers, and the curriculum's p at step 5 of 10
    (req,) = engine.requests
    assert (req.query, req.question, list(req.golden_answers)) == ("capital of Quorath", QUESTION, ["Vaskine"])
    assert req.noise == pytest.approx(1 / 6)  # 0.5 * (4**0.5 - 1) / 3
    assert out.extra_fields["zs_searches"] == 1 and out.extra_fields["zs_answered"] is True
    assert out.num_turns == 4  # user, assistant, observation, assistant


def test_turn_is_cut_after_the_stop_string_when_the_server_goes_on(tokenizer, engine):
    turns = ["<search> capital of Quorath </search>", "<answer> Vaskine </answer>"]
    server = ScriptedServer(tokenizer, turns, tail="<information> made up </information> more")
    out, _ = run(tokenizer, server, row(), server_stop=False)
    t1 = ids(tokenizer, turns[0])
    assert out.response_ids[: len(t1)] == t1
    assert "stop" not in server.calls[0]["sampling_params"]
    text = tokenizer.decode(out.response_ids)
    assert "made up" not in text and text.endswith("<answer> Vaskine </answer>")


def test_invalid_action_gets_the_corrective_message_and_drops_the_end_token(tokenizer, engine):
    turns = ["I do not know<eos>", "<answer> Vaskine </answer>"]
    server = ScriptedServer(tokenizer, turns)
    out, _ = run(tokenizer, server, row())
    t1, t2 = ids(tokenizer, "I do not know"), ids(tokenizer, turns[1])
    inv = invalid_action_ids(tokenizer)
    assert out.response_ids == t1 + inv + t2
    assert out.response_mask == [1] * len(t1) + [0] * len(inv) + [1] * len(t2)
    assert engine.requests == [] and out.extra_fields["zs_invalid_actions"] == 1


def test_final_turn_executes_no_search(tokenizer, engine):
    turns = ["<search> first </search>", "<search> second </search>"]
    server = ScriptedServer(tokenizer, turns)
    out, _ = run(tokenizer, server, row(), max_turns=1)
    assert [r.query for r in engine.requests] == ["first"]
    assert len(server.calls) == 2
    t2 = ids(tokenizer, turns[1])
    assert out.response_ids[-len(t2):] == t2 and out.response_mask[-len(t2):] == [1] * len(t2)  # nothing after it
    assert out.extra_fields["zs_unexecuted_final_search"] is True and out.extra_fields["zs_answered"] is False


def test_a_forced_final_answer_is_opened_by_the_loop_and_completed_by_the_policy(tokenizer, engine):
    turns = ["<search> first </search>", " Vaskine </answer>"]
    server = ScriptedServer(tokenizer, turns)
    out, _ = run(tokenizer, server, row(), max_turns=1, force_final_answer=True)
    opening, t2 = answer_opening_ids(tokenizer), ids(tokenizer, turns[1])
    assert out.response_ids[-len(opening) - len(t2):] == opening + t2
    assert out.response_mask[-len(opening) - len(t2):] == [0] * len(opening) + [1] * len(t2)
    assert server.calls[1]["prompt_ids"][-len(opening):] == opening  # the policy continues the opened answer
    assert out.extra_fields["zs_answered"] is True and out.extra_fields["zs_unexecuted_final_search"] is False


def test_response_budget_caps_turns_and_observations(tokenizer, engine):
    turns = ["<search> capital of Quorath </search>", "<answer> Vaskine </answer>"]
    n1 = len(ids(tokenizer, turns[0]))
    server = ScriptedServer(tokenizer, turns)
    out, _ = run(tokenizer, server, row(), cfg=config(response_length=n1 + 3))
    assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs) == n1 + 3
    assert len(server.calls) == 1 and out.extra_fields["zs_truncated"] is True


def test_sglang_keeps_stop_strings_its_own_way_and_logprobs_follow_the_request(tokenizer, engine):
    server = ScriptedServer(tokenizer, ["<answer> Vaskine </answer>"])
    out, _ = run(tokenizer, server, row(), sampling={"temperature": 0, "logprobs": False}, cfg=config(name="sglang"))
    params = server.calls[0]["sampling_params"]
    assert params["no_stop_trim"] is True and "include_stop_str_in_output" not in params
    assert out.response_logprobs is None


def test_curriculum_needs_the_step_and_validation_uses_val_noise(tokenizer, engine):
    turns = ["<search> q </search>", "<answer> Vaskine </answer>"]
    with pytest.raises(ValueError, match="agent_loop_manager_class"):
        run(tokenizer, ScriptedServer(tokenizer, turns), row(), curriculum={"start": 0.0, "end": 0.5})
    run(tokenizer, ScriptedServer(tokenizer, turns), row(**{STEP_KEY: 3, TOTAL_KEY: 10, VALIDATE_KEY: True}),
        curriculum={"start": 0.0, "end": 0.5}, val_noise="useful")
    run(tokenizer, ScriptedServer(tokenizer, turns), row(), curriculum={"start": 0.3, "kind": "constant"})
    # without the manager's total, trainer.total_training_steps is used
    run(tokenizer, ScriptedServer(tokenizer, turns), row(**{STEP_KEY: 10, TOTAL_KEY: 0}),
        curriculum={"start": 0.0, "end": 0.5}, cfg=config(total_steps=10))
    assert [r.noise for r in engine.requests] == ["useful", 0.3, pytest.approx(0.5)]


def test_search_failures_fail_the_step_loudly(tokenizer, monkeypatch):
    from zerosearch.engines.base import SearchResult
    from zerosearch.integrations.verl import agent_loop

    class Dead:
        def search(self, requests, topk=None):
            return [SearchResult(r.query, [], "remote", True, error="timeout after 120s") for r in requests]

    monkeypatch.setattr(agent_loop, "shared_engine", lambda settings: Dead())
    turns = ["<search> q </search>", "<answer> x </answer>"]
    with pytest.raises(RuntimeError, match="timeout after 120s"):
        run(tokenizer, ScriptedServer(tokenizer, turns), row())
    out, _ = run(tokenizer, ScriptedServer(tokenizer, turns), row(), fail_on_search_error=False)
    assert out.extra_fields["zs_search_errors"] == 1
    assert "Search failed: timeout after 120s" in tokenizer.decode(out.response_ids)


def test_bad_settings_and_rows_are_rejected_with_clear_errors(tokenizer, engine):
    server = ScriptedServer(tokenizer, ["<answer> x </answer>"])
    with pytest.raises(ValueError, match="engine: unknown settings"):
        run(tokenizer, server, row(), engine={"kind": "remote", "ur": "http://x"})
    with pytest.raises(ValueError, match="val_noise"):
        run(tokenizer, server, row(), val_noise="sometimes")
    bad = row()
    bad["extra_info"] = {"index": 0}
    with pytest.raises(ValueError, match="zerosearch export verl"):
        run(tokenizer, server, bad)
