import subprocess
import sys

import pytest

from zerosearch.settings import (
    load_demo_settings, load_run_config, load_settings, presets, run_config_from_dict,
)


@pytest.mark.parametrize("name", ["qwen2.5-3b", "qwen2.5-7b"])
def test_gpu_presets_load(name):
    cfg = load_run_config(name)
    assert cfg.rl.learning_rate == 1e-6 and cfg.rl.questions_per_step == 64 and cfg.rl.num_generations == 5
    assert cfg.rl.beta == 0.001 and cfg.engine.kind == "simulated" and cfg.engine.topk == 5


@pytest.mark.parametrize("name", ["demo-cpu", "demo-quick", "experiment-cpu"])
def test_demo_presets_load(name):
    run, demo = load_demo_settings([name])
    assert run.rl.steps >= 1 and demo.eval_questions >= 0  # 0 = every held-out question
    assert any(a.engine == "tuned" for a in demo.arms) and any(a.engine == "bm25" for a in demo.arms)
    # the run settings of a demo preset are valid for `warmstart` / `train` too (they skip its demo: block)
    assert load_run_config(name).rl == run.rl


def test_presets_ship_with_the_package():
    assert {"demo-cpu", "demo-quick", "experiment-cpu", "qwen2.5-3b", "qwen2.5-7b"} <= set(presets())


def test_overrides_are_dotted_yaml_values_and_later_ones_win(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("engine: {kind: simulated, topk: 4}\nrl: {steps: 7}\n")
    cfg = load_run_config([str(f), "rl.steps=20", "rl.learning_rate=2e-5", "engine.noise=useful",
                           "warmstart.sft.steps=3", "rl.steps=21", "curriculum.end=0.25", "server.total_steps=9"])
    assert (cfg.engine.kind, cfg.engine.topk, cfg.rl.steps, cfg.rl.learning_rate) == ("simulated", 4, 21, 2e-5)
    assert cfg.engine.noise == "useful" and cfg.warmstart.sft.steps == 3 and cfg.warmstart.sft.batch_size == 8
    assert cfg.curriculum.end == 0.25 and cfg.curriculum.base == 4.0 and cfg.server.total_steps == 9
    # without a file the preset is the base; a file replaces it
    assert load_run_config(["rl.steps=3"], default="demo-cpu").engine.topk == 2
    assert load_run_config([str(f)], default="demo-cpu").rl.steps == 7
    assert load_settings(["engine.url=http://h:1/retrieve?a=b"]) == {"engine": {"url": "http://h:1/retrieve?a=b"}}


def test_nested_sections_keep_their_own_defaults():
    cfg = load_run_config(["simtune.tune.steps=132", "simtune.pretrain.steps=10"])
    assert cfg.simtune.tune.steps == 132 and cfg.simtune.tune.learning_rate is None  # by model size
    assert cfg.simtune.pretrain.steps == 10 and cfg.simtune.pretrain.learning_rate == 5e-4


def test_unknown_or_bad_settings_are_named():
    with pytest.raises(ValueError, match="rl: unknown settings \\['lr'\\]"):
        run_config_from_dict({"rl": {"lr": 1}})
    with pytest.raises(ValueError, match="unknown algorithm"):
        run_config_from_dict({"rl": {"algorithm": "ppo"}})
    with pytest.raises(ValueError, match="warmstart.sft"):
        run_config_from_dict({"warmstart": {"sft": {"stepz": 3}}})
    with pytest.raises(ValueError, match="top-k is engine.topk"):
        run_config_from_dict({"rollout": {"topk": 3}})
    with pytest.raises(ValueError, match="1 to 10 documents"):
        load_run_config(["engine.kind=simulated", "engine.topk=11"])
    with pytest.raises(ValueError, match="noise must be"):
        load_run_config(["engine.noise=sometimes"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_run_config(["=3"])
    with pytest.raises(FileNotFoundError):
        load_run_config("no/such/file.yaml")
    with pytest.raises(FileNotFoundError, match="presets: demo-cpu"):
        load_run_config("demo-gpu")


def test_reading_settings_imports_no_torch():
    code = ("import sys; from zerosearch.settings import load_run_config; load_run_config('demo-cpu'); "
            "print(sorted(m for m in ('torch', 'trl', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("section", ["rl", "warmstart.sft", "simtune.tune"])
def test_lora_and_top_layers_are_refused_together_in_every_trainer(section):
    with pytest.raises(ValueError, match="do not combine"):
        run_config_from_dict(_nested(section, {"lora_r": 8, "trainable_layers": 2}))
    with pytest.raises(ValueError, match="lora_r must be >= 0"):
        run_config_from_dict(_nested(section, {"lora_r": -1}))


def _nested(dotted: str, leaf: dict) -> dict:
    for key in reversed(dotted.split(".")):
        leaf = {key: leaf}
    return leaf
