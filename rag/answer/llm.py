"""The LLM backend: grounded answers from any litellm model, streamed, with extractive fallback.

The prompt wraps every passage in delimited untrusted-data blocks (`rag.answer.prompts`). The reply is
sanitised as it streams (forged links, HTML, script URLs and thinking blocks removed; text released only once
no later delta can turn it into a marker or a link), its citations are validated, and any failure (timeout,
busy, HTTP error, broken stream, empty or unreadable reply) falls back to the extractive answer with a visible
note (`Answer.fallback_reason`). `rewrite()` sends the short non-streamed follow-up rewrite request.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from rag.answer.base import REFUSAL_EN, REFUSAL_ZH, consume, question_language, refusal_answer
from rag.answer.citations import llm_citations, parse_citations, strip_markers
from rag.answer.extractive import ExtractiveGenerator
from rag.answer.prompts import build_messages
from rag.errors import GenerationError
from rag.types import Answer, Hit

if TYPE_CHECKING:
    from rag.answer.reader import Reading
    from rag.config import Settings

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------- sanitising

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_LINK_TARGET = r"\((?:[^()\n]|\([^()\n]*\))*\)"  # one level of nested parentheses: (javascript:f(1))
_MD_IMAGE = re.compile(r"!\[[^\]\n]*\]" + _LINK_TARGET)
_MD_LINK = re.compile(r"\[([^\]\n]*)\]" + _LINK_TARGET)
_REF_DEF = re.compile(r"^\s*\[[^\]\n]+\]:\s*\S+.*$", re.M)
_HTML_BLOCK = re.compile(r"<(script|style|iframe|object|embed)\b.*?(?:</\1\s*>|$)", re.S | re.I)
_HTML_TAG = re.compile(
    r"</?(?:a|img|script|style|iframe|object|embed|svg|link|meta|form|input|button)\b[^>]*>?", re.I
)
_BAD_SCHEME = re.compile(
    r"(?:java\s*script|vb\s*script|livescript)\s*:[^\s)\]>\"'，。；]*|data:[a-z]+/[^\s)\]>\"'，。；]*|file://\S*",
    re.I,
)
_BARE_URL = re.compile(r"<?(?:https?|ftp)://[^\s<>\"'）)\]，。；]+>?", re.I)


def sanitize_reply(text: str, passages: Sequence[Hit] = (), *, keep_urls: bool = False) -> str:
    """Remove forged links from an LLM reply: markdown links/images, HTML tags, script URLs, foreign URLs.

    A markdown link keeps its label (a numeric label becomes a citation marker); bare http(s) URLs survive
    only when they occur verbatim in one of the passages, or always with `keep_urls` (text quoted from the notes,
    or already checked). Passes repeat until nothing changes, so a removal cannot join the text around it into a
    new link or scheme ("java<http://x>script:").
    """
    for _ in range(len(text) + 1):  # a pass that changes the text shortens it: this terminates
        cleaned = _sanitize_pass(text, passages, keep_urls)
        if cleaned == text:
            break
        text = cleaned
    return text


def _sanitize_pass(text: str, passages: Sequence[Hit], keep_urls: bool = False) -> str:
    text = _THINK.sub("", text)
    text = _HTML_BLOCK.sub("", text)
    text = _MD_IMAGE.sub("", text)

    def link(match: re.Match[str]) -> str:
        label = match.group(1).strip()
        return f"[{label}]" if label.isdigit() else label

    text = _MD_LINK.sub(link, text)
    text = _REF_DEF.sub("", text)
    text = _HTML_TAG.sub("", text)
    text = _BAD_SCHEME.sub("", text)
    sources = [hit.chunk.text for hit in passages]

    def url(match: re.Match[str]) -> str:
        found = match.group(0).strip("<>")
        return match.group(0) if keep_urls or any(found in source for source in sources) else ""

    text = _BARE_URL.sub(url, text)
    return re.sub(r"(?<=\S)[ \t]{2,}(?=\S)", " ", text)  # gaps left by removals; indentation is kept


def _comparable(text: str) -> str:
    text = strip_markers(unicodedata.normalize("NFKC", text))
    return re.sub(r"[\W_]+", "", text.lower())


_REFUSALS = {_comparable(REFUSAL_ZH), _comparable(REFUSAL_EN)}


def is_refusal(text: str) -> bool:
    """True when the reply is the fixed refusal sentence (either language; citations, quotes ignored)."""
    return _comparable(text) in _REFUSALS


def is_garbage(text: str) -> bool:
    """No letters or digits at all, or mostly replacement/control characters."""
    if not text.strip():
        return True
    letters = sum(1 for ch in text if ch.isalnum())
    broken = sum(
        1 for ch in text if ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\n\t\r")
    )
    return letters == 0 or broken / len(text) > 0.1


def strip_thinking(text: str) -> str:
    """The text without <think>…</think> blocks (an unclosed one runs to the end)."""
    return _THINK.sub("", text)


_PAIRS = {"[": "]", "［": "］", "【": "】"}
_PRINTABLE_TAIL = re.compile(r"[\x21-\x7e]+$")
_CLOSED_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
# Ends of text that a later line could still complete: "java" + "\nscript:", "[1" + "\n]", "[x]:" + "\nhttp…".
_OPEN_TAIL = re.compile(r"(?:(?:java|vb|script)\s*|[\[［【][\s\d,，、;；\-–~～]*|\]:\s*)$", re.I)


def releasable_end(raw: str, start: int = 0) -> int:
    """How much of a streaming reply can be cleaned and shown: the end before a tail that may still grow into a
    marker, link, URL, scheme or tag (unclosed brackets and tags within the last 300 characters held back).

    `start` (the start of a line) only bounds where the growing tail is looked for.
    """
    end = len(raw)
    tail = _PRINTABLE_TAIL.search(raw, start)  # a partial marker, URL or scheme may still be growing
    if tail:
        end = tail.start()
    for i in range(end - 1, max(0, end - 300) - 1, -1):
        ch = raw[i]
        if ch in _PAIRS and _PAIRS[ch] not in raw[i + 1 : end]:
            end = i  # an unclosed bracket
        elif ch == "(" and i > 0 and raw[i - 1] == "]" and ")" not in raw[i + 1 : end]:
            end = max(0, raw.rfind("[", 0, i))  # a link target still streaming: hold its label too
        elif ch == "<" and (i + 1 >= end or re.match(r"[A-Za-z/!]", raw[i + 1])) and ">" not in raw[i + 1 : end]:
            end = i  # an unclosed tag
    return end


def _settled(raw: str, sanitized: str) -> bool:
    """True when no later text can change how the lines `raw` are cleaned (`sanitized`), or join with them.

    Both end a non-blank line; no tag opens in `raw` but closed <think> blocks; every bracket and link target in it
    closes; and neither ends like the start of a scheme, a citation marker or a reference definition.
    """
    if "<" in _CLOSED_THINK.sub("", raw):
        return False
    for i, ch in enumerate(raw):
        closer = _PAIRS.get(ch) or (")" if ch == "(" and i > 0 and raw[i - 1] == "]" else None)
        if closer is not None and closer not in raw[i + 1 :]:
            return False
    for text in (raw, sanitized):
        last_line = text[:-1].rpartition("\n")[2]
        if not text.endswith("\n") or not last_line.strip() or _OPEN_TAIL.search(text[:-1]):
            return False
    return True


class StreamCleaner:
    """Turns raw LLM deltas into safe deltas: holds back a tail that might still become a marker or link.

    What `feed` releases is, each time, the cleaned text of everything releasable so far (sanitised, markers
    parsed, trailing blanks held back) beyond what was already released. Whole lines that no later text can affect are cleaned once and
    kept (`_head`); only the lines after them are cleaned again on each delta, so a long reply costs linear time.
    """

    _COMMIT_EVERY = 128  # characters of new text between attempts to settle lines

    def __init__(self, passages: Sequence[Hit], *, keep_urls: bool = False, citations: bool = True) -> None:
        self.passages = passages
        self.keep_urls = keep_urls
        self.citations = citations
        self.raw = ""
        self.emitted = ""
        self._head = ""  # the cleaned text of raw[: self._done]
        self._done = 0  # raw[: self._done] is settled: whole lines, cleaned for good
        self._tried = 0

    def _sanitize(self, text: str) -> str:
        return sanitize_reply(text, self.passages, keep_urls=self.keep_urls)

    def _parse(self, sanitized: str) -> str:
        return parse_citations(sanitized, len(self.passages))[0] if self.citations else sanitized

    def _settle(self, end: int) -> None:
        """Move the open lines before `end` that are settled into the cleaned head (tried every so often)."""
        if end - self._tried < self._COMMIT_EVERY:
            return
        self._tried = end
        cut = end
        for _ in range(3):  # the last line break first, then two earlier ones
            cut = self.raw.rfind("\n", self._done, cut)
            if cut < 0:
                return
            window = self.raw[self._done : cut + 1]
            sanitized = self._sanitize(window)
            if _settled(window, sanitized):
                self._head += self._parse(sanitized)
                self._done = cut + 1
                return

    def _release(self, cleaned: str) -> str:
        if not cleaned.startswith(self.emitted) or len(cleaned) <= len(self.emitted):
            return ""
        new = cleaned[len(self.emitted) :]
        self.emitted = cleaned
        return new

    def feed(self, delta: str) -> str:
        """The newly safe text after adding `delta` ("" when nothing can be released yet)."""
        self.raw += delta
        end = releasable_end(self.raw, self._done)
        if end < self._done:  # a bracket opened in the settled lines is held back again: clean it all (rare)
            cleaned = self._parse(self._sanitize(self.raw[:end]))
        else:
            self._settle(end)
            cleaned = self._head + self._parse(self._sanitize(self.raw[self._done : end]))
        # Trailing blanks wait for what follows: a removal can leave two ("见 <link> 。"), which the sanitiser then
        # collapses to one, and text already released cannot shrink (the stream would stall for good).
        return self._release(cleaned.lstrip().rstrip(" \t"))

    def flush(self, final_text: str) -> str:
        """The rest of the final text, when what was streamed is a prefix of it."""
        return self._release(final_text)


# -------------------------------------------------------------------------------------------- litellm


@lru_cache(maxsize=1)
def _litellm() -> Any:
    """Import litellm lazily (slow import; must not fetch its cost map from the internet)."""
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def litellm_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection and sampling arguments for litellm.completion from the settings."""
    kwargs: dict[str, Any] = {
        "model": settings.llm_model,
        "temperature": settings.llm_temperature,
        "max_tokens": settings.llm_max_tokens,
        "timeout": settings.llm_timeout,
        # Retries are done here (see LiteLLMGenerator): litellm's own num_retries needs tenacity.
        "num_retries": 0,
        "max_retries": 0,
    }
    if settings.llm_api_base:
        kwargs["api_base"] = settings.llm_api_base
    if settings.llm_api_key is not None:
        kwargs["api_key"] = settings.llm_api_key.get_secret_value()
    return kwargs


@dataclass(frozen=True)
class _Failure:
    """Why the LLM answer was abandoned."""

    code: str  # "timeout", "busy", "http", "connection", "empty", "garbage", "error"
    detail: str = ""


_REASONS = {
    "timeout": ("超时", "timeout"),
    "busy": ("并发已满，等待超时", "too many concurrent requests"),
    "http": ("服务返回错误", "the service returned an error"),
    "connection": ("连接失败", "connection failed"),
    "stream": ("流式输出中断", "the stream broke off"),
    "empty": ("返回空答案", "empty reply"),
    "garbage": ("返回内容无法解析", "unreadable reply"),
    "error": ("未知错误", "unexpected error"),
}


def fallback_note(code: str, question: str) -> str:
    """The visible note shown with an extractive stand-in answer."""
    zh, en = _REASONS.get(code, _REASONS["error"])
    if question_language(question) == "zh":
        return f"LLM 调用失败（{zh}），以下为抽取式答案"
    return f"LLM call failed ({en}); showing the extractive answer instead"


def classify_exception(exc: BaseException) -> _Failure:
    """Map an exception (by type) to a failure code."""
    import httpx
    import openai

    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return _Failure("timeout", type(exc).__name__)
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError | ConnectionError):
        return _Failure("connection", type(exc).__name__)
    if isinstance(exc, openai.APIStatusError):
        code = "stream" if isinstance(exc, _litellm().exceptions.MidStreamFallbackError) else "http"
        return _Failure(code, f"{type(exc).__name__} {getattr(exc, 'status_code', '')}".strip())
    if isinstance(exc, openai.OpenAIError | httpx.HTTPError | GenerationError | ValueError):
        return _Failure("garbage" if isinstance(exc, ValueError) else "http", type(exc).__name__)
    return _Failure("error", type(exc).__name__)


def _retryable(exc: BaseException) -> bool:
    import httpx
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = getattr(exc, "status_code", 0) or 0
        return status >= 500 or status in (408, 409, 429)
    return isinstance(exc, openai.APIConnectionError | httpx.TransportError | TimeoutError | ConnectionError)


def _delta_text(chunk: Any) -> str:
    choices = getattr(chunk, "choices", None) or []
    if not choices:
        return ""
    delta = getattr(choices[0], "delta", None)
    content = getattr(delta, "content", None) if delta is not None else None
    return content if isinstance(content, str) else ""


class LiteLLMGenerator:
    """Grounded answers from any litellm model, with extractive fallback on every kind of failure."""

    def __init__(self, settings: Settings, extractive: ExtractiveGenerator) -> None:
        if not settings.llm_model:
            raise GenerationError("LiteLLMGenerator needs settings.llm_model")
        self.settings = settings
        self.extractive = extractive
        self.model = settings.llm_model
        self.name = f"litellm:{settings.llm_model}"
        self._slots = threading.BoundedSemaphore(settings.llm_max_concurrency)

    def generate(self, question: str, passages: Sequence[Hit], reading: Reading | None = None) -> Answer:
        """The final Answer of `stream()`."""
        return consume(self.stream(question, passages, reading))

    def stream(self, question: str, passages: Sequence[Hit], reading: Reading | None = None) -> Iterator[str | Answer]:
        """Yield safe text deltas as the model streams, then the final (authoritative) Answer.

        With a reading, the prompt lists the passages in reader order and marks its best sentences."""
        if not passages:
            yield self._refusal(question)
            return
        if not self._slots.acquire(timeout=self.settings.llm_timeout):
            yield self._fallback(question, passages, _Failure("busy"), reading)
            return
        cleaner = StreamCleaner(passages)
        failure: _Failure | None = None
        try:
            attempts = self.settings.llm_retries + 1
            for attempt in range(attempts):
                deltas = self._deltas(question, passages, reading)
                try:
                    for delta in deltas:
                        safe = cleaner.feed(delta)
                        if safe:
                            yield safe
                    failure = None
                    break
                except Exception as exc:  # classified by type; an LLM failure never crashes the request
                    failure = classify_exception(exc)
                    if failure.code == "error":
                        log.exception("unexpected LLM failure (%s)", self.model)
                    else:
                        log.warning("LLM call failed (%s): %s %s", self.model, failure.code, failure.detail)
                    if cleaner.raw or attempt + 1 >= attempts or not _retryable(exc):
                        break
                    time.sleep(min(0.2 * (attempt + 1), 1.0))
                finally:
                    deltas.close()
        finally:
            self._slots.release()
        if failure is not None:
            yield self._fallback(question, passages, failure, reading)
            return
        answer = self._finish(question, passages, cleaner.raw, reading)
        if answer.backend == self.name and not answer.refused:
            rest = cleaner.flush(answer.text)
            if rest:
                yield rest
        yield answer

    def rewrite(self, messages: list[dict[str, str]]) -> str | None:
        """The model's reply to a short non-streamed request (the follow-up rewrite); None when the call fails.

        Like an answer, it takes one of the `llm_max_concurrency` slots (waiting at most `llm_timeout`) and is
        retried `llm_retries` times on a retryable failure."""
        kwargs = litellm_kwargs(self.settings)
        kwargs.update(temperature=0.0, max_tokens=min(self.settings.llm_max_tokens, 200))
        if not self._slots.acquire(timeout=self.settings.llm_timeout):
            log.warning("follow-up rewrite by LLM skipped (no LLM slot in time); using the heuristic")
            return None
        try:
            attempts = self.settings.llm_retries + 1
            for attempt in range(attempts):
                try:
                    response = _litellm().completion(messages=messages, stream=False, **kwargs)
                    return response.choices[0].message.content or ""
                except Exception as exc:  # classified for the log; the caller's fallback always stands in
                    failure = classify_exception(exc)
                    log.warning("follow-up rewrite by LLM failed (%s %s)", failure.code, failure.detail)
                    if attempt + 1 >= attempts or not _retryable(exc):
                        return None
                    time.sleep(min(0.2 * (attempt + 1), 1.0))
            return None
        finally:
            self._slots.release()

    def _deltas(self, question: str, passages: Sequence[Hit], reading: Reading | None = None) -> Iterator[str]:
        """Raw content deltas of one streaming call; raises on failure or when the call overruns its time."""
        litellm = _litellm()
        messages = build_messages(question, passages, self.settings.answer_max_sentences, reading=reading)
        # Time spent waiting for the model (not for our consumer) counts against llm_timeout.
        started = time.monotonic()
        response = litellm.completion(messages=messages, stream=True, **litellm_kwargs(self.settings))
        waited = time.monotonic() - started
        iterator = iter(response)
        try:
            while True:
                started = time.monotonic()
                try:
                    chunk = next(iterator)
                except StopIteration:
                    return
                waited += time.monotonic() - started
                if waited > self.settings.llm_timeout:
                    raise TimeoutError(f"LLM stream exceeded {self.settings.llm_timeout}s")
                text = _delta_text(chunk)
                if text:
                    yield text
        finally:
            # litellm's stream wrapper has no close() (only aclose()): close the provider stream it wraps too,
            # so an abandoned answer ends the HTTP call now rather than whenever garbage collection gets to it.
            for stream in (response, getattr(response, "completion_stream", None)):
                close = getattr(stream, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception:  # closing a broken stream must not mask the original outcome
                        log.debug("closing the LLM stream failed", exc_info=True)

    def _finish(self, question: str, passages: Sequence[Hit], raw: str, reading: Reading | None = None) -> Answer:
        """Validate the complete reply: refusal, sanitising, citations, emptiness."""
        if not raw.strip():
            return self._fallback(question, passages, _Failure("empty"), reading)
        cleaned = sanitize_reply(raw, passages)
        if is_refusal(cleaned):
            return self._refusal(question)
        text, numbers = parse_citations(cleaned, len(passages))
        text = text.strip()
        if not text:
            return self._fallback(question, passages, _Failure("empty"), reading)
        if is_garbage(strip_markers(text)):
            return self._fallback(question, passages, _Failure("garbage"), reading)
        return Answer(
            question=question,
            text=text,
            citations=llm_citations(text, numbers, passages),
            backend=self.name,
            uncited=not numbers,
        )

    def _refusal(self, question: str) -> Answer:
        answer = refusal_answer(question)
        answer.backend = self.name
        return answer

    def _fallback(
        self, question: str, passages: Sequence[Hit], failure: _Failure, reading: Reading | None = None
    ) -> Answer:
        answer = self.extractive.generate(question, passages, reading)
        answer.fallback_reason = fallback_note(failure.code, question)
        return answer
