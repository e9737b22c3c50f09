"""Policy warm start: a few SFT steps on format demonstrations built with the run's own engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..agent.demos import build_demonstrations
from ..data.qa import QAExample
from ..engines.base import SearchEngine
from ..engines.ledger import SERPAPI_PRICE_PER_1000, metered
from ..io import atomic_write_text, write_jsonl
from .sft import SFTConfig, TokenizedExample, sft_train


def warmstart(
    policy: str,
    engine: SearchEngine,
    examples: Sequence[QAExample],
    out_dir: str | Path,
    *,
    sft: SFTConfig,
    n_demos: int = 64,
    topk: int = 3,
    max_obs_tokens: int = 256,
    require_facts: bool = True,
    model=None,
    tokenizer=None,
    price_per_1000: float = SERPAPI_PRICE_PER_1000,
) -> dict[str, Any]:
    """Fine-tune `policy` on demonstrations for the first `n_demos` usable training questions.

    Writes the model to out_dir/model, the demonstrations to out_dir/demos.jsonl and a summary, whose
    `search_cost` prices the real searches at `price_per_1000` USD per 1,000."""
    from ..llm.local import load_causal_lm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        model, tokenizer = load_causal_lm(policy)
    # Build more than needed: demonstrations whose documents miss a needed fact are dropped.
    pool = list(examples)[: max(n_demos * 2, n_demos + 16)]
    meter = metered(engine, price_per_1000)
    demos, counts = build_demonstrations(pool, meter, topk=topk, seed=sft.seed, require_facts=require_facts)
    demos = demos[:n_demos]
    if not demos:
        raise RuntimeError(f"no usable demonstrations from {len(pool)} questions ({counts}); is the engine working?")
    write_jsonl(out / "demos.jsonl", ({"question": d.question, "golden_answers": d.golden_answers, "text": d.text,
                                       "searches": d.searches} for d in demos))
    tokenized = [TokenizedExample(*d.tokenize(tokenizer, max_obs_tokens)) for d in demos]
    summary = sft_train(model, tokenizer, tokenized, out, sft)
    summary.update(demos=len(demos), demo_counts=counts, engine=engine.describe(),
                   real_searches=meter.ledger.real_searches, search_cost=meter.ledger.to_dict())
    model_out = summary.pop("model")
    atomic_write_text(out / "warmstart.json", json.dumps(summary, indent=2))
    return {**summary, "model": model_out}
