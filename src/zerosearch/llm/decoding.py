"""Batched decoding on a transformers causal LM with one KV cache, shared by the rollout and the local
text generator.

- Prompts are prefilled once; the prefix that all prompts of a batch share (a chat template's system
  prompt, an instruction, a simulator template) is computed once and its cache copied to every row. On a
  CPU, where prefill is compute-bound, this removes most of the prefill.
- Rows advance by different amounts; the cache keeps them aligned with "holes": positions whose
  attention mask is 0. Position ids count only real tokens, so each row sees exactly the sequence it
  would see alone.
- When half the rows of a batch have stopped, they are set aside (one copy of their cache) and the
  remaining steps compute only the rows still decoding; they rejoin the batch when decoding ends.
- Each layer's keys and values live in a buffer with room to spare, and a step writes its new positions in
  place. transformers' DynamicCache appends with torch.cat, which copies the whole cache every step: on a
  CPU, at 32 rows, that copy cost as much memory traffic as the attention itself.
- On a CPU, the rollout and the local generator run the linear layers with weights laid out once for
  oneDNN (`packed_linears`), where `F.linear` lays a weight out again at every call.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Below this many shared tokens, a separate pass for the prefix costs more than it saves.
MIN_SHARED_PREFIX = 16
# Setting rows aside copies their cache; below this many rows it saves too little to pay for the copy.
MIN_ROWS_TO_SET_ASIDE = 4
# Tokens masked in one step to avoid a banned string before giving up (a bound, never reached in practice).
MAX_BAN_RETRIES = 64


log = logging.getLogger(__name__)

# A CPU without native bfloat16 (AVX512-BF16 or AMX) emulates it: on an AVX2-only EPYC a bfloat16 matrix
# product ran ~100x slower than a float32 one (benchmarks/cpu_bf16.py), so there every bf16 setting falls
# back to float32.
CPU_BF16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
_warned_bf16 = False


def use_bf16(requested: bool, device: torch.device | str | None = None) -> bool:
    """Whether to compute in bfloat16 when a setting asks for it: on a GPU yes, on a CPU only with native
    support (a warning, once, says when a request falls back to float32). `device`: default the one the
    trainers use (CUDA when there is one)."""
    global _warned_bf16
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not requested or torch.device(device).type != "cpu" or CPU_BF16:
        return requested
    if not _warned_bf16:
        log.warning("bf16 asked for, but this CPU has no native bfloat16 (AVX512-BF16 or AMX), where it runs "
                    "~100x slower than float32: computing in float32")
        _warned_bf16 = True
    return False


# oneDNN kernels for weights packed ahead of time (the ones torch.compile's CPU backend uses).
_CAN_PACK = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
_PACK_DTYPES = {torch.float32}
if _CAN_PACK and CPU_BF16:
    _PACK_DTYPES.add(torch.bfloat16)


@contextmanager
def packed_linears(model: torch.nn.Module) -> Iterator[None]:
    """Inside, the model's CPU `nn.Linear` layers compute no-grad forwards with their weights packed once for
    oneDNN. `F.linear` lays a bfloat16 weight out anew at every call: a one-row decoding step of SmolLM2-135M
    took 70 ms with it and 47-51 ms packed. The results are the same (bit for bit on SmolLM2's bfloat16
    logits; float32 to rounding). Weights are packed on entry (~0.2 s and one extra copy of them for
    SmolLM2-135M), so training between two entries is seen; forwards with grad or under autocast inside use
    the plain layer. A layer whose forward is already replaced (an enclosing or concurrent entry) is left as
    it is."""
    patched: list[tuple[torch.nn.Linear, Callable]] = []
    try:
        if _CAN_PACK:
            for m in model.modules():
                w = m.weight if type(m) is torch.nn.Linear else None
                if w is None or w.device.type != "cpu" or w.dtype not in _PACK_DTYPES or "forward" in m.__dict__:
                    continue
                try:
                    m.forward = _packed_forward(m, torch.ops.mkldnn._reorder_linear_weight(w.detach()))
                except RuntimeError:  # a shape or build oneDNN does not take: the plain layer is as right
                    continue
                patched.append((m, m.forward))
        yield
    finally:
        for m, f in patched:
            if m.__dict__.get("forward") is f:
                del m.forward


def _packed_forward(m: torch.nn.Linear, packed: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type) or x.dtype != packed.dtype:
            return F.linear(x, m.weight, m.bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, m.bias, "none", [], "")

    return forward


class InPlaceLayer(DynamicLayer):
    """A DynamicLayer whose keys/values are views on buffers with spare positions at the end: an update writes
    the new positions in place instead of concatenating. When another method has replaced the keys (rows
    selected, repeated, put back) or the buffer is full, the next update moves them to a new buffer half as
    long again as needed, so copies happen a logarithmic number of times as the cache grows."""

    _buffers: tuple[torch.Tensor, torch.Tensor] | None = None
    _view: torch.Tensor | None = None  # the keys as this layer last left them

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        old = self.get_seq_length()
        new = old + key_states.shape[-2]
        buf = self._buffers
        if buf is None or self.keys is not self._view or buf[0].shape[-2] < new:
            room = new + new // 2 + 16
            buf = self._buffers = (_spare(self.keys, key_states, old, room), _spare(self.values, value_states, old, room))
        buf[0][:, :, old:new] = key_states
        buf[1][:, :, old:new] = value_states
        self.keys, self.values = buf[0][:, :, :new], buf[1][:, :, :new]
        self._view = self.keys
        return self.keys, self.values


def _spare(cached: torch.Tensor, new: torch.Tensor, length: int, capacity: int) -> torch.Tensor:
    """A [batch, heads, capacity, dim] buffer like `new`, holding the first `length` cached positions."""
    buf = new.new_empty(new.shape[0], new.shape[1], capacity, new.shape[3])
    if length:
        buf[:, :, :length] = cached
    return buf


class RowCache(DynamicCache):
    """A DynamicCache whose rows can be taken out and put back (after the others, `gap` holes later)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer_class_to_replicate = InPlaceLayer

    def take_rows(self, idx: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys[idx], layer.values[idx]) for layer in self.layers]

    def put_rows(self, rows: list[tuple[torch.Tensor, torch.Tensor]], gap: int) -> None:
        for layer, (k, v) in zip(self.layers, rows):  # keys/values: [batch, heads, seq, dim]; holes are zeros
            layer.keys = torch.cat([layer.keys, F.pad(k, (0, 0, 0, gap))])
            layer.values = torch.cat([layer.values, F.pad(v, (0, 0, 0, gap))])


@dataclass
class TakenRows:
    """Rows taken out of a KVBatch: their part of the cache, attention mask and positions."""

    cache: Any
    attn: torch.Tensor
    pos: torch.Tensor


class KVBatch:
    """A KV cache shared by the rows of a batch, fed with ragged chunks left-padded by holes."""

    def __init__(self, model, pad_id: int, bf16: bool = False) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.pad_id = pad_id
        self.bf16 = use_bf16(bf16, self.device)
        self.cache = RowCache()
        self.attn: torch.Tensor | None = None
        self.pos: torch.Tensor | None = None  # real tokens fed so far, per row

    @torch.no_grad()
    def feed(self, chunks: list[list[int]]) -> torch.Tensor:
        """Feed one chunk per row (may be empty); return the logits after each row's last real token."""
        n, width = len(chunks), max(len(c) for c in chunks)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, c in enumerate(chunks):
            if c:
                ids[i, width - len(c) :] = torch.tensor(c)
                mask[i, width - len(c) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.pos is None:
            self.pos = torch.zeros(n, dtype=torch.long, device=self.device)
        # position of each real token = number of real tokens before it in its row
        positions = (self.pos[:, None] + mask.cumsum(1) - 1).clamp(min=0)
        self.attn = mask if self.attn is None else torch.cat([self.attn, mask], 1)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(
                input_ids=ids, attention_mask=self.attn, position_ids=positions, cache=self.cache,
                use_cache=True, logits_to_keep=1,
            )
        self.cache = out.cache
        self.pos = self.pos + mask.sum(1)
        return out.logits[:, -1, :].float()

    @torch.no_grad()
    def feed_shared(self, ids: list[int], n: int) -> None:
        """Feed a prefix common to all n rows once, then copy its cache to every row (prefix sharing)."""
        self.feed([ids])
        self.cache.batch_repeat_interleave(n)
        self.attn = self.attn.repeat(n, 1)
        self.pos = self.pos.repeat(n)

    def keep(self, rows: list[int]) -> None:
        """Keep the rows at these positions, in this order."""
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(idx)
        self.attn = self.attn[idx]
        self.pos = self.pos[idx]

    def take(self, rows: list[int]) -> TakenRows:
        """Take the rows at these positions out of the batch; the others stay, in order."""
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        taken = TakenRows(self.cache.take_rows(idx), self.attn[idx], self.pos[idx])
        gone = set(rows)
        self.keep([i for i in range(self.attn.shape[0]) if i not in gone])
        return taken

    def put(self, rows: TakenRows) -> None:
        """Append rows taken earlier after the others; holes fill the steps they sat out."""
        gap = self.attn.shape[1] - rows.attn.shape[1]
        self.cache.put_rows(rows.cache, gap)
        self.attn = torch.cat([self.attn, F.pad(rows.attn, (0, gap))])
        self.pos = torch.cat([self.pos, rows.pos])


def shared_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix common to every sequence."""
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != first[i] for s in seqs):
            return i
    return n


def feed_prompts(batch: KVBatch, prompts: list[list[int]]) -> torch.Tensor:
    """Prefill the prompts, their common prefix once. Each row keeps >= 1 own token, to get its own logits."""
    shared = min(shared_prefix_length(prompts), min(len(p) for p in prompts) - 1)
    if len(prompts) < 2 or shared < MIN_SHARED_PREFIX:
        return batch.feed(prompts)
    batch.feed_shared(prompts[0][:shared], len(prompts))
    return batch.feed([p[shared:] for p in prompts])


def sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None):
    """One token per row (greedy at temperature 0) and its log-prob under the sampling distribution."""
    if temperature <= 0:
        logp = torch.log_softmax(logits, -1)
        tok = logp.argmax(-1)
    else:
        logp = torch.log_softmax(logits / temperature, -1)
        tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return tok.tolist(), logp.gather(-1, tok[:, None]).squeeze(-1).tolist()


def pad_id(tokenizer) -> int:
    """The id that fills holes: the pad token, or the end token for tokenizers without one."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return {i for i in ids if i is not None}


@dataclass
class Decoded:
    ids: list[list[int]]  # sampled tokens per row; an end-of-message token is not kept
    logprobs: list[list[float]]
    reason: list[str]  # per row: "eos", "stop" (a stop string) or "length"
    order: list[int]  # the row at each position of the batch afterwards (rows set aside come back last)

    def unfed(self, row: int) -> bool:
        """Whether the row's last sampled token is still to be fed to the cache."""
        return self.reason[row] in ("stop", "length")


def decode(
    batch: KVBatch,
    logits: torch.Tensor,
    tokenizer,
    *,
    max_new_tokens: int,
    temperature: float,
    stop_ids: set[int],
    stop_strings: Sequence[str] = (),
    generator: torch.Generator | None = None,
    banned: Sequence[Sequence[str]] | None = None,
    normalize: Callable[[str], str] = str.lower,
) -> Decoded:
    """Decode every row from `logits` (one row each) until an end-of-message token, a stop string in its
    text, or max_new_tokens. A row's last token is not fed (the caller feeds it with whatever follows).
    `banned[row]`: strings the row's text may not contain once normalised (they are given normalised): a
    sampled token that would complete one is masked and the row samples again."""
    n = logits.shape[0]
    gen: list[list[int]] = [[] for _ in range(n)]
    lps: list[list[float]] = [[] for _ in range(n)]
    reason = ["length"] * n
    going = list(range(n))
    live = list(range(n))  # the rows in the cache, in cache order; rows that stopped may wait outside
    waiting: list[tuple[list[int], TakenRows]] = []
    for _ in range(max_new_tokens):
        toks, logps = sample(logits, temperature, generator)
        at = {r: j for j, r in enumerate(live)}
        for r in going:
            if banned and banned[r]:
                _avoid_banned(logits, toks, logps, at[r], gen[r], banned[r], tokenizer, normalize, temperature, generator)
        feed_next: list[list[int]] = [[] for _ in live]
        still = []
        for r in going:
            t = toks[at[r]]
            if t in stop_ids:
                reason[r] = "eos"
                continue
            gen[r].append(t)
            lps[r].append(logps[at[r]])
            if stop_strings and any(s in tokenizer.decode(gen[r], skip_special_tokens=True) for s in stop_strings):
                reason[r] = "stop"
            elif len(gen[r]) < max_new_tokens:
                feed_next[at[r]] = [t]
                still.append(r)
        going = still
        if not going:
            break
        if len(live) >= MIN_ROWS_TO_SET_ASIDE and len(going) <= len(live) // 2:
            keep = set(going)
            stopped = [j for j, r in enumerate(live) if r not in keep]
            waiting.append(([live[j] for j in stopped], batch.take(stopped)))
            feed_next = [feed_next[j] for j, r in enumerate(live) if r in keep]
            live = [r for r in live if r in keep]
        logits = batch.feed(feed_next)
    for rows, taken in waiting:
        batch.put(taken)
        live += rows
    return Decoded(gen, lps, reason, live)


def _avoid_banned(logits, toks, logps, j, written, banned, tokenizer, normalize, temperature, generator) -> None:
    """Resample row j's token (in place) while it would complete a banned string. Checked on the text, not
    on token ids: a string can be written with many tokenisations."""
    for _ in range(MAX_BAN_RETRIES):
        text = normalize(tokenizer.decode(written + [toks[j]], skip_special_tokens=True))
        if not any(b in text for b in banned):
            return
        logits[j, toks[j]] = float("-inf")
        (toks[j],), (logps[j],) = sample(logits[j : j + 1], temperature, generator)
