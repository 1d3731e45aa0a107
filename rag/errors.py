"""The project's error family. Each entry point (CLI, API) translates these once."""

from __future__ import annotations

# The one remedy named by every "no usable index" message (CLI, API, logs): a full rebuild fixes a missing,
# damaged or incompatible index alike.
REPAIR_HINT = (
    'run `rag ingest --full`, with `--kb NAME` for a knowledge base other than the default '
    '(or POST /ingest with {"full": true, "kb": NAME})'
)


class RagError(Exception):
    """Base class: `code` is a stable machine-readable name, `status` the HTTP status it maps to."""

    code = "error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(RagError):
    code = "invalid_input"
    status = 400


class NotFound(RagError):
    code = "not_found"
    status = 404


class IndexNotReady(RagError):
    """No usable index: none built yet, or the one on disk failed its checks."""

    code = "index_not_ready"
    status = 503


class IndexCorrupted(IndexNotReady):
    code = "index_corrupted"


class IngestBusy(RagError):
    code = "ingest_busy"
    status = 409


class IngestFailed(RagError):
    code = "ingest_failed"
    status = 500


class ModelUnavailable(RagError):
    """The embedder (or reranker) cannot be prepared or loaded."""

    code = "model_unavailable"
    status = 503


class GenerationError(RagError):
    """The LLM backend failed (timeout, HTTP error, empty or malformed reply)."""

    code = "generation_failed"
    status = 502


# Raised by the HTTP edge only.
class Unauthorized(RagError):
    code = "unauthorized"
    status = 401


class AlreadyExists(RagError):
    code = "already_exists"
    status = 409


class PayloadTooLarge(RagError):
    code = "payload_too_large"
    status = 413


class Overloaded(RagError):
    """Every worker is busy and the wait queue is full: the client should retry after `retry_after` seconds."""

    code = "overloaded"
    status = 503
    retry_after = 1


class RequestTimeout(Overloaded):
    """An engine call ran over its time budget (`request_timeout_seconds`); its worker slot is given back."""

    code = "timeout"
    retry_after = 5


class CorpusUnavailable(RagError):
    """The corpus directory is missing or read-only, so uploads cannot be stored."""

    code = "corpus_unavailable"
    status = 503


class LimitExceeded(RagError):
    """A stored collection is full (conversations, turns of one conversation): delete or start anew."""

    code = "limit_exceeded"
    status = 409


class FeedbackUnavailable(RagError):
    """The feedback store named by RAG_FEEDBACK_URL cannot be used (bad URL, server unreachable, refused)."""

    code = "feedback_unavailable"
    status = 503
