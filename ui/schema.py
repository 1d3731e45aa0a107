"""The shapes of the API's JSON as the UI reads them (TypedDicts: plain dicts at run time)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Mode = Literal["hybrid", "bm25", "dense"]
Rating = Literal["up", "down"]


class Citation(TypedDict):
    number: int
    doc_id: str
    document: str
    heading_path: list[str]
    chunk_id: str
    start: int
    end: int
    snippet: str
    score: float
    snippet_start: NotRequired[int | None]
    snippet_end: NotRequired[int | None]


class Answer(TypedDict):
    question: str
    text: str
    citations: list[Citation]
    refused: bool
    backend: str
    answer_id: str
    resolved_question: NotRequired[str]
    fallback_reason: NotRequired[str | None]
    uncited: NotRequired[bool]
    timings: NotRequired[dict[str, float]]
    explanation: NotRequired[dict[str, Any] | None]


class Turn(TypedDict):
    role: Literal["user", "assistant"]
    content: str


class DocumentInfo(TypedDict):
    doc_id: str
    title: str
    sha256: NotRequired[str]
    encoding: NotRequired[str]
    size_bytes: NotRequired[int]
    chunks: NotRequired[int]


class ChunkInfo(TypedDict):
    chunk_id: str
    heading_path: list[str]
    start: int
    end: int
    ordinal: NotRequired[int]


class DocumentDetail(TypedDict):
    doc_id: str
    title: str
    text: str
    chunks: list[ChunkInfo]


class IngestJob(TypedDict, total=False):
    job_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: dict[str, dict[str, int]]
    summary: dict[str, Any] | None
    error: Any


class Stats(TypedDict, total=False):
    ready: bool
    documents: int
    chunks: int
    embedder: str | None
    llm_backend: str
    last_ingest: dict[str, Any] | None
    version: str | None
    last_error: str | None
    max_upload_mb: float
    ingest_job: IngestJob | None


class FeedbackEntry(TypedDict):
    id: int
    created_at: str
    rating: Rating
    answer_id: str | None
    question: str | None
    comment: str | None


class ConversationInfo(TypedDict):
    id: str
    title: str
    knowledge_base: str
    created_at: str
    updated_at: str
    turns: int


class StoredTurn(TypedDict):
    id: int
    question: str
    answer: Answer
    answer_id: str
    created_at: str
    feedback: FeedbackEntry | None


class ConversationDetail(ConversationInfo):
    messages: list[StoredTurn]


StreamEvent = (
    tuple[Literal["citations"], list[Citation]] | tuple[Literal["token"], str] | tuple[Literal["done"], Answer]
)


