import json

import pytest
from typer.testing import CliRunner

from zerosearch.cli import app

runner = CliRunner()


def test_world_is_deterministic_per_seed(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        r = runner.invoke(app, ["world", "--out", str(tmp_path / name), "--seed", str(seed), "-c", "world.entities=60"])
        assert r.exit_code == 0, r.output
    for f in ("corpus.jsonl", "train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()


def test_world_rejects_bad_arguments(tmp_path):
    r = runner.invoke(app, ["world", "--out", str(tmp_path), "-c", "world.entities=3"])
    assert r.exit_code == 2 and "error" in r.output


def test_search_bm25_prints_k_documents(tmp_path):
    runner.invoke(app, ["world", "--out", str(tmp_path), "--seed", "1", "-c", "world.entities=60"])
    q = json.loads((tmp_path / "test.jsonl").read_text().splitlines()[0])
    r = runner.invoke(app, ["search", q["question"], "-c", "engine.kind=bm25", "-c", f"engine.corpus={tmp_path}/corpus.jsonl",
                            "-c", "engine.topk=3", "--json"])
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
    r = runner.invoke(app, ["search", "q", "-c", "engine.kind=altavista"])
    assert r.exit_code == 2 and "unknown engine" in r.output
    r = runner.invoke(app, ["search", "q", "-c", "engine.kind=bm25"])
    assert r.exit_code == 2 and "corpus" in r.output
    r = runner.invoke(app, ["search", "q", "-c", "demo-gpu"])
    assert r.exit_code == 2 and "presets: demo-cpu" in r.output


def count_parameters() -> dict[str, int]:
    from typer.main import get_command

    counts: dict[str, int] = {}

    def walk(command, name: str) -> None:
        if hasattr(command, "commands"):
            for sub_name, sub in command.commands.items():
                walk(sub, f"{name} {sub_name}".strip())
        else:
            counts[name] = len(command.params)

    walk(get_command(app), "")
    return counts


def test_the_command_line_has_at_most_half_the_parameters_it_had():
    counts = count_parameters()
    assert len(counts) == 15  # every command is still there
    assert sum(counts.values()) <= 131 // 2 + 1, counts  # 131 parameters before one shared --config option


@pytest.mark.slow
def test_search_with_the_packaged_simulator_prints_k_documents():
    r = runner.invoke(app, ["search", "Ulvil Infirmary founder", "-c", "engine.kind=simulated", "-c",
                            "engine.sim_model=smollm2-135m", "-c", "engine.noise=useful", "--question",
                            "Who founded the Ulvil Infirmary?", "--answer", "Ysmith Velek", "-c", "engine.topk=3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["engine"] == "simulated" and out["kind"] == "useful" and 1 <= len(out["documents"]) <= 3
    assert all(d["title"] for d in out["documents"])


def test_simtune_pretrain_and_the_comparison_commands_fail_clearly_on_bad_input(tmp_path):
    r = runner.invoke(app, ["simtune", "pretrain", "--corpus", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no corpus file" in r.output
    r = runner.invoke(app, ["experiment", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no config file" in r.output
    (tmp_path / "bad.yaml").write_text("demo:\n  arms: [{name: a, engine: google}]\n")
    r = runner.invoke(app, ["demo", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "engine must be one of" in r.output


def test_report_to_is_checked_before_anything_loads(tmp_path, monkeypatch):
    for cmd, key in ((["train", "--out", str(tmp_path / "t")], "rl"),
                     (["warmstart", "--out", str(tmp_path / "w")], "warmstart.sft"),
                     (["simtune", "tune", "--data", str(tmp_path / "sft.jsonl"), "--out", str(tmp_path / "s")], "simtune.tune")):
        r = runner.invoke(app, [*cmd, "-c", f"{key}.report_to=mlflow"])
        said = " ".join(r.output.split())  # as one line, however the console wrapped it
        assert r.exit_code == 2 and "report_to must be one of none, tensorboard, wandb, trackio" in said, r.output
        assert "Traceback" not in r.output
    # a tracker whose package is missing fails before the policy loads, with how to install it
    from zerosearch.train import tracking

    monkeypatch.setitem(tracking._NEEDS, "wandb", (("no_such_tracker_module",), "pip install wandb"))
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "t"), "-c", "rl.report_to=wandb"])
    assert r.exit_code == 2 and "pip install wandb" in r.output, r.output
    # a config file's setting is checked the same way
    (tmp_path / "run.yaml").write_text("rl:\n  report_to: wandb\n")
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "t"), "--config", str(tmp_path / "run.yaml")])
    assert r.exit_code == 2 and "pip install wandb" in r.output, r.output


def test_search_exits_non_zero_when_the_engine_failed():
    from tests.test_reliability import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    for fmt in ([], ["--json"]):
        r = runner.invoke(app, ["search", "q", "-c", "engine.kind=simulated", "-c", f"engine.sim_url={dead}",
                                "-c", "engine.retries=0", "-c", "engine.timeout=1", *fmt])
        assert r.exit_code == 1 and "ConnectError" in r.output, r.output
    r = runner.invoke(app, ["search", "q", "-c", "engine.kind=remote", "-c", "engine.url=http://127.0.0.1:1",
                            "-c", "engine.timeout=0"])
    assert r.exit_code == 2 and "timeout > 0" in r.output


def test_a_missing_policy_folder_is_an_immediate_clear_error(tmp_path):
    import time

    runner.invoke(app, ["world", "--out", str(tmp_path / "w"), "--seed", "1", "-c", "world.entities=60"])
    for policy, says in (("runs/typo/policy", "no model folder 'runs/typo/policy'"),
                         (str(tmp_path / "nope"), "the path does not exist"),
                         ("nobody/no-such-model", "cannot be reached")):  # the tests run with HF_HUB_OFFLINE=1
        t0 = time.perf_counter()
        r = runner.invoke(app, ["eval", "--policy", policy, "--data", str(tmp_path / "w"), "--limit", "2", "-c",
                                f"engine.corpus={tmp_path}/w/corpus.jsonl", "--out", str(tmp_path / "e")])
        assert r.exit_code == 2 and says in " ".join(r.output.split()), r.output
        assert time.perf_counter() - t0 < 10  # no retries against the hub


def test_simtune_collect_prints_what_its_real_searches_cost(tmp_path):
    runner.invoke(app, ["world", "--out", str(tmp_path / "w"), "--seed", "1", "-c", "world.entities=60"])
    args = ["simtune", "collect", "--data", str(tmp_path / "w"), "-c", "train_limit=4",
            "-c", f"engine.corpus={tmp_path}/w/corpus.jsonl", "--out", str(tmp_path / "s.jsonl")]
    r = runner.invoke(app, args + ["-c", "engine.price_per_1000=2000"])
    assert r.exit_code == 0, r.output
    n = len((tmp_path / "s.jsonl").read_text().splitlines())
    assert n > 0 and f"search cost: {n} real searches (${2 * n}.00 at $2,000.00 / 1,000); 0 simulated" in r.output
    r = runner.invoke(app, args + ["-c", "engine.price_per_1000=-1"])
    assert r.exit_code == 2 and "price_per_1000 cannot be negative" in r.output


def test_data_from_an_unreachable_hub_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["export", "verl", "--data", "hf:nobody/no-such-dataset", "--out", str(tmp_path / "t.parquet")])
    assert r.exit_code == 2 and "cannot load hf:nobody/no-such-dataset" in " ".join(r.output.split()), r.output
    assert "Traceback" not in r.output

