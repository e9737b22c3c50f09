"""Warm-start demonstrations: two-hop chains that name the bridge entity, and turns the rollout can reproduce."""

import json
from dataclasses import replace

import pytest

from zerosearch.agent.demos import build_demonstrations
from zerosearch.engines.bm25 import BM25Engine
from zerosearch.settings import SFTConfig, WarmstartConfig
from zerosearch.train.warmstart import in_turn, warmstart


def _two_hop(world, n):
    return [q for q in world.train if q.metadata["hops"] == 2][:n]


def test_a_two_hop_demonstration_searches_for_the_bridge_it_names(world, tiny_tokenizer):
    qs = _two_hop(world, 6)
    demos, counts = build_demonstrations(qs, BM25Engine(world.corpus), topk=2)
    assert demos and counts["searches"] >= 2 * len(demos)
    for d in demos:
        ex = next(q for q in qs if q.question == d.question)
        bridge = ex.metadata["bridge"]
        turns = [t for t, env in d.segments if not env]
        assert len(turns) == 3  # first search, second search, answer
        # the second turn states the bridge found in the first search's documents and searches for it
        assert f"is {bridge}. Now I need the " in turns[1] and f"</think>\n<search> {bridge} " in turns[1]
        assert d.segments[1][1] and bridge in d.segments[1][0]
        assert d.turn_lengths(tiny_tokenizer) == [len(tiny_tokenizer(t, add_special_tokens=False).input_ids)
                                                  for t in turns]


def test_demonstrations_with_a_turn_over_the_rollout_budget_are_dropped(world, tiny_model, tiny_tokenizer, tmp_path):
    qs = [q for q in world.train][:12]
    engine = BM25Engine(world.corpus)
    built, _ = build_demonstrations(qs, engine, topk=2)
    longest = sorted(max(d.turn_lengths(tiny_tokenizer)) for d in built)
    budget = longest[len(longest) // 2]  # about half the demonstrations have a longer turn
    over = sum(n > budget for n in longest)
    assert over > 0
    sft = SFTConfig(steps=1, batch_size=2, learning_rate=1e-3)
    summary = warmstart("tiny", engine, qs, tmp_path / "ws", cfg=WarmstartConfig(demos=len(qs), sft=sft), topk=2,
                        max_turn_tokens=budget, model=tiny_model, tokenizer=tiny_tokenizer)
    assert summary["demo_counts"]["dropped_over_turn_budget"] == over
    assert summary["demos"] == len(built) - over
    written = [json.loads(line)["question"] for line in (tmp_path / "ws" / "demos.jsonl").read_text().splitlines()]
    assert written == [d.question for d in built if max(d.turn_lengths(tiny_tokenizer)) <= budget]

    with pytest.raises(RuntimeError, match="no usable demonstrations"):
        warmstart("tiny", engine, qs, tmp_path / "none", cfg=WarmstartConfig(demos=4, sft=sft), topk=2,
                  max_turn_tokens=3, model=tiny_model, tokenizer=tiny_tokenizer)


def test_in_turn_alternates_groups_and_keeps_their_order():
    assert in_turn([1, 3, 5, 2, 7, 4], key=lambda x: x % 2) == [2, 1, 4, 3, 5, 7]
    assert in_turn([], key=len) == []


def test_balanced_warm_start_teaches_as_many_two_hop_chains_as_single_searches(world, tiny_model, tiny_tokenizer,
                                                                             tmp_path):
    qs = sorted(world.train, key=lambda q: q.metadata["hops"])  # every single-hop question first
    cfg = WarmstartConfig(demos=8, balance_hops=True, sft=SFTConfig(steps=1, batch_size=2, learning_rate=1e-3))
    summary = warmstart("tiny", BM25Engine(world.corpus), qs, tmp_path, cfg=cfg, topk=2, model=tiny_model,
                        tokenizer=tiny_tokenizer)
    rows = [json.loads(line) for line in (tmp_path / "demos.jsonl").read_text().splitlines()]
    assert summary["demos"] == 8 and [len(r["searches"]) for r in rows] == [1, 2] * 4


class _Forgetful(BM25Engine):
    """BM25 that returns no documents for some questions' searches, as a simulator missing a fact would."""

    def __init__(self, corpus, forgotten):
        super().__init__(corpus)
        self.forgotten = set(forgotten)

    def search(self, requests, topk=None):
        return [replace(r, documents=[]) if req.question in self.forgotten else r
                for req, r in zip(requests, super().search(requests, topk=topk))]


def test_a_balanced_warm_start_builds_more_demonstrations_until_each_hop_has_its_share(world, tiny_model,
                                                                                      tiny_tokenizer, tmp_path):
    one, two = ([q for q in world.train if q.metadata["hops"] == h] for h in (1, 2))
    # the first round (24 questions in turn: 12 of each) yields no two-hop demonstration
    engine = _Forgetful(world.corpus, [q.question for q in two[:12]])
    cfg = WarmstartConfig(demos=8, balance_hops=True, sft=SFTConfig(steps=1, batch_size=2, learning_rate=1e-3))
    summary = warmstart("tiny", engine, one + two, tmp_path, cfg=cfg, topk=2, model=tiny_model,
                        tokenizer=tiny_tokenizer)
    rows = [json.loads(line) for line in (tmp_path / "demos.jsonl").read_text().splitlines()]
    assert [len(r["searches"]) for r in rows] == [1, 2] * 4
    assert not {r["question"] for r in rows} & engine.forgotten
    counts = summary["demo_counts"]
    # the second round built for two-hop questions only
    assert counts["rounds"] == 2 and counts["examples"] == 24 + 24
