"""The OpenAPI document as the running service enforces it.

FastAPI derives the document from the request models; this adds what depends on the settings: the longest
question, history turn and chat message (`max_question_chars`, `max_history_turn_chars`; the total history
limit is stated in words, JSON Schema cannot sum lengths), and, when an API key is set, the bearer security
scheme on every operation but the health probes, so Swagger UI's "Authorize" sends the key.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from rag.config import Settings

BEARER = "bearerAuth"
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def _limit(schema: dict[str, Any], limit: int) -> None:
    """maxLength on a string schema, or on the string branch of an anyOf."""
    for branch in [schema, *schema.get("anyOf", [])]:
        if branch.get("type") == "string":
            branch["maxLength"] = limit


def _property(schemas: dict[str, Any], model: str, name: str) -> dict[str, Any] | None:
    return schemas.get(model, {}).get("properties", {}).get(name)


def openapi_builder(app: FastAPI, settings: Settings, public_paths: Collection[str]) -> Callable[[], dict[str, Any]]:
    """The `app.openapi` function: the generated document with the limits and the security scheme added."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, summary=app.summary, description=app.description, routes=app.routes
        )
        schemas = doc.get("components", {}).get("schemas", {})
        limits = {
            ("AskRequest", "question"): settings.max_question_chars,
            ("SearchRequest", "query"): settings.max_question_chars,
            ("ConversationAsk", "question"): settings.max_question_chars,
            ("HistoryTurn", "content"): settings.max_history_turn_chars,
            ("ChatMessage", "content"): settings.max_history_turn_chars,
            ("ChatContentPart", "text"): settings.max_history_turn_chars,
        }
        for (model, name), limit in limits.items():
            prop = _property(schemas, model, name)
            if prop is not None:
                _limit(prop, limit)
        history = _property(schemas, "AskRequest", "history")
        if history is not None:
            history["description"] = (
                f"Earlier turns, at most {settings.max_history_chars} characters in all "
                f"({settings.max_history_turn_chars} per turn)."
            )
        if settings.api_key is not None and settings.api_key.get_secret_value().strip():
            doc.setdefault("components", {})["securitySchemes"] = {
                BEARER: {"type": "http", "scheme": "bearer", "description": "The API key (RAG_API_KEY)."}
            }
            for path, operations in doc.get("paths", {}).items():
                if path in public_paths:
                    continue
                for operation in operations.values():
                    operation["security"] = [{BEARER: []}]
        app.openapi_schema = doc
        return doc

    return build
