"""The `rag` command line. Each command parses its options, calls the core and formats the result."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rag.config import Settings
from rag.errors import InvalidInput, RagError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Question answering over your notes.")
console = Console(stderr=True)
out = Console(markup=False)  # stdout shows note text: "[b,h,w,c]" is data, not Rich markup

ModeOpt = Annotated[str, typer.Option("--mode", help="hybrid | bm25 | dense")]
KOpt = Annotated[int | None, typer.Option("--k", "-k", help="How many passages.")]


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj


def _nonempty(question: str) -> str:
    """Reject an empty question before any model is loaded (the engine checks it again)."""
    if not question.strip():
        raise InvalidInput("the question is empty")
    return question


def _mode(mode: str) -> str:
    if mode not in ("hybrid", "bm25", "dense"):
        raise RagError(f"unknown mode {mode!r}: use hybrid, bm25 or dense")
    return mode


@app.callback()
def _main(ctx: typer.Context, verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Settings()


@app.command()
def model(ctx: typer.Context) -> None:
    """Prepare the configured embedder (converting the default on first use); print its directory or id."""
    from rag.embedding import prepare_embed_model

    print(prepare_embed_model(_settings(ctx)))


@app.command()
def ingest(
    ctx: typer.Context,
    corpus: Annotated[Path | None, typer.Option(help="Corpus directory (default RAG_CORPUS_DIR).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Rebuild everything, re-embed every chunk.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep running; re-ingest when notes change.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary as the last line.")] = False,
) -> None:
    """Ingest the notes into the index (incremental; atomic publish)."""
    from ingest.pipeline import run_ingest

    settings = _settings(ctx)
    corpus_dir = corpus or settings.corpus_dir

    def once(full_run: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description:<11}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=as_json, transient=False,
        ) as bars:
            tasks: dict[str, int] = {}

            def report(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bars.add_task(stage, total=max(total, 1))
                bars.update(tasks[stage], completed=done if total else 1, total=max(total, 1))

            summary = run_ingest(settings, full=full_run, corpus_dir=corpus_dir, progress=report)
        if as_json:
            print(json.dumps(summary.to_dict(), ensure_ascii=False))
        else:
            _print_ingest_summary(summary)

    once(full)
    if watch:
        from ingest.watch import watch_corpus

        console.print(f"watching {corpus_dir} for changes (Ctrl-C to stop)")

        def on_change() -> None:
            try:
                once(False)
            except RagError as exc:
                console.print(f"[red]ingest failed:[/red] {escape(exc.message)}")

        with contextlib.suppress(KeyboardInterrupt):
            watch_corpus(Path(corpus_dir), on_change)


def _print_ingest_summary(summary) -> None:
    table = Table(title="ingest", show_header=False)
    for key in ("added", "changed", "removed"):
        items = getattr(summary, key)
        table.add_row(key, f"{len(items)} " + (", ".join(items[:5]) + (" …" if len(items) > 5 else "")))
    table.add_row("skipped", str(len(summary.skipped)))
    for s in summary.skipped:
        table.add_row("", f"{s.path}: {s.reason}")
    table.add_row("documents", str(summary.documents))
    table.add_row("chunks", str(summary.chunks))
    table.add_row("embedded", f"{summary.embedded} (reused {summary.reused})")
    table.add_row("alias groups", str(summary.alias_groups))
    table.add_row("published", f"{summary.version}" if summary.published else f"no change ({summary.version})")
    table.add_row("seconds", f"{summary.seconds:.2f}")
    out.print(table)


def _engine(settings: Settings):
    from rag.engine import Engine

    engine = Engine(settings)
    engine.load()
    return engine


@app.command()
def search(
    ctx: typer.Context,
    query: str,
    mode: ModeOpt = "hybrid",
    k: KOpt = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show tokens, expansions, rankings, gate.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ranked passages for a query, with their scores (no answer generation)."""
    query, mode = _nonempty(query), _mode(mode)  # cheap checks first: loading the engine takes seconds
    result = _engine(_settings(ctx)).search(query, top_k=k, mode=mode, explain=explain)
    if as_json:
        print(json.dumps(_search_json(result), ensure_ascii=False))
        return
    table = Table(title=f"{result.mode} · gate {result.gate.score:.2f} ({'answerable' if result.gate.answerable else 'not covered'})")
    for col in ("#", "score", "bm25", "dense", "document › heading", "text"):
        table.add_column(col)
    for h in result.hits:
        table.add_row(
            str(h.rank), f"{h.score:.4f}",
            f"{h.bm25_rank or '-'}", f"{h.dense_rank or '-'}",
            f"{h.document_title} › {' › '.join(h.chunk.heading_path)}",
            h.chunk.text[:120].replace("\n", " "),
        )
    out.print(table)
    if explain and result.explanation:
        out.print_json(json.dumps(result.explanation, ensure_ascii=False))


def _search_json(result) -> dict:
    return {
        "query": result.query,
        "mode": result.mode,
        "gate": asdict(result.gate),
        "hits": [asdict(h) for h in result.hits],
        "timings": result.timings,
        "explanation": result.explanation,
    }


@app.command()
def ask(
    ctx: typer.Context,
    question: str,
    mode: ModeOpt = "hybrid",
    k: KOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Answer a question from the notes, with a sources table."""
    question, mode = _nonempty(question), _mode(mode)
    answer = _engine(_settings(ctx)).ask(question, top_k=k, mode=mode)
    if as_json:
        print(json.dumps(asdict(answer), ensure_ascii=False))
        return
    if answer.fallback_reason:
        out.print(answer.fallback_reason, style="yellow")
    out.print(answer.text)
    if answer.citations:
        table = Table(title="sources")
        for col in ("[n]", "document", "heading", "chars", "snippet"):
            table.add_column(col)
        for c in answer.citations:
            table.add_row(f"[{c.number}]", c.document, " › ".join(c.heading_path), f"{c.start}–{c.end}", c.snippet[:80])
        out.print(table)
    out.print(f"{answer.backend} · {answer.timings.get('total_ms', 0):.0f} ms", style="dim")


@app.command(name="eval")
def eval_(
    ctx: typer.Context,
    qa: Annotated[Path, typer.Option("--qa", help="Question file (JSONL, eval/README format).")],
    mode: ModeOpt = "hybrid",
    no_expansion: Annotated[bool, typer.Option("--no-expansion", help="Turn alias expansion off.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    details: Annotated[bool, typer.Option("--details", help="Print one row per question.")] = False,
) -> None:
    """Retrieval and answer quality on a question file: hit@k, MRR, refusals, citations, latency."""
    from rag.evaluation import evaluate, load_questions

    if not qa.is_file():
        raise RagError(f"question file not found: {qa}")
    settings = _settings(ctx)
    if no_expansion:  # the whole engine, so the answers follow the same retrieval as the rankings
        settings = settings.model_copy(update={"query_expansion": False})
    questions, mode = load_questions(qa), _mode(mode)  # a malformed file fails before the engine loads
    figures, rows = evaluate(_engine(settings), questions, mode=mode)
    if details:
        for r in rows:
            console.print(
                f"{r.id:5} ans={int(r.answerable)} hit={r.hit_rank} refused={int(r.refused)} "
                f"gate={r.gate_score:.2f} kw={r.keyword_coverage:.2f} cite={r.cited_correct}/{r.cited} {r.question[:40]}"
            )
    if as_json:
        print(json.dumps(figures))
        return
    table = Table(title=f"eval {qa.name} ({mode})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    out.print(table)


@app.command()
def glossary(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Alias groups found in the notes (and glossary.txt), used for query expansion."""
    from rag.index import IndexStore

    index = IndexStore(_settings(ctx).index_dir).load(verify=False)
    groups = index.alias_groups
    if as_json:
        print(json.dumps(groups, ensure_ascii=False))
        return
    for group in groups:
        out.print(" = ".join(group))
    console.print(f"{len(groups)} alias groups")


@app.command()
def bench(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes and few requests (about 2 minutes).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object, last line.")] = False,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the JSON, PNG and Markdown reports go.")] = Path(
        "benchmarks/results"
    ),
    max_chunks: Annotated[int, typer.Option("--max-chunks", help="Largest synthetic index to build.")] = 1_010_000,
) -> None:
    """Benchmark the embedder, ingest, retrieval up to ~1M chunks and /ask over HTTP; write reports."""
    from rag.bench.report import summary_tables
    from rag.bench.run import run_bench

    results = run_bench(
        _settings(ctx), quick=quick, out_dir=out_dir, max_chunks=max_chunks,
        progress=lambda message: console.print(f"[dim]bench:[/dim] {message}"),
    )
    for title, header, rows in summary_tables(results):
        table = Table(title=title)
        for col in header:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        out.print(table)
    console.print("reports: " + ", ".join(results["files"].values()))
    if as_json:
        print(json.dumps(results, ensure_ascii=False))


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default RAG_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RAG_PORT, 8000).")] = None,
) -> None:
    """Start the HTTP API (uvicorn)."""
    import uvicorn

    from rag.api import create_app

    settings = _settings(ctx)
    uvicorn.run(
        create_app(settings), host=host or settings.host, port=port or settings.port, log_level="info",
        access_log=False,  # the app logs every request itself, with its request id
    )


@app.command()
def ui(ctx: typer.Context, port: Annotated[int | None, typer.Option(help="Port (default 8501).")] = None) -> None:
    """Start the Streamlit chat UI (talks to the API at RAG_API_URL)."""
    import subprocess

    settings = _settings(ctx)
    app_path = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.port", str(port or settings.ui_port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
        "--server.fileWatcherType", "none",
    ]
    raise typer.Exit(subprocess.call(cmd))


def main() -> None:
    """Console-script entry point: run the app and translate our errors into one clear line."""
    try:
        app()
    except RagError as exc:
        console.print(f"[red]error:[/red] {escape(exc.message)}")
        sys.exit(2 if exc.status < 500 else 1)


if __name__ == "__main__":
    main()
