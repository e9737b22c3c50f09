"""Search engines behind one interface; `EngineConfig.build()` makes any of them from settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .base import NOISY, USEFUL, Document, SearchEngine, SearchRequest, SearchResult
from .ledger import SERPAPI_PRICE_PER_1000

ENGINE_KINDS = ("bm25", "simulated", "remote", "serp")


@dataclass
class EngineConfig:
    """Everything needed to build an engine. Only the fields of the chosen `kind` are used."""

    kind: str = "bm25"
    topk: int = 3
    # bm25
    corpus: str | None = None
    # remote
    url: str | None = None
    token: str | None = None
    # remote, serp and a served simulator: seconds per attempt and attempts after the first
    timeout: float = 30.0
    retries: int = 3
    # serp
    cache_dir: str | None = None
    # simulated
    sim_model: str = "smollm2-135m"  # registry name, folder or hub id; with sim_url, the served model name
    sim_url: str | None = None  # OpenAI-compatible server(s), comma-separated → served simulator
    sim_style: str = "sft"
    sim_temperature: float = 0.8
    sim_words: int = 30
    sim_batch_size: int = 16
    # tokens a simulator may write per search; None: the original's 600 for a served `sft` simulator,
    # about k documents' worth for a local one (every token costs CPU time here)
    sim_max_tokens: int | None = None
    sim_answer_guard: bool = True  # ban the gold answers from noisy documents (local backend)
    sim_query_guard: bool = True  # tell the simulator the question and answer only when the query names its subject
    noise: str | float = 0.0  # default P(noisy) (or a forced kind) when a request does not say
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    # USD per 1,000 searches that reach a real engine, for the cost ledger (default: the paper's SerpAPI figure)
    price_per_1000: float = SERPAPI_PRICE_PER_1000

    def __post_init__(self) -> None:
        if self.price_per_1000 < 0:
            raise ValueError(f"price_per_1000 cannot be negative, not {self.price_per_1000}")
        if self.timeout <= 0 or self.retries < 0:
            raise ValueError(f"need timeout > 0 and retries >= 0, not timeout={self.timeout}, retries={self.retries}")
        if self.kind == "simulated":
            from .simulated import SimulatedEngine

            if not 1 <= self.topk <= SimulatedEngine.max_topk:
                raise ValueError(f"the simulated engine writes 1 to {SimulatedEngine.max_topk} documents, not topk={self.topk}")
        if self.sim_max_tokens is not None and self.sim_max_tokens < 1:
            raise ValueError(f"sim_max_tokens must be at least 1, not {self.sim_max_tokens}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown engine settings: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def served_sft(self) -> bool:
        """A served simulator on the official prompt (e.g. a released one): it gets the original's token budget."""
        return bool(self.sim_url) and self.sim_style == "sft"

    def build(self, generator=None) -> SearchEngine:
        """Build the engine. A simulated engine can reuse an already loaded `generator`."""
        if self.kind == "bm25":
            if not self.corpus:
                raise ValueError("the bm25 engine needs a corpus jsonl (--corpus)")
            from .bm25 import BM25Engine

            return BM25Engine(self.corpus, topk=self.topk)
        if self.kind == "remote":
            if not self.url:
                raise ValueError("the remote engine needs the server's /retrieve URL (--url)")
            from .remote import RemoteEngine

            return RemoteEngine(self.url, topk=self.topk, timeout=self.timeout, retries=self.retries, token=self.token)
        if self.kind == "serp":
            from .serp import SerpEngine

            return SerpEngine(topk=self.topk, cache_dir=self.cache_dir, timeout=self.timeout, retries=self.retries)
        if self.kind == "simulated":
            from .simulated import OFFICIAL_MAX_TOKENS, SimulatedEngine

            return SimulatedEngine(
                generator or self.build_generator(),
                style=self.sim_style,
                topk=self.topk,
                noise=self.noise,
                temperature=self.sim_temperature,
                words=self.sim_words,
                max_new_tokens=self.sim_max_tokens or (OFFICIAL_MAX_TOKENS if self.served_sft else None),
                seed=self.seed,
                answer_guard=self.sim_answer_guard,
                query_guard=self.sim_query_guard,
            )
        raise ValueError(f"unknown engine {self.kind!r}; choose one of {', '.join(ENGINE_KINDS)}")

    def build_generator(self):
        if self.sim_url:
            from ..llm.openai_compat import OpenAICompatGenerator

            return OpenAICompatGenerator(self.sim_url, self.sim_model, timeout=self.timeout, max_retries=self.retries)
        from ..llm.local import TransformersGenerator

        return TransformersGenerator.from_pretrained(
            self.sim_model, device=self.device, dtype=self.dtype, batch_size=self.sim_batch_size
        )


__all__ = [
    "ENGINE_KINDS", "EngineConfig", "SearchEngine", "SearchRequest", "SearchResult", "Document", "USEFUL", "NOISY",
]
