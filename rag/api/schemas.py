"""Request and response models of the HTTP API, and the OpenAPI descriptions of its error and stream responses.

These are the API's own schemas, kept apart from the domain types in `rag.types`. Request bodies are strict:
JSON types as the schema documents them, no lax coercion. Every text field is bounded: fixed limits here, the
configurable ones (question, history) checked by the routes and written into the OpenAPI document by
`rag.api.docs`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from rag.feedback import FeedbackEntry
from rag.knowledge_bases import NAME_PATTERN
from rag.types import RetrievalMode

MODEL_ID = "rag-notes"  # the model id advertised before knowledge bases: an alias of the default knowledge base

# Request bodies take JSON types as the schema documents them: no lax coercion ({"full": 0.0}, {"top_k": "3"}).
# Patterns use Python's `re`, whose \s is str.isspace(): the same whitespace as the service's str.strip().
STRICT = ConfigDict(strict=True, regex_engine="python-re")

# The pydantic error type of text holding a lone UTF-16 surrogate; the API answers it 400 invalid_input.
UNPAIRED_SURROGATE = "unpaired_surrogate"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(value: str) -> str:
    """JSON may escape a lone surrogate ("\\ud800"); it is not a character, so no text may hold one."""
    if _SURROGATE.search(value):
        raise PydanticCustomError(UNPAIRED_SURROGATE, "the text holds an unpaired UTF-16 surrogate (not valid Unicode)")
    return value


def _whole_number(value: Any) -> Any:
    """JSON Schema counts 15.0 as an integer, so the API does too (strict mode would refuse it)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def checked_text(**constraints: Any) -> Any:
    """A string type with these Field constraints that refuses lone surrogates (constraints first, so they show
    in the JSON schema)."""
    return Annotated[str, Field(**constraints), AfterValidator(_no_surrogates)]


Text = checked_text()
# At least one character that is not whitespace, in both regex dialects: Python's \s (the service's str.strip())
# also counts \x1c-\x1f and \x85, JSON Schema's (ECMA-262) also counts \ufeff; this class is the same in both.
NOT_BLANK_PATTERN = r"[^\s\x1c-\x1f\x85]|\ufeff"
# A question or query: at least one character that is not whitespace (its longest length is a setting).
Question = checked_text(min_length=1, pattern=NOT_BLANK_PATTERN)
Name = checked_text(max_length=200)
PartType = checked_text(max_length=100)
KB_FIELD_HELP = (
    "Knowledge base (a name like `[a-z0-9][a-z0-9_-]{0,62}`, see GET /kbs); absent: RAG_DEFAULT_KB, normally `default`."
)
# A knowledge-base name: the schema states its form; a bad one is 400 invalid_input, an unknown one 404.
KB_PATTERN = f"^{NAME_PATTERN.pattern}$"
KbName = Annotated[checked_text(max_length=63, pattern=KB_PATTERN) | None, Field(description=KB_FIELD_HELP)]
TopK = Annotated[Annotated[int, Field(ge=1, le=50)] | None, BeforeValidator(_whole_number)]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HistoryTurn(BaseModel):
    model_config = STRICT

    role: Literal["user", "assistant"]
    content: Text


# Search filters: documents carrying every tag (front matter `tags`, Obsidian #tags; "ml" also matches "ml/nlp"),
# and documents whose path (doc_id) starts with the prefix ("vault/projects/").
Tags = Annotated[list[Annotated[Text, Field(min_length=1, max_length=100)]], Field(max_length=20)]
PathPrefix = Annotated[Text, Field(max_length=500)] | None
TAGS_HELP = 'Only documents with every one of these tags ("ml" also matches "ml/nlp").'
PATH_PREFIX_HELP = 'Only documents whose path starts with this ("vault/projects/").'


class AskRequest(BaseModel):
    model_config = STRICT

    question: Question
    history: list[HistoryTurn] = Field(default_factory=list, max_length=50)
    top_k: TopK = None
    mode: RetrievalMode = "hybrid"
    stream: bool = False
    explain: bool = False
    tags: Tags = Field(default_factory=list, description=TAGS_HELP)
    path_prefix: PathPrefix = Field(None, description=PATH_PREFIX_HELP)
    kb: KbName = None


class SearchRequest(BaseModel):
    model_config = STRICT

    query: Question
    top_k: TopK = None
    mode: RetrievalMode = "hybrid"
    explain: bool = False
    expansion: bool | None = None
    tags: Tags = Field(default_factory=list, description=TAGS_HELP)
    path_prefix: PathPrefix = Field(None, description=PATH_PREFIX_HELP)
    kb: KbName = None


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
    kb: KbName = None


class JobProgress(BaseModel):
    done: int
    total: int


class JobResponse(BaseModel):
    job_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    full: bool
    kb: str = Field("default", description="The knowledge base the job ingests.")
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
    encoding: str  # "binary" for PDF and Word files
    replaced: bool
    format: str | None = None  # the converter that will read it: markdown, text, pdf, docx, html, ...


class FeedbackRequest(BaseModel):
    model_config = STRICT

    answer_id: Name | None = None
    question: checked_text(max_length=10_000) | None = None
    rating: Literal["up", "down", 1, -1]
    comment: checked_text(max_length=5_000) | None = None
    kb: KbName = None

    @field_validator("rating", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # true == 1 would otherwise match the literal 1
            raise ValueError("rating must be 'up', 'down', 1 or -1")
        return _whole_number(value)


class FeedbackList(BaseModel):
    feedback: list[FeedbackEntry]


_NOT_BLANK: dict[str, Any] = {"type": "string", "pattern": NOT_BLANK_PATTERN}
# At least one user message has text (a string, or a text part, with a character that is not whitespace).
_USER_MESSAGE_WITH_TEXT: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"const": "user"},
        "content": {
            "anyOf": [
                _NOT_BLANK,
                {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {"type": {"enum": ["text", "input_text"]}, "text": _NOT_BLANK},
                    },
                },
            ]
        },
    },
}


class ChatContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: PartType
    text: Text | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Text | Annotated[list[ChatContentPart], Field(max_length=100)] | None = None


class ChatRequest(BaseModel):
    """The subset of the OpenAI chat-completions request we use; other fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: Name = Field(
        MODEL_ID,
        description=f"The knowledge base to answer from (GET /v1/models lists them); `{MODEL_ID}` is the default one.",
    )
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=200,
        description="The last user message with text is the question; earlier user and assistant messages are the history.",
        json_schema_extra={"contains": _USER_MESSAGE_WITH_TEXT},
    )
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
    """A knowledge base, as an OpenAI model."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = MODEL_ID


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class KbOverrides(BaseModel):
    """The settings a knowledge base may have of its own (the rest are the install's)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    chunk_size: Annotated[Annotated[int, Field(ge=100, le=4000)] | None, BeforeValidator(_whole_number)] = None
    chunk_overlap: Annotated[Annotated[int, Field(ge=0, le=1000)] | None, BeforeValidator(_whole_number)] = None
    embed_model: checked_text(min_length=1, max_length=500) | None = None
    embed_query_prompt: checked_text(max_length=200) | None = None
    embed_passage_prompt: checked_text(max_length=200) | None = None
    index_backend: Literal["local", "milvus"] | None = None


class KbCreate(BaseModel):
    # no other fields: in particular no folder of the server (`rag kb create --corpus` is for that)
    model_config = ConfigDict(strict=True, regex_engine="python-re", extra="forbid")

    name: checked_text(max_length=63, pattern=KB_PATTERN) = Field(description="`[a-z0-9][a-z0-9_-]{0,62}`")
    overrides: KbOverrides = Field(
        default_factory=KbOverrides, description="Settings of its own. Its notes folder is made under the data dir."
    )


class KbRename(BaseModel):
    model_config = STRICT

    name: checked_text(max_length=63, pattern=KB_PATTERN) = Field(description="The new name.")


class KbSummary(BaseModel):
    name: str
    default: bool
    loaded: bool = Field(description="Its index is in memory (loaded on first use, unloaded when idle).")
    version: str | None = None
    documents: int | None = Field(None, description="Counts of the published index (null before the first ingest).")
    chunks: int | None = None
    corpus: str | None = Field(
        None, description="Its notes folder relative to the data dir, when the registry made it there; "
        "a folder elsewhere on the server is not shown."
    )
    managed_corpus: bool = Field(description="The notes folder was made by the service (delete_notes may remove it).")
    created: float
    overrides: dict[str, Any] = Field(default_factory=dict)


class KbList(BaseModel):
    kbs: list[KbSummary]
    default: str
    max_kbs: int


class KbDetail(KbSummary):
    ingest_job: JobResponse | None = None
    stats: dict[str, Any] | None = Field(None, description="What GET /stats says of it, when it is loaded.")


class DocumentDeleted(BaseModel):
    doc_id: str
    kb: str
    deleted: bool
    job: JobResponse = Field(description="The re-ingest job started to drop the note from the index.")


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
