import json

import pytest

from zerosearch.data.qa import QAExample
from zerosearch.demo import Stages, run_demo, split_rl_questions, with_multi_hop_share
from zerosearch.settings import ArmSettings, DemoSettings, load_demo_settings
from zerosearch.metrics import paired_bootstrap


def test_paired_bootstrap_counts_flips_and_brackets_the_difference():
    before = {str(i): float(i % 2) for i in range(40)}  # 20 right
    after = {str(i): 1.0 if i < 30 else before[str(i)] for i in range(40)}  # 15 gained among the first 30, 0 lost
    d = paired_bootstrap(before, after, resamples=2000)
    assert (d.gained, d.lost, d.n) == (15, 0, 40)
    assert d.difference == pytest.approx(100 * 15 / 40)
    assert 0 < d.low < d.difference < d.high <= 100 and d.excludes_zero()
    assert paired_bootstrap(before, after, resamples=2000) == d  # seeded
    same = paired_bootstrap(before, before, resamples=200)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero()
    with pytest.raises(ValueError, match="same questions"):
        paired_bootstrap(before, {"x": 1.0})


def test_arm_and_pipeline_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="engine must be one of"):
        ArmSettings("a", engine="google")
    with pytest.raises(ValueError, match="must differ"):
        DemoSettings(arms=[ArmSettings("a"), ArmSettings("a", "bm25")])
    with pytest.raises(ValueError, match="must differ"):
        DemoSettings(arms=[ArmSettings("a"), ArmSettings("a-seed1", "bm25")], extra_seeds=[1])
    bad = tmp_path / "c.yaml"
    bad.write_text("demo:\n  arms:\n    - {name: x, engine: tuned, nois: 0.5}\n")
    with pytest.raises(ValueError, match=r"demo.arms\[0\].*nois"):
        load_demo_settings([str(bad)])


def test_rl_questions_can_take_both_hops_in_equal_numbers_and_leave_the_rest_to_the_warm_start():
    qs = [QAExample(str(i), f"q{i}", ["a"], metadata={"hops": 2 if i % 4 == 0 else 1}) for i in range(40)]
    rl, side = split_rl_questions(qs, 10)
    assert rl == qs[:10] and side == qs[10:]
    rl, side = split_rl_questions(qs, 10, balance_hops=True)
    assert [q.metadata["hops"] for q in rl] == [1, 2] * 5
    assert {q.id for q in rl}.isdisjoint(q.id for q in side) and len(rl) + len(side) == 40
    assert side == [q for q in qs if q not in rl]  # the rest keep their order


def test_the_arms_can_train_on_a_chosen_share_of_two_hop_questions():
    qs = [QAExample(str(i), f"q{i}", ["a"], metadata={"hops": 2 if i % 2 else 1}) for i in range(40)]  # 20 and 20
    assert with_multi_hop_share(qs, None) == qs
    three_quarters = with_multi_hop_share(qs, 0.75)  # every two-hop one, and the first 7 single-hop ones
    assert [q.metadata["hops"] for q in three_quarters].count(2) == 20
    assert [q for q in three_quarters if q.metadata["hops"] == 1] == [q for q in qs if q.metadata["hops"] == 1][:7]
    assert three_quarters == [q for q in qs if q in three_quarters]  # in their order
    quarter = with_multi_hop_share(qs, 0.25)  # the two-hop ones run short the other way
    assert [q.metadata["hops"] for q in quarter].count(1) == 20 and [q.metadata["hops"] for q in quarter].count(2) == 7
    assert all(q.metadata["hops"] == 2 for q in with_multi_hop_share(qs, 1.0))
    with pytest.raises(ValueError, match="no RL questions"):
        with_multi_hop_share(qs[::2], 1.0)  # single-hop only
    with pytest.raises(ValueError, match="rl_multi_hop_share"):
        DemoSettings(rl_multi_hop_share=1.5)


def test_a_stage_after_one_that_ran_is_never_read_back(tmp_path):
    calls = []
    stages = Stages(tmp_path, lambda m: None)
    for name in ("a", "b", "c"):
        stages(name, lambda name=name: calls.append(name) or {"v": name})
    (tmp_path / "stages" / "b.json").unlink()
    stages = Stages(tmp_path, lambda m: None)
    results = [stages(n, lambda n=n: calls.append(n) or {"v": n}) for n in ("a", "b", "c")]
    assert results == [{"v": "a"}, {"v": "b"}, {"v": "c"}]
    assert calls == ["a", "b", "c", "b", "c"]  # a read back; b made anew, so c too


def test_a_stage_that_names_what_it_needs_runs_again_only_when_one_of_those_did(tmp_path):
    calls = []

    def run(needs_of_d=("a",)):
        stages = Stages(tmp_path, lambda m: None)
        for name in ("a", "b", "c"):
            stages(name, lambda name=name: calls.append(name) or {"v": name})
        return stages("d", lambda: calls.append("d") or {"v": "d"}, needs=list(needs_of_d))

    run()
    (tmp_path / "stages" / "b.json").unlink()
    calls.clear()
    assert run() == {"v": "d"} and calls == ["b", "c"]  # d needs only a, which was read back
    (tmp_path / "stages" / "a.json").unlink()
    calls.clear()
    run()
    assert calls == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="needs stages not run before it"):
        run(needs_of_d=("e",))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, quick=True, say=lambda m: None)


def test_extra_seeds_repeat_every_arm_with_its_own_seed():
    ds = DemoSettings(arms=[ArmSettings("sim", label="RL, sim"), ArmSettings("real", "bm25")], extra_seeds=[1, 2])
    assert [(a.name, a.label, a.seed) for a in ds.all_arms()] == [
        ("sim", "RL, sim", None), ("real", "RL, real", None), ("sim-seed1", "RL, sim, seed 1", 1),
        ("real-seed1", "RL, real, seed 1", 1), ("sim-seed2", "RL, sim, seed 2", 2), ("real-seed2", "RL, real, seed 2", 2)]
    assert [a.name for a in ds.arms] == ["sim", "real"]  # the settings as written


def test_seeds_are_compared_one_by_one_then_on_their_mean(tmp_path):
    from zerosearch.experiment import compare

    def row(key, method, right):  # an evaluation of 4 questions (two of each kind), `right` the ones answered
        d = tmp_path / key
        d.mkdir()
        d.joinpath("predictions.jsonl").write_text("".join(
            json.dumps({"id": q, "hops": 1 + (q >= 2), "strict_em": float(q in right)}) + "\n" for q in range(4)))
        return {"key": key, "method": method, "eval_dir": str(d)}

    rows = [row("warm", "warm", set()), row("sim", "sim", {0, 1, 2, 3}), row("sim-seed1", "sim, seed 1", {0}),
            row("real", "real", {0, 1}), row("real-seed1", "real, seed 1", {0, 2})]
    ds = DemoSettings(arms=[ArmSettings("sim", label="sim"), ArmSettings("real", "bm25", label="real")],
                      extra_seeds=[1], bootstrap_resamples=200)
    c = {(x["after"], x["before"]): x for x in compare(rows, ds)}
    assert list(c) == [("sim", "warm"), ("sim, seed 1", "warm"), ("sim, mean of 2 seeds", "warm"),
                       ("real", "warm"), ("real, seed 1", "warm"), ("real, mean of 2 seeds", "warm"),
                       ("sim", "real"), ("sim, seed 1", "real, seed 1"),
                       ("sim, mean of 2 seeds", "real, mean of 2 seeds")]
    pooled = c[("sim, mean of 2 seeds", "warm")]
    assert pooled["all"]["difference"] == pytest.approx(100 * (4 + 1) / 8)  # each question: the mean of its seeds
    assert (pooled["all"]["gained"], pooled["all"]["lost"]) == (4, 0)
    assert pooled["1"]["difference"] == pytest.approx(75) and pooled["2"]["difference"] == pytest.approx(50)
    vs_real = c[("sim, mean of 2 seeds", "real, mean of 2 seeds")]["all"]
    assert vs_real["difference"] == pytest.approx(100 * (5 - 4) / 8) and (vs_real["gained"], vs_real["lost"]) == (1, 0)


def test_quick_pipeline_writes_every_row_interval_check_and_figure(quick_run):
    """The whole pipeline on tiny random models (its numbers mean nothing; its bookkeeping must hold)."""
    out, result = quick_run
    rows = {r["method"]: r for r in result["rows"]}
    arms = ["RL, tuned simulator", "RL, tuned simulator, constant noise 0.5", "RL, prompt-only simulator",
            "RL, real engine (BM25)"]
    assert list(rows) == ["direct (no search)", "rag (one retrieval)", "warm start (tuned simulator)", *arms,
                          *(f"{a}, seed 1" for a in arms)]  # the preset's extra seed
    assert all(r["n"] == result["eval_questions"] > 0 for r in rows.values())
    assert set(next(iter(rows.values()))["per_hops"]) == {"1", "2"}

    def strict(method):
        lines = (out / "eval" / rows[method]["eval_dir"].rsplit("/", 1)[-1] / "predictions.jsonl").read_text()
        return {p["id"]: p["strict_em"] for p in map(json.loads, lines.splitlines())}

    pairs = {(c["after"], c["before"]): c for c in result["comparisons"]}
    warm = "warm start (tuned simulator)"
    for arm in ("RL, tuned simulator", "RL, prompt-only simulator", "RL, real engine (BM25)"):
        c = pairs[(arm, warm)]
        assert c["all"] == {**c["all"], **vars(paired_bootstrap(strict(warm), strict(arm)))}
        assert set(c) >= {"1", "2"}  # per hop too
    assert ("RL, tuned simulator", "RL, real engine (BM25)") in pairs
    assert ("RL, tuned simulator", "RL, tuned simulator, constant noise 0.5") in pairs
    # an extra seed's arm is compared with the warm start and with the arms of its own seed only
    assert {p for p in pairs if p[0].endswith("seed 1")} == {
        *((f"{a}, seed 1", warm) for a in arms),
        *((f"{a}, seed 1", "RL, real engine (BM25), seed 1") for a in arms[:3]),
        ("RL, tuned simulator, seed 1", "RL, tuned simulator, constant noise 0.5, seed 1")}
    assert not any(p[1].endswith("seed 1") and not p[0].endswith("seed 1") for p in pairs)
    # ... and each comparison once more on the mean over the seeds
    assert {("RL, tuned simulator, mean of 2 seeds", warm),
            ("RL, tuned simulator, mean of 2 seeds", "RL, real engine (BM25), mean of 2 seeds"),
            ("RL, tuned simulator, mean of 2 seeds", "RL, tuned simulator, constant noise 0.5, mean of 2 seeds")} <= set(pairs)
    # ... and is a draw of its own from the same warm start and questions
    def rollouts(arm):
        return (out / f"rl-{arm}" / "rollouts.jsonl").read_text()

    assert rollouts("tuned-simulator-seed1") != rollouts("tuned-simulator")
    assert rows["RL, tuned simulator"]["training_real_searches"] == 0  # the simulated pipeline trains offline
    assert set(result["simulator_check"]) == {"tuned", "tuned, no pre-training", "prompt"}
    assert result["simulator_check"]["tuned"]["useful_contains_bridge"]["n"] > 0
    noise = [json.loads(x)["noise_p"] for x in (out / "rl-tuned-simulator-constant" / "metrics.jsonl").read_text().splitlines()]
    assert noise and set(noise) == {0.5}
    table = (out / "results.md").read_text()
    assert "strict EM vs warm start [95% CI]" in table and "| RL, tuned simulator |" in table and "2-hop" in table
    # the cost column: real searches of a method's training and of building its simulator, priced; simulated ones
    price = result["search_price_per_1000"]
    assert price == pytest.approx(586.7 / 64)
    assert "search cost of its training and simulator (real searches at $9.17 / 1,000)" in table
    cost = {m: r["search_cost"] for m, r in rows.items()}
    assert all(cost[m]["real_searches"] == r["training_real_searches"] + r["simulator_real_searches"] for m, r in rows.items())
    assert cost["RL, tuned simulator"]["real_searches"] == result["collected_searches"] > 0
    assert cost["RL, real engine (BM25)"]["real_searches"] == rows["RL, real engine (BM25)"]["training_real_searches"]
    assert cost["RL, real engine (BM25)"]["simulated_searches"] == 0
    assert all(c["real_cost_usd"] == pytest.approx(c["real_searches"] * price / 1000, abs=1e-4) for c in cost.values())
    assert cost["direct (no search)"]["real_searches"] == cost["direct (no search)"]["simulated_searches"] == 0
    warm = cost["warm start (tuned simulator)"]  # its demonstrations were written by the tuned simulator
    assert warm["simulated_searches"] > 0 and warm["simulated_tokens"] > 0 and warm["simulated_seconds"] > 0
    assert (f"${warm['real_cost_usd']:.2f} ({warm['real_searches']} real); {warm['simulated_searches']} simulated "
            f"({warm['simulated_tokens']:,} tokens") in table
    assert (out / "learning.png").exists() and (out / "simulator-pretrain" / "model" / "config.json").exists()


def test_the_table_says_which_arm_was_resumed_and_how_long_all_its_steps_took(quick_run):
    from zerosearch.experiment import results_markdown

    out, result = quick_run
    assert result["resumed_arms"] == {}  # nothing was killed
    assert "Resumed:" not in results_markdown(result)
    resumed = {**result, "resumed_arms": {"RL, tuned simulator": {"from_step": 25, "step_seconds": 4321.4}}}
    assert ("Resumed: RL, tuned simulator, from its checkpoint of step 25 (the stage time above is the last "
            "attempt's; its steps took 4321 s in all)") in results_markdown(resumed)


def test_quick_pipeline_run_again_reuses_every_stage_and_refuses_other_settings(quick_run, tmp_path):
    out, result = quick_run
    said = []
    again = run_demo(out, quick=True, say=said.append)
    assert all("done in an earlier run" in m for m in said) and len(said) == len(result["stages_seconds"])
    assert again["rows"] == result["rows"] and again["comparisons"] == result["comparisons"]
    other = tmp_path / "other.yaml"
    other.write_text("rl: {steps: 3}\n")
    with pytest.raises(ValueError, match="other settings"):
        run_demo(out, quick=True, config=other, say=lambda m: None)


def test_what_a_stage_made_is_freed_when_it_ends(tmp_path):
    """A trainer and its model refer to each other: only the cycle collector frees them, so the pipeline
    collects after each stage instead of carrying one stage's model into the next."""
    import gc
    import weakref

    class Model:
        pass

    made = []

    def stage():
        model = Model()
        model.trainer = {"model": model}  # a cycle, as Trainer <-> model hooks
        made.append(weakref.ref(model))
        return {"ok": True}

    gc.disable()  # no collection but the pipeline's own
    try:
        assert Stages(tmp_path, lambda m: None)("a", stage) == {"ok": True}
        assert made[0]() is None
    finally:
        gc.enable()


def test_a_finished_run_takes_another_seed_without_redoing_the_rest(quick_run, tmp_path):
    import shutil

    out, result = quick_run
    more = tmp_path / "more"
    shutil.copytree(out, more)
    said = []
    again = run_demo(more, quick=True, config=["demo-quick", "demo.extra_seeds=[1, 2]"], say=said.append)
    assert any("now with extra seeds [2]" in m for m in said)
    redone = [m.split("] ", 1)[1][:-1] for m in said if m.endswith("…")]
    # the new seed's arms and their evaluations; the finished arms' evaluations are read back
    assert redone and all(m.endswith("seed 2") for m in redone)
    assert any(m.startswith("evaluate: ") for m in redone)
    methods = [r["method"] for r in again["rows"]]
    assert methods[: len(result["rows"])] == [r["method"] for r in result["rows"]]
    assert any(m.endswith("seed 2") for m in methods)

    def same(rows):  # but for the folder they are in
        return [{k: v for k, v in r.items() if k != "eval_dir"} for r in rows]

    assert same(again["rows"][: len(result["rows"])]) == same(result["rows"])


def test_a_run_folder_refuses_other_settings_but_not_settings_added_since_at_their_default(tmp_path):
    from zerosearch.demo import _folder_settings, _prepare_folder

    run, ds = load_demo_settings(["demo-quick"])

    def settings(run=run, ds=ds):
        return _folder_settings(run, ds, True)

    _prepare_folder(tmp_path, settings(), False, print)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["run"]["engine"]["sim_share_duplicates"]  # as a folder made before that setting existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    _prepare_folder(tmp_path, settings(), False, print)
    _, fewer = load_demo_settings(["demo-quick", "demo.extra_seeds=[]"])
    with pytest.raises(ValueError, match="other settings"):
        _prepare_folder(tmp_path, settings(ds=fewer), False, print)
    other, _ = load_demo_settings(["demo-quick", "rl.learning_rate=0.1"])
    with pytest.raises(ValueError, match="other settings"):
        _prepare_folder(tmp_path, settings(run=other), False, print)
    saved["run"]["engine"]["a_setting_of_another_version"] = 1
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="other settings"):
        _prepare_folder(tmp_path, settings(), False, print)


def test_the_pipeline_simulator_runs_in_the_preset_engine_dtype(monkeypatch):
    from zerosearch import demo
    from zerosearch.llm import local

    asked = []

    def fake(cls, name, *, device="cpu", dtype="float32", **kw):
        asked.append((name, dtype))
        return object()

    monkeypatch.setattr(local.TransformersGenerator, "from_pretrained", classmethod(fake))
    for preset, dtype in [(["demo-cpu"], "bfloat16"), (["experiment-cpu"], "bfloat16"),
                          (["experiment-cpu", "engine.dtype=float32"], "float32")]:
        run, _ = load_demo_settings(preset)
        demo._simulator("runs/x/simulator", "sft", run)
        assert asked[-1] == ("runs/x/simulator", dtype)
