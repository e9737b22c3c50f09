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
SimStyleOpt = typer.Option("sft", "--sim-style", help="Simulator prompt: 'sft' (tuned simulator) or 'prompt' (few-shot).")


def engine_config(engine, corpus, url, topk, sim_model, sim_url, sim_style, noise=None, token=None, seed=0) -> EngineConfig:
    if engine not in ENGINE_KINDS:
        _fail(f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_KINDS)}")
    cfg = EngineConfig(
        kind=engine, topk=topk, corpus=corpus, url=url, sim_model=sim_model, sim_url=sim_url, sim_style=sim_style,
        token=token, seed=seed,
    )
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
) -> None:
    """Print what an engine returns for a query (real or simulated, useful or noisy)."""
    from .engines import SearchRequest

    cfg = engine_config(engine, corpus, url, topk, sim_model, sim_url, sim_style)
    req = SearchRequest(query, question=question, golden_answers=answer or [], noise=_noise(noise))
    with _build(cfg) as eng:
        result = eng.search([req], topk=topk)[0]
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
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
    if result.error:
        console.print(f"[red]engine error:[/red] {result.error}")
    if result.repaired:
        console.print(f"[yellow]{result.repaired} document(s) repaired or padded by the parser[/yellow]")


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
) -> None:
    """Run a Search-R1 compatible POST /retrieve server in front of any engine."""
    from .server import serve as run

    cfg = engine_config(engine, corpus, url, topk, sim_model, sim_url, sim_style, noise=_noise(noise))
    eng = _build(cfg)
    run(eng, host=host, port=port, token=token, default_topk=topk)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
