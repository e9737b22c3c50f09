"""The QA example type every loader returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class QAExample:
    id: str
    question: str
    golden_answers: list[str]
    source: str = "unknown"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"example {self.id!r}: question must be a non-empty string")
        if isinstance(self.golden_answers, str):
            self.golden_answers = [self.golden_answers]
        self.golden_answers = [str(a) for a in self.golden_answers if str(a).strip()]
        if not self.golden_answers:
            raise ValueError(f"example {self.id!r}: needs at least one gold answer")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
