"""Knowledge bases over the HTTP API (a real uvicorn server): CRUD and its errors, isolation of answers,
ingest jobs of two knowledge bases at once, deleting a note, the OpenAI `model`, and idle unloading.

The default knowledge base serves the session's built index (never re-ingested here); the others are tiny
corpora written by the tests and ingested through POST /ingest.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import CORPUS
from live import LiveServer, assert_error, wait_for_job

from rag.api import create_app
from rag.config import Settings
from rag.engine import Engine
from rag.index import WriteLock

PETS = {
    "猫咪护理.md": "# 猫咪护理\n\n布偶猫（Ragdoll）是一种性格温顺的长毛猫品种，成年布偶猫体重可达九公斤。每天需要梳毛一次以防毛球。\n",
    "狗狗训练.md": "# 狗狗训练\n\n边境牧羊犬（Border Collie）被认为是最聪明的犬种，训练时要用正向强化，每次训练不超过十五分钟。\n",
    "鹦鹉饮食.md": "# 鹦鹉饮食\n\n非洲灰鹦鹉需要均衡饮食。牛油果对鹦鹉有毒，绝对不能喂食鹦鹉牛油果。\n",
}
SPACE = {
    "火星探测.md": "# 火星探测\n\n毅力号火星车于 2021 年在杰泽罗撞击坑着陆，携带了机智号火星直升机。\n",
    "木星卫星.md": "# 木星卫星\n\n木卫二（欧罗巴）的冰壳下可能存在液态海洋，是寻找地外生命的重点目标。\n",
}
CAT_QUESTION = "布偶猫成年后体重能到多少？"
PARROT_QUESTION = "鹦鹉能吃牛油果吗？"
LORA_QUESTION = "LoRA 微调里最重要的超参数是什么？"
IDLE = 2.0


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, corpus_index) -> Settings:
    """A private data dir whose default knowledge base is the session's built index (read, never written)."""
    data = tmp_path_factory.mktemp("kbs") / "data"
    (data / "cache").mkdir(parents=True)
    os.symlink(base_settings.models_dir.resolve(), data / "models")
    shutil.copy(base_settings.cache_dir / "embeddings.sqlite", data / "cache" / "embeddings.sqlite")
    return Settings(
        _env_file=None, data_dir=data, corpus_dir=CORPUS, index_path=base_settings.index_dir, max_kbs=5,
        kb_idle_seconds=IDLE, index_poll_seconds=0.5,
    )


@pytest.fixture(scope="module")
def server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings, engine=engine)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def upload(client: httpx.Client, kb: str, notes: dict[str, str]) -> None:
    for name, text in notes.items():
        response = client.post("/documents", data={"kb": kb}, files={"file": (name, text.encode(), "text/markdown")})
        assert response.status_code == 201, response.text


def cited(answer: dict) -> set[str]:
    return {c["doc_id"] for c in answer["citations"]}


@pytest.fixture(scope="module")
def two_kbs(client: httpx.Client, settings: Settings) -> dict[str, str]:
    """`pets` and `space` created, filled and ingested by two jobs running at once; returns their job ids."""
    for name in ("pets", "space"):
        created = client.post("/kbs", json={"name": name})
        assert created.status_code == 201, created.text
        assert created.json()["corpus"] == f"kbs/{name}/corpus" and created.json()["documents"] is None
    upload(client, "pets", PETS)
    upload(client, "space", SPACE)
    assert sorted(p.name for p in (settings.data_dir / "kbs" / "pets" / "corpus").iterdir()) == sorted(PETS)
    pets = client.post("/ingest", json={"kb": "pets"})
    space = client.post("/ingest", json={"kb": "space"})
    assert pets.status_code == space.status_code == 202, (pets.text, space.text)
    assert pets.json()["kb"] == "pets" and space.json()["kb"] == "space"
    # a second job on the same knowledge base is refused while the first is queued or running
    again = assert_error(client.post("/ingest", json={"kb": "pets"}), 409, "ingest_busy")
    assert "another ingest is running" in again["message"] and "pets" in again["message"]
    jobs = {"pets": pets.json()["job_id"], "space": space.json()["job_id"]}
    for name, job_id in jobs.items():
        job = wait_for_job(client, job_id, 300)
        assert job["state"] == "succeeded", job
        assert job["summary"]["documents"] == len(PETS if name == "pets" else SPACE)
    return jobs


# --- registry over HTTP ----------------------------------------------------------------------------------


def test_kb_crud_and_its_errors(client: httpx.Client, settings: Settings, two_kbs: dict[str, str]) -> None:
    listing = client.get("/kbs").json()
    names = [kb["name"] for kb in listing["kbs"]]
    assert names[:1] == ["default"] and {"pets", "space"} <= set(names) and listing["default"] == "default"
    default = listing["kbs"][0]
    assert default["loaded"] and default["documents"] > 3 and default["corpus"] is None  # a server folder: hidden
    pets = next(kb for kb in listing["kbs"] if kb["name"] == "pets")
    assert pets["documents"] == 3 and pets["version"] and pets["corpus"] == "kbs/pets/corpus"

    detail = client.get("/kbs/pets").json()
    assert detail["ingest_job"]["job_id"] == two_kbs["pets"] and detail["overrides"] == {}

    assert "invalid knowledge base name" in assert_error(client.post("/kbs", json={"name": "Bad Name"}), 400, "invalid_input")["message"]
    assert_error(client.post("/kbs", json={"name": "pets"}), 409, "already_exists")
    # the schema lists what a knowledge base may override: anything else is refused before the registry sees it
    assert_error(client.post("/kbs", json={"name": "odd", "overrides": {"api_key": "x"}}), 422, "validation_error")
    assert_error(client.post("/kbs", json={"name": "odd", "corpus": "/etc"}), 422)  # no server folders over HTTP
    assert "unknown knowledge base 'nope'" in assert_error(client.get("/kbs/nope"), 404, "kb_not_found")["message"]
    assert_error(client.post("/ask", json={"question": LORA_QUESTION, "kb": "nope"}), 404, "kb_not_found")
    assert_error(client.post("/search", json={"query": "LoRA", "kb": "../etc"}), 400, "invalid_input")
    assert_error(client.get("/documents", params={"kb": "nope"}), 404, "kb_not_found")
    assert_error(client.delete("/kbs/default"), 400, "invalid_input")

    # up to RAG_MAX_KBS (5): default, pets, space + two more
    assert client.post("/kbs", json={"name": "tmp-a", "overrides": {"chunk_size": 300}}).status_code == 201
    assert client.get("/kbs/tmp-a").json()["overrides"] == {"chunk_size": 300}
    # never ingested: the client's to fill (409), on /ask and on the OpenAI endpoint alike (a fuzz run got a 503)
    assert_error(client.post("/ask", json={"question": LORA_QUESTION, "kb": "tmp-a"}), 409, "kb_empty")
    chat = {"model": "tmp-a", "messages": [{"role": "user", "content": LORA_QUESTION}]}
    assert_error(client.post("/v1/chat/completions", json=chat), 409, "kb_empty")
    assert_error(client.post("/v1/chat/completions", json={**chat, "stream": True}), 409, "kb_empty")
    assert client.post("/kbs", json={"name": "tmp-b"}).status_code == 201
    assert_error(client.post("/kbs", json={"name": "tmp-c"}), 409, "too_many_kbs")

    renamed = client.patch("/kbs/tmp-b", json={"name": "tmp-c"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "tmp-c"
    assert_error(client.get("/kbs/tmp-b"), 404, "kb_not_found")

    home = settings.data_dir / "kbs" / "tmp-a"
    assert client.delete("/kbs/tmp-a").json() == {"name": "tmp-a", "deleted": True, "notes_deleted": False}
    assert (home / "corpus").is_dir() and not (home / "index").exists()  # notes kept unless asked
    assert client.delete("/kbs/tmp-c", params={"delete_notes": "true"}).status_code == 200
    assert not (settings.data_dir / "kbs" / "tmp-b").exists()
    assert {kb["name"] for kb in client.get("/kbs").json()["kbs"]} == {"default", "pets", "space"}


def test_deleting_a_kb_while_it_is_ingested_is_refused(client: httpx.Client, settings: Settings, two_kbs: dict) -> None:
    assert client.post("/kbs", json={"name": "busy"}).status_code == 201
    index = settings.data_dir / "kbs" / "busy" / "index"
    lock = WriteLock(index, timeout=0.0)  # what `rag ingest` in another process holds
    lock.acquire()
    try:
        error = assert_error(client.delete("/kbs/busy"), 409, "kb_busy")
        assert "while its ingest runs" in error["message"]
    finally:
        lock.release()
    assert client.delete("/kbs/busy", params={"delete_notes": "true"}).status_code == 200


# --- isolation ---------------------------------------------------------------------------------------------


def test_a_question_to_one_kb_never_cites_another(client: httpx.Client, two_kbs: dict[str, str]) -> None:
    assert {d["doc_id"] for d in client.get("/documents", params={"kb": "pets"}).json()["documents"]} == set(PETS)
    default_docs = {d["doc_id"] for d in client.get("/documents").json()["documents"]}
    assert not default_docs & (set(PETS) | set(SPACE))

    hits = client.post("/search", json={"query": CAT_QUESTION, "kb": "pets"}).json()["hits"]
    assert hits and hits[0]["chunk"]["doc_id"] == "猫咪护理.md"
    assert {h["chunk"]["doc_id"] for h in hits} <= set(PETS)

    cat = client.post("/ask", json={"question": CAT_QUESTION, "kb": "pets"}).json()
    assert cited(cat) == {"猫咪护理.md"}
    lora_in_pets = client.post("/ask", json={"question": LORA_QUESTION, "kb": "pets"}).json()
    assert cited(lora_in_pets) <= set(PETS)
    lora = client.post("/ask", json={"question": LORA_QUESTION}).json()
    assert cited(lora) and cited(lora) <= default_docs
    cat_in_default = client.post("/ask", json={"question": CAT_QUESTION, "kb": "default"}).json()
    assert not cited(cat_in_default) & set(PETS)
    cat_in_space = client.post("/ask", json={"question": CAT_QUESTION, "kb": "space"}).json()
    assert cited(cat_in_space) <= set(SPACE)

    stats = client.get("/stats", params={"kb": "space"}).json()
    assert stats["kb"] == "space" and stats["documents"] == 2 and stats["ingest_job"]["job_id"] == two_kbs["space"]
    shown = client.get("/documents/火星探测.md", params={"kb": "space"}).json()
    assert shown["original_url"].endswith("?kb=space")
    assert client.get(shown["original_url"]).content.decode() == SPACE["火星探测.md"]
    assert_error(client.get("/documents/火星探测.md"), 404)  # not in the default knowledge base


def test_conversations_and_feedback_remember_their_kb(client: httpx.Client, two_kbs: dict[str, str]) -> None:
    conversation = client.post("/conversations", json={"kb": "pets"}).json()
    assert conversation["knowledge_base"] == "pets"
    answer = client.post(f"/conversations/{conversation['id']}/ask", json={"question": PARROT_QUESTION}).json()
    assert cited(answer) == {"鹦鹉饮食.md"}
    assert client.get(f"/conversations/{conversation['id']}").json()["knowledge_base"] == "pets"
    plain = client.post("/conversations", json={}).json()
    assert plain["knowledge_base"] == "default"
    assert_error(client.post("/conversations", json={"kb": "nope"}), 404, "kb_not_found")

    entry = client.post("/feedback", json={"rating": "up", "answer_id": answer["answer_id"], "kb": "pets"})
    assert entry.status_code == 201 and entry.json()["kb"] == "pets"
    listed = client.get("/feedback", params={"kb": "pets"}).json()["feedback"]
    assert [e["id"] for e in listed] == [entry.json()["id"]]
    assert_error(client.post("/feedback", json={"rating": "up", "kb": "nope"}), 404, "kb_not_found")


def test_deleting_a_note_removes_it_and_reingests(client: httpx.Client, settings: Settings, two_kbs: dict) -> None:
    corpus = settings.data_dir / "kbs" / "pets" / "corpus"
    assert_error(client.delete("/documents/%2E%2E%2F%2E%2E%2Fkbs.json", params={"kb": "pets"}), 404)
    assert_error(client.delete("/documents/没有这篇.md", params={"kb": "pets"}), 404)
    assert (settings.data_dir / "kbs.json").exists()

    deleted = client.delete("/documents/鹦鹉饮食.md", params={"kb": "pets"})
    assert deleted.status_code == 202, deleted.text
    body = deleted.json()
    assert body["doc_id"] == "鹦鹉饮食.md" and body["kb"] == "pets" and body["job"]["kb"] == "pets"
    assert not (corpus / "鹦鹉饮食.md").exists() and (corpus / "猫咪护理.md").exists()
    job = wait_for_job(client, body["job"]["job_id"], 300)
    assert job["state"] == "succeeded" and job["summary"]["removed"] == ["鹦鹉饮食.md"], job
    assert {d["doc_id"] for d in client.get("/documents", params={"kb": "pets"}).json()["documents"]} == {
        "猫咪护理.md", "狗狗训练.md"
    }
    assert "鹦鹉饮食.md" not in cited(client.post("/ask", json={"question": PARROT_QUESTION, "kb": "pets"}).json())


# --- OpenAI-compatible -----------------------------------------------------------------------------------


def test_openai_model_is_a_kb(server: LiveServer, two_kbs: dict[str, str]) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    assert {"default", "pets", "space"} <= {m.id for m in client.models.list().data}
    completion = client.chat.completions.create(model="space", messages=[{"role": "user", "content": "木卫二冰壳下有什么？"}])
    assert completion.model == "space"
    assert {c["doc_id"] for c in completion.model_extra["citations"]} == {"木星卫星.md"}
    old_id = client.chat.completions.create(model="rag-notes", messages=[{"role": "user", "content": LORA_QUESTION}])
    assert "[1]" in (old_id.choices[0].message.content or "")
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": LORA_QUESTION}])
    error = unknown.value.body
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error" and error["param"] == "model"
    assert "gpt-4o" in error["message"] and "pets" in error["message"]


# --- loading and unloading ---------------------------------------------------------------------------------


def test_an_idle_kb_is_unloaded_and_reloaded_on_the_next_request(
    client: httpx.Client, two_kbs: dict, caplog: pytest.LogCaptureFixture
) -> None:
    def loaded() -> dict[str, bool]:
        return {kb["name"]: kb["loaded"] for kb in client.get("/kbs").json()["kbs"]}

    def events() -> list[str]:  # what the pool logged about `space`
        return [r.getMessage() for r in caplog.records if r.name == "rag.engine_pool" and "'space'" in r.getMessage()]

    caplog.set_level(logging.INFO, logger="rag.engine_pool")
    assert client.post("/search", json={"query": "火星", "kb": "space"}).status_code == 200
    assert loaded()["space"]
    deadline = time.monotonic() + 30 * IDLE
    while (loaded()["space"] or events()[-1:] != ["knowledge base 'space' unloaded"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    state = loaded()
    assert not state["space"] and state["default"]  # the default knowledge base stays loaded
    assert client.get("/kbs").json()["kbs"][2]["documents"] == 2  # counts of an unloaded index, from its manifest
    before = events()
    assert before[-1] == "knowledge base 'space' unloaded", before
    answer = client.post("/ask", json={"question": "毅力号在哪里着陆？", "kb": "space"}).json()
    assert cited(answer) == {"火星探测.md"}
    # the ask opened it again; read from the log, since on a loaded machine an ask can outlast IDLE and the
    # reopened knowledge base may be idle again by the time /kbs is asked
    assert events()[len(before)] == "knowledge base 'space' opened", events()


def test_the_upload_form_and_query_must_agree(client: httpx.Client, two_kbs: dict) -> None:
    response = client.post(
        "/documents", data={"kb": "pets"}, params={"kb": "space"}, files={"file": ("x.md", b"# x\n\nx\n", "text/markdown")}
    )
    assert_error(response, 400, "invalid_input")
    assert_error(
        client.post("/documents", data={"kb": "nope"}, files={"file": ("x.md", b"# x\n\nx\n", "text/markdown")}),
        404, "kb_not_found",
    )
    assert not Path(CORPUS / "x.md").exists()
