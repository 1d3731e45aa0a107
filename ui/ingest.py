"""Ingest jobs the page follows: started from the sidebar, followed by a fragment that polls the job while
the rest of the page stays usable (questions included), resumed after a reload, ended with a notice."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui import render
from ui.client import ApiClient, ApiError
from ui.schema import Stats

POLL_SECONDS = 1.0


def start(client: ApiClient, *, full: bool, label: str) -> None:
    """Start an ingest job (or follow the one already running); the page follows it from the next run."""
    try:
        try:
            job = client.start_ingest(full=full)
        except ApiError as exc:
            running = (client.stats().get("ingest_job") or {}) if exc.status == 409 else {}
            if not running.get("job_id") or running.get("state") not in ("queued", "running"):
                raise
            job = running
            label = "已有入库任务在运行"
    except ApiError as exc:
        st.session_state.notice = ("error", exc.message)
        return
    st.session_state.ingest_job = {"id": str(job["job_id"]), "label": label}


def _start_clicked(client: ApiClient) -> None:
    """The 重新入库 button: start with the 完全重建 choice, then clear the tick for the next click."""
    start(client, full=bool(st.session_state.get("ingest_full")), label="重新入库")
    st.session_state.ingest_full = False


def panel(client: ApiClient) -> None:
    """The sidebar controls: full-rebuild tick and the button (disabled while a job runs)."""
    busy = st.session_state.get("ingest_job") is not None
    st.checkbox("完全重建（重新计算所有向量）", key="ingest_full", disabled=busy)
    st.button(
        "🔄 重新入库", key="reingest", width="stretch", disabled=busy, on_click=_start_clicked, args=(client,),
        help="入库在后台进行，页面可以继续使用。",
    )


def follow(client: ApiClient, stats: Stats | None) -> None:
    """Show the running job's progress in a fragment that refreshes itself; pick up a job the server is
    running when this page did not start it (after a reload)."""
    if st.session_state.get("ingest_job") is None and stats:
        latest: dict[str, Any] = stats.get("ingest_job") or {}
        if latest.get("state") in ("queued", "running") and latest.get("job_id"):
            st.session_state.ingest_job = {"id": str(latest["job_id"]), "label": "入库"}
    if st.session_state.get("ingest_job") is not None:
        st.fragment(_progress, run_every=POLL_SECONDS)(client)


def _progress(client: ApiClient) -> None:
    ref = st.session_state.get("ingest_job")
    if ref is None:
        return
    try:
        job = client.ingest_job(ref["id"])
    except ApiError as exc:
        if exc.status == 404:  # the server restarted and forgot it
            st.session_state.ingest_job = None
        st.caption(f"无法获取入库进度：{exc.message}")
        return
    if job.get("state") in ("queued", "running"):
        fraction, text = render.overall_progress(job.get("progress"))
        st.progress(fraction, text=f"🔄 {ref['label']}：{text}")
        st.caption("入库在后台进行，可以继续提问；完成后会在这里提示。")
        return
    st.session_state.ingest_job = None
    st.session_state.doc_cache = {}
    if job.get("state") == "succeeded":
        text = render.ingest_summary_text(job.get("summary") or {})
        st.session_state.notice = ("success", render.escape_markdown(f"{ref['label']}：{text}"))
        st.toast("入库完成", icon="✅")
    else:
        error = job.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        st.session_state.notice = ("error", render.escape_markdown(f"{ref['label']}：入库失败。{message or ''}"))
    st.rerun(scope="app")  # the counts, the documents and the buttons change
