"""Batched multi-turn rollout of a search agent on a transformers causal LM.

Every active trajectory of a batch decodes together with one KV cache. Each row stops at its first
`</search>` or `</answer>` (or its per-turn token budget); the first action is parsed; all searches of a
turn go to the engine in one call, each with its own sample's question and answers; observations are
appended as token ids with env mask 0 and fed through the cache, so nothing is re-prefilled and the
token ids trained on are exactly the ids sampled (no decode and re-tokenise). The final turn executes no
search. Observations are cut inside the <information> tags; the prompt is never cut.

Rows of one batch advance by different amounts; the cache keeps them aligned with "holes": positions
whose attention mask is 0. Position ids count only real tokens, so each row sees exactly the sequence it
would see alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch

from .. import protocol
from ..engines.base import SearchEngine, SearchRequest
from ..llm.local import render_chat


@dataclass
class RolloutConfig:
    max_turns: int = 2  # turns whose searches are executed; one final answer turn follows
    max_new_tokens: int = 64  # per turn
    topk: int = 3
    temperature: float = 1.0  # 0 = greedy
    max_obs_tokens: int = 256  # document text inside one <information> block
    batch_size: int = 32
    bf16: bool = False  # autocast the forward passes to bfloat16 (fast on CPUs with AVX512-BF16 / AMX)

    def __post_init__(self) -> None:
        if self.max_turns < 0 or self.max_new_tokens < 1 or self.topk < 1 or self.batch_size < 1:
            raise ValueError("max_turns >= 0, and max_new_tokens, topk and batch_size >= 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")


@dataclass
class SearchRecord:
    turn: int
    query: str
    engine: str
    real: bool
    kind: str | None
    error: str | None
    n_docs: int
    repaired: int = 0
    documents: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Trajectory:
    index: int
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)  # 1 = sampled by the policy, 0 = written by the environment
    logprobs: list[float] = field(default_factory=list)  # sampling log-probs; 0.0 on environment tokens
    text: str = ""
    turns: list[dict[str, Any]] = field(default_factory=list)  # per policy turn: text, action, stop reason
    searches: list[SearchRecord] = field(default_factory=list)
    answer: str | None = None
    invalid_actions: int = 0
    unexecuted_final_search: bool = False

    def add(self, ids: Sequence[int], env: bool, logprobs: Sequence[float] | None = None) -> None:
        self.completion_ids.extend(ids)
        self.env_mask.extend([0 if env else 1] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    @property
    def n_searches(self) -> int:
        return len(self.searches)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("prompt_ids", "completion_ids", "env_mask", "logprobs"):
            d.pop(k)
        return d


class _Batch:
    """A KV cache shared by the rows of a batch, fed with ragged chunks left-padded by holes."""

    def __init__(self, model, pad_id: int, bf16: bool) -> None:
        from transformers import DynamicCache

        self.model = model
        self.device = next(model.parameters()).device
        self.pad_id = pad_id
        self.bf16 = bf16
        self.cache = DynamicCache()
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
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(idx)
        self.attn = self.attn[idx]
        self.pos = self.pos[idx]


def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None):
    if temperature <= 0:
        logp = torch.log_softmax(logits, -1)
        tok = logp.argmax(-1)
    else:
        logp = torch.log_softmax(logits / temperature, -1)
        tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return tok.tolist(), logp.gather(-1, tok[:, None]).squeeze(-1).tolist()


def eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return {i for i in ids if i is not None}


def prompt_ids(tokenizer, question: str) -> list[int]:
    text = render_chat(tokenizer, protocol.chat_prompt(question))
    return tokenizer(text, add_special_tokens=False).input_ids


def observation_ids(tokenizer, docs_text: str, max_tokens: int) -> list[int]:
    """Token ids of `\\n\\n<information>docs</information>\\n\\n`, the docs cut to max_tokens inside the tags."""
    inner = tokenizer(docs_text, add_special_tokens=False).input_ids
    if len(inner) > max_tokens:
        docs_text = tokenizer.decode(inner[:max_tokens], skip_special_tokens=True) + " …"
    return tokenizer(protocol.observation(docs_text), add_special_tokens=False).input_ids


def stop_length(tokenizer, ids: Sequence[int]) -> int:
    """Length of the shortest prefix of `ids` whose text holds a </search> or </answer> (len(ids) if none).

    For engines that return a whole turn at once (verl's servers): the ids are cut right after the token
    that completes the first stop string, as this module's own decoding loop stops there. Containing a
    stop string is monotone in the prefix length, so a binary search needs O(log n) decodes.
    """
    def has_stop(n: int) -> bool:
        text = tokenizer.decode(list(ids[:n]), skip_special_tokens=True)
        return any(s in text for s in protocol.STOP_STRINGS)

    if not ids or not has_stop(len(ids)):
        return len(ids)
    lo, hi = 1, len(ids)  # has_stop(hi) holds; find the smallest such n
    while lo < hi:
        mid = (lo + hi) // 2
        if has_stop(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass
class RolloutStats:
    seconds: float = 0.0
    generated_tokens: int = 0
    engine_seconds: float = 0.0


def rollout(
    model,
    tokenizer,
    examples: Sequence[Any],
    engine: SearchEngine | None,
    cfg: RolloutConfig,
    *,
    noise: str | float | None = None,
    generator: torch.Generator | None = None,
    stats: RolloutStats | None = None,
    prompt_fn: Callable[[Any], list[int]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Trajectory]:
    """Run the search protocol for each example (anything with .question and .golden_answers).

    `noise` is handed to every simulated search request (the curriculum's p(step), or a forced kind).
    `prompt_fn` builds an example's prompt ids (default: the protocol's instruction in the chat template).
    Examples are processed in batches of cfg.batch_size; results come back in input order.
    """
    prompt_fn = prompt_fn or (lambda ex: prompt_ids(tokenizer, ex.question))
    out: list[Trajectory] = []
    for start in range(0, len(examples), cfg.batch_size):
        chunk = examples[start : start + cfg.batch_size]
        out.extend(_rollout_batch(model, tokenizer, chunk, engine, cfg, noise, generator, stats, start, prompt_fn))
        if progress is not None:
            progress(len(chunk))
    return out


def _rollout_batch(model, tokenizer, examples, engine, cfg, noise, generator, stats, offset, prompt_fn):
    t_start = time.perf_counter()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop_ids = eos_ids(model, tokenizer)
    trajs = [Trajectory(offset + i, prompt_fn(ex)) for i, ex in enumerate(examples)]
    batch = _Batch(model, pad, cfg.bf16)
    rows = list(range(len(trajs)))  # trajectory index of each batch row
    logits = _feed_prompts(batch, [t.prompt_ids for t in trajs])

    for turn in range(1, cfg.max_turns + 2):
        final = turn == cfg.max_turns + 1
        n = len(rows)
        gen: list[list[int]] = [[] for _ in range(n)]
        lps: list[list[float]] = [[] for _ in range(n)]
        reason = [""] * n
        unfed = [False] * n  # last sampled token not yet in the cache
        going = list(range(n))
        for _ in range(cfg.max_new_tokens):
            toks, logps = _sample(logits, cfg.temperature, generator)
            feed_next: list[list[int]] = [[] for _ in range(n)]
            still = []
            for r in going:
                t = toks[r]
                if t in stop_ids:  # end of message without an action: not kept, never fed
                    reason[r] = "eos"
                    continue
                gen[r].append(t)
                lps[r].append(logps[r])
                if stats is not None:
                    stats.generated_tokens += 1
                text = tokenizer.decode(gen[r], skip_special_tokens=True)
                if any(s in text for s in protocol.STOP_STRINGS):
                    reason[r], unfed[r] = "stop", True
                elif len(gen[r]) >= cfg.max_new_tokens:
                    reason[r], unfed[r] = "length", True
                else:
                    feed_next[r] = [t]
                    still.append(r)
            going = still
            if not going:
                break
            logits = batch.feed(feed_next)

        # Parse actions, batch the searches of this turn.
        pending: list[list[int]] = [[gen[r][-1]] if unfed[r] else [] for r in range(n)]
        requests, searchers = [], []
        done = [False] * n
        for r in range(n):
            traj = trajs[rows[r]]
            traj.add(gen[r], env=False, logprobs=lps[r])
            text = tokenizer.decode(gen[r], skip_special_tokens=True)
            action = protocol.parse_action(text)
            traj.turns.append({"turn": turn, "text": text, "action": action.kind, "content": action.content,
                               "stop": reason[r] or "length"})
            if action.kind == "answer":
                traj.answer = action.content
                done[r] = True
            elif final:
                traj.unexecuted_final_search = action.kind == "search"
                done[r] = True
            elif action.kind == "search":
                ex = examples[rows[r]]
                requests.append(SearchRequest(action.content, question=ex.question,
                                              golden_answers=list(ex.golden_answers), noise=noise))
                searchers.append(r)
            else:
                traj.invalid_actions += 1
                pending[r] += invalid_action_ids(tokenizer)
        if requests:
            if engine is None:
                raise ValueError("the policy searched but no engine was given")
            t0 = time.perf_counter()
            results = engine.search(requests, topk=cfg.topk)
            if stats is not None:
                stats.engine_seconds += time.perf_counter() - t0
            for r, res in zip(searchers, results):
                traj = trajs[rows[r]]
                traj.searches.append(SearchRecord(
                    turn, res.query, res.engine, res.real, res.kind, res.error, len(res.documents), res.repaired,
                    [{"id": d.id, "title": d.title, "text": d.text} for d in res.documents],
                ))
                pending[r] += observation_ids(tokenizer, res.docs_text(), cfg.max_obs_tokens)
        for r in range(n):
            traj = trajs[rows[r]]
            if not done[r]:
                traj.add(pending[r][1:] if unfed[r] else pending[r], env=True)
        keep = [r for r in range(n) if not done[r]]
        if not keep:
            break
        if len(keep) < n:
            batch.keep(keep)
        rows = [rows[r] for r in keep]
        logits = batch.feed([pending[r] for r in keep])

    for traj in trajs:
        traj.text = tokenizer.decode(traj.completion_ids, skip_special_tokens=True)
    if stats is not None:
        stats.seconds += time.perf_counter() - t_start
    return trajs


# Below this many shared tokens, a separate pass for the prefix costs more than it saves.
MIN_SHARED_PREFIX = 16


def shared_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix common to every sequence."""
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != first[i] for s in seqs):
            return i
    return n


def _feed_prompts(batch: _Batch, prompts: list[list[int]]) -> torch.Tensor:
    """Prefill the prompts. Every prompt starts with the same instruction (and a GRPO group repeats the
    whole prompt), so the common prefix is computed once and its cache shared: on a CPU, where prefill is
    compute-bound, this removes most of the prefill. Each row keeps >= 1 own token, to get its own logits."""
    shared = min(shared_prefix_length(prompts), min(len(p) for p in prompts) - 1)
    if len(prompts) < 2 or shared < MIN_SHARED_PREFIX:
        return batch.feed(prompts)
    batch.feed_shared(prompts[0][:shared], len(prompts))
    return batch.feed([p[shared:] for p in prompts])


_INVALID_CACHE: dict[int, list[int]] = {}


def invalid_action_ids(tokenizer) -> list[int]:
    """Token ids of the environment's reply to a turn with no valid action."""
    key = id(tokenizer)
    if key not in _INVALID_CACHE:
        _INVALID_CACHE[key] = tokenizer(protocol.INVALID_ACTION, add_special_tokens=False).input_ids
    return _INVALID_CACHE[key]
