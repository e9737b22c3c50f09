"""Supervised fine-tuning through TRL's SFTTrainer: the policy warm start (format demonstrations) and,
in `simtune`, the simulator. Examples arrive pre-tokenised with a loss mask, so the loss covers exactly
the tokens the model must learn to write (never the prompt, never the environment's observations)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.qa import atomic_write_text
from .tracking import check_report_to, place_tensorboard_logs, tracker_args


@dataclass
class SFTConfig:
    steps: int = 20
    batch_size: int = 8
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    bf16: bool = False
    lora_r: int = 0  # 0 = full fine-tune; > 0 = LoRA adapters of this rank (merged into the saved model)
    lora_alpha: int = 32
    max_length: int | None = None
    trainable_layers: int = 0  # 0 = all; n = only the top n decoder blocks (a CPU speed knob)
    # none, tensorboard (event files in OUT/tensorboard), wandb or trackio (project from WANDB_PROJECT /
    # TRACKIO_PROJECT); the losses are in the summary either way
    report_to: str = "none"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("steps and batch_size must be >= 1 and learning_rate > 0")
        check_report_to(self.report_to)


@dataclass
class TokenizedExample:
    input_ids: list[int]
    loss_mask: list[int]  # 1 where the model is trained to produce the token

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.loss_mask):
            raise ValueError("input_ids and loss_mask differ in length")


def sft_train(
    model,
    tokenizer,
    examples: Sequence[TokenizedExample],
    out_dir: str | Path,
    cfg: SFTConfig,
) -> dict[str, Any]:
    """Fine-tune `model` on the examples; save it (LoRA merged) with its tokenizer to out_dir; return a summary."""
    from datasets import Dataset
    from transformers import TrainerCallback, set_seed
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from .freeze import train_top_layers
    from .trl_compat import compact_lm_head_on_cpu

    if not examples:
        raise ValueError("no SFT examples")
    compact_lm_head_on_cpu()
    set_seed(cfg.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = Dataset.from_list([{"input_ids": e.input_ids, "completion_mask": e.loss_mask} for e in examples])
    peft_config = None
    if cfg.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    args = TRLSFTConfig(
        output_dir=str(out / "checkpoints"),
        use_cpu=not torch.cuda.is_available(),
        bf16=cfg.bf16,
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        completion_only_loss=True,
        max_length=cfg.max_length,
        logging_steps=1,
        save_strategy="no",
        **tracker_args(cfg.report_to),
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=True,
        # examples come in the order the caller chose (seeded shuffles, simulator pairs kept together)
        train_sampling_strategy="sequential",
        gradient_checkpointing=False,
        dataset_num_proc=None,
    )
    losses: list[dict[str, float]] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append({"step": state.global_step, "loss": float(logs["loss"])})

    n_trainable = train_top_layers(model, cfg.trainable_layers)
    model.train()
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config,
        callbacks=[Record()],
    )
    place_tensorboard_logs(trainer, out, fresh=True)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    trained = trainer.model
    if peft_config is not None:
        trained = trained.merge_and_unload()
    train_top_layers(trained, 0)
    trained.eval()
    model_dir = out / "model"
    trained.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    summary = {
        "examples": len(examples),
        "tokens": sum(len(e.input_ids) for e in examples),
        "trained_tokens": sum(sum(e.loss_mask) for e in examples),
        "trainable_parameters": n_trainable,
        "seconds": seconds,
        "losses": losses,
        "config": asdict(cfg),
        "model_dir": str(model_dir),
    }
    atomic_write_text(out / "sft_summary.json", json.dumps(summary, indent=2))
    return {**summary, "model": trained}
