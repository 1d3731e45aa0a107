"""Bad input at every edge: schema fuzzing of the live API, properties of the text functions on arbitrary
strings, a corpus of hostile files through a real ingest, and hostile upload names.

Already covered elsewhere (see docs/reliability.md): chunk offsets and coverage on arbitrary text
(test_chunking.py), decoding (test_loading.py), parse_citations on arbitrary text (test_generation.py), and
the fixed list of unsafe upload names and bad upload bodies (test_api.py).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
from hostile import (
    OUTSIDE_SECRET,
    SMALL_QUESTION,
    build_hostile_corpus,
    private_settings,
    small_corpus,
    tree_snapshot,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis.generation import GenerationMode
from test_api import LiveServer, assert_error, raw_upload

from ingest.pipeline import run_ingest
from rag.api import create_app
from rag.config import Settings
from rag.engine import Engine
from rag.generation import parse_citations, sanitize_reply
from rag.text import Tokenizer, char_bigrams, normalize, sentence_spans

API_KEY = "fuzz-key-0123456789abcdef"

# --- schema fuzzing -----------------------------------------------------------------------------------

SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None)).openapi())
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
PUBLIC = {"GET /healthz", "GET /readyz"}
FUZZ_COUNTS: Counter[str] = Counter()  # examples sent, by variant (printed for docs/reliability.md)
FUZZ_STATUSES: Counter[int] = Counter()


def _checks() -> list[Any]:
    from schemathesis import checks

    return [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
        checks.negative_data_rejection,
    ]


def header(response: schemathesis.Response, name: str) -> str:
    return (response.headers.get(name.lower()) or [""])[0]


def check_error_shape(response: schemathesis.Response) -> None:
    """A 4xx/5xx is JSON of exactly {"error": {"code", "message"}} and carries a request id."""
    assert header(response, "x-request-id"), response.headers
    if response.status_code < 400:
        return
    assert header(response, "content-type").startswith("application/json"), response.headers
    body = json.loads(response.content)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert b"Traceback" not in response.content


@pytest.fixture(scope="module")
def fuzz_settings(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, embedder: Any) -> Settings:
    """A private data dir over a small writable corpus (uploads and ingest jobs the fuzzer starts stay here)."""
    root = tmp_path_factory.mktemp("fuzz")
    settings = private_settings(base_settings, root, small_corpus(root / "corpus"), max_upload_mb=0.05)
    run_ingest(settings, embedder=embedder)
    return settings


@pytest.fixture(scope="module")
def open_server(fuzz_settings: Settings, embedder: Any) -> Iterator[LiveServer]:
    engine = Engine(fuzz_settings, embedder=embedder)
    engine.load()
    with LiveServer(create_app(fuzz_settings, engine=engine)) as live:
        yield live
        live.app.state.jobs.wait(300)


@pytest.fixture(scope="module")
def keyed_server(fuzz_settings: Settings, embedder: Any) -> Iterator[LiveServer]:
    settings = fuzz_settings.model_copy(update={"api_key": SecretStr(API_KEY)})
    engine = Engine(settings, embedder=embedder)
    engine.load()
    with LiveServer(create_app(settings, engine=engine)) as live:
        yield live
        live.app.state.jobs.wait(300)


def fuzz(label: str, base_url: str, examples: int, headers: dict[str, str] | None, expect_401: bool) -> None:
    operation = OPERATIONS[label]
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)
    session = requests.Session()
    variant = "no key (expect 401)" if expect_401 else ("with key" if headers else "open")

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=120)
        FUZZ_COUNTS[variant] += 1
        FUZZ_STATUSES[response.status_code] += 1
        check_error_shape(response)
        if expect_401 and label not in PUBLIC:
            assert response.status_code == 401, (case.method, case.formatted_path, response.text)
            return
        case.validate_response(response, checks=_checks(), headers=headers)

    try:
        run()
    finally:
        session.close()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_every_operation_without_a_key_configured(label: str, open_server: LiveServer) -> None:
    fuzz(label, open_server.url, 150, None, expect_401=False)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_every_operation_with_the_key(label: str, keyed_server: LiveServer) -> None:
    fuzz(label, keyed_server.url, 10, {"Authorization": f"Bearer {API_KEY}"}, expect_401=False)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_every_operation_without_the_key_is_refused(label: str, keyed_server: LiveServer) -> None:
    fuzz(label, keyed_server.url, 8, None, expect_401=True)


def test_fuzz_figures() -> None:
    """Prints how many examples the fuzz tests above sent (run after them, in file order)."""
    print(f"\nschema fuzzing: {dict(FUZZ_COUNTS)} examples; statuses {dict(sorted(FUZZ_STATUSES.items()))}")
    assert 5 not in {status // 100 for status in FUZZ_STATUSES}
