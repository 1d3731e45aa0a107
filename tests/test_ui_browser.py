"""End to end in real headless Chromium: the Streamlit UI (subprocess) against the real API (uvicorn thread)
over a temp copy of the bundled corpus plus a hostile note.

Chromium is Debian's (/usr/bin/chromium, installed by `make browser`); Playwright drives it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from rag.config import Settings

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "ui" / "app.py"
CORPUS = ROOT / "corpus"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
WAIT_MS = 90_000
DEV_QUESTION = json.loads((ROOT / "eval" / "dev.jsonl").read_text("utf-8").splitlines()[0])["question"]

XSS_NOTE = """# 跨站脚本防护笔记

## 跨站脚本攻击（XSS）

跨站脚本攻击（XSS）是一种注入攻击：攻击者把恶意脚本写进页面，例如 <script>window.__xss=1</script> 这样的标签。
另一种常见的跨站脚本载荷是 <img src=x onerror="window.__xss=1"> 图片标签，还有 [x](javascript:window.__xss=1) 这样的链接。
防御跨站脚本攻击的办法是对输出进行转义，并设置内容安全策略（CSP）。
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_api(settings: Settings, engine: Any) -> Iterator[str]:
    """The real API app under uvicorn in a thread; yields its base URL."""
    from rag.api import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, engine=engine), host="127.0.0.1", port=port, log_level="warning")
    )
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


@contextmanager
def serve_ui(api_url: str, log_file: Path) -> Iterator[str]:
    """`streamlit run ui/app.py` as a subprocess pointed at `api_url`; yields the UI URL once healthy."""
    port = free_port()
    env = {**os.environ, "RAG_API_URL": api_url}
    env.pop("RAG_API_KEY", None)
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "viewer",
    ]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + WAIT_MS / 1000
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited: {log_file.read_text(errors='replace')[-2000:]}")
                try:
                    if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("streamlit did not become healthy")
                time.sleep(0.25)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, embedder, corpus_index) -> Iterator[dict]:
    """API + UI over the bundled corpus plus the hostile note; yields their URLs."""
    from ingest.pipeline import run_ingest
    from rag.engine import Engine

    root = tmp_path_factory.mktemp("ui-browser")
    corpus = root / "corpus"
    shutil.copytree(CORPUS, corpus)
    (corpus / "xss-note.md").write_text(XSS_NOTE, encoding="utf-8")
    data = root / "data"
    (data / "cache").mkdir(parents=True)
    (data / "models").symlink_to(base_settings.models_dir.resolve())
    shared_cache = base_settings.cache_dir / "embeddings.sqlite"
    if shared_cache.exists():
        shutil.copy(shared_cache, data / "cache" / "embeddings.sqlite")
    settings = Settings(_env_file=None, data_dir=data, corpus_dir=corpus)
    run_ingest(settings, embedder=embedder)
    engine = Engine(settings, embedder=embedder)
    engine.load()
    with serve_api(settings, engine) as api_url, serve_ui(api_url, root / "streamlit.log") as ui_url:
        yield {"api": api_url, "ui": ui_url}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, stack: dict) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1400}, locale="zh-CN")
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.goto(stack["ui"], timeout=WAIT_MS)
    yield pg
    context.close()


def ask(page: Page, question: str) -> Locator:
    """Type a question into the chat input and wait for the finished answer; returns its message."""
    box = page.get_by_placeholder("向你的笔记提问", exact=False)
    expect(box).to_be_editable(timeout=WAIT_MS)
    box.fill(question)
    box.press("Enter")
    message = page.locator("[data-testid='stChatMessage']").nth(1)
    expect(message.get_by_text("回答后端", exact=False)).to_be_visible(timeout=WAIT_MS)
    return message


def test_streamed_answer_with_openable_citation_card(page: Page, stack: dict) -> None:
    message = ask(page, DEV_QUESTION)
    links = message.locator("sup a[href^='#src-']")
    expect(links.first).to_be_visible()
    card = message.locator("[data-testid='stExpander']").first
    label = card.locator("summary").inner_text()
    titles = [d["title"] for d in httpx.get(f"{stack['api']}/documents").json()["documents"]]
    title = next(t for t in titles if t in label)
    card.locator("summary").click()
    expect(card.get_by_text(f"文档：{title}", exact=False)).to_be_visible()
    expect(card.locator("mark").first).to_be_visible()
    expect(card.get_by_text("笔记上下文", exact=False)).to_be_visible()
    page.get_by_text("AI 笔记问答").first.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui.png"))
    assert (ARTIFACTS / "ui.png").stat().st_size > 10_000

    # A citation link jumps to its card on the same page (no new tab, no navigation away).
    pages_before = len(page.context.pages)
    links.first.click()
    expect(page).to_have_url(f"{stack['ui']}/#{links.first.get_attribute('href')[1:]}")
    assert len(page.context.pages) == pages_before


def test_hostile_note_executes_nothing(page: Page) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined"
    message = ask(page, "什么是跨站脚本攻击？怎么防御？")
    cards = message.locator("[data-testid='stExpander']")
    opened = 0
    for i in range(cards.count()):
        card = cards.nth(i)
        if "跨站脚本防护笔记" in card.locator("summary").inner_text() or "xss-note" in card.inner_text():
            card.locator("summary").click()
            opened += 1
    assert opened, "the hostile note is cited"
    # The payloads are on screen as text...
    expect(message.get_by_text("<script>window.__xss=1</script>", exact=False).first).to_be_visible()
    expect(message.get_by_text('onerror="window.__xss=1"', exact=False).first).to_be_visible()
    expect(message.get_by_text("[x](javascript:window.__xss=1)", exact=False).first).to_be_visible()
    # ...and nothing of them became markup.
    assert page.locator("a[href^='javascript:']").count() == 0
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("script:has-text('__xss')").count() == 0
    page.wait_for_timeout(1000)  # give a (wrongly) injected onerror handler the chance to run
    assert page.evaluate("typeof window.__xss") == "undefined"
