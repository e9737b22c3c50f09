"""Policy warm start: a few SFT steps on format demonstrations built with the run's own engine."""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from ..agent.demos import Demonstration, build_demonstrations
from ..data.qa import QAExample
from ..engines.base import SearchEngine
from ..engines.ledger import SERPAPI_PRICE_PER_1000, metered
from ..io import atomic_write_text, write_jsonl
from ..settings import WarmstartConfig
from .sft import TokenizedExample, sft_train

log = logging.getLogger(__name__)
T = TypeVar("T")


def in_turn(items: Iterable[T], key: Callable[[T], int]) -> list[T]:
    """The items of each key taken in turn (1, 2, 1, 2, …; the rest of a larger group at the end), each
    group in its own order."""
    groups: dict[int, list[T]] = {}
    for x in items:
        groups.setdefault(key(x), []).append(x)
    rows = itertools.zip_longest(*(groups[k] for k in sorted(groups)))
    return [x for row in rows for x in row if x is not None]


def _hops(example: QAExample) -> int:
    return (example.metadata or {}).get("hops", 1)


def _build(examples: list[QAExample], n_demos: int, meter, cfg: WarmstartConfig, topk: int, tokenizer,
           max_turn_tokens: int | None) -> tuple[list[Demonstration], Counter]:
    """Demonstrations in rounds until there are `n_demos` (with `cfg.balance_hops`: until each hop has its
    share) or the examples run out. A round builds more than it needs: a demonstration whose documents miss
    a needed fact is dropped, a multi-hop one more often (a bridge missing from the documents)."""
    kinds = sorted({_hops(q) for q in examples})
    share = -(-n_demos // max(len(kinds), 1))

    def missing(demos: list[Demonstration]) -> set[int]:
        if not cfg.balance_hops:
            return set(kinds) if len(demos) < n_demos else set()
        have = Counter(len(d.searches) for d in demos)
        return {h for h in kinds if have[h] < share}

    demos: list[Demonstration] = []
    counts: Counter = Counter()
    todo, size = examples, max(n_demos * 2, n_demos + 16)
    while todo and (short := missing(demos)):
        todo = [q for q in todo if _hops(q) in short]
        pool, todo = todo[:size], todo[size:]
        built, c = build_demonstrations(pool, meter, topk=topk, seed=cfg.sft.seed + counts["rounds"],
                                        require_facts=cfg.require_facts)
        counts.update(c, rounds=1)
        if max_turn_tokens is not None:
            fits = [d for d in built if max(d.turn_lengths(tokenizer)) <= max_turn_tokens]
            counts["dropped_over_turn_budget"] += len(built) - len(fits)
            built = fits
        demos += built
    if counts["dropped_over_turn_budget"]:
        log.warning("%d demonstrations have a turn longer than the rollout's %d tokens a turn "
                    "(rollout.max_new_tokens): dropped", counts["dropped_over_turn_budget"], max_turn_tokens)
    return demos, counts


def warmstart(
    policy: str,
    engine: SearchEngine,
    examples: Sequence[QAExample],
    out_dir: str | Path,
    *,
    cfg: WarmstartConfig,
    topk: int = 3,
    max_obs_tokens: int = 256,
    max_turn_tokens: int | None = None,
    model=None,
    tokenizer=None,
    price_per_1000: float = SERPAPI_PRICE_PER_1000,
) -> dict[str, Any]:
    """Fine-tune `policy` on demonstrations for the first `cfg.demos` usable training questions (with
    `cfg.balance_hops`, single- and multi-hop questions taken in turn, and built until each has its share).

    With `max_turn_tokens` (the rollout's per-turn budget), a demonstration with a longer policy turn is
    dropped and counted: the rollout would cut that turn, so the policy would learn a move it cannot make.

    Writes the model to out_dir/model, the demonstrations to out_dir/demos.jsonl and a summary, whose
    `search_cost` prices the real searches at `price_per_1000` USD per 1,000."""
    from ..llm.local import load_causal_lm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        model, tokenizer = load_causal_lm(policy)
    n_demos = cfg.demos
    if cfg.balance_hops:
        examples = in_turn(examples, _hops)
    meter = metered(engine, price_per_1000)
    demos, counts = _build(list(examples), n_demos, meter, cfg, topk, tokenizer, max_turn_tokens)
    if cfg.balance_hops:
        demos = in_turn(demos, lambda d: len(d.searches))
    demos = demos[:n_demos]
    if not demos:
        hint = ("raise rollout.max_new_tokens" if counts.get("dropped_over_turn_budget")
                else "is the engine working?")
        raise RuntimeError(f"no usable demonstrations from {counts['examples']} questions ({dict(counts)}); {hint}")
    write_jsonl(out / "demos.jsonl", ({"question": d.question, "golden_answers": d.golden_answers, "text": d.text,
                                       "searches": d.searches} for d in demos))
    tokenized = [TokenizedExample(*d.tokenize(tokenizer, max_obs_tokens)) for d in demos]
    summary = sft_train(model, tokenizer, tokenized, out, cfg.sft)
    summary.update(demos=len(demos), demo_counts=dict(counts), engine=engine.describe(),
                   real_searches=meter.ledger.real_searches, search_cost=meter.ledger.to_dict())
    model_out = summary.pop("model")
    atomic_write_text(out / "warmstart.json", json.dumps(summary, indent=2))
    return {**summary, "model": model_out}
