import torch

from zerosearch import protocol
from zerosearch.agent.env import observation_ids
from zerosearch.agent.rollout import prompt_ids, rollout
from zerosearch.settings import RolloutConfig
from zerosearch.data.qa import QAExample
from zerosearch.engines.base import Document, SearchEngine, SearchResult

from .conftest import RecordingEngine
from .scripted import ScriptedLM


def _ex(i, q, a="ans"):
    return QAExample(f"q{i}", q, [a])


def _ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def test_env_mask_is_zero_exactly_on_environment_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    scripts = {
        "alpha": ["<think> go </think><search> alpha query </search>", "<answer> x </answer>"],
        "beta": ["I do not know", "<answer> y </answer>"],  # an invalid action first
    }
    model = ScriptedLM(tok, scripts)
    engine = RecordingEngine("doc for {query}")
    exs = [_ex(0, "alpha question"), _ex(1, "beta question")]
    t_alpha, t_beta = rollout(model, tok, exs, engine, RolloutConfig(max_turns=2, max_new_tokens=32, temperature=0))

    turn1, turn2 = (_ids(tok, t) for t in scripts["alpha"])
    docs = engine.search([engine.requests[0]])[0].docs_text()
    obs = observation_ids(tok, docs, 256)
    assert t_alpha.completion_ids == turn1 + obs + turn2
    assert t_alpha.env_mask == [1] * len(turn1) + [0] * len(obs) + [1] * len(turn2)
    assert t_alpha.answer == "x" and t_alpha.n_searches == 1

    inv = _ids(tok, protocol.INVALID_ACTION)
    b1, b2 = (_ids(tok, t) for t in scripts["beta"])
    assert t_beta.completion_ids == b1 + inv + b2  # the end-of-message token was never kept
    assert t_beta.env_mask == [1] * len(b1) + [0] * len(inv) + [1] * len(b2)
    assert t_beta.invalid_actions == 1 and t_beta.answer == "y"
    # log-probs only on the policy's tokens
    assert all(lp == 0.0 for lp, m in zip(t_alpha.logprobs, t_alpha.env_mask) if m == 0)


def test_each_search_carries_its_own_question_and_answer(tiny_tokenizer):
    """Bug B1: samples that do not search must not shift the hidden context of those that do."""
    tok = tiny_tokenizer
    scripts = {}
    exs = []
    for i in range(6):
        q = f"question number {i}"
        scripts[q] = (["<answer> now </answer>"] if i % 3 == 0 else
                      [f"<search> query {i} </search>", "<answer> later </answer>"])
        exs.append(_ex(i, q, a=f"gold {i}"))
    engine = RecordingEngine()
    rollout(ScriptedLM(tok, scripts), tok, exs, engine, RolloutConfig(max_turns=2, max_new_tokens=24, temperature=0),
            noise=0.3)
    reqs = engine.requests
    assert [r.query for r in reqs] == ["query 1", "query 2", "query 4", "query 5"]
    for r in reqs:
        i = int(r.query.split()[-1])
        assert r.question == protocol.normalise_question(f"question number {i}") or r.question == f"question number {i}"
        assert list(r.golden_answers) == [f"gold {i}"]
        assert r.noise == 0.3
    assert len(engine.calls) == 1  # all searches of a turn in one batch


def test_no_search_in_the_final_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    scripts = {"loop": ["<search> one </search>", "<search> two </search>", "<search> three </search>"]}
    engine = RecordingEngine()
    (t,) = rollout(ScriptedLM(tok, scripts), tok, [_ex(0, "loop question")], engine,
                   RolloutConfig(max_turns=2, max_new_tokens=24, temperature=0))
    assert [r.query for r in engine.requests] == ["one", "two"]
    assert t.unexecuted_final_search and t.answer is None and len(t.turns) == 3


def test_observation_is_cut_inside_the_tags_and_prompt_is_whole(tiny_tokenizer):
    tok = tiny_tokenizer
    long = "word " * 300
    engine = RecordingEngine(long + "{query}")
    scripts = {"long": ["<search> q </search>", "<answer> a </answer>"]}
    q = "long question " + "with many words " * 30
    (t,) = rollout(ScriptedLM(tok, scripts), tok, [_ex(0, q)], engine,
                   RolloutConfig(max_turns=1, max_new_tokens=16, temperature=0, max_obs_tokens=20))
    assert t.prompt_ids == prompt_ids(tok, q)
    env = tok.decode([i for i, m in zip(t.completion_ids, t.env_mask) if m == 0])
    assert env.strip().startswith("<information>") and env.strip().endswith("</information>")
    assert len(tok(env, add_special_tokens=False).input_ids) < 40


def _assert_logprobs_equal_a_full_forward(model, trajs):
    for t in trajs:
        ids = torch.tensor([t.prompt_ids + t.completion_ids])
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        lp = torch.log_softmax(logits[len(t.prompt_ids) - 1 : -1], -1).gather(
            -1, torch.tensor(t.completion_ids)[:, None]).squeeze(-1)
        mask = torch.tensor(t.env_mask).bool()
        assert torch.allclose(lp[mask], torch.tensor(t.logprobs)[mask], atol=1e-4)


def test_cached_logprobs_equal_a_full_forward(tiny_model, tiny_tokenizer, recording_engine):
    """The KV cache with holes reproduces exactly what each row would see alone."""
    tok = tiny_tokenizer
    exs = [_ex(i, f"question {i} " + "pad " * i) for i in range(5)]
    trajs = rollout(tiny_model, tok, exs, recording_engine, RolloutConfig(max_turns=2, max_new_tokens=10, temperature=1.0),
                    generator=torch.Generator().manual_seed(0))
    _assert_logprobs_equal_a_full_forward(tiny_model, trajs)


def test_engine_failure_is_visible_not_silent(tiny_tokenizer):
    class Failing(SearchEngine):
        name = "broken"

        def search(self, requests, topk=None):
            return [SearchResult(r.query, [], self.name, True, error="timed out") for r in requests]

    tok = tiny_tokenizer
    scripts = {"f": ["<search> q </search>", "<answer> a </answer>"]}
    (t,) = rollout(ScriptedLM(tok, scripts), tok, [_ex(0, "f question")], Failing(),
                   RolloutConfig(max_turns=1, max_new_tokens=16, temperature=0))
    assert t.searches[0].error == "timed out"
    env = tok.decode([i for i, m in zip(t.completion_ids, t.env_mask) if m == 0])
    assert "Search failed: timed out" in env


def test_shared_prompt_prefix_is_computed_once(tiny_model, tiny_tokenizer, recording_engine):
    from zerosearch.llm.decoding import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert shared_prefix_length([[5, 6], [5, 6]]) == 2 and shared_prefix_length([[1], [2]]) == 0
    widths = []
    forward = tiny_model.forward
    tiny_model.forward = lambda *a, **kw: widths.append(tuple(kw["input_ids"].shape)) or forward(*a, **kw)
    exs = [_ex(i, f"question {i}") for i in range(4)]
    rollout(tiny_model, tiny_tokenizer, exs, recording_engine, RolloutConfig(max_turns=0, max_new_tokens=2))
    prompts = [prompt_ids(tiny_tokenizer, ex.question) for ex in exs]
    shared = shared_prefix_length(prompts)
    assert shared >= 16  # the instruction
    assert widths[0] == (1, shared)  # the common prefix once, for one row
    assert widths[1] == (4, max(len(p) for p in prompts) - shared)  # then only each row's own tokens


def _count_set_aside(monkeypatch) -> list[int]:
    from zerosearch.llm.decoding import KVBatch

    taken = []
    take = KVBatch.take
    monkeypatch.setattr(KVBatch, "take", lambda self, rows: taken.append(len(rows)) or take(self, rows))
    return taken


def test_rows_that_stop_early_are_set_aside_and_come_back_intact(tiny_tokenizer, monkeypatch):
    """Rows done with a turn leave the decoding batch (no hole per step for them) and rejoin it after."""
    tok = tiny_tokenizer
    long = " ".join(["word"] * 12)
    scripts, exs = {}, []
    for i in range(8):
        q = f"question number {i}"
        scripts[q] = ([f"<answer> quick {i} </answer>"] if i % 4 else
                      [f"<search> {long} {i} </search>", f"<answer> late {i} </answer>"])
        exs.append(_ex(i, q))
    model = ScriptedLM(tok, scripts)
    rows_per_call = []
    forward = model.forward
    model.forward = lambda *a, **kw: rows_per_call.append(kw["input_ids"].shape[0]) or forward(*a, **kw)
    taken = _count_set_aside(monkeypatch)
    engine = RecordingEngine("doc for {query}")
    trajs = rollout(model, tok, exs, engine, RolloutConfig(max_turns=2, max_new_tokens=40, temperature=0))
    for i, t in enumerate(trajs):
        assert t.answer == (f"late {i}" if i % 4 == 0 else f"quick {i}")
        turn1 = _ids(tok, scripts[f"question number {i}"][0])
        assert t.completion_ids[: len(turn1)] == turn1 and t.env_mask[: len(turn1)] == [1] * len(turn1)
    assert [r.query for r in engine.requests] == [f"{long} {i}" for i in (0, 4)]
    assert taken == [6]  # the six quick rows, once
    # after that, turn 1 decodes the two searching rows alone, many steps
    assert rows_per_call.count(2) >= 10


def test_setting_rows_aside_keeps_every_rows_logprobs_exact(tiny_model, tiny_tokenizer, recording_engine, monkeypatch):
    """With many end-of-message tokens, rows stop at random steps and are set aside and put back; each
    row's cached log-probs still equal a full forward over its own sequence."""
    tok = tiny_tokenizer
    tiny_model.generation_config.eos_token_id = list(range(0, len(tok), 9))  # ~11% of tokens end a turn
    exs = [_ex(i, f"question {i} " + "pad " * (i % 3)) for i in range(12)]
    taken = _count_set_aside(monkeypatch)
    trajs = rollout(tiny_model, tok, exs, recording_engine,
                    RolloutConfig(max_turns=2, max_new_tokens=12, temperature=1.0),
                    generator=torch.Generator().manual_seed(1))
    assert len(taken) >= 2  # rows stopped at different steps and were set aside more than once
    _assert_logprobs_equal_a_full_forward(tiny_model, trajs)
