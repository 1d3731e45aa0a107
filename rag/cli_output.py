"""How `rag ask`, `rag search` and `rag glossary` print, from the same JSON whether the answer came from the
running API or from the engine in process. Tables fit the terminal: a note is named by its file name, which
is never cut; the section and the passage give way (with "…") when the width runs out."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

MAX_WIDTH = 160  # wider tables only spread the passage thin
SOURCES = {"notes": "notes", "user": "glossary.txt", "notes+user": "notes + glossary.txt"}


def note_label(doc_id: str) -> str:
    """A short name for a note: its file name without folders or suffix ("deep-learning-glossary")."""
    return PurePosixPath(doc_id).stem or doc_id


def _section(path: list[str] | tuple[str, ...], title: str) -> str:
    parts = [p for p in path if p]
    if parts and parts[0].strip().lower() == (title or "").strip().lower():
        parts = parts[1:]  # the note's title heading says nothing the note's name does not
    return " › ".join(parts) or "-"


def _note_column(table: Table, labels: list[str], header: str = "note") -> None:
    table.add_column(header, no_wrap=True, overflow="ignore", min_width=max(map(len, labels), default=4))


def print_answer(out: Console, answer: dict[str, Any], via: str, *, explain: bool = False) -> None:
    """The answer, its sources table, then how it was made and where (and, with `explain`, the reader's view)."""
    if answer.get("fallback_reason"):
        out.print(answer["fallback_reason"], style="yellow")
    out.print(answer["text"])
    citations = answer.get("citations") or []
    if citations:
        labels = [note_label(c["doc_id"]) for c in citations]
        table = Table(title="sources", expand=True, width=min(out.width, MAX_WIDTH))
        table.add_column("[n]", no_wrap=True, min_width=max(len(f"[{c['number']}]") for c in citations))
        _note_column(table, labels)
        table.add_column("section", overflow="ellipsis", no_wrap=True, ratio=1, min_width=8)
        table.add_column("chars", no_wrap=True, min_width=max(len(f"{c['start']}–{c['end']}") for c in citations))
        table.add_column("snippet", overflow="ellipsis", no_wrap=True, ratio=2, min_width=8)
        for c, label in zip(citations, labels, strict=True):
            table.add_row(
                f"[{c['number']}]", label, _section(c.get("heading_path") or [], c.get("document", "")),
                f"{c['start']}–{c['end']}", " ".join(str(c.get("snippet", "")).split()),
            )
        out.print(table)
    total = (answer.get("timings") or {}).get("total_ms", 0) or 0
    out.print(f"{answer.get('backend', '')} · {total:.0f} ms · {via}", style="dim")
    reader = (answer.get("explanation") or {}).get("reader")
    if explain and reader:
        print_reader(out, reader)


def print_reader(out: Console, reader: dict[str, Any]) -> None:
    """The reader's verdict, then its top sentences: note, section, score and the sentence itself."""
    verdict = "answers" if reader.get("answerable") else "refuses"
    line = Text(
        f"reader {verdict}: probability {float(reader.get('probability', 0)):.3f}"
        f" (threshold {float(reader.get('threshold', 0)):.3f})"
    )
    if reader.get("reason"):
        line.append(f" · {reader['reason']}")
    if reader.get("question_types"):
        line.append(" · asks: " + ", ".join(reader["question_types"]), style="dim")
    out.print(line)
    rows = reader.get("top_sentences") or []
    if not rows:
        return
    labels = [note_label(str(r.get("doc_id") or r.get("document", ""))) for r in rows]
    table = Table(title="reader's top sentences", expand=True, width=min(out.width, MAX_WIDTH))
    table.add_column("[n]", no_wrap=True, min_width=3)
    table.add_column("score", no_wrap=True, min_width=5)
    _note_column(table, labels)
    table.add_column("section", overflow="ellipsis", no_wrap=True, ratio=1, min_width=8)
    table.add_column("sentence", overflow="fold", ratio=3, min_width=12)
    for r, label in zip(rows, labels, strict=True):
        table.add_row(
            f"[{r.get('passage', '?')}]", f"{float(r.get('score', 0)):.2f}", label,
            _section(r.get("heading_path") or [], str(r.get("document", ""))), " ".join(str(r.get("sentence", "")).split()),
        )
    out.print(table)


def print_search(out: Console, result: dict[str, Any], explain: bool) -> None:
    """Ranked passages with their scores and ranks in each retriever."""
    gate = result.get("gate") or {}
    verdict = "answerable" if gate.get("answerable") else "not covered"
    hits = result.get("hits") or []
    labels = [note_label(h["chunk"]["doc_id"]) for h in hits]
    title = f"{result.get('mode')} · gate {float(gate.get('score', 0)):.2f} ({verdict})"
    table = Table(title=title, expand=True, width=min(out.width, MAX_WIDTH))
    for col, width in (("#", 2), ("score", 6), ("bm25", 4), ("dense", 5)):
        table.add_column(col, no_wrap=True, min_width=width)
    _note_column(table, labels)
    table.add_column("section", overflow="ellipsis", no_wrap=True, ratio=1, min_width=8)
    table.add_column("text", overflow="ellipsis", no_wrap=True, ratio=2, min_width=8)
    for h, label in zip(hits, labels, strict=True):
        chunk = h["chunk"]
        table.add_row(
            str(h["rank"]), f"{float(h['score']):.4f}", f"{h.get('bm25_rank') or '-'}", f"{h.get('dense_rank') or '-'}",
            label, _section(chunk.get("heading_path") or [], h.get("document_title", "")),
            " ".join(str(chunk.get("text", ""))[:300].split()),
        )
    out.print(table)
    if explain and result.get("explanation"):
        out.print_json(json.dumps(result["explanation"], ensure_ascii=False))


def print_glossary(out: Console, report: dict[str, Any]) -> None:
    """Each group with where it came from, then what the user's "- …" lines removed."""
    groups, sources = report.get("groups") or [], report.get("sources") or []
    for group, source in zip(groups, sources, strict=False):
        line = Text(" = ".join(group))
        line.append(f"  [{SOURCES.get(source, source)}]", style="dim")
        out.print(line)
    for removed in report.get("removed") or []:
        line = Text("removed: ", style="yellow")
        line.append(" = ".join(removed.get("removed") or []))
        line.append(f"  (from {' = '.join(removed.get('group') or [])})", style="dim")
        out.print(line)
