"""The OpenAI-compatible chat: chat messages in, a question and history out; an answer back as a completion.

The routes (`/v1/models`, `/v1/chat/completions`) take a knowledge base as the `model`: `GET /v1/models` lists
them, `rag-notes` (the id advertised before knowledge bases) names the default one, and an unknown model is a
404 in OpenAI's error shape (`error.type`, `error.param`, `error.code` = `model_not_found`).

`conversation_from` reads the last user message as the question and earlier user/assistant messages as the
history (without the sources list this API appended to its own replies). `chat_completion` and `chat_chunks`
format an `Answer` as a `chat.completion` or as `chat.completion.chunk` events, with a numbered sources list
and rough token counts for the usage fields.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from rag.api.knowledge import engine_for, registry_of
from rag.api.responses import SSE_DONE, error_body, error_response, event_stream, json_response, sse
from rag.api.routes import SettingsDep, WorkerDep, check_history
from rag.api.schemas import (
    ERRORS,
    MODEL_ID,
    STREAMED,
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    ModelCard,
    ModelList,
)
from rag.api.shaping import safe_answer, text_stream_cleaner
from rag.api.workers import ThreadStream
from rag.config import Settings
from rag.errors import InvalidInput, RagError
from rag.knowledge_bases import NAME_PATTERN, KnowledgeBaseNotFound
from rag.text import CJK_CHARS, CJK_COMPAT_CHARS
from rag.types import Answer, Citation, Turn

log = logging.getLogger(__name__)

_ANY_CJK = f"[{CJK_CHARS}{CJK_COMPAT_CHARS}]"  # compatibility ideographs count here too
_CJK = re.compile(_ANY_CJK)
_ROUGH_TOKEN = re.compile(f"{_ANY_CJK}|[A-Za-z0-9_]+|[^\\sA-Za-z0-9_]")
_SOURCES_TAIL = re.compile(r"\n\n(?:来源：|Sources:)\n(?:\d+\. [^\n]*(?:\n|$))+\s*$")


def message_text(message: ChatMessage) -> str:
    """The text of a chat message: its string content, or its text parts joined."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text or "" for part in message.content if part.type in ("text", "input_text"))


def strip_sources(text: str) -> str:
    """An assistant message without the sources list this API appended to it."""
    return _SOURCES_TAIL.sub("", text)


def conversation_from(messages: Sequence[ChatMessage]) -> tuple[str, list[Turn]]:
    """The question (the last user message with text) and the history (earlier user/assistant messages)."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user" and message_text(m).strip()), default=None)
    if last_user is None:
        raise InvalidInput("the conversation has no user message with text")
    history = [
        Turn(m.role, strip_sources(message_text(m)) if m.role == "assistant" else message_text(m))
        for m in messages[:last_user]
        if m.role in ("user", "assistant") and message_text(m).strip()
    ]
    return message_text(messages[last_user]), history


def sources_text(answer: Answer) -> str:
    """The numbered source list appended to OpenAI-style answers ("n. document › heading")."""
    if not answer.citations:
        return ""
    header = "来源：" if _CJK.search(answer.question) else "Sources:"
    lines = [
        f"{c.number}. " + " › ".join([c.document, *c.heading_path]) for c in sorted(answer.citations, key=_num)
    ]
    return "\n\n" + header + "\n" + "\n".join(lines)


def _num(citation: Citation) -> int:
    return citation.number


def rough_tokens(text: str) -> int:
    """A rough token count (CJK characters, words, punctuation) for the usage fields."""
    return len(_ROUGH_TOKEN.findall(text))


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(answer: Answer, model: str, created: int, prompt_tokens: int) -> dict[str, Any]:
    answer = safe_answer(answer)
    content = answer.text + sources_text(answer)
    return {
        "id": f"chatcmpl-{answer.answer_id or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": _usage(prompt_tokens, rough_tokens(content)),
        "citations": [asdict(c) for c in answer.citations],
    }


async def chat_chunks(
    stream: ThreadStream[tuple[str, Any]],
    request: Request,
    *,
    model: str,
    created: int,
    prompt_tokens: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """OpenAI `chat.completion.chunk` events, ending with `data: [DONE]`."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return sse(None, body)

    completion = 0
    cleaner = text_stream_cleaner()
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for kind, payload in stream:
            safe = cleaner.feed(payload) if kind == "token" and payload else ""
            if safe:
                completion += rough_tokens(safe)
                yield chunk({"content": safe})
            elif kind == "done":
                payload = safe_answer(payload)
                tail = cleaner.flush(payload.text) + sources_text(payload)
                if tail:
                    completion += rough_tokens(tail)
                    yield chunk({"content": tail})
                yield chunk({}, "stop", citations=[asdict(c) for c in payload.citations])
                if include_usage:
                    yield sse(
                        None,
                        {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [], "usage": _usage(prompt_tokens, completion)},
                    )
            if await request.is_disconnected():
                return
        yield SSE_DONE
    except RagError as exc:
        yield sse(None, error_body(exc.code, exc.message))
    except Exception:
        log.exception("chat stream failed")
        yield sse(None, error_body("internal_error", "internal server error"))
    finally:
        stream.stop()


def check_chat_messages(messages: Sequence[ChatMessage], settings: Settings) -> None:
    """Every text of every chat message (content, or each text part) within the per-turn limit."""
    limit = settings.max_history_turn_chars
    for i, message in enumerate(messages):
        content = message.content
        texts = [content] if isinstance(content, str) else [part.text or "" for part in content or []]
        if any(len(text) > limit for text in texts):
            raise InvalidInput(f"messages.{i}.content is longer than {limit} characters (the limit per message)")


def model_not_found(model: str, known: Sequence[str]) -> Response:
    """404 in the one error shape, with the fields OpenAI clients read (`type`, `param`)."""
    message = (
        f"The model {model[:80]!r} does not exist: models are knowledge bases ({', '.join(known) or 'none'}; "
        f"{MODEL_ID!r} is the default one)"
    )
    return error_response(404, "model_not_found", message, type="invalid_request_error", param="model")


router = APIRouter(responses=ERRORS, tags=["openai"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The knowledge bases, as OpenAI models (the id is the name to send as `model`)."""
    kbs = await anyio.to_thread.run_sync(registry_of(request).list)
    return ModelList(data=[ModelCard(id=kb.name, created=int(kb.created)) for kb in kbs])


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=STREAMED)
async def chat_completions(body: ChatRequest, request: Request, worker: WorkerDep, settings: SettingsDep) -> Response:
    """OpenAI-compatible chat over the knowledge base named by `model`: the last user message with text is the
    question, earlier ones the history."""
    check_chat_messages(body.messages, settings)
    question, history = conversation_from(body.messages)
    check_history(history, settings)
    registry = registry_of(request)
    kbs = {kb.name for kb in await anyio.to_thread.run_sync(registry.list)}
    name = body.model if body.model in kbs else settings.default_kb if body.model == MODEL_ID else None
    if name is None or not NAME_PATTERN.fullmatch(name):
        return model_not_found(body.model, sorted(kbs))
    try:  # a knowledge base never ingested is the client's to fill (409 kb_empty), as on /ask
        _, engine = await engine_for(request, name)
    except KnowledgeBaseNotFound:  # deleted meanwhile
        return model_not_found(body.model, sorted(kbs - {name}))
    created = int(time.time())
    prompt_tokens = sum(rough_tokens(message_text(m)) for m in body.messages)
    if body.stream:
        stream = await worker.stream(lambda: engine.ask_stream(question, history=history))
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return event_stream(
            chat_chunks(
                stream, request, model=body.model, created=created, prompt_tokens=prompt_tokens,
                include_usage=include_usage,
            )
        )
    answer = await worker.run(engine.ask, question, history=history)
    return json_response(chat_completion(answer, body.model, created, prompt_tokens))
