"""The environment step on its own, and the two trainers that drive it agreeing token for token."""

import asyncio

import pytest

from zerosearch import protocol
from zerosearch.agent.env import (PolicyTurn, SearchEnv, SearchRecord, Task, TokenSequence, answer_opening_ids,
                                  invalid_action_ids)
from zerosearch.agent.rollout import rollout
from zerosearch.data.qa import QAExample
from zerosearch.engines.base import SearchResult
from zerosearch.integrations.verl.episode import EpisodeConfig, run_episode
from zerosearch.settings import RolloutConfig

from .conftest import RecordingEngine
from .scripted import ScriptedLM


def _ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def _turn(tok, text, stop="stop"):
    ids = _ids(tok, text)
    return PolicyTurn(ids, [-0.5] * len(ids), stop)


def test_a_forced_final_answer_is_opened_by_the_environment(tiny_tokenizer):
    tok = tiny_tokenizer
    env = SearchEnv(tok, max_turns=1, max_obs_tokens=20, force_final_answer=True)
    seq, task = TokenSequence(), Task("q", ["gold"])
    env.step(1, [seq], [task], [_turn(tok, "<search> q </search>")],
             lambda reqs: [SearchResult(r.query, [], "fake", True) for r in reqs])
    opening = answer_opening_ids(tok)
    assert seq.completion_ids[-len(opening):] == opening and seq.env_mask[-len(opening):] == [0] * len(opening)
    [step] = env.step(2, [seq], [task], [_turn(tok, " gold </answer>")], _no_search)
    assert step.done and seq.answer == "gold" and not seq.unexecuted_final_search
    # with no searching turn there is no reply to open it in: the one turn is read as written
    lone = SearchEnv(tok, max_turns=0, max_obs_tokens=20, force_final_answer=True)
    seq = TokenSequence()
    lone.step(1, [seq], [task], [_turn(tok, " gold </answer>")], _no_search)
    assert seq.answer is None and seq.env_mask == [1] * len(seq.env_mask)


def _no_search(requests):
    raise AssertionError(f"no search expected, got {requests}")


def test_an_answer_ends_the_episode(tiny_tokenizer):
    tok = tiny_tokenizer
    env = SearchEnv(tok, max_turns=2, max_obs_tokens=50)
    seq = TokenSequence()
    out = _turn(tok, "<think> easy </think><answer> Paris </answer>")
    (step,) = env.step(1, [seq], [Task("q", ["Paris"])], [out], _no_search)
    assert step.done and step.reply == [] and step.request is None
    assert seq.answer == "Paris" and seq.completion_ids == out.ids and seq.env_mask == [1] * len(out.ids)
    assert seq.logprobs == out.logprobs
    assert seq.turns == [{"turn": 1, "text": tok.decode(out.ids, skip_special_tokens=True), "action": "answer",
                          "content": "Paris", "stop": "stop"}]


def test_a_search_in_the_final_turn_is_recorded_not_executed(tiny_tokenizer):
    tok = tiny_tokenizer
    env = SearchEnv(tok, max_turns=1, max_obs_tokens=50)
    assert list(env.turns()) == [1, 2]
    seq = TokenSequence()
    out = _turn(tok, "<search> one more </search>")
    (step,) = env.step(2, [seq], [Task("q", ["a"])], [out], _no_search)
    assert step.done and seq.unexecuted_final_search and seq.answer is None
    assert seq.searches == [] and seq.completion_ids == out.ids  # nothing after the final turn
    assert seq.turns[0]["action"] == "search" and seq.turns[0]["content"] == "one more"


def test_an_invalid_action_gets_the_corrective_message_with_env_mask(tiny_tokenizer):
    tok = tiny_tokenizer
    env = SearchEnv(tok, max_turns=2, max_obs_tokens=50)
    seq = TokenSequence()
    out = _turn(tok, "I do not know", stop="eos")
    (step,) = env.step(1, [seq], [Task("q", ["a"])], [out], _no_search)
    inv = invalid_action_ids(tok)
    assert not step.done and step.reply == inv == _ids(tok, protocol.INVALID_ACTION)
    assert seq.completion_ids == out.ids + inv
    assert seq.env_mask == [1] * len(out.ids) + [0] * len(inv)
    assert seq.logprobs == out.logprobs + [0.0] * len(inv)
    assert seq.invalid_actions == 1 and seq.turns[0]["action"] == "invalid" and seq.turns[0]["stop"] == "eos"


def test_searches_of_a_turn_go_in_one_call_with_their_own_sample_and_are_cut_inside_the_tags(tiny_tokenizer):
    tok = tiny_tokenizer
    engine = RecordingEngine("word " * 200 + "{query}")
    env = SearchEnv(tok, max_turns=2, max_obs_tokens=12)
    seqs = [TokenSequence() for _ in range(3)]
    tasks = [Task("first question", ["gold 0"], noise=0.2), Task("second question", ["gold 1"], noise="noisy"),
             Task("third question", ["gold 2"])]
    outs = [_turn(tok, "<search> alpha </search>"), _turn(tok, "<answer> now </answer>"),
            _turn(tok, "<think> hm </think><search> gamma </search>")]
    steps = env.step(1, seqs, tasks, outs, engine.search)

    assert len(engine.calls) == 1
    assert [(r.query, r.question, list(r.golden_answers), r.noise) for r in engine.requests] == \
        [("alpha", "first question", ["gold 0"], 0.2), ("gamma", "third question", ["gold 2"], None)]
    assert [s.done for s in steps] == [False, True, False]
    for seq, out, step in ((seqs[0], outs[0], steps[0]), (seqs[2], outs[2], steps[2])):
        assert seq.completion_ids == out.ids + step.reply
        assert seq.env_mask == [1] * len(out.ids) + [0] * len(step.reply)
        env_text = tok.decode(step.reply)
        assert env_text.strip().startswith("<information>") and env_text.strip().endswith("</information>")
        assert len(step.reply) < 30  # the 200 words were cut, the closing tag kept
        (rec,) = seq.searches
        assert (rec.turn, rec.engine, rec.real, rec.error, rec.n_docs) == (1, "fake", True, None, 1)
    assert seqs[0].searches[0].query == "alpha" and seqs[2].searches[0].documents[0]["title"] == "T"
    assert seqs[1].searches == [] and seqs[1].completion_ids == outs[1].ids


def test_a_failed_search_is_recorded_with_its_error_and_shown_to_the_policy(tiny_tokenizer):
    tok = tiny_tokenizer
    env = SearchEnv(tok, max_turns=2, max_obs_tokens=50)
    seq = TokenSequence()

    async def failing(requests):
        return [SearchResult(r.query, [], "remote", True, error="timed out") for r in requests]

    (step,) = asyncio.run(env.astep(1, [seq], [Task("q", ["a"])], [_turn(tok, "<search> q </search>")], failing))
    assert seq.searches == [SearchRecord(1, "q", "remote", True, None, "timed out", 0)]
    assert not step.done and "<information>Search failed: timed out</information>" in tok.decode(step.reply)


def test_results_must_match_the_requests(tiny_tokenizer):
    env = SearchEnv(tiny_tokenizer, max_turns=2, max_obs_tokens=50)
    with pytest.raises(ValueError, match="1 searches got 0 results"):
        env.step(1, [TokenSequence()], [Task("q", ["a"])], [_turn(tiny_tokenizer, "<search> q </search>")],
                 lambda requests: [])


def test_policy_turns_without_logprobs_drop_them_rather_than_misalign():
    seq = TokenSequence()
    seq.add([1, 2], env=False, logprobs=[-0.1, -0.2])
    seq.add([3], env=True)
    assert seq.logprobs == [-0.1, -0.2, 0.0]
    seq.add([4, 5], env=False, logprobs=None)
    assert seq.logprobs is None and seq.env_mask == [1, 1, 0, 1, 1]


SCRIPTS = {
    "alpha question": ["<think> go </think><search> alpha query </search>", "<answer> x </answer>"],
    "beta question": ["I do not know", "<search> beta query </search>", "<answer> y </answer>"],
    "gamma question": ["<search> one </search>", "<search> two </search>", "<search> three </search>"],
    "delta question": ["<answer> at once </answer>"],
    # completes an answer the environment opened (force_final_answer); an invalid turn otherwise
    "epsilon question": ["<search> one </search>", "<search> two </search>", " forced </answer>"],
}


@pytest.mark.parametrize("force", [False, True])
def test_the_batched_rollout_and_the_verl_episode_produce_the_same_tokens(tiny_tokenizer, force):
    tok = tiny_tokenizer
    exs = [QAExample(f"q{i}", q, [f"gold {i}"]) for i, q in enumerate(SCRIPTS)]
    batched_engine = RecordingEngine("doc for {query} " + "word " * 40)
    trajs = rollout(ScriptedLM(tok, SCRIPTS), tok, exs, batched_engine,
                    RolloutConfig(max_turns=2, max_new_tokens=32, temperature=0, max_obs_tokens=20,
                                  force_final_answer=force), noise=0.5)

    episode_engine = RecordingEngine("doc for {query} " + "word " * 40)
    for ex, traj in zip(exs, trajs):
        turns = iter(SCRIPTS[ex.question])

        async def generate(context, max_tokens, turns=turns):
            text = next(turns)
            ids = _ids(tok, text)
            if not any(s in text for s in protocol.STOP_STRINGS):
                ids.append(tok.eos_token_id)  # as ScriptedLM ends a turn without a tag
            return ids[:max_tokens], [-0.5] * len(ids[:max_tokens])

        async def search(request):
            return episode_engine.search([request])[0]

        ep = asyncio.run(run_episode(traj.prompt_ids, ex.question, ex.golden_answers, tokenizer=tok,
                                     generate=generate, search=search, noise=0.5, eos_ids=[tok.eos_token_id],
                                     cfg=EpisodeConfig(max_turns=2, max_turn_tokens=32, max_obs_tokens=20,
                                                       force_final_answer=force)))
        assert ep.completion_ids == traj.completion_ids and ep.env_mask == traj.env_mask
        assert ep.turns == traj.turns
        # (the recording engine numbers its documents by their place in the batch)
        assert [(r.turn, r.query, r.error, [d["text"] for d in r.documents]) for r in ep.searches] == \
            [(r.turn, r.query, r.error, [d["text"] for d in r.documents]) for r in traj.searches]
        assert (ep.answer, ep.invalid_actions, ep.unexecuted_final_search) == \
            (traj.answer, traj.invalid_actions, traj.unexecuted_final_search)
    assert sum(0 in t.env_mask for t in trajs) == 4 and trajs[2].unexecuted_final_search
    # a final-turn search is never executed, forced answer or not (`<answer><search> three </search>`)
    assert [t.answer for t in trajs] == ["x", "y", None, "at once", "forced" if force else None]
    opened = trajs[4].text.count("<answer>")
    assert opened == (1 if force else 0)
    def requests(engine):
        return sorted((r.query, r.question, list(r.golden_answers), r.noise) for r in engine.requests)

    assert requests(episode_engine) == requests(batched_engine)
    assert [len(call) for call in batched_engine.calls] == [3, 3]  # one call a turn
