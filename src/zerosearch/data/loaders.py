"""Load QA examples from FlashRAG jsonl, Search-R1 / ZeroSearch parquet, a directory of splits, or the hub.

A spec is a path or `hf:owner/name[:config]`; several specs separated by commas are concatenated,
each keeping its own `source`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from ..io import read_jsonl
from .qa import QAExample

SPLIT_NAMES = {"train", "dev", "test", "val", "valid", "validation"}
# columns mapped onto QAExample fields; everything else (except `prompt`) goes to metadata
_MAPPED = {"id", "question", "golden_answers", "answers", "answer", "data_source", "source", "metadata"}
# Search-R1's chat prompt, rendered with its own template; the agent builds its own
_DROPPED = {"prompt"}


def load(spec: str, split: str | None = None, limit: int | None = None) -> list[QAExample]:
    """Load examples from every comma-separated spec; `limit` keeps the first N of each.

    `split` picks the file in a directory (`<dir>/<split>.jsonl` or `.parquet`, default `test`) and
    is required for `hf:` specs; a spec naming a single file ignores it.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"empty data spec {spec!r}")
    examples: list[QAExample] = []
    for part in parts:
        examples.extend(_load_one(part, split, limit))
    return examples


def _load_one(spec: str, split: str | None, limit: int | None) -> list[QAExample]:
    if spec.startswith("hf:"):
        return load_hub(spec, split, limit)
    path = Path(spec).expanduser()
    if path.is_dir():
        name = split or "test"
        for ext in (".jsonl", ".parquet"):
            if (path / f"{name}{ext}").is_file():
                path = path / f"{name}{ext}"
                break
        else:
            found = sorted(p.name for p in path.iterdir() if p.suffix in (".jsonl", ".parquet"))
            raise ValueError(f"{spec}: no {name}.jsonl or {name}.parquet in this directory (found: {found})")
    if not path.is_file():
        raise ValueError(f"{spec}: no such file or directory")
    if path.suffix == ".jsonl":
        rows: list[dict[str, Any]] = read_jsonl(path)
        if limit is not None:
            rows = rows[:limit]
    elif path.suffix == ".parquet":
        rows = _read_parquet(path, limit)
    else:
        raise ValueError(f"{path}: unknown extension {path.suffix!r} (expected .jsonl or .parquet)")
    return examples_from_rows(rows, where=str(path), default_source=_default_source(path))


def _read_parquet(path: Path, limit: int | None) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable parquet file ({e})") from None
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()


def _default_source(path: Path) -> str:
    # FlashRAG lays datasets out as <dataset>/<split>.jsonl, so the directory names the dataset
    if path.stem.lower() in SPLIT_NAMES and path.parent.name:
        return path.parent.name
    return path.stem


def load_hub(spec: str, split: str | None, limit: int | None = None) -> list[QAExample]:
    """`hf:owner/name` or `hf:owner/name:config` through `datasets.load_dataset`."""
    name, _, config = spec.removeprefix("hf:").partition(":")
    if name.count("/") != 1 or not all(name.split("/")):
        raise ValueError(f"{spec}: expected hf:owner/name or hf:owner/name:config")
    if not split:
        raise ValueError(f"{spec}: a split is required for hub datasets (e.g. split='test')")
    import datasets

    ds = datasets.load_dataset(name, config or None, split=split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return examples_from_rows(ds, where=f"{spec} [{split}]", default_source=config or name.split("/")[1])


def examples_from_rows(
    rows: Iterable[Mapping[str, Any]], *, where: str, default_source: str = "unknown"
) -> list[QAExample]:
    """Map FlashRAG / Search-R1 rows (dicts, or a `datasets.Dataset`) to QAExamples.

    `where` names the file or dataset in error messages; rows are numbered from 0.
    """
    return [_example(row, where=where, n=n, default_source=default_source) for n, row in enumerate(rows)]


def _example(row: Mapping[str, Any], *, where: str, n: int, default_source: str) -> QAExample:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: row {n}: expected an object, got {type(row).__name__}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: row {n}: no question")
    answers = _answers(row)
    if not answers:
        raise ValueError(f"{where}: row {n}: no answers (golden_answers, answers, answer or reward_model)")
    source = next((str(row[k]) for k in ("data_source", "source") if row.get(k)), default_source)
    given = row.get("metadata")
    metadata = dict(given) if isinstance(given, Mapping) else ({} if given is None else {"metadata": given})
    metadata.update({k: v for k, v in row.items() if k not in _MAPPED and k not in _DROPPED})
    return QAExample(
        id=_id(row, n), question=question.strip(), golden_answers=answers, source=source, metadata=metadata
    )


def _answers(row: Mapping[str, Any]) -> list[str]:
    reward_model = row.get("reward_model")
    ground_truth = reward_model.get("ground_truth") if isinstance(reward_model, Mapping) else None
    # Search-R1 stores {"target": [...]}; some derived sets store the answer(s) directly
    target = ground_truth.get("target") if isinstance(ground_truth, Mapping) else ground_truth
    for value in (row.get("golden_answers"), row.get("answers"), row.get("answer"), target):
        if value is None:
            continue
        items = [value] if isinstance(value, (str, int, float)) else list(value)
        answers = [str(a).strip() for a in items if a is not None and str(a).strip()]
        if answers:
            return answers
    return []


def _id(row: Mapping[str, Any], n: int) -> str:
    if row.get("id") is not None and str(row["id"]) != "":
        return str(row["id"])
    extra = row.get("extra_info")
    if isinstance(extra, Mapping) and extra.get("index") is not None:
        prefix = row.get("data_source")
        return f"{prefix}_{extra['index']}" if prefix else str(extra["index"])
    return str(n)
