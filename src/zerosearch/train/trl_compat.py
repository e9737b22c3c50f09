"""Everything that relies on TRL's private code, in one place (TRL is pinned; tests/test_trl_compat.py fails
loudly when an upgrade changes what is used here):

- `compact_lm_head_on_cpu`: `trl.trainer.utils._use_triton`;
- `search_grpo_trainer_class`: `GRPOTrainer._generate_and_score_completions` (its output's advantages and
  masks), `GRPOTrainer._compute_loss`, and the `labels` / `fused_lm_head` arguments TRL passes to the
  model's forward.

TRL's fused LM head (trl 1.16) scores only the labelled positions on Triton devices, but every position of
the batch elsewhere, so that compilers such as Neuron see fixed tile shapes. On a CPU in eager mode that
buys nothing and costs a full-vocabulary projection of every prompt and padding token (measured: ~40% of
an SFT step on SmolLM2-135M). We make CPUs take the compact path; the arithmetic is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

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


def search_grpo_trainer_class():
    """GRPOTrainer whose loss forward scores only the policy's own tokens.

    TRL's fused LM head computes a log-prob for every completion position and the loss then multiplies the
    observation positions by env_mask = 0. Observations are most of a search trajectory's completion, and on
    a CPU the full-vocabulary projection of each position is a large share of an update, so we label the
    masked positions -100 before the head: same loss, a fraction of the work.
    """
    from trl import GRPOTrainer

    class SearchGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, skip_uninformative: bool = False, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.skip_uninformative = skip_uninformative
            self._score_mask = None
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            fused_forward = base.forward
            trainer = self

            def forward(*a, labels=None, fused_lm_head=False, **kw):
                mask = trainer._score_mask
                if fused_lm_head and labels is not None and mask is not None and labels.shape[0] == mask.shape[0]:
                    labels = labels.clone()
                    labels[:, -mask.shape[1] :][mask == 0] = -100
                return fused_forward(*a, labels=labels, fused_lm_head=fused_lm_head, **kw)

            base.forward = forward

        def _skips_uninformative(self) -> bool:
            """Rows with zero advantage add exactly nothing to the gradient only without a KL or entropy term,
            and without a batch-wide entropy quantile; the loss scale is restored for these two loss types."""
            return (self.skip_uninformative and self.beta == 0.0
                    and not getattr(self, "_entropy_bonus_enabled", False) and self.top_entropy_quantile >= 1.0
                    and self.loss_type in ("grpo", "dapo"))

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            rewards = getattr(self.rollout_func, "last_rewards", None)
            adv = out["advantages"]
            if self._skips_uninformative() and rewards is not None and len(rewards) == adv.shape[0]:
                # A group whose rewards are all equal has zero advantage up to rounding of its mean: make it
                # exactly zero so the update can leave it out (DAPO's dynamic sampling, without re-sampling).
                g = torch.tensor(rewards, dtype=torch.float64).view(-1, self.num_generations)
                same = (g == g[:, :1]).all(dim=1).repeat_interleave(self.num_generations)
                out["advantages"] = adv.masked_fill(same.to(adv.device), 0.0)
            return out

        def _compute_loss(self, model, inputs):
            scale = 1.0
            if self._skips_uninformative():
                inputs, scale = informative_rows(inputs, mean_over_rows=self.loss_type == "grpo")
            tool_mask = inputs.get("tool_mask")
            self._score_mask = None if tool_mask is None else inputs["completion_mask"] * tool_mask
            try:
                return super()._compute_loss(model, inputs) * scale
            finally:
                self._score_mask = None

    return SearchGRPOTrainer


def informative_rows(inputs: dict[str, Any], *, mean_over_rows: bool) -> tuple[dict[str, Any], float]:
    """The update's rows with a non-zero advantage, their padding cut off, and the factor that keeps the loss
    (hence the gradient) what it was over all rows. With no KL term a zero-advantage row's loss is exactly 0,
    so leaving it out changes nothing but the work. `mean_over_rows`: the loss averages per-row means (GRPO),
    so the kept rows' mean is scaled by kept/total; a token-sum loss over a fixed normaliser (DAPO) needs no
    factor. At least one row is kept, so every process still runs a forward and a backward pass."""
    adv = inputs["advantages"]
    total = adv.shape[0]
    keep = (adv != 0) if adv.dim() == 1 else (adv != 0).any(dim=1)
    informative = int(keep.sum())
    if informative == total:
        return inputs, 1.0
    if informative == 0:
        keep = torch.zeros_like(keep)
        keep[0] = True
    idx = keep.nonzero().squeeze(1)
    out = {k: v.index_select(0, idx) if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == total else v
           for k, v in inputs.items()}
    # Cut columns that are padding in every kept row: prompts are padded on the left, completions on the right.
    p_mask, c_mask = out["prompt_mask"], out["completion_mask"]
    first = int(p_mask.any(dim=0).nonzero()[0]) if bool(p_mask.any()) else 0
    last = int(c_mask.any(dim=0).nonzero()[-1]) + 1 if bool(c_mask.any()) else 1
    tc = c_mask.shape[1]
    for k, v in out.items():
        if not torch.is_tensor(v) or v.dim() < 2:
            continue
        if k.startswith("prompt"):
            out[k] = v[:, first:]
        elif v.shape[1] == tc:
            out[k] = v[:, :last]
    if informative == 0:
        return out, 0.0
    return out, informative / total if mean_over_rows else 1.0
