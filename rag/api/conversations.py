"""Routes of stored conversations (`/conversations`), and of amending feedback (`PATCH /feedback/{id}`).

A conversation's questions are asked through it (`POST /conversations/{id}/ask`): the server takes the history
from the stored turns, answers like /ask (JSON or server-sent events) from the conversation's knowledge base
(named when it was created, `knowledge_base`) and stores the exchange once the answer is complete. Feedback stays in the feedback store, keyed by the answer id; a conversation shows each answer's
latest entry. The store is opened on first use, in the data dir, under the same auth and error shape as the
rest of the API.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from rag.api.knowledge import engine_for, kb_name, registry_of
from rag.api.responses import event_stream, json_response
from rag.api.routes import FeedbackDep, SettingsDep, WorkerDep, wants_event_stream
from rag.api.schemas import ERRORS, STREAMED, STRICT, KbName, Name, Question, TopK, checked_text
from rag.api.shaping import safe_answer
from rag.api.workers import answer_events
from rag.config import Settings
from rag.conversations_store import (
    Conversation,
    ConversationInfo,
    ConversationStore,
    history_of,
)
from rag.engine import Engine
from rag.errors import NotFound
from rag.feedback import FeedbackEntry
from rag.knowledge_bases import KnowledgeBaseNotFound
from rag.types import Answer, RetrievalMode, Turn

_OPEN_LOCK = threading.Lock()  # the store is opened once per app, by whichever request comes first


# --- schemas -------------------------------------------------------------------------------------------


class ConversationCreate(BaseModel):
    model_config = STRICT

    title: Name | None = Field(None, description="Empty or absent: named after the first question.")
    kb: KbName = None


class ConversationRename(BaseModel):
    model_config = STRICT

    title: Name = Field(description="Kept as text on one line; empty: the default title.")


class ConversationAsk(BaseModel):
    """Like /ask, without `history`: the conversation's stored turns are the history."""

    model_config = STRICT

    question: Question
    top_k: TopK = None
    mode: RetrievalMode = "hybrid"
    stream: bool = False
    explain: bool = False


class ConversationRegenerate(BaseModel):
    model_config = STRICT

    top_k: TopK = None
    mode: RetrievalMode = "hybrid"
    stream: bool = False
    explain: bool = False


class FeedbackAmend(BaseModel):
    model_config = STRICT

    rating: Literal["up", "down", 1, -1] | None = None
    comment: checked_text(max_length=5_000) | None = Field(None, description="An empty string removes the comment.")

    @field_validator("rating", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("rating must be 'up', 'down', 1 or -1")
        return value


class ConversationSummary(BaseModel):
    id: str
    title: str
    knowledge_base: str
    created_at: str
    updated_at: str
    turns: int


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]


class TurnOut(BaseModel):
    id: int
    question: str
    answer: dict[str, Any]
    answer_id: str
    created_at: str
    feedback: FeedbackEntry | None = None


class ConversationDetail(ConversationSummary):
    messages: list[TurnOut]


MARKDOWN = {200: {"description": "The conversation as Markdown", "content": {"text/markdown": {"schema": {"type": "string"}}}}}


# --- dependencies ----------------------------------------------------------------------------------------


def get_conversations(request: Request) -> ConversationStore:
    state = request.app.state
    store = getattr(state, "conversations", None)
    if store is None:
        with _OPEN_LOCK:
            store = getattr(state, "conversations", None)
            if store is None:
                settings = state.settings
                store = ConversationStore(
                    settings.data_dir / "conversations.sqlite",
                    max_conversations=settings.max_conversations,
                    max_turns=settings.max_conversation_turns,
                )
                state.conversations = store
    return store


StoreDep = Annotated[ConversationStore, Depends(get_conversations)]


# --- formatting ------------------------------------------------------------------------------------------


def stored_answer(answer: Answer) -> dict[str, Any]:
    """An answer as kept with its turn: what /ask returns (made safe to render) but the retrieval explanation."""
    data = asdict(safe_answer(answer))
    data.pop("explanation", None)
    return data


def conversation_payload(conversation: Conversation, feedback: dict[str, FeedbackEntry]) -> dict[str, Any]:
    turns = [
        {**asdict(t), "feedback": asdict(feedback[t.answer_id]) if t.answer_id in feedback else None}
        for t in conversation.turns
    ]
    return {**asdict(conversation.info), "messages": turns}


_MD_ESCAPE = re.compile(r"([\\`*_\[\]<>#|~$])")


def md_text(text: str) -> str:
    """Text shown as itself in Markdown (no markup, no HTML)."""
    return _MD_ESCAPE.sub(r"\\\1", text)


def conversation_markdown(conversation: Conversation) -> str:
    """The conversation as a Markdown document: each question, its answer and the cited passages."""
    info = conversation.info
    lines = [
        f"# {md_text(info.title)}",
        "",
        f"- 知识库：{md_text(info.knowledge_base)}",
        f"- 创建：{info.created_at}",
        f"- 问题数：{len(conversation.turns)}",
    ]
    for number, turn in enumerate(conversation.turns, start=1):
        answer = turn.answer
        lines += ["", f"## {number}. {md_text(' '.join(turn.question.split()))}", ""]
        lines += [md_text(line) for line in str(answer.get("text", "")).splitlines()]
        citations = answer.get("citations") or []
        if citations:
            lines += ["", "**来源**", ""]
        for c in citations:
            where = " › ".join(c.get("heading_path") or []) or "（无标题）"
            lines.append(
                f"{c.get('number')}. {md_text(str(c.get('document', '')))} · {md_text(where)}"
                f"（{md_text(str(c.get('doc_id', '')))}，第 {c.get('start')}–{c.get('end')} 字符）"
            )
            lines += [f"   > {md_text(line)}" for line in str(c.get("snippet", "")).splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


# --- routes ------------------------------------------------------------------------------------------------

router = APIRouter(responses=ERRORS, tags=["conversations"])


@router.get("/conversations", response_model=ConversationList)
async def list_conversations(
    store: StoreDep,
    worker: WorkerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    """Stored conversations, most recently updated first."""
    items = await worker.run(store.list, limit=limit, offset=offset)
    return json_response({"conversations": [asdict(i) for i in items]})


@router.post("/conversations", status_code=201, response_model=ConversationSummary)
async def create_conversation(
    request: Request, store: StoreDep, worker: WorkerDep, body: ConversationCreate | None = None
) -> Response:
    """Start a conversation with knowledge base `kb` (its questions are asked there; 409 `limit_exceeded`
    beyond RAG_MAX_CONVERSATIONS)."""
    title = body.title if body and body.title and body.title.strip() else None
    name = kb_name(request, body.kb if body else None)
    await worker.run(registry_of(request).get, name)  # 404 for an unknown knowledge base
    info: ConversationInfo = await worker.run(store.create, title, name)
    return json_response(asdict(info), 201)


@router.get("/conversations/{conversation_id}", response_model=ConversationDetail)
async def show_conversation(
    conversation_id: str, store: StoreDep, feedback: FeedbackDep, worker: WorkerDep
) -> Response:
    """A conversation with its turns; each answer carries its latest feedback."""
    conversation: Conversation = await worker.run(store.get, conversation_id)
    entries = await worker.run(feedback.for_answers, [t.answer_id for t in conversation.turns])
    return json_response(conversation_payload(conversation, entries))


@router.patch("/conversations/{conversation_id}", response_model=ConversationSummary)
async def rename_conversation(
    conversation_id: str, body: ConversationRename, store: StoreDep, worker: WorkerDep
) -> Response:
    """Rename a conversation (the title is kept as text, on one line)."""
    return json_response(asdict(await worker.run(store.rename, conversation_id, body.title)))


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: str, store: StoreDep, worker: WorkerDep) -> Response:
    """Delete a conversation and its turns (feedback already given stays in the feedback store)."""
    await worker.run(store.delete, conversation_id)
    return Response(status_code=204)


@router.get("/conversations/{conversation_id}/export", response_class=Response, responses=MARKDOWN)
async def export_conversation(conversation_id: str, store: StoreDep, worker: WorkerDep) -> Response:
    """The conversation as a Markdown file, with its citations."""
    conversation: Conversation = await worker.run(store.get, conversation_id)
    return Response(
        conversation_markdown(conversation),
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="conversation-{conversation.info.id}.md"'},
    )


async def conversation_engine(request: Request, settings: Settings, info: ConversationInfo) -> Engine:
    """The engine of the knowledge base a conversation asks. One stored before knowledge bases existed names
    the corpus folder instead: it asks the default knowledge base. One whose knowledge base is gone: 404."""
    registry = registry_of(request)
    known = {kb.name for kb in await anyio.to_thread.run_sync(registry.list)}
    name = info.knowledge_base
    if name not in known:
        if name != settings.corpus_dir.resolve().name:
            raise KnowledgeBaseNotFound(
                f"this conversation asks knowledge base {name!r}, which no longer exists; start a new conversation"
            )
        name = settings.default_kb
    _, engine = await engine_for(request, name)
    return engine


def _stored_stream(
    engine: Engine, store: ConversationStore, conversation_id: str, question: str, history: list[Turn],
    options: dict[str, Any], replace: bool,
) -> Iterator[tuple[str, Any]]:
    """The engine's answer events; the exchange is stored when the answer is complete."""
    for kind, payload in engine.ask_stream(question, history=history, **options):
        if kind == "done":
            if replace:
                store.replace_last_answer(conversation_id, stored_answer(payload))
            else:
                store.add_turn(conversation_id, question, stored_answer(payload))
        yield kind, payload


async def _answer(
    request: Request, engine: Engine, store: ConversationStore, worker: Any, conversation_id: str,
    question: str, history: list[Turn], options: dict[str, Any], stream: bool, replace: bool,
) -> Response:
    def make() -> Iterator[tuple[str, Any]]:
        return _stored_stream(engine, store, conversation_id, question, history, options, replace)

    if stream or wants_event_stream(request):
        return event_stream(answer_events(await worker.stream(make), request))

    def complete() -> Answer:
        answer = None
        for kind, payload in make():
            if kind == "done":
                answer = payload
        assert answer is not None
        return answer

    return json_response(asdict(safe_answer(await worker.run(complete))))


@router.post("/conversations/{conversation_id}/ask", response_model=Answer, responses=STREAMED)
async def ask_in_conversation(
    conversation_id: str, body: ConversationAsk, request: Request, store: StoreDep, worker: WorkerDep,
    settings: SettingsDep,
) -> Response:
    """Ask within a conversation, from its knowledge base: its stored turns are the history, and the exchange
    is stored."""
    turns = await worker.run(store.check_room, conversation_id)
    conversation: Conversation = await worker.run(store.get, conversation_id)
    engine = await conversation_engine(request, settings, conversation.info)
    options = {"top_k": body.top_k, "mode": body.mode, "explain": body.explain}
    return await _answer(
        request, engine, store, worker, conversation_id, body.question, history_of(turns), options, body.stream,
        replace=False,
    )


@router.post("/conversations/{conversation_id}/regenerate", response_model=Answer, responses=STREAMED)
async def regenerate_last_answer(
    conversation_id: str, request: Request, store: StoreDep, worker: WorkerDep, settings: SettingsDep,
    body: ConversationRegenerate | None = None,
) -> Response:
    """Answer the last question again (from the conversation's knowledge base) and store the new answer in
    place of the old one."""
    conversation: Conversation = await worker.run(store.get, conversation_id)
    if not conversation.turns:
        raise NotFound("this conversation has no answer to regenerate")
    engine = await conversation_engine(request, settings, conversation.info)
    body = body or ConversationRegenerate()
    options = {"top_k": body.top_k, "mode": body.mode, "explain": body.explain}
    last = conversation.turns[-1]
    return await _answer(
        request, engine, store, worker, conversation_id, last.question, history_of(conversation.turns[:-1]),
        options, body.stream, replace=True,
    )


@router.patch("/feedback/{entry_id}", response_model=FeedbackEntry, tags=["feedback"])
async def amend_feedback(entry_id: int, body: FeedbackAmend, feedback: FeedbackDep, worker: WorkerDep) -> Response:
    """Change a stored rating or add its comment (a click records the rating; the comment amends it)."""
    entry = await worker.run(feedback.amend, entry_id, rating=body.rating, comment=body.comment)
    return json_response(asdict(entry))
