"""Tiny randomly initialised models for tests and `zerosearch demo --quick`.

A byte-level BPE tokenizer trained in milliseconds on the given texts (plus the protocol's tags), with a
ChatML template, and a 2-layer Llama of hidden size 64. They exercise every code path at a thousandth of
the cost of a real model; they are not expected to say anything sensible before training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .. import protocol

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|pad|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    seed_texts = [protocol.INSTRUCTION, protocol.INVALID_ACTION, "<think> </think> <search> </search> <answer> </answer>",
                  "<information> </information> Doc 1(Title: x)"]
    tok.train_from_iterator([*seed_texts, *texts], trainer=trainer)
    # One token per tag, so a model this small can learn the protocol in a few dozen steps.
    tags = [*protocol.THINK, *protocol.SEARCH, *protocol.ANSWER, *protocol.INFORMATION]
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in tags])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(tokenizer, *, hidden: int = 64, layers: int = 2, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_tiny(out: str | Path, texts: Iterable[str], seed: int = 0) -> Path:
    """Build and save a tiny model + tokenizer folder that every loader of the project accepts."""
    out = Path(out)
    tok = build_tiny_tokenizer(texts)
    model = build_tiny_model(tok, seed=seed)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
