"""Score a policy or a baseline over QA datasets with any engine.

Methods:
- `agent`: the multi-turn search protocol (the trained policy's own behaviour), greedy.
- `direct`: answer with no search.
- `rag`: one retrieval of k documents with the question as query, then answer.
The baselines' prompts end with an opened `<answer>` tag, so any instruction model answers in the
format that is scored. Every question is scored (none dropped) and counted per dataset.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from . import protocol
from .agent.rollout import Trajectory, rollout
from .data.qa import QAExample
from .engines.base import SearchEngine, SearchRequest
from .engines.ledger import SERPAPI_PRICE_PER_1000, MeteredEngine, SearchCost
from .io import atomic_write_text, write_jsonl
from .llm.local import render_chat
from .metrics import score_answer
from .settings import RolloutConfig

METHODS = ("agent", "direct", "rag")

DIRECT_PROMPT = (
    "Answer the given question. Give only the answer inside <answer> and </answer>, without detailed "
    "illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)
RAG_PROMPT = (
    "Answer the given question using the documents below. Give only the answer inside <answer> and </answer>, "
    "without detailed illustrations. For example, <answer> Beijing </answer>.\n\n"
    "Documents:\n{documents}\n\nQuestion: {question}\n"
)


@dataclass
class Report:
    method: str
    n: int
    strict_em: float
    cover_em: float
    f1: float
    searches_per_question: float
    docs_per_question: float
    answer_words: float
    no_answer_rate: float
    real_searches: int
    seconds: float
    per_dataset: dict[str, dict[str, float]] = field(default_factory=dict)
    per_hops: dict[str, dict[str, float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    search_cost: dict[str, Any] = field(default_factory=dict)  # SearchCost.to_dict() of the run's searches

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "n": len(rows),
        "strict_em": 100 * _mean([r["strict_em"] for r in rows]),
        "cover_em": 100 * _mean([r["cover_em"] for r in rows]),
        "f1": 100 * _mean([r["f1"] for r in rows]),
        "searches_per_question": _mean([r["searches"] for r in rows]),
    }


def _baseline_prompt(tokenizer, method: str, question: str, docs_text: str = "") -> list[int]:
    q = protocol.normalise_question(question)
    content = DIRECT_PROMPT.format(question=q) if method == "direct" else RAG_PROMPT.format(question=q, documents=docs_text)
    text = render_chat(tokenizer, [{"role": "user", "content": content}]) + protocol.ANSWER[0]
    return tokenizer(text, add_special_tokens=False).input_ids


def _baseline_answer(traj: Trajectory) -> str | None:
    """The prompt opened <answer>; the answer is what the model wrote before closing it (or stopping)."""
    text = traj.turns[0]["text"] if traj.turns else ""
    answer = text.split(protocol.ANSWER[1])[0].strip()
    return answer or None


def run_eval(
    method: str,
    model,
    tokenizer,
    examples: Sequence[QAExample],
    engine: SearchEngine | None,
    cfg: RolloutConfig,
    *,
    progress: Callable[[int], None] | None = None,
    price_per_1000: float = SERPAPI_PRICE_PER_1000,
) -> tuple[Report, list[dict[str, Any]]]:
    """Evaluate greedily; return the report and one row per question (answer, scores, searches, text).
    The report's `search_cost` prices the real searches at `price_per_1000` USD per 1,000."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method in ("agent", "rag") and engine is None:
        raise ValueError(f"method {method!r} needs a search engine")
    cost = SearchCost(price_per_1000=price_per_1000)
    if engine is not None:
        engine = MeteredEngine(engine, cost)
    cfg = replace(cfg, temperature=0.0)
    t0 = time.perf_counter()
    retrieved: dict[int, Any] = {}
    if method == "agent":
        trajs = rollout(model, tokenizer, examples, engine, cfg, progress=progress)
    else:
        if method == "rag":
            results = engine.search([SearchRequest(protocol.normalise_question(ex.question), question=ex.question,
                                                   golden_answers=list(ex.golden_answers)) for ex in examples])
            retrieved = dict(enumerate(results))
        index = {id(ex): i for i, ex in enumerate(examples)}

        def prompt_fn(ex):
            i = index[id(ex)]
            docs = retrieved[i].docs_text() if method == "rag" else ""
            return _baseline_prompt(tokenizer, method, ex.question, docs)

        trajs = rollout(model, tokenizer, examples, None, replace(cfg, max_turns=0), prompt_fn=prompt_fn,
                        progress=progress)
    rows = []
    for i, (ex, traj) in enumerate(zip(examples, trajs)):
        answer = traj.answer if method == "agent" else _baseline_answer(traj)
        s = score_answer(answer, ex.golden_answers)
        searches = traj.searches if method == "agent" else []
        n_search = len(searches) + (1 if method == "rag" else 0)
        n_docs = sum(x.n_docs for x in searches) + (len(retrieved[i].documents) if method == "rag" else 0)
        n_real = sum(x.real for x in searches) + (int(retrieved[i].real) if method == "rag" else 0)
        rows.append({
            "id": ex.id, "source": ex.source, "hops": ex.metadata.get("hops"), "question": ex.question,
            "golden_answers": list(ex.golden_answers), "answer": answer, "strict_em": s.strict_em,
            "cover_em": s.cover_em, "f1": s.f1, "searches": n_search, "docs": n_docs, "real_searches": n_real,
            "queries": [x.query for x in searches], "text": traj.text,
        })
    if len(rows) != len(examples):  # rule 4: every question is scored
        raise RuntimeError(f"scored {len(rows)} of {len(examples)} questions")
    by_source: dict[str, list] = defaultdict(list)
    by_hops: dict[str, list] = defaultdict(list)
    for r in rows:
        by_source[r["source"]].append(r)
        if r["hops"] is not None:
            by_hops[str(r["hops"])].append(r)
    overall = _summary(rows)
    answered = [r for r in rows if r["answer"] is not None]
    report = Report(
        method=method,
        n=len(rows),
        strict_em=overall["strict_em"],
        cover_em=overall["cover_em"],
        f1=overall["f1"],
        searches_per_question=overall["searches_per_question"],
        docs_per_question=_mean([r["docs"] for r in rows]),
        answer_words=_mean([len(r["answer"].split()) for r in answered]),
        no_answer_rate=100 * (1 - len(answered) / max(len(rows), 1)),
        real_searches=sum(r["real_searches"] for r in rows),
        seconds=time.perf_counter() - t0,
        per_dataset={k: _summary(v) for k, v in sorted(by_source.items())},
        per_hops={k: _summary(v) for k, v in sorted(by_hops.items())},
        meta={"engine": engine.describe() if engine else None, "rollout": asdict(cfg)},
        search_cost=cost.to_dict(),
    )
    return report, rows


def report_markdown(report: Report, title: str = "") -> str:
    lines = [f"# {title or 'Evaluation'}", ""]
    lines.append(f"method `{report.method}`, {report.n} questions, {report.seconds:.0f} s")
    lines.append("")
    lines.append("| dataset | n | strict EM | cover EM | F1 | searches/q |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name, s in report.per_dataset.items():
        lines.append(f"| {name} | {s['n']} | {s['strict_em']:.1f} | {s['cover_em']:.1f} | {s['f1']:.1f} | "
                     f"{s['searches_per_question']:.2f} |")
    lines.append(f"| **all** | {report.n} | {report.strict_em:.1f} | {report.cover_em:.1f} | {report.f1:.1f} | "
                 f"{report.searches_per_question:.2f} |")
    if report.per_hops:
        lines += ["", "| hops | n | strict EM | cover EM | F1 | searches/q |", "|---|---:|---:|---:|---:|---:|"]
        for h, s in report.per_hops.items():
            lines.append(f"| {h} | {s['n']} | {s['strict_em']:.1f} | {s['cover_em']:.1f} | {s['f1']:.1f} | "
                         f"{s['searches_per_question']:.2f} |")
    lines += ["", f"documents read per question: {report.docs_per_question:.2f}; mean answer length: "
              f"{report.answer_words:.2f} words; no answer: {report.no_answer_rate:.1f}%; searches that reached a "
              f"real engine: {report.real_searches}", ""]
    if report.search_cost:
        lines += [f"search cost: {report.search_cost['summary']}", ""]
    return "\n".join(lines)


def write_report(report: Report, rows: list[dict[str, Any]], out_dir: str | Path, title: str = "") -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "rows": out / "predictions.jsonl"}
    atomic_write_text(paths["json"], json.dumps(report.to_dict(), indent=2))
    atomic_write_text(paths["markdown"], report_markdown(report, title))
    write_jsonl(paths["rows"], rows)
    return paths
