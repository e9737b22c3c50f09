"""Format demonstrations for the policy warm start: think → search → information → … → answer.

Small models do not write the protocol's tags zero-shot. A few supervised steps on demonstrations teach the
format. The observations come from the SAME engine the RL run will use, so a simulated pipeline touches no
real search before evaluation. A demonstration is kept only when its documents actually contain what its
reasoning claims (the bridge entity, the answer); otherwise it would teach the policy to make facts up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import protocol
from ..engines.base import USEFUL, SearchEngine, SearchRequest
from ..metrics import contains_answer
from .env import observation_ids
from .rollout import prompt_ids

# World relations "kind.attr[.attr]": the words of a query and of the reasoning for each attribute.
ATTR_QUERY = {
    "birth_city": "birthplace", "birth_year": "birth year", "founder": "founder", "founding_year": "founded",
    "headquarters": "headquarters", "country": "country", "inventor": "inventor", "year": "invented",
}
ATTR_NOUN = {
    "birth_city": "birthplace", "birth_year": "birth year", "founder": "founder", "founding_year": "founding year",
    "headquarters": "headquarters", "country": "country", "inventor": "inventor", "year": "year of invention",
}


@dataclass
class Demonstration:
    question: str
    golden_answers: list[str]
    # (text, written by the environment); environment segments hold the documents' text
    segments: list[tuple[str, bool]] = field(default_factory=list)
    searches: list[dict[str, Any]] = field(default_factory=list)

    def turn_lengths(self, tokenizer) -> list[int]:
        """Tokens of each policy turn (the text between two observations)."""
        return [len(tokenizer(t, add_special_tokens=False).input_ids) for t, env in self.segments if not env]

    @property
    def text(self) -> str:
        return "".join(protocol.observation(t) if env else t for t, env in self.segments)

    def tokenize(self, tokenizer, max_obs_tokens: int) -> tuple[list[int], list[int]]:
        """Token ids and loss mask, built exactly as a rollout builds them (same observation truncation)."""
        ids = prompt_ids(tokenizer, self.question)
        mask = [0] * len(ids)
        for text, env in self.segments:
            seg = observation_ids(tokenizer, text, max_obs_tokens) if env else tokenizer(
                text, add_special_tokens=False).input_ids
            ids += seg
            mask += [0 if env else 1] * len(seg)
        return ids, mask


def plan(example) -> list[tuple[str, str, str]] | None:
    """(query, what is sought, entity) per hop, for world questions; None when the metadata does not say."""
    meta = getattr(example, "metadata", None) or {}
    relation, subject = meta.get("relation"), meta.get("subject")
    if not relation or not subject:
        return None
    attrs = relation.split(".")[1:]
    if not attrs or any(a not in ATTR_QUERY for a in attrs):
        return None
    entities = [subject, meta.get("bridge")]
    if len(attrs) > 1 and not entities[1]:
        return None
    return [(f"{e} {ATTR_QUERY[a]}", ATTR_NOUN[a], e) for a, e in zip(attrs, entities)]


def build_demonstrations(
    examples: Sequence[Any],
    engine: SearchEngine,
    *,
    topk: int = 3,
    seed: int = 0,
    require_facts: bool = True,
) -> tuple[list[Demonstration], dict[str, int]]:
    """Build one demonstration per example with the engine's real answers to its queries.

    Searches of all examples at one hop go to the engine as one batch, each with its own question and
    answers (simulated engines are asked for useful documents). With `require_facts` (the default), a
    demonstration whose documents miss the fact its next step states is dropped. Returns the kept
    demonstrations and counts.
    """
    rng = random.Random(seed)
    plans = []
    for ex in examples:
        p = plan(ex)
        plans.append(p if p is not None else [(protocol.normalise_question(ex.question), "answer", "")])
    demos = [Demonstration(ex.question, list(ex.golden_answers)) for ex in examples]
    alive = list(range(len(examples)))
    counts = {"examples": len(examples), "kept": 0, "dropped_missing_fact": 0, "searches": 0}
    max_hops = max(len(p) for p in plans) if plans else 0
    for hop in range(max_hops):
        todo = [i for i in alive if hop < len(plans[i])]
        reqs = [SearchRequest(plans[i][hop][0], question=examples[i].question,
                              golden_answers=list(examples[i].golden_answers), noise=USEFUL) for i in todo]
        results = engine.search(reqs, topk=topk) if reqs else []
        counts["searches"] += len(reqs)
        for i, res in zip(todo, results):
            query, noun, entity = plans[i][hop]
            if hop == 0:
                # The first thought states the whole plan, so a two-hop question keeps its second hop in view.
                think = f"I need to find the {noun} of {entity}." if entity else "I need to search for this."
                if len(plans[i]) > 1:
                    think = think[:-1] + f", then the {plans[i][1][1]} of the {noun}."
            else:
                # The thought carries the plan's next step forward (the query copies it); it leaves out the
                # first entity, as the turn must fit the rollout's per-turn budget (invented names take many
                # tokens).
                think = f"The {plans[i][hop - 1][1]} is {entity}. Now I need the {noun} of {entity}."
            demos[i].segments.append((f"<think> {think} </think>\n<search> {query} </search>", False))
            docs_text = res.docs_text()
            demos[i].segments.append((docs_text, True))
            demos[i].searches.append({"query": query, "kind": res.kind, "engine": res.engine, "real": res.real})
            last = hop == len(plans[i]) - 1
            needed = examples[i].golden_answers if last else [plans[i][hop + 1][2]]
            if res.error or (require_facts and not contains_answer(docs_text, needed, blank_matches=True)):
                alive.remove(i)
                counts["dropped_missing_fact"] += 1
    kept = []
    for i in alive:
        answer = examples[i].golden_answers[0]
        query, noun, entity = plans[i][-1]
        think = f"The {noun} of {entity} is {answer}." if entity else f"The documents say {answer}."
        demos[i].segments.append((f"<think> {think} </think>\n<answer> {answer} </answer>", False))
        kept.append(demos[i])
    rng.shuffle(kept)
    counts["kept"] = len(kept)
    return kept, counts
