"""The search environment: what happens between two policy turns, for every way of generating them.

A policy turn (token ids, as sampled) becomes an action. An answer ends the episode; in the final turn
nothing is executed (a search there is recorded as unexecuted; with `force_final_answer` the reply before
it opens `<answer>`, so the final turn can only answer); every search of a turn goes to the
engine in one call, each request with its own sample's question, gold answers and noise; anything else
gets the invalid-action message. The environment's reply is token ids with env mask 0, the documents cut
inside the <information> tags, and a failed search is shown to the policy as a failure, never as an empty
result.

Callers own generation and know nothing of these rules: the batched rollout (`rollout.py`, one KV cache)
calls `SearchEnv.step` with a synchronous batch search, verl's episode (`integrations/verl/episode.py`,
one async trajectory) calls `SearchEnv.astep`. Both run `for turn in env.turns()` and stop a row when its
`Step.done` is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from .. import protocol
from ..engines.base import SearchRequest, SearchResult


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


@dataclass(kw_only=True)
class TokenSequence:
    """The response of one episode as token ids, and what the environment recorded about each turn."""

    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)  # 1 = sampled by the policy, 0 = written by the environment
    # sampling log-probs, 0.0 on environment tokens; None once a policy turn came without them (a server
    # that was not asked for them), as a partial list would misalign with the ids
    logprobs: list[float] | None = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)  # per policy turn: text, action, stop reason
    searches: list[SearchRecord] = field(default_factory=list)
    answer: str | None = None
    invalid_actions: int = 0
    unexecuted_final_search: bool = False

    def add(self, ids: Sequence[int], env: bool, logprobs: Sequence[float] | None = None) -> None:
        self.completion_ids.extend(ids)
        self.env_mask.extend([0 if env else 1] * len(ids))
        if self.logprobs is not None:
            if env:
                self.logprobs.extend([0.0] * len(ids))
            elif logprobs is not None and len(logprobs) == len(ids):
                self.logprobs.extend(logprobs)
            else:
                self.logprobs = None

    @property
    def n_searches(self) -> int:
        return len(self.searches)

    @property
    def repeated_searches(self) -> int:
        """Searches the policy wrote whose query it had already written (an unexecuted final one included,
        as a reward that reads the decoded response counts it)."""
        return protocol.repeated_queries(t["content"] for t in self.turns if t.get("action") == "search")


@dataclass(frozen=True)
class Task:
    """What the environment hands the engine about a sample with each of its searches: the simulator
    writes useful documents from the question and answers, and draws the noisy kind with `noise`."""

    question: str
    golden_answers: Sequence[str]
    noise: str | float | None = None

    def request(self, query: str) -> SearchRequest:
        return SearchRequest(query, question=self.question, golden_answers=list(self.golden_answers),
                             noise=self.noise)


@dataclass
class PolicyTurn:
    ids: list[int]  # as sampled, cut at the turn's end
    logprobs: list[float] | None
    stop: str  # why the turn ended: "stop" (a stop string), "eos" or "length"


@dataclass
class Step:
    done: bool  # the episode is over: an answer, or the final turn
    reply: list[int] = field(default_factory=list)  # the environment's ids after the turn (already added, mask 0)
    request: SearchRequest | None = None  # the search this turn asked for


# (requests) -> one result each, in order
BatchSearch = Callable[[list[SearchRequest]], Sequence[SearchResult]]
AsyncBatchSearch = Callable[[list[SearchRequest]], Awaitable[Sequence[SearchResult]]]


class SearchEnv:
    """`max_turns` turns whose searches are executed, then one final answer turn.

    With `force_final_answer`, the environment's reply before the final turn ends with `<answer>`, so the
    final turn can only complete an answer (its text is parsed with that prefix). Without it (the paper),
    the policy may spend the final turn on a search that is never executed, and end with no answer."""

    def __init__(self, tokenizer, *, max_turns: int, max_obs_tokens: int, force_final_answer: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_turns = max_turns
        self.max_obs_tokens = max_obs_tokens
        # with no searching turn there is no reply to open the answer in
        self.force_final_answer = force_final_answer and max_turns > 0

    def turns(self) -> range:
        return range(1, self.max_turns + 2)

    def step(self, turn: int, seqs: Sequence[TokenSequence], tasks: Sequence[Task], outputs: Sequence[PolicyTurn],
             search: BatchSearch) -> list[Step]:
        """Add each row's policy turn to its sequence, run this turn's searches in one `search` call (none
        if no row searched), and add each continuing row's reply."""
        steps = self._act(turn, seqs, tasks, outputs)
        requests = [s.request for s in steps if s.request is not None]
        self._reply(turn, seqs, steps, search(requests) if requests else [])
        return steps

    async def astep(self, turn: int, seqs: Sequence[TokenSequence], tasks: Sequence[Task],
                    outputs: Sequence[PolicyTurn], search: AsyncBatchSearch) -> list[Step]:
        """`step` with an awaitable search."""
        steps = self._act(turn, seqs, tasks, outputs)
        requests = [s.request for s in steps if s.request is not None]
        self._reply(turn, seqs, steps, await search(requests) if requests else [])
        return steps

    def _act(self, turn, seqs, tasks, outputs) -> list[Step]:
        final = turn == self.max_turns + 1
        steps = []
        for seq, task, out in zip(seqs, tasks, outputs, strict=True):
            seq.add(out.ids, env=False, logprobs=out.logprobs)
            text = self.tokenizer.decode(out.ids, skip_special_tokens=True)
            action = protocol.parse_action(text)
            if final and self.force_final_answer and action.kind != "answer":  # the opening is the environment's
                action = protocol.parse_action(protocol.ANSWER[0] + text)
            seq.turns.append({"turn": turn, "text": text, "action": action.kind, "content": action.content,
                              "stop": out.stop})
            if action.kind == "answer":
                seq.answer = action.content
                steps.append(Step(done=True))
            elif final:
                seq.unexecuted_final_search = action.kind == "search"
                steps.append(Step(done=True))
            elif action.kind == "search":
                steps.append(Step(done=False, request=task.request(action.content)))
            else:
                seq.invalid_actions += 1
                steps.append(Step(done=False, reply=invalid_action_ids(self.tokenizer)))
        return steps

    def _reply(self, turn, seqs, steps, results: Sequence[SearchResult]) -> None:
        searched = [(seq, s) for seq, s in zip(seqs, steps) if s.request is not None]
        if len(results) != len(searched):
            raise ValueError(f"{len(searched)} searches got {len(results)} results")
        for (seq, s), res in zip(searched, results):
            seq.searches.append(SearchRecord(
                turn, res.query, res.engine, res.real, res.kind, res.error, len(res.documents), res.repaired,
                [{"id": d.id, "title": d.title, "text": d.text} for d in res.documents],
            ))
            s.reply = observation_ids(self.tokenizer, res.docs_text(), self.max_obs_tokens)
        opens_answer = self.force_final_answer and turn == self.max_turns
        for seq, s in zip(seqs, steps):
            if not s.done:
                if opens_answer:
                    s.reply = s.reply + answer_opening_ids(self.tokenizer)
                seq.add(s.reply, env=True)


def observation_ids(tokenizer, docs_text: str, max_tokens: int) -> list[int]:
    """Token ids of `\\n\\n<information>docs</information>\\n\\n`, the docs cut to max_tokens inside the tags."""
    inner = tokenizer(docs_text, add_special_tokens=False).input_ids
    if len(inner) > max_tokens:
        docs_text = tokenizer.decode(inner[:max_tokens], skip_special_tokens=True) + " …"
    return tokenizer(protocol.observation(docs_text), add_special_tokens=False).input_ids


_ID_CACHE: dict[tuple[int, str], list[int]] = {}


def _fixed_ids(tokenizer, text: str) -> list[int]:
    key = (id(tokenizer), text)
    if key not in _ID_CACHE:
        _ID_CACHE[key] = tokenizer(text, add_special_tokens=False).input_ids
    return _ID_CACHE[key]


def invalid_action_ids(tokenizer) -> list[int]:
    """Token ids of the environment's reply to a turn with no valid action."""
    return _fixed_ids(tokenizer, protocol.INVALID_ACTION)


def answer_opening_ids(tokenizer) -> list[int]:
    """Token ids the environment writes to open a forced final answer."""
    return _fixed_ids(tokenizer, protocol.ANSWER[0])
