"""The `zerosearch` command line: one sub-command per job.

Every command that runs an engine or a policy reads the same run settings (settings.RunConfig) through one
option, `--config/-c`, given any number of times: YAML files or presets shipped with the package (demo-cpu,
experiment-cpu, qwen2.5-3b, …), merged in order, then KEY=VALUE overrides (`-c engine.kind=bm25 -c
rl.steps=20`), later ones winning. A command's own flags are only what names its job (its output folder,
its data, its policy).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Train language models to search with RL against a simulated search engine (ZeroSearch).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# A log file or a pipe has no width: give tables room instead of rich's 80 columns, which fold every cell.
console = Console() if sys.stdout.isatty() else Console(width=200)


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2)


ConfigOpt = typer.Option(
    None, "--config", "-c",
    help="Settings, repeatable: YAML files or presets (demo-cpu, demo-quick, experiment-cpu, qwen2.5-3b, "
         "qwen2.5-7b), merged in order, then KEY=VALUE overrides, in order (later ones win), e.g. engine.kind=bm25, "
         "engine.corpus=W/corpus.jsonl, engine.topk=5, "
         "engine.sim_model=…, engine.sim_url=…, engine.noise=useful, engine.timeout=60, engine.price_per_1000=5, "
         "rollout.max_turns=4, rl.steps=20, rl.report_to=tensorboard, curriculum.end=0.5, warmstart.demos=64, "
         "server.max_queries=8192, simtune.tune.steps=100 (README: Settings).",
)
OutOpt = typer.Option(..., "--out", "-o", help="Output folder.")
DataOpt = typer.Option(..., "--data", "-d", help="Questions: world folder, FlashRAG jsonl, Search-R1 parquet, hf:owner/name; "
                                                 "comma-separated for several.")
PolicyOpt = typer.Option(None, "--policy", help="Policy model: registry name, folder or hub id (default: the config's).")
TrainDataOpt = typer.Option(None, "--train-data", help="Training questions (default: the config's train_data).")
SplitOpt = typer.Option("test", "--split", help="Split for folders and hub datasets.")
LimitOpt = typer.Option(None, "--limit", help="First N questions of each dataset.")
ModelOpt = typer.Option("smollm2-135m", "--model", help="Base simulator: registry name, folder or hub id.")
FreshOpt = typer.Option(False, "--fresh", help="Start over: delete the run folder's earlier stages first.")


def _settings(config: Optional[list[str]], default: Optional[str] = None):
    """The run settings of a command, with a clear error for a bad file, preset or setting."""
    from .settings import load_run_config

    try:
        return load_run_config(config or [], default)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


def _build(cfg):
    from .engines import build_engine

    try:
        with console.status(f"starting the {cfg.kind} engine…"):
            return build_engine(cfg)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


def _load_policy(policy: str):
    from .llm.local import load_causal_lm

    try:
        with console.status(f"loading {policy}…"):
            return load_causal_lm(policy)
    except (OSError, ValueError) as e:
        _fail(f"cannot load the model {policy!r}: {e}")


def _load_data(spec: str, split: Optional[str], limit: Optional[int]):
    from .data.loaders import load

    try:
        examples = load(spec, split=split, limit=limit)
    except (ValueError, OSError) as e:  # OSError: a missing file, or a hub that cannot be reached
        _fail(f"cannot load {spec}: {e}")
    if not examples:
        _fail(f"no questions in {spec}")
    return examples


def _tracker(value: str) -> None:
    """A run's tracker is checked before any model loads: a missing package fails in seconds."""
    from .train.tracking import missing_tracker

    problem = missing_tracker(value)
    if problem:
        _fail(problem)


def _print_cost(cost: dict) -> None:
    console.print(f"search cost: {cost['summary']}", highlight=False, soft_wrap=True)


@app.command()
def world(
    out: Path = OutOpt,
    seed: int = typer.Option(0, "--seed", help="Same seed, same files."),
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Build the offline world: a fictional encyclopedia corpus with single- and two-hop questions
    (world.entities, world.test_fraction)."""
    from .data.world import build_world, write_world

    w_cfg = _settings(config).world
    try:
        w = build_world(seed=seed, n_entities=w_cfg.entities, test_fraction=w_cfg.test_fraction)
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
    question: Optional[str] = typer.Option(None, "--question", help="The question being answered (the simulator sees it)."),
    answer: Optional[list[str]] = typer.Option(None, "--answer", help="Gold answer(s) (the simulator sees them)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Print what the run's engine returns for a query (real or simulated; a simulator's kind is
    engine.noise: useful, noisy or P(noisy)); exit status 1 when the engine failed."""
    from .engines import SearchRequest

    cfg = _settings(config)
    req = SearchRequest(query, question=question, golden_answers=answer or [])
    with _build(cfg.engine) as eng:
        result = eng.search([req])[0]
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
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    token: Optional[str] = typer.Option(
        None, "--token", envvar="ZEROSEARCH_TOKEN", help="Require 'Authorization: Bearer TOKEN' (env ZEROSEARCH_TOKEN)."
    ),
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Run a Search-R1 compatible POST /retrieve server in front of the run's engine (server.* settings:
    batching, limits, and with server.total_steps a noise curriculum for clients that send no noise)."""
    from .server import ServerCurriculum
    from .server import serve as run

    cfg = _settings(config)
    s = cfg.server
    curriculum = None
    if s.total_steps:
        if cfg.engine.kind != "simulated":
            _fail("a noise curriculum (server.total_steps) only applies to engine.kind=simulated")
        curriculum = ServerCurriculum(cfg.curriculum, s.total_steps)
    # A simulated engine generates a batch for about the cost of one request; real engines gain little.
    batching = cfg.engine.kind == "simulated" if s.batch is None else s.batch
    if batching:  # a coalesced batch is one generation of the local simulator, not several
        cfg.engine.sim_batch_size = max(cfg.engine.sim_batch_size, s.max_batch)
    eng = _build(cfg.engine)
    try:
        run(eng, host=host, port=port, token=token, default_topk=cfg.engine.topk, batching=batching,
            max_batch=s.max_batch, max_wait=s.batch_wait_ms / 1000, timeout=s.request_timeout,
            max_queries=s.max_queries, curriculum=curriculum)
    except ValueError as e:
        _fail(str(e))


def _prepare_run(cfg, policy: Optional[str], train_data: Optional[str]):
    """Questions, engine and policy model of a warm-start or training run (flags win over the config)."""
    cfg.policy = policy or cfg.policy
    cfg.train_data = train_data or cfg.train_data
    if not cfg.train_data:
        _fail("give the training questions with --train-data (or train_data in the config)")
    examples = _load_data(cfg.train_data, cfg.train_split, cfg.train_limit)
    eng = _build(cfg.engine)
    model, tok = _load_policy(cfg.policy)
    return examples, eng, model, tok


@app.command()
def warmstart(
    out: Path = OutOpt,
    policy: Optional[str] = PolicyOpt,
    train_data: Optional[str] = TrainDataOpt,
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Teach a small policy the protocol's format with a few SFT steps on demonstrations that use the run's
    engine (warmstart.demos, warmstart.sft.*); the model goes to OUT/model."""
    from .train.warmstart import warmstart as run

    cfg = _settings(config)
    _tracker(cfg.warmstart.sft.report_to)
    examples, eng, model, tok = _prepare_run(cfg, policy, train_data)
    with console.status(f"warm start: {cfg.warmstart.demos} demonstrations, {cfg.warmstart.sft.steps} SFT steps…"):
        summary = run(cfg.policy, eng, examples, out, cfg=cfg.warmstart, topk=cfg.engine.topk,
                      max_obs_tokens=cfg.rollout.max_obs_tokens, max_turn_tokens=cfg.rollout.max_new_tokens,
                      model=model, tokenizer=tok,
                      price_per_1000=cfg.engine.price_per_1000)
    console.print(f"warm start done in {summary['seconds']:.0f} s: {summary['demos']} demonstrations, final loss "
                  f"{summary['losses'][-1]['loss']:.3f}; model in {summary['model_dir']}")
    _print_cost(summary["search_cost"])


@app.command()
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: policy/, checkpoints/, metrics.jsonl, plots."),
    policy: Optional[str] = PolicyOpt,
    train_data: Optional[str] = TrainDataOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in OUT."),
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """RL-train a policy to search (GRPO family through TRL: rl.algorithm grpo, reinforce or dapo); the engine
    is one setting (engine.kind), nothing else changes."""
    from .train.grpo import train_policy

    cfg = _settings(config)
    _tracker(cfg.rl.report_to)
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
    data: str = DataOpt,
    policy: Optional[str] = typer.Option(None, "--policy", help="Policy to evaluate (registry name, folder, hub id)."),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", help="'direct' (no search) or 'rag' (one retrieval); uses --policy or the base model."),
    split: str = SplitOpt,
    limit: Optional[int] = LimitOpt,
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Score a policy (multi-turn search with the run's rollout settings, greedy) or a baseline over datasets
    with any engine; every question counted."""
    from rich.progress import Progress

    from .evaluate import run_eval, write_report

    method = baseline or "agent"
    if method not in ("agent", "direct", "rag"):
        _fail(f"--baseline must be 'direct' or 'rag', not {baseline!r}")
    if method == "agent" and not policy:
        _fail("give --policy (or --baseline direct|rag)")
    cfg = _settings(config)
    policy = policy or cfg.policy
    examples = _load_data(data, split, limit)
    eng = _build(cfg.engine) if method != "direct" else None
    model, tok = _load_policy(policy)
    with Progress(console=console) as bar:
        task = bar.add_task(f"{method} over {len(examples)} questions", total=len(examples))
        report, rows = run_eval(method, model, tok, examples, eng, cfg.rollout, progress=lambda n: bar.advance(task, n),
                                price_per_1000=cfg.engine.price_per_1000)
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
    answer: Optional[list[str]] = typer.Option(None, "--answer", help="Gold answer, only for a simulated engine."),
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Answer one question with a policy and the run's engine, showing each turn (reasoning, query, documents,
    answer); greedy, with the run's rollout settings (rollout.max_turns, rollout.max_new_tokens)."""
    from dataclasses import replace

    from .agent.rollout import rollout
    from .data.qa import QAExample

    cfg = _settings(config)
    eng = _build(cfg.engine)
    model, tok = _load_policy(policy)
    ex = QAExample("ask", question, answer or ["?"])
    with console.status("thinking…"):
        traj = rollout(model, tok, [ex], eng, replace(cfg.rollout, temperature=0.0, batch_size=1))[0]
    searches = iter(traj.searches)
    for t in traj.turns:
        console.rule(f"turn {t['turn']}")
        console.print(t["text"].strip(), markup=False, highlight=False)
        if t["action"] == "search" and t["turn"] <= cfg.rollout.max_turns:
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


def _comparison(out: Path, quick: bool, config: Optional[list[str]], fresh: bool, default: str) -> None:
    from .demo import run_demo
    from .experiment import cost_cell, cost_header

    try:
        result = run_demo(out, quick=quick, config=config or [], fresh=fresh, default=default,
                          say=lambda m: console.print(m, highlight=False))
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


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder (finished stages are kept and reused)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny random models: a smoke test of the pipeline (< 2 min)."),
    fresh: bool = FreshOpt,
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """The paper's comparison on a laptop CPU in 20 minutes, offline (preset demo-cpu): RL with a simulated vs
    a real engine, evaluated with the real one. Run again in the same folder, it resumes where it stopped."""
    _comparison(out, quick, config, fresh, "demo-cpu")


@app.command()
def experiment(
    out: Path = typer.Option(Path("runs/experiment"), "--out", "-o", help="Run folder (finished stages are kept and reused)."),
    fresh: bool = FreshOpt,
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """The comparison at a scale where RL does the learning (preset experiment-cpu, about 90 minutes on 2 cores):
    a world-trained simulator, single- and two-hop questions, curriculum vs constant noise, paired bootstrap
    intervals. Every stage is resumable: run the same command again after an interruption."""
    _comparison(out, False, config, fresh, "experiment-cpu")


simtune_app = typer.Typer(help="Build and check a simulation LLM: collect real searches, label, tune, check.",
                          no_args_is_help=True)
app.add_typer(simtune_app, name="simtune")


@simtune_app.command("collect")
def simtune_collect(
    out: Path = typer.Option(..., "--out", "-o", help="jsonl of searches (appended; finished questions are skipped)."),
    data: str = typer.Option(..., "--data", "-d", help="Training questions (world folder, jsonl, parquet); "
                                                       "train_split and train_limit apply."),
    policy: str = typer.Option("plan", "--policy", help="'plan' (the demonstrations' query plan; world data) or a policy "
                                                        "model, sampled with the run's rollout settings."),
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Run a policy with a REAL engine over training questions and record every search."""
    from rich.progress import Progress

    from .simtune.collect import collect

    cfg = _settings(config)
    examples = _load_data(data, cfg.train_split, cfg.train_limit)
    eng = _build(cfg.engine)
    pol = None if policy == "plan" else _load_policy(policy)
    try:
        with Progress(console=console) as bar:
            task = bar.add_task(f"collecting over {len(examples)} questions", total=len(examples))
            stats = collect(examples, eng, out, topk=cfg.engine.topk, policy=pol, rollout_cfg=cfg.rollout,
                            progress=lambda n: bar.advance(task, n), price_per_1000=cfg.engine.price_per_1000)
    except ValueError as e:
        _fail(str(e))
    console.print(f"{stats['searches']} searches from {stats['questions']} questions written to {out} "
                  f"({stats['skipped_done']} already there, {stats['skipped_no_plan']} without a plan)")
    _print_cost(stats["search_cost"])


def _judge(spec: str):
    """A judge model: an OpenAI-compatible URL, or a local model (name, folder, hub id)."""
    if spec.startswith(("http://", "https://")):
        from .llm.openai_compat import OpenAICompatGenerator

        return OpenAICompatGenerator(spec, "judge")
    from .llm.local import TransformersGenerator

    return TransformersGenerator(*_load_policy(spec))


@simtune_app.command("dataset")
def simtune_dataset(
    samples: Path = typer.Option(..., "--samples", "-s", help="Output of `simtune collect`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for sft.jsonl, heldout.jsonl and labels.json."),
    label: Optional[str] = typer.Option(None, "--label", help="judge, trajectory, contains or hop (default: simtune.label)."),
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Label collected document sets useful or noisy and write the simulator's SFT set (chat messages jsonl;
    simtune.holdout, simtune.balance, simtune.judge, engine.sim_words, engine.topk)."""
    from .simtune.label import label_samples, sft_record, write_sft_set
    from .simtune.samples import read_samples, split_by_question, write_samples

    cfg = _settings(config)
    st = cfg.simtune
    label = label or st.label
    rows = read_samples(samples)
    if not rows:
        _fail(f"no searches in {samples}")
    train_rows, held = split_by_question(rows, st.holdout)
    judge = _judge(st.judge) if label == "judge" and st.judge else None
    try:
        labelled, counts = label_samples(train_rows, label, k=cfg.engine.topk, judge=judge, balance=st.balance)
    except (ValueError, RuntimeError) as e:
        _fail(str(e))
    write_sft_set([sft_record(x, words=cfg.engine.sim_words) for x in labelled], out / "sft.jsonl")
    write_samples(held, out / "heldout.jsonl")
    counts.update(rule=label, heldout_searches=len(held))
    (out / "labels.json").write_text(json.dumps(counts, indent=2))
    console.print(f"{counts['sets']} document sets labelled by '{label}': {counts['useful']} useful, {counts['noisy']} "
                  f"noisy; kept {counts['kept_useful']} + {counts['kept_noisy']} in {out}/sft.jsonl; "
                  f"{len(held)} held-out searches in {out}/heldout.jsonl")


def _train_simulator(model: str, sft, doing: str, job) -> dict:
    """Load the base simulator and run `job(sft, model, tokenizer)` under a status line (the learning rate by
    model size when the settings leave it open); bad data is a clear error, not a traceback. Returns the
    job's summary, after printing its losses."""
    from dataclasses import replace

    from .simtune.tune import suggested_lr

    _tracker(sft.report_to)
    m, tok = _load_policy(model)
    if sft.learning_rate is None:
        sft = replace(sft, learning_rate=suggested_lr(sum(p.numel() for p in m.parameters())))
    with console.status(f"{doing} {model}: {sft.steps} steps at lr {sft.learning_rate:g}…"):
        try:
            summary = job(sft, m, tok)
        except ValueError as e:
            _fail(str(e))
    losses = summary["losses"]
    console.print(f"loss {losses[0]['loss']:.3f} → {losses[-1]['loss']:.3f} in {summary['seconds']:.0f} s; "
                  f"model in {summary['model_dir']}")
    return summary


@simtune_app.command("pretrain")
def simtune_pretrain(
    corpus: Path = typer.Option(..., "--corpus", help="FlashRAG corpus jsonl (id, contents) the simulator should know."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder; the model goes to OUT/model (then `simtune tune --model OUT/model`)."),
    model: str = ModelOpt,
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Continued pre-training on a corpus, before simulation tuning (simtune.pretrain.*: 375 steps x 8 = 10 epochs
    of a 300-article world): the simulator learns what the corpus says, as the paper's simulator knew
    Wikipedia, so it can write about entities it is not told of."""
    from .simtune.pretrain import pretrain_simulator

    if not corpus.exists():
        _fail(f"no corpus file {corpus}")
    summary = _train_simulator(model, _settings(config).simtune.pretrain, f"pre-training on {corpus}:",
                               lambda sft, m, tok: pretrain_simulator(model, corpus, out, sft=sft, model=m, tokenizer=tok))
    console.print(f"read {summary['articles']} articles, {summary['epochs']} epochs")


@simtune_app.command("tune")
def simtune_tune(
    data: Path = typer.Option(..., "--data", "-d", help="sft.jsonl from `simtune dataset`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder; the simulator goes to OUT/model."),
    model: str = ModelOpt,
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Fine-tune a simulator (TRL SFTTrainer, loss on the documents only; simtune.tune.*: steps, batch_size,
    learning_rate (default by model size: 1e-6 from 1B parameters up, as the paper), lora_r, trainable_layers,
    report_to); saves a folder any backend loads."""
    from .simtune.tune import tune_simulator

    _train_simulator(model, _settings(config).simtune.tune, "tuning",
                     lambda sft, m, tok: tune_simulator(model, data, out, sft=sft, model=m, tokenizer=tok))


@simtune_app.command("check")
def simtune_check(
    samples: Path = typer.Option(..., "--samples", "-s", help="Held-out searches (heldout.jsonl from `simtune dataset`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the report."),
    sim_model: Optional[str] = typer.Option(None, "--sim-model", help="The simulator to check (default: engine.sim_model)."),
    compare: Optional[str] = typer.Option(None, "--compare", help="Also check this model with the prompt-only style."),
    config: Optional[list[str]] = ConfigOpt,
) -> None:
    """Report a simulator's format validity, controllability (useful vs noisy), fidelity to the real engine and
    cost, on simtune.check_limit held-out searches (engine.sim_* settings: style, url, answer guard, top-k)."""
    from dataclasses import replace

    from .io import atomic_write_text
    from .simtune.check import check_simulator, report_markdown, write_check
    from .simtune.samples import read_samples

    cfg = _settings(config)
    held = read_samples(samples)[: cfg.simtune.check_limit]
    if not held:
        _fail(f"no searches in {samples}")
    try:
        sim = replace(cfg.engine, kind="simulated", sim_model=sim_model or cfg.engine.sim_model)
        runs = [("simulator", sim)] + ([("prompt-only", replace(sim, sim_model=compare, sim_url=None, sim_style="prompt"))]
                                       if compare else [])
    except ValueError as e:
        _fail(str(e))
    reports = {}
    for name, e_cfg in runs:
        eng = _build(e_cfg)
        with console.status(f"checking {name} ({e_cfg.sim_model}, {e_cfg.sim_style}) on {len(held)} queries…"):
            result = check_simulator(eng, held, k=e_cfg.topk)
        write_check(result, out, name)
        reports[f"{name} ({e_cfg.sim_style})"] = result["report"]
    md = report_markdown(reports)
    atomic_write_text(out / "report.md", md)
    console.print(md, markup=False, highlight=False)


export_app = typer.Typer(help="Write training data for other training systems.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("verl")
def export_verl(
    data: str = DataOpt,
    out: Path = typer.Option(..., "--out", "-o", help="The parquet file to write (e.g. train.parquet)."),
    split: str = typer.Option("train", "--split", help="Split for folders and hub datasets; also stored in extra_info."),
    limit: Optional[int] = LimitOpt,
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
