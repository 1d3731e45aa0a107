"""The `rag` command line. Each command parses its options, calls the core and formats the result."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rag.cli_kb import kb_app
from rag.config import Settings, load_settings
from rag.errors import InvalidInput, RagError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Question answering over your notes.")
console = Console(stderr=True)
out = Console(markup=False)  # stdout shows note text: "[b,h,w,c]" is data, not Rich markup
app.add_typer(kb_app, name="kb")  # rag kb list|create|info|rename|delete (rag/cli_kb.py)

ModeOpt = Annotated[str, typer.Option("--mode", help="hybrid | bm25 | dense")]
KOpt = Annotated[int | None, typer.Option("--k", "-k", help="How many passages.")]
KbOpt = Annotated[str | None, typer.Option("--kb", help="Knowledge base (default RAG_DEFAULT_KB); see `rag kb list`.")]


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj


def _kb_settings(ctx: typer.Context, kb: str | None) -> Settings:
    """The settings of knowledge base `kb` (RAG_DEFAULT_KB when None): its notes, its index, its overrides."""
    from rag.knowledge_bases import KnowledgeBaseRegistry

    return KnowledgeBaseRegistry(_settings(ctx)).settings_for(kb)


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
    ctx.obj = load_settings()  # a refused value is one clear line (RagError), not a traceback


@app.command()
def model(ctx: typer.Context, kb: KbOpt = None) -> None:
    """Prepare the configured embedder (converting the default on first use); print its directory or id."""
    from rag.embedding import prepare_embed_model

    print(prepare_embed_model(_kb_settings(ctx, kb) if kb else _settings(ctx)))


@app.command()
def ingest(
    ctx: typer.Context,
    corpus: Annotated[Path | None, typer.Option(help="Corpus directory (default RAG_CORPUS_DIR).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Rebuild everything, re-embed every chunk.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep running; re-ingest when notes change.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary as the last line.")] = False,
    kb: KbOpt = None,
) -> None:
    """Ingest the notes into the index (incremental; atomic publish)."""
    from ingest.pipeline import run_ingest

    settings = _kb_settings(ctx, kb)
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


LocalOpt = Annotated[
    bool, typer.Option("--local", help="Load the index in this process even when the API at RAG_API_URL answers.")
]


def _remote(settings: Settings, local: bool, kb: str | None):
    """The running API when it answers /readyz (and --local is not given), else None. The API checks `kb`
    against its own registry (it may be on another machine); its form is checked here first."""
    if kb is not None:
        from rag.knowledge_bases import check_name

        check_name(kb)
    if local:
        return None
    from rag.remote import RemoteApi

    return RemoteApi.if_ready(settings)


@app.command()
def search(
    ctx: typer.Context,
    query: str,
    mode: ModeOpt = "hybrid",
    k: KOpt = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show tokens, expansions, rankings, gate.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    local: LocalOpt = False,
    kb: KbOpt = None,
) -> None:
    """Ranked passages for a query, with their scores (no answer generation). Uses the running API when
    RAG_API_URL answers, else loads the index here."""
    from rag.cli_output import print_search

    query, mode = _nonempty(query), _mode(mode)  # cheap checks first: loading the engine takes seconds
    remote = _remote(_settings(ctx), local, kb)
    if remote is not None:
        with contextlib.closing(remote):
            data = remote.search(query, top_k=k, mode=mode, explain=explain, kb=kb)
        console.print(f"[dim]via the API at {escape(remote.url)}[/dim]")
    else:
        data = _search_json(_engine(_kb_settings(ctx, kb)).search(query, top_k=k, mode=mode, explain=explain))
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    print_search(out, data, explain)


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
    explain: Annotated[
        bool, typer.Option("--explain", help="Also show the reader's verdict and its top sentences, with scores.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    local: LocalOpt = False,
    kb: KbOpt = None,
) -> None:
    """Answer a question from the notes, with a sources table. Uses the running API when RAG_API_URL answers
    /readyz (seconds faster: no model to load), else loads the index here."""
    from rag.cli_output import print_answer

    question, mode = _nonempty(question), _mode(mode)
    remote = _remote(_settings(ctx), local, kb)
    if remote is not None:
        with contextlib.closing(remote):
            answer = remote.ask(question, top_k=k, mode=mode, explain=explain, kb=kb)
        via = f"via the API at {remote.url}"
    else:
        engine = _engine(_kb_settings(ctx, kb))
        answer, via = asdict(engine.ask(question, top_k=k, mode=mode, explain=explain)), "in process"
    if as_json:
        console.print(f"[dim]{escape(via)}[/dim]")
        print(json.dumps(answer, ensure_ascii=False))
        return
    print_answer(out, answer, via, explain=explain)


@app.command(name="eval")
def eval_(
    ctx: typer.Context,
    qa: Annotated[Path, typer.Option("--qa", help="Question file (JSONL, eval/README format).")],
    mode: ModeOpt = "hybrid",
    no_expansion: Annotated[bool, typer.Option("--no-expansion", help="Turn alias expansion off.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    details: Annotated[bool, typer.Option("--details", help="Print one row per question.")] = False,
    kb: KbOpt = None,
) -> None:
    """Retrieval and answer quality on a question file: hit@k, MRR, refusals, citations, latency."""
    from rag.evaluation import evaluate, load_questions, metrics_by_kind

    if not qa.is_file():
        raise RagError(f"question file not found: {qa}")
    settings = _kb_settings(ctx, kb)
    if no_expansion:  # the whole engine, so the answers follow the same retrieval as the rankings
        settings = settings.model_copy(update={"query_expansion": False})
    questions, mode = load_questions(qa), _mode(mode)  # a malformed file fails before the engine loads
    figures, rows = evaluate(_engine(settings), questions, mode=mode)
    if details:
        for r in rows:
            console.print(
                f"{r.id:5} ans={int(r.answerable)} hit={r.hit_rank} refused={int(r.refused)} first={int(r.answer_hit)} "
                f"gate={r.gate_score:.2f} kw={r.keyword_coverage:.2f} cite={r.cited_correct}/{r.cited} {r.question[:40]}"
            )
    by_kind = metrics_by_kind(rows)
    if as_json:
        print(json.dumps({**figures, "by_kind": by_kind} if by_kind else figures))
        return
    table = Table(title=f"eval {qa.name} ({mode})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    out.print(table)
    if by_kind:
        columns = sorted({k for figures_of in by_kind.values() for k in figures_of}, key=list(figures).index)
        kinds = Table(title="by kind")
        for col in ("kind", *columns):
            kinds.add_column(col, justify="right")
        for kind, figures_of in by_kind.items():
            kinds.add_row(kind, *(_cell(figures_of.get(c)) for c in columns))
        out.print(kinds)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@app.command()
def glossary(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False, kb: KbOpt = None) -> None:
    """Alias groups used for query expansion, each with where it came from (the notes, glossary.txt or both),
    and what glossary.txt's "- …" lines removed."""
    from rag.aliases import glossary_report
    from rag.cli_output import print_glossary
    from rag.index import open_store

    index = open_store(_kb_settings(ctx, kb)).load(verify=False)
    report = glossary_report(index.alias_groups, index.manifest.ingest_summary or {})
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    print_glossary(out, report)
    sources = report["sources"]
    console.print(
        f"{len(sources)} alias groups: {sources.count('notes')} from the notes, {sources.count('user')} from "
        f"glossary.txt, {sources.count('notes+user')} from both; {len(report['removed'])} removals"
    )


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
    """Start the HTTP API (uvicorn, with read and keep-alive timeouts)."""
    from rag.api import create_app
    from rag.api.server import serve as run_server
    from rag.engine import Engine
    from rag.feedback import open_feedback_store

    settings = _settings(ctx)
    engine = Engine(_kb_settings(ctx, None))  # the default knowledge base (RAG_DEFAULT_KB), loaded eagerly
    engine.load_reranker()  # a bad RAG_RERANK_MODEL stops here, in one line, before the server starts
    feedback = open_feedback_store(settings)  # so does a bad or unreachable RAG_FEEDBACK_URL
    app = create_app(settings, engine=engine, feedback=feedback)
    run_server(app, settings, host or settings.host, port or settings.port)


def ui_command(settings: Settings, *, host: str | None = None, port: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The Streamlit command line and environment for the UI: where it binds, and the API's URL and key taken
    from `settings` (so a value in `.env` reaches the UI, which reads only its environment)."""
    app_path = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    argv = [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.address", host or settings.ui_host, "--server.port", str(port or settings.ui_port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
        "--server.fileWatcherType", "none",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RAG_API_URL", "RAG_API_KEY")}
    env["RAG_API_URL"] = settings.api_url
    key = settings.api_key.get_secret_value().strip() if settings.api_key else ""
    if key:
        env["RAG_API_KEY"] = key
    return argv, env


@app.command()
def ui(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default RAG_UI_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RAG_UI_PORT, 8501).")] = None,
) -> None:
    """Start the Streamlit chat UI (talks to the API at RAG_API_URL, with RAG_API_KEY)."""
    argv, env = ui_command(_settings(ctx), host=host, port=port)
    sys.stdout.flush()
    sys.stderr.flush()
    # Streamlit replaces this process, so a signal sent to `rag ui` (Ctrl-C, SIGTERM) reaches the server itself
    os.execve(argv[0], argv, env)


def main() -> None:
    """Console-script entry point: run the app and translate our errors into one clear line."""
    try:
        app()
    except RagError as exc:
        console.print(f"[red]error:[/red] {escape(exc.message)}")
        sys.exit(2 if exc.status < 500 else 1)


if __name__ == "__main__":
    main()
