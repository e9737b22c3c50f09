"""Fine-tune a simulator on the SFT set: chat messages (prompt → documents), loss on the documents only.

The saved folder is a plain transformers model (LoRA adapters merged), so the local backend and vLLM /
SGLang (`--model-path`) both load it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..io import read_jsonl
from ..llm.local import render_chat
from ..train.sft import SFTConfig, TokenizedExample, sft_train

# Learning rates that worked per model size; the paper used 1e-6 for 3B-14B simulators.
SUGGESTED_LR = ((1e9, 1e-6), (5e8, 1e-5), (0, 1e-4))


def suggested_lr(n_params: int) -> float:
    return next(lr for size, lr in SUGGESTED_LR if n_params >= size)


def tokenize_chat(tokenizer, messages: Sequence[dict[str, str]]) -> TokenizedExample:
    """Prompt tokens (loss 0) + the assistant's reply and end-of-turn token (loss 1)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("an SFT example must end with the assistant's message")
    prompt = tokenizer(render_chat(tokenizer, list(messages[:-1])), add_special_tokens=False).input_ids
    reply = tokenizer(messages[-1]["content"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return TokenizedExample(prompt + reply, [0] * len(prompt) + [1] * len(reply))


def tune_simulator(
    model_name: str,
    data: str | Path | Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    sft: SFTConfig,
    model=None,
    tokenizer=None,
) -> dict[str, Any]:
    from ..llm.local import load_causal_lm

    rows = read_jsonl(data) if isinstance(data, (str, Path)) else list(data)
    if not rows:
        raise ValueError("the SFT set is empty")
    if model is None:
        model, tokenizer = load_causal_lm(model_name)
    examples = [tokenize_chat(tokenizer, r["messages"]) for r in rows]
    summary = sft_train(model, tokenizer, examples, out_dir, sft)
    summary["base_model"] = model_name
    out = Path(out_dir)
    (out / "simtune.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "model"}, indent=2))
    return summary
