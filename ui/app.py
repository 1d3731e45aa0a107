"""Streamlit chat UI over the question-answering API: cited answers, source previews, knowledge-base
management and feedback. Speaks HTTP only (ui.client); run with `rag ui` or `streamlit run ui/app.py`.

Environment (read in `main`): RAG_API_URL (default http://127.0.0.1:8000), RAG_API_KEY (optional).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import streamlit as st

from ui import render
from ui.client import (
    DEFAULT_API_URL,
    Answer,
    ApiClient,
    ApiError,
    Citation,
    DocumentDetail,
    IngestJob,
    Mode,
    Stats,
    Turn,
)

MODES: dict[str, str] = {"hybrid": "混合检索（BM25 + 向量）", "bm25": "关键词（BM25）", "dense": "向量（语义）"}
STAGES: dict[str, str] = {"files": "读取笔记", "chunks": "切分片段", "embeddings": "计算向量"}
REFUSAL_HINT = "💡 可以换个说法、补充关键词再问一次；如果笔记里确实没有，可在侧边栏上传相关笔记并重新入库。"
HISTORY_TURNS = 10
INGEST_POLL_SECONDS = 0.5
INGEST_MAX_WAIT_SECONDS = 900
DEFAULT_MAX_UPLOAD_MB = 5.0


@dataclass(frozen=True)
class Options:
    """Retrieval settings chosen in the sidebar."""

    top_k: int
    mode: Mode


# --- state ------------------------------------------------------------------------------------------


def init_state() -> None:
    """Session defaults: the conversation, caches and one-shot notices."""
    defaults: dict[str, Any] = {
        "messages": [],
        "doc_cache": {},
        "feedback_sent": {},
        "uploader_nonce": 0,
        "notice": None,
    }
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)


def history_turns(messages: list[dict[str, Any]]) -> list[Turn]:
    """The conversation so far as API history: user questions and answer texts (errors left out)."""
    turns: list[Turn] = []
    for msg in messages:
        if msg["role"] == "user":
            turns.append({"role": "user", "content": msg["content"]})
        elif msg.get("answer"):
            turns.append({"role": "assistant", "content": msg["answer"]["text"]})
    return turns[-HISTORY_TURNS:]


def flash(kind: str, text: str) -> None:
    """A message to show once at the top of the next run (survives st.rerun)."""
    st.session_state.notice = (kind, text)


def show_flash() -> None:
    notice = st.session_state.notice
    if notice:
        kind, text = notice
        {"success": st.success, "error": st.error, "warning": st.warning}.get(kind, st.info)(text)
        st.session_state.notice = None


# --- sidebar: knowledge base ------------------------------------------------------------------------


def sidebar(client: ApiClient, stats: Stats | None) -> Options:
    """Knowledge-base status, documents, upload, re-ingest and retrieval settings."""
    with st.sidebar:
        st.header("📚 知识库")
        if stats is None:
            st.caption("未连接到问答服务，知识库信息暂不可用。")
        else:
            status_panel(stats)
            documents_panel(client)
            upload_panel(client, stats)
            ingest_panel(client)
        st.divider()
        st.subheader("⚙️ 检索设置")
        top_k = st.slider("返回片段数（top-k）", min_value=1, max_value=10, value=5, key="top_k")
        mode = st.selectbox("检索模式", list(MODES), format_func=MODES.__getitem__, key="mode")
    return Options(top_k=int(top_k), mode=mode)


def status_panel(stats: Stats) -> None:
    """Counts, last ingest, embedder and LLM backend."""
    ready = bool(stats.get("ready"))
    col1, col2 = st.columns(2)
    col1.metric("文档", stats.get("documents", 0) if ready else "—")
    col2.metric("片段", stats.get("chunks", 0) if ready else "—")
    last = stats.get("last_ingest") or {}
    lines = [
        f"状态：{'✅ 就绪' if ready else '⚠️ 无索引'}",
        f"上次入库：{render.escape_markdown(render.format_time(last.get('at')))}",
        f"向量模型：{render.escape_markdown(str(stats.get('embedder') or '—'))}",
        f"回答引擎：{render.escape_markdown(str(stats.get('llm_backend') or '—'))}",
    ]
    st.caption("  \n".join(lines))


def documents_panel(client: ApiClient) -> None:
    """The list of ingested notes."""
    try:
        docs = client.documents()
    except ApiError as exc:
        st.caption(f"文档列表不可用：{exc.message}")
        return
    with st.expander(f"📄 文档列表（{len(docs)}）"):
        if not docs:
            st.caption("还没有文档。")
        for doc in docs:
            size = render.format_size(doc.get("size_bytes", 0))
            st.markdown(
                f"**{render.escape_markdown(doc.get('title') or doc['doc_id'])}**  \n"
                f"{render.escape_markdown(doc['doc_id'])} · {doc.get('chunks', 0)} 个片段 · {size}"
            )


def upload_panel(client: ApiClient, stats: Stats) -> None:
    """Upload one .md/.txt note (checked here too), then ingest it."""
    max_mb = float(stats.get("max_upload_mb") or DEFAULT_MAX_UPLOAD_MB)
    max_bytes = int(max_mb * 1024 * 1024)
    uploaded = st.file_uploader(
        f"➕ 上传笔记（.md / .txt，≤ {max_mb:g} MB）",
        type=["md", "txt"],
        max_upload_size=max(1, math.ceil(max_mb)),
        key=f"uploader-{st.session_state.uploader_nonce}",
    )
    if uploaded is None:
        return
    problem = render.check_upload(uploaded.name, uploaded.size, max_bytes)
    if problem:
        st.error(render.escape_markdown(problem))
        return
    overwrite = st.checkbox("覆盖同名笔记", key="upload_overwrite")
    if st.button("上传并入库", key="upload", type="primary", width="stretch"):
        try:
            client.upload(uploaded.name, uploaded.getvalue(), overwrite=overwrite)
        except ApiError as exc:
            if exc.status == 409:
                st.error(
                    f"已存在同名笔记“{render.escape_markdown(uploaded.name)}”：勾选“覆盖同名笔记”后再上传，或换个文件名。"
                )
            else:
                st.error(exc.message)
            return
        st.session_state.uploader_nonce += 1
        run_ingest(client, label=f"已上传 {uploaded.name}")


def ingest_panel(client: ApiClient) -> None:
    """Start an ingest job and follow its progress."""
    full = st.checkbox("完全重建（重新计算所有向量）", key="ingest_full")
    if st.button("🔄 重新入库", key="reingest", width="stretch"):
        run_ingest(client, full=full, label="入库")


def run_ingest(client: ApiClient, *, full: bool = False, label: str) -> None:
    """Start an ingest job (or follow the one already running) and poll it until it ends."""
    try:
        try:
            job: IngestJob = client.start_ingest(full=full)
        except ApiError as exc:
            running = (client.stats().get("ingest_job") or {}) if exc.status == 409 else {}
            if not running.get("job_id"):
                raise
            st.info("已有入库任务在运行，正在跟踪它的进度…")
            job = running
    except ApiError as exc:
        st.error(exc.message)
        return
    bar = st.progress(0.0, text="排队中…")
    deadline = time.monotonic() + INGEST_MAX_WAIT_SECONDS
    while job.get("state") not in ("succeeded", "failed"):
        stage, done, total = render.ingest_progress(job.get("progress"))
        text = f"{STAGES.get(stage, stage)}：{done}/{total}" if stage else "排队中…"
        bar.progress(render.fraction(done, total), text=text)
        if time.monotonic() > deadline:
            st.warning("入库仍在进行，可稍后刷新页面查看结果。")
            return
        time.sleep(INGEST_POLL_SECONDS)
        try:
            job = client.ingest_job(str(job["job_id"]))
        except ApiError as exc:
            st.error(exc.message)
            return
    bar.empty()
    st.session_state.doc_cache = {}
    if job["state"] == "succeeded":
        flash("success", render.escape_markdown(f"{label}：入库完成。{summary_text(job.get('summary') or {})}"))
    else:
        error = job.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        flash("error", render.escape_markdown(f"{label}：入库失败。{error or ''}"))
    st.rerun()


def summary_text(summary: dict[str, Any]) -> str:
    """One line for an ingest summary (added/changed/removed, documents, chunks)."""
    parts = []
    for key, name in (("added", "新增"), ("changed", "更新"), ("removed", "删除")):
        items = summary.get(key)
        if isinstance(items, list) and items:
            parts.append(f"{name} {len(items)} 篇")
    if "documents" in summary:
        parts.append(f"共 {summary['documents']} 篇文档、{summary.get('chunks', 0)} 个片段")
    return "，".join(parts) + ("。" if parts else "")


# --- chat -------------------------------------------------------------------------------------------


def render_message(client: ApiClient, msg: dict[str, Any], version: str | None) -> None:
    """One earlier message of the conversation."""
    with st.chat_message(msg["role"]):
        if msg["role"] == "user":
            st.markdown(render.escape_block(msg["content"]))
        elif msg.get("answer"):
            render_answer(client, msg["answer"], version)
        else:
            st.error(msg.get("error", "出错了。"), icon="🚫")


def ask(client: ApiClient, question: str, history: list[Turn], options: Options, version: str | None) -> dict:
    """Stream the answer to `question` into an assistant message; returns the message to store."""
    with st.chat_message("assistant"):
        status = st.empty()
        slot = st.empty()
        status.caption("🔎 正在检索笔记…")
        text, answer = "", None
        try:
            for kind, payload in client.ask_stream(
                question, history=history, top_k=options.top_k, mode=options.mode, explain=True
            ):
                if kind == "citations":
                    status.caption(f"🔎 找到 {len(payload)} 个相关片段，正在生成回答…")
                elif kind == "token":
                    text += payload
                    slot.markdown(render.escape_block(text) + " ▌")
                else:
                    answer = payload
        except ApiError as exc:
            status.empty()
            slot.empty()
            st.error(exc.message, icon="🚫")
            return {"role": "assistant", "error": exc.message}
        status.empty()
        assert answer is not None
        render_answer(client, answer, version, slot=slot)
    return {"role": "assistant", "answer": answer}


def render_answer(client: ApiClient, answer: Answer, version: str | None, slot: Any = None) -> None:
    """The answer (or refusal), its source cards, backend and latency, feedback and retrieval details."""
    key = answer.get("answer_id") or str(abs(hash(answer["question"] + answer["text"])))
    target = slot if slot is not None else st
    citations = answer.get("citations") or []
    if answer.get("refused"):
        target.warning(f"{render.escape_block(answer['text'])}\n\n{REFUSAL_HINT}", icon="🔍")
    else:
        numbers = {c["number"] for c in citations}
        target.markdown(render.answer_markdown(answer["text"], numbers, key), unsafe_allow_html=True)
    if answer.get("fallback_reason"):
        st.caption(
            "⚠️ 大模型调用失败，本回答由抽取式回答器根据原文生成。原因："
            + render.escape_markdown(str(answer["fallback_reason"]))
        )
    if answer.get("uncited"):
        st.caption("⚠️ 这个回答没有给出可核对的引用，请谨慎参考。")
    if citations:
        st.markdown(f"**📎 来源（{len(citations)}）**")
        for citation in citations:
            source_card(client, citation, key, version)
    total = (answer.get("timings") or {}).get("total_ms")
    latency = f" · {render.format_ms(total)}" if isinstance(total, int | float) else ""
    st.caption(f"回答后端：{render.escape_markdown(answer.get('backend', ''))}{latency}")
    feedback_row(client, answer, key)
    explanation = answer.get("explanation")
    if explanation:
        with st.expander("🔎 检索详情", expanded=False):
            resolved = answer.get("resolved_question")
            if resolved and resolved != answer["question"]:
                st.caption("改写后的独立问题：" + render.escape_markdown(resolved))
            st.json(explanation, expanded=1)


def source_card(client: ApiClient, c: Citation, key: str, version: str | None) -> None:
    """One citation as a card: document, heading path, the highlighted snippet and a note preview."""
    st.markdown(f'<span id="{render.anchor_id(key, c["number"])}"></span>', unsafe_allow_html=True)
    label = f"[{c['number']}] {c['document']} · {render.heading_text(c['heading_path'])}"
    with st.expander(render.escape_markdown(label), icon="📄"):
        st.markdown(
            f"**文档**：{render.escape_markdown(c['document'])}（{render.escape_markdown(c['doc_id'])}）  \n"
            f"**章节**：{render.escape_markdown(render.heading_text(c['heading_path']))}"
        )
        st.markdown("**引用原文**")
        st.markdown(render.highlight("", c["snippet"], ""), unsafe_allow_html=True)
        doc = load_document(client, c["doc_id"], version)
        if isinstance(doc, ApiError):
            st.caption(f"无法加载笔记预览：{doc.message}")
        else:
            text = doc["text"]
            start, end = render.locate_span(
                text, c["snippet"], c["start"], c["end"], c.get("snippet_start"), c.get("snippet_end")
            )
            st.markdown(f"**笔记上下文**（前后约 {render.PREVIEW_RADIUS} 字，引用处高亮）")
            with st.container(border=True):
                st.markdown(render.preview_markdown(text, start, end), unsafe_allow_html=True)
        st.caption(f"位置：第 {c['start']}–{c['end']} 字符 · 相关度 {float(c.get('score', 0)):.3f}")


def load_document(client: ApiClient, doc_id: str, version: str | None) -> DocumentDetail | ApiError:
    """GET /documents/{doc_id}, cached per index version for the session."""
    cache: dict[tuple[str | None, str], DocumentDetail | ApiError] = st.session_state.doc_cache
    key = (version, doc_id)
    if key not in cache:
        try:
            cache[key] = client.document(doc_id)
        except ApiError as exc:
            return exc
    return cache[key]


def feedback_row(client: ApiClient, answer: Answer, key: str) -> None:
    """👍/👎 with an optional comment, sent to POST /feedback once."""
    sent = st.session_state.feedback_sent
    if key in sent:
        st.caption(f"已收到你的反馈（{'👍' if sent[key] == 'up' else '👎'}），谢谢！")
        return
    choice = st.feedback("thumbs", key=f"fb-{key}")
    if choice is None:
        return
    rating = "up" if choice == 1 else "down"
    with st.form(key=f"fbform-{key}", border=False):
        comment = st.text_input("补充说明（可选）", key=f"fbc-{key}", placeholder="哪里好 / 哪里不对？")
        if st.form_submit_button("提交反馈"):
            try:
                client.feedback(
                    rating, answer_id=answer.get("answer_id") or None, question=answer["question"],
                    comment=comment.strip() or None,
                )
            except ApiError as exc:
                st.error(exc.message)
                return
            sent[key] = rating
            st.rerun()


# --- page -------------------------------------------------------------------------------------------


def main() -> None:
    """Build the client from the environment and draw the page."""
    st.set_page_config(page_title="AI 笔记问答", page_icon="📚", layout="centered")
    init_state()
    api_url = os.environ.get("RAG_API_URL") or DEFAULT_API_URL
    with ApiClient(api_url, os.environ.get("RAG_API_KEY") or None) as client:
        page(client)


def page(client: ApiClient) -> None:
    """Sidebar, banners, the conversation and the chat input."""
    stats: Stats | None
    try:
        stats, problem = client.stats(), None
    except ApiError as exc:
        stats, problem = None, exc
    options = sidebar(client, stats)
    version = stats.get("version") if stats else None

    left, right = st.columns([4, 1], vertical_alignment="bottom")
    left.title("📚 AI 笔记问答")
    if right.button("🆕 新对话", key="new_chat", width="stretch"):
        st.session_state.messages = []
        st.session_state.feedback_sent = {}
        st.rerun()
    st.caption("根据你的 AI 笔记回答问题，每个结论都标出处；点击 [n] 跳到对应来源。")

    if problem is not None:
        st.error(problem.message, icon="🚫")
    elif stats is not None and not stats.get("ready"):
        st.warning(
            "知识库还没有可用的索引：请在终端运行 `rag ingest`，或点击侧边栏的“🔄 重新入库”，然后再提问。",
            icon="⚠️",
        )
    show_flash()

    messages: list[dict[str, Any]] = st.session_state.messages
    for msg in messages:
        render_message(client, msg, version)

    question = st.chat_input("向你的笔记提问，例如：LoRA 微调里最重要的超参数是什么？")
    if question and question.strip():
        history = history_turns(messages)
        messages.append({"role": "user", "content": question})
        with st.chat_message("user"):
            st.markdown(render.escape_block(question))
        messages.append(ask(client, question, history, options, version))


if __name__ == "__main__":
    main()
