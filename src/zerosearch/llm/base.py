"""Text generators: what the simulator (and some baselines) call to write text.

Prompts are chat messages; each backend renders them its own way (a local chat template, or an
OpenAI-compatible /v1/chat/completions server). A failure of one prompt is reported in its
`Generation.error` and counted in `stats`; it never hangs and never raises for a single prompt.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

Messages = list[dict[str, str]]


@dataclass
class Generation:
    text: str
    n_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class GenerationOptions:
    """The decoding settings of one `generate` call, as a backend's `_generate` receives them."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    banned: Sequence[Sequence[str]] | None = None


class TextGenerator(ABC):
    name: str = "generator"
    enforces_bans: bool = False  # whether `generate(banned=…)` is enforced while decoding
    thread_safe: bool = False  # whether `generate` may run in several threads at once (a local model may not)

    def __init__(self) -> None:
        # requests, failures, retries, tokens: read by /metrics and the run ledger
        self.stats: Counter[str] = Counter()

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        banned: Sequence[Sequence[str]] | None = None,
    ) -> list[Generation]:
        """One generation per prompt, in order. `banned[i]`: strings prompt i's output must not contain
        (compared after SQuAD normalisation), where the backend can enforce it (`enforces_bans`); others
        ignore it."""
        if not prompts:
            return []
        options = GenerationOptions(max_new_tokens, temperature, tuple(stop), seed, banned)
        return self._generate(list(prompts), options)

    @abstractmethod
    def _generate(self, prompts: list[Messages], options: GenerationOptions) -> list[Generation]:
        """`generate` for at least one prompt: what each backend implements."""

    def close(self) -> None:
        pass
