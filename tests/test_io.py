from dataclasses import dataclass

import pytest

from zerosearch.io import append_jsonl, atomic_target, atomic_write_text, read_jsonl, write_jsonl


def test_atomic_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "deep" / "report.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second ✓")
    assert path.read_text(encoding="utf-8") == "second ✓"
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    path = tmp_path / "model.parquet"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_target(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.parquet"]


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "models" / "m"
    with pytest.raises(OSError):
        with atomic_target(out, folder=True) as tmp:
            (tmp / "config.json").write_text("{}")
            raise OSError("disk full")
    assert list(out.parent.iterdir()) == []
    with atomic_target(out, folder=True) as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"\0")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in out.parent.iterdir()] == ["m"]


@dataclass
class Row:
    id: str
    tags: list[str]


def test_jsonl_round_trip_of_dicts_and_dataclasses(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"q": "Zürich?", "n": 1}, Row("a", ["x", "y"])])
    assert path.read_text(encoding="utf-8") == '{"q": "Zürich?", "n": 1}\n{"id": "a", "tags": ["x", "y"]}\n'
    append_jsonl(path, (Row(str(i), []) for i in range(2)))
    assert read_jsonl(path) == [{"q": "Zürich?", "n": 1}, {"id": "a", "tags": ["x", "y"]},
                                {"id": "0", "tags": []}, {"id": "1", "tags": []}]
    write_jsonl(path, [])
    assert path.read_text() == "" and read_jsonl(path) == []


def test_a_line_cut_by_a_crash_is_an_error_unless_skipped(tmp_path):
    path = tmp_path / "searches.jsonl"
    append_jsonl(path, [{"id": 1}])
    with open(path, "a", encoding="utf-8") as f:
        f.write('\n{"id": 2, "te')
    with pytest.raises(ValueError, match=r"searches.jsonl:3: not valid JSON"):
        read_jsonl(path)
    assert read_jsonl(path, skip_broken=True) == [{"id": 1}]
