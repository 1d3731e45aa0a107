"""End to end in real headless Chromium: the Streamlit UI, started by `rag ui` from a folder whose `.env` holds the
API's URL and key, against the real API (uvicorn thread, key required) over a temp copy of the bundled corpus plus
a hostile note.

At 1280 and 390 px, in the light and the dark theme: load, ask, open a source, open the full note, give feedback,
reload and find the conversation again; a screenshot of each state goes to the test's artefacts (a temp dir,
printed), visible text is asserted, and the highlight's contrast is read from computed styles.
Chromium is Debian's (/usr/bin/chromium, installed by `make browser`); Playwright drives it.
"""

from __future__ import annotations

import json
import os
import re
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
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from pydantic import SecretStr

from rag.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"
RAG = Path(sys.executable).with_name("rag")
KEY = "browser-test-key-0123456789"
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
def serve_ui(api_url: str, folder: Path) -> Iterator[str]:
    """`rag ui` run in `folder`, whose `.env` is the only place that names the API and its key; yields the UI URL
    once healthy."""
    port = free_port()
    (folder / ".env").write_text(f"RAG_API_URL={api_url}\nRAG_API_KEY={KEY}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    log_file = folder / "streamlit.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen([str(RAG), "ui", "--port", str(port)], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
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
    settings = Settings(_env_file=None, data_dir=data, corpus_dir=corpus, api_key=SecretStr(KEY))
    run_ingest(settings, embedder=embedder)
    engine = Engine(settings, embedder=embedder)
    engine.load()
    shots = tmp_path_factory.mktemp("ui-screenshots")
    print(f"\nscreenshots: {shots}")
    with serve_api(settings, engine) as api_url, serve_ui(api_url, root) as ui_url:
        yield {"api": api_url, "ui": ui_url, "shots": shots}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser: Browser, url: str, width: int, theme: str) -> Page:
    context = browser.new_context(
        viewport={"width": width, "height": 1400 if width > 600 else 844}, locale="zh-CN", color_scheme=theme
    )
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.goto(url, timeout=WAIT_MS)
    return pg


@pytest.fixture
def page(browser: Browser, stack: dict) -> Iterator[Page]:
    pg = open_page(browser, stack["ui"], 1280, "light")
    yield pg
    pg.context.close()


def api(stack: dict, path: str) -> Any:
    return httpx.get(f"{stack['api']}{path}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()


def contrast_of(element: Locator) -> float:
    """WCAG contrast ratio of an element's computed text colour against its computed background colour."""
    fg, bg = element.evaluate("e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]")

    def luminance(css: str) -> float:
        r, g, b = (int(v) / 255 for v in re.findall(r"[\d.]+", css)[:3])
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    assert "rgba(0, 0, 0, 0)" not in bg, "the highlight sets its own background"
    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def ask(page: Page, question: str) -> Locator:
    """Type a question into the chat input and wait for the finished answer; returns its message."""
    box = page.get_by_placeholder("向你的笔记提问", exact=False)
    expect(box).to_be_editable(timeout=WAIT_MS)
    box.fill(question)
    box.press("Enter")
    message = page.locator("[data-testid='stChatMessage']").nth(1)
    # while a rerun replaces the streamed answer, the message can briefly hold both: wait on the first
    expect(message.get_by_text("回答方式", exact=False).first).to_be_visible(timeout=WAIT_MS)
    # a new conversation reruns the page once (the sidebar lists it): wait until that run has replaced the first
    expect(message.locator("button.rag-copy")).to_have_count(1)
    expect(page.locator("[data-stale='true']")).to_have_count(0)
    expect(message.get_by_text("回答方式", exact=False)).to_have_count(1)
    return message


def open_card(card: Locator) -> None:
    """Open a source card. Opening one fetches its note, and the rerun that follows can land after the click and
    render the card closed again: open it until its body shows."""
    body = card.get_by_text("引用原文")
    for attempt in range(3):
        if not body.is_visible():
            card.locator("summary").click()
        try:
            expect(body).to_be_visible(timeout=15_000)
            return
        except AssertionError:
            if attempt == 2:
                raise


def click_in_card(card: Locator, button: str) -> None:
    """Click a button in an open source card, opening the card again if a late rerun closed it."""
    for attempt in range(3):
        open_card(card)
        try:
            card.get_by_role("button", name=button).click(timeout=15_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def open_full_note(page: Page, card: Locator) -> Locator:
    """Click "查看全文" in a source card until the note's dialog shows (a rerun landing just after the click can
    swallow it), and return the dialog."""
    dialog = page.locator("[role='dialog']")
    for attempt in range(3):
        click_in_card(card, "查看全文")
        try:
            expect(dialog.get_by_text("笔记全文")).to_be_visible(timeout=15_000)
            return dialog
        except AssertionError:
            if attempt == 2:
                raise
    return dialog


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_load_ask_source_full_note_feedback_reload(browser: Browser, stack: dict, width: int, theme: str) -> None:
    shots = stack["shots"]
    name = f"{width}-{theme}"
    pg = open_page(browser, stack["ui"], width, theme)
    try:
        # load: the short placeholder fits the input, even at phone width
        box = pg.get_by_placeholder("向你的笔记提问", exact=False)
        expect(box).to_be_editable()
        expect(pg.get_by_text("AI 笔记问答").first).to_be_visible()
        assert box.evaluate("e => e.scrollWidth <= e.clientWidth + 1 && e.scrollHeight <= e.clientHeight + 1")
        pg.screenshot(path=str(shots / f"{name}-1-load.png"))

        # ask: the streamed answer, its linked citation and how it was made, in plain words
        message = ask(pg, DEV_QUESTION)
        expect(message.get_by_text("摘录式回答（未配置大模型）", exact=False)).to_be_visible()
        links = message.locator("sup a[href^='#src-']")
        expect(links.first).to_be_visible()
        expect(message.get_by_role("button", name="复制")).to_be_visible()
        assert "?c=" in pg.url, "the conversation is in the address"
        pg.screenshot(path=str(shots / f"{name}-2-answer.png"))

        # open a source: title, a rank bar, the readable passage with its highlight
        card = message.locator("[data-testid='stExpander']").first
        open_card(card)
        expect(card.get_by_text("相关度：第 1", exact=False)).to_be_visible()
        mark = card.locator("mark").first
        expect(mark).to_be_visible()
        assert contrast_of(mark) >= 4.5
        assert "###" not in card.inner_text()
        mark.scroll_into_view_if_needed()
        pg.screenshot(path=str(shots / f"{name}-3-source.png"))

        # the whole note, scrolled to the cited span, which is highlighted
        dialog = open_full_note(pg, card)
        expect(dialog.get_by_text("笔记全文")).to_be_visible()
        cited = dialog.locator("mark#rag-cited")
        expect(cited).to_be_in_viewport()
        assert contrast_of(cited) >= 4.5
        note = dialog.locator("#rag-note")
        assert note.evaluate("e => e.scrollTop") > 0 or cited.evaluate("e => e.offsetTop") < 400, "scrolled to it"
        pg.screenshot(path=str(shots / f"{name}-4-full-note.png"))
        pg.keyboard.press("Escape")
        expect(dialog).to_have_count(0)

        # feedback: one click is recorded, the thumb stays filled, a toast says so
        up = message.locator("button[aria-label='Thumbs up']")
        up.scroll_into_view_if_needed()
        up.click()
        expect(pg.get_by_text("已记录：有帮助", exact=False).first).to_be_visible()
        chosen = message.locator("button[aria-label='Thumbs up']")
        expect(chosen).to_have_attribute("aria-checked", "true")
        icon = chosen.locator("[data-testid='stIconMaterial']")
        assert "FILL" in icon.evaluate("e => getComputedStyle(e).fontVariationSettings"), "the chosen thumb is filled"
        pg.screenshot(path=str(shots / f"{name}-5-feedback.png"))
        cid = pg.url.split("?c=", 1)[1].split("&")[0]
        stored = api(stack, f"/conversations/{cid}")["messages"]
        assert stored[-1]["feedback"]["rating"] == "up"

        # reload: the same conversation, with its feedback
        pg.reload()
        again = pg.locator("[data-testid='stChatMessage']")
        expect(again.nth(0).get_by_text(DEV_QUESTION[:10], exact=False)).to_be_visible()
        expect(again.nth(1).get_by_text("摘录式回答（未配置大模型）", exact=False)).to_be_visible()
        expect(again.nth(1).get_by_text("已记录你的评价（👍", exact=False)).to_be_visible()
        expect(again.nth(1).locator("button[aria-label='Thumbs up']")).to_have_attribute("aria-checked", "true")
        pg.screenshot(path=str(shots / f"{name}-6-reload.png"))
        assert len(list(shots.glob(f"{name}-*.png"))) == 6

        # a citation link jumps to its card on the same page (no new tab, no navigation away)
        link = again.nth(1).locator("sup a[href^='#src-']").first
        pages_before = len(pg.context.pages)
        link.click()
        expect(pg).to_have_url(re.compile(re.escape("#" + link.get_attribute("href")[1:]) + "$"))
        assert len(pg.context.pages) == pages_before
    finally:
        pg.context.close()


def test_hostile_note_executes_nothing(page: Page) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined"
    message = ask(page, "什么是跨站脚本攻击？怎么防御？")
    cards = message.locator("[data-testid='stExpander']")
    # every card is read at once, before one is opened: opening one reruns the page, and a late rerun may replace
    # the cards between reading one and the next (a card read by its index then waits for one that is gone)
    texts = cards.all_inner_texts()
    hostile = [i for i, text in enumerate(texts) if "跨站脚本防护笔记" in text or "xss-note" in text]
    assert hostile, "the hostile note is cited"
    open_card(cards.nth(hostile[0]))
    # The card's note preview shows the tags as the characters they are (the API strips them from answers and
    # snippets; the note's own text is shown as text)...
    expect(message.get_by_text("<script>window.__xss=1</script>", exact=False).first).to_be_visible()
    expect(message.get_by_text('onerror="window.__xss=1"', exact=False).first).to_be_visible()
    # ...and nothing of them became markup.
    assert page.locator("a[href^='javascript:']").count() == 0
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("script:has-text('__xss')").count() == 0
    page.wait_for_timeout(1000)  # give a (wrongly) injected onerror handler the chance to run
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_selecting_a_second_knowledge_base_switches_documents_and_chat(page: Page, stack: dict) -> None:
    """A knowledge base made over the API appears in the sidebar selector; choosing it shows its documents and
    a question is answered from its note."""
    note = "# 茶艺\n\n龙井茶宜用八十度左右的水冲泡，第一泡浸泡约一分钟。\n"
    with httpx.Client(base_url=stack["api"], headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
        assert http.post("/kbs", json={"name": "second"}).status_code == 201
        sent = http.post("/documents", data={"kb": "second"}, files={"file": ("茶艺.md", note.encode(), "text/markdown")})
        assert sent.status_code == 201, sent.text
        job = http.post("/ingest", json={"kb": "second"}).json()
        deadline = time.monotonic() + 300
        while http.get(f"/ingest/{job['job_id']}").json()["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
    page.reload()
    sidebar = page.locator("[data-testid='stSidebar']")
    sidebar.locator("[data-testid='stSelectbox']").filter(has_text="当前知识库").click()
    page.get_by_role("option", name="second（1 篇）").click()
    expect(sidebar.get_by_text("文档列表（1）", exact=False)).to_be_visible()
    message = ask(page, "龙井茶用多少度的水冲泡？")
    expect(message.get_by_text("茶艺", exact=False).first).to_be_visible()
    expect(page.locator("#stMain [data-testid='stCaptionContainer']").filter(has_text="知识库：second").first).to_be_visible()
