import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zerosearch.data.loaders import examples_from_rows, load


def write_lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


FLASHRAG = [
    {"id": "test_0", "question": "who wrote hamlet", "golden_answers": ["Shakespeare", "William Shakespeare"],
     "metadata": {"difficulty": "easy"}},
    {"id": "test_1", "question": "capital of france?", "answers": "Paris"},
    {"question": "  year of the moon landing  ", "answer": 1969, "data_source": "custom"},
]


def search_r1_table():
    rows = [
        {
            "id": "train_0",
            "question": "who painted the mona lisa?",
            "golden_answers": ["Leonardo da Vinci"],
            "data_source": "nq",
            "prompt": [{"role": "user", "content": "Answer the given question... who painted the mona lisa?"}],
            "ability": "fact-reasoning",
            "reward_model": {"style": "rule", "ground_truth": {"target": ["Leonardo da Vinci"]}},
            "extra_info": {"split": "train", "index": 0},
        },
        {
            "id": None,
            "question": "who discovered penicillin?",
            "golden_answers": None,
            "data_source": "hotpotqa",
            "prompt": [{"role": "user", "content": "..."}],
            "ability": "fact-reasoning",
            "reward_model": {"style": "rule", "ground_truth": {"target": ["Alexander Fleming", "Fleming"]}},
            "extra_info": {"split": "train", "index": 7},
        },
    ]
    return pa.Table.from_pylist(rows)


def test_flashrag_jsonl_mapping(tmp_path):
    path = write_lines(tmp_path / "nq" / "test.jsonl", FLASHRAG)
    ex = load(str(path))
    assert [e.id for e in ex] == ["test_0", "test_1", "2"]
    assert ex[0].golden_answers == ["Shakespeare", "William Shakespeare"]
    assert ex[0].metadata == {"difficulty": "easy"}
    assert ex[1].golden_answers == ["Paris"]
    assert ex[2].golden_answers == ["1969"] and ex[2].question == "year of the moon landing"
    # the dataset is named by the directory when the file is named by its split
    assert [e.source for e in ex] == ["nq", "nq", "custom"]


def test_source_from_file_stem(tmp_path):
    path = write_lines(tmp_path / "nq_test.jsonl", FLASHRAG[:1])
    assert load(str(path))[0].source == "nq_test"


def test_search_r1_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(search_r1_table(), path)
    ex = load(str(path))
    assert [e.id for e in ex] == ["train_0", "hotpotqa_7"]
    assert [e.source for e in ex] == ["nq", "hotpotqa"]
    assert ex[0].golden_answers == ["Leonardo da Vinci"]
    # no golden_answers: fall back to reward_model.ground_truth.target
    assert ex[1].golden_answers == ["Alexander Fleming", "Fleming"]
    assert ex[1].metadata["extra_info"] == {"split": "train", "index": 7}
    assert ex[1].metadata["ability"] == "fact-reasoning"
    assert "prompt" not in ex[1].metadata


def test_parquet_id_fallbacks_and_plain_ground_truth(tmp_path):
    path = tmp_path / "data.parquet"
    table = pa.table(
        {
            "question": ["q one", "q two"],
            "reward_model": [{"ground_truth": "answer one"}, {"ground_truth": "answer two"}],
        }
    )
    pq.write_table(table, path)
    ex = load(str(path))
    assert [e.id for e in ex] == ["0", "1"]
    assert [e.golden_answers for e in ex] == [["answer one"], ["answer two"]]
    assert {e.source for e in ex} == {"data"}


def test_directory_split(tmp_path):
    world = tmp_path / "world"
    write_lines(world / "corpus.jsonl", [{"id": "d0", "contents": "doc"}])
    write_lines(world / "train.jsonl", [{"id": "t0", "question": "train q", "golden_answers": ["a"]}])
    write_lines(world / "test.jsonl", [{"id": "e0", "question": "test q", "golden_answers": ["b"], "source": "world"}])
    assert [e.id for e in load(str(world))] == ["e0"]
    train = load(str(world), split="train")
    assert [e.id for e in train] == ["t0"] and train[0].source == "world"
    with pytest.raises(ValueError, match=r"no dev\.jsonl or dev\.parquet.*test\.jsonl"):
        load(str(world), split="dev")


def test_directory_of_parquet_splits(tmp_path):
    pq.write_table(search_r1_table(), tmp_path / "test.parquet")
    assert len(load(str(tmp_path))) == 2


def test_several_specs_and_limit(tmp_path):
    a = write_lines(tmp_path / "nq" / "test.jsonl", FLASHRAG)
    b = tmp_path / "r1.parquet"
    pq.write_table(search_r1_table(), b)
    ex = load(f"{a}, {b}", limit=1)
    assert [(e.id, e.source) for e in ex] == [("test_0", "nq"), ("train_0", "nq")]
    assert len(load(f"{a},{b}")) == 5
    assert load(str(a), limit=0) == []


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="nope.jsonl: no such file"):
        load(str(tmp_path / "nope.jsonl"))
    csv = tmp_path / "data.csv"
    csv.write_text("question,answer\n")
    with pytest.raises(ValueError, match=r"data\.csv: unknown extension '\.csv'"):
        load(str(csv))
    with pytest.raises(ValueError, match="empty data spec"):
        load(" , ")


def test_row_errors_name_file_and_row(tmp_path):
    no_question = write_lines(tmp_path / "a.jsonl", [FLASHRAG[0], {"id": "x", "golden_answers": ["y"]}])
    with pytest.raises(ValueError, match=r"a\.jsonl: row 1: no question"):
        load(str(no_question))
    no_answers = write_lines(tmp_path / "b.jsonl", [{"id": "x", "question": "q", "golden_answers": ["", None]}])
    with pytest.raises(ValueError, match=r"b\.jsonl: row 0: no answers"):
        load(str(no_answers))
    not_object = write_lines(tmp_path / "c.jsonl", ["[1, 2]"])
    with pytest.raises(ValueError, match=r"c\.jsonl: row 0: expected an object"):
        load(str(not_object))
    bad_json = write_lines(tmp_path / "d.jsonl", [FLASHRAG[0], "{not json"])
    with pytest.raises(ValueError, match=r"d\.jsonl:2: not valid JSON"):
        load(str(bad_json))


def test_bad_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"broken\.parquet: not a readable parquet file"):
        load(str(path))
    no_answers = tmp_path / "na.parquet"
    pq.write_table(pa.table({"question": ["q"], "golden_answers": pa.array([[]], type=pa.list_(pa.string()))}), no_answers)
    with pytest.raises(ValueError, match=r"na\.parquet: row 0: no answers"):
        load(str(no_answers))


def test_mapping_on_an_in_memory_dataset():
    import datasets

    ds = datasets.Dataset.from_list(
        [
            {"id": "test_0", "question": "q0", "golden_answers": ["a0"], "metadata": {"k": 1}},
            {"id": "test_1", "question": "q1", "golden_answers": ["a1", "b1"], "metadata": {"k": 2}},
        ]
    )
    ex = examples_from_rows(ds, where="hf:x/y", default_source="nq")
    assert [(e.id, e.golden_answers, e.source, e.metadata) for e in ex] == [
        ("test_0", ["a0"], "nq", {"k": 1}),
        ("test_1", ["a1", "b1"], "nq", {"k": 2}),
    ]


def test_hub_calls_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, *, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(
            [{"id": f"test_{i}", "question": f"q{i}", "golden_answers": [f"a{i}"]} for i in range(5)]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ex = load("hf:RUC-NLPIR/FlashRAG_datasets:nq", split="test", limit=3)
    assert calls == [("RUC-NLPIR/FlashRAG_datasets", "nq", "test")]
    assert [e.id for e in ex] == ["test_0", "test_1", "test_2"] and {e.source for e in ex} == {"nq"}

    ex = load("hf:someone/my_qa", split="train")
    assert calls[-1] == ("someone/my_qa", None, "train")
    assert len(ex) == 5 and ex[0].source == "my_qa"


def test_hub_errors(monkeypatch):
    import datasets

    def no_network(*args, **kwargs):
        raise AssertionError("must not reach the hub")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    with pytest.raises(ValueError, match="split is required"):
        load("hf:owner/name")
    with pytest.raises(ValueError, match="expected hf:owner/name"):
        load("hf:justaname", split="test")
