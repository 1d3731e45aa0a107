"""Plain data types shared by ingest, retrieval, generation and the edges.

Everything here is a dataclass with no behaviour beyond small derived properties, so every layer can
import it without pulling in models, indexes or web frameworks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RetrievalMode = Literal["hybrid", "bm25", "dense"]

# File suffixes of notes, shared by the loader, the upload check and the watcher; ordered as messages list them.
NOTE_SUFFIXES = (".md", ".markdown", ".txt")
# Other files ingest converts to text (ingest.converters): PDF, Word, web pages.
CONVERTED_SUFFIXES = (".pdf", ".docx", ".html", ".htm")


@dataclass(frozen=True, slots=True)
class Document:
    """A note as loaded from the corpus: the decoded original text, kept verbatim for display."""

    doc_id: str  # the note's path relative to the corpus, POSIX separators ("sub/note.md")
    title: str  # first markdown heading, else the file name
    text: str  # decoded original text; chunk offsets index into this string
    sha256: str  # of the raw bytes on disk
    encoding: str  # "utf-8", "utf-8-sig", "gb18030", ...; "binary" for PDF and Word files
    size_bytes: int = 0
    mtime: float = 0.0
    # Set by a converter (PDF, Word, HTML, front matter, Obsidian); a plain note has none of them.
    converter: str = ""  # "pdf", "docx", "html", "obsidian", ...; "" for a plain .md/.txt note
    tags: tuple[str, ...] = ()  # lower-case, without "#"
    aliases: tuple[str, ...] = ()  # other names of the document (front matter `aliases`)
    links: tuple[str, ...] = ()  # doc_ids it links to ([[wikilinks]]); a target no note matches, as written
    backlinks: tuple[str, ...] = ()  # doc_ids of the documents linking to it
    page_starts: tuple[int, ...] = ()  # offset in `text` where page i+1 begins (PDF); empty without pages


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file under the corpus that was not ingested, and why."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable piece of a document.

    `text` is exactly `document.text[start:end]` (what the user sees and what citations point at);
    `index_text` is the cleaned text prefixed with the heading path (what BM25 and the embedder see).
    """

    chunk_id: str
    doc_id: str
    heading_path: tuple[str, ...]
    start: int
    end: int
    text: str
    index_text: str
    ordinal: int = 0  # position of the chunk inside its document
    page: int | None = None  # the page (from 1) `start` is on, for documents with pages (PDF)
    page_breaks: tuple[int, ...] = ()  # offsets in (start, end] where a later page begins

    def page_at(self, offset: int) -> int | None:
        """The page of a document offset inside this chunk (None for documents without pages)."""
        if self.page is None:
            return None
        return self.page + sum(1 for b in self.page_breaks if b <= offset)


@dataclass(slots=True)
class Hit:
    """A retrieved passage with the evidence for its rank.

    When adjacent chunks of one section are both retrieved they are merged: `chunk` then spans both and
    `chunk_ids` lists the originals.
    """

    chunk: Chunk
    score: float  # fused (or reranked) score used for the final order
    rank: int  # 1-based final rank
    bm25_score: float | None = None
    bm25_rank: int | None = None
    dense_score: float | None = None
    dense_rank: int | None = None
    rerank_score: float | None = None
    sentence_similarity: float | None = None  # its best sentence's similarity to the question (rag.sentence_ranking)
    chunk_ids: tuple[str, ...] = ()
    document_title: str = ""


@dataclass(frozen=True, slots=True)
class Citation:
    """One numbered source of an answer: where exactly in which note the cited text stands."""

    number: int
    doc_id: str
    document: str  # human-readable document title
    heading_path: tuple[str, ...]
    chunk_id: str
    start: int
    end: int
    snippet: str  # the cited sentence(s), verbatim from the note
    score: float
    snippet_start: int | None = None  # offsets of the snippet inside the note, when known
    snippet_end: int | None = None
    page: int | None = None  # the page the snippet starts on, for documents with pages (PDF)


@dataclass(slots=True)
class Answer:
    """What the answerer returns, for the CLI, the API and the UI alike."""

    question: str
    text: str
    citations: list[Citation] = field(default_factory=list)
    refused: bool = False
    backend: str = "extractive"  # "extractive" or "litellm:<model>"
    answer_id: str = ""
    resolved_question: str = ""  # the standalone question after follow-up resolution
    fallback_reason: str | None = None  # set when the LLM failed and the extractive answer stands in
    uncited: bool = False  # an LLM answer that carried no valid citation
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    explanation: dict | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier exchange of a conversation."""

    role: Literal["user", "assistant"]
    content: str
