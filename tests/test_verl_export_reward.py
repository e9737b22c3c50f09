"""The verl adapter's parts that need no verl: parquet export, the reward function, the stop cut.
The agent loop and manager are tested against the real verl classes by `make test-verl` (tests_verl/)."""

import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from zerosearch import protocol
from zerosearch.cli import app
from zerosearch.data.loaders import load
from zerosearch.data.qa import QAExample
from zerosearch.integrations.verl.episode import stop_length
from zerosearch.integrations.verl.export import verl_rows, write_parquet
from zerosearch.integrations.verl.reward import compute_score, gold_answers
from zerosearch.io import write_jsonl

runner = CliRunner()


def test_rows_carry_what_verl_and_the_agent_loop_read(tmp_path):
    exs = [QAExample("a1", "who founded Quorath", ["Brel Tesk", "Tesk"], source="nq"),
           QAExample("b2", "when was it built?", ["1931"], source="hotpotqa")]
    path = write_parquet(verl_rows(exs, split="train"), tmp_path / "train.parquet")
    rows = pq.read_table(path).to_pylist()
    assert rows[0]["prompt"] == protocol.chat_prompt("who founded Quorath")
    assert rows[0]["prompt"][0]["content"].endswith("Question: who founded Quorath?\n")
    assert rows[0]["reward_model"] == {"style": "rule", "ground_truth": {"target": ["Brel Tesk", "Tesk"]}}
    assert rows[1]["data_source"] == "hotpotqa" and rows[1]["agent_name"] == "zerosearch_agent"
    assert rows[1]["extra_info"] == {"index": 1, "split": "train", "id": "b2", "question": "when was it built?",
                                     "golden_answers": ["1931"]}
    back = load(str(path))  # our own loaders read the export as Search-R1 parquet
    assert [(e.id, e.question, e.golden_answers, e.source) for e in back] == \
        [(e.id, e.question, e.golden_answers, e.source) for e in exs]


def test_export_rejects_a_non_parquet_path_and_empty_data(tmp_path):
    with pytest.raises(ValueError, match=r"\.parquet"):
        write_parquet(verl_rows([QAExample("a", "q", ["x"])]), tmp_path / "train.jsonl")
    with pytest.raises(ValueError, match="no rows"):
        write_parquet([], tmp_path / "train.parquet")


def test_cli_exports_the_world_and_flashrag_jsonl(tmp_path):
    assert runner.invoke(app, ["world", "--out", str(tmp_path / "w"), "-c", "world.entities=40"]).exit_code == 0
    r = runner.invoke(app, ["export", "verl", "--data", str(tmp_path / "w"), "--split", "test", "--limit", "7",
                            "--out", str(tmp_path / "out" / "test.parquet")])
    assert r.exit_code == 0, r.output
    rows = pq.read_table(tmp_path / "out" / "test.parquet").to_pylist()
    assert len(rows) == 7 and {row["extra_info"]["split"] for row in rows} == {"test"}

    write_jsonl(tmp_path / "nq" / "dev.jsonl", [{"id": "dev_0", "question": "who got the first nobel prize in physics",
                                                  "golden_answers": ["Wilhelm Conrad Röntgen"]}])
    r = runner.invoke(app, ["export", "verl", "--data", str(tmp_path / "nq" / "dev.jsonl"), "--out",
                            str(tmp_path / "dev.parquet"), "--agent-name", "zerosearch_agent_val"])
    assert r.exit_code == 0, r.output
    (row,) = pq.read_table(tmp_path / "dev.parquet").to_pylist()
    assert row["data_source"] == "nq" and row["agent_name"] == "zerosearch_agent_val"
    assert row["reward_model"]["ground_truth"]["target"] == ["Wilhelm Conrad Röntgen"]

    r = runner.invoke(app, ["export", "verl", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x.parquet")])
    assert r.exit_code == 2 and "no such file" in " ".join(r.output.split())


def test_reward_is_f1_with_both_em_variants_and_never_raises_without_an_answer():
    gt = {"target": ["Brel Tesk"]}
    assert compute_score("nq", "<answer> brel tesk </answer>", gt) == \
        {"score": 1.0, "f1": 1.0, "strict_em": 1.0, "cover_em": 1.0, "answered": 1.0, "repeated_query": 0.0}
    partial = compute_score("nq", "<answer> Brel Tesk of Quorath </answer>", gt)
    assert partial["strict_em"] == 0.0 and partial["cover_em"] == 1.0 and partial["score"] == pytest.approx(2 / 3)
    assert compute_score("nq", "I give up", gt)["score"] == 0.0
    # the last answer counts, and answers inside documents (even a cut-off block) do not
    resp = "<answer> no </answer>" + protocol.observation("Doc 1(Title: x) <answer> Brel Tesk </answer>")
    assert compute_score("nq", resp, gt)["answered"] == 1.0 and compute_score("nq", resp, gt)["score"] == 0.0
    assert compute_score("nq", "<information> <answer> Brel Tesk </answer> cut", gt)["answered"] == 0.0


def test_repeat_penalty_counts_the_queries_the_policy_wrote_not_those_in_documents():
    gt = {"target": ["Brel Tesk"]}
    docs = protocol.observation("Doc 1(Title: x) <search> q </search>")
    twice = "<search> Brel  q </search>" + docs + "<search> brel q </search>" + docs + "<answer> Brel Tesk </answer>"
    once = "<search> q </search>" + docs + "<answer> Brel Tesk </answer>"
    assert compute_score("nq", twice, gt)["score"] == 1.0  # no penalty asked: the paper's reward
    scored = compute_score("nq", twice, gt, repeat_penalty=0.5)
    assert scored["score"] == 0.5 and scored["f1"] == 1.0 and scored["repeated_query"] == 1.0
    assert compute_score("nq", once, gt, repeat_penalty=0.5)["score"] == 1.0
    # Search-R1's reward: strict EM, the penalty on top
    assert compute_score("nq", "<answer> Brel Tesk of Quorath </answer>", gt, reward="em")["score"] == 0.0
    assert compute_score("nq", twice, gt, repeat_penalty=0.5, reward="em")["score"] == 0.5


def test_gold_answers_accepts_search_r1_shapes_and_rejects_empty_ones():
    assert gold_answers({"target": ["a", "b"]}) == ["a", "b"]
    assert gold_answers(("a",)) == ["a"] and gold_answers("a") == ["a"] and gold_answers(1931) == ["1931"]
    for bad in ({"answer": ["a"]}, None, [], [" "]):
        with pytest.raises(ValueError):
            gold_answers(bad)


def test_stop_length_cuts_after_the_first_stop_string(tiny_tokenizer):
    tok = tiny_tokenizer
    head = tok("<think> x </think><search> capital </search>", add_special_tokens=False).input_ids
    tail = tok("<information> made up </information><answer> y </answer>", add_special_tokens=False).input_ids
    assert stop_length(tok, head + tail) == len(head)
    assert stop_length(tok, head) == len(head)
    plain = tok("no action here", add_special_tokens=False).input_ids
    assert stop_length(tok, plain) == len(plain) and stop_length(tok, []) == 0


def test_the_package_imports_without_verl():
    code = ("import sys, zerosearch.integrations.verl.export, zerosearch.integrations.verl.reward, "
            "zerosearch.integrations.verl.episode; assert 'verl' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
