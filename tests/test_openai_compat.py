"""The OpenAI-compatible endpoints, driven by the official `openai` client against a real server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import openai
import pytest
from live import LiveServer
from pydantic import SecretStr

from rag.api import create_app
from rag.config import Settings
from rag.engine import Engine

QUESTION = "LoRA 微调里最重要的超参数是什么？"
KEY = "compat-key-31d9"


@pytest.fixture(scope="module")
def server(base_settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    with LiveServer(create_app(base_settings, engine=engine)) as live:
        yield live


@pytest.fixture(scope="module")
def keyed_server(base_settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    settings = base_settings.model_copy(update={"api_key": SecretStr(KEY)})
    with LiveServer(create_app(settings, engine=engine)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_are_the_knowledge_bases(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data][0] == "default"  # "rag-notes", the id of old, still names it
    assert client.models.list().data[0].object == "model"


def test_chat_completion_answers_with_markers_and_sources(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="rag-notes", messages=[{"role": "user", "content": QUESTION}]
    )
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    content = choice.message.content or ""
    answer, _, sources = content.partition("\n\n来源：\n")
    assert "[1]" in answer and sources
    lines = sources.splitlines()
    assert lines and all(re.match(r"\d+\. \S", line) for line in lines) and " › " in lines[0]
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer)}
    assert cited <= {int(line.split(".", 1)[0]) for line in lines}
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_english_questions_get_an_english_sources_header(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="rag-notes", messages=[{"role": "user", "content": "What is LoRA (Low rank adaptation)?"}]
    )
    content = completion.choices[0].message.content or ""
    answer, _, sources = content.partition("\n\nSources:\n")
    assert "[" in answer and re.match(r"\d+\. ", sources) and "来源：" not in content


def test_streamed_chat_matches_the_plain_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model="rag-notes", messages=messages).choices[0].message.content
    stream = client.chat.completions.create(
        model="rag-notes", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 2
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_stream_ends_with_done_on_the_wire(server: LiveServer) -> None:
    body = {"model": "rag-notes", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    with httpx.Client(base_url=server.url, timeout=120) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        data = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert all(json.loads(d)["object"] == "chat.completion.chunk" for d in data[:-1])


def test_earlier_messages_are_history(client: openai.OpenAI, server: LiveServer) -> None:
    messages = [
        {"role": "user", "content": "LoRA 是什么？"},
        {"role": "assistant", "content": "一种参数高效微调方法。[1]\n\n来源：\n1. 某文档 › LoRA"},
        {"role": "user", "content": [{"type": "text", "text": "它最重要的超参数是什么？"}]},
    ]
    completion = client.chat.completions.create(model="rag-notes", messages=messages)  # type: ignore[arg-type]
    assert "秩" in (completion.choices[0].message.content or "")
    raw = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": messages}, timeout=120).json()
    assert raw["citations"] and raw["citations"][0]["number"] == 1


def test_bad_requests_raise_client_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as no_user:
        client.chat.completions.create(model="rag-notes", messages=[{"role": "system", "content": "hi"}])
    assert no_user.value.status_code == 400
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="rag-notes", messages=[{"role": "user", "content": " "}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="rag-notes", messages=[])


def test_the_key_is_required_when_set(keyed_server: LiveServer) -> None:
    wrong = openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="rag-notes", messages=[{"role": "user", "content": QUESTION}])
    right = openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key=KEY, max_retries=0, timeout=120)
    completion = right.chat.completions.create(model="rag-notes", messages=[{"role": "user", "content": QUESTION}])
    assert "[1]" in (completion.choices[0].message.content or "")
