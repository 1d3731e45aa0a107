"""HTTP client for the question-answering API, used by the chat UI.

Typed methods, one per endpoint, and one error type, `ApiError`, whose `message` is a Chinese sentence
telling the user what went wrong and what to do (markdown-safe: server details are escaped).
Nothing is read from the environment here; the caller passes the URL and key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from ui.render import escape_markdown
from ui.schema import (
    Answer,
    ConversationDetail,
    ConversationInfo,
    DocumentDetail,
    DocumentInfo,
    FeedbackEntry,
    IngestJob,
    Mode,
    Rating,
    Stats,
    StreamEvent,
    Turn,
)

DEFAULT_API_URL = "http://127.0.0.1:8000"



class ApiError(Exception):
    """A failed API call. `message` is for the user (Chinese, markdown-safe); `status`/`code` for code."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


# Status of each error code the API sends, for errors that arrive inside a stream (no HTTP status). Kept equal
# to the server's codes by a test (tests/test_ui_apptest.py): ui/ may not import the server's modules.
ERROR_STATUS = {
    # rag.errors
    "invalid_input": 400,
    "not_found": 404,
    "index_not_ready": 503,
    "index_corrupted": 503,
    "ingest_busy": 409,
    "ingest_failed": 500,
    "model_unavailable": 503,
    "generation_failed": 502,
    "unauthorized": 401,
    "already_exists": 409,
    "payload_too_large": 413,
    "overloaded": 503,
    "timeout": 503,
    "corpus_unavailable": 503,
    "limit_exceeded": 409,
    "invalid_settings": 400,
    "feedback_unavailable": 503,
    # rag.knowledge_bases
    "kb_not_found": 404,
    "kb_busy": 409,
    "kb_empty": 409,
    "too_many_kbs": 409,
    # the HTTP edge (rag.api.routes)
    "bad_request": 400,
    "malformed_json": 400,
    "forbidden": 403,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "conflict": 409,
    "unsupported_media_type": 415,
    "validation_error": 422,
    "too_many_requests": 429,
    "unavailable": 503,
    "internal_error": 500,
}


def _detail(text: str) -> str:
    text = " ".join(str(text).split())
    return escape_markdown(text[:300] + ("…" if len(text) > 300 else ""))


def error_for_status(status: int, code: str, server_message: str) -> ApiError:
    """The user-facing error for an HTTP error status (or a streamed error event with `code`)."""
    detail = f"（服务端信息：{_detail(server_message)}）" if server_message else ""
    if status == 401 or code == "unauthorized":
        msg = (
            "访问被拒绝（401）：问答服务要求访问密钥。请把环境变量 `RAG_API_KEY` 设为服务端配置的密钥，"
            "然后重新启动界面（`rag ui`）。"
        )
    elif status == 403:
        msg = f"没有权限（403）：请检查 `RAG_API_KEY` 是否正确。{detail}"
    elif status == 408:
        msg = f"请求超时（408）：请重试。{detail}"
    elif code in ("overloaded", "timeout") or status == 429:
        msg = f"服务正忙（{status}）：请稍后重试。{detail}"
    elif code == "limit_exceeded":
        msg = f"已达上限（409）：{detail or '请删除一些旧对话，或开始新对话。'}"
    elif code == "model_unavailable":
        msg = f"向量模型不可用（503）：请运行 `rag model` 准备模型后重启 `rag serve`。{detail}"
    elif status == 503 or code in ("index_not_ready", "index_corrupted"):
        msg = (
            "知识库索引尚未就绪（503）：请先运行 `rag ingest` 构建索引（或点击侧边栏的“重新入库”），"
            f"然后重试。{detail}"
        )
    elif status == 413:
        msg = f"内容太大（413）：请缩小文件或问题后重试。{detail}"
    elif code == "kb_empty":
        msg = f"这个知识库还没有索引：请先上传笔记并点击侧边栏的“重新入库”。{detail}"
    elif status == 409:
        msg = f"操作冲突（409）：{detail or '资源已存在或有任务正在运行。'}"
    elif code == "kb_not_found":
        msg = f"找不到这个知识库（404）：它可能已被删除或改名，请在侧边栏重新选择知识库。{detail}"
    elif status == 404:
        msg = f"未找到（404）。{detail}"
    elif status in (400, 422):
        msg = f"请求无效（{status}）。{detail}"
    elif status == 502 or code == "generation_failed":
        msg = f"生成回答失败：大模型服务出错，请稍后重试。{detail}"
    else:
        msg = f"问答服务出错（{status}）：请查看 `rag serve` 的日志后重试。{detail}"
    return ApiError(msg, status=status, code=code)


class ApiClient:
    """Synchronous client for the API at `base_url` (Bearer `api_key` when given).

    `kb` is the knowledge base the knowledge-base scoped calls name (documents, upload, ingest, stats, search,
    ask, glossary, feedback, new conversations); None = the server's default.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.has_key = bool(api_key)
        self.kb: str | None = None
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------

    def _transport_error(self, exc: httpx.HTTPError) -> ApiError:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return ApiError(
                f"请求超时：问答服务在 {self.timeout:.0f} 秒内没有响应。请稍后重试；"
                "若一直超时，请查看 `rag serve` 的日志。",
                code="timeout",
            )
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ApiError(
                f"无法连接到问答服务（`{self.base_url.replace('`', '')}`）。请先在终端运行 `rag serve` 启动 API，"
                "或检查环境变量 `RAG_API_URL` 是否指向正在运行的服务，然后刷新页面重试。",
                code="unreachable",
            )
        return ApiError(
            f"与问答服务通信失败：{_detail(type(exc).__name__ + ': ' + str(exc))}。请重试。",
            code="transport",
        )

    def _raise_for(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        code, message = "error", ""
        try:
            err = response.json().get("error") or {}
            code, message = str(err.get("code") or "error"), str(err.get("message") or "")
        except (ValueError, AttributeError):
            message = response.text[:300]
        raise error_for_status(response.status_code, code, message)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        self._raise_for(response)
        if response.status_code == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError("问答服务返回了无法解析的响应：请确认 `RAG_API_URL` 指向本项目的 API。") from exc

    def _kb(self) -> dict[str, str]:
        """The `kb` parameter or field of a knowledge-base scoped call (nothing for the server's default)."""
        return {"kb": self.kb} if self.kb else {}

    # --- endpoints ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """GET /healthz."""
        return self._request("GET", "/healthz")

    def ready(self) -> bool:
        """True when GET /readyz says the index is loaded (False on 503)."""
        try:
            self._request("GET", "/readyz")
        except ApiError as exc:
            if exc.status == 503:
                return False
            raise
        return True

    def stats(self) -> Stats:
        """GET /stats: readiness, counts, embedder, LLM backend, last ingest."""
        return self._request("GET", "/stats", params=self._kb())

    def kbs(self) -> list[dict[str, Any]]:
        """GET /kbs: the knowledge bases (the default one first) with their counts."""
        return self._request("GET", "/kbs").get("kbs", [])

    def documents(self) -> list[DocumentInfo]:
        """GET /documents."""
        data = self._request("GET", "/documents", params=self._kb())
        return data.get("documents", []) if isinstance(data, dict) else data

    def document(self, doc_id: str) -> DocumentDetail:
        """GET /documents/{doc_id}: the raw note text and its chunks."""
        return self._request("GET", f"/documents/{quote(doc_id, safe='/')}", params=self._kb())

    def delete_document(self, doc_id: str) -> dict[str, Any]:
        """DELETE /documents/{doc_id}: remove the note and start the re-ingest (the answer names its job)."""
        return self._request("DELETE", f"/documents/{quote(doc_id, safe='/')}", params=self._kb())

    def original(self, doc_id: str) -> bytes:
        """GET /documents/{doc_id}/original: the document's file as it lies in the corpus (PDF, Word, web page)."""
        try:
            response = self._http.get(f"/documents/{quote(doc_id, safe='/')}/original", params=self._kb())
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        self._raise_for(response)
        return response.content

    def upload(self, filename: str, content: bytes, *, overwrite: bool = False) -> dict[str, Any]:
        """POST /documents with one note as multipart field `file` (409 when it exists, unless overwrite)."""
        mime = "text/markdown" if filename.lower().endswith(".md") else "text/plain"
        params = {"overwrite": "true"} if overwrite else None
        return self._request(
            "POST", "/documents", files={"file": (filename, content, mime)}, params=params, data=self._kb()
        )

    def start_ingest(self, full: bool = False) -> IngestJob:
        """POST /ingest: start a background ingest job."""
        return self._request("POST", "/ingest", json={"full": full, **self._kb()})

    def ingest_job(self, job_id: str) -> IngestJob:
        """GET /ingest/{job_id}: state and per-stage progress."""
        return self._request("GET", f"/ingest/{quote(job_id, safe='')}")

    def feedback(
        self,
        rating: Rating,
        *,
        answer_id: str | None = None,
        question: str | None = None,
        comment: str | None = None,
    ) -> FeedbackEntry:
        """POST /feedback for one answer."""
        body: dict[str, Any] = {"rating": rating, **self._kb()}
        if answer_id:
            body["answer_id"] = answer_id
        if question:
            body["question"] = question
        if comment:
            body["comment"] = comment
        return self._request("POST", "/feedback", json=body)

    def search(
        self, query: str, *, top_k: int | None = None, mode: Mode = "hybrid", explain: bool = False
    ) -> dict[str, Any]:
        """POST /search: ranked passages without an answer."""
        body: dict[str, Any] = {"query": query, "mode": mode, "explain": explain, **self._kb()}
        if top_k:
            body["top_k"] = top_k
        return self._request("POST", "/search", json=body)

    def _ask_body(
        self, question: str, history: Sequence[Turn], top_k: int | None, mode: Mode, explain: bool, stream: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            **self._kb(),
            "question": question,
            "history": [{"role": t["role"], "content": t["content"]} for t in history],
            "mode": mode,
            "explain": explain,
            "stream": stream,
        }
        if top_k:
            body["top_k"] = top_k
        return body

    def ask(
        self,
        question: str,
        *,
        history: Sequence[Turn] = (),
        top_k: int | None = None,
        mode: Mode = "hybrid",
        explain: bool = False,
    ) -> Answer:
        """POST /ask (not streamed): the complete answer."""
        return self._request("POST", "/ask", json=self._ask_body(question, history, top_k, mode, explain, False))

    def ask_stream(
        self,
        question: str,
        *,
        history: Sequence[Turn] = (),
        top_k: int | None = None,
        mode: Mode = "hybrid",
        explain: bool = False,
    ) -> Iterator[StreamEvent]:
        """POST /ask with stream: true; yields ("citations", [...]), ("token", text)…, ("done", Answer).

        A streamed `error` event, or a stream that ends without `done`, raises ApiError.
        """
        return self._answer_stream("/ask", self._ask_body(question, history, top_k, mode, explain, True))

    def _answer_stream(self, path: str, body: dict[str, Any]) -> Iterator[StreamEvent]:
        """The events of a streamed answer from `path` (/ask, or a conversation's ask and regenerate)."""
        try:
            with self._http.stream("POST", path, json=body, headers={"Accept": "text/event-stream"}) as response:
                if not response.is_success:
                    response.read()
                    self._raise_for(response)
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    response.read()
                    answer: Answer = response.json()
                    yield "citations", answer.get("citations", [])
                    yield "token", answer.get("text", "")
                    yield "done", answer
                    return
                for event, data in _parse_sse(response.iter_lines()):
                    if event == "error":
                        err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
                        code = str(err.get("code") or "error")
                        raise error_for_status(ERROR_STATUS.get(code, 500), code, str(err.get("message") or ""))
                    if event == "citations":
                        yield "citations", data or []
                    elif event == "token":
                        yield "token", data.get("text", "") if isinstance(data, dict) else str(data)
                    elif event == "done":
                        yield "done", data
                        return
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        except ValueError as exc:
            raise ApiError("问答服务返回了无法解析的流式响应，请重试。") from exc
        raise ApiError("回答流意外中断（没有收到完整回答），请重试。", code="stream_incomplete")

    # --- conversations --------------------------------------------------------------------------

    def conversations(self, limit: int = 50) -> list[ConversationInfo]:
        """GET /conversations: most recently updated first."""
        return self._request("GET", "/conversations", params={"limit": limit}).get("conversations", [])

    def create_conversation(self, title: str | None = None) -> ConversationInfo:
        """POST /conversations: a conversation with the client's knowledge base (its questions are asked there)."""
        return self._request("POST", "/conversations", json=({"title": title} if title else {}) | self._kb())

    def conversation(self, conversation_id: str) -> ConversationDetail:
        """GET /conversations/{id}: the conversation with its stored turns and their feedback."""
        return self._request("GET", f"/conversations/{quote(conversation_id, safe='')}")

    def rename_conversation(self, conversation_id: str, title: str) -> ConversationInfo:
        return self._request("PATCH", f"/conversations/{quote(conversation_id, safe='')}", json={"title": title})

    def delete_conversation(self, conversation_id: str) -> None:
        self._request("DELETE", f"/conversations/{quote(conversation_id, safe='')}")

    def export_conversation(self, conversation_id: str) -> str:
        """GET /conversations/{id}/export: Markdown with the citations."""
        try:
            response = self._http.get(f"/conversations/{quote(conversation_id, safe='')}/export")
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        self._raise_for(response)
        return response.text

    def conversation_ask_stream(
        self, conversation_id: str, question: str, *, top_k: int | None = None, mode: Mode = "hybrid",
        explain: bool = False,
    ) -> Iterator[StreamEvent]:
        """POST /conversations/{id}/ask (streamed): the server adds the history and stores the exchange."""
        body: dict[str, Any] = {"question": question, "mode": mode, "explain": explain, "stream": True}
        if top_k:
            body["top_k"] = top_k
        return self._answer_stream(f"/conversations/{quote(conversation_id, safe='')}/ask", body)

    def regenerate_stream(
        self, conversation_id: str, *, top_k: int | None = None, mode: Mode = "hybrid", explain: bool = False
    ) -> Iterator[StreamEvent]:
        """POST /conversations/{id}/regenerate (streamed): a new answer replaces the last one."""
        body: dict[str, Any] = {"mode": mode, "explain": explain, "stream": True}
        if top_k:
            body["top_k"] = top_k
        return self._answer_stream(f"/conversations/{quote(conversation_id, safe='')}/regenerate", body)

    def amend_feedback(
        self, entry_id: int, *, rating: Rating | None = None, comment: str | None = None
    ) -> FeedbackEntry:
        """PATCH /feedback/{id}: change the rating or set the comment ("" removes it)."""
        body: dict[str, Any] = {}
        if rating is not None:
            body["rating"] = rating
        if comment is not None:
            body["comment"] = comment
        return self._request("PATCH", f"/feedback/{int(entry_id)}", json=body)

    def delete_feedback(self, entry_id: int) -> None:
        self._request("DELETE", f"/feedback/{int(entry_id)}")

    def glossary(self) -> dict[str, Any]:
        """GET /glossary: alias groups, with where each came from when the server says."""
        return self._request("GET", "/glossary", params=self._kb())


def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """Server-sent events as (event name, JSON-decoded data); comments and keep-alives are skipped."""
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event, json.loads("\n".join(data))
