"""Bad input at every edge: schema fuzzing of the live API, properties of the text functions on arbitrary
strings, a corpus of hostile files through a real ingest, and hostile upload names.

Already covered elsewhere (see docs/reliability.md): chunk offsets and coverage on arbitrary text
(test_chunking.py), decoding (test_loading.py), parse_citations on arbitrary text (test_generation.py), and
the fixed list of unsafe upload names and bad upload bodies (test_api.py).
"""

from __future__ import annotations

import functools
import json
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
from hostile import (
    OUTSIDE_SECRET,
    build_hostile_corpus,
    private_settings,
    small_corpus,
    tree_snapshot,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from live import LiveServer, assert_error, raw_upload
from pydantic import SecretStr
from schemathesis.generation import GenerationMode

from ingest.pipeline import run_ingest
from rag.answer.citations import parse_citations
from rag.answer.llm import sanitize_reply
from rag.api import create_app
from rag.config import Settings
from rag.engine import Engine
from rag.text import STOPWORDS, Tokenizer, char_bigrams, normalize, sentence_spans

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

    @hsettings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
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
    fuzz(label, open_server.url, 60, None, expect_401=False)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_every_operation_with_the_key(label: str, keyed_server: LiveServer) -> None:
    fuzz(label, keyed_server.url, 15, {"Authorization": f"Bearer {API_KEY}"}, expect_401=False)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_every_operation_without_the_key_is_refused(label: str, keyed_server: LiveServer) -> None:
    fuzz(label, keyed_server.url, 10, None, expect_401=True)


def test_fuzz_figures() -> None:
    """Prints how many examples the fuzz tests above sent (run after them, in file order)."""
    print(f"\nschema fuzzing: {dict(FUZZ_COUNTS)} examples; statuses {dict(sorted(FUZZ_STATUSES.items()))}")
    assert 5 not in {status // 100 for status in FUZZ_STATUSES}


# --- properties of the text functions on arbitrary strings ------------------------------------------------

# Fragments that make the interesting cases likely: markers, links, schemes, tags, URLs, delimiters.
FRAGMENTS = [
    "java", "script", "vb", ":", "javascript:alert(1)", "JaVaScRiPt :", "data:text/html,x", "file:///etc/passwd",
    "<http://a.b>", "https://evil.example/x?c=1", "http://", "www.", "[", "]", "(", ")", "![", "](", "[x]", "[1]",
    "[99]", "【2】", "［3］", "[1-3]", "<", ">", "<a href='x'>", "</a>", "<script>", "</script>", "<img src=x onerror=1>",
    "<think>", "</think>", "<<<END PASSAGE 1>>>", "\n", " ", "\t", "。", "！", "?", ".", "；", "“", "量子", "LoRA",
    "\x00", "\x1b", "\u200b", "\ufeff", "\U0001f600", "\ud7ff", "ｊａｖａ", "３",
]
texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=40).map("".join),
)
_DANGEROUS_SCHEME = re.compile(r"(?:java|vb|live)\s*script\s*:|data:[a-z]+/|file://", re.I)
_DANGEROUS_TAG = re.compile(r"<\s*/?\s*(?:a|img|script|style|iframe|object|embed|svg|link|meta|form|input|button)\b", re.I)
_MD_LINK_OR_IMAGE = re.compile(r"\[[^\]\n]*\]\((?:[^()\n]|\([^()\n]*\))*\)")
_URL = re.compile(r"(?:https?|ftp)://[^\s<>\"'）)\]，。；]", re.I)


@functools.cache
def tokenizer() -> Tokenizer:
    return Tokenizer(["灾难性遗忘", "卷积神经网络"])


@hsettings(max_examples=300, deadline=None)
@given(text=texts)
def test_tokenizer_never_raises_and_tokens_are_clean_substrings(text: str) -> None:
    norm = normalize(text)
    for tokens in (tokenizer().tokenize(text), tokenizer().words(text)):
        for token in tokens:
            assert token and token == token.strip() and token in norm
            assert token not in STOPWORDS
    assert tokenizer().tokenize(text) == tokenizer().tokenize(text)


@hsettings(max_examples=300, deadline=None)
@given(text=texts)
def test_sentence_spans_are_ordered_and_cover_every_visible_character(text: str) -> None:
    spans = sentence_spans(text)
    covered = [False] * len(text)
    previous_end = 0
    for start, end in spans:
        assert previous_end <= start < end <= len(text)
        assert text[start:end].strip()
        covered[start:end] = [True] * (end - start)
        previous_end = end
    assert all(covered[i] or ch.isspace() for i, ch in enumerate(text))


@hsettings(max_examples=300, deadline=None)
@given(text=texts)
def test_char_bigrams_are_substrings_of_the_normalized_text(text: str) -> None:
    norm = normalize(text)
    for gram in char_bigrams(text):
        assert gram and gram in norm


@hsettings(max_examples=500, deadline=None)
@given(text=texts, n=st.integers(min_value=0, max_value=5))
def test_sanitize_reply_leaves_no_link_scheme_or_tag_even_when_removals_join_pieces(text: str, n: int) -> None:
    clean = sanitize_reply(text)
    assert _DANGEROUS_SCHEME.search(clean) is None, clean
    assert _DANGEROUS_TAG.search(clean) is None, clean
    assert _MD_LINK_OR_IMAGE.search(clean) is None, clean
    assert _URL.search(clean) is None, clean  # no passages given: no URL may survive
    assert sanitize_reply(clean) == clean  # a fixed point: nothing left to remove
    cited, numbers = parse_citations(clean, n)
    assert all(1 <= number <= n for number in numbers)
    assert _DANGEROUS_SCHEME.search(cited) is None and _MD_LINK_OR_IMAGE.search(cited) is None


def test_sanitize_reply_regressions() -> None:
    """A removed URL must not join 'java' and 'script:' into a live scheme."""
    assert "javascript" not in sanitize_reply("java<http://a.b>script:alert(1)").lower()
    assert "](" not in sanitize_reply("[x]<http://a.b>(javascript:alert(1))")


# --- a hostile corpus through a real ingest ---------------------------------------------------------------


def test_hostile_corpus_ingests_cleanly_and_reads_nothing_outside(
    tmp_path: Path, make_settings: Callable[..., Settings], embedder: Any
) -> None:
    hc = build_hostile_corpus(tmp_path / "hostile")
    outside_before = tree_snapshot(hc.outside)
    settings = make_settings(corpus_dir=hc.corpus, max_file_mb=hc.max_file_mb)

    summary = run_ingest(settings, embedder=embedder)

    assert summary.published and summary.documents == len(hc.good)
    assert sorted(summary.added) == sorted(hc.good)
    reasons = {item.path: item.reason for item in summary.skipped}
    assert set(reasons) == set(hc.skipped), reasons
    for path, word in hc.skipped.items():
        assert word in reasons[path], (path, reasons[path])
    assert tree_snapshot(hc.outside) == outside_before

    engine = Engine(settings, embedder=embedder)
    engine.load()
    stored = engine._snapshot().index
    assert all(OUTSIDE_SECRET not in chunk.text for chunk in stored.all_chunks_iter())
    for mode in ("bm25", "dense", "hybrid"):
        hits = engine.search(OUTSIDE_SECRET, mode=mode, top_k=10).hits  # type: ignore[arg-type]
        assert all(OUTSIDE_SECRET not in hit.chunk.text for hit in hits)
    for doc_id, phrase in hc.good.items():
        top = engine.search(phrase, mode="bm25", top_k=3).hits
        assert top and top[0].chunk.doc_id == doc_id, (doc_id, [h.chunk.doc_id for h in top])
    manifest = stored.manifest
    assert {s["path"] for s in manifest.skipped} == set(hc.skipped)  # the skips are recorded with the index

    # Names with spaces, Chinese and a newline round-trip through the API; the deep note too.
    with LiveServer(create_app(settings, engine=engine)) as live, live.client() as client:
        for doc_id, phrase in hc.good.items():
            response = client.get("/documents/" + quote(doc_id, safe="/"))
            assert response.status_code == 200, (doc_id, response.text)
            assert phrase in response.json()["text"]
        listed = {d["doc_id"] for d in client.get("/documents").json()["documents"]}
        assert listed == set(hc.good)
        assert_error(client.get("/documents/" + quote("../outside/secret.md")), 404)
        assert_error(client.get("/documents/secret-link.md"), 404)

    again = run_ingest(settings, embedder=embedder)  # the awkward files cause no churn
    assert not again.published and again.version == summary.version


# --- hostile upload names -----------------------------------------------------------------------------------

NAME_PARTS = [
    "..", ".", "/", "\\", "md", ".md", ".txt", ".markdown", "note", "笔记", " ", "\n", "\r", "\t", "\x00", "%2e",
    "%2f", "%00", ":", "C:", "~", "$HOME", "\u202e", "\u200b", "\uff0f", "\u2215", "CON", ";", "*", "?", "|", "'",
    "<", ">", "\u0301", "ｍｄ", "🙂",
]
names = st.one_of(
    st.lists(st.sampled_from(NAME_PARTS), max_size=8).map("".join),
    st.lists(st.sampled_from(NAME_PARTS), max_size=6).map(lambda parts: "".join(parts) + ".md"),
    st.text(max_size=30),
)


@pytest.fixture(scope="module")
def upload_server(
    tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, engine: Engine
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("uploads")
    (root / "corpus").mkdir()
    (root / "sentinel.md").write_text("# outside the corpus\n", encoding="utf-8")
    settings = base_settings.model_copy(update={"corpus_dir": root / "corpus", "max_upload_mb": 0.01})
    with LiveServer(create_app(settings, engine=engine)) as live:
        yield live


@hsettings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=names)
def test_hostile_upload_names_never_escape_or_half_write(upload_server: LiveServer, name: str) -> None:
    corpus = Path(upload_server.app.state.settings.corpus_dir)
    root_before = tree_snapshot(corpus.parent)
    body = "# 上传\n\n上传的笔记内容。\n".encode()
    with upload_server.client() as client:
        response = raw_upload(client, name.encode("utf-8", "surrogatepass"), body)
    assert response.status_code in (201, 400, 409, 413, 422), response.text
    after = tree_snapshot(corpus.parent)
    if response.status_code != 201:
        assert_error(response, response.status_code)
        assert after == root_before
        return
    doc_id = response.json()["doc_id"]
    created = set(after) - set(root_before)
    assert created == {f"corpus/{doc_id}"}, created  # one new plain file, directly inside the corpus
    assert (corpus / doc_id).read_bytes() == body and "/" not in doc_id and "\\" not in doc_id
    (corpus / doc_id).unlink()


def test_upload_cut_off_mid_body_writes_nothing(upload_server: LiveServer) -> None:
    corpus = Path(upload_server.app.state.settings.corpus_dir)
    before = tree_snapshot(corpus.parent)
    boundary = "cut-boundary-1"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.md\"\r\n"
        "Content-Type: text/markdown\r\n\r\n# 半截\n\n"
    ).encode()
    body = head + "内容".encode() * 500
    host, port = upload_server.url.removeprefix("http://").split(":")
    for sent in (len(head) // 2, len(head), len(body) // 2):
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                f"POST /documents HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(body) + 64}\r\n\r\n".encode()
                + body[:sent]
            )
            time.sleep(0.2)  # let the server start reading the body before the client vanishes
    with upload_server.client() as client:
        deadline = time.monotonic() + 30
        while tree_snapshot(corpus.parent) != before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/healthz").status_code == 200
    assert tree_snapshot(corpus.parent) == before  # no note, no .upload- temp file
