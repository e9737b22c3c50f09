import json

import pytest
from typer.testing import CliRunner

from zerosearch.cli import app

runner = CliRunner()


def test_world_is_deterministic_per_seed(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        r = runner.invoke(app, ["world", "--out", str(tmp_path / name), "--seed", str(seed), "--entities", "60"])
        assert r.exit_code == 0, r.output
    for f in ("corpus.jsonl", "train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()


def test_world_rejects_bad_arguments(tmp_path):
    r = runner.invoke(app, ["world", "--out", str(tmp_path), "--entities", "3"])
    assert r.exit_code == 2 and "error" in r.output


def test_search_bm25_prints_k_documents(tmp_path):
    runner.invoke(app, ["world", "--out", str(tmp_path), "--seed", "1", "--entities", "60"])
    q = json.loads((tmp_path / "test.jsonl").read_text().splitlines()[0])
    r = runner.invoke(app, ["search", q["question"], "--engine", "bm25", "--corpus", str(tmp_path / "corpus.jsonl"),
                            "--topk", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["engine"] == "bm25" and out["real"] is True and len(out["documents"]) == 3
    assert out["documents"][0]["id"] in q["metadata"]["gold_doc_ids"][:1] or any(
        d["id"] == q["metadata"]["gold_doc_ids"][0] for d in out["documents"])


def test_commands_have_help():
    for cmd in (["world"], ["search"], ["serve"], ["train"], ["warmstart"], ["eval"], ["ask"], ["demo"], ["experiment"],
                ["simtune", "pretrain"], ["simtune", "collect"], ["simtune", "dataset"], ["simtune", "tune"],
                ["simtune", "check"]):
        r = runner.invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0, (cmd, r.output)


def test_unknown_engine_and_missing_corpus_are_clear_errors():
    r = runner.invoke(app, ["search", "q", "--engine", "altavista"])
    assert r.exit_code == 2 and "unknown engine" in r.output
    r = runner.invoke(app, ["search", "q", "--engine", "bm25"])
    assert r.exit_code == 2 and "corpus" in r.output


@pytest.mark.slow
def test_search_with_the_packaged_simulator_prints_k_documents():
    r = runner.invoke(app, ["search", "Ulvil Infirmary founder", "--engine", "simulated", "--sim-model", "smollm2-135m",
                            "--noise", "useful", "--question", "Who founded the Ulvil Infirmary?", "--answer",
                            "Ysmith Velek", "--topk", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["engine"] == "simulated" and out["kind"] == "useful" and len(out["documents"]) == 3


def test_simtune_pretrain_and_the_comparison_commands_fail_clearly_on_bad_input(tmp_path):
    r = runner.invoke(app, ["simtune", "pretrain", "--corpus", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no corpus file" in r.output
    r = runner.invoke(app, ["experiment", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no config file" in r.output
    (tmp_path / "bad.yaml").write_text("demo:\n  arms: [{name: a, engine: google}]\n")
    r = runner.invoke(app, ["demo", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "engine must be one of" in r.output
