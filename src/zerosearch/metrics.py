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


def contains_answer(text: str, answers: Iterable[str], *, blank_matches: bool = False) -> bool:
    """Whether one of the answers, normalised, occurs in the normalised text (cover EM's test, also used to
    tell whether documents hold an answer).

    An answer that normalises to nothing ("A", "The", "?") matches no text, or every text with `blank_matches`
    (what the warm-start filter has always done with such a needed fact); an empty string never matches."""
    t = normalize_answer(text)
    return any((a := normalize_answer(x)) in t and bool(a or blank_matches and x) for x in answers)


def cover_em(prediction: str | None, golds: Iterable[str]) -> float:
    if prediction is None:
        return 0.0
    return float(contains_answer(prediction, golds))


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


REWARDS = {"f1": "token F1", "em": "strict EM"}  # the paper's reward; Search-R1's. Names for plots


def check_reward(reward: str) -> str:
    if reward not in REWARDS:
        raise ValueError(f"unknown reward {reward!r}; choose one of {', '.join(REWARDS)}")
    return reward


def rl_reward(score: Score, repeated_queries: int, repeat_penalty: float = 0.0, reward: str = "f1") -> float:
    """The RL reward of an episode, in every trainer: token F1 of its answer (`reward="em"`: strict exact
    match, as Search-R1), less `repeat_penalty` when it wrote a query twice (0 = the paper's reward)."""
    base = score.strict_em if check_reward(reward) == "em" else score.f1
    return base - repeat_penalty * (repeated_queries > 0)


@dataclass(frozen=True)
class PairedDifference:
    """after - before over the same questions, in points, with a percentile bootstrap interval."""

    n: int
    difference: float
    low: float
    high: float
    gained: int  # right after, wrong before
    lost: int  # wrong after, right before
    resamples: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.difference:+.1f} [{self.low:+.1f}, {self.high:+.1f}] (+{self.gained} / -{self.lost})"


def paired_bootstrap(before: dict[str, float], after: dict[str, float], *, resamples: int = 5000,
                     confidence: float = 0.95, seed: int = 0) -> PairedDifference:
    """Paired bootstrap of the mean per-question difference (e.g. strict EM of two policies on one test set).

    Questions are resampled with replacement, the same draw for both policies, so the interval reflects
    how much the gap depends on which questions were asked, not the spread of each policy's own score."""
    import random

    if before.keys() != after.keys():
        raise ValueError("a paired comparison needs the same questions on both sides")
    if not before:
        raise ValueError("a paired comparison needs at least one question")
    ids = sorted(before)
    diffs = [after[i] - before[i] for i in ids]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    low, high = means[int(tail * resamples)], means[min(resamples - 1, int((1 - tail) * resamples))]
    return PairedDifference(n, 100 * sum(diffs) / n, 100 * low, 100 * high, sum(d > 0 for d in diffs),
                            sum(d < 0 for d in diffs), resamples)
