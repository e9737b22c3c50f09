"""The noise curriculum of ZeroSearch (Eq. 1): the probability that a simulated search returns noisy
documents rises from p_s to p_e over training, p(i) = p_s + (b^(i/m) - 1)/(b - 1) * (p_e - p_s); and what a
noise setting may be (`parse_noise`), wherever it is read: settings, server requests, verl, engines."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

USEFUL, NOISY = "useful", "noisy"  # the two kinds of simulated result


def parse_noise(value: Any, name: str = "noise", *, text: bool = False) -> str | float:
    """A noise setting: "useful" or "noisy" (the simulator's choice forced), or P(noisy) in [0, 1] as a float.

    Booleans, NaN and infinities are refused (YAML reads `yes` as true; Python's JSON reader takes NaN and
    Infinity). `text` also takes a number written as a string ("0.3"), as a command line gives it."""
    if isinstance(value, str) and value in (USEFUL, NOISY):
        return value
    if text and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value <= 1:  # NaN fails too
        return float(value)
    raise ValueError(f"{name} must be 'useful', 'noisy' or a probability in [0, 1], not {value!r}")


@dataclass(frozen=True)
class NoiseSchedule:
    start: float = 0.0
    end: float = 0.5
    base: float = 4.0
    kind: str = "exponential"  # or "constant" (the paper's "random" ablation: p = start throughout)

    def __post_init__(self) -> None:
        for name, p in (("start", self.start), ("end", self.end)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"noise probability {name}={p} must be in [0, 1]")
        if self.kind not in ("exponential", "constant"):
            raise ValueError(f"unknown schedule kind {self.kind!r}; use 'exponential' or 'constant'")
        if self.kind == "exponential" and (self.base <= 0 or self.base == 1):
            raise ValueError("base b must be positive and not 1")

    def __call__(self, step: int, total_steps: int) -> float:
        """Noise probability at `step` of `total_steps` (step 0 gives p_s, step == total gives p_e)."""
        if self.kind == "constant":
            return self.start
        if total_steps <= 0:
            return self.start
        frac = min(max(step / total_steps, 0.0), 1.0)
        return self.start + (self.base**frac - 1.0) / (self.base - 1.0) * (self.end - self.start)

    @classmethod
    def constant(cls, p: float) -> "NoiseSchedule":
        return cls(start=p, end=p, kind="constant")
