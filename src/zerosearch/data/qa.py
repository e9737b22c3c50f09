"""The QA example type and jsonl helpers shared by every loader."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable


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


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so that a reader (or a crash) never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any] | QAExample]) -> None:
    lines = [json.dumps(r.to_dict() if isinstance(r, QAExample) else r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


def load_examples(spec: str, split: str | None = None, limit: int | None = None) -> list[QAExample]:
    """Load QA examples from a FlashRAG jsonl, a Search-R1/ZeroSearch parquet, or `hf:owner/name`."""
    from .loaders import load  # loaders import this module

    return load(spec, split=split, limit=limit)
