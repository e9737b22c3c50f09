"""Column names the manager adds to each row and the agent loop reads (no verl import)."""

from __future__ import annotations

from typing import Any

STEP_KEY = "zs_global_step"
TOTAL_KEY = "zs_total_steps"
VALIDATE_KEY = "zs_validate"
KEYS = (STEP_KEY, TOTAL_KEY, VALIDATE_KEY)


def config_total_steps(config: Any) -> int | None:
    """trainer.total_training_steps if set, else what the trainer derived from epochs (it writes it into
    the optimiser config before the agent-loop workers are made)."""
    def get(path: str):
        node = config
        for part in path.split("."):
            if node is None:
                return None
            node = node.get(part) if hasattr(node, "get") else getattr(node, part, None)
        return node

    for path in ("trainer.total_training_steps", "actor_rollout_ref.actor.optim.total_training_steps"):
        value = get(path)
        if value is not None and int(value) > 0:
            return int(value)
    return None
