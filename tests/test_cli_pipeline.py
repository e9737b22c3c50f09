"""warmstart → train → eval → ask through the command line, on a tiny model and a fresh world."""

import json

import yaml
from typer.testing import CliRunner

from zerosearch.cli import app

runner = CliRunner()


def _invoke(args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def test_pipeline_on_a_world_seed_the_code_never_used(tmp_path):
    from zerosearch.llm.tiny import save_tiny

    w = tmp_path / "world"
    _invoke(["world", "--out", w, "--seed", 90417, "-c", "world.entities=40"])
    corpus = [json.loads(line)["contents"] for line in (w / "corpus.jsonl").read_text().splitlines()]
    policy = save_tiny(tmp_path / "tiny", corpus)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "engine": {"kind": "bm25", "corpus": str(w / "corpus.jsonl"), "topk": 2},
        "rollout": {"max_turns": 1, "max_new_tokens": 40},  # the demonstrations' turns fit
        "rl": {"steps": 1, "questions_per_step": 2, "num_generations": 2},
        "warmstart": {"demos": 4, "sft": {"steps": 1, "batch_size": 2}},
    }))
    out = _invoke(["warmstart", "--config", config, "--policy", policy, "--train-data", w, "--out", tmp_path / "ws",
                   "-c", "engine.price_per_1000=1000"])
    assert (tmp_path / "ws" / "model" / "config.json").exists()
    searched = json.loads((tmp_path / "ws" / "warmstart.json").read_text())["search_cost"]["real_searches"]
    assert searched > 0
    assert f"search cost: {searched} real searches (${searched:.2f} at $1,000.00 / 1,000); 0 simulated" in out
    _invoke(["train", "--config", config, "--policy", tmp_path / "ws" / "model", "--train-data", w,
             "--out", tmp_path / "rl"])
    assert (tmp_path / "rl" / "policy" / "config.json").exists()
    summary = json.loads((tmp_path / "rl" / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["engine"]["engine"] == "bm25"
    assert summary["search_cost"]["real_searches"] == summary["real_searches"]
    assert summary["search_cost"]["price_per_1000"] == 586.7 / 64  # the default, as nothing else was asked for

    n_test = len((w / "test.jsonl").read_text().splitlines())
    _invoke(["eval", "--policy", tmp_path / "rl" / "policy", "--data", w, "-c", config, "--out", tmp_path / "eval"])
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["n"] == n_test and len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == n_test
    out = _invoke(["eval", "--baseline", "rag", "--policy", policy, "--data", w, "--limit", 5, "-c",
                   f"engine.corpus={w / 'corpus.jsonl'}", "--out", tmp_path / "rag"])
    assert "search cost: 5 real searches ($0.05 at $9.17 / 1,000); 0 simulated" in out
    assert json.loads((tmp_path / "rag" / "report.json").read_text())["searches_per_question"] == 1.0

    out = _invoke(["ask", "Who founded the Nothing Society?", "--policy", policy, "-c", config,
                   "-c", "rollout.max_new_tokens=6"])
    assert "turn 1" in out and "answer:" in out


def test_eval_needs_a_policy_or_a_baseline(tmp_path):
    r = runner.invoke(app, ["eval", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--policy" in r.output
