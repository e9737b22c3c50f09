"""Label collected document sets useful or noisy, balance them, and write the simulator's SFT set.

Each collected search gives two candidate sets for its query: the top-k the policy read and the next k
(ranks k+1..2k). Rules:
- `judge`: an LLM judge decides whether the documents suffice to answer the query (the paper's §3.3 rule);
- `trajectory`: top-k sets of trajectories that ended with a right answer are useful, every other set
  noisy (the paper's other description);
- `contains`: a set is useful when one of its documents contains a gold answer;
- `hop`: a set is useful when it contains what its search was after (the bridge entity of a first hop,
  else a gold answer) — an exact judge where the question metadata says what each hop needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..engines.base import NOISY, USEFUL
from ..engines.simulated import sft_prompt, sft_target
from ..io import write_jsonl
from ..llm.base import TextGenerator
from ..metrics import contains_answer
from .samples import SearchSample

RULES = ("judge", "trajectory", "contains", "hop")

JUDGE_PROMPT = (
    "Query: {query}\n\nDocuments:\n{documents}\n\n"
    "Do these documents contain sufficient information to answer the query? Answer only yes or no."
)


@dataclass
class LabelledSet:
    sample_id: str
    question_id: str
    question: str
    golden_answers: list[str]
    query: str
    needed: list[str]
    documents: list[dict[str, Any]]
    origin: str  # "top" (what the policy read) or "next" (ranks k+1..2k)
    label: str  # useful / noisy


def _text(docs: Sequence[dict[str, Any]]) -> str:
    return " ".join(f"{d['title']} {d['text']}" for d in docs)


def _judge(sets: list[tuple[SearchSample, list[dict], str]], judge: TextGenerator) -> list[bool]:
    prompts = [[{"role": "user", "content": JUDGE_PROMPT.format(
        query=s.query, documents="\n".join(f"({d['title']}) {d['text']}" for d in docs))}] for s, docs, _ in sets]
    gens = judge.generate(prompts, max_new_tokens=4, temperature=0.0)
    failed = [g.error for g in gens if not g.ok]
    if failed:
        raise RuntimeError(f"the judge failed on {len(failed)} of {len(gens)} sets, e.g. {failed[0]}")
    return [g.text.strip().lower().startswith("yes") for g in gens]


def label_samples(
    samples: Sequence[SearchSample],
    rule: str,
    *,
    k: int,
    judge: TextGenerator | None = None,
    balance: bool = True,
    seed: int = 0,
) -> tuple[list[LabelledSet], dict[str, int]]:
    if rule not in RULES:
        raise ValueError(f"unknown labelling rule {rule!r}; choose one of {', '.join(RULES)}")
    if rule == "judge" and judge is None:
        raise ValueError("the judge rule needs a judge model (--judge-model or --judge-url)")
    sets = [(s, docs, origin) for s in samples for docs, origin in ((s.documents, "top"), (s.next_documents, "next"))
            if len(docs) == k and not s.meta.get("error")]
    if rule == "judge":
        useful = _judge(sets, judge)
    elif rule == "trajectory":
        useful = [origin == "top" and s.trajectory_correct for s, _, origin in sets]
    elif rule == "contains":
        useful = [contains_answer(_text(docs), s.golden_answers) for s, docs, _ in sets]
    else:
        useful = [contains_answer(_text(docs), s.needed) for s, docs, _ in sets]
    out = [LabelledSet(s.id, s.question_id, s.question, s.golden_answers, s.query, s.needed,
                       [{"title": d["title"], "text": d["text"]} for d in docs], origin, USEFUL if u else NOISY)
           for (s, docs, origin), u in zip(sets, useful)]
    counts = {"sets": len(out), "useful": sum(x.label == USEFUL for x in out), "noisy": sum(x.label == NOISY for x in out)}
    if balance:
        out = _balanced_pairs(out, random.Random(seed))
    counts.update(kept_useful=sum(x.label == USEFUL for x in out), kept_noisy=sum(x.label == NOISY for x in out))
    return out, counts


def _balanced_pairs(sets: list[LabelledSet], rng: random.Random) -> list[LabelledSet]:
    """As many useful as noisy sets, in (useful, noisy) pairs; pairs for the same query come first.

    A pair differs only in the kind the prompt asks for, so a batch that holds both teaches the simulator
    what the word "useful" or "noisy" changes; sft_train keeps this order."""
    by_sample: dict[str, dict[str, list[LabelledSet]]] = {}
    for x in sets:
        by_sample.setdefault(x.sample_id, {USEFUL: [], NOISY: []})[x.label].append(x)
    same, rest_u, rest_n = [], [], []
    for groups in by_sample.values():
        u, n = groups[USEFUL], groups[NOISY]
        if u and n:
            same.append((u[0], n[0]))
            u, n = u[1:], n[1:]
        rest_u += u
        rest_n += n
    rng.shuffle(same)
    rng.shuffle(rest_u)
    rng.shuffle(rest_n)
    pairs = same + list(zip(rest_u, rest_n))
    return [x for pair in pairs for x in pair]


def sft_record(x: LabelledSet, *, words: int = 30) -> dict[str, Any]:
    """One chat-messages example (the format TRL and LLaMA-Factory both read): the SFT prompt → k documents."""
    k = len(x.documents)
    prompt = sft_prompt(x.query, x.label, x.question, x.golden_answers[0], k, words)
    target = sft_target([(d["title"], d["text"]) for d in x.documents])
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": target}],
            "label": x.label, "query": x.query, "question_id": x.question_id, "origin": x.origin}


def write_sft_set(records: Sequence[dict[str, Any]], path: str | Path) -> None:
    write_jsonl(path, records)
