"""The Streamlit chat UI (ui/app.py) driven by AppTest against a real API server, plus its pure helpers
(ui/render.py) and HTTP client (ui/client.py).

Each API here is the real `rag.api` app served by uvicorn on a free local port; nothing of ours is mocked.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from streamlit.testing.v1 import AppTest

from rag.config import Settings
from ui import render
from ui.client import ApiClient, ApiError

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "ui" / "app.py")
CORPUS = ROOT / "corpus"
DEV = [json.loads(line) for line in (ROOT / "eval" / "dev.jsonl").read_text("utf-8").splitlines() if line.strip()]
DEV_QUESTION = next(q for q in DEV if q["answerable"])["question"]
OFF_TOPIC = "今天上海天气怎么样？"
TIMEOUT = 60

XSS_NOTE = """# 跨站脚本防护笔记

## 跨站脚本攻击（XSS）

跨站脚本攻击（XSS）是一种注入攻击：攻击者把恶意脚本写进页面，例如 <script>window.__xss=1</script> 这样的标签。
另一种常见的跨站脚本载荷是 <img src=x onerror="window.__xss=1"> 图片标签，还有 [x](javascript:window.__xss=1) 这样的链接。
防御跨站脚本攻击的办法是对输出进行转义，并设置内容安全策略（CSP）。
"""


# --- real servers -------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_api(settings: Settings, engine: Any = None) -> Iterator[str]:
    """The real API app for `settings` under uvicorn in a thread; yields its base URL."""
    from rag.api import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(settings, engine=engine), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def private_settings(root: Path, base: Settings, **overrides: Any) -> Settings:
    """Settings for a private data dir under `root` (feedback, jobs), sharing the converted model."""
    data = root / "data"
    (data / "cache").mkdir(parents=True)
    (data / "models").symlink_to(base.models_dir.resolve())
    return Settings(_env_file=None, **({"data_dir": data, "corpus_dir": CORPUS} | overrides))


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, engine) -> Iterator[str]:
    """The API over the bundled corpus (shared engine, private feedback store)."""
    settings = private_settings(tmp_path_factory.mktemp("ui-api"), base_settings)
    with serve_api(settings, engine) as url:
        yield url


@pytest.fixture(scope="module")
def locked_api_url(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, engine) -> Iterator[str]:
    """The same API, but requiring a Bearer key."""
    settings = private_settings(tmp_path_factory.mktemp("ui-api-key"), base_settings, api_key="s3cret-key")
    with serve_api(settings, engine) as url:
        yield url


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Callable[..., AppTest]:
    """An AppTest of ui/app.py talking to `url` (and sending `key` when given)."""

    def make(url: str, key: str | None = None) -> AppTest:
        monkeypatch.setenv("RAG_API_URL", url)
        if key is None:
            monkeypatch.delenv("RAG_API_KEY", raising=False)
        else:
            monkeypatch.setenv("RAG_API_KEY", key)
        return AppTest.from_file(APP, default_timeout=TIMEOUT).run()

    return make


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def last_assistant(at: AppTest):
    messages = [m for m in at.chat_message if m.name == "assistant"]
    assert messages, "no assistant message"
    return messages[-1]


def html_markdown(node) -> list[str]:
    """Markdown bodies rendered with unsafe_allow_html inside `node`."""
    return [m.value for m in node.markdown if m.proto.allow_html]


# --- chat ---------------------------------------------------------------------------------------------


def test_chat_answer_has_linked_citations_and_source_cards(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), DEV_QUESTION)
    assert not at.error
    msg = last_assistant(at)
    answer = html_markdown(msg)[0]
    assert '<sup><a href="#src-' in answer
    cards = [e for e in msg.expander if e.label.startswith("\\[")]
    assert cards, [e.label for e in msg.expander]
    doc_ids = {d["doc_id"] for d in httpx.get(f"{api_url}/documents").json()["documents"]}
    titles = {d["title"] for d in httpx.get(f"{api_url}/documents").json()["documents"]}
    first = cards[0]
    body = "\n".join(m.value for m in first.markdown)
    assert any(render.escape_markdown(t) in first.label for t in titles)
    assert any(render.escape_markdown(d) in body for d in doc_ids)
    # The snippet and the note preview both highlight the cited span.
    assert sum("<mark>" in m for m in html_markdown(first)) >= 2
    # Every [n] link in the answer points at an anchor placed before a card.
    anchors = {m.value for m in msg.markdown if m.value.startswith('<span id="src-')}
    for n in render.citation_numbers(at.session_state.messages[-1]["answer"]["text"]):
        assert any(f'-{n}"' in a for a in anchors)
    captions = " ".join(c.value for c in msg.caption)
    assert "extractive" in captions and "秒" in captions
    details = [e for e in msg.expander if "检索详情" in e.label]
    assert details and details[0].json, "the explanation block is shown"


def test_follow_up_question_uses_history(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), "什么是 LoRA？")
    at = ask(at, "它最重要的超参数是什么？")
    details = [e for e in last_assistant(at).expander if "检索详情" in e.label][0]
    rewritten = " ".join(c.value for c in details.caption)
    assert "改写后的独立问题" in rewritten and "LoRA" in rewritten
    assert len([m for m in at.chat_message if m.name == "user"]) == 2


def test_new_chat_clears_the_conversation(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), DEV_QUESTION)
    assert len(at.chat_message) == 2
    at.button(key="new_chat").click().run()
    assert len(at.chat_message) == 0
    assert at.session_state.messages == []


def test_refusal_looks_different(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), OFF_TOPIC)
    msg = last_assistant(at)
    assert msg.warning, "refusals are shown as a warning box"
    assert "换个说法" in msg.warning[0].value and "上传" in msg.warning[0].value
    assert not [e for e in msg.expander if e.label.startswith("\\[")], "a refusal has no source cards"
    assert not html_markdown(msg)


def test_feedback_with_comment_is_stored(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), DEV_QUESTION)
    answer_id = at.session_state.messages[-1]["answer"]["answer_id"]
    at.get("feedback")[0].set_value(0).run()  # 👎
    at.text_input(key=f"fbc-{answer_id}").input("答案漏了秩的取值范围")
    at.button[[b.label for b in at.button].index("提交反馈")].click().run()
    assert not at.exception
    assert any("已收到你的反馈" in c.value for c in last_assistant(at).caption)
    stored = httpx.get(f"{api_url}/feedback").json()["feedback"]
    mine = [f for f in stored if f.get("answer_id") == answer_id]
    assert mine and mine[0]["rating"] in ("down", -1) and mine[0]["comment"] == "答案漏了秩的取值范围"


# --- sidebar -----------------------------------------------------------------------------------------


def test_sidebar_shows_status_documents_and_settings(app: Callable[..., AppTest], api_url: str) -> None:
    at = app(api_url)
    stats = httpx.get(f"{api_url}/stats").json()
    metrics = {m.label: m.value for m in at.sidebar.metric}
    assert metrics == {"文档": str(stats["documents"]), "片段": str(stats["chunks"])}
    status = " ".join(c.value for c in at.sidebar.caption)
    assert "extractive" in status and render.escape_markdown(stats["embedder"]) in status
    docs_box = [e for e in at.sidebar.expander if "文档列表" in e.label][0]
    assert f"（{stats['documents']}）" in docs_box.label
    assert len(docs_box.markdown) == stats["documents"]
    assert at.slider(key="top_k").min == 1 and at.slider(key="top_k").max == 10
    assert at.selectbox(key="mode").options == list(render_modes())


def render_modes() -> list[str]:
    from ui.app import MODES

    return list(MODES.values())


def test_top_k_and_mode_reach_the_api(app: Callable[..., AppTest], api_url: str) -> None:
    at = app(api_url)
    at.slider(key="top_k").set_value(1)
    at.selectbox(key="mode").set_value("bm25")
    at = ask(at.run(), DEV_QUESTION)
    answer = at.session_state.messages[-1]["answer"]
    assert len(answer["citations"]) <= 1
    assert answer["explanation"]["mode"] == "bm25" and answer["explanation"]["top_k"] == 1


def test_upload_reingest_and_escaped_rendering(
    app: Callable[..., AppTest], make_settings: Callable[..., Settings], embedder, tmp_path: Path
) -> None:
    """Upload a hostile note through the sidebar, ingest it, ask about it: everything shows as text."""
    from rag.engine import Engine

    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    settings = make_settings(corpus_dir=corpus)
    from ingest.pipeline import run_ingest

    run_ingest(settings, embedder=embedder)
    eng = Engine(settings, embedder=embedder)
    eng.load()
    with serve_api(settings, eng) as url:
        at = app(url)
        before = int(at.sidebar.metric[0].value)
        at.sidebar.file_uploader[0].set_value(("xss防护.md", XSS_NOTE.encode(), "text/markdown")).run()
        at.button(key="upload").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert any("入库完成" in s.value for s in at.success)
        assert int(at.sidebar.metric[0].value) == before + 1
        assert (corpus / "xss防护.md").read_bytes() == XSS_NOTE.encode()

        at = ask(at, "什么是跨站脚本攻击？怎么防御？")
        msg = last_assistant(at)
        cards = [e for e in msg.expander if "xss防护" in e.label or "跨站脚本防护笔记" in e.label]
        assert cards, [e.label for e in msg.expander]
        shown = "\n".join(m.value for m in msg.markdown)
        assert "&lt;script&gt;window\\.\\_\\_xss\\=1&lt;/script&gt;" in shown
        for body in [m.value for m in at.markdown]:
            lowered = body.lower()
            assert "<script" not in lowered and "<img" not in lowered and "](javascript" not in lowered

        # A second upload of the same name is refused with a clear message, not a traceback.
        at.sidebar.file_uploader[0].set_value(("xss防护.md", XSS_NOTE.encode(), "text/markdown")).run()
        at.button(key="upload").click().run()
        assert not at.exception
        assert any("已存在同名笔记" in e.value for e in at.error)


def test_bad_upload_is_refused_client_side(app: Callable[..., AppTest], api_url: str) -> None:
    at = app(api_url)
    at.sidebar.file_uploader[0].set_value(("空笔记.md", b"", "text/markdown")).run()
    assert any("空文件" in e.value for e in at.sidebar.error)
    assert "upload" not in [b.key for b in at.button]


# --- error banners -----------------------------------------------------------------------------------


def test_unreachable_api_shows_guidance_not_a_traceback(app: Callable[..., AppTest]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    at = app(url)
    assert not at.exception
    banner = at.error[0].value
    assert "无法连接" in banner and "rag serve" in banner and "RAG_API_URL" in banner
    at = ask(at, DEV_QUESTION)
    assert any("rag serve" in e.value for e in last_assistant(at).error)


def test_missing_api_key_shows_401_guidance(app: Callable[..., AppTest], locked_api_url: str) -> None:
    at = app(locked_api_url)
    assert not at.exception
    assert at.error and "401" in at.error[0].value and "RAG_API_KEY" in at.error[0].value
    at = app(locked_api_url, key="s3cret-key")
    assert not at.error and at.sidebar.metric, "with the key the same server works"


def test_missing_index_shows_ingest_guidance(
    app: Callable[..., AppTest], make_settings: Callable[..., Settings]
) -> None:
    with serve_api(make_settings()) as url:
        assert httpx.get(f"{url}/readyz").status_code == 503
        at = app(url)
        assert not at.exception
        assert any("rag ingest" in w.value for w in at.warning)
        at = ask(at, DEV_QUESTION)
        errors = [e.value for e in last_assistant(at).error]
        assert errors and "503" in errors[0] and "rag ingest" in errors[0]


# --- client --------------------------------------------------------------------------------------------


def test_client_streams_citations_tokens_then_the_answer(api_url: str) -> None:
    with ApiClient(api_url) as client:
        events = list(client.ask_stream(DEV_QUESTION, explain=True))
        kinds = [k for k, _ in events]
        assert kinds[0] == "citations" and kinds[-1] == "done" and "token" in kinds
        answer = events[-1][1]
        assert "".join(p for k, p in events if k == "token") == answer["text"]
        assert answer["citations"] and not answer["refused"]
        doc = client.document(answer["citations"][0]["doc_id"])
        c = answer["citations"][0]
        assert doc["text"][c["start"]:c["end"]]
        with pytest.raises(ApiError) as err:
            client.document("no-such-note.md")
        assert err.value.status == 404


def test_client_timeout_is_a_clear_error() -> None:
    """A server that accepts the connection but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with ApiClient(url, timeout=0.5) as client, pytest.raises(ApiError) as err:
            client.stats()
    assert err.value.code == "timeout" and "超时" in err.value.message and "重试" in err.value.message


def test_client_errors_carry_chinese_guidance(locked_api_url: str) -> None:
    with ApiClient(locked_api_url) as client, pytest.raises(ApiError) as err:
        client.stats()
    assert err.value.status == 401 and "RAG_API_KEY" in err.value.message
    with ApiClient(locked_api_url, "s3cret-key") as client:
        assert client.stats()["ready"] is True
        with pytest.raises(ApiError) as bad:
            client.ask("   ")
        assert bad.value.status == 400 and "请求无效" in bad.value.message


# --- pure rendering helpers ----------------------------------------------------------------------------

HOSTILE = '<script>window.__xss=1</script> <img src=x onerror="window.__xss=1"> [x](javascript:window.__xss=1)'


def test_escape_markdown_neutralises_html_and_markdown() -> None:
    out = render.escape_markdown(HOSTILE + " **粗** `code` $x$ :red[红] # 标题")
    for raw in ("<script", "<img", "](", "**", "$x$", ":red[", '"'):
        assert raw not in out
    assert re.search(r"(?<!\\)[`*\[\]()$#]", out) is None, "every active character is backslash-escaped"
    assert "&lt;script&gt;" in out and "\\[x\\]\\(javascript\\:" in out


def test_escape_block_keeps_lines_but_no_block_syntax() -> None:
    out = render.escape_block("# 标题\n    缩进代码\n- 列表\n> 引用\n1. 编号")
    lines = out.split("  \n")
    assert lines[0] == "\\# 标题"
    assert lines[1] == "\u00a0" * 4 + "缩进代码"
    assert lines[2].startswith("\\-") and lines[3].startswith("&gt;") and lines[4] == "1\\. 编号"


def test_answer_markdown_links_only_known_citations() -> None:
    out = render.answer_markdown("结论一[1]。结论二[2, 3]。无效[9]。<b>粗</b>", {1, 2, 3}, "ab-c!d")
    assert out.count('<a href="#src-ab-cd-') == 3
    assert '<a href="#src-ab-cd-1">\\[1\\]</a>' in out and '#src-ab-cd-3"' in out
    assert "\\[9\\]" in out and "#src-ab-cd-9" not in out
    assert "&lt;b&gt;" in out and "<b>" not in out
    assert render.citation_numbers("a[2]b[1, 2]c[3]") == [2, 1, 3]


def test_preview_window_is_radius_either_side_and_highlights_the_span() -> None:
    text = "甲" * 1000 + "被引用的句子。" + "乙" * 1000
    start, end = 1000, 1007
    w = render.preview_window(text, start, end, radius=300)
    assert (len(w.before), w.span, len(w.after)) == (300, "被引用的句子。", 300)
    assert w.clipped_start and w.clipped_end
    md = render.preview_markdown(text, start, end, radius=300)
    assert md.startswith("…") and md.endswith("…")
    assert "<mark>被引用的句子。</mark>" in md
    near_start = render.preview_window(text, 10, 12, radius=300)
    assert not near_start.clipped_start and len(near_start.before) == 10


def test_highlight_marks_each_line_and_escapes_inside() -> None:
    md = render.highlight("前<", "第一行*\n\n第三行", ">后")
    assert "前&lt;<mark>第一行\\*</mark>" in md
    assert "<mark>第三行</mark>&gt;后" in md
    assert "<mark></mark>" not in md
    indented = render.highlight("前文\n", "    缩进的引用", "")
    assert indented.endswith("\u00a0" * 4 + "<mark>缩进的引用</mark>"), "indentation stays outside the mark"


def test_locate_span_prefers_matching_offsets_then_search() -> None:
    text = "开头。被引用的句子。结尾。"
    assert render.locate_span(text, "被引用的句子。", 0, len(text), 3, 10) == (3, 10)
    assert render.locate_span(text, "被引用的句子。", 0, len(text), None, None) == (3, 10)
    assert render.locate_span(text, "找不到", 3, 10, None, None) == (3, 10)


def test_check_upload_rules() -> None:
    mb = 1024 * 1024
    assert render.check_upload("笔记 1.md", 10, mb) is None
    assert render.check_upload("notes.txt", 10, mb) is None
    assert "路径" in render.check_upload("../etc/passwd.md", 10, mb)
    assert "路径" in render.check_upload("a\\b.md", 10, mb)
    assert ".md" in render.check_upload("image.png", 10, mb)
    assert "点开头" in render.check_upload(".hidden.md", 10, mb)
    assert "空文件" in render.check_upload("a.md", 0, mb)
    assert "上限" in render.check_upload("a.md", mb + 1, mb)
    assert "太长" in render.check_upload("长" * 130 + ".md", 10, mb)


def test_small_formatters() -> None:
    assert render.ingest_progress({"files": {"done": 5, "total": 5}, "embeddings": {"done": 2, "total": 8}}) == (
        "embeddings", 2, 8,
    )
    assert render.ingest_progress({"files": {"done": 5, "total": 5}}) == ("files", 5, 5)
    assert render.ingest_progress(None) == (None, 0, 0)
    assert render.fraction(3, 0) == 0.0 and render.fraction(5, 4) == 1.0
    assert render.format_size(2048) == "2.0 KB"
    assert render.format_ms(85.4) == "85 毫秒" and render.format_ms(1250) == "1.2 秒"
    assert render.format_time(None) == "—"
    assert render.format_time("2024-05-01T12:00:00Z")[:4] == "2024"
    assert render.heading_text([]) == "（无标题）" and render.heading_text(["A", "B"]) == "A › B"
