"""Small, version-pinned adjustments to TRL for CPU training.

TRL's fused LM head (trl 1.16) scores only the labelled positions on Triton devices, but every position of
the batch elsewhere, so that compilers such as Neuron see fixed tile shapes. On a CPU in eager mode that
buys nothing and costs a full-vocabulary projection of every prompt and padding token (measured: ~40% of
an SFT step on SmolLM2-135M). We make CPUs take the compact path; the arithmetic is unchanged.
"""

from __future__ import annotations

_patched = False


def compact_lm_head_on_cpu() -> None:
    global _patched
    if _patched:
        return
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton

    def use_compact(device) -> bool:
        return device.type == "cpu" or original(device)

    trl_utils._use_triton = use_compact
    _patched = True
