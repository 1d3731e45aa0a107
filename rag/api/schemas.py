"""Request and response models of the HTTP API, and the OpenAPI descriptions of its error and stream responses.

These are the API's own schemas, kept apart from the domain types in `rag.types`. Request bodies are strict:
JSON types as the schema documents them, no lax coercion.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag.feedback import FeedbackEntry
from rag.types import RetrievalMode

MODEL_ID = "rag-notes"

# Request bodies take JSON types as the schema documents them: no lax coercion ({"full": 0.0}, {"top_k": "3"}).
STRICT = ConfigDict(strict=True)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HistoryTurn(BaseModel):
    model_config = STRICT

    role: Literal["user", "assistant"]
    content: str


class AskRequest(BaseModel):
    model_config = STRICT

    question: str
    history: list[HistoryTurn] = Field(default_factory=list, max_length=50)
    top_k: int | None = Field(None, ge=1, le=50)
    mode: RetrievalMode = "hybrid"
    stream: bool = False
    explain: bool = False


class SearchRequest(BaseModel):
    model_config = STRICT

    query: str
    top_k: int | None = Field(None, ge=1, le=50)
    mode: RetrievalMode = "hybrid"
    explain: bool = False
    expansion: bool | None = None


class SearchResponse(BaseModel):
    query: str
    mode: str
    gate: dict[str, Any]
    hits: list[dict[str, Any]]
    timings: dict[str, float]
    explanation: dict[str, Any] | None = None


class IngestRequest(BaseModel):
    model_config = STRICT

    full: bool = False


class JobProgress(BaseModel):
    done: int
    total: int


class JobResponse(BaseModel):
    job_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    full: bool
    progress: dict[str, JobProgress]
    summary: dict[str, Any] | None = None
    error: ErrorDetail | None = None
    reloaded: bool = False
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None


class UploadResponse(BaseModel):
    doc_id: str
    bytes: int
    encoding: str
    replaced: bool


class FeedbackRequest(BaseModel):
    model_config = STRICT

    answer_id: str | None = Field(None, max_length=200)
    question: str | None = Field(None, max_length=10_000)
    rating: Literal["up", "down", 1, -1]
    comment: str | None = Field(None, max_length=5_000)

    @field_validator("rating", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # true == 1 would otherwise match the literal 1
            raise ValueError("rating must be 'up', 'down', 1 or -1")
        return value


class FeedbackList(BaseModel):
    feedback: list[FeedbackEntry]


class ChatContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ChatContentPart] | None = None


class ChatRequest(BaseModel):
    """The subset of the OpenAI chat-completions request we use; other fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = MODEL_ID
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, int]
    citations: list[dict[str, Any]] = Field(default_factory=list)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = MODEL_ID


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 409, 413, 422, 500, 503)
}
# Streaming routes answer 200 with JSON or, when asked to stream, server-sent events (schema: one event).
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or server-sent events when streaming is requested",
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
                }
            }
        },
    }
}
