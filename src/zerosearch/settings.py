"""Run settings: one YAML file (see configs/) holds the policy, data, engine, rollout, RL, curriculum and
warm-start sections; command-line flags override single fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .agent.rollout import RolloutConfig
from .engines import EngineConfig
from .train.grpo import CurriculumConfig, RLConfig
from .train.sft import SFTConfig


@dataclass
class WarmstartConfig:
    demos: int = 64
    require_facts: bool = True  # drop demonstrations whose documents miss the fact their reasoning states
    sft: SFTConfig = field(default_factory=SFTConfig)


@dataclass
class RunConfig:
    policy: str = "smollm2-135m"
    train_data: str | None = None  # FlashRAG jsonl, Search-R1 parquet, a world folder, or hf:owner/name
    train_split: str = "train"
    train_limit: int | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {
    "engine": EngineConfig, "rollout": RolloutConfig, "rl": RLConfig, "curriculum": CurriculumConfig,
}


def build_section(cls, data: dict[str, Any], where: str):
    """A settings dataclass from a mapping, with a clear error for an unknown or badly typed setting."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown}; known: {sorted(known)}")
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def run_config_from_dict(d: dict[str, Any]) -> RunConfig:
    d = dict(d or {})
    d.pop("demo", None)  # the pipeline's own section (`zerosearch demo` / `experiment`); other commands ignore it
    kw: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        if name in d:
            kw[name] = build_section(cls, d.pop(name), name)
    if "warmstart" in d:
        ws = dict(d.pop("warmstart") or {})
        sft = build_section(SFTConfig, ws.pop("sft", {}) or {}, "warmstart.sft")
        kw["warmstart"] = build_section(WarmstartConfig, {**ws, "sft": sft}, "warmstart")
    top = build_section(RunConfig, d, "config")
    for k, v in kw.items():
        setattr(top, k, v)
    return top


def load_run_config(path: str | Path | None) -> RunConfig:
    if path is None:
        return RunConfig()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no config file {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML ({e})") from None
    return run_config_from_dict(data)
