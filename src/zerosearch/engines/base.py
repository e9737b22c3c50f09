"""One interface for every search engine, real or simulated.

A request carries the query the policy wrote plus hidden context that only a simulator uses: the
question and gold answers of the SAME sample that searched (ZeroSearch bug B1 was to index these by
position in the filtered query list), and the noise decision (forced "useful"/"noisy", or the
probability of a noisy result for this call, from the curriculum).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import protocol

from ..curriculum import NOISY, USEFUL, parse_noise  # noqa: F401  (engines speak of noise in these terms)


@dataclass
class Document:
    id: str
    title: str
    text: str
    score: float | None = None

    @property
    def contents(self) -> str:
        """FlashRAG / Search-R1 corpus form: the quoted title on the first line, then the text."""
        return f'"{self.title}"\n{self.text}'

    @classmethod
    def from_contents(cls, id: str, contents: str, score: float | None = None) -> "Document":
        title, _, text = contents.partition("\n")
        title = title.strip()
        if len(title) >= 2 and title[0] == '"' and title[-1] == '"':
            title = title[1:-1]
        if not text:  # a one-line document has no separate title
            return cls(str(id), "", title, score)
        return cls(str(id), title, text.strip(), score)

    def to_search_r1(self, with_score: bool) -> dict[str, Any]:
        doc = {"id": self.id, "contents": self.contents}
        return {"document": doc, "score": self.score if self.score is not None else 0.0} if with_score else doc


@dataclass
class SearchRequest:
    query: str
    question: str | None = None
    golden_answers: Sequence[str] = ()
    # "useful" / "noisy" forces the simulator's choice; a float is P(noisy) for this call (the
    # curriculum's p(step)); None lets the engine use its own default. Real engines ignore it.
    noise: str | float | None = None

    def __post_init__(self) -> None:
        if self.noise is not None:
            self.noise = parse_noise(self.noise)


@dataclass
class SearchResult:
    query: str
    documents: list[Document]
    engine: str  # which engine answered: "bm25", "remote", "serp", "simulated"
    real: bool  # True when the call reached a real search engine (the cost ledger counts these)
    kind: str | None = None  # "useful" / "noisy" for simulated results; None for real engines
    error: str | None = None  # set (and counted) when the engine failed for this request
    repaired: int = 0  # documents the simulator had to pad or repair to reach top-k
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def docs_text(self) -> str:
        """What the policy reads inside <information>…</information>."""
        if self.error is not None and not self.documents:
            return f"Search failed: {self.error}"
        return protocol.format_documents([(d.title, d.text) for d in self.documents])

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "engine": self.engine,
            "real": self.real,
            "kind": self.kind,
            "error": self.error,
            "repaired": self.repaired,
            "documents": [{"id": d.id, "title": d.title, "text": d.text, "score": d.score} for d in self.documents],
        }


class SearchEngine(ABC):
    """Answers a batch of requests with top-k documents each.

    `search` returns exactly one result per request, in order. A failure of one request is reported in
    that result's `error` (and counted by the caller); configuration errors raise.
    """

    name: str = "engine"
    real: bool = True
    default_topk: int = 3
    max_topk: int = 100  # the most documents a request may ask for
    # Whether `search` may run in several threads at once (engines wrapping a local model may not). The
    # server and the batching worker leave a stuck call of a thread-safe engine behind instead of queueing.
    thread_safe: bool = False

    @abstractmethod
    def search(self, requests: Sequence[SearchRequest], topk: int | None = None) -> list[SearchResult]: ...

    def close(self) -> None:  # engines holding connections or models override this
        pass

    def __enter__(self) -> "SearchEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "real": self.real, "topk": self.default_topk}


def check_topk(topk: int | None, default: int, limit: int = 100) -> int:
    k = default if topk is None else topk
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k > limit:
        raise ValueError(f"topk must be an integer between 1 and {limit}, not {topk!r}")
    return k
