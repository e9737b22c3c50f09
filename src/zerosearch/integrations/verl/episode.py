"""One search episode driven by a token-in/token-out `generate` call: the same protocol as
`zerosearch.agent.rollout`, for engines that generate one trajectory at a time (verl's server manager).

The sampled ids are kept as sampled (no decode and re-tokenise); each turn is cut right after its first
`</search>` or `</answer>` even if the server went on; observations and invalid-action messages are
appended as ids with mask 0, the documents cut inside the <information> tags; the final turn executes no
search. Nothing here imports verl.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from ... import protocol
from ...agent.rollout import invalid_action_ids, observation_ids, stop_length
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

    def __post_init__(self) -> None:
        if self.max_turns < 0:
            raise ValueError(f"max_turns must be >= 0, not {self.max_turns}")
        for name in ("max_turn_tokens", "max_obs_tokens", "response_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")


@dataclass
class Episode:
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)  # 1 = sampled by the policy, 0 = environment
    logprobs: list[float] | None = field(default_factory=list)  # None once a turn came back without them
    turns: list[dict[str, Any]] = field(default_factory=list)
    searches: list[dict[str, Any]] = field(default_factory=list)
    answer: str | None = None
    invalid_actions: int = 0
    unexecuted_final_search: bool = False
    truncated: bool = False  # the response budget ran out before the episode ended
    generate_seconds: float = 0.0
    search_seconds: float = 0.0

    def add(self, ids: Sequence[int], env: bool, logprobs: Sequence[float] | None = None) -> None:
        self.response_ids.extend(ids)
        self.response_mask.extend([0 if env else 1] * len(ids))
        if self.logprobs is not None:
            if env:
                self.logprobs.extend([0.0] * len(ids))
            elif logprobs is not None and len(logprobs) == len(ids):
                self.logprobs.extend(logprobs)
            else:
                self.logprobs = None

    def cap(self, length: int) -> None:
        """Keep the first `length` response tokens (an observation may overrun the budget)."""
        if len(self.response_ids) > length:
            self.truncated = True
            del self.response_ids[length:], self.response_mask[length:]
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
    eos = set(eos_ids)
    for turn in range(1, cfg.max_turns + 2):
        final = turn == cfg.max_turns + 1
        budget = min(cfg.max_turn_tokens, cfg.response_length - len(ep.response_ids))
        if budget < 1:
            ep.truncated = True
            break
        t0 = time.perf_counter()
        ids, logprobs = await generate(list(prompt_ids) + ep.response_ids, budget)
        ep.generate_seconds += time.perf_counter() - t0
        ids, logprobs, stop = _cut_turn(tokenizer, list(ids), logprobs, eos, budget)
        ep.add(ids, env=False, logprobs=logprobs)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        action = protocol.parse_action(text)
        ep.turns.append({"turn": turn, "text": text, "action": action.kind, "content": action.content, "stop": stop})
        if action.kind == "answer":
            ep.answer = action.content
            break
        if final:
            ep.unexecuted_final_search = action.kind == "search"
            break
        if action.kind == "search":
            t0 = time.perf_counter()
            result = await search(SearchRequest(action.content, question=question,
                                                golden_answers=list(golden_answers), noise=noise))
            ep.search_seconds += time.perf_counter() - t0
            ep.searches.append({"turn": turn, "query": result.query, "engine": result.engine, "real": result.real,
                                "kind": result.kind, "error": result.error, "n_docs": len(result.documents)})
            obs = observation_ids(tokenizer, result.docs_text(), cfg.max_obs_tokens)
        else:
            ep.invalid_actions += 1
            obs = invalid_action_ids(tokenizer)
        ep.add(obs, env=True)
    ep.cap(cfg.response_length)
    return ep


def _cut_turn(tokenizer, ids: list[int], logprobs, eos: set[int], budget: int):
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
    return ids[:n], (list(logprobs[:n]) if logprobs is not None else None), stop
