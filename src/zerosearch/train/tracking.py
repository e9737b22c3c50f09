"""Experiment tracking through transformers' `report_to`, shared by the RL and SFT trainers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


TENSORBOARD_DIR = "tensorboard"  # inside the run folder, next to metrics.jsonl

# The module each tracker needs, and how to get it.
_NEEDS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install 'zerosearch[tracking]' (tensorboardX)"),
    "wandb": (("wandb",), "pip install wandb"),
    "trackio": (("trackio",), "pip install trackio"),
}


def missing_tracker(value: str) -> str | None:
    """Why `value` cannot be used here (its package is not installed), or None. Checked before a run loads
    its models, so a missing package costs seconds rather than a model load."""
    import importlib.util

    if value not in _NEEDS:
        return None
    modules, hint = _NEEDS[value]
    if any(importlib.util.find_spec(m) is not None for m in modules):
        return None
    return f"report_to {value!r} needs {' or '.join(modules)}: {hint}"


def tracker_args(report_to: str) -> dict[str, Any]:
    """TrainingArguments fields for the tracker. transformers reads WANDB_PROJECT itself but hands trackio its
    own `project` argument (default "huggingface"), so TRACKIO_PROJECT would be ignored unless passed here."""
    return {"report_to": report_to, "project": os.environ.get("TRACKIO_PROJECT", "huggingface")}


def place_tensorboard_logs(trainer, run_dir: str | Path, *, fresh: bool) -> None:
    """Make TensorBoard write to RUN/tensorboard. transformers 5 has no `logging_dir` argument: by default the
    event files land in output_dir/runs/<date_host>, i.e. deep inside checkpoints/. TENSORBOARD_LOGGING_DIR, when
    set, still wins. A fresh run removes the previous run's event files, as it does metrics.jsonl, so the two
    runs' curves are not drawn as one."""
    from transformers.integrations import TensorBoardCallback

    folder = Path(run_dir) / TENSORBOARD_DIR
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:
            cb.logging_dir = str(folder)
            if fresh and trainer.is_world_process_zero():  # the only writer; another rank could delete its file
                for old in folder.glob("events.out.tfevents.*"):
                    old.unlink()
