"""The searches that simulation tuning is made from, as collected, split, labelled and checked."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..io import read_jsonl, write_jsonl


@dataclass
class SearchSample:
    id: str  # question id + search index
    question_id: str
    question: str
    golden_answers: list[str]
    query: str
    hop: int
    needed: list[str]  # what this search was after: the bridge for a first hop, else the gold answers
    documents: list[dict[str, Any]]  # the top-k the policy read: id, title, text, contains_answer
    next_documents: list[dict[str, Any]]  # ranks k+1..2k
    trajectory_correct: bool
    engine: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def read_samples(path: str | Path) -> list[SearchSample]:
    """The samples of a file that `collect` appends to; a line cut by a crash is passed over."""
    samples = []
    for row in read_jsonl(path, skip_broken=True):
        try:
            samples.append(SearchSample(**row))
        except TypeError:
            continue
    return samples


def write_samples(samples: Sequence[SearchSample], path: str | Path) -> None:
    write_jsonl(path, samples)


def split_by_question(samples: Sequence[SearchSample], holdout: float, seed: int = 0):
    """Hold out whole questions (all their searches) for `simtune check`."""
    if not 0.0 <= holdout < 1.0:
        raise ValueError("holdout must be in [0, 1)")
    qids = sorted({s.question_id for s in samples})
    rng = random.Random(seed)
    rng.shuffle(qids)
    held = set(qids[: round(len(qids) * holdout)])
    return [s for s in samples if s.question_id not in held], [s for s in samples if s.question_id in held]
