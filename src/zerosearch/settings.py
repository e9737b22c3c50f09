"""Every setting, in one place: the dataclasses of a run (policy, data, engine, rollout, RL, curriculum, warm
start, server, simulation tuning, world), how YAML files and `KEY=VALUE` overrides become one `RunConfig`,
and the presets shipped with the package (`zerosearch/configs/*.yaml`).

A leaf: it imports no torch, TRL or engine code, so reading a config file is instant and anything may import
it. Every command reads the same `RunConfig` through the same option (`--config/-c`, see cli.py).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from .curriculum import NoiseSchedule, parse_noise
from .metrics import check_reward

ENGINE_KINDS = ("bm25", "simulated", "remote", "serp")
SIM_MAX_TOPK = 10  # documents one simulator generation writes; more is a client error, not an engine failure
# The ZeroSearch paper's cost comparison: about 64,000 searches cost $586.7 on SerpAPI, i.e. about $9.17 per
# 1,000 (SerpAPI's $275 / 30,000-search plan), against $70.8 of GPU time for the simulator.
SERPAPI_PRICE_PER_1000 = 586.7 / 64
REPORT_TO = ("none", "tensorboard", "wandb", "trackio")
# Presets of the GRPO family. TRL has no PPO (removed in 1.x); PPO runs through the verl adapter.
ALGORITHMS: dict[str, dict[str, Any]] = {
    # group-normalised advantages (r - mean_group) / std_group
    "grpo": {"loss_type": "grpo", "scale_rewards": "group"},
    # REINFORCE with the group mean as baseline and no std scaling (the original "REINFORCE" had no
    # baseline at all, bug B7)
    "reinforce": {"loss_type": "grpo", "scale_rewards": "none"},
    # DAPO: token-level loss, clip-higher
    "dapo": {"loss_type": "dapo", "scale_rewards": "group", "epsilon_high": 0.28},
}


def check_report_to(value: str) -> None:
    if value not in REPORT_TO:
        raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, not {value!r}")


def _check_lora(lora_r: int, trainable_layers: int) -> None:
    if lora_r < 0:
        raise ValueError(f"lora_r must be >= 0, not {lora_r}")
    if lora_r and trainable_layers:
        raise ValueError("lora_r and trainable_layers do not combine: LoRA already trains only its adapters")


def _check_warmup(ratio: float) -> None:
    # transformers 5 has one `warmup_steps` field: a number below 1 is a share of the steps, 1 or more a count
    if not 0 <= ratio < 1:
        raise ValueError(f"warmup_ratio is a share of the steps, in [0, 1), not {ratio}")


@dataclass
class EngineConfig:
    """Everything needed to build an engine (`engines.build_engine`). Only the fields of the chosen `kind` are used."""

    kind: str = "bm25"
    topk: int = 3  # documents per search, for every search of the run
    # bm25
    corpus: str | None = None
    # remote
    url: str | None = None
    token: str | None = None
    # remote, serp and a served simulator: seconds per attempt and attempts after the first
    timeout: float = 30.0
    retries: int = 3
    # serp
    cache_dir: str | None = None
    # simulated
    sim_model: str = "smollm2-135m"  # registry name, folder or hub id; with sim_url, the served model name
    sim_url: str | None = None  # OpenAI-compatible server(s), comma-separated → served simulator
    sim_style: str = "sft"  # sft: the official tuning prompt; prompt: our few-shot prompt for an untuned model
    sim_temperature: float = 0.8
    sim_words: int = 30  # "about N words" per document, in the prompt and in the simulator's tuning set
    sim_batch_size: int = 16
    # tokens a simulator may write per search; None: the original's 600 for a served `sft` simulator,
    # about k documents' worth for a local one (every token costs CPU time here)
    sim_max_tokens: int | None = None
    sim_answer_guard: bool = True  # ban the gold answers from noisy documents (local backend)
    sim_query_guard: bool = True  # tell the simulator the question and answer only when the query names its subject
    sim_share_duplicates: bool = False  # one generation for the identical searches of one call (False: each its own sample)
    noise: str | float = 0.0  # default P(noisy) (or a forced kind) when a request does not say
    device: str = "cpu"
    dtype: str = "float32"  # a local simulator's weights: float32 or bfloat16 (float32 on a CPU without native bfloat16)
    seed: int = 0
    # USD per 1,000 searches that reach a real engine, for the cost ledger (default: the paper's SerpAPI figure)
    price_per_1000: float = SERPAPI_PRICE_PER_1000

    def __post_init__(self) -> None:
        if self.kind not in ENGINE_KINDS:
            raise ValueError(f"unknown engine {self.kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
        if self.sim_style not in ("sft", "prompt"):
            raise ValueError(f"sim_style must be 'sft' or 'prompt', not {self.sim_style!r}")
        limit = SIM_MAX_TOPK if self.kind == "simulated" else 50
        if not isinstance(self.topk, int) or not 1 <= self.topk <= limit:
            raise ValueError(f"the {self.kind} engine gives 1 to {limit} documents a search, not topk={self.topk!r}")
        if self.price_per_1000 < 0:
            raise ValueError(f"price_per_1000 cannot be negative, not {self.price_per_1000}")
        if self.timeout <= 0 or self.retries < 0:
            raise ValueError(f"need timeout > 0 and retries >= 0, not timeout={self.timeout}, retries={self.retries}")
        if self.sim_max_tokens is not None and self.sim_max_tokens < 1:
            raise ValueError(f"sim_max_tokens must be at least 1, not {self.sim_max_tokens}")
        self.noise = parse_noise(self.noise)

    @property
    def served_sft(self) -> bool:
        """A served simulator on the official prompt (e.g. a released one): it gets the original's token budget."""
        return bool(self.sim_url) and self.sim_style == "sft"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineConfig":
        return build_section(cls, d, "engine")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RolloutConfig:
    max_turns: int = 2  # turns whose searches are executed; one final answer turn follows
    max_new_tokens: int = 64  # per turn
    temperature: float = 1.0  # 0 = greedy (evaluation and `ask` always decode greedily)
    max_obs_tokens: int = 256  # document text inside one <information> block
    batch_size: int = 32
    # bfloat16 forward passes; on a CPU only with AVX512-BF16 / AMX, float32 elsewhere (llm.decoding.use_bf16)
    bf16: bool = False
    # the environment opens `<answer>` for the final turn: a policy that would search again must answer
    # (the paper leaves the final turn open; a search there ends the episode with no answer)
    force_final_answer: bool = False

    def __post_init__(self) -> None:
        if self.max_turns < 0 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_turns >= 0, and max_new_tokens and batch_size >= 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")


@dataclass
class RLConfig:
    algorithm: str = "grpo"
    steps: int = 10
    questions_per_step: int = 4
    num_generations: int = 4  # rollouts per question (the group)
    learning_rate: float = 1e-5
    beta: float = 0.0  # KL coefficient to the reference policy (paper: 0.001)
    epsilon: float = 0.2
    warmup_ratio: float = 0.0  # share of the steps over which the learning rate warms up
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    save_steps: int = 0  # 0 = only at the end
    bf16: bool = False  # bfloat16 autocast for the policy update (as rollout.bf16: a CPU needs AVX512-BF16 / AMX)
    gradient_checkpointing: bool = False
    trainable_layers: int = 0  # 0 = all; n = only the top n decoder blocks (a CPU speed knob)
    # > 0: LoRA adapters of this rank on every linear layer, merged into the saved policy (for RL, low-rank
    # adapters learn as full fine-tuning does at ~10x its learning rate: Schulman et al. 2025)
    lora_r: int = 0
    lora_alpha: int = 32
    # Leave rows with zero advantage (groups whose rewards are all equal) out of the update: the same
    # gradient for less work when beta = 0 (DAPO's dynamic sampling, without drawing replacement groups).
    skip_uninformative: bool = True
    # At most this many trajectories in one forward/backward pass of the update: a step's trajectories are
    # split into equal micro-batches whose gradients add up to one optimizer step (TRL's gradient accumulation),
    # so a larger rollout batch, which decodes faster per trajectory, does not need memory for all of its
    # rows at once (64 trajectories of ~600 tokens in one pass of SmolLM2-135M exhausted 24 GiB).
    micro_batch_size: int = 16
    # Subtracted from the reward (F1 or EM) of an episode that searched the same query twice (0 = the paper's reward).
    # With a forced final answer a repeated search costs nothing, and a small policy learns to repeat its
    # first query instead of searching the next hop (README, "The experiment").
    repeat_penalty: float = 0.0
    # f1 (the paper: token F1 of the answer) or em (Search-R1: strict exact match, 0 for an answer with a word
    # too many, which F1 still pays in part)
    reward: str = "f1"
    # none, tensorboard (event files in OUT/tensorboard), wandb or trackio (project from WANDB_PROJECT /
    # TRACKIO_PROJECT); metrics.jsonl is written either way
    report_to: str = "none"

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        check_report_to(self.report_to)
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: group baselines need at least two rollouts")
        if self.steps < 1 or self.questions_per_step < 1 or self.micro_batch_size < 1:
            raise ValueError("steps, questions_per_step and micro_batch_size must be >= 1")
        _check_warmup(self.warmup_ratio)
        _check_lora(self.lora_r, self.trainable_layers)
        if not 0.0 <= self.repeat_penalty <= 1.0:
            raise ValueError(f"repeat_penalty must be in [0, 1], not {self.repeat_penalty}")
        check_reward(self.reward)


@dataclass
class SFTConfig:
    steps: int = 20
    batch_size: int = 8
    learning_rate: float | None = 5e-5  # None: by model size, where the job knows how (simulator tuning)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    bf16: bool = False  # as rollout.bf16: on a CPU only with AVX512-BF16 / AMX
    lora_r: int = 0  # 0 = full fine-tune; > 0 = LoRA adapters of this rank (merged into the saved model)
    lora_alpha: int = 32
    max_length: int | None = None
    trainable_layers: int = 0  # 0 = all; n = only the top n decoder blocks (a CPU speed knob)
    # none, tensorboard (event files in OUT/tensorboard), wandb or trackio (project from WANDB_PROJECT /
    # TRACKIO_PROJECT); the losses are in the summary either way
    report_to: str = "none"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or (self.learning_rate is not None and self.learning_rate <= 0):
            raise ValueError("steps and batch_size must be >= 1 and learning_rate > 0")
        check_report_to(self.report_to)
        _check_warmup(self.warmup_ratio)
        _check_lora(self.lora_r, self.trainable_layers)


@dataclass
class WarmstartConfig:
    demos: int = 64
    require_facts: bool = True  # drop demonstrations whose documents miss the fact their reasoning states
    # single- and two-hop demonstrations in turn, where the data's share of two-hop ones would teach too
    # few chained searches
    balance_hops: bool = False
    sft: SFTConfig = field(default_factory=SFTConfig)


@dataclass
class ServerConfig:
    """`zerosearch serve`: batching, limits, and the curriculum for clients that send no noise."""

    batch: bool | None = None  # coalesce concurrent requests into one engine call; None: on for simulated engines
    max_batch: int = 32  # most queries per coalesced engine call
    batch_wait_ms: float = 10.0  # how long a request waits for others to join it
    request_timeout: float = 300.0  # seconds before a request fails with 504
    max_queries: int = 4096  # most queries in one request (answered in chunks)
    # > 0: the server's own noise curriculum (the run's `curriculum`) over this many steps, stepped by a
    # request's `step`, an X-Step header or POST /step
    total_steps: int = 0

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.batch_wait_ms < 0 or self.request_timeout <= 0 or self.max_queries < 1:
            raise ValueError("need max_batch >= 1, batch_wait_ms >= 0, request_timeout > 0 and max_queries >= 1")
        if self.total_steps < 0:
            raise ValueError(f"total_steps must be >= 0, not {self.total_steps}")


def _pretrain_sft() -> SFTConfig:  # 375 x 8 = 10 epochs of a 300-article world
    return SFTConfig(steps=375, batch_size=8, learning_rate=5e-4, bf16=True)


def _tune_sft() -> SFTConfig:  # learning rate by model size: 1e-6 from 1B parameters up, as the paper
    return SFTConfig(steps=100, batch_size=8, learning_rate=None, bf16=True)


@dataclass
class SimtuneConfig:
    """Building a simulator: labelling collected searches, continued pre-training, tuning, checking. The
    prompt's words per document and top-k are the engine's (`engine.sim_words`, `engine.topk`)."""

    label: str = "hop"  # judge, trajectory, contains or hop
    judge: str | None = None  # for label judge: a local model (name, folder) or an OpenAI-compatible URL
    holdout: float = 0.1  # share of questions kept out for `simtune check`
    balance: bool = True  # as many useful as noisy examples
    check_limit: int = 100  # held-out searches `simtune check` looks at
    pretrain: SFTConfig = field(default_factory=_pretrain_sft)
    tune: SFTConfig = field(default_factory=_tune_sft)


@dataclass
class WorldConfig:
    entities: int = 300  # cities, people, organisations, inventions
    test_fraction: float = 0.2  # share of questions held out for testing


@dataclass
class RunConfig:
    policy: str = "smollm2-135m"
    train_data: str | None = None  # FlashRAG jsonl, Search-R1 parquet, a world folder, or hf:owner/name
    train_split: str = "train"
    train_limit: int | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    curriculum: NoiseSchedule = field(default_factory=NoiseSchedule)
    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    simtune: SimtuneConfig = field(default_factory=SimtuneConfig)
    world: WorldConfig = field(default_factory=WorldConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- the demo
ARM_ENGINES = ("tuned", "prompt", "bm25")


@dataclass
class ArmSettings:
    name: str  # the run folder is OUT/rl-<name>
    engine: str = "tuned"  # tuned (the tuned simulator), prompt (the untuned, prompt-only simulator), bm25 (real)
    label: str = ""
    # A constant noise probability instead of the run's curriculum (the paper's "random" ablation used 0.5).
    noise: float | None = None
    # The arm's own RL seed (rl.seed, and the seed of the simulator's noise draws); None: the run's rl.seed
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ARM_ENGINES:
            raise ValueError(f"arm {self.name!r}: engine must be one of {', '.join(ARM_ENGINES)}, not {self.engine!r}")
        if self.noise is not None and not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"arm {self.name!r}: noise must be in [0, 1]")
        self.label = self.label or f"RL, {self.name}"


def _default_arms() -> list[ArmSettings]:
    return [ArmSettings("tuned-simulator", "tuned", "RL, tuned simulator"),
            ArmSettings("prompt-simulator", "prompt", "RL, prompt-only simulator"),
            ArmSettings("bm25", "bm25", "RL, real engine (BM25)")]


@dataclass
class DemoSettings:
    """The `demo:` section of a config: what `zerosearch demo` / `experiment` compare, and on what."""

    world_seed: int = 7
    entities: int = 300
    # Question kinds (1 = single-hop, 2 = two-hop) the simulator data, warm start, RL and evaluation use.
    hops: tuple[int, ...] = (1, 2)
    eval_questions: int = 0  # held-out test questions, the same for every method; 0 = all of them
    rl_questions: int = 400  # training questions the RL runs draw from (disjoint from the warm start's)
    # RL questions single- and two-hop in equal numbers (two-hop ones are ~40% of the world's): in the data's
    # share, single-hop groups outweigh the few informative two-hop ones (README, "The experiment")
    rl_balance_hops: bool = False
    # The share of two-hop questions the arms train on, taken from the RL questions (all of the kind that would
    # run short, the first ones of the other); None: the RL questions as they are
    rl_multi_hop_share: float | None = None
    baseline_model: str = "smollm2-135m"  # the untrained model behind `direct`, `rag` and the prompt-only simulator
    baselines: bool = True  # also evaluate the untrained model without search (direct) and with one retrieval (rag)
    # continued pre-training of the simulator on the world's corpus before tuning (0 steps = none)
    pretrain_steps: int = 0
    pretrain_batch_size: int = 8
    pretrain_lr: float = 5e-4
    compare_unpretrained: bool = False  # also tune and check a simulator without the pre-training
    # simulation tuning: real searches collected on training questions outside the RL pool
    simtune_label: str = "contains"
    simtune_steps: int = 30
    simtune_batch_size: int = 8
    simtune_lr: float = 3e-4
    simtune_trainable_layers: int = 15  # only the top n decoder blocks of the simulator are tuned (CPU speed)
    simtune_check_queries: int = 30  # held-out searches checked per kind (final hops; first hops of two-hop questions)
    arms: list[ArmSettings] = field(default_factory=_default_arms)
    # Every arm again with each of these RL seeds (arms `<name>-seed<s>`): a second draw of RL from the same
    # warm start, simulator and questions. Arms are compared within each seed, then on the mean over seeds.
    extra_seeds: list[int] = field(default_factory=list)
    bootstrap_resamples: int = 5000

    def __post_init__(self) -> None:
        self.hops = tuple(self.hops)
        self.arms = [a if isinstance(a, ArmSettings) else build_section(ArmSettings, a, f"demo.arms[{i}]")
                     for i, a in enumerate(self.arms)]
        self.extra_seeds = list(self.extra_seeds)
        names = [a.name for a in self.all_arms()]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must differ (extra seeds included): {names}")
        if not set(self.hops) <= {1, 2}:
            raise ValueError(f"hops must be 1 and/or 2, not {list(self.hops)}")
        if self.rl_multi_hop_share is not None and not 0.0 <= self.rl_multi_hop_share <= 1.0:
            raise ValueError(f"rl_multi_hop_share must be in [0, 1], not {self.rl_multi_hop_share}")

    def all_arms(self) -> list[ArmSettings]:
        """The arms, then each of them again with every extra seed."""
        return self.arms + [self.seeded(a, s) for s in self.extra_seeds for a in self.arms]

    @staticmethod
    def seeded(arm: ArmSettings, seed: int | None) -> ArmSettings:
        """`arm` as run with an extra seed (None: the arm as written)."""
        return arm if seed is None else replace(arm, name=f"{arm.name}-seed{seed}", label=f"{arm.label}, seed {seed}",
                                                seed=seed)


# ------------------------------------------------------------------------------- reading the settings
def build_section(cls, data: Any, where: str):
    """A settings dataclass from a mapping, with a clear error for an unknown or badly typed setting; nested
    settings dataclasses are built from nested mappings."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        hint = " (top-k is engine.topk: one top-k for every search)" if where.endswith("rollout") and "topk" in unknown else ""
        raise ValueError(f"{where}: unknown settings {unknown}{hint}; known: {sorted(known)}")
    kw = {}
    for name, value in data.items():
        default = _default_of(known[name])
        if is_dataclass(default) and isinstance(value, dict):
            value = build_section(type(default), {**_shallow(default), **value}, f"{where}.{name}")
        elif isinstance(value, str) and "float" in str(known[name].type):
            # YAML reads 2e-5 (no dot) as text: a number setting takes it as the number it means
            try:
                value = float(value)
            except ValueError:
                pass
        kw[name] = value
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def _default_of(f) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None if f.default is MISSING else f.default


def _shallow(obj) -> dict[str, Any]:
    """A settings object's own fields, nested objects kept as objects (so a section's defaults are kept)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def run_config_from_dict(d: dict[str, Any] | None) -> RunConfig:
    d = dict(d or {})
    d.pop("demo", None)  # the pipeline's own section (`zerosearch demo` / `experiment`); other commands ignore it
    return build_section(RunConfig, d, "config")


PRESETS = "configs"  # package data: zerosearch/configs/<name>.yaml


def presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__package__).joinpath(PRESETS).iterdir()
                  if p.name.endswith(".yaml"))


def preset_path(name: str) -> Path:
    """The packaged config `name` (e.g. demo-cpu), wherever the package is installed."""
    path = resources.files(__package__).joinpath(PRESETS, f"{name}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"no config file or preset {name!r}; presets: {', '.join(presets())}")
    return Path(str(path))


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, _, raw = item.partition("=")
    path = key.strip().split(".")
    if not all(path):
        raise ValueError(f"bad setting {item!r}: expected KEY=VALUE, e.g. rl.steps=20")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML: the text itself (e.g. a query with a colon)
    return path, value


def load_settings(items: Sequence[str] = (), default: str | None = None) -> dict[str, Any]:
    """The raw settings mapping from `--config` items, in order: YAML files or preset names, then KEY=VALUE
    overrides (dotted paths, values read as YAML: 20, 2e-5, true, null, [1, 2]). Without any file, the preset
    `default` (if given) is the base. Later items win."""
    files = [i for i in items if "=" not in i]
    data: dict[str, Any] = {}
    for source in files or ([default] if default else []):
        path = Path(source)
        if not path.is_file():
            if source.endswith((".yaml", ".yml")) or "/" in source:
                raise FileNotFoundError(f"no config file {source}")
            path = preset_path(source)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
        _merge(data, loaded)
    for item in items:
        if "=" in item:
            path, value = _parse_override(item)
            node = data
            for key in path[:-1]:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise ValueError(f"bad setting {item!r}: {key} is not a section")
            node[path[-1]] = value
    return data


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def load_run_config(items: str | Path | Sequence[str] | None = (), default: str | None = None) -> RunConfig:
    """The run settings from config files, preset names and KEY=VALUE overrides (see `load_settings`)."""
    if items is None:
        items = ()
    elif isinstance(items, (str, Path)):
        items = [str(items)]
    return run_config_from_dict(load_settings([str(i) for i in items], default))


def load_demo_settings(items: Sequence[str] = (), default: str | None = None) -> tuple[RunConfig, DemoSettings]:
    """The run settings and the `demo:` section, from the same items."""
    data = load_settings(items, default)
    section = data.pop("demo", None) or {}
    return run_config_from_dict(data), build_section(DemoSettings, section, "demo")
