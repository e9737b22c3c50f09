"""`ZeroSearchAgentLoopManager`: verl's AgentLoopManager that gives every agent loop the trainer's step.

verl's trainer puts the step in `meta_info["global_steps"]` of the batch it hands the manager, but agent
loops only see row columns. This manager copies the step, the total number of steps and the validation
flag into columns for the duration of the rollout, so the noise curriculum p(step) works. Select it with
`actor_rollout_ref.rollout.agent.agent_loop_manager_class=zerosearch.integrations.verl.manager.ZeroSearchAgentLoopManager`.
"""

from __future__ import annotations

import numpy as np
from verl.experimental.agent_loop.agent_loop import AgentLoopManager
from verl.protocol import DataProto
from verl.utils.ray_utils import auto_await

from .manager_keys import KEYS, STEP_KEY, TOTAL_KEY, VALIDATE_KEY, config_total_steps


def stamp_step(prompts: DataProto, total_steps: int | None) -> None:
    n = len(prompts)
    step = prompts.meta_info.get("global_steps")
    if step is None:
        raise ValueError("the batch carries no meta_info['global_steps']; the curriculum cannot follow training")
    prompts.non_tensor_batch[STEP_KEY] = np.full(n, int(step), dtype=np.int64)
    prompts.non_tensor_batch[TOTAL_KEY] = np.full(n, int(total_steps or 0), dtype=np.int64)
    prompts.non_tensor_batch[VALIDATE_KEY] = np.full(n, bool(prompts.meta_info.get("validate", False)), dtype=bool)


class ZeroSearchAgentLoopManager(AgentLoopManager):
    @auto_await
    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        stamp_step(prompts, config_total_steps(self.config))
        try:
            output = await super().generate_sequences(prompts)
        finally:
            for key in KEYS:  # the trainer's batch goes on without our columns
                prompts.non_tensor_batch.pop(key, None)
        for key in KEYS:
            output.non_tensor_batch.pop(key, None)
        return output
