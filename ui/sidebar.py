"""The sidebar: stored conversations (open, new, rename, export, delete), the knowledge base (which one, its
status, documents with delete, upload, ingest, the alias glossary) and the retrieval settings.

The knowledge-base selector (`st.session_state.kb`) decides what the documents, upload, re-ingest and new
chats use; a stored conversation keeps the knowledge base it was started with, and opening it selects that one.
"""

from __future__ import annotations

import math

import streamlit as st

from ui import ingest, render
from ui.chat import Options, turns_from
from ui.client import ApiClient, ApiError
from ui.schema import Stats

MODES: dict[str, str] = {"hybrid": "混合检索（BM25 + 向量）", "bm25": "关键词（BM25）", "dense": "向量（语义）"}
DEFAULT_MAX_UPLOAD_MB = 5.0
LISTED_CONVERSATIONS = 30
GLOSSARY_SOURCES = {"notes": "笔记", "user": "用户词表", "notes+user": "笔记 + 用户词表"}


def draw(client: ApiClient, stats: Stats | None) -> Options:
    with st.sidebar:
        conversations_panel(client)
        st.divider()
        st.header("📚 知识库")
        kb_selector()
        if stats is None:
            st.caption("未连接到问答服务，知识库信息暂不可用。")
        else:
            status_panel(stats)
            documents_panel(client)
            upload_panel(client, stats)
            ingest.panel(client)
            if st.button("🔤 查看别名词表", key="glossary", width="stretch"):
                glossary_dialog(client)
        st.divider()
        st.subheader("⚙️ 检索设置")
        top_k = st.slider("返回片段数（top-k）", min_value=1, max_value=10, value=5, key="top_k")
        mode = st.selectbox("检索模式", list(MODES), format_func=MODES.__getitem__, key="mode")
    return Options(top_k=int(top_k), mode=mode)


# --- which knowledge base -----------------------------------------------------------------------------------


def load_knowledge_bases(client: ApiClient) -> None:
    """Fetch the knowledge bases; keep the selection when it still exists, else select the default one. Sets
    `client.kb` so every knowledge-base scoped call of this run names the selected one."""
    try:
        kbs = client.kbs()
    except ApiError:
        kbs = []
    st.session_state.kb_list = kbs
    names = [kb["name"] for kb in kbs]
    if names and st.session_state.get("kb") not in names:
        st.session_state.kb = next((kb["name"] for kb in kbs if kb.get("default")), names[0])
    client.kb = st.session_state.get("kb") if names else None


def kb_label(kb: dict) -> str:
    """A knowledge base as the selector shows it: its name and how many documents it holds."""
    count = kb.get("documents")
    return f"{kb['name']}（{count} 篇）" if isinstance(count, int) else f"{kb['name']}（未入库）"


def kb_selector() -> None:
    kbs = st.session_state.get("kb_list") or []
    if not kbs:
        return
    labels = {kb["name"]: kb_label(kb) for kb in kbs}
    st.selectbox(
        "当前知识库", list(labels), key="kb", format_func=labels.__getitem__, on_change=_kb_changed,
        help="文档列表、上传、重新入库和新对话都使用这里选中的知识库。",
    )


def _kb_changed() -> None:
    """Another knowledge base: its documents, and a new chat (the open one stays with its own)."""
    conversation = st.session_state.conversation or {}
    if conversation.get("knowledge_base") != st.session_state.kb:
        new_conversation()
    st.session_state.doc_cache = {}
    st.session_state.confirm_delete = None


# --- conversations ---------------------------------------------------------------------------------------


def new_conversation() -> None:
    """Start afresh: the next question creates a stored conversation."""
    st.session_state.conversation = None
    st.session_state.turns = []
    st.session_state.regenerate = False
    st.query_params.pop("c", None)


def open_conversation(client: ApiClient, conversation_id: str) -> bool:
    """Load a stored conversation into the page (and the address bar, so a reload finds it again)."""
    try:
        detail = client.conversation(conversation_id)
    except ApiError as exc:
        new_conversation()
        if exc.status == 404:
            st.session_state.notice = ("warning", "找不到这个对话（可能已被删除），已开始新对话。")
        else:
            st.session_state.notice = ("error", exc.message)
        return False
    st.session_state.conversation = {k: v for k, v in detail.items() if k != "messages"}
    names = [kb["name"] for kb in st.session_state.get("kb_list") or []]
    if detail.get("knowledge_base") in names:  # the chat asks its own knowledge base: select it
        st.session_state.kb = detail["knowledge_base"]
        st.session_state.doc_cache = {}
    st.session_state.turns = turns_from(detail)
    st.session_state.regenerate = False
    st.query_params["c"] = detail["id"]
    return True


def conversations_panel(client: ApiClient) -> None:
    st.header("💬 对话")
    st.button("🆕 新对话", key="new_chat", width="stretch", on_click=new_conversation)
    try:
        items = client.conversations(limit=LISTED_CONVERSATIONS)
    except ApiError:
        st.caption("对话列表暂不可用。")
        return
    current = (st.session_state.conversation or {}).get("id")
    if not items:
        st.caption("还没有保存的对话：提问后会自动保存在这里。")
    for item in items:
        st.button(
            render.escape_markdown(item["title"]),
            key=f"conv-{item['id']}",
            width="stretch",
            type="primary" if item["id"] == current else "secondary",
            on_click=open_conversation,
            args=(client, item["id"]),
            help=f"知识库：{render.escape_markdown(item.get('knowledge_base') or '—')} · {item['turns']} 个问题 · "
            f"更新于 {render.format_time(item['updated_at'])}",
        )
    if current:
        manage_panel(client, st.session_state.conversation)


def manage_panel(client: ApiClient, info: dict) -> None:
    """Rename, export and delete the open conversation."""
    cid = info["id"]
    with st.expander("✏️ 管理当前对话"):
        st.caption(
            f"知识库：{render.escape_markdown(info.get('knowledge_base') or '—')} · "
            f"创建于 {render.format_time(info.get('created_at'))}"
        )
        st.text_input("对话标题", value=info.get("title", ""), key=f"title-{cid}", max_chars=200)
        st.button("保存标题", key=f"rename-{cid}", on_click=_rename, args=(client, cid))

        def export() -> str:
            try:
                return client.export_conversation(cid)
            except ApiError as exc:
                return f"导出失败：{exc.message}\n"

        st.download_button(
            "⬇️ 导出为 Markdown", data=export, file_name=f"conversation-{cid[:8]}.md", mime="text/markdown",
            key=f"export-{cid}", on_click="ignore",
        )
        sure = st.checkbox("确认删除这个对话", key=f"sure-{cid}")
        st.button("🗑️ 删除对话", key=f"delete-{cid}", disabled=not sure, on_click=_delete, args=(client, cid))


def _rename(client: ApiClient, cid: str) -> None:
    title = str(st.session_state.get(f"title-{cid}") or "").strip()
    if not title:
        st.session_state.notice = ("warning", "标题不能为空。")
        return
    try:
        info = client.rename_conversation(cid, title)
    except ApiError as exc:
        st.session_state.notice = ("error", exc.message)
        return
    st.session_state.conversation = dict(info)
    st.toast("标题已保存。", icon="✅")


def _delete(client: ApiClient, cid: str) -> None:
    try:
        client.delete_conversation(cid)
    except ApiError as exc:
        if exc.status != 404:
            st.session_state.notice = ("error", exc.message)
            return
    new_conversation()
    st.toast("对话已删除。", icon="🗑️")


# --- knowledge base --------------------------------------------------------------------------------------


def status_panel(stats: Stats) -> None:
    """Counts, last ingest, embedder and answerer, in plain words."""
    ready = bool(stats.get("ready"))
    col1, col2 = st.columns(2)
    col1.metric("文档", stats.get("documents", 0) if ready else "—")
    col2.metric("片段", stats.get("chunks", 0) if ready else "—")
    last = stats.get("last_ingest") or {}
    lines = [
        f"状态：{'✅ 就绪' if ready else '⚠️ 无索引'}",
        f"上次入库：{render.escape_markdown(render.format_time(last.get('at')))}",
        f"向量模型：{render.escape_markdown(render.embedder_label(stats.get('embedder')))}",
        f"回答方式：{render.escape_markdown(render.backend_label(stats.get('llm_backend')))}",
    ]
    st.caption("  \n".join(lines))


def documents_panel(client: ApiClient) -> None:
    try:
        docs = client.documents()
    except ApiError as exc:
        st.caption(f"文档列表不可用：{exc.message}")
        return
    busy = st.session_state.get("ingest_job") is not None
    with st.expander(f"📄 文档列表（{len(docs)}）", expanded=bool(st.session_state.get("confirm_delete"))):
        if not docs:
            st.caption("还没有文档。")
        for doc in docs:
            doc_id = doc["doc_id"]
            size = render.format_size(doc.get("size_bytes", 0))
            text, action = st.columns([5, 1], vertical_alignment="center")
            text.markdown(
                f"**{render.escape_markdown(doc.get('title') or doc_id)}**  \n"
                f"{render.escape_markdown(doc_id)} · {doc.get('chunks', 0)} 个片段 · {size}"
            )
            action.button(
                "🗑️", key=f"del-doc-{doc_id}", help="删除这篇笔记（会先确认）", disabled=busy,
                on_click=_ask_delete, args=(doc_id,),
            )
            if st.session_state.get("confirm_delete") == doc_id:
                confirm_delete(client, doc_id)


def _ask_delete(doc_id: str) -> None:
    st.session_state.confirm_delete = doc_id


def confirm_delete(client: ApiClient, doc_id: str) -> None:
    """The confirm step: deleting removes the file from the knowledge base's notes folder and re-ingests."""
    st.warning(f"确定删除“{render.escape_markdown(doc_id)}”吗？文件会从知识库的笔记文件夹中删除，并重新入库。")
    yes, no = st.columns(2)
    yes.button("确认删除", key="del-confirm", type="primary", on_click=_delete_note, args=(client, doc_id))
    no.button("取消", key="del-cancel", on_click=_ask_delete, args=(None,))


def _delete_note(client: ApiClient, doc_id: str) -> None:
    st.session_state.confirm_delete = None
    try:
        result = client.delete_document(doc_id)
    except ApiError as exc:
        st.session_state.notice = ("error", exc.message)
        return
    st.session_state.doc_cache = {}
    job = result.get("job") or {}
    if job.get("job_id"):
        st.session_state.ingest_job = {"id": str(job["job_id"]), "label": f"已删除 {doc_id}"}
    st.toast(f"已删除 {doc_id}，正在重新入库。", icon="🗑️")


def upload_panel(client: ApiClient, stats: Stats) -> None:
    """Upload one .md/.txt note (checked here too), then ingest it in the background."""
    max_mb = float(stats.get("max_upload_mb") or DEFAULT_MAX_UPLOAD_MB)
    uploaded = st.file_uploader(
        f"➕ 上传笔记（.md / .txt，≤ {max_mb:g} MB）",
        type=["md", "txt"],
        max_upload_size=max(1, math.ceil(max_mb)),
        key=f"uploader-{st.session_state.uploader_nonce}",
    )
    if uploaded is None:
        return
    problem = render.check_upload(uploaded.name, uploaded.size, int(max_mb * 1024 * 1024))
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
        ingest.start(client, full=False, label=f"已上传 {uploaded.name}")
        st.rerun()


@st.dialog("别名词表", width="large")
def glossary_dialog(client: ApiClient) -> None:
    """The alias groups used to expand questions, with where each came from (read-only)."""
    try:
        data = client.glossary()
    except ApiError as exc:
        st.error(exc.message)
        return
    groups = data.get("groups") or []
    sources = data.get("sources") or ["notes"] * len(groups)
    rows = [
        {"别名": " = ".join(group), "来源": GLOSSARY_SOURCES.get(source, source)}
        for group, source in zip(groups, sources, strict=False)
    ]
    counts = {name: sum(1 for r in rows if r["来源"] == name) for name in dict.fromkeys(r["来源"] for r in rows)}
    st.caption(
        f"共 {len(rows)} 组：" + "，".join(f"{name} {n} 组" for name, n in counts.items())
        + "。在 `corpus/glossary.txt` 里每行写一组别名可以添加；以 `-` 开头的行可以删除一组或组里的某个词。"
    )
    st.dataframe(rows, hide_index=True, width="stretch")
    removed = data.get("removed") or []
    if removed:
        st.markdown(f"**已移除（{len(removed)}）**")
        st.dataframe(
            [
                {"别名组": " = ".join(r.get("group") or []), "移除": " = ".join(r.get("removed") or [])}
                for r in removed
            ],
            hide_index=True,
            width="stretch",
        )
