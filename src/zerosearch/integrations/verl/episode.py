"""One search episode driven by a token-in/token-out `generate` call: the same protocol as
`zerosearch.agent.rollout`, for engines that generate one trajectory at a time (verl's server manager).

The sampled ids are kept as sampled (no decode and re-tokenise); each turn is cut right after its first
`</search>` or `</answer>` even if the server went on, and handed to the environment
(`zerosearch.agent.env`), which decides and appends what follows it. What is verl's alone lives here:
the response budget and the cut of a whole returned turn. Nothing here imports verl.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

from ... import protocol
from ...agent.env import PolicyTurn, SearchEnv, Task, TokenSequence
from ...engines.base import SearchRequest, SearchResult

# (context ids, max new tokens) -> (new ids, their log-probs or None)
Generate = Callable[[list[int], int], Awaitable[tuple[list[int], list[float] | None]]]
Search = Callable[[SearchRequest], Awaitable[SearchResult]]


@dataclass
class EpisodeConfig:
    max_turns: int = 2  # turns whose searches are executed; one final answer turn follows
    max_turn_tokens: int = 500  # new tokens per policy turn (the paper's max_response_length)
    max_obs_tokens: int = 500  # document tokens inside one <information> block
    response_length: int = 4096  # the whole response: turns + observations (verl's rollout.response_length)
    force_final_answer: bool = False  # the final turn opens with `<answer>` (see `agent.env.SearchEnv`)

    def __post_init__(self) -> None:
        if self.max_turns < 0:
            raise ValueError(f"max_turns must be >= 0, not {self.max_turns}")
        for name in ("max_turn_tokens", "max_obs_tokens", "response_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")


@dataclass(kw_only=True)
class Episode(TokenSequence):
    truncated: bool = False  # the response budget ran out before the episode ended
    generate_seconds: float = 0.0
    search_seconds: float = 0.0

    def cap(self, length: int) -> None:
        """Keep the first `length` response tokens (an observation may overrun the budget)."""
        if len(self.completion_ids) > length:
            self.truncated = True
            del self.completion_ids[length:], self.env_mask[length:]
            if self.logprobs is not None:
                del self.logprobs[length:]


async def run_episode(
    prompt_ids: Sequence[int],
    question: str,
    golden_answers: Sequence[str],
    *,
    tokenizer,
    generate: Generate,
    search: Search,
    cfg: EpisodeConfig,
    noise: str | float | None = None,
    eos_ids: Sequence[int] = (),
) -> Episode:
    """Play the protocol for one question. `noise` goes with every search request (the curriculum's p)."""
    ep = Episode()
    env = SearchEnv(tokenizer, max_turns=cfg.max_turns, max_obs_tokens=cfg.max_obs_tokens,
                    force_final_answer=cfg.force_final_answer)
    task = Task(question, golden_answers, noise)
    eos = set(eos_ids)

    async def timed_search(requests: list[SearchRequest]) -> list[SearchResult]:
        t0 = time.perf_counter()
        results = [await search(r) for r in requests]
        ep.search_seconds += time.perf_counter() - t0
        return results

    for turn in env.turns():
        budget = min(cfg.max_turn_tokens, cfg.response_length - len(ep.completion_ids))
        if budget < 1:
            ep.truncated = True
            break
        t0 = time.perf_counter()
        ids, logprobs = await generate(list(prompt_ids) + ep.completion_ids, budget)
        ep.generate_seconds += time.perf_counter() - t0
        (step,) = await env.astep(turn, [ep], [task], [_cut_turn(tokenizer, list(ids), logprobs, eos, budget)],
                                  timed_search)
        if step.done:
            break
    ep.cap(cfg.response_length)
    return ep


def _cut_turn(tokenizer, ids: list[int], logprobs, eos: set[int], budget: int) -> PolicyTurn:
    """A turn ends after its first stop string, at an end-of-message token (not kept, as in the batched
    rollout), or at its budget."""
    n = stop_length(tokenizer, ids)
    stop = "stop" if any(s in tokenizer.decode(ids[:n], skip_special_tokens=True) for s in protocol.STOP_STRINGS) \
        else "length"
    for i, t in enumerate(ids[:n]):
        if t in eos:
            n, stop = i, "eos"
            break
    n = min(n, budget)
    return PolicyTurn(ids[:n], list(logprobs[:n]) if logprobs is not None else None, stop)


def stop_length(tokenizer, ids: Sequence[int]) -> int:
    """Length of the shortest prefix of `ids` whose text holds a </search> or </answer> (len(ids) if none).

    verl's servers return a whole turn at once and may go on past the stop string: the ids are cut right
    after the token that completes it, where the batched rollout's decoding loop stops. Containing a stop
    string is monotone in the prefix length, so a binary search needs O(log n) decodes.
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
