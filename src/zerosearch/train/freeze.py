"""What a training run updates: only the top decoder blocks (a compute knob for CPUs), or LoRA adapters.

Backpropagation stops at the lowest trainable block, so training the top half of a 30-block model roughly
halves the cost of a policy update. Embeddings (tied to the output layer in small models) stay frozen.
"""

from __future__ import annotations


def decoder_layers(model):
    base = getattr(model, "model", None) or getattr(model, "transformer", None)
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder blocks of {type(model).__name__}")
    return layers, base


def train_top_layers(model, n: int) -> int:
    """Freeze everything but the top n decoder blocks and the final norm (n <= 0: train everything).
    Returns the number of trainable parameters."""
    if n <= 0:
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        layers, base = decoder_layers(model)
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in layers[-n:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        norm = getattr(base, "norm", None) or getattr(base, "ln_f", None)
        if norm is not None:
            for p in norm.parameters():
                p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_config(r: int, alpha: int):
    """The peft config of LoRA adapters of rank r on every linear layer (what TRL's trainers take as
    `peft_config`), or None for r = 0: a full fine-tune."""
    if not r:
        return None
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear", task_type="CAUSAL_LM")
