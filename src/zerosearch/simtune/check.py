"""Quality report of a simulator against a real engine on held-out queries.

- format: share of results parsed into exactly k documents with no repair, each of a sensible length;
- controllability: share of USEFUL results that contain what the search was after (a gold answer for a
  final hop), and share of NOISY results that contain it (answer leak);
- fidelity: overlap of the simulated top-k with the real engine's top-k for the same query (titles in
  common, and word-level F1 between the two document sets);
- cost: generated tokens and seconds per query.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from ..engines.base import NOISY, USEFUL, SearchRequest
from ..engines.simulated import SimulatedEngine
from ..io import atomic_write_text, write_jsonl
from ..metrics import contains_answer, normalize_answer, token_f1
from .samples import SearchSample

MIN_WORDS, MAX_WORDS = 4, 120
# A query that names nothing the question is about. A real engine returns nothing useful for it; a simulator
# that is told the answer and still writes it into the documents can be gamed by a policy that stops writing
# queries (seen in RL against the tuned SmolLM2 simulator at lr 5e-5: the policy learned `<search> search
# </search>`).
PROBE_QUERY = "search"
PROBE = "probe"


def _rate(xs: Sequence[bool]) -> float:
    return 100.0 * sum(xs) / len(xs) if xs else float("nan")


def check_simulator(sim: SimulatedEngine, samples: Sequence[SearchSample], *, k: int) -> dict[str, Any]:
    """Ask the simulator for useful and for noisy documents for every held-out search; compare with the real ones."""
    if not samples:
        raise ValueError("no held-out searches to check")
    reqs, meta = [], []
    for s in samples:
        for kind in (USEFUL, NOISY):
            reqs.append(SearchRequest(s.query, question=s.question, golden_answers=s.golden_answers, noise=kind))
            meta.append((s, kind))
        if list(s.needed) == list(s.golden_answers):
            reqs.append(SearchRequest(PROBE_QUERY, question=s.question, golden_answers=s.golden_answers, noise=USEFUL))
            meta.append((s, PROBE))
    t0 = time.perf_counter()
    results = sim.search(reqs, topk=k)
    seconds = time.perf_counter() - t0
    rows = []
    for (s, kind), r in zip(meta, results):
        sim_text = " ".join(f"{d.title} {d.text}" for d in r.documents)
        real_text = " ".join(f"{d['title']} {d['text']}" for d in s.documents)
        lengths = [len(d.text.split()) for d in r.documents]
        real_titles = {normalize_answer(d["title"]) for d in s.documents}
        rows.append({
            "kind": kind, "final_hop": list(s.needed) == list(s.golden_answers), "error": r.error,
            "valid": r.ok and r.repaired == 0 and len(r.documents) == k and all(MIN_WORDS <= n <= MAX_WORDS for n in lengths),
            "hit": contains_answer(sim_text, s.needed),
            "title_overlap": sum(normalize_answer(d.title) in real_titles for d in r.documents) / k,
            "text_f1": token_f1(sim_text, [real_text]),
            "tokens": r.meta.get("tokens", 0),
            "query": s.query, "documents": [{"title": d.title, "text": d.text} for d in r.documents],
        })

    def part(pred) -> dict[str, float]:
        sel = [x for x in rows if pred(x)]
        return {"n": len(sel), "contains_target": _rate([x["hit"] for x in sel])}

    useful = [x for x in rows if x["kind"] == USEFUL]
    probes = [x for x in rows if x["kind"] == PROBE]
    rows = [x for x in rows if x["kind"] != PROBE]
    report = {
        "n_queries": len(samples),
        "k": k,
        "format_valid": _rate([x["valid"] for x in rows]),
        "errors": sum(x["error"] is not None for x in rows),
        # useful results for the content-free query that still hold the answer (a real engine: 0)
        "content_free_query_answer": {"n": len(probes), "contains_target": _rate([x["hit"] for x in probes])},
        "useful_contains_answer": part(lambda x: x["kind"] == USEFUL and x["final_hop"]),
        "noisy_contains_answer": part(lambda x: x["kind"] == NOISY and x["final_hop"]),
        "useful_contains_target_all_hops": part(lambda x: x["kind"] == USEFUL),
        # a two-hop question's first search: does the simulator name the bridge entity (knowledge, not echo)?
        "useful_contains_bridge": part(lambda x: x["kind"] == USEFUL and not x["final_hop"]),
        "noisy_contains_target_all_hops": part(lambda x: x["kind"] == NOISY),
        "fidelity_title_overlap": 100.0 * sum(x["title_overlap"] for x in useful) / max(len(useful), 1),
        "fidelity_text_f1": 100.0 * sum(x["text_f1"] for x in useful) / max(len(useful), 1),
        "tokens_per_query": sum(x["tokens"] for x in rows) / len(rows),
        "seconds_per_query": seconds / len(results),
        "simulator": sim.describe(),
    }
    return {"report": report, "rows": rows + probes}


def report_markdown(reports: dict[str, dict[str, Any]]) -> str:
    """Side-by-side table of one or more simulators' reports."""
    names = list(reports)
    line = lambda label, f: f"| {label} | " + " | ".join(f(reports[n]) for n in names) + " |"  # noqa: E731
    out = ["# Simulator quality", "", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    out.append(line("held-out queries", lambda r: str(r["n_queries"])))
    out.append(line("format valid (%)", lambda r: f"{r['format_valid']:.1f}"))
    out.append(line("useful results containing the answer (%, final hop)",
                    lambda r: f"{r['useful_contains_answer']['contains_target']:.1f} (n={r['useful_contains_answer']['n']})"))
    out.append(line("noisy results containing the answer (%, leak)",
                    lambda r: f"{r['noisy_contains_answer']['contains_target']:.1f} (n={r['noisy_contains_answer']['n']})"))
    out.append(line("answer guard (gold answers banned from noisy results)",
                    lambda r: "on" if r["simulator"].get("answer_guard") else "off"))
    out.append(line("useful results containing the hop's target (%, all hops)",
                    lambda r: f"{r['useful_contains_target_all_hops']['contains_target']:.1f}"))
    out.append(line("useful first-hop results naming the bridge entity (%, two-hop questions)",
                    lambda r: _bridge(r)))
    out.append(line(f"useful results for the query '{PROBE_QUERY}' holding the answer (%, a real engine: 0)",
                    lambda r: f"{r['content_free_query_answer']['contains_target']:.1f}"
                    if r.get("content_free_query_answer", {}).get("n") else "-"))
    out.append(line("fidelity: titles shared with the real top-k (%)", lambda r: f"{r['fidelity_title_overlap']:.1f}"))
    out.append(line("fidelity: word F1 with the real top-k (%)", lambda r: f"{r['fidelity_text_f1']:.1f}"))
    out.append(line("tokens per query", lambda r: f"{r['tokens_per_query']:.0f}"))
    out.append(line("seconds per query", lambda r: f"{r['seconds_per_query']:.2f}"))
    return "\n".join(out) + "\n"


def _bridge(report: dict[str, Any]) -> str:
    part = report.get("useful_contains_bridge") or {"n": 0}
    return f"{part['contains_target']:.1f} (n={part['n']})" if part["n"] else "-"


def write_check(result: dict[str, Any], out_dir: str | Path, name: str) -> None:
    out = Path(out_dir)
    atomic_write_text(out / f"{name}.json", json.dumps(result["report"], indent=2))
    write_jsonl(out / f"{name}.rows.jsonl", result["rows"])
