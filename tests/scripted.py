"""A fake causal LM that writes scripted turns, for exact tests of the rollout's bookkeeping.

Each row follows the script of its question: it emits the tokens of turn 1, then (if the turn has no stop
tag) an end-of-message token; after the environment feeds anything longer than the echo of its own last
token, it moves to the next turn. Its state lives in the cache object, so the rollout's pruning of
finished rows (cache.batch_select_indices) and its setting aside of stopped rows (take_rows/put_rows)
keep every row's state aligned.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import DynamicCache


class ScriptCache(DynamicCache):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.rows = [self.rows[i] for i in indices.tolist()]

    def take_rows(self, indices: torch.Tensor) -> list[dict]:  # rows set aside while others decode
        return [self.rows[i] for i in indices.tolist()]

    def put_rows(self, rows: list[dict], gap: int) -> None:
        self.rows += rows

    def batch_repeat_interleave(self, repeats: int) -> None:  # a shared prompt prefix, copied to every row
        self.rows = [{**row, "seen": list(row["seen"])} for row in self.rows for _ in range(repeats)]


class ScriptedLM(torch.nn.Module):
    def __init__(self, tokenizer, scripts: dict[str, list[str]]) -> None:
        super().__init__()
        self.tok = tokenizer
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.scripts = {q: [tokenizer(t, add_special_tokens=False).input_ids for t in turns] for q, turns in scripts.items()}
        self.vocab = len(tokenizer)
        self.generation_config = SimpleNamespace(eos_token_id=tokenizer.eos_token_id)
        self.fed: list[list[int]] = []  # every real chunk fed, for the tests

    def _script_for(self, prompt_ids: list[int]) -> list[list[int]] | None:
        text = self.tok.decode(prompt_ids)
        for q, turns in self.scripts.items():
            if q in text:
                return turns
        return None

    def forward(self, input_ids, attention_mask, position_ids=None, cache=None, use_cache=True, logits_to_keep=1, **kw):
        if not isinstance(cache, ScriptCache):
            cache = ScriptCache()
        width = input_ids.shape[1]
        chunk_mask = attention_mask[:, -width:]
        logits = torch.full((input_ids.shape[0], 1, self.vocab), -1e4)
        for i in range(input_ids.shape[0]):
            real = input_ids[i][chunk_mask[i] == 1].tolist()
            if i >= len(cache.rows):
                cache.rows.append({"script": None, "seen": [], "chunks": 0, "t": 0, "j": 0, "last": None})
            st = cache.rows[i]
            if not real:  # a hole: this row is not generating now; its logits are not used
                continue
            if st["script"] is None:  # the prompt may come in two chunks: a shared prefix, then the rest
                st["seen"] += real
                st["chunks"] += 1
                st["script"] = self._script_for(st["seen"])
                if st["script"] is None:
                    if st["chunks"] > 1:
                        raise KeyError(f"no script for prompt {self.tok.decode(st['seen'])[-80:]!r}")
                    continue
            self.fed.append(real)
            echo = len(real) == 1 and real[0] == st["last"]
            turns = st["script"]
            if real and not echo and st["t"] < len(turns) and st["j"] >= len(turns[st["t"]]):
                st["t"], st["j"] = st["t"] + 1, 0  # the environment answered: next turn
            if st["t"] < len(turns) and st["j"] < len(turns[st["t"]]):
                nxt = turns[st["t"]][st["j"]]
                st["j"] += 1
            else:
                nxt = self.tok.eos_token_id
            st["last"] = nxt
            logits[i, 0, nxt] = 1e4
        return SimpleNamespace(logits=logits, cache=cache)
