"""What train/trl_compat.py relies on in TRL's private code is still there. These fail loudly on a TRL upgrade
that changes it, instead of letting training run with a patch that silently no longer applies (the loss itself
is checked against TRL's own in tests/test_train.py)."""

import inspect
from importlib import metadata

import trl.trainer.utils as trl_utils
from trl import GRPOTrainer


def test_trl_is_the_pinned_version():
    assert metadata.version("trl") == "1.16.0", "train/trl_compat.py was written against trl 1.16.0: re-check it"


def test_the_private_hooks_have_the_signatures_the_shim_overrides():
    assert list(inspect.signature(GRPOTrainer._compute_loss).parameters) == ["self", "model", "inputs"]
    assert list(inspect.signature(GRPOTrainer._generate_and_score_completions).parameters) == ["self", "inputs"]
    assert list(inspect.signature(trl_utils._use_triton).parameters) == ["device"]


def test_the_loss_reads_the_masks_and_passes_the_fused_head_arguments_the_shim_uses():
    loss = inspect.getsource(GRPOTrainer._compute_loss)
    for name in ('inputs["completion_mask"]', "tool_mask", "advantages"):
        assert name in loss, f"GRPOTrainer._compute_loss no longer uses {name}"
    logps = inspect.getsource(GRPOTrainer._get_per_token_logps_and_entropies)
    assert "fused_lm_head" in logps and "labels" in logps, "the model forward no longer gets labels / fused_lm_head"
    scored = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    for key in ('"advantages"', '"prompt_mask"', '"completion_mask"'):
        assert key in scored, f"_generate_and_score_completions no longer returns {key}"
    for attribute in ("top_entropy_quantile", "loss_type", "beta", "num_generations"):
        assert attribute in inspect.getsource(GRPOTrainer.__init__), attribute
    assert "rollout_func" in inspect.getsource(GRPOTrainer.__init__)
