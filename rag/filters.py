"""Search filters (document tags and a path prefix) and the link ends that /documents/{id} shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag.index import IndexBackend


def linked(titles: dict[str, str], doc_id: str) -> dict[str, Any]:
    """A link end for /documents/{id}: the document and its title, or the target as written when none matches."""
    return {"doc_id": doc_id, "title": titles.get(doc_id), "exists": doc_id in titles}


def document_matches(document: dict, tags: Sequence[str], path_prefix: str | None) -> bool:
    """Whether a listed document (`IndexBackend.documents()` row) has every tag (or a nested one: "ml" matches
    "ml/nlp") and a path starting with `path_prefix`."""
    if path_prefix and not document["doc_id"].startswith(path_prefix.lstrip("/")):
        return False
    have = document.get("tags") or []
    for tag in tags:
        wanted = tag.strip().lstrip("#").lower()
        if wanted and not any(t == wanted or t.startswith(wanted + "/") for t in have):
            return False
    return True


def filtered_rows(index: IndexBackend, tags: Sequence[str], path_prefix: str | None) -> set[int] | None:
    """The chunk rows of the documents a filter admits; None when there is no filter (every row)."""
    if not any(t.strip().lstrip("#") for t in tags) and not path_prefix:
        return None
    rows: set[int] = set()
    for document in index.documents():
        if document_matches(document, tags, path_prefix):
            rows.update(index.doc_rows(document["doc_id"]))
    return rows
