"""Collect simulation-tuning data: a policy searches a REAL engine over training questions and every search
is recorded — question, gold answers, query, the top-k documents the policy read, the next k documents
(ranks k+1..2k: related but less relevant, the raw material for noisy examples), whether the trajectory
ended with a right answer, and per document whether it contains a gold answer.

Policies: a language model run through the search protocol (`rollout`), or `plan`: the query plan the
warm-start demonstrations follow (needs the world's question metadata), for models that cannot search yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ..agent.demos import plan
from ..engines.base import Document, SearchEngine, SearchRequest
from ..engines.ledger import SERPAPI_PRICE_PER_1000, metered
from ..io import append_jsonl, read_jsonl
from ..metrics import contains_answer, strict_em
from .samples import SearchSample


def _docs(docs: Sequence[Document], answers: Sequence[str]) -> list[dict[str, Any]]:
    return [{"id": d.id, "title": d.title, "text": d.text,
             "contains_answer": contains_answer(f"{d.title} {d.text}", answers)} for d in docs]


def _planned_searches(ex) -> list[tuple[str, list[str]]] | None:
    p = plan(ex)
    if p is None:
        return None
    out = []
    for hop, (query, _noun, _entity) in enumerate(p):
        needed = [p[hop + 1][2]] if hop + 1 < len(p) else list(ex.golden_answers)
        out.append((query, needed))
    return out


def collect(
    examples: Sequence[Any],
    engine: SearchEngine,
    out_path: str | Path,
    *,
    topk: int = 3,
    policy=None,
    rollout_cfg=None,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    price_per_1000: float = SERPAPI_PRICE_PER_1000,
) -> dict[str, Any]:
    """Append one JSON line per search to out_path; questions already there are skipped (resumable).

    `policy` is None for the query plan, or a (model, tokenizer) pair run with `rollout_cfg`. The stats'
    `search_cost` prices this call's real searches (a policy's own searches included) at `price_per_1000`."""
    if not engine.real:
        raise ValueError("collect needs a real engine: the simulator learns to imitate it")
    meter = metered(engine, price_per_1000)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a line cut by a crash is passed over: its question is collected again
    done = {r["question_id"] for r in (read_jsonl(out, skip_broken=True) if out.exists() else [])
            if isinstance(r, dict) and "question_id" in r}
    todo = [ex for ex in examples if ex.id not in done]
    stats = {"questions": 0, "searches": 0, "skipped_done": len(examples) - len(todo), "skipped_no_plan": 0}
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        samples = _collect_batch(chunk, meter, topk, policy, rollout_cfg, stats)
        append_jsonl(out, samples)
        stats["questions"] += len(chunk)
        stats["searches"] += len(samples)
        if progress is not None:
            progress(len(chunk))
    return {**stats, "search_cost": meter.ledger.to_dict()}


def _collect_batch(chunk, engine, topk, policy, rollout_cfg, stats) -> list[SearchSample]:
    # (example, hop, query, needed) for every search, and whether each trajectory ended right
    searches: list[tuple[Any, int, str, list[str]]] = []
    correct: dict[str, bool] = {}
    if policy is None:
        for ex in chunk:
            planned = _planned_searches(ex)
            if planned is None:
                stats["skipped_no_plan"] += 1
                continue
            searches += [(ex, hop, q, needed) for hop, (q, needed) in enumerate(planned)]
    else:
        from ..agent.rollout import rollout

        model, tokenizer = policy
        trajs = rollout(model, tokenizer, chunk, engine, rollout_cfg)
        for ex, t in zip(chunk, trajs):
            correct[ex.id] = bool(strict_em(t.answer, ex.golden_answers))
            for hop, s in enumerate(t.searches):
                searches.append((ex, hop, s.query, list(ex.golden_answers)))
    if not searches:
        return []
    results = engine.search([SearchRequest(q) for _, _, q, _ in searches], topk=2 * topk)
    # With the plan, a trajectory is right when its last search found the answer (the plan then reads it).
    if policy is None:
        for (ex, hop, q, needed), res in zip(searches, results):
            last = hop == len(_planned_searches(ex)) - 1
            if last:
                correct[ex.id] = any(contains_answer(f"{d.title} {d.text}", ex.golden_answers)
                                     for d in res.documents[:topk])
    samples = []
    for n, ((ex, hop, q, needed), res) in enumerate(zip(searches, results)):
        samples.append(SearchSample(
            id=f"{ex.id}-s{hop}", question_id=ex.id, question=ex.question, golden_answers=list(ex.golden_answers),
            query=q, hop=hop, needed=needed, documents=_docs(res.documents[:topk], ex.golden_answers),
            next_documents=_docs(res.documents[topk : 2 * topk], ex.golden_answers),
            trajectory_correct=correct.get(ex.id, False), engine=res.engine,
            meta={"error": res.error} if res.error else {},
        ))
    return samples
