"""Answer scoring: SQuAD normalisation, strict EM, cover EM and token F1.

Strict EM (normalised prediction == normalised gold) and cover EM (normalised gold is a substring of the
normalised prediction) are different metrics; the original ZeroSearch code reports cover EM under the name
"EM", which rewards long answers. The RL reward is token F1, as in the paper.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from .protocol import extract_answer

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def strict_em(prediction: str | None, golds: Iterable[str]) -> float:
    if prediction is None:
        return 0.0
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def cover_em(prediction: str | None, golds: Iterable[str]) -> float:
    if prediction is None:
        return 0.0
    p = normalize_answer(prediction)
    return float(any((g_n := normalize_answer(g)) and g_n in p for g in golds))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str | None, golds: Iterable[str]) -> float:
    if prediction is None:
        return 0.0
    p = normalize_answer(prediction).split()
    return max((_f1(p, normalize_answer(g).split()) for g in golds), default=0.0)


@dataclass(frozen=True)
class Score:
    answer: str | None
    strict_em: float
    cover_em: float
    f1: float


def score_answer(answer: str | None, golds: Iterable[str]) -> Score:
    golds = list(golds)
    return Score(answer, strict_em(answer, golds), cover_em(answer, golds), token_f1(answer, golds))


def score_response(response: str, golds: Iterable[str]) -> Score:
    """Score the last <answer> of a response. No answer scores 0 on every metric, never an exception."""
    return score_answer(extract_answer(response), golds)
