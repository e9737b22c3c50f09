"""Batched multi-turn rollout of a search agent on a transformers causal LM.

Every active trajectory of a batch decodes together with one KV cache. Each row stops at its first
`</search>` or `</answer>` (or its per-turn token budget); the first action is parsed; all searches of a
turn go to the engine in one call, each with its own sample's question and answers; observations are
appended as token ids with env mask 0 and fed through the cache, so nothing is re-prefilled and the
token ids trained on are exactly the ids sampled (no decode and re-tokenise). The final turn executes no
search. Observations are cut inside the <information> tags; the prompt is never cut.

The cache mechanics (shared prompt prefix, rows aligned with holes, stopped rows set aside) live in
`llm.decoding`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch

from .. import protocol
from ..engines.base import SearchEngine, SearchRequest
from ..llm.decoding import KVBatch, decode, eos_ids, feed_prompts, packed_linears, pad_id
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
    with packed_linears(model):
        for start in range(0, len(examples), cfg.batch_size):
            chunk = examples[start : start + cfg.batch_size]
            out.extend(_rollout_batch(model, tokenizer, chunk, engine, cfg, noise, generator, stats, start, prompt_fn))
            if progress is not None:
                progress(len(chunk))
    return out


def _rollout_batch(model, tokenizer, examples, engine, cfg, noise, generator, stats, offset, prompt_fn):
    t_start = time.perf_counter()
    stop_ids = eos_ids(model, tokenizer)
    trajs = [Trajectory(offset + i, prompt_fn(ex)) for i, ex in enumerate(examples)]
    batch = KVBatch(model, pad_id(tokenizer), cfg.bf16)
    rows = list(range(len(trajs)))  # trajectory index of each batch row
    logits = feed_prompts(batch, [t.prompt_ids for t in trajs])

    for turn in range(1, cfg.max_turns + 2):
        final = turn == cfg.max_turns + 1
        n = len(rows)
        dec = decode(batch, logits, tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                     stop_ids=stop_ids, stop_strings=protocol.STOP_STRINGS, generator=generator)
        gen, lps = dec.ids, dec.logprobs
        if stats is not None:
            stats.generated_tokens += sum(map(len, gen))

        # Parse actions, batch the searches of this turn.
        pending: list[list[int]] = [[gen[r][-1]] if dec.unfed(r) else [] for r in range(n)]
        requests, searchers = [], []
        done = [False] * n
        for r in range(n):
            traj = trajs[rows[r]]
            traj.add(gen[r], env=False, logprobs=lps[r])
            text = tokenizer.decode(gen[r], skip_special_tokens=True)
            action = protocol.parse_action(text)
            traj.turns.append({"turn": turn, "text": text, "action": action.kind, "content": action.content,
                               "stop": dec.reason[r]})
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
                traj.add(pending[r][1:] if dec.unfed(r) else pending[r], env=True)
        keep = [r for r in range(n) if not done[r]]
        if not keep:
            break
        if dec.order != keep:
            at = {r: j for j, r in enumerate(dec.order)}
            batch.keep([at[r] for r in keep])
        rows = [rows[r] for r in keep]
        logits = batch.feed([pending[r] for r in keep])

    for traj in trajs:
        traj.text = tokenizer.decode(traj.completion_ids, skip_special_tokens=True)
    if stats is not None:
        stats.seconds += time.perf_counter() - t_start
    return trajs


_INVALID_CACHE: dict[int, list[int]] = {}


def invalid_action_ids(tokenizer) -> list[int]:
    """Token ids of the environment's reply to a turn with no valid action."""
    key = id(tokenizer)
    if key not in _INVALID_CACHE:
        _INVALID_CACHE[key] = tokenizer(protocol.INVALID_ACTION, add_special_tokens=False).input_ids
    return _INVALID_CACHE[key]
