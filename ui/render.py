"""Pure rendering helpers for the chat UI: escaping, citation links, highlighted previews, small formats.

Everything here turns untrusted text (notes, answers, server messages) into Streamlit markdown that shows
the text verbatim: HTML-active characters become entities and markdown-active characters are
backslash-escaped, so a note holding `<script>`, `<img onerror>` or a `javascript:` link renders as
plain text. The only markup these functions add themselves is `<mark>`, `<sup>` and `<a href="#...">`
with ids built from `[A-Za-z0-9_-]`, which is why their output may be shown with `unsafe_allow_html`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Characters with a meaning in CommonMark/GFM or in Streamlit's markdown extensions
# (`:color[...]` directives, `$math$`); each is shown literally when backslash-escaped.
_MD_ACTIVE = frozenset("\\`*_{}[]()#+-.!|~$=:")
_HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}

# Private-use sentinels marking where our own markup goes; stripped from input text first.
_OPEN, _CLOSE, _CITE = "\ue000", "\ue001", "\ue002"
_SENTINELS = re.compile("[\ue000-\ue002]")

CITATION_MARKER = re.compile(r"\[(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\]")
_MARKER_SPLIT = re.compile(r"\s*[,，、]\s*")

PREVIEW_RADIUS = 300

UPLOAD_SUFFIXES = (".md", ".txt")
MAX_NAME_CHARS = 120
_UNSAFE_NAME_CHARS = frozenset('/\\:*?"<>|')


def escape_markdown(text: str) -> str:
    """One line of untrusted text as inline markdown that renders exactly as the text (no markup, no HTML)."""
    out: list[str] = []
    for ch in _SENTINELS.sub("", text):
        if ch in _HTML_ENTITIES:
            out.append(_HTML_ENTITIES[ch])
        elif ch in _MD_ACTIVE:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def escape_block(text: str) -> str:
    """Multi-line untrusted text as markdown shown verbatim, line breaks kept.

    Leading indentation becomes non-breaking spaces (so it never starts a code block) and every line ends
    in a hard break, so headings, lists, quotes and tables in a note show as the characters they are.
    """
    return _block(_SENTINELS.sub("", text))


def _block(text: str) -> str:
    """`escape_block` for text that may hold our sentinels (already stripped of user-supplied ones)."""
    lines = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        body = line.lstrip(" \t")
        indent = line[: len(line) - len(body)].replace("\t", "    ")
        lines.append("\u00a0" * len(indent) + _escape_keep_sentinels(body.rstrip()))
    return "  \n".join(lines)


def _escape_keep_sentinels(text: str) -> str:
    return "".join(ch if ch in (_OPEN, _CLOSE, _CITE) else escape_markdown(ch) for ch in text)


def anchor_id(answer_key: str, number: int) -> str:
    """The HTML id of source card `number` of one answer (only `[A-Za-z0-9_-]`)."""
    key = re.sub(r"[^A-Za-z0-9_-]", "", answer_key)[:40] or "answer"
    return f"src-{key}-{number}"


def citation_link(answer_key: str, number: int) -> str:
    """A superscript `[n]` linking to the source card of citation `number`."""
    return f'<sup><a href="#{anchor_id(answer_key, number)}">\\[{number}\\]</a></sup>'


def citation_numbers(text: str) -> list[int]:
    """The citation numbers referred to by `[n]` / `[n, m]` markers in `text`, in order of first use."""
    seen: list[int] = []
    for match in CITATION_MARKER.finditer(text):
        for part in _MARKER_SPLIT.split(match.group(1)):
            n = int(part)
            if n not in seen:
                seen.append(n)
    return seen


def answer_markdown(text: str, numbers: Collection[int], answer_key: str) -> str:
    """The answer as escaped markdown in which each valid `[n]` marker links to its source card.

    Markers naming a number that is not in `numbers` stay as plain (escaped) text.
    """
    text = _SENTINELS.sub("", text)
    links: list[str] = []

    def mark(match: re.Match[str]) -> str:
        parts = [int(p) for p in _MARKER_SPLIT.split(match.group(1))]
        if not all(p in numbers for p in parts):
            return match.group(0)
        links.append("".join(citation_link(answer_key, p) for p in parts))
        return _CITE

    body = _block(CITATION_MARKER.sub(mark, text))
    pieces = body.split(_CITE)
    out = [pieces[0]]
    for link, piece in zip(links, pieces[1:], strict=True):
        out.extend((link, piece))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Window:
    """A slice of a note around a cited span."""

    before: str
    span: str
    after: str
    clipped_start: bool  # text exists before `before`
    clipped_end: bool  # text exists after `after`


def preview_window(text: str, start: int, end: int, radius: int = PREVIEW_RADIUS) -> Window:
    """The text `radius` characters either side of `text[start:end]` (offsets are clamped to the text)."""
    start = min(max(start, 0), len(text))
    end = min(max(end, start), len(text))
    lo, hi = max(0, start - radius), min(len(text), end + radius)
    return Window(text[lo:start], text[start:end], text[end:hi], lo > 0, hi < len(text))


def highlight(before: str, span: str, after: str) -> str:
    """Escaped markdown of `before + span + after` with `span` wrapped in `<mark>`, line by line."""
    before, span, after = (_SENTINELS.sub("", s) for s in (before, span, after))
    lines = []
    for line in span.split("\n"):
        text = line.strip(" \t")
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        lines.append(indent + (_OPEN + text + _CLOSE if text else ""))
    body = _block(before + "\n".join(lines) + after)
    return body.replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>")


def preview_markdown(text: str, start: int, end: int, radius: int = PREVIEW_RADIUS) -> str:
    """A highlighted preview of the note around `text[start:end]`, with "…" where it was clipped."""
    w = preview_window(text, start, end, radius)
    return highlight(("…" if w.clipped_start else "") + w.before, w.span, w.after + ("…" if w.clipped_end else ""))


def locate_span(
    text: str, snippet: str, start: int, end: int, snippet_start: int | None, snippet_end: int | None
) -> tuple[int, int]:
    """Offsets of the cited span in the note: the snippet's own offsets when they match the note, else the
    snippet found inside the passage `[start:end]`, else the passage itself."""
    if (
        snippet_start is not None
        and snippet_end is not None
        and 0 <= snippet_start < snippet_end <= len(text)
    ):
        return snippet_start, snippet_end
    probe = snippet.strip().rstrip("…").strip()
    if probe:
        at = text.find(probe, max(0, start), max(end, start) + len(probe))
        if at < 0:
            at = text.find(probe)
        if at >= 0:
            return at, at + len(probe)
    start = min(max(start, 0), len(text))
    return start, min(max(end, start), len(text))


def heading_text(path: Collection[str]) -> str:
    """A heading path as one line ("A › B"), or a placeholder when the passage has no heading."""
    return " › ".join(p for p in path if p) or "（无标题）"


def check_upload(name: str, size: int, max_bytes: int) -> str | None:
    """Why a note may not be uploaded (a Chinese message), or None when its name, type and size are fine.

    Mirrors the server's rules: a plain file name (no directories, no `/\\:*?"<>|`, no control characters,
    not hidden, no surrounding spaces, at most 120 characters) ending in .md or .txt, not empty, not too big.
    """
    if not name.strip():
        return "文件名为空。"
    if any(ch in _UNSAFE_NAME_CHARS for ch in name):
        return f"文件名“{name}”不安全：请只用文件名本身，不要包含路径或 /\\:*?\"<>| 等字符。"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        return "文件名包含控制字符，请重命名后再上传。"
    if name != name.strip() or name.startswith("."):
        return f"文件名“{name}”不能以点开头，也不能以空格开头或结尾。"
    if len(name) > MAX_NAME_CHARS:
        return f"文件名太长（{len(name)} 个字符），上限是 {MAX_NAME_CHARS}。"
    if not name.lower().endswith(UPLOAD_SUFFIXES):
        return f"只支持 .md 和 .txt 笔记，“{name}”不是。"
    if size <= 0:
        return f"“{name}”是空文件。"
    if size > max_bytes:
        return f"“{name}”有 {format_size(size)}，超过了 {format_size(max_bytes)} 的上限。"
    return None


def format_size(n: int | float) -> str:
    """Bytes as B / KB / MB."""
    if n < 1024:
        return f"{int(n)} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def format_ms(ms: float) -> str:
    """A latency in milliseconds as "85 毫秒" or "1.2 秒"."""
    return f"{ms:.0f} 毫秒" if ms < 1000 else f"{ms / 1000:.1f} 秒"


def format_time(value: Any) -> str:
    """An ingest time (ISO string or epoch seconds) as local "YYYY-MM-DD HH:MM"; "—" when unknown."""
    if value is None or value == "":
        return "—"
    try:
        if isinstance(value, int | float):
            moment = datetime.fromtimestamp(float(value), tz=UTC)
        else:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def ingest_progress(progress: Mapping[str, Any] | None) -> tuple[str | None, int, int]:
    """The stage to show for an ingest job: the first unfinished one, else the last; with done/total."""
    stages = [
        (name, int(v.get("done", 0)), int(v.get("total", 0)))
        for name, v in (progress or {}).items()
        if isinstance(v, Mapping)
    ]
    if not stages:
        return None, 0, 0
    for stage in stages:
        if stage[2] and stage[1] < stage[2]:
            return stage
    return stages[-1]


def fraction(done: int, total: int) -> float:
    """done/total clamped to [0, 1] (0 when the total is unknown)."""
    return 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
