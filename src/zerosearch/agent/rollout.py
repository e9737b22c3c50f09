"""Batched multi-turn rollout of a search agent on a transformers causal LM.

Every active trajectory of a batch decodes together with one KV cache. Each row stops at its first
`</search>` or `</answer>` (or its per-turn token budget); what follows a turn (the action, one engine
call for all searches of the turn, the observation or invalid-action ids, the end of the episode) is
`env.SearchEnv.step`. The environment's ids are fed through the cache, so nothing is re-prefilled and
the token ids trained on are exactly the ids sampled (no decode and re-tokenise); the prompt is never cut.

The cache mechanics (shared prompt prefix, rows aligned with holes, stopped rows set aside) live in
`llm.decoding`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch

from .. import protocol
from ..engines.base import SearchEngine, SearchRequest, SearchResult
from ..llm.decoding import KVBatch, decode, eos_ids, feed_prompts, packed_linears, pad_id
from ..llm.local import render_chat
from ..settings import RolloutConfig
from .env import PolicyTurn, SearchEnv, Task, TokenSequence


@dataclass
class Trajectory(TokenSequence):
    index: int
    prompt_ids: list[int]
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: d[k] for k in ("index", "text", "turns", "searches", "answer", "invalid_actions",
                                  "unexecuted_final_search")}


def prompt_ids(tokenizer, question: str) -> list[int]:
    text = render_chat(tokenizer, protocol.chat_prompt(question))
    return tokenizer(text, add_special_tokens=False).input_ids


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
    trajs = [Trajectory(index=offset + i, prompt_ids=prompt_fn(ex)) for i, ex in enumerate(examples)]
    tasks = [Task(ex.question, ex.golden_answers, noise) for ex in examples]
    env = SearchEnv(tokenizer, max_turns=cfg.max_turns, max_obs_tokens=cfg.max_obs_tokens,
                    force_final_answer=cfg.force_final_answer)
    batch = KVBatch(model, pad_id(tokenizer), cfg.bf16)
    rows = list(range(len(trajs)))  # trajectory index of each batch row
    logits = feed_prompts(batch, [t.prompt_ids for t in trajs])

    def search(requests: list[SearchRequest]) -> list[SearchResult]:
        if engine is None:
            raise ValueError("the policy searched but no engine was given")
        t0 = time.perf_counter()
        results = engine.search(requests)  # top-k: the engine's own (engine.topk), one for every search
        if stats is not None:
            stats.engine_seconds += time.perf_counter() - t0
        return results

    for turn in env.turns():
        n = len(rows)
        dec = decode(batch, logits, tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                     stop_ids=stop_ids, stop_strings=protocol.STOP_STRINGS, generator=generator)
        gen, lps = dec.ids, dec.logprobs
        if stats is not None:
            stats.generated_tokens += sum(map(len, gen))
        steps = env.step(turn, [trajs[i] for i in rows], [tasks[i] for i in rows],
                         [PolicyTurn(gen[r], lps[r], dec.reason[r]) for r in range(n)], search)
        keep = [r for r in range(n) if not steps[r].done]
        if not keep:
            break
        if dec.order != keep:
            at = {r: j for j, r in enumerate(dec.order)}
            batch.keep([at[r] for r in keep])
        rows = [rows[r] for r in keep]
        # a row's last sampled token has not been through the cache yet: it goes in before the reply
        logits = batch.feed([([gen[r][-1]] if dec.unfed(r) else []) + steps[r].reply for r in keep])

    for traj in trajs:
        traj.text = tokenizer.decode(traj.completion_ids, skip_special_tokens=True)
    if stats is not None:
        stats.seconds += time.perf_counter() - t_start
    return trajs
