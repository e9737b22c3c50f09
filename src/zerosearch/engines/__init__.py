"""Search engines behind one interface; `build_engine(EngineConfig)` makes any of them from settings."""

from __future__ import annotations

from ..settings import ENGINE_KINDS, EngineConfig
from .base import NOISY, USEFUL, Document, SearchEngine, SearchRequest, SearchResult


def build_engine(cfg: EngineConfig, generator=None) -> SearchEngine:
    """The engine `cfg` describes. A simulated engine can reuse an already loaded `generator`."""
    if cfg.kind == "bm25":
        if not cfg.corpus:
            raise ValueError("the bm25 engine needs a corpus jsonl (engine.corpus=…)")
        from .bm25 import BM25Engine

        return BM25Engine(cfg.corpus, topk=cfg.topk)
    if cfg.kind == "remote":
        if not cfg.url:
            raise ValueError("the remote engine needs the server's /retrieve URL (engine.url=…)")
        from .remote import RemoteEngine

        return RemoteEngine(cfg.url, topk=cfg.topk, timeout=cfg.timeout, retries=cfg.retries, token=cfg.token)
    if cfg.kind == "serp":
        from .serp import SerpEngine

        return SerpEngine(topk=cfg.topk, cache_dir=cfg.cache_dir, timeout=cfg.timeout, retries=cfg.retries)
    from .simulated import OFFICIAL_MAX_TOKENS, SimulatedEngine

    return SimulatedEngine(
        generator or build_generator(cfg),
        style=cfg.sim_style,
        topk=cfg.topk,
        noise=cfg.noise,
        temperature=cfg.sim_temperature,
        words=cfg.sim_words,
        max_new_tokens=cfg.sim_max_tokens or (OFFICIAL_MAX_TOKENS if cfg.served_sft else None),
        seed=cfg.seed,
        answer_guard=cfg.sim_answer_guard,
        query_guard=cfg.sim_query_guard,
        share_duplicates=cfg.sim_share_duplicates,
    )


def build_generator(cfg: EngineConfig):
    """The simulator's text generator: a served model (`sim_url`) or a local one."""
    if cfg.sim_url:
        from ..llm.openai_compat import OpenAICompatGenerator

        return OpenAICompatGenerator(cfg.sim_url, cfg.sim_model, timeout=cfg.timeout, max_retries=cfg.retries)
    from ..llm.local import TransformersGenerator

    return TransformersGenerator.from_pretrained(
        cfg.sim_model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.sim_batch_size
    )


__all__ = [
    "ENGINE_KINDS", "EngineConfig", "build_engine", "build_generator", "SearchEngine", "SearchRequest", "SearchResult", "Document", "USEFUL", "NOISY",
]
