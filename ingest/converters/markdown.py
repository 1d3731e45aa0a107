"""Markdown and plain-text notes, and the Obsidian dialect of markdown.

Every markdown note may open with YAML front matter (`---` … `---`): it is parsed, not indexed, and gives the
title, `tags` and `aliases`. A note inside an Obsidian vault (a folder holding `.obsidian/`) is also read the
way Obsidian shows it: `[[note]]` and `[[note|label]]` read as their label, `![[embeds]]` and `%%comments%%`
are left out, and `#tags` in the body count as tags. Code (fenced blocks, inline spans) is never touched.
Outside a vault the body stays byte for byte as it is, because `[[1, 2], [3, 4]]` in an ordinary note is a
nested list, not a link.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

from ingest.cleaning import fenced_blocks, split_lines
from ingest.converters import Converted

log = logging.getLogger(__name__)

FRONT_MATTER_MAX_CHARS = 64 * 1024  # a longer "front matter" is not one: the note keeps it as text
_FENCE_LINE = re.compile(r"^---[ \t]*\r?$")
_END_LINE = re.compile(r"^(?:---|\.\.\.)[ \t]*\r?$", re.MULTILINE)
_INLINE_CODE = re.compile(r"(`+)[^`\n](?:.*?[^`])??\1(?!`)")
_COMMENT = re.compile(r"%%.*?(?:%%|\Z)", re.DOTALL)
_EMBED = re.compile(r"!\[\[[^\[\]\n]{1,500}\]\]")
_WIKILINK = re.compile(r"\[\[([^\[\]\n|]{1,500})(?:\|([^\[\]\n]{0,500}))?\]\]")
# Obsidian tags: after a blank or at a line start; letters, digits, _ - /; at least one non-digit.
_TAG = re.compile(r"(?:(?<=\s)|^)#([\w/\-]{1,100})", re.MULTILINE)


class MarkdownConverter:
    """`.md` / `.markdown` notes; `obsidian=True` for notes inside an Obsidian vault."""

    version = 1
    suffixes = (".md", ".markdown")
    media_type = "text/markdown"

    def __init__(self, *, obsidian: bool) -> None:
        self.obsidian = obsidian
        self.name = "obsidian" if obsidian else "markdown"

    def sniff(self, head: bytes) -> bool:
        return True  # any text: the decoder decides

    def convert(self, data: bytes, path: str) -> Converted:
        from ingest.loading import decode

        text, encoding = decode(data)
        converted = convert_markdown(text, obsidian=self.obsidian)
        return _with_encoding(converted, encoding)


class TextConverter:
    """`.txt` notes: the decoded text as it is."""

    name = "text"
    version = 1
    suffixes = (".txt",)
    media_type = "text/plain"

    def sniff(self, head: bytes) -> bool:
        return True

    def convert(self, data: bytes, path: str) -> Converted:
        from ingest.loading import decode

        text, encoding = decode(data)
        return Converted(text=text, encoding=encoding)


def _with_encoding(converted: Converted, encoding: str) -> Converted:
    return Converted(
        text=converted.text,
        title=converted.title,
        tags=converted.tags,
        aliases=converted.aliases,
        links=converted.links,
        encoding=encoding,
    )


def convert_markdown(text: str, *, obsidian: bool) -> Converted:
    """A markdown note's index text and metadata. Without front matter and outside a vault, `text` unchanged."""
    meta, body_start = front_matter(text)
    body = text[body_start:]
    title = _scalar(meta.get("title")) if meta else ""
    tags = _names(meta.get("tags", meta.get("tag"))) if meta else []
    aliases = _names(meta.get("aliases", meta.get("alias")), split_commas=True) if meta else []
    links: list[str] = []
    if obsidian:
        body, body_tags, links = _obsidian_body(body)
        tags += body_tags
    return Converted(
        text=body,
        title=title,
        tags=tuple(dict.fromkeys(t.lower() for t in tags if t)),
        aliases=tuple(dict.fromkeys(a for a in aliases if a and a != title)),
        links=tuple(dict.fromkeys(links)),
        encoding="utf-8",
    )


def front_matter(text: str) -> tuple[dict | None, int]:
    """(parsed YAML mapping, offset where the body starts), or (None, 0) when the note has none.

    Only a `---` first line opens front matter, and only a YAML mapping closed by `---` or `...` counts: a note
    that starts with a horizontal rule keeps its text.
    """
    first_end = text.find("\n")
    if first_end < 0 or not _FENCE_LINE.match(text[:first_end]):
        return None, 0
    end = _END_LINE.search(text, first_end + 1, FRONT_MATTER_MAX_CHARS)
    if end is None:
        return None, 0
    import yaml

    try:
        meta = yaml.safe_load(text[first_end + 1 : end.start()])
    except (yaml.YAMLError, RecursionError, ValueError) as exc:  # deep nesting or odd values too
        log.warning("front matter is not valid YAML, kept as text: %s", (str(exc).splitlines() or ["?"])[0])
        return None, 0
    if not isinstance(meta, dict):
        return None, 0
    body_start = end.end()
    if text.startswith("\n", body_start):
        body_start += 1
    return meta, body_start


def _scalar(value: object) -> str:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return " ".join(str(value).split())[:200]
    return ""


def _names(value: object, *, split_commas: bool = False) -> list[str]:
    """Tag or alias names from a YAML value: a list of scalars, or one string (tags: blank- or comma-separated)."""
    if isinstance(value, str):
        parts = value.split(",") if split_commas else re.split(r"[,\s]+", value)
    elif isinstance(value, list):
        parts = [_scalar(item) for item in value[:200]]  # nested values are not names
    else:
        parts = [_scalar(value)]
    return [p.strip().lstrip("#").strip() for p in parts if p and p.strip().lstrip("#").strip()]


def _code_spans(text: str) -> list[tuple[int, int]]:
    """Fenced blocks (the chunker's definition) and inline code spans, in order, not overlapping."""
    lines = split_lines(text)
    blocks = [(lines[first][0], lines[last][1]) for first, last in fenced_blocks(text, lines)]
    inline = [
        (start + m.start(), start + m.end())
        for start, end in _gaps(text, blocks)
        for m in _INLINE_CODE.finditer(text[start:end])
    ]
    return sorted(blocks + inline)


def _gaps(text: str, spans: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    position = 0
    for start, end in spans:
        if start > position:
            yield position, start
        position = max(position, end)
    if position < len(text):
        yield position, len(text)


def _obsidian_body(body: str) -> tuple[str, list[str], list[str]]:
    """The body as Obsidian shows it, its #tags and its link targets (code left as it is)."""
    tags: list[str] = []
    links: list[str] = []

    def link(match: re.Match[str]) -> str:
        target, label = match.group(1).rstrip("\\").strip(), match.group(2)
        name = re.split(r"[#^]", target, maxsplit=1)[0].strip()
        if name:
            links.append(name)
        if label is not None and label.strip():
            return label.strip()
        return " > ".join(part.strip() for part in re.split(r"#\^?", target) if part.strip())

    out: list[str] = []
    code = _code_spans(body)
    position = 0
    for start, end in [*_gaps(body, code), (len(body), len(body))]:
        # the code span before this prose stretch stays verbatim
        out.append(body[position:start])
        prose = _COMMENT.sub("", body[start:end])
        prose = _EMBED.sub("", prose)
        prose = _WIKILINK.sub(link, prose)
        tags.extend(t for t in _TAG.findall(prose) if not t.replace("/", "").isdigit())
        out.append(prose)
        position = end
    return "".join(out), tags, links
