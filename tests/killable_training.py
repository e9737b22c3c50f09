"""A tiny GRPO run for the kill-and-resume test, run as `python -m tests.killable_training OUT [--stall-at N]`.

With --stall-at N the run blocks when step N+1 begins (after step N was logged), writes OUT/stalled and
waits there to be killed, so the test kills it at a known point instead of racing it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from zerosearch.settings import RolloutConfig
from zerosearch.data.qa import QAExample
from zerosearch.engines.simulated import SimulatedEngine
from zerosearch.curriculum import NoiseSchedule
from zerosearch.settings import RLConfig
from zerosearch.train.grpo import SearchRollout, train_policy

from .test_simulated import EchoGenerator

STEPS, SAVE_STEPS = 4, 2


def run(out: Path, resume: bool = False) -> dict:
    if not (out / "tiny").exists():
        from zerosearch.llm.tiny import save_tiny

        save_tiny(out / "tiny", [f"what is the capital of land{i} paris" for i in range(8)])
    questions = [QAExample(str(i), f"what is the capital of land{i}", ["paris"]) for i in range(8)]
    return train_policy(
        str(out / "tiny"), SimulatedEngine(EchoGenerator(), topk=2), questions, out / "run",
        rollout_cfg=RolloutConfig(max_turns=1, max_new_tokens=6), curriculum=NoiseSchedule(0.0, 0.5),
        rl=RLConfig(steps=STEPS, questions_per_step=2, num_generations=2, save_steps=SAVE_STEPS), resume=resume,
    )


def stall_at(step: int, flag: Path) -> None:
    original = SearchRollout.__call__

    def call(self, prompts, trainer):
        if trainer.state.global_step == step:
            flag.touch()
            time.sleep(600)
        return original(self, prompts, trainer)

    SearchRollout.__call__ = call


if __name__ == "__main__":
    out = Path(sys.argv[1])
    if "--stall-at" in sys.argv:
        stall_at(int(sys.argv[sys.argv.index("--stall-at") + 1]), out / "stalled")
    run(out)
