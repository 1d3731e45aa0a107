"""The OpenAI-compatible chat: chat messages in, a question and history out; an answer back as a completion.

`conversation_from` reads the last user message as the question and earlier user/assistant messages as the
history (without the sources list this API appended to its own replies). `chat_completion` and `chat_chunks`
format an `Answer` as a `chat.completion` or as `chat.completion.chunk` events, with a numbered sources list
and rough token counts for the usage fields.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from typing import Any

from fastapi import Request

from rag.api.responses import SSE_DONE, error_body, sse
from rag.api.schemas import ChatMessage
from rag.api.shaping import safe_answer, text_stream_cleaner
from rag.api.workers import ThreadStream
from rag.errors import InvalidInput, RagError
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
