"""The reward for verl: `reward.custom_reward_function.path=pkg://zerosearch.integrations.verl.reward`.

verl's reward managers call `compute_score(data_source=, solution_str=, ground_truth=, extra_info=)` with
the decoded response, observations included. The score is token F1 of the last <answer> the policy wrote
(the paper's reward); strict EM and cover EM come along as logged extras under their own names.
`reward.custom_reward_function.reward_kwargs.repeat_penalty=P` subtracts P from the score of a response
that wrote the same query twice, as `rl.repeat_penalty` does in the TRL trainer (0 = the paper's reward);
`reward_kwargs.reward=em` scores strict exact match instead of F1, as `rl.reward: em` (Search-R1's reward).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ... import protocol
from ...metrics import rl_reward, score_response


def gold_answers(ground_truth: Any) -> list[str]:
    """Answers from `reward_model.ground_truth`: `{"target": [...]}` (Search-R1), a list, or one string."""
    if isinstance(ground_truth, Mapping):
        if "target" not in ground_truth:
            raise ValueError(f"ground_truth has no 'target': {dict(ground_truth)!r}")
        ground_truth = ground_truth["target"]
    if ground_truth is None:
        raise ValueError("ground_truth is empty")
    items = [ground_truth] if isinstance(ground_truth, (str, int, float)) else list(ground_truth)  # numpy arrays too
    answers = [str(a).strip() for a in items if a is not None and str(a).strip()]
    if not answers:
        raise ValueError(f"ground_truth has no answers: {ground_truth!r}")
    return answers


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  repeat_penalty: float = 0.0, reward: str = "f1", **kwargs: Any) -> dict[str, float]:
    """F1 (`reward="em"`: strict EM) as the score, less `repeat_penalty` for a repeated query; no answer scores
    0 (never an exception). Documents cannot supply the answer."""
    s = score_response(protocol.strip_observations(solution_str), gold_answers(ground_truth))
    repeated = protocol.repeated_queries(protocol.written_queries(solution_str))
    return {"score": rl_reward(s, repeated, float(repeat_penalty), reward), "f1": s.f1, "strict_em": s.strict_em,
            "cover_em": s.cover_em, "answered": float(s.answer is not None), "repeated_query": float(repeated > 0)}
