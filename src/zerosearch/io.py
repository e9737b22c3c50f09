"""Files that a reader, or a crash, never sees half written, and JSON Lines in and out."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextmanager
def atomic_target(path: str | Path, *, folder: bool = False) -> Iterator[Path]:
    """A temporary file (or, with `folder`, a folder) beside `path` to write into; it takes the place of `path`
    when the block ends without an error and is removed when it raises.

    Beside, not in /tmp: the final rename must stay on one file system to be atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename, or a power cut can leave an empty file in its place


def _jsonl(rows: Iterable[Any]) -> str:
    return "".join(json.dumps(asdict(r) if is_dataclass(r) else r, ensure_ascii=False) + "\n" for r in rows)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """One JSON object a line, written atomically; rows are dicts or dataclass instances."""
    atomic_write_text(path, _jsonl(rows))


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Add rows to the end of a file that grows as work is done (a crash may cut its last line: see read_jsonl)."""
    text = _jsonl(rows)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()


def read_jsonl(path: str | Path, *, skip_broken: bool = False) -> list[Any]:
    """Every JSON value of a file, one a line; blank lines are skipped. A line that is not JSON is an error
    naming it, or with `skip_broken` is passed over (what a crash leaves at the end of an appended file)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                if skip_broken:
                    continue
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows
