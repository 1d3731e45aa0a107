"""Stored conversations over HTTP (`/conversations`), against the real API app under uvicorn: create, list,
ask within, regenerate, rename, export, delete; feedback attached to stored answers; auth, limits, a restart,
and hostile titles kept as text."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live import LiveServer, assert_error, read_sse
from pydantic import SecretStr

from rag.api import create_app
from rag.api.conversations import conversation_markdown
from rag.config import Settings
from rag.conversations_store import MAX_TITLE_CHARS, ConversationStore

API_KEY = "conversation-key-0123456789"
QUESTION = "什么是 LoRA？"
FOLLOW_UP = "它最重要的超参数是什么？"
UNESCAPED = re.compile(r"(?<!\\)[<>\[\]`*_]")  # markup characters not backslash-escaped
HOSTILE_TITLES = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    "[点我](javascript:window.__xss=1)",
    "# 标题 **粗** `代码` | 表格 |",
]


def settings_for(root: Path, base: Settings, **overrides: Any) -> Settings:
    data = root / "data"
    if not data.exists():
        (data / "cache").mkdir(parents=True)
        os.symlink(base.models_dir.resolve(), data / "models")
    return Settings(_env_file=None, **({"data_dir": data, "corpus_dir": base.corpus_dir} | overrides))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, engine) -> Iterator[LiveServer]:
    settings = settings_for(tmp_path_factory.mktemp("conversations"), base_settings)
    with LiveServer(create_app(settings, engine=engine)) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def new_conversation(client: httpx.Client, **body: Any) -> dict:
    response = client.post("/conversations", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_ask_follow_up_rename_export_delete(client: httpx.Client) -> None:
    created = new_conversation(client)
    cid = created["id"]
    assert created["title"] == "新对话" and created["turns"] == 0 and created["knowledge_base"] == "default"
    assert cid in [c["id"] for c in client.get("/conversations").json()["conversations"]]

    first = client.post(f"/conversations/{cid}/ask", json={"question": QUESTION})
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["citations"] and answer["answer_id"]
    # The follow-up gets the stored turn as history: it is resolved against "LoRA".
    second = client.post(f"/conversations/{cid}/ask", json={"question": FOLLOW_UP}).json()
    assert "LoRA" in second["resolved_question"]

    shown = client.get(f"/conversations/{cid}").json()
    assert shown["title"] == QUESTION, "an untitled conversation is named after its first question"
    assert [m["question"] for m in shown["messages"]] == [QUESTION, FOLLOW_UP]
    stored = shown["messages"][0]["answer"]
    assert stored["text"] == answer["text"] and stored["answer_id"] == answer["answer_id"]
    assert stored["citations"] == answer["citations"] and "explanation" not in stored
    assert shown["turns"] == 2 and shown["messages"][0]["feedback"] is None

    renamed = client.patch(f"/conversations/{cid}", json={"title": "  LoRA\n超参数  "})
    assert renamed.status_code == 200 and renamed.json()["title"] == "LoRA 超参数"

    export = client.get(f"/conversations/{cid}/export")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/markdown")
    assert f'filename="conversation-{cid}.md"' in export.headers["content-disposition"]
    md = export.text
    assert md.startswith("# LoRA 超参数\n") and "## 1. 什么是 LoRA？" in md and "## 2. " in md
    cited = answer["citations"][0]
    assert cited["doc_id"] in md and f"第 {cited['start']}–{cited['end']} 字符" in md
    assert "**来源**" in md and "   > " in md

    assert client.delete(f"/conversations/{cid}").status_code == 204
    assert_error(client.get(f"/conversations/{cid}"), 404, "not_found")
    assert_error(client.delete(f"/conversations/{cid}"), 404, "not_found")
    assert cid not in [c["id"] for c in client.get("/conversations").json()["conversations"]]


def test_streamed_ask_is_stored_and_regenerate_replaces_the_last_answer(client: httpx.Client) -> None:
    cid = new_conversation(client, title="流式")["id"]
    with client.stream("POST", f"/conversations/{cid}/ask", json={"question": QUESTION, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_sse(r)
    kinds = [k for k, _ in events]
    assert kinds[0] == "citations" and kinds[-1] == "done"
    done = events[-1][1]
    shown = client.get(f"/conversations/{cid}").json()
    assert shown["title"] == "流式", "a given title is kept"
    assert [m["answer_id"] for m in shown["messages"]] == [done["answer_id"]]

    regenerated = client.post(f"/conversations/{cid}/regenerate", json={}).json()
    assert regenerated["question"] == QUESTION and regenerated["answer_id"] != done["answer_id"]
    messages = client.get(f"/conversations/{cid}").json()["messages"]
    assert len(messages) == 1 and messages[0]["answer_id"] == regenerated["answer_id"]

    empty = new_conversation(client)["id"]
    assert_error(client.post(f"/conversations/{empty}/regenerate"), 404, "not_found")


def test_feedback_is_one_record_amended_and_shown_with_the_stored_answer(client: httpx.Client) -> None:
    cid = new_conversation(client)["id"]
    answer = client.post(f"/conversations/{cid}/ask", json={"question": QUESTION}).json()
    entry = client.post("/feedback", json={"rating": "up", "answer_id": answer["answer_id"], "question": QUESTION})
    assert entry.status_code == 201
    entry_id = entry.json()["id"]
    assert client.get(f"/conversations/{cid}").json()["messages"][0]["feedback"]["rating"] == "up"

    amended = client.patch(f"/feedback/{entry_id}", json={"comment": "漏了秩的取值"})
    assert amended.status_code == 200 and amended.json() == {**entry.json(), "comment": "漏了秩的取值"}
    flipped = client.patch(f"/feedback/{entry_id}", json={"rating": "down"}).json()
    assert flipped["rating"] == "down" and flipped["comment"] == "漏了秩的取值"
    shown = client.get(f"/conversations/{cid}").json()["messages"][0]["feedback"]
    assert shown == flipped
    mine = [f for f in client.get("/feedback").json()["feedback"] if f["answer_id"] == answer["answer_id"]]
    assert len(mine) == 1, "the comment amends the click's record instead of adding another"

    assert_error(client.patch("/feedback/999999999", json={"comment": "x"}), 404, "not_found")
    assert_error(client.patch(f"/feedback/{entry_id}", json={"rating": True}), 422)


def test_every_conversation_route_needs_the_key(
    tmp_path: Path, base_settings: Settings, engine
) -> None:
    settings = settings_for(tmp_path, base_settings, api_key=SecretStr(API_KEY))
    with LiveServer(create_app(settings, engine=engine)) as live, live.client() as anon:
        keyed = live.client(headers={"Authorization": f"Bearer {API_KEY}"})
        cid = keyed.post("/conversations", json={}).json()["id"]
        answer = keyed.post(f"/conversations/{cid}/ask", json={"question": QUESTION}).json()
        entry = keyed.post("/feedback", json={"rating": "up", "answer_id": answer["answer_id"]}).json()
        calls = [
            ("GET", "/conversations", None),
            ("POST", "/conversations", {}),
            ("GET", f"/conversations/{cid}", None),
            ("PATCH", f"/conversations/{cid}", {"title": "x"}),
            ("GET", f"/conversations/{cid}/export", None),
            ("POST", f"/conversations/{cid}/ask", {"question": QUESTION}),
            ("POST", f"/conversations/{cid}/regenerate", {}),
            ("PATCH", f"/feedback/{entry['id']}", {"comment": "x"}),
            ("DELETE", f"/conversations/{cid}", None),
        ]
        for method, path, body in calls:
            assert_error(anon.request(method, path, json=body), 401, "unauthorized")
            wrong = anon.request(method, path, json=body, headers={"Authorization": "Bearer " + "x" * len(API_KEY)})
            assert_error(wrong, 401, "unauthorized")
        shown = keyed.get(f"/conversations/{cid}").json()
        assert shown["title"] == QUESTION and len(shown["messages"]) == 1, "refused calls changed nothing"
        for method, path, body in calls:
            assert keyed.request(method, path, json=body).status_code < 400, (method, path)
        keyed.close()


def test_limits_and_a_restart(tmp_path: Path, base_settings: Settings, engine) -> None:
    settings = settings_for(tmp_path, base_settings, max_conversations=2, max_conversation_turns=1)
    with LiveServer(create_app(settings, engine=engine)) as live, live.client() as client:
        first = new_conversation(client, title="保留")["id"]
        new_conversation(client)
        assert_error(client.post("/conversations", json={}), 409, "limit_exceeded")
        assert client.post(f"/conversations/{first}/ask", json={"question": QUESTION}).status_code == 200
        full = client.post(f"/conversations/{first}/ask", json={"question": FOLLOW_UP})
        assert "limit" in assert_error(full, 409, "limit_exceeded")["message"]
        too_long = client.post("/conversations", json={"title": "长" * (MAX_TITLE_CHARS + 1)})
        assert_error(too_long, 422, "validation_error")
        assert_error(client.patch(f"/conversations/{first}", json={"title": 5}), 422)
        assert client.patch(f"/conversations/{first}", json={"title": " \n "}).json()["title"] == "新对话"
        assert client.patch(f"/conversations/{first}", json={"title": "保留"}).json()["title"] == "保留"
        assert_error(client.get("/conversations", params={"limit": 0}), 422)
        for bad in ("not-a-conversation", "0" * 32, "%00"):
            assert_error(client.get(f"/conversations/{bad}"), 404)
    # A restart (a new app over the same data dir) finds the conversation and its answer.
    with LiveServer(create_app(settings, engine=engine)) as live, live.client() as client:
        shown = client.get(f"/conversations/{first}").json()
        assert shown["title"] == "保留" and [m["question"] for m in shown["messages"]] == [QUESTION]
        assert len(client.get("/conversations").json()["conversations"]) == 2


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_hostile_titles_are_kept_as_text(client: httpx.Client, title: str) -> None:
    created = new_conversation(client, title=title)
    assert created["title"] == title
    shown = client.get(f"/conversations/{created['id']}").json()
    assert shown["title"] == title
    md = client.get(f"/conversations/{created['id']}/export").text
    heading = md.splitlines()[0]
    assert UNESCAPED.search(heading[2:]) is None, heading
    assert heading.replace("\\", "") == f"# {title}", "escaping keeps every character"


def test_titles_with_control_characters_and_lone_surrogates(client: httpx.Client) -> None:
    created = new_conversation(client, title="第一行\n第二行\r\n\u2028第三行\x00")
    assert created["title"] == "第一行 第二行 第三行"
    raw = b'{"title": "\\ud800 \xe5\x9d\x8f"}'  # a lone surrogate escape: valid JSON, not a Unicode string
    response = client.post("/conversations", content=raw, headers={"Content-Type": "application/json"})
    assert "surrogate" in assert_error(response, 400, "invalid_input")["message"]
    blank = new_conversation(client, title="   ")
    assert blank["title"] == "新对话"


def test_markdown_export_escapes_answers_and_snippets(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "c.sqlite")
    info = store.create("导出", "corpus")
    citation = {
        "number": 1, "doc_id": "x.md", "document": "<b>文档</b>", "heading_path": ["章节"], "start": 3, "end": 9,
        "snippet": "<script>alert(1)</script>\n第二行",
    }
    store.add_turn(info.id, "问题 [x](javascript:1)", {"text": "答案<img src=x>[1]", "citations": [citation]})
    md = conversation_markdown(store.get(info.id))
    ours = re.sub(r"(?m)^   > ", "", md.replace("**来源**", ""))  # the export's own markup
    assert UNESCAPED.search(ours) is None, md
    assert "\\<script\\>alert(1)\\</script\\>" in md and "答案\\<img src=x\\>\\[1\\]" in md
    assert json.loads(json.dumps(md)) == md
