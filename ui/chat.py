"""The conversation: questions, streamed answers, their source cards and the full-note view, feedback,
copy and regenerate. Every function here draws with Streamlit and talks to the API through `ApiClient`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from ui import render, style
from ui.client import ApiClient, ApiError
from ui.schema import Answer, Citation, DocumentDetail, Mode

REFUSAL_HINT = "💡 可以换个说法、补充关键词再问一次；如果笔记里确实没有，可在侧边栏上传相关笔记并重新入库。"
NOTES_ONLY_HINT = (
    "ℹ️ 只看笔记原文：没有配置大模型时，回答直接摘录笔记里的句子（这里是中文），不会翻译成英文。"
    "配置 `RAG_LLM_MODEL` 后可以用提问的语言回答。"
)


@dataclass(frozen=True)
class Options:
    """Retrieval settings chosen in the sidebar."""

    top_k: int
    mode: Mode


# --- the conversation so far ------------------------------------------------------------------------------


def draw_turns(client: ApiClient, turns: list[dict[str, Any]], version: str | None) -> None:
    """Every exchange so far; the last answer gets the regenerate button."""
    for index, turn in enumerate(turns):
        with st.chat_message("user"):
            st.markdown(render.escape_block(turn["question"]))
        with st.chat_message("assistant"):
            if turn.get("answer"):
                draw_answer(client, turn, version, last=index == len(turns) - 1)
            else:
                st.error(turn.get("error") or "出错了。", icon="🚫")


def stream_answer(events: Any, question: str) -> dict[str, Any]:
    """Draw a streamed answer as it arrives; returns the turn to keep (its answer, or its error)."""
    status = st.empty()
    slot = st.empty()
    status.caption("🔎 正在检索笔记…")
    text, answer = "", None
    try:
        for kind, payload in events:
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
        return {"question": question, "answer": None, "error": exc.message, "feedback": None}
    status.empty()
    slot.empty()
    return {"question": question, "answer": answer, "error": None, "feedback": None}


# --- one answer ---------------------------------------------------------------------------------------------


def answer_key(answer: Answer) -> str:
    return answer.get("answer_id") or str(abs(hash(answer["question"] + answer["text"])))


def draw_answer(client: ApiClient, turn: dict[str, Any], version: str | None, *, last: bool) -> None:
    """The answer (or refusal), its source cards, how it was made, and its actions."""
    answer: Answer = turn["answer"]
    key = answer_key(answer)
    citations = answer.get("citations") or []
    if answer.get("refused"):
        st.warning(f"{render.escape_block(answer['text'])}\n\n{REFUSAL_HINT}", icon="🔍")
    else:
        numbers = {c["number"] for c in citations}
        st.markdown(render.answer_markdown(answer["text"], numbers, key), unsafe_allow_html=True)
    if answer.get("fallback_reason"):
        st.caption(
            "⚠️ 大模型调用失败，本回答由摘录式回答器根据原文生成。原因："
            + render.escape_markdown(str(answer["fallback_reason"]))
        )
    if answer.get("uncited"):
        st.caption("⚠️ 这个回答没有给出可核对的引用，请谨慎参考。")
    backend = answer.get("backend", "")
    if (
        not answer.get("refused")
        and (not backend or backend == "extractive")
        and render.is_english(answer["question"])
        and render.mostly_chinese(answer["text"])
    ):
        st.caption(NOTES_ONLY_HINT)
    if citations:
        st.markdown(f"**📎 来源（{len(citations)}）**")
        ranks = render.score_ranks([float(c.get("score", 0) or 0) for c in citations])
        for citation, (rank, relative) in zip(citations, ranks, strict=True):
            source_card(client, citation, key, version, rank, relative, len(citations))
    total = (answer.get("timings") or {}).get("total_ms")
    latency = f" · 用时 {render.format_ms(total)}" if isinstance(total, int | float) else ""
    st.caption(f"回答方式：{render.escape_markdown(render.backend_label(backend))}{latency}")
    actions(client, turn, key, last=last)
    explanation = answer.get("explanation")
    if explanation:
        with st.expander("🔎 检索详情", expanded=False):
            resolved = answer.get("resolved_question")
            if resolved and resolved != answer["question"]:
                st.caption("改写后的独立问题：" + render.escape_markdown(resolved))
            spelling = render.notes_spelling_note(explanation)
            if spelling:
                st.caption(render.escape_markdown(spelling))
            verdict = render.reader_verdict(explanation)
            if verdict:
                st.caption(render.escape_markdown(verdict))
            rows = render.reader_rows(explanation)
            if rows:
                st.dataframe(rows, hide_index=True, use_container_width=True)


def actions(client: ApiClient, turn: dict[str, Any], key: str, *, last: bool) -> None:
    """Feedback (one click records it), copy, and regenerate for the last answer."""
    answer: Answer = turn["answer"]
    row = st.container(horizontal=True, vertical_alignment="center", gap="small")
    with row:
        feedback_widget(client, turn, key)
        copy_button(answer["text"], key)
        if last:
            st.button("🔄 重新生成", key=f"regen-{key}", on_click=_request_regenerate, type="tertiary")
    entry = turn.get("feedback")
    if entry:
        shown = "👍 有帮助" if entry.get("rating") == "up" else "👎 没帮助"
        comment = f"；说明：{render.escape_markdown(entry['comment'])}" if entry.get("comment") else ""
        st.caption(f"已记录你的评价（{shown}）{comment}")
        with st.popover("✏️ 补充说明（可选）"):
            st.text_input("哪里好 / 哪里不对？", key=f"fbc-{key}", value=entry.get("comment") or "", max_chars=5000)
            st.button("保存说明", key=f"fbsave-{key}", on_click=_save_comment, args=(client, turn, key))


def _request_regenerate() -> None:
    st.session_state.regenerate = True


def feedback_widget(client: ApiClient, turn: dict[str, Any], key: str) -> None:
    entry = turn.get("feedback")
    default = None if not entry else (1 if entry.get("rating") == "up" else 0)
    st.feedback("thumbs", key=f"fb-{key}", default=default, on_change=_rate, args=(client, turn, key))


def _rate(client: ApiClient, turn: dict[str, Any], key: str) -> None:
    """The thumb was clicked: record the rating at once (or change it, or withdraw it)."""
    value = st.session_state.get(f"fb-{key}")
    answer: Answer = turn["answer"]
    entry = turn.get("feedback")
    try:
        if value is None:
            if entry:
                client.delete_feedback(int(entry["id"]))
            turn["feedback"] = None
            st.toast("已撤回评价。", icon="↩️")
            return
        rating = "up" if value == 1 else "down"
        if entry:
            turn["feedback"] = client.amend_feedback(int(entry["id"]), rating=rating)
        else:
            turn["feedback"] = client.feedback(
                rating, answer_id=answer.get("answer_id") or None, question=answer["question"]
            )
    except ApiError as exc:
        st.session_state.notice = ("error", f"评价没有保存：{exc.message}")
        return
    st.toast("已记录：有帮助，谢谢！" if rating == "up" else "已记录：没帮助。可以补充说明哪里不对。", icon="✅")


def _save_comment(client: ApiClient, turn: dict[str, Any], key: str) -> None:
    entry = turn.get("feedback")
    comment = str(st.session_state.get(f"fbc-{key}") or "").strip()
    if not entry:
        return
    try:
        turn["feedback"] = client.amend_feedback(int(entry["id"]), comment=comment)
    except ApiError as exc:
        st.session_state.notice = ("error", f"说明没有保存：{exc.message}")
        return
    st.toast("说明已保存。", icon="✅")


def copy_button(text: str, key: str) -> None:
    """A button that copies the answer's text (the clipboard API, or a selection where it is unavailable)."""
    st.html(style.copy_button_html(text, key), unsafe_allow_javascript=True, width="content")


# --- sources ------------------------------------------------------------------------------------------------


def source_card(
    client: ApiClient, c: Citation, key: str, version: str | None, rank: int, relative: float, count: int
) -> None:
    """One citation: document and section, its relevance as a bar, the readable passage in its context, a
    details line with the offsets, and "查看全文"."""
    st.markdown(f'<span id="{render.anchor_id(key, c["number"])}"></span>', unsafe_allow_html=True)
    label = f"[{c['number']}] {render.source_label(c['document'], c['heading_path'])}"
    with st.expander(render.escape_markdown(label), icon="📄"):
        section = render.source_label("", c["heading_path"]).lstrip(" ›") or "（无标题）"
        st.markdown(
            f"**文档**：{render.escape_markdown(c['document'])}  \n"
            f"**章节**：{render.escape_markdown(section)}"
        )
        st.progress(relative, text=f"相关度：第 {rank} / {count}（相对最相关来源 {relative:.0%}）")
        st.markdown("**引用原文**")
        st.markdown(render.readable_snippet(c["snippet"]), unsafe_allow_html=True)
        doc = load_document(client, c["doc_id"], version)
        start, end = c["start"], c["end"]
        if isinstance(doc, ApiError):
            st.caption(f"无法加载笔记预览：{doc.message}")
        else:
            start, end = render.locate_span(
                doc["text"], c["snippet"], c["start"], c["end"], c.get("snippet_start"), c.get("snippet_end")
            )
            st.markdown(f"**笔记上下文**（前后约 {render.PREVIEW_RADIUS} 字，引用处高亮）")
            with st.container(border=True):
                st.markdown(render.readable_preview(doc["text"], start, end), unsafe_allow_html=True)
            with st.container(horizontal=True, gap="small"):
                if st.button("📖 查看全文", key=f"full-{key}-{c['number']}"):
                    full_note(doc, start, end, c)
                original_link(client, doc, c, key)
        page = c.get("page")  # type: ignore[typeddict-item]
        page_text = f" · 第 {page} 页" if page else ""
        st.caption(
            f"详情：{render.escape_markdown(c['doc_id'])}{page_text} · 第 {c['start']}–{c['end']} 字符 · "
            f"检索分数 {float(c.get('score', 0) or 0):.3f}"
        )


@st.dialog("笔记全文", width="large")
def full_note(doc: DocumentDetail, start: int, end: int, c: Citation) -> None:
    """The whole note, readable, scrolled to the cited span, which is highlighted."""
    st.markdown(f"**{render.escape_markdown(doc.get('title') or doc['doc_id'])}**")
    st.caption(
        f"{render.escape_markdown(doc['doc_id'])} · 引用 [{c['number']}] 在第 {start}–{end} 字符（已高亮）"
    )
    st.html(
        f'<div class="rag-note" id="rag-note">{render.note_html(doc["text"], start, end)}</div>',
        width="stretch",
    )
    st.html(style.SCROLL_TO_CITED_JS, unsafe_allow_javascript=True, width="content")


def original_link(client: ApiClient, doc: DocumentDetail, c: Citation, key: str) -> None:
    """For a converted document (PDF, Word, web page): its original file, a PDF at the cited page. The browser
    opens the API's URL itself when no key is needed; with a key the UI fetches the file and offers it."""
    original = doc.get("original_url")  # type: ignore[typeddict-item]
    if not original or doc["doc_id"].lower().endswith(render.NOTE_SUFFIXES):
        return
    page = c.get("page")  # type: ignore[typeddict-item]
    label = f"📄 打开原文（第 {page} 页）" if page else "📄 打开原文"
    if not client.has_key:
        st.link_button(label, f"{client.base_url}{original}" + (f"#page={page}" if page else ""))
        return

    def data() -> bytes:
        try:
            return client.original(doc["doc_id"])
        except ApiError as exc:
            return exc.message.encode("utf-8")

    name = doc["doc_id"].rsplit("/", 1)[-1]
    st.download_button(label, data=data, file_name=name, key=f"orig-{key}-{c['number']}", on_click="ignore")


def load_document(client: ApiClient, doc_id: str, version: str | None) -> DocumentDetail | ApiError:
    """GET /documents/{doc_id}, cached per index version for the session."""
    cache: dict[tuple[str | None, str], DocumentDetail] = st.session_state.doc_cache
    key = (version, doc_id)
    if key not in cache:
        try:
            cache[key] = client.document(doc_id)
        except ApiError as exc:
            return exc
    return cache[key]


def turns_from(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored conversation's messages as the page's turns."""
    return [
        {"question": m["question"], "answer": m["answer"], "error": None, "feedback": m.get("feedback")}
        for m in detail.get("messages", [])
    ]
