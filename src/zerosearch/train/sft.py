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

from ..io import atomic_write_text
from ..llm.decoding import use_bf16
from ..settings import SFTConfig
from .tracking import place_tensorboard_logs, tracker_args


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
    if cfg.learning_rate is None:
        raise ValueError("the SFT learning rate is not set (null is only for simulator tuning, by model size)")
    from datasets import Dataset
    from transformers import TrainerCallback, set_seed
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from .freeze import lora_config, train_top_layers
    from .trl_compat import compact_lm_head_on_cpu

    if not examples:
        raise ValueError("no SFT examples")
    compact_lm_head_on_cpu()
    set_seed(cfg.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = Dataset.from_list([{"input_ids": e.input_ids, "completion_mask": e.loss_mask} for e in examples])
    peft_config = lora_config(cfg.lora_r, cfg.lora_alpha)
    args = TRLSFTConfig(
        output_dir=str(out / "checkpoints"),
        use_cpu=not torch.cuda.is_available(),
        bf16=use_bf16(cfg.bf16),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # transformers 5 reads a float below 1 as a share of the steps
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
