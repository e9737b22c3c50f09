"""The `zerosearch` command line: one sub-command per job."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .engines import ENGINE_KINDS, EngineConfig
from .engines.ledger import SERPAPI_PRICE_PER_1000

app = typer.Typer(
    help="Train language models to search with RL against a simulated search engine (ZeroSearch).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2)


def _noise(value: Optional[str]) -> str | float | None:
    if value is None:
        return None
    if value in ("useful", "noisy"):
        return value
    try:
        p = float(value)
    except ValueError:
        _fail(f"--noise must be 'useful', 'noisy' or a probability, not {value!r}")
    if not 0.0 <= p <= 1.0:
        _fail(f"--noise probability must be in [0, 1], not {p}")
    return p


# Engine options shared by several commands.
EngineOpt = typer.Option("bm25", "--engine", "-e", help=f"Search engine: {', '.join(ENGINE_KINDS)}.")
CorpusOpt = typer.Option(None, "--corpus", help="Corpus jsonl (FlashRAG format) for the bm25 engine.")
UrlOpt = typer.Option(None, "--url", help="A Search-R1 style /retrieve URL for the remote engine.")
TopkOpt = typer.Option(3, "--topk", "-k", min=1, max=50, help="Documents per search.")
SimModelOpt = typer.Option(
    "smollm2-135m", "--sim-model", help="Simulator: registry name, model folder or hub id (served name with --sim-url)."
)
SimUrlOpt = typer.Option(None, "--sim-url", help="OpenAI-compatible server(s) running the simulator, comma-separated.")
SimStyleOpt = typer.Option(
    "sft", "--sim-style", help="Simulator prompt: 'sft' (the official tuning prompt) or 'prompt' (our few-shot prompt)."
)
TimeoutOpt = typer.Option(None, "--timeout", help="Seconds per attempt of a remote engine or served simulator (default 30).")
RetriesOpt = typer.Option(None, "--retries", help="Attempts after the first for a remote engine or served simulator (default 3).")
SearchPriceOpt = typer.Option(
    None, "--search-price", min=0.0,
    help="USD per 1,000 searches that reach a real engine, for the cost ledger (default: the config's "
         "engine.price_per_1000, else SerpAPI's price in the paper, about 9.17).",
)


def _price(flag: Optional[float], configured: float = SERPAPI_PRICE_PER_1000) -> float:
    return configured if flag is None else flag


def _print_cost(cost: dict) -> None:
    console.print(f"search cost: {cost['summary']}", highlight=False, soft_wrap=True)


def engine_config(engine, corpus, url, topk, sim_model, sim_url, sim_style, noise=None, token=None, seed=0,
                  timeout=None, retries=None) -> EngineConfig:
    if engine not in ENGINE_KINDS:
        _fail(f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_KINDS)}")
    limits = {k: v for k, v in (("timeout", timeout), ("retries", retries)) if v is not None}
    try:
        cfg = EngineConfig(
            kind=engine, topk=topk, corpus=corpus, url=url, sim_model=sim_model, sim_url=sim_url, sim_style=sim_style,
            token=token, seed=seed, **limits,
        )
    except ValueError as e:
        _fail(str(e))
    if noise is not None:
        cfg.noise = noise
    return cfg


def _build(cfg: EngineConfig):
    try:
        with console.status(f"starting the {cfg.kind} engine…"):
            return cfg.build()
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


@app.command()
def world(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write corpus.jsonl, train.jsonl, test.jsonl."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same files."),
    entities: int = typer.Option(300, "--entities", help="Number of entities (cities, people, organisations, inventions)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of questions held out for testing."),
) -> None:
    """Build the offline world: a fictional encyclopedia corpus with single- and two-hop questions."""
    from .data.world import build_world, write_world

    try:
        w = build_world(seed=seed, n_entities=entities, test_fraction=test_fraction)
    except ValueError as e:
        _fail(str(e))
    paths = write_world(w, out)
    hops = lambda xs, h: sum(1 for x in xs if x.metadata.get("hops") == h)  # noqa: E731
    console.print(
        f"world seed {seed}: {len(w.corpus)} articles, train {len(w.train)} questions "
        f"({hops(w.train, 1)} single-hop, {hops(w.train, 2)} two-hop), test {len(w.test)} "
        f"({hops(w.test, 1)} single-hop, {hops(w.test, 2)} two-hop)"
    )
    for name, p in paths.items():
        console.print(f"  {name}: {p}")


@app.command()
def search(
    query: str = typer.Argument(..., help="The search query."),
    engine: str = EngineOpt,
    corpus: Optional[str] = CorpusOpt,
    url: Optional[str] = UrlOpt,
    topk: int = TopkOpt,
    sim_model: str = SimModelOpt,
    sim_url: Optional[str] = SimUrlOpt,
    sim_style: str = SimStyleOpt,
    question: Optional[str] = typer.Option(None, "--question", help="The question being answered (the simulator sees it)."),
    answer: Optional[list[str]] = typer.Option(None, "--answer", help="Gold answer(s) (the simulator sees them)."),
    noise: Optional[str] = typer.Option(None, "--noise", help="Simulator: 'useful', 'noisy' or P(noisy)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    timeout: Optional[float] = TimeoutOpt,
    retries: Optional[int] = RetriesOpt,
) -> None:
    """Print what an engine returns for a query (real or simulated, useful or noisy); exit status 1 when the
    engine failed."""
    from .engines import SearchRequest

    cfg = engine_config(engine, corpus, url, topk, sim_model, sim_url, sim_style, timeout=timeout, retries=retries)
    req = SearchRequest(query, question=question, golden_answers=answer or [], noise=_noise(noise))
    with _build(cfg) as eng:
        result = eng.search([req], topk=topk)[0]
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        if result.error:
            raise typer.Exit(1)
        return
    label = result.engine + (f" ({result.kind})" if result.kind else "")
    table = Table(title=f"{label}: {query}", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("title")
    table.add_column("text")
    table.add_column("score", justify="right")
    for i, d in enumerate(result.documents, 1):
        table.add_row(str(i), d.title, d.text, "" if d.score is None else f"{d.score:.2f}")
    console.print(table)
    if result.repaired:
        console.print(f"[yellow]{result.repaired} document(s) missing or repaired by the parser[/yellow]")
    if result.error:
        console.print(f"[red]engine error:[/red] {result.error}")
        raise typer.Exit(1)


@app.command()
def serve(
    engine: str = EngineOpt,
    corpus: Optional[str] = CorpusOpt,
    url: Optional[str] = UrlOpt,
    topk: int = TopkOpt,
    sim_model: str = SimModelOpt,
    sim_url: Optional[str] = SimUrlOpt,
    sim_style: str = SimStyleOpt,
    noise: Optional[str] = typer.Option(None, "--noise", help="Simulator default when a request says nothing."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="ZEROSEARCH_TOKEN", help="Require 'Authorization: Bearer TOKEN' (env ZEROSEARCH_TOKEN)."
    ),
    batch: Optional[bool] = typer.Option(
        None, "--batch/--no-batch", help="Coalesce concurrent requests into one engine call (default: on for simulated)."
    ),
    max_batch: int = typer.Option(32, "--max-batch", help="Most queries per coalesced engine call."),
    batch_wait_ms: float = typer.Option(10.0, "--batch-wait-ms", help="How long a request waits for others to join it."),
    request_timeout: float = typer.Option(300.0, "--request-timeout", help="Seconds before a request fails with 504."),
    max_queries: int = typer.Option(4096, "--max-queries", help="Most queries in one request (answered in chunks)."),
    noise_start: Optional[float] = typer.Option(
        None, "--noise-start", help="Server curriculum for clients that send no noise: P(noisy) at step 0."),
    noise_end: Optional[float] = typer.Option(None, "--noise-end", help="Server curriculum: P(noisy) at --total-steps."),
    total_steps: Optional[int] = typer.Option(
        None, "--total-steps", help="Server curriculum length; the step comes from a request's `step`, an X-Step header "
        "or POST /step."),
    timeout: Optional[float] = TimeoutOpt,
    retries: Optional[int] = RetriesOpt,
) -> None:
    """Run a Search-R1 compatible POST /retrieve server in front of any engine."""
    from .curriculum import NoiseSchedule
    from .server import ServerCurriculum
    from .server import serve as run

    if max_batch < 1 or batch_wait_ms < 0 or request_timeout <= 0 or max_queries < 1:
        _fail("need --max-batch >= 1, --batch-wait-ms >= 0, --request-timeout > 0 and --max-queries >= 1")
    curriculum = None
    given = [x is not None for x in (noise_start, noise_end, total_steps)]
    if any(given):
        if not all(given):
            _fail("a server curriculum needs --noise-start, --noise-end and --total-steps")
        if engine != "simulated":
            _fail("a noise curriculum only applies to --engine simulated")
        try:
            curriculum = ServerCurriculum(NoiseSchedule(noise_start, noise_end), total_steps)
        except ValueError as e:
            _fail(str(e))
    cfg = engine_config(engine, corpus, url, topk, sim_model, sim_url, sim_style, noise=_noise(noise), timeout=timeout,
                        retries=retries)
    # A simulated engine generates a batch for about the cost of one request; real engines gain little.
    batching = cfg.kind == "simulated" if batch is None else batch
    if batching:  # a coalesced batch is one generation of the local simulator, not several
        cfg.sim_batch_size = max(cfg.sim_batch_size, max_batch)
    eng = _build(cfg)
    try:
        run(eng, host=host, port=port, token=token, default_topk=topk, batching=batching, max_batch=max_batch,
            max_wait=batch_wait_ms / 1000, timeout=request_timeout, max_queries=max_queries, curriculum=curriculum)
    except ValueError as e:
        _fail(str(e))


def _load_policy(policy: str):
    from .llm.local import load_causal_lm

    try:
        with console.status(f"loading {policy}…"):
            return load_causal_lm(policy)
    except (OSError, ValueError) as e:
        _fail(f"cannot load the policy {policy!r}: {e}")


def _load_data(spec: str, split: Optional[str], limit: Optional[int]):
    from .data.loaders import load

    try:
        examples = load(spec, split=split, limit=limit)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    if not examples:
        _fail(f"no questions in {spec}")
    return examples


def _run_config(config: Optional[Path]):
    from .settings import load_run_config

    try:
        return load_run_config(config)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


def _override_engine(cfg, engine, corpus, url, sim_model, sim_url, sim_style, topk, timeout=None, retries=None) -> None:
    """Flags given on the command line win over the config file."""
    e = cfg.engine
    for name, value in (("kind", engine), ("corpus", corpus), ("url", url), ("sim_model", sim_model),
                        ("sim_url", sim_url), ("sim_style", sim_style), ("topk", topk), ("timeout", timeout),
                        ("retries", retries)):
        if value is not None:
            setattr(e, name, value)
    if e.kind not in ENGINE_KINDS:
        _fail(f"unknown engine {e.kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
    try:
        e.__post_init__()
    except ValueError as err:
        _fail(str(err))
    cfg.rollout.topk = e.topk


def _prepare_run(cfg, policy: Optional[str], train_data: Optional[str]):
    """Questions, engine and policy model of a warm-start or training run (flags win over the config)."""
    cfg.policy = policy or cfg.policy
    cfg.train_data = train_data or cfg.train_data
    if not cfg.train_data:
        _fail("give the training questions with --train-data (or train_data: in the config)")
    examples = _load_data(cfg.train_data, cfg.train_split, cfg.train_limit)
    eng = _build(cfg.engine)
    model, tok = _load_policy(cfg.policy)
    return examples, eng, model, tok


ConfigOpt = typer.Option(None, "--config", "-c", help="YAML run settings (see configs/).")
OptEngine = typer.Option(None, "--engine", "-e", help=f"Search engine: {', '.join(ENGINE_KINDS)}.")
OptTopk = typer.Option(None, "--topk", "-k", min=1, max=50, help="Documents per search.")
OptSimModel = typer.Option(None, "--sim-model", help="Simulator model: registry name, folder or hub id.")
OptSimStyle = typer.Option(None, "--sim-style", help="Simulator prompt: 'sft' or 'prompt'.")
ReportToOpt = typer.Option(
    None, "--report-to",
    help="Experiment tracker: none, tensorboard (event files in OUT/tensorboard), wandb or trackio; wandb and "
         "trackio take their project from WANDB_PROJECT / TRACKIO_PROJECT. Default: the config's setting (none).",
)


def _tracker(flag: Optional[str], configured: str = "none") -> str:
    """The tracker a run reports to, checked before any model loads (a missing package fails in seconds)."""
    from .train.tracking import REPORT_TO, missing_tracker

    value = configured if flag is None else flag
    if value not in REPORT_TO:
        _fail(f"--report-to must be one of {', '.join(REPORT_TO)}, not {value!r}")
    problem = missing_tracker(value)
    if problem:
        _fail(problem)
    return value


@app.command()
def warmstart(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; the model goes to OUT/model."),
    config: Optional[Path] = ConfigOpt,
    policy: Optional[str] = typer.Option(None, "--policy", help="Model to warm-start (registry name, folder, hub id)."),
    train_data: Optional[str] = typer.Option(None, "--train-data", help="Training questions (jsonl, parquet, world folder)."),
    engine: Optional[str] = OptEngine,
    corpus: Optional[str] = CorpusOpt,
    url: Optional[str] = UrlOpt,
    topk: Optional[int] = OptTopk,
    sim_model: Optional[str] = OptSimModel,
    sim_url: Optional[str] = SimUrlOpt,
    sim_style: Optional[str] = OptSimStyle,
    timeout: Optional[float] = TimeoutOpt,
    retries: Optional[int] = RetriesOpt,
    search_price: Optional[float] = SearchPriceOpt,
    demos: Optional[int] = typer.Option(None, "--demos", help="Number of demonstrations."),
    steps: Optional[int] = typer.Option(None, "--steps", help="SFT steps."),
    report_to: Optional[str] = ReportToOpt,
) -> None:
    """Teach a small policy the protocol's format with a few SFT steps on demonstrations that use the run's engine."""
    from .train.warmstart import warmstart as run

    cfg = _run_config(config)
    _override_engine(cfg, engine, corpus, url, sim_model, sim_url, sim_style, topk, timeout, retries)
    cfg.engine.price_per_1000 = _price(search_price, cfg.engine.price_per_1000)
    if demos:
        cfg.warmstart.demos = demos
    if steps:
        cfg.warmstart.sft.steps = steps
    cfg.warmstart.sft.report_to = _tracker(report_to, cfg.warmstart.sft.report_to)
    examples, eng, model, tok = _prepare_run(cfg, policy, train_data)
    with console.status(f"warm start: {cfg.warmstart.demos} demonstrations, {cfg.warmstart.sft.steps} SFT steps…"):
        summary = run(cfg.policy, eng, examples, out, sft=cfg.warmstart.sft, n_demos=cfg.warmstart.demos,
                      topk=cfg.engine.topk, max_obs_tokens=cfg.rollout.max_obs_tokens,
                      require_facts=cfg.warmstart.require_facts, model=model, tokenizer=tok,
                      price_per_1000=cfg.engine.price_per_1000)
    console.print(f"warm start done in {summary['seconds']:.0f} s: {summary['demos']} demonstrations, final loss "
                  f"{summary['losses'][-1]['loss']:.3f}; model in {summary['model_dir']}")
    _print_cost(summary["search_cost"])


@app.command()
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: policy/, checkpoints/, metrics.jsonl, plots."),
    config: Optional[Path] = ConfigOpt,
    policy: Optional[str] = typer.Option(None, "--policy", help="Policy to train (registry name, folder, hub id)."),
    train_data: Optional[str] = typer.Option(None, "--train-data", help="Training questions (jsonl, parquet, world folder)."),
    engine: Optional[str] = OptEngine,
    corpus: Optional[str] = CorpusOpt,
    url: Optional[str] = UrlOpt,
    topk: Optional[int] = OptTopk,
    sim_model: Optional[str] = OptSimModel,
    sim_url: Optional[str] = SimUrlOpt,
    sim_style: Optional[str] = OptSimStyle,
    timeout: Optional[float] = TimeoutOpt,
    retries: Optional[int] = RetriesOpt,
    search_price: Optional[float] = SearchPriceOpt,
    algorithm: Optional[str] = typer.Option(None, "--algorithm", help="grpo, reinforce or dapo."),
    steps: Optional[int] = typer.Option(None, "--steps", help="RL steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in OUT."),
    report_to: Optional[str] = ReportToOpt,
) -> None:
    """RL-train a policy to search (GRPO family through TRL); --engine picks the engine, nothing else changes."""
    from .train.grpo import train_policy

    cfg = _run_config(config)
    _override_engine(cfg, engine, corpus, url, sim_model, sim_url, sim_style, topk, timeout, retries)
    cfg.engine.price_per_1000 = _price(search_price, cfg.engine.price_per_1000)
    if algorithm:
        cfg.rl.algorithm = algorithm
    if steps:
        cfg.rl.steps = steps
    cfg.rl.report_to = _tracker(report_to, cfg.rl.report_to)
    try:
        cfg.rl.__post_init__()
    except ValueError as e:
        _fail(str(e))
    examples, eng, model, tok = _prepare_run(cfg, policy, train_data)
    console.print(f"training {cfg.policy} with {cfg.rl.algorithm} against the {cfg.engine.kind} engine for "
                  f"{cfg.rl.steps} steps ({cfg.rl.questions_per_step} questions x {cfg.rl.num_generations} rollouts)")
    try:
        summary = train_policy(cfg.policy, eng, examples, out, rollout_cfg=cfg.rollout, rl=cfg.rl,
                               curriculum=cfg.curriculum, resume=resume, model=model, tokenizer=tok,
                               price_per_1000=cfg.engine.price_per_1000)
    except FileNotFoundError as e:
        _fail(str(e))
    console.print(f"done: {summary['steps']} steps in {summary['seconds']:.0f} s, {summary['real_searches']} searches "
                  f"reached a real engine; policy in {summary['policy_dir']}")
    _print_cost(summary["search_cost"])


@app.command("eval")
def eval_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.json, report.md and predictions.jsonl."),
    data: str = typer.Option(..., "--data", "-d", help="Questions: world folder, FlashRAG jsonl, Search-R1 parquet, hf:…; comma-separated for several."),
    policy: Optional[str] = typer.Option(None, "--policy", help="Policy to evaluate (registry name, folder, hub id)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="'direct' (no search) or 'rag' (one retrieval); uses --policy or the base model."),
    split: str = typer.Option("test", "--split", help="Split for folders and hub datasets."),
    limit: Optional[int] = typer.Option(None, "--limit", help="First N questions of each dataset."),
    engine: str = EngineOpt,
    corpus: Optional[str] = CorpusOpt,
    url: Optional[str] = UrlOpt,
    topk: int = TopkOpt,
    sim_model: str = SimModelOpt,
    sim_url: Optional[str] = SimUrlOpt,
    sim_style: str = SimStyleOpt,
    max_turns: int = typer.Option(2, "--max-turns", help="Search turns before the final answer turn."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Tokens per turn."),
    batch_size: int = typer.Option(32, "--batch-size"),
    timeout: Optional[float] = TimeoutOpt,
    retries: Optional[int] = RetriesOpt,
    search_price: Optional[float] = SearchPriceOpt,
) -> None:
    """Score a policy (multi-turn search) or a baseline over datasets with any engine; greedy, every question counted."""
    from .agent.rollout import RolloutConfig
    from .evaluate import run_eval, write_report

    method = baseline or "agent"
    if method not in ("agent", "direct", "rag"):
        _fail(f"--baseline must be 'direct' or 'rag', not {baseline!r}")
    if method == "agent" and not policy:
        _fail("give --policy (or --baseline direct|rag)")
    policy = policy or "smollm2-135m"
    examples = _load_data(data, split, limit)
    eng = None
    if method != "direct" or engine != "bm25" or corpus:
        cfg = engine_config(engine, corpus, url, topk, sim_model, sim_url, sim_style, timeout=timeout, retries=retries)
        eng = _build(cfg)
    model, tok = _load_policy(policy)
    rcfg = RolloutConfig(max_turns=max_turns, max_new_tokens=max_new_tokens, topk=topk, temperature=0.0,
                         batch_size=batch_size, bf16=True)
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task(f"{method} over {len(examples)} questions", total=len(examples))
        report, rows = run_eval(method, model, tok, examples, eng, rcfg, progress=lambda n: bar.advance(task, n),
                                price_per_1000=_price(search_price))
    write_report(report, rows, out, title=f"{method}: {policy}")
    table = Table(title=f"{method}: {policy} ({report.n} questions)")
    for col in ("dataset", "n", "strict EM", "cover EM", "F1", "searches/q"):
        table.add_column(col, justify="right" if col != "dataset" else "left")
    for name, s in report.per_dataset.items():
        table.add_row(name, str(s["n"]), f"{s['strict_em']:.1f}", f"{s['cover_em']:.1f}", f"{s['f1']:.1f}",
                      f"{s['searches_per_question']:.2f}")
    console.print(table)
    console.print(f"n = {report.n}; report in {out}/report.md")
    _print_cost(report.search_cost)


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question."),
    policy: str = typer.Option(..., "--policy", help="A trained policy (folder, registry name, hub id)."),
    engine: str = EngineOpt,
    corpus: Optional[str] = CorpusOpt,
    url: Optional[str] = UrlOpt,
    topk: int = TopkOpt,
    sim_model: str = SimModelOpt,
    sim_url: Optional[str] = SimUrlOpt,
    sim_style: str = SimStyleOpt,
    answer: Optional[list[str]] = typer.Option(None, "--answer", help="Gold answer, only for a simulated engine."),
    max_turns: int = typer.Option(4, "--max-turns", help="Search turns before the final answer turn."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
    timeout: Optional[float] = TimeoutOpt,
    retries: Optional[int] = RetriesOpt,
) -> None:
    """Answer one question with a policy and an engine, showing each turn (reasoning, query, documents, answer)."""
    from .agent.rollout import RolloutConfig, rollout
    from .data.qa import QAExample

    cfg = engine_config(engine, corpus, url, topk, sim_model, sim_url, sim_style, timeout=timeout, retries=retries)
    eng = _build(cfg)
    model, tok = _load_policy(policy)
    ex = QAExample("ask", question, answer or ["?"])
    rcfg = RolloutConfig(max_turns=max_turns, max_new_tokens=max_new_tokens, topk=topk, temperature=0.0, batch_size=1)
    with console.status("thinking…"):
        traj = rollout(model, tok, [ex], eng, rcfg)[0]
    searches = iter(traj.searches)
    for t in traj.turns:
        console.rule(f"turn {t['turn']}")
        console.print(t["text"].strip(), markup=False, highlight=False)
        if t["action"] == "search" and t["turn"] <= max_turns:
            s = next(searches, None)
            if s is not None:
                label = s.engine + (f", {s.kind}" if s.kind else "")
                console.print(f"[bold cyan]search[/bold cyan] ({label}): {s.query}")
                for i, d in enumerate(s.documents, 1):
                    console.print(f"  [dim]{i}. {d['title']}[/dim] {d['text']}", markup=True, highlight=False)
                if s.error:
                    console.print(f"  [red]engine error: {s.error}[/red]")
        elif t["action"] == "invalid":
            console.print("[yellow](no valid <search> or <answer>: the environment asks again)[/yellow]")
    console.rule()
    console.print(f"[bold]answer:[/bold] {traj.answer if traj.answer is not None else '(none)'}")


def _comparison(out: Path, quick: bool, config: Optional[Path], fresh: bool, default: str,
                search_price: Optional[float] = None) -> None:
    from .demo import CONFIG_DIR, run_demo
    from .experiment import cost_cell, cost_header

    try:
        result = run_demo(out, quick=quick, config=config or (None if quick else CONFIG_DIR / default), fresh=fresh,
                          say=lambda m: console.print(m, highlight=False), price_per_1000=search_price)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    vs_warm = {c["after"]: c["all"] for c in result["comparisons"] if c["before"].startswith("warm start")}
    hops = "single- and two-hop" if len(result["hops"]) > 1 else "single-hop" if result["hops"] == [1] else "two-hop"
    table = Table(title=f"evaluated with the real engine (BM25) on {result['eval_questions']} held-out {hops} questions")
    for col in ("method", "strict EM", "cover EM", "F1", "searches/q", "strict EM vs warm start [95% CI] (gained / lost)",
                "training searches on a real engine", "real searches to build its simulator", cost_header(result)):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in result["rows"]:
        d = vs_warm.get(r["method"])
        change = f"{d['difference']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] (+{d['gained']} / -{d['lost']})" if d else "-"
        table.add_row(r["method"], f"{r['strict_em']:.1f}", f"{r['cover_em']:.1f}", f"{r['f1']:.1f}",
                      f"{r['searches_per_question']:.2f}", change, str(r["training_real_searches"]),
                      str(r["simulator_real_searches"]), cost_cell(r))
    console.print(table)
    console.print(f"stages took {result['seconds']:.0f} s; table, intervals per hop, reports and learning curves "
                  f"in {out}/ (results.md, learning.png)")


OptFresh = typer.Option(False, "--fresh", help="Start over: delete the run folder's earlier stages first.")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder (finished stages are kept and reused)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny random models: a smoke test of the pipeline (< 2 min)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Settings (default configs/demo-cpu.yaml)."),
    fresh: bool = OptFresh,
    search_price: Optional[float] = SearchPriceOpt,
) -> None:
    """The paper's comparison on a laptop CPU in 20 minutes, offline: RL with a simulated vs a real engine,
    evaluated with the real one. Run again in the same folder, it resumes where it stopped."""
    _comparison(out, quick, config, fresh, "demo-cpu.yaml", search_price)


@app.command()
def experiment(
    out: Path = typer.Option(Path("runs/experiment"), "--out", "-o", help="Run folder (finished stages are kept and reused)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Settings (default configs/experiment-cpu.yaml)."),
    fresh: bool = OptFresh,
    search_price: Optional[float] = SearchPriceOpt,
) -> None:
    """The comparison at a scale where RL does the learning (about 90 minutes on 2 cores): a world-trained
    simulator, single- and two-hop questions, curriculum vs constant noise, paired bootstrap intervals.
    Every stage is resumable: run the same command again after an interruption."""
    _comparison(out, False, config, fresh, "experiment-cpu.yaml", search_price)


simtune_app = typer.Typer(help="Build and check a simulation LLM: collect real searches, label, tune, check.",
                          no_args_is_help=True)
app.add_typer(simtune_app, name="simtune")


@simtune_app.command("collect")
def simtune_collect(
    out: Path = typer.Option(..., "--out", "-o", help="jsonl of searches (appended; finished questions are skipped)."),
    data: str = typer.Option(..., "--data", "-d", help="Training questions (world folder, jsonl, parquet)."),
    split: str = typer.Option("train", "--split"),
    limit: Optional[int] = typer.Option(None, "--limit"),
    policy: str = typer.Option("plan", "--policy", help="'plan' (the demonstrations' query plan; world data) or a policy model."),
    engine: str = EngineOpt,
    corpus: Optional[str] = CorpusOpt,
    url: Optional[str] = UrlOpt,
    topk: int = TopkOpt,
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature of a model policy."),
    search_price: Optional[float] = SearchPriceOpt,
) -> None:
    """Run a policy with a REAL engine over training questions and record every search."""
    from rich.progress import Progress

    from .agent.rollout import RolloutConfig
    from .simtune.collect import collect

    examples = _load_data(data, split, limit)
    eng = _build(engine_config(engine, corpus, url, topk, "smollm2-135m", None, "sft"))
    pol = None if policy == "plan" else _load_policy(policy)
    rcfg = RolloutConfig(max_turns=2, max_new_tokens=64, topk=topk, temperature=temperature, bf16=True)
    try:
        with Progress(console=console) as bar:
            task = bar.add_task(f"collecting over {len(examples)} questions", total=len(examples))
            stats = collect(examples, eng, out, topk=topk, policy=pol, rollout_cfg=rcfg,
                            progress=lambda n: bar.advance(task, n), price_per_1000=_price(search_price))
    except ValueError as e:
        _fail(str(e))
    console.print(f"{stats['searches']} searches from {stats['questions']} questions written to {out} "
                  f"({stats['skipped_done']} already there, {stats['skipped_no_plan']} without a plan)")
    _print_cost(stats["search_cost"])


@simtune_app.command("dataset")
def simtune_dataset(
    samples: Path = typer.Option(..., "--samples", "-s", help="Output of `simtune collect`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for sft.jsonl, heldout.jsonl and labels.json."),
    label: str = typer.Option("hop", "--label", help="judge, trajectory, contains or hop."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Local judge model (for --label judge)."),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="OpenAI-compatible judge server (for --label judge)."),
    holdout: float = typer.Option(0.1, "--holdout", help="Share of questions kept out for `simtune check`."),
    balance: bool = typer.Option(True, "--balance/--no-balance", help="As many useful as noisy examples."),
    words: int = typer.Option(30, "--words", help="'about N words' per document in the prompt."),
    topk: int = TopkOpt,
) -> None:
    """Label collected document sets useful or noisy and write the simulator's SFT set (chat messages jsonl)."""
    from .simtune.collect import read_samples
    from .simtune.label import label_samples, sft_record, split_by_question, write_samples, write_sft_set

    rows = read_samples(samples)
    if not rows:
        _fail(f"no searches in {samples}")
    train_rows, held = split_by_question(rows, holdout)
    judge = None
    if label == "judge":
        if judge_url:
            from .llm.openai_compat import OpenAICompatGenerator

            judge = OpenAICompatGenerator(judge_url, judge_model or "judge")
        elif judge_model:
            from .llm.local import TransformersGenerator

            judge = TransformersGenerator.from_pretrained(judge_model)
    try:
        labelled, counts = label_samples(train_rows, label, k=topk, judge=judge, balance=balance)
    except (ValueError, RuntimeError) as e:
        _fail(str(e))
    write_sft_set([sft_record(x, words=words) for x in labelled], out / "sft.jsonl")
    write_samples(held, out / "heldout.jsonl")
    counts.update(rule=label, heldout_searches=len(held))
    (out / "labels.json").write_text(json.dumps(counts, indent=2))
    console.print(f"{counts['sets']} document sets labelled by '{label}': {counts['useful']} useful, {counts['noisy']} "
                  f"noisy; kept {counts['kept_useful']} + {counts['kept_noisy']} in {out}/sft.jsonl; "
                  f"{len(held)} held-out searches in {out}/heldout.jsonl")


def _train(status: str, fn):
    """Run a simulator training job under a status line; bad data is a clear error, not a traceback."""
    with console.status(status):
        try:
            return fn()
        except ValueError as e:
            _fail(str(e))


@simtune_app.command("pretrain")
def simtune_pretrain(
    corpus: Path = typer.Option(..., "--corpus", help="FlashRAG corpus jsonl (id, contents) the simulator should know."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder; the model goes to OUT/model (then `simtune tune --model OUT/model`)."),
    model: str = typer.Option("smollm2-135m", "--model", help="Base simulator (registry name, folder, hub id)."),
    steps: int = typer.Option(375, "--steps", help="Batches; 375 x 8 = 10 epochs of a 300-article world."),
    batch_size: int = typer.Option(8, "--batch-size"),
    lr: float = typer.Option(5e-4, "--lr"),
    bf16: bool = typer.Option(True, "--bf16/--fp32"),
) -> None:
    """Continued pre-training on a corpus, before simulation tuning: the simulator learns what the corpus says
    (as the paper's simulator knew Wikipedia), so it can write about entities it is not told of."""
    from .simtune.pretrain import pretrain_simulator
    from .train.sft import SFTConfig

    if not corpus.exists():
        _fail(f"no corpus file {corpus}")
    m, tok = _load_policy(model)
    cfg = SFTConfig(steps=steps, batch_size=batch_size, learning_rate=lr, bf16=bf16)
    summary = _train(f"pre-training {model} on {corpus}: {steps} steps at lr {lr:g}…",
                     lambda: pretrain_simulator(model, corpus, out, sft=cfg, model=m, tokenizer=tok))
    losses = summary["losses"]
    console.print(f"{summary['articles']} articles, {summary['epochs']} epochs: loss {losses[0]['loss']:.3f} → "
                  f"{losses[-1]['loss']:.3f} in {summary['seconds']:.0f} s; model in {summary['model_dir']}")


@simtune_app.command("tune")
def simtune_tune(
    data: Path = typer.Option(..., "--data", "-d", help="sft.jsonl from `simtune dataset`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder; the simulator goes to OUT/model."),
    model: str = typer.Option("smollm2-135m", "--model", help="Base simulator (registry name, folder, hub id)."),
    steps: int = typer.Option(100, "--steps"),
    batch_size: int = typer.Option(8, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default by model size (1e-6 from 1B parameters up, as the paper)."),
    lora_r: int = typer.Option(0, "--lora-r", help="LoRA rank (0 = full fine-tune); adapters are merged on save."),
    trainable_layers: int = typer.Option(0, "--trainable-layers", help="Train only the top N blocks (0 = all)."),
    bf16: bool = typer.Option(True, "--bf16/--fp32"),
    report_to: Optional[str] = ReportToOpt,
) -> None:
    """Fine-tune a simulator (TRL SFTTrainer, loss on the documents only); saves a folder any backend loads."""
    from .simtune.tune import suggested_lr, tune_simulator
    from .train.sft import SFTConfig

    tracker = _tracker(report_to)
    m, tok = _load_policy(model)
    rate = lr or suggested_lr(sum(p.numel() for p in m.parameters()))
    cfg = SFTConfig(steps=steps, batch_size=batch_size, learning_rate=rate, lora_r=lora_r, bf16=bf16,
                    trainable_layers=trainable_layers, report_to=tracker)
    summary = _train(f"tuning {model}: {steps} steps at lr {rate:g}…",
                     lambda: tune_simulator(model, data, out, sft=cfg, model=m, tokenizer=tok))
    losses = summary["losses"]
    console.print(f"loss {losses[0]['loss']:.3f} → {losses[-1]['loss']:.3f} in {summary['seconds']:.0f} s; "
                  f"simulator in {summary['model_dir']}")


@simtune_app.command("check")
def simtune_check(
    samples: Path = typer.Option(..., "--samples", "-s", help="Held-out searches (heldout.jsonl from `simtune dataset`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the report."),
    sim_model: str = SimModelOpt,
    sim_url: Optional[str] = SimUrlOpt,
    sim_style: str = SimStyleOpt,
    compare: Optional[str] = typer.Option(None, "--compare", help="Also check this model with the prompt-only style."),
    limit: int = typer.Option(100, "--limit", help="Held-out searches to check."),
    topk: int = TopkOpt,
    answer_guard: bool = typer.Option(True, "--answer-guard/--no-answer-guard",
                                      help="Ban the gold answers from noisy documents (local backend), as training does."),
) -> None:
    """Report a simulator's format validity, controllability (useful vs noisy), fidelity to the real engine and cost."""
    from .data.qa import atomic_write_text
    from .simtune.check import check_simulator, report_markdown, write_check
    from .simtune.collect import read_samples

    held = read_samples(samples)[:limit]
    if not held:
        _fail(f"no searches in {samples}")
    runs = [("simulator", sim_model, sim_url, sim_style)]
    if compare:
        runs.append(("prompt-only", compare, None, "prompt"))
    reports = {}
    for name, model, url, style in runs:
        cfg = engine_config("simulated", None, None, topk, model, url, style)
        cfg.sim_answer_guard = answer_guard
        eng = _build(cfg)
        with console.status(f"checking {name} ({model}, {style}) on {len(held)} queries…"):
            result = check_simulator(eng, held, k=topk)
        write_check(result, out, name)
        reports[f"{name} ({style})"] = result["report"]
    md = report_markdown(reports)
    atomic_write_text(out / "report.md", md)
    console.print(md, markup=False, highlight=False)


export_app = typer.Typer(help="Write training data for other training systems.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("verl")
def export_verl(
    data: str = typer.Option(..., "--data", "-d", help="Questions: world folder, FlashRAG jsonl, Search-R1 parquet, hf:…; comma-separated for several."),
    out: Path = typer.Option(..., "--out", "-o", help="The parquet file to write (e.g. train.parquet)."),
    split: str = typer.Option("train", "--split", help="Split for folders and hub datasets; also stored in extra_info."),
    limit: Optional[int] = typer.Option(None, "--limit", help="First N questions of each dataset."),
    agent_name: str = typer.Option("zerosearch_agent", "--agent-name", help="The agent loop verl runs for these rows."),
) -> None:
    """Write rows verl's RLHFDataset reads (prompt, data_source, reward_model, agent_name, extra_info)."""
    from .integrations.verl.export import verl_rows, write_parquet

    examples = _load_data(data, split, limit)
    try:
        path = write_parquet(verl_rows(examples, split=split, agent_name=agent_name), out)
    except ValueError as e:
        _fail(str(e))
    sources = sorted({ex.source for ex in examples})
    console.print(f"{len(examples)} rows ({', '.join(sources)}) for agent loop {agent_name!r} in {path}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
