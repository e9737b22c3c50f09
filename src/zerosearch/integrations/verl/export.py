"""Rows for verl's RLHFDataset, from the world or any FlashRAG / Search-R1 data (`zerosearch export verl`).

A row holds what verl reads (`prompt` as chat messages, `data_source`, `reward_model.ground_truth.target`,
`agent_name` to pick our agent loop) and what our agent loop needs at run time (`extra_info.question` and
`extra_info.golden_answers`: the simulator sees the question and answers of the sample that searched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ... import protocol
from ...data.qa import QAExample
from ...io import atomic_target
from . import AGENT_NAME


def verl_rows(examples: Sequence[QAExample], split: str = "train", agent_name: str = AGENT_NAME) -> list[dict[str, Any]]:
    rows = []
    for i, ex in enumerate(examples):
        answers = [str(a) for a in ex.golden_answers]
        rows.append({
            # FlashRAG's columns stay at the top, as in Search-R1's parquet, so our loaders read the file back
            "id": str(ex.id),
            "question": ex.question,
            "golden_answers": answers,
            "data_source": ex.source,
            "prompt": protocol.chat_prompt(ex.question),
            "ability": "fact-reasoning",
            "reward_model": {"style": "rule", "ground_truth": {"target": answers}},
            "agent_name": agent_name,
            "extra_info": {"index": i, "split": split, "id": str(ex.id), "question": ex.question,
                           "golden_answers": answers},
        })
    return rows


def write_parquet(rows: Sequence[dict[str, Any]], out: str | Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        raise ValueError("no rows to write")
    out = Path(out)
    if out.suffix != ".parquet":
        raise ValueError(f"{out}: the output must be a .parquet file (verl picks the reader by extension)")
    with atomic_target(out) as tmp:
        pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    return out
