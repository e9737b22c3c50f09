"""What a run's searches cost: searches that reached a paid engine, priced per 1,000, and what simulating took.

The paper's case for a simulator is a cost case; a run that only counts real searches never says what they
would have cost, nor what the simulator spent instead. `SearchCost` keeps both, and `MeteredEngine` fills one
from every result an engine returns, so no engine has to know about it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

from ..settings import SERPAPI_PRICE_PER_1000
from .base import NOISY, USEFUL, SearchEngine, SearchRequest, SearchResult


_COUNTS = ("real_searches", "simulated_searches", "simulated_tokens", "simulated_seconds", "failed_searches",
           "cached_searches")


@dataclass
class SearchCost:
    """Counts of a run's searches. A search is real when it reached a real engine (`SearchResult.real`; the
    offline BM25 engine stands in for a paid one and is priced as one); simulated when a simulator wrote it;
    cached when it was answered from a cache, for free. Failed searches are counted on their own as well; a
    failed generation still spent the simulator's tokens and seconds, which are counted."""

    real_searches: int = 0
    simulated_searches: int = 0
    simulated_tokens: int = 0  # only where the result says (a remote simulator's results may not)
    simulated_seconds: float = 0.0
    failed_searches: int = 0
    cached_searches: int = 0
    price_per_1000: float = SERPAPI_PRICE_PER_1000  # USD per 1,000 real searches

    def __post_init__(self) -> None:
        if self.price_per_1000 < 0:
            raise ValueError(f"the price of 1,000 searches cannot be negative, not {self.price_per_1000}")

    def record(self, results: Sequence[SearchResult]) -> "SearchCost":
        for r in results:
            simulated = not r.real and r.kind in (USEFUL, NOISY)
            if r.error is not None:
                self.failed_searches += 1
            if r.real:
                self.real_searches += 1
            elif simulated and r.error is None:
                self.simulated_searches += 1
            elif r.error is None:
                self.cached_searches += 1
            if simulated:
                tokens = r.meta.get("tokens")
                if isinstance(tokens, int) and not isinstance(tokens, bool):
                    self.simulated_tokens += tokens
                self.simulated_seconds += r.seconds
        return self

    @property
    def real_cost_usd(self) -> float:
        return self.real_searches * self.price_per_1000 / 1000

    def _combine(self, other: "SearchCost", sign: int) -> "SearchCost":
        if not isinstance(other, SearchCost):
            return NotImplemented
        return SearchCost(**{k: getattr(self, k) + sign * getattr(other, k) for k in _COUNTS},
                          price_per_1000=self.price_per_1000)

    def __add__(self, other: "SearchCost") -> "SearchCost":
        """Both ledgers' searches, priced at this one's rate."""
        return self._combine(other, 1)

    def __sub__(self, other: "SearchCost") -> "SearchCost":
        """What was recorded since `other`, an earlier copy of this ledger (one training step's share)."""
        return self._combine(other, -1)

    def copy(self) -> "SearchCost":
        return SearchCost(**{k: getattr(self, k) for k in _COUNTS}, price_per_1000=self.price_per_1000)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in _COUNTS}, "price_per_1000": self.price_per_1000,
                "real_cost_usd": round(self.real_cost_usd, 4), "summary": self.summary()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], price_per_1000: float | None = None) -> "SearchCost":
        """A ledger from `to_dict()` (derived keys ignored, missing counts 0), repriced when a price is given."""
        price = price_per_1000 if price_per_1000 is not None else d.get("price_per_1000", SERPAPI_PRICE_PER_1000)
        return cls(**{k: type(getattr(cls, k))(d.get(k) or 0) for k in _COUNTS}, price_per_1000=price)

    def _simulated(self) -> str:
        detail = [f"{self.simulated_tokens:,} tokens"] if self.simulated_tokens else []
        if self.simulated_seconds:
            s = self.simulated_seconds
            detail.append(f"{s:,.0f} s" if s >= 10 else f"{s:.1f} s")
        return f"{self.simulated_searches:,} simulated" + (f" ({', '.join(detail)})" if detail else "")

    def _extra(self) -> str:
        extra = [f"{self.cached_searches:,} cached"] if self.cached_searches else []
        if self.failed_searches:
            extra.append(f"{self.failed_searches:,} failed")
        return "".join(f"; {x}" for x in extra)

    def summary(self) -> str:
        """One line for people: '12 real searches ($0.11 at $9.17 / 1,000); 480 simulated (36,000 tokens, 95 s)'."""
        noun = "search" if self.real_searches == 1 else "searches"
        price = f"${self.real_cost_usd:,.2f} at ${self.price_per_1000:,.2f} / 1,000"
        return f"{self.real_searches:,} real {noun} ({price}); {self._simulated()}{self._extra()}"

    def brief(self) -> str:
        """A table cell: '$0.11 (12 real); 480 simulated (36,000 tokens, 95 s)'."""
        return f"${self.real_cost_usd:,.2f} ({self.real_searches:,} real); {self._simulated()}{self._extra()}"


class MeteredEngine(SearchEngine):
    """An engine that records every result it returns into `ledger` and is otherwise the engine it wraps."""

    def __init__(self, engine: SearchEngine, ledger: SearchCost | None = None) -> None:
        self.engine = engine
        self.ledger = ledger if ledger is not None else SearchCost()
        self._lock = threading.Lock()  # a thread-safe engine may be searched from several threads

    def search(self, requests: Sequence[SearchRequest], topk: int | None = None) -> list[SearchResult]:
        results = self.engine.search(requests, topk)
        with self._lock:
            self.ledger.record(results)
        return results

    def describe(self) -> dict[str, Any]:
        return self.engine.describe()

    def close(self) -> None:
        self.engine.close()

    def __getattr__(self, name: str) -> Any:  # the wrapped engine's own attributes (generator, url, stats, …)
        if name == "engine":  # not set yet (unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.engine, name)


def _delegate(name: str) -> property:
    return property(lambda self: getattr(self.engine, name))


# The class-level settings every engine has (name, real, default_topk, …) would otherwise be read from
# SearchEngine's defaults instead of the wrapped engine.
for _name, _value in list(vars(SearchEngine).items()):
    if not _name.startswith("_") and not callable(_value) and not isinstance(_value, property):
        setattr(MeteredEngine, _name, _delegate(_name))


def metered(engine: SearchEngine, price_per_1000: float = SERPAPI_PRICE_PER_1000) -> MeteredEngine:
    """`engine` behind a fresh ledger at the given price."""
    return MeteredEngine(engine, SearchCost(price_per_1000=price_per_1000))
