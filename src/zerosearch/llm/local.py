"""A local transformers model as a batched text generator (CPU by default, any torch device)."""

from __future__ import annotations

import time

import torch

from ..metrics import normalize_answer
from .base import Generation, GenerationOptions, Messages, TextGenerator
from .decoding import KVBatch, decode, eos_ids, feed_prompts, packed_linears, pad_id, use_bf16
from .registry import resolve_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_causal_lm(name_or_path: str, device: str = "cpu", dtype: str = "float32"):
    """Load (model, tokenizer) from a registry name, a folder or a hub id, in eval mode (bfloat16 weights
    on a CPU without native bfloat16 are loaded as float32: see decoding.use_bf16)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    if dtype == "bfloat16" and not use_bf16(True, device):
        dtype = "float32"
    path = resolve_model(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype]).to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def render_chat(tokenizer, messages: Messages) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # A model without a chat template sees the plain concatenated contents.
    return "\n\n".join(m["content"] for m in messages) + "\n"


class TransformersGenerator(TextGenerator):
    name = "local"
    enforces_bans = True

    def __init__(self, model, tokenizer, *, batch_size: int = 16, system_prompt: str | None = None) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.system_prompt = system_prompt

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "cpu", dtype: str = "float32", **kw):
        model, tok = load_causal_lm(name_or_path, device=device, dtype=dtype)
        return cls(model, tok, **kw)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _generate(self, prompts: list[Messages], options: GenerationOptions) -> list[Generation]:
        if options.seed is not None:
            torch.manual_seed(options.seed)
        texts = []
        for msgs in prompts:
            if self.system_prompt is not None and (not msgs or msgs[0]["role"] != "system"):
                msgs = [{"role": "system", "content": self.system_prompt}, *msgs]
            texts.append(render_chat(self.tokenizer, msgs))
        out: list[Generation | None] = [None] * len(texts)
        # Similar lengths share a batch: less padding, less wasted compute.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        banned = options.banned
        with packed_linears(self.model):
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                bans = [[b for b in map(normalize_answer, banned[i]) if b] for i in idx] if banned else None
                batch = self._generate_batch([texts[i] for i in idx], options, bans)
                for i, g in zip(idx, batch):
                    out[i] = g
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(self, texts, options: GenerationOptions, banned=None) -> list[Generation]:
        tok = self.tokenizer
        t0 = time.perf_counter()
        self.stats["requests"] += len(texts)
        try:
            # Prompts built from one template share a prefix (system prompt, instruction): it is prefilled
            # once per batch, and rows that stop early stop costing compute (see llm.decoding).
            batch = KVBatch(self.model, pad_id(tok))
            logits = feed_prompts(batch, tok(texts, add_special_tokens=False).input_ids)
            out = decode(batch, logits, tok, max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                         stop_ids=eos_ids(self.model, tok), stop_strings=options.stop, banned=banned,
                         normalize=normalize_answer)
        except (RuntimeError, ValueError) as e:  # e.g. out of memory: report per prompt, don't kill the caller
            self.stats["failures"] += len(texts)
            return [Generation("", 0, f"{type(e).__name__}: {e}") for _ in texts]
        results = []
        for ids in out.ids:
            text = tok.decode(ids, skip_special_tokens=True)
            for s in options.stop:
                if (j := text.find(s)) >= 0:
                    text = text[: j + len(s)]
            results.append(Generation(text, len(ids)))
            self.stats["tokens"] += len(ids)
        self.stats["seconds"] += time.perf_counter() - t0
        return results
