"""What the comparison pipeline (`demo.py`) reports: paired bootstrap intervals between policies evaluated
on the same questions, the learning-curve figure, and the Markdown table.

Every RL arm is compared with the warm start it started from, every simulated arm with the real-engine arm,
and a constant-noise arm with the curriculum arm of the same simulator — overall and per number of hops.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from .engines.ledger import SearchCost
from .metrics import REWARDS, paired_bootstrap


def _per_question(row: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(row["eval_dir"]) / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _pair(after: Sequence[dict[str, Any]], before: Sequence[dict[str, Any]], resamples: int) -> dict[str, Any]:
    """`after` − `before`, overall and per number of hops. Each side is the evaluation rows of one arm's seeds
    (one row: one run); with several, a question's score is its strict EM averaged over them."""
    after_preds, before_preds = [_per_question(r) for r in after], [_per_question(r) for r in before]
    hops = sorted({str(p["hops"]) for p in after_preds[0] if p.get("hops") is not None})

    def scores(side_preds: Sequence[list[dict[str, Any]]], hop: str | None) -> dict[str, float]:
        runs = [{p["id"]: p["strict_em"] for p in preds if hop is None or str(p["hops"]) == hop}
                for preds in side_preds]
        return {q: sum(run[q] for run in runs) / len(runs) for q in runs[0]}

    def name(side: Sequence[dict[str, Any]]) -> str:
        return side[0]["method"] + (f", mean of {len(side)} seeds" if len(side) > 1 else "")

    parts = {"all": None, **({h: h for h in hops} if len(hops) > 1 else {})}
    return {"after": name(after), "before": name(before),
            **{part: asdict(paired_bootstrap(scores(before_preds, h), scores(after_preds, h), resamples=resamples))
               for part, h in parts.items()}}


def compare(rows: Sequence[dict[str, Any]], settings) -> list[dict[str, Any]]:
    """Paired strict-EM differences with 95% bootstrap intervals: each RL arm vs the warm start, each
    simulated arm vs the real-engine arm, each constant-noise arm vs the curriculum arm of its simulator.
    With extra seeds, each comparison is made within every seed, then on the mean over the seeds."""
    by_key = {r["key"]: r for r in rows}
    arms = settings.arms
    real = next((a for a in arms if a.engine == "bm25"), None)
    pairs = [(a, None) for a in arms]  # None: the warm start
    pairs += [(a, real) for a in arms if real is not None and a.engine != "bm25"]
    for a in arms:
        curriculum = next((c for c in arms if c.engine == a.engine and c.noise is None), None)
        if a.noise is not None and curriculum is not None:
            pairs.append((curriculum, a))
    seeds = [None, *settings.extra_seeds]

    def runs(arm, seed_list) -> list[dict[str, Any]]:
        return [by_key["warm"]] if arm is None else [by_key[settings.seeded(arm, s).name] for s in seed_list]

    groups = [[s] for s in seeds] + ([seeds] if len(seeds) > 1 else [])  # each seed, then their mean
    return [_pair(runs(after, g), runs(before, g), settings.bootstrap_resamples)
            for after, before in pairs for g in groups]


def _interval(d: dict[str, Any]) -> str:
    return f"{d['difference']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] (+{d['gained']} / -{d['lost']})"


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_learning(out: Path, arms, rows: Sequence[dict[str, Any]], comparisons: Sequence[dict[str, Any]], *,
                  reward: str) -> Path | None:
    """One figure, every arm: training reward (moving mean over 3 steps) and the simulator's noise probability
    against trajectories seen, and the held-out strict EM with the real engine before (the warm start) and
    after RL, with the 95% interval of the gain. Training reward under a noise curriculum falls as documents
    get noisier; the held-out panel says what the policy learned. `reward` names the training reward
    (`rl.reward`) in the reward panel's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {a.name: _metrics(out / f"rl-{a.name}") for a in arms}
    if not any(curves.values()):
        return None
    by_key = {r["key"]: r for r in rows}
    gains = {c["after"]: c["all"] for c in comparisons if c["before"] == by_key["warm"]["method"]}
    fig, (ax_r, ax_p, ax_e) = plt.subplots(1, 3, figsize=(15, 4.2))
    warm = by_key["warm"]["strict_em"]
    for i, a in enumerate(arms):
        rows_ = curves[a.name]
        if not rows_:
            continue
        color = f"C{i}"
        seen, total = [], 0
        for r in rows_:
            total += r.get("batch_trajectories", 0)
            seen.append(total)
        step_rewards = [r.get("reward", float("nan")) for r in rows_]
        smooth = [sum(step_rewards[max(0, j - 2) : j + 1]) / len(step_rewards[max(0, j - 2) : j + 1])
                  for j in range(len(step_rewards))]
        style = "--" if a.seed is not None else "-"  # an extra seed's arm
        ax_r.plot(seen, smooth, color=color, linestyle=style, label=a.label)
        if a.engine != "bm25":
            ax_p.plot(seen, [r.get("noise_p", 0.0) for r in rows_], color=color, linestyle=style, label=a.label)
        g = gains.get(a.label)
        if g is not None:
            after = by_key[a.name]["strict_em"]
            ax_e.plot([0, total], [warm, after], color=color, linestyle=style, marker="o", label=a.label)
            ax_e.errorbar([total], [after], yerr=[[g["difference"] - g["low"]], [g["high"] - g["difference"]]],
                          color=color, capsize=4)
    ax_r.set(title=f"training reward ({REWARDS[reward]}, mean of 3 steps)", xlabel="trajectories seen", ylabel="reward")
    ax_p.set(title="noise probability of a simulated search", xlabel="trajectories seen", ylabel="p(noisy)")
    ax_p.set_ylim(-0.02, 1.0)
    ax_e.set(title="held-out strict EM with BM25 (95% CI of the gain)", xlabel="trajectories seen",
             ylabel="strict EM (%)")
    for ax in (ax_r, ax_p, ax_e):
        ax.grid(alpha=0.3)
    ax_r.legend(fontsize=8)
    ax_e.legend(fontsize=8)
    fig.tight_layout()
    path = out / "learning.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cost_header(result: dict[str, Any]) -> str:
    price = result.get("search_price_per_1000")
    priced = f" (real searches at ${price:,.2f} / 1,000)" if price is not None else ""
    return f"search cost of its training and simulator{priced}"


def cost_cell(row: dict[str, Any]) -> str:
    """The row's search cost: real searches priced, then the simulated ones (tokens and seconds where known)."""
    return SearchCost.from_dict(row["search_cost"]).brief() if row.get("search_cost") else "-"


def results_markdown(result: dict[str, Any]) -> str:
    title = "zerosearch CPU comparison" + (" (quick: tiny random models, numbers mean nothing)" if result["quick"] else "")
    kinds = "single- and two-hop" if len(result["hops"]) > 1 else ("single-hop" if result["hops"] == [1] else "two-hop")
    lines = [
        f"# {title}", "",
        f"Evaluated with the real engine (BM25) on {result['eval_questions']} held-out test questions "
        f"({kinds}), greedy; "
        f"total {result['seconds']:.0f} s of stages.", "",
        "| method | strict EM | cover EM | F1 | searches/question | no answer (%) | strict EM vs warm start "
        "[95% CI] (gained / lost) | RL/warm-start searches on a real engine | real searches to build its simulator | "
        f"{cost_header(result)} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    vs_warm = {c["after"]: c for c in result["comparisons"] if c["before"].startswith("warm start")}
    for r in result["rows"]:
        c = vs_warm.get(r["method"])
        lines.append(f"| {r['method']} | {r['strict_em']:.1f} | {r['cover_em']:.1f} | {r['f1']:.1f} | "
                     f"{r['searches_per_question']:.2f} | {r['no_answer_rate']:.1f} | "
                     f"{_interval(c['all']) if c else '-'} | {r['training_real_searches']} | "
                     f"{r['simulator_real_searches']} | {cost_cell(r)} |")
    hops = sorted({h for r in result["rows"] for h in r["per_hops"]})
    if len(hops) > 1:
        lines += ["", "Strict EM by hops:", "", "| method | " + " | ".join(f"{h}-hop" for h in hops) + " |",
                  "|---|" + "---:|" * len(hops)]
        for r in result["rows"]:
            lines.append(f"| {r['method']} | " + " | ".join(
                f"{r['per_hops'][h]['strict_em']:.1f} (n={r['per_hops'][h]['n']})" if h in r["per_hops"] else "-"
                for h in hops) + " |")
    parts = ["all"] + (hops if len(hops) > 1 else [])
    lines += ["", "Paired differences in strict EM (points; 95% bootstrap interval over questions; questions "
              "gained / lost):", "", "| comparison | " + " | ".join(p if p == "all" else f"{p}-hop" for p in parts)
              + " |", "|---|" + "---:|" * len(parts)]
    for c in result["comparisons"]:
        lines.append(f"| {c['after']} − {c['before']} | " + " | ".join(
            _interval(c[p]) if p in c else "-" for p in parts) + " |")
    checks = result.get("simulator_check") or {}
    if checks:
        lines += ["", "Simulators on held-out searches (see simulator/check/report.md):", "",
                  "| simulator | format valid | useful with answer | noisy with answer (leak) | first hops naming "
                  "the bridge | query `search` answered (%) | titles shared with BM25 | word F1 to BM25 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, c in checks.items():
            bridge = c.get("useful_contains_bridge", {"n": 0})
            named = f"{bridge['contains_target']:.1f} (n={bridge['n']})" if bridge["n"] else "-"
            probe = c.get("content_free_query_answer", {"n": 0})
            gamed = f"{probe['contains_target']:.1f}" if probe["n"] else "-"
            lines.append(f"| {name} | {c['format_valid']:.1f} | {c['useful_contains_answer']['contains_target']:.1f} | "
                         f"{c['noisy_contains_answer']['contains_target']:.1f} | "
                         f"{named} | {gamed} | "
                         f"{c['fidelity_title_overlap']:.1f} | {c['fidelity_text_f1']:.1f} |")
    if result.get("figure"):
        lines += ["", f"Learning curves: {Path(result['figure']).name}"]
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in result["stages_seconds"].items())]
    lines += [f"Resumed: {label}, from its checkpoint of step {r['from_step']} (the stage time above is the last "
              f"attempt's; its steps took {r['step_seconds']:.0f} s in all)" for label, r in result.get("resumed_arms", {}).items()]
    lines.append("")
    return "\n".join(lines)
