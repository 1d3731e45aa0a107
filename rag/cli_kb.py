"""`rag kb list|create|info|rename|delete`: the knowledge bases of the data dir, through the registry."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rag.config import Settings
from rag.errors import IndexNotReady, InvalidInput

if TYPE_CHECKING:  # the registry imports the index package: loaded only when a `kb` command runs
    from rag.knowledge_bases import KnowledgeBase, KnowledgeBaseRegistry

kb_app = typer.Typer(
    no_args_is_help=True, help="Knowledge bases: separate bodies of notes, each with its own index."
)
console = Console(stderr=True)
out = Console(markup=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (one line).")]


def _registry(ctx: typer.Context) -> KnowledgeBaseRegistry:
    from rag.knowledge_bases import KnowledgeBaseRegistry

    settings: Settings = ctx.obj
    return KnowledgeBaseRegistry(settings)


def describe(registry: KnowledgeBaseRegistry, kb: KnowledgeBase) -> dict[str, Any]:
    """What `info` and `list` show of one knowledge base: its folders, backend, overrides and index figures."""
    settings = registry.settings_for(kb.name)
    row: dict[str, Any] = {
        "name": kb.name,
        "default": kb.name == registry.settings.default_kb,
        "corpus": str(registry.corpus_dir(kb)),
        "index": str(settings.index_dir),
        "backend": settings.index_backend,
        "overrides": kb.overrides,
        "version": None,
        "documents": None,
        "chunks": None,
        "embedder": None,
        "index_error": None,
    }
    try:
        manifest = _manifest(settings)
    except IndexNotReady as exc:  # a damaged index is reported in its row, not as a failed command
        row["index_error"] = exc.message
        return row
    if manifest is not None:
        row |= {
            "version": manifest.version,
            "documents": manifest.counts.get("documents"),
            "chunks": manifest.counts.get("chunks"),
            "embedder": manifest.embed_model_id,
        }
    return row


def _manifest(settings: Settings):
    """The published manifest of a knowledge base's index, or None when nothing is published yet."""
    from rag.index import open_store

    return open_store(settings).published_manifest()  # Milvus: IndexNotReady when it cannot be reached


def _figure(value: object) -> str:
    return "-" if value is None else str(value)


@kb_app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every knowledge base with its notes folder and index figures; `*` marks the default (RAG_DEFAULT_KB)."""
    registry = _registry(ctx)
    rows = [describe(registry, kb) for kb in registry.list()]
    if as_json:
        print(json.dumps({"kbs": rows}, ensure_ascii=False))
        return
    table = Table(title="knowledge bases")
    for col, justify in (("name", "left"), ("documents", "right"), ("chunks", "right"), ("backend", "left"),
                         ("notes", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in rows:
        documents = "damaged" if row["index_error"] else _figure(row["documents"])
        table.add_row(("* " if row["default"] else "  ") + row["name"], documents, _figure(row["chunks"]),
                      row["backend"], row["corpus"])
    out.print(table)


@kb_app.command()
def info(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """One knowledge base: notes folder, index directory, backend, published version, counts, overrides."""
    registry = _registry(ctx)
    row = describe(registry, registry.get(name))
    if as_json:
        print(json.dumps(row, ensure_ascii=False))
        return
    table = Table(title=f"knowledge base {name}", show_header=False)
    for key in ("corpus", "index", "backend", "version", "documents", "chunks", "embedder"):
        table.add_row(key, _figure(row[key]) if key != "version" or row[key] else "not ingested yet")
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(row["overrides"].items()))
    table.add_row("overrides", overrides or "none")
    if row["index_error"]:
        table.add_row("index error", row["index_error"])
    out.print(table)


@kb_app.command()
def create(
    ctx: typer.Context,
    name: str,
    corpus: Annotated[
        Path | None, typer.Option("--corpus", help="An existing notes folder (default: a new one under the data dir).")
    ] = None,
    chunk_size: Annotated[int | None, typer.Option("--chunk-size", help="Override RAG_CHUNK_SIZE.")] = None,
    chunk_overlap: Annotated[int | None, typer.Option("--chunk-overlap", help="Override RAG_CHUNK_OVERLAP.")] = None,
    embed_model: Annotated[str | None, typer.Option("--embed-model", help="Override RAG_EMBED_MODEL.")] = None,
    index_backend: Annotated[
        str | None, typer.Option("--index-backend", help="Override RAG_INDEX_BACKEND (local | milvus).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a knowledge base; then put notes in its folder and run `rag ingest --kb NAME`."""
    given = {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "embed_model": embed_model,
             "index_backend": index_backend}
    registry = _registry(ctx)
    kb = registry.create(name, corpus=corpus, overrides={k: v for k, v in given.items() if v is not None})
    row = describe(registry, kb)
    if as_json:
        print(json.dumps(row, ensure_ascii=False))
        return
    out.print(f"created knowledge base {kb.name}")
    out.print(f"notes:  {row['corpus']}" + ("  (put your notes here)" if kb.owns_corpus else ""))
    out.print(f"index:  {row['index']}")
    out.print(f"then:   rag ingest --kb {kb.name}")


@kb_app.command()
def rename(ctx: typer.Context, name: str, new_name: str) -> None:
    """Give a knowledge base another name; its notes and index stay where they are."""
    kb = _registry(ctx).rename(name, new_name)
    out.print(f"renamed knowledge base {name} to {kb.name}")


@kb_app.command()
def delete(
    ctx: typer.Context,
    name: str,
    delete_notes: Annotated[
        bool, typer.Option("--delete-notes", help="Also delete the notes folder the registry made for it.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a knowledge base and its index; its notes stay unless --delete-notes. Refused for the default
    knowledge base and while its ingest runs."""
    registry = _registry(ctx)
    kb = registry.get(name)  # an unknown name fails before the question
    if not yes:
        what = "its index and its notes" if delete_notes else "its index (the notes stay)"
        if not sys.stdin.isatty():
            raise InvalidInput(f"deleting knowledge base {name!r} removes {what}: pass --yes to confirm")
        typer.confirm(f"Delete knowledge base {name!r}, {what}?", abort=True)
    registry.delete(kb.name, delete_notes=delete_notes)
    kept = "" if delete_notes or kb.corpus is None else f"; the notes stay in {kb.corpus}"
    out.print(f"deleted knowledge base {name}{kept}")
