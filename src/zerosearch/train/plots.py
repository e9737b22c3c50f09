"""PNG plots of a training run (reward, searches per question, noise probability against step)."""

from __future__ import annotations

import json
from pathlib import Path

from ..metrics import REWARDS


def plot_training(metrics_path: str | Path, out_dir: str | Path, *, reward: str) -> list[Path]:
    """`reward` (`rl.reward`) names the training reward on the reward plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(metrics_path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if not rows:
        return []
    steps = [r["step"] for r in rows]
    panels = [
        ("reward", f"reward ({REWARDS[reward]})", "reward.png"),
        ("searches_per_question", "searches per question", "searches.png"),
        ("noise_p", "noise probability p(step)", "noise.png"),
    ]
    written = []
    for key, label, name in panels:
        ys = [r.get(key, float("nan")) for r in rows]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(steps, ys, marker="o")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(Path(out_dir) / name, dpi=100)
        plt.close(fig)
        written.append(Path(out_dir) / name)
    return written
