"""The text protocol between a policy and a search engine.

This is the only module that knows the tag strings. The instruction is the Search-R1 / ZeroSearch
training prompt, word for word (including its "as your want"), because released checkpoints and
Search-R1 parquet files were trained on exactly this text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

THINK = ("<think>", "</think>")
SEARCH = ("<search>", "</search>")
ANSWER = ("<answer>", "</answer>")
INFORMATION = ("<information>", "</information>")

# Generation of one policy turn stops at the first of these.
STOP_STRINGS = (SEARCH[1], ANSWER[1])

INSTRUCTION = (
    "Answer the given question. "
    "You must conduct reasoning inside <think> and </think> first every time you get new information. "
    "After reasoning, if you find you lack some knowledge, you can call a search engine by "
    "<search> query </search> and it will return the top searched results between "
    "<information> and </information>. "
    "You can search as many times as your want. "
    "If you find no further external knowledge needed, you can directly provide the answer inside "
    "<answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>. "
    "Question: {question}\n"
)

INVALID_ACTION = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
    "</search>. If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)

_ACTION_RE = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_SEARCH_RE = re.compile(r"<search>(.*?)</search>", re.DOTALL)
_INFORMATION_RE = re.compile(r"<information>.*?(?:</information>|$)", re.DOTALL)


def normalise_question(question: str) -> str:
    """Strip and add the trailing '?' that Search-R1's data scripts add."""
    q = question.strip()
    if q and not q.endswith("?"):
        q += "?"
    return q


def instruction(question: str) -> str:
    return INSTRUCTION.format(question=normalise_question(question))


def chat_prompt(question: str) -> list[dict[str, str]]:
    """The one-turn chat the policy sees (what Search-R1 stores in its parquet `prompt` column)."""
    return [{"role": "user", "content": instruction(question)}]


@dataclass(frozen=True)
class Action:
    kind: Literal["search", "answer", "invalid"]
    content: str = ""


def parse_action(text: str) -> Action:
    """The first complete <search>…</search> or <answer>…</answer> in a turn decides the action."""
    m = _ACTION_RE.search(text)
    if m is None:
        return Action("invalid")
    return Action(m.group(1), m.group(2).strip())  # type: ignore[arg-type]


def extract_answer(response: str) -> str | None:
    """The last <answer> in the RESPONSE (never the prompt, whose example contains one). None if absent.
    An answer opened twice (a policy that wrote its own `<answer>` after the environment's forced one)
    counts from its last opening."""
    found = _ANSWER_RE.findall(response)
    return found[-1].rsplit(ANSWER[0], 1)[-1].strip() if found else None


def written_queries(response: str) -> list[str]:
    """The queries the policy wrote in a decoded response (documents left out)."""
    return [q.strip() for q in _SEARCH_RE.findall(strip_observations(response))]


def repeated_queries(queries: Iterable[str]) -> int:
    """How many queries repeat an earlier one of the same episode, case and spacing aside."""
    seen: set[str] = set()
    repeats = 0
    for q in queries:
        key = " ".join(q.lower().split())
        repeats += key in seen
        seen.add(key)
    return repeats


def strip_observations(response: str) -> str:
    """The response without its <information> blocks, for scoring a decoded trajectory that includes the
    environment's text: a document that happens to contain `<answer>…</answer>` must not become the answer.
    An unclosed block (a response cut by its length budget) is dropped to the end."""
    return _INFORMATION_RE.sub("", response)


def format_documents(docs: Sequence[tuple[str, str]]) -> str:
    """Search-R1's document listing: `Doc i(Title: t) text`, one per line."""
    return "\n".join(f"Doc {i}(Title: {title}) {text}".rstrip() for i, (title, text) in enumerate(docs, 1))


def observation(docs_text: str) -> str:
    """The environment's reply to a search."""
    return f"\n\n{INFORMATION[0]}{docs_text.strip()}{INFORMATION[1]}\n\n"
