"""Streamlit chat UI over the question-answering API: stored conversations, cited answers, readable sources,
feedback in one click, and knowledge-base management with ingest jobs the page follows. Speaks HTTP only
(ui.client); start it with `rag ui`, which passes the API's URL and key from the project's settings (`.env`
included), or with `streamlit run ui/app.py`.

Environment (read in `main` only): RAG_API_URL (default http://127.0.0.1:8000), RAG_API_KEY (optional).
The open conversation's id is kept in the address (`?c=…`), so a reload opens it again. The knowledge base
selected in the sidebar is the one documents, upload, re-ingest and new chats use; each chat keeps its own.
"""

from __future__ import annotations

import os
from typing import Any

import streamlit as st

from ui import chat, ingest, render, sidebar, style
from ui.client import DEFAULT_API_URL, ApiClient, ApiError
from ui.schema import Stats

PLACEHOLDER = "向你的笔记提问"
EXAMPLE = "例如：LoRA 微调里最重要的超参数是什么？"


def init_state() -> None:
    """Session defaults: the open conversation, caches, the followed ingest job and one-shot notices."""
    defaults: dict[str, Any] = {
        "conversation": None,  # the open stored conversation (id, title, knowledge base), or None
        "turns": [],
        "regenerate": False,
        "doc_cache": {},
        "uploader_nonce": 0,
        "notice": None,
        "ingest_job": None,
        "started": False,
        "kb_list": [],  # the knowledge bases (GET /kbs); the selected one is `kb`
        "confirm_delete": None,  # the note whose deletion awaits confirmation
    }
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)


def session_client(url: str, key: str | None) -> ApiClient:
    """One HTTP client per browser session (callbacks of a later run use it too)."""
    current = st.session_state.get("client")
    if current is None or st.session_state.get("client_config") != (url, key):
        current = ApiClient(url, key)
        st.session_state.client = current
        st.session_state.client_config = (url, key)
    return current


def show_notice() -> None:
    notice = st.session_state.notice
    if notice:
        kind, text = notice
        {"success": st.success, "error": st.error, "warning": st.warning}.get(kind, st.info)(text)
        st.session_state.notice = None


def main() -> None:
    """Build the client from the environment and draw the page."""
    st.set_page_config(page_title="AI 笔记问答", page_icon="📚", layout="centered")
    init_state()
    client = session_client(os.environ.get("RAG_API_URL") or DEFAULT_API_URL, os.environ.get("RAG_API_KEY") or None)
    page(client)


def page(client: ApiClient) -> None:
    """Sidebar, banners, the ingest job, the conversation and the chat input."""
    st.html(style.page_css(getattr(st.context.theme, "type", None)))
    sidebar.load_knowledge_bases(client)
    if not st.session_state.started:  # a new session (first visit or a reload): reopen the conversation
        st.session_state.started = True
        if st.query_params.get("c"):
            sidebar.open_conversation(client, st.query_params["c"])
            client.kb = st.session_state.get("kb") or client.kb  # the reopened chat's knowledge base
    stats: Stats | None
    try:
        stats, problem = client.stats(), None
    except ApiError as exc:
        stats, problem = None, exc
    options = sidebar.draw(client, stats)
    version = stats.get("version") if stats else None

    st.title("📚 AI 笔记问答")
    conversation = st.session_state.conversation
    if conversation:
        kb = conversation.get("knowledge_base") or "—"
        st.caption(f"💬 {render.escape_markdown(conversation.get('title') or '')} · 📚 知识库：{render.escape_markdown(kb)}")
    else:
        st.caption(f"根据你的 AI 笔记回答问题，每个结论都标出处；点击 [n] 跳到对应来源。{EXAMPLE}")
    if problem is not None:
        st.error(problem.message, icon="🚫")
    elif stats is not None and not stats.get("ready"):
        st.warning(
            "知识库还没有可用的索引：请在终端运行 `rag ingest`，或点击侧边栏的“🔄 重新入库”，然后再提问。",
            icon="⚠️",
        )
    ingest.follow(client, stats)
    show_notice()

    turns: list[dict[str, Any]] = st.session_state.turns
    regenerate = bool(st.session_state.regenerate) and bool(turns) and bool(st.session_state.conversation)
    st.session_state.regenerate = False
    chat.draw_turns(client, turns[:-1] if regenerate else turns, version)
    question = st.chat_input(PLACEHOLDER)
    if regenerate:
        redo(client, turns, options, version)
    elif question and question.strip():
        ask(client, question, options, version)


def ask(client: ApiClient, question: str, options: chat.Options, version: str | None) -> None:
    """Ask within the open conversation (creating one first), streaming the answer into the page."""
    turns: list[dict[str, Any]] = st.session_state.turns
    with st.chat_message("user"):
        st.markdown(render.escape_block(question))
    created = st.session_state.conversation is None
    with st.chat_message("assistant"):
        try:
            cid = ensure_conversation(client)
            events = client.conversation_ask_stream(
                cid, question, top_k=options.top_k, mode=options.mode, explain=True
            )
        except ApiError as exc:
            turn = {"question": question, "answer": None, "error": exc.message, "feedback": None}
        else:
            turn = chat.stream_answer(events, question)
        turns.append(turn)
        if turn["answer"]:
            chat.draw_answer(client, turn, version, last=True)
            _touch_title(question)
        else:
            st.error(turn["error"], icon="🚫")
    if created and turn["answer"]:
        st.rerun()  # the sidebar, drawn before the question, lists the new conversation


def redo(client: ApiClient, turns: list[dict[str, Any]], options: chat.Options, version: str | None) -> None:
    """Regenerate the last answer: the server answers its question again and keeps the new answer."""
    last = turns[-1]
    with st.chat_message("user"):
        st.markdown(render.escape_block(last["question"]))
    with st.chat_message("assistant"):
        cid = st.session_state.conversation["id"]
        events = client.regenerate_stream(cid, top_k=options.top_k, mode=options.mode, explain=True)
        turn = chat.stream_answer(events, last["question"])
        if turn["answer"]:
            turns[-1] = turn
            chat.draw_answer(client, turn, version, last=True)
        else:
            st.error(turn["error"], icon="🚫")


def ensure_conversation(client: ApiClient) -> str:
    """The open conversation's id, creating (and opening) a stored conversation when there is none."""
    conversation = st.session_state.conversation
    if conversation is None:
        conversation = dict(client.create_conversation())
        st.session_state.conversation = conversation
        st.query_params["c"] = conversation["id"]
    return conversation["id"]


def _touch_title(question: str) -> None:
    """The server names an untitled conversation after its first question; mirror it without a request."""
    conversation = st.session_state.conversation
    if conversation and conversation.get("turns", 0) == 0 and conversation.get("title") == "新对话":
        text = " ".join(question.split())
        conversation["title"] = text[:40] + ("…" if len(text) > 40 else "")
    if conversation:
        conversation["turns"] = conversation.get("turns", 0) + 1


if __name__ == "__main__":
    main()
