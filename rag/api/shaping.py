"""What the API sends back is safe to render: every text taken from the notes passes the reply sanitiser.

A note is data, and may hold HTML, `javascript:` links or markdown images; the extractive answer and the citation
snippets quote notes verbatim, and chat front ends render markdown. So answers (JSON, /ask events, chat
completions), citation snippets and titles, heading paths, search passages, document titles and glossary names
all pass `sanitize_reply`, the one LLM replies get, on their way out. Bare URLs are kept: they come from the notes
or were already checked against the passages. A document's full text (GET /documents/{doc_id}) stays verbatim,
because chunk and citation offsets index into it; it is data for the client to show as plain text.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rag.answer.llm import StreamCleaner, sanitize_reply
from rag.types import Answer, Citation


def safe_text(text: str) -> str:
    """`text` without HTML, script URLs, markdown links and images (bare URLs kept)."""
    return sanitize_reply(text, keep_urls=True) if text else text


def safe_strings(value: Any) -> Any:
    """Every string inside lists, tuples and dict values of `value`, made safe (for nested diagnostics)."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {key: safe_strings(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [safe_strings(item) for item in value]
    return value


def safe_citation(citation: Citation) -> Citation:
    return replace(
        citation,
        document=safe_text(citation.document),
        heading_path=tuple(safe_text(h) for h in citation.heading_path),
        snippet=safe_text(citation.snippet),
    )


def safe_answer(answer: Answer) -> Answer:
    """The answer with its text, echoed questions and citations made safe."""
    return replace(
        answer,
        question=safe_text(answer.question),
        text=safe_text(answer.text),
        resolved_question=safe_text(answer.resolved_question),
        citations=[safe_citation(c) for c in answer.citations],
        explanation=safe_strings(answer.explanation) if answer.explanation is not None else None,
    )


def safe_hit(hit: dict[str, Any]) -> dict[str, Any]:
    """A search hit (as a dict) with its passage, title and heading path made safe."""
    chunk = dict(hit["chunk"])
    for key in ("text", "index_text"):
        chunk[key] = safe_text(chunk[key])
    chunk["heading_path"] = [safe_text(h) for h in chunk["heading_path"]]
    shaped = {**hit, "chunk": chunk}
    if isinstance(hit.get("document_title"), str):
        shaped["document_title"] = safe_text(hit["document_title"])
    return shaped


def safe_document(document: dict[str, Any]) -> dict[str, Any]:
    """A document's metadata (listing or detail) with its title and chunk headings made safe; its text verbatim."""
    shaped = {**document, "title": safe_text(document["title"])}
    if isinstance(document.get("chunks"), list):  # the detail's chunks (the listing has a count)
        shaped["chunks"] = [
            {**chunk, "heading_path": [safe_text(h) for h in chunk["heading_path"]]} for chunk in document["chunks"]
        ]
    return shaped


def text_stream_cleaner() -> StreamCleaner:
    """Makes streamed answer text safe delta by delta: releases only what the whole text, made safe, begins with."""
    return StreamCleaner((), keep_urls=True, citations=False)
