"""The link graph of a vault and the alias groups of front matter, over all loaded documents.

A wikilink names a note the way Obsidian resolves it: by file name without the suffix anywhere in the vault
("[[注意力机制]]"), or by a path from the vault root ("[[概念/注意力机制]]"); when several notes share the name,
the one nearest the linking note wins. Links only point at documents, so a loop (A links B, B links A, or a
note linking itself) is just two edges: nothing follows them.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from pathlib import PurePosixPath

from rag.types import Document


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name.strip()).lower()


def _without_suffix(doc_id: str) -> str:
    path = PurePosixPath(doc_id)
    return str(path.with_suffix("")) if path.suffix else doc_id


def resolve_links(documents: Sequence[Document]) -> list[Document]:
    """The documents with `links` as doc_ids where a document matches (else as written) and `backlinks` set."""
    by_name: dict[str, list[str]] = defaultdict(list)
    by_path: dict[str, str] = {}
    for doc in documents:
        by_name[_key(PurePosixPath(doc.doc_id).stem)].append(doc.doc_id)
        by_path[_key(_without_suffix(doc.doc_id))] = doc.doc_id
        by_path[_key(doc.doc_id)] = doc.doc_id

    def resolve(source: str, target: str) -> str | None:
        key = _key(target)
        if key in by_path:
            return by_path[key]
        candidates = by_name.get(_key(PurePosixPath(target).stem if "/" in target else target.removesuffix(".md")), [])
        if "/" in target:
            candidates = [c for c in candidates if _key(_without_suffix(c)).endswith(_key(target.removesuffix(".md")))]
        if not candidates:
            return None
        folder = PurePosixPath(source).parent.parts
        # nearest first: most leading folders in common with the source, then the shortest path
        return min(candidates, key=lambda c: (-_common(folder, PurePosixPath(c).parent.parts), len(c), c))

    outgoing: dict[str, tuple[str, ...]] = {}
    backlinks: dict[str, list[str]] = defaultdict(list)
    for doc in documents:
        if not doc.links:
            continue
        links = []
        for target in doc.links:
            resolved = resolve(doc.doc_id, target)
            links.append(resolved or target)
            if resolved is not None and resolved != doc.doc_id and doc.doc_id not in backlinks[resolved]:
                backlinks[resolved].append(doc.doc_id)
        outgoing[doc.doc_id] = tuple(dict.fromkeys(links))
    return [
        dataclasses.replace(
            doc,
            links=outgoing.get(doc.doc_id, doc.links),
            backlinks=tuple(sorted(backlinks.get(doc.doc_id, ()))),
        )
        if doc.links or doc.doc_id in backlinks
        else doc
        for doc in documents
    ]


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def alias_groups(documents: Sequence[Document]) -> list[list[str]]:
    """One group per document with front-matter aliases: its title (or file name) and the aliases."""
    groups = []
    for doc in documents:
        if doc.aliases:
            name = doc.title or PurePosixPath(doc.doc_id).stem
            groups.append([name, *(a for a in doc.aliases if a != name)])
    return groups
