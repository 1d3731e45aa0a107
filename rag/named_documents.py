"""Notes a question names: "周会记录里数据库什么时候升级？", "In my git-notes, how do I undo a commit?". Pure functions.

A user who names a note means that note: its passages the retrieval found gain half the top score, so one
that ranked anywhere near the top goes first, and its weak passages do not push other notes' relevant ones
out. A name is a note's title or its file name without folders or suffix, compared without
case, spaces or separators ("git-notes" = "Git Notes" = "git_notes"), and only from MIN_NAME_CHARS letters or
MIN_NAME_CJK Chinese characters on, so that a note called "AI" or "笔记" is not named by every question.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import PurePosixPath

from rag.text import CJK_CHARS
from rag.types import Hit

MIN_NAME_CHARS = 5
MIN_NAME_CJK = 3  # a Chinese character says more than a letter: "周会记录" is a name, "笔记" is not
NAMED_BOOST = 0.5  # share of the top score a named note's passage gains
_SEPARATORS = re.compile(r"[\W_]+")
_CJK = re.compile(f"[{CJK_CHARS}]")


def name_key(text: str) -> str:
    """`text` as names are compared: NFKC, lower case, letters and digits only."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", text).lower())


def document_names(documents: Iterable[Mapping[str, str]]) -> dict[str, tuple[str, ...]]:
    """Each note's names (title and file stem) as `name_key`s, the short ones left out."""
    out: dict[str, tuple[str, ...]] = {}
    for doc in documents:
        doc_id = doc["doc_id"]
        keys = {name_key(doc.get("title") or ""), name_key(PurePosixPath(doc_id).stem)}
        out[doc_id] = tuple(sorted(k for k in keys if len(k) >= MIN_NAME_CHARS or len(_CJK.findall(k)) >= MIN_NAME_CJK))
    return out


def named_documents(question: str, names: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """The notes whose name the question contains; none when it names every note (no preference then)."""
    key = name_key(question)
    named = frozenset(doc_id for doc_id, keys in names.items() if any(k in key for k in keys))
    return frozenset() if len(named) == len(names) else named


def named_lifted(hits: Sequence[Hit], named: frozenset[str]) -> list[Hit]:
    """The hits re-ranked with the named notes' passages lifted by NAMED_BOOST x the top score."""
    if not named or not hits:
        return list(hits)
    lift = NAMED_BOOST * max(h.score for h in hits)
    lifted = [replace(h, score=h.score + lift) if h.chunk.doc_id in named else h for h in hits]
    return sorted(lifted, key=lambda h: -h.score)
