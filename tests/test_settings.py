from pathlib import Path

import pytest

from zerosearch.demo import load_demo_config
from zerosearch.settings import load_run_config, run_config_from_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("qwen*.yaml")))
def test_gpu_configs_load(path):
    cfg = load_run_config(path)
    assert cfg.rl.learning_rate == 1e-6 and cfg.rl.questions_per_step == 64 and cfg.rl.num_generations == 5
    assert cfg.rl.beta == 0.001 and cfg.engine.kind == "simulated"


@pytest.mark.parametrize("name", ["demo-cpu.yaml", "demo-quick.yaml"])
def test_demo_configs_load(name):
    demo = load_demo_config(CONFIGS / name)
    assert demo.run.rl.steps >= 1 and demo.demo.eval_questions >= 0  # 0 = every held-out question
    assert any(a.engine == "tuned" for a in demo.demo.arms) and any(a.engine == "bm25" for a in demo.demo.arms)
    # the run settings of a demo config are valid for `warmstart` / `train` too (they skip its demo: block)
    assert load_run_config(CONFIGS / name).rl == demo.run.rl


def test_unknown_settings_are_named():
    with pytest.raises(ValueError, match="rl: unknown settings \\['lr'\\]"):
        run_config_from_dict({"rl": {"lr": 1}})
    with pytest.raises(ValueError, match="unknown algorithm"):
        run_config_from_dict({"rl": {"algorithm": "ppo"}})
    with pytest.raises(ValueError, match="warmstart.sft"):
        run_config_from_dict({"warmstart": {"sft": {"stepz": 3}}})
    with pytest.raises(FileNotFoundError):
        load_run_config("no/such/file.yaml")
