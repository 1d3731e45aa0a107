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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
from hostile import (
    CORPUS,
    INSTRUCTION_NOTE,
    INSTRUCTION_QUESTION,
    MARKUP_NOTE,
    MARKUP_QUESTIONS,
    OUTSIDE_SECRET,
    PATHOLOGICAL_CHAT_CHARS,
    PATHOLOGICAL_RUNS,
    build_hostile_corpus,
    private_settings,
    small_corpus,
    tree_snapshot,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from live import LiveServer, assert_error, raw_upload, read_sse
from pydantic import SecretStr
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from ingest.pipeline import run_ingest
from rag.answer.citations import parse_citations
from rag.answer.llm import StreamCleaner, releasable_end, sanitize_reply
from rag.api import create_app
from rag.api.docs import BEARER
from rag.config import Settings
from rag.engine import Engine
from rag.text import STOPWORDS, Tokenizer, char_bigrams, normalize, sentence_spans
from rag.types import Chunk, Hit

API_KEY = "fuzz-key-0123456789abcdef"

# --- schema fuzzing -----------------------------------------------------------------------------------

# A body over RAG_MAX_BODY_BYTES is refused with 413 before it is read: as much a rejection as a 400.
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
CHECKS_CONFIG = {"checks": {"negative_data_rejection": {"expected-statuses": REJECTED}}}
SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(_env_file=None)).openapi(), config=SchemathesisConfig.from_dict(CHECKS_CONFIG)
)
# With a key set, the document declares the bearer scheme on every operation but the probes; schemathesis sends
# the key itself (so it knows which requests carry it), or, for the "without the key" runs, does not.
KEYED_DOC = create_app(Settings(_env_file=None, api_key=SecretStr(API_KEY))).openapi()
KEYED_SCHEMA = schemathesis.openapi.from_dict(
    KEYED_DOC,
    config=SchemathesisConfig.from_dict({**CHECKS_CONFIG, "auth": {"openapi": {BEARER: {"bearer": API_KEY}}}}),
)
NO_KEY_SCHEMA = schemathesis.openapi.from_dict(KEYED_DOC, config=SchemathesisConfig.from_dict(CHECKS_CONFIG))


def _operations(schema: Any) -> dict[str, Any]:
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


OPERATIONS, KEYED_OPERATIONS, NO_KEY_OPERATIONS = map(_operations, (SCHEMA, KEYED_SCHEMA, NO_KEY_SCHEMA))
PUBLIC = {"GET /healthz", "GET /readyz"}
FUZZ_COUNTS: Counter[str] = Counter()  # examples sent, by variant (printed for docs/reliability.md)
FUZZ_STATUSES: Counter[int] = Counter()


def _checks() -> list[Any]:
    """Every check schemathesis has: the schema must describe what the service accepts, refuses and answers."""
    from schemathesis.checks import CHECKS, is_check_class, load_all_checks

    load_all_checks()
    return [check for check in CHECKS.get_all() if not is_check_class(check)]


def _undescribable() -> dict[str, list[Any]]:
    """Checks an operation cannot pass because OpenAPI cannot state the rule. An upload's file name (a .md, .txt …
    name, no directories, at most 120 characters and 255 bytes) is in the multipart part's Content-Disposition, which
    a schema cannot constrain: schema-valid uploads named "file" are refused. test_hostile_upload_names_* and
    test_api.py check the names instead."""
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    return {"POST /documents": [positive_data_acceptance]}


UNDESCRIBABLE = _undescribable()


def header(response: schemathesis.Response, name: str) -> str:
    return (response.headers.get(name.lower()) or [""])[0]


def check_error_shape(response: schemathesis.Response) -> None:
    """A 4xx/5xx is JSON of exactly {"error": {"code", "message"}} and carries a request id."""
    assert header(response, "x-request-id"), response.headers
    if response.status_code < 400:
        return
    assert header(response, "content-type").startswith("application/json"), response.headers
    body = json.loads(response.content)
    # the OpenAI-compatible endpoint's unknown model also carries the fields OpenAI clients read
    extra = {"type", "param"} if body.get("error", {}).get("code") == "model_not_found" else set()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} | extra, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert b"Traceback" not in response.content


@pytest.fixture(scope="module")
def fuzz_settings(
    tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, embedder: Any, corpus_index: Any
) -> Settings:
    """A private data dir over a small writable corpus (uploads and ingest jobs the fuzzer starts stay here).
    `corpus_index`: the session's embedding cache is copied only once its ingest (maybe on another worker) is
    done; a copy taken while it is written can be torn ("database disk image is malformed")."""
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


def fuzz(label: str, base_url: str, examples: int, keyed: bool, expect_401: bool) -> None:
    operation = (NO_KEY_OPERATIONS if expect_401 else KEYED_OPERATIONS if keyed else OPERATIONS)[label]
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)
    session = requests.Session()
    variant = "no key (expect 401)" if expect_401 else ("with key" if keyed else "open")

    @hsettings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, session=session, timeout=120)
        FUZZ_COUNTS[variant] += 1
        FUZZ_STATUSES[response.status_code] += 1
        check_error_shape(response)
        if expect_401 and label not in PUBLIC:
            assert response.status_code == 401, (case.method, case.formatted_path, response.text)
            return
        case.validate_response(response, checks=_checks(), excluded_checks=UNDESCRIBABLE.get(label))

    try:
        run()
    finally:
        session.close()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_every_operation_without_a_key_configured(label: str, open_server: LiveServer) -> None:
    fuzz(label, open_server.url, 60, keyed=False, expect_401=False)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_every_operation_with_the_key(label: str, keyed_server: LiveServer) -> None:
    fuzz(label, keyed_server.url, 15, keyed=True, expect_401=False)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_every_operation_without_the_key_is_refused(label: str, keyed_server: LiveServer) -> None:
    fuzz(label, keyed_server.url, 10, keyed=False, expect_401=True)


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
    # a dropped out-of-range marker must not join the brackets around it into a link
    for reply, n in (("[[9]](x)", 0), ("[a[9]b](http://a.b)", 1), ("![[7]](x.png)", 2)):
        cited, _ = parse_citations(sanitize_reply(reply), n)
        assert "](" not in cited, (reply, cited)


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
    with engine.hold() as state:
        stored = state.index
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


# --- pathological text: the tokenizer stays linear, the API bounds every text -------------------------------


def spy_on_jieba(tok: Tokenizer, name: str) -> list[int]:
    """Record the length of every text the tokenizer hands to jieba's `name` (the real jieba still does the work)."""
    seen: list[int] = []
    real = getattr(tok._jieba, name)

    def spy(text: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(text))
        return real(text, *args, **kwargs)

    setattr(tok._jieba, name, spy)
    return seen


def test_tokenizer_cuts_long_runs_before_jieba_and_caps_what_it_reads() -> None:
    """jieba's HMM is quadratic in the length of a run it does not know ("梯" * 30000 took 3.6 s): the tokenizer
    hands it bounded pieces, and reads at most MAX_TOKENIZE_CHARS characters per call."""
    from rag.text import MAX_RUN_CHARS, MAX_TOKENIZE_CHARS

    for n in PATHOLOGICAL_RUNS:
        for method, jieba_name in (("words", "cut"), ("tokenize", "cut_for_search")):
            tok = Tokenizer()
            seen = spy_on_jieba(tok, jieba_name)
            out = getattr(tok, method)("梯" * n)
            assert max(seen) <= MAX_RUN_CHARS and sum(seen) <= MAX_TOKENIZE_CHARS, (method, n, max(seen), sum(seen))
            assert 0 < len(out) <= 2 * MAX_TOKENIZE_CHARS
    tok = Tokenizer()
    # Each piece is segmented alone, so the output grows with the input, piece by piece.
    assert tok.words("梯" * (4 * MAX_RUN_CHARS)) == tok.words("梯" * MAX_RUN_CHARS) * 4
    assert tok.words("a" * 100_000) and tok.words("梯a" * 50_000)


def test_ordinary_notes_are_tokenized_as_before() -> None:
    """No paragraph of the bundled notes has a run long enough to be cut: jieba sees each whole, as it always did."""
    from rag.text import bounded_pieces

    for path in sorted(CORPUS.glob("*.md")):
        for paragraph in normalize(path.read_text(encoding="utf-8")).split("\n\n"):
            assert bounded_pieces(paragraph) == ([paragraph] if paragraph else []), path


@pytest.fixture(scope="module")
def edge_server(fuzz_settings: Settings, embedder: Any) -> Iterator[LiveServer]:
    """The fuzz index behind a plain server (the fuzz servers' state is left to the fuzzer)."""
    engine = Engine(fuzz_settings, embedder=embedder)
    engine.load()
    with LiveServer(create_app(fuzz_settings, engine=engine)) as live:
        yield live


def quick_client(live: LiveServer) -> httpx.Client:
    """A client that gives up after a few seconds: a request that stalls the server fails the test."""
    return httpx.Client(base_url=live.url, timeout=10)


@pytest.mark.parametrize("n", PATHOLOGICAL_RUNS)
def test_a_pathological_history_turn_is_refused(edge_server: LiveServer, n: int) -> None:
    turn = {"role": "user", "content": "梯" * n}
    with quick_client(edge_server) as client:
        for body in ({"question": "那它有什么缺点？", "history": [turn]}, {"question": "那它呢？", "history": [turn], "stream": True}):
            error = assert_error(client.post("/ask", json=body), 400, "invalid_input")
            assert "history.0" in error["message"] and "4000" in error["message"]
        chat = {"messages": [turn, {"role": "user", "content": "那它有什么缺点？"}]}
        assert_error(client.post("/v1/chat/completions", json=chat), 400, "invalid_input")


def test_a_history_over_the_total_is_refused_and_one_at_the_limits_is_answered(edge_server: LiveServer) -> None:
    settings = edge_server.app.state.settings
    turn = "梯" * settings.max_history_turn_chars
    turns = settings.max_history_chars // settings.max_history_turn_chars
    with quick_client(edge_server) as client:
        history = [{"role": "user", "content": turn}] * (turns + 1)
        error = assert_error(client.post("/ask", json={"question": "那它有什么缺点？", "history": history}), 400)
        assert str(settings.max_history_chars) in error["message"]
        at_limit = [{"role": "user", "content": turn}] * turns  # the most the API accepts: answered in time
        assert client.post("/ask", json={"question": "那它有什么缺点？", "history": at_limit}).status_code == 200
        assert client.post("/search", json={"query": "梯" * settings.max_question_chars}).status_code == 200


def test_eight_concurrent_sixty_thousand_character_chat_messages_are_refused(edge_server: LiveServer) -> None:
    body = {"messages": [{"role": "user", "content": "梯" * PATHOLOGICAL_CHAT_CHARS}, {"role": "user", "content": "梯度"}]}

    def send(_: int) -> int:
        with quick_client(edge_server) as client:
            return client.post("/v1/chat/completions", json=body).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(send, range(8))) == [400] * 8
    with quick_client(edge_server) as client:
        assert client.post("/ask", json={"question": "epoch 是什么意思？"}).status_code == 200


# --- text that is not Unicode, names too long for the file system ---------------------------------------------

LONE_SURROGATE = b'"\\ud800"'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/ask", b'{"question": %s}'),
        ("/ask", b'{"question": "x", "history": [{"role": "user", "content": %s}]}'),
        ("/search", b'{"query": %s}'),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": %s}]}'),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": [{"type": "text", "text": %s}]}]}'),
        ("/feedback", b'{"rating": "up", "comment": %s}'),
    ],
)
def test_a_lone_surrogate_is_bad_input_not_a_server_error(edge_server: LiveServer, path: str, body: bytes) -> None:
    with quick_client(edge_server) as client:
        response = client.post(path, content=body % LONE_SURROGATE, headers={"Content-Type": "application/json"})
    assert "surrogate" in assert_error(response, 400, "invalid_input")["message"]


def test_an_upload_name_over_255_bytes_is_refused_naming_the_byte_limit(edge_server: LiveServer) -> None:
    corpus = Path(edge_server.app.state.settings.corpus_dir)
    before = tree_snapshot(corpus)
    name = "长" * 100 + ".md"  # 103 characters (under the 120 limit), 303 bytes
    with quick_client(edge_server) as client:
        response = raw_upload(client, name.encode(), "# 长\n\n很长的文件名。\n".encode())
    assert "255 bytes" in assert_error(response, 400, "invalid_input")["message"]
    assert tree_snapshot(corpus) == before


# --- a note full of markup, and a note that talks to the assistant ----------------------------------------------

_NOTE_MARKUP = re.compile(r"alert\(|onerror|<\s*/?\s*(?:script|img|a)\b|javascript|\]\(", re.I)


def assert_inert(*texts: str) -> None:
    for text in texts:
        assert _NOTE_MARKUP.search(text) is None, text
        assert _DANGEROUS_SCHEME.search(text) is None and _DANGEROUS_TAG.search(text) is None, text
        assert _MD_LINK_OR_IMAGE.search(text) is None, text


def chat_stream_text(client: httpx.Client, chat: dict[str, Any]) -> str:
    """The content of a streamed chat completion, its chunks joined."""
    with client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as response:
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(line) for line in lines if line != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def citation_texts(citations: list[dict]) -> list[str]:
    return [text for c in citations for text in (c["snippet"], c["document"], *c["heading_path"])]


@pytest.fixture(scope="module")
def markup_server(
    tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, embedder: Any, corpus_index: Any
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("markup")
    notes = {"markup.md": MARKUP_NOTE, "instruction.md": INSTRUCTION_NOTE}
    settings = private_settings(base_settings, root, small_corpus(root / "corpus", extra=notes))
    run_ingest(settings, embedder=embedder)
    engine = Engine(settings, embedder=embedder)
    engine.load()
    with LiveServer(create_app(settings, engine=engine)) as live:
        yield live


def test_markup_in_a_note_reaches_no_response(markup_server: LiveServer) -> None:
    answered = 0
    with quick_client(markup_server) as client:
        for question in MARKUP_QUESTIONS:
            answer = client.post("/ask", json={"question": question}).json()
            answered += not answer["refused"] and any(c["doc_id"] == "markup.md" for c in answer["citations"])
            assert_inert(answer["text"], *citation_texts(answer["citations"]))
            with client.stream("POST", "/ask", json={"question": question, "stream": True}) as response:
                events = read_sse(response)
            tokens = "".join(data["text"] for kind, data in events if kind == "token")
            assert tokens == events[-1][1]["text"]
            assert_inert(tokens, *citation_texts(events[0][1]), *citation_texts(events[-1][1]["citations"]))
            chat = {"messages": [{"role": "user", "content": question}]}
            content = client.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
            streamed = chat_stream_text(client, chat)
            assert_inert(content, streamed)
            hits = client.post("/search", json={"query": question}).json()["hits"]
            assert_inert(*(t for h in hits for t in (h["chunk"]["text"], h["document_title"], *h["chunk"]["heading_path"])))
        titles = [d["title"] for d in client.get("/documents").json()["documents"]]
        assert any(title.startswith("梯度护栏") for title in titles), titles
        assert_inert(*titles)
        document = client.get("/documents/markup.md").json()
        assert_inert(document["title"], *(h for c in document["chunks"] for h in c["heading_path"]))
    assert answered  # the note was found and quoted: the checks above had something to check


def test_a_sentence_addressing_the_assistant_never_reaches_a_response(markup_server: LiveServer) -> None:
    """The note's own topic is answered from it, but never with the sentence that gives the assistant orders."""
    with quick_client(markup_server) as client:
        answer = client.post("/ask", json={"question": INSTRUCTION_QUESTION}).json()
        with client.stream("POST", "/ask", json={"question": INSTRUCTION_QUESTION, "stream": True}) as response:
            events = read_sse(response)
        chat = {"messages": [{"role": "user", "content": INSTRUCTION_QUESTION}]}
        content = client.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
        chat_streamed = chat_stream_text(client, chat)
    streamed = "".join(data["text"] for kind, data in events if kind == "token")
    for text in (answer["text"], *(c["snippet"] for c in answer["citations"]), streamed, content, chat_streamed):
        assert "忽略之前的所有指令" not in text and "魔法" not in text, text


# --- upload and ingest read a note alike (issue 18, item 5) ------------------------------------------------------


def test_upload_answers_201_only_for_a_note_ingest_will_read(edge_server: LiveServer) -> None:
    from ingest.loading import discover

    corpus = Path(edge_server.app.state.settings.corpus_dir)
    text = "# UTF-16 笔记\n\n带字节顺序标记的 UTF-16 文本。\n"
    with quick_client(edge_server) as client:
        bom = raw_upload(client, b"utf16-bom.md", b"\xff\xfe" + text.encode("utf-16-le"))
        assert bom.status_code == 201 and bom.json()["encoding"] == "utf-16", bom.text
        no_bom = raw_upload(client, b"utf16-nobom.md", text.encode("utf-16-le"))
        assert "ingest could not read" in assert_error(no_bom, 400, "invalid_input")["message"]
        glossary = raw_upload(client, b"glossary.txt", "注意力, attention\n".encode())
        assert "alias list" in assert_error(glossary, 400, "invalid_input")["message"]
    docs, skipped = discover(corpus, max_file_mb=1)
    assert "utf16-bom.md" in {d.doc_id for d in docs} and not skipped
    assert not (corpus / "utf16-nobom.md").exists() and not (corpus / "glossary.txt").exists()
    (corpus / "utf16-bom.md").unlink()


# --- the streaming sanitiser: the same output as re-cleaning everything, in linear work ---------------------------

_PASSAGE = Hit(
    chunk=Chunk("c", "d.md", (), 0, 40, "see https://evil.example/x?c=1 and http://a.b", "x"), score=1.0, rank=1
)
STREAM_FRAGMENTS = [*FRAGMENTS, "\n", "\n\n", "[1]\n", "java\n", "<think>x</think>\n", "[x]: y\n", "]\n(", " \n", "文字" * 30]


def released_by_recleaning(deltas: list[str], passages: list[Hit]) -> list[str]:
    """What each delta releases when the whole reply so far is cleaned again every time (the reference)."""
    raw, emitted, out = "", "", []
    for delta in deltas:
        raw += delta
        cleaned = parse_citations(sanitize_reply(raw[: releasable_end(raw)], passages), len(passages))[0]
        cleaned = cleaned.lstrip().rstrip(" \t")  # trailing blanks may still be collapsed: held back
        fresh = cleaned.startswith(emitted) and len(cleaned) > len(emitted)
        out.append(cleaned[len(emitted) :] if fresh else "")
        emitted = cleaned if fresh else emitted
    return out


@hsettings(max_examples=1500, deadline=None)
@given(
    text=st.lists(st.one_of(st.sampled_from(STREAM_FRAGMENTS), st.text(max_size=5)), max_size=120).map("".join),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    n=st.integers(0, 3),
)
def test_stream_cleaner_releases_what_recleaning_everything_would(text: str, sizes: list[int], n: int) -> None:
    deltas, i = [], 0
    while i < len(text):
        size = sizes[len(deltas) % len(sizes)]
        deltas.append(text[i : i + size])
        i += size
    cleaner = StreamCleaner([_PASSAGE] * n)
    cleaner._COMMIT_EVERY = 1  # settle lines as often as possible: the most chances to differ
    assert [cleaner.feed(delta) for delta in deltas] == released_by_recleaning(deltas, [_PASSAGE] * n)


def test_stream_cleaner_work_grows_linearly_with_the_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    """It used to sanitise the whole reply again on every delta: quadratic in the reply's length."""
    import rag.answer.llm as llm

    cleaned_chars = 0

    def counting(text: str, *args: Any, **kwargs: Any) -> str:
        nonlocal cleaned_chars
        cleaned_chars += len(text)
        return sanitize_reply(text, *args, **kwargs)

    monkeypatch.setattr(llm, "sanitize_reply", counting)
    paragraph = "梯度下降沿负梯度方向更新参数[1]，学习率决定步长 [2]。详见 https://example.com/x 。\n"
    work = []
    for paragraphs in (40, 80):
        reply = paragraph * paragraphs
        cleaned_chars = 0
        cleaner = StreamCleaner([_PASSAGE] * 2)
        streamed = "".join(cleaner.feed(reply[i : i + 4]) for i in range(0, len(reply), 4))
        assert streamed.startswith(paragraph.split("，")[0] + "，") and streamed.count("[1]") >= paragraphs - 1
        work.append(cleaned_chars)
    assert work[1] < 2.5 * work[0], work  # twice the reply, about twice the work (quadratic: four times)
