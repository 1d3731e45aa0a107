"""Passages cut into sentences: each with its offsets in the chunk, its kind (text, heading, code, URL...),
the heading above it and whether it is a list item. The extractive answerer quotes them; LLM citations pick
their snippet among them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.text import CJK_CHARS, HAS_CJK, sentence_spans
from rag.types import Hit

_PREFIX = re.compile(r"^(?:#{1,6}[ \t]+|>[ \t]*|[-*+•●▪◦·][ \t]+)+")
_HEADING_LINE = re.compile(r"^[ \t]*#{1,6}(?:[ \t]|$)")  # "## " or a bare "##": an (empty) heading
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\([^)]*\)")
_URL_TOKEN = re.compile(r"^(?:<?(?:https?://|www\.)\S+>?|!?\[[^\]]*\]\([^)]*\))$", re.I)
_CODE_LINE = re.compile(
    r"^(?:import\s|from\s+\S+\s+import\s|def\s|class\s+\w+\s*[(:]|return\b|print\s*\(|>>>|\$\s|"
    r"In\s*\[\d*\]|Out\s*\[\d*\]|@\w+|[\w.]+\s*\(.*\)\s*;?$|[\w.\[\], ]+\s*[-+*/%]?=\s*\S|[{}()\[\];]+$)"
)
_CODE_SYMBOLS = set("{}()[]=;<>_/\\|$`")
# "2.3 设置学习率的过程": a numbered title line without punctuation, used as a heading by web-page notes.
_TITLE_LINE = re.compile(r"^\d{1,2}(?:\.\d{1,2})*\.?\s+[^，,。；;：:！？!?、]{1,40}$")
# ... whose glosses in parentheses may hold commas ("1. 深度神经网络（DNNs，Deep Neural Networks）"); not a link's
# address ("1. [Gradio](https://…)")
_GLOSS = re.compile(r"[（(][^（()）:/]*[)）]")
_CITE_LIKE = re.compile(r"[\[［【]\s*\d+\s*[\]］】]")
MEANINGFUL = re.compile(f"[{CJK_CHARS}A-Za-z0-9]")
# the number opening a list item's line ("3. ", "3、"), not a section's ("2.1 ")
_ITEM_NUMBER = re.compile(r"^(\d{1,2})(?:\s*[.、．)）](?!\d)|\s+)")
LIST_ITEM = re.compile(r"^(?:\d{1,2}\s*[、.．)）]|[（(]\d{1,2}[)）]|[①-⑳]|[-*+•●▪◦·]\s)")
_COLON_END = re.compile(r"[：:]\s*$")
_LIST_NUMBER = re.compile(r"^\s*(?:[-*+•]\s*)?\d{1,2}[.．]\s*$")
_BULLET = re.compile(r"[-*+•●▪◦·]")
# A sentence a line break cut before it ended: a comma, or a particle or preposition no sentence ends with.
_UNFINISHED = re.compile(r"(?:[，,、]|(?<=[\u4e00-\u9fff])[的和与及或把被对从向])$")


@dataclass
class Sentence:
    """One candidate sentence of one passage; `start`/`end` index the passage's chunk.text."""

    passage: int  # 0-based index into passages
    pos: int  # index among the passage's sentences
    start: int
    end: int
    text: str
    kind: str  # "text", "heading", "code", "url", "short", "marker"
    line_start: bool
    gap_newline: bool  # a line break separates it from the previous sentence
    heading: str = ""  # the nearest heading above it (markdown or numbered title line)
    bullet: bool = False  # a list item ("- x", "• x", "1. x")
    continues: bool = False  # goes on with the previous sentence, which a single line break cut mid-clause
    matched_words: frozenset[str] = frozenset()  # query words it contains
    matched_grams: frozenset[str] = frozenset()  # query character bigrams / Latin terms it contains
    lex: float = 0.0  # IDF-weighted share of the query it covers by itself
    score: float = 0.0

    @property
    def ends_colon(self) -> bool:
        return _COLON_END.search(self.text) is not None


def _fenced_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of lines inside ``` fences (fence lines included)."""
    spans: list[tuple[int, int]] = []
    inside = False
    offset = 0
    for line in text.splitlines(keepends=True):
        fence = _FENCE.match(line) is not None
        if inside or fence:
            spans.append((offset, offset + len(line)))
        if fence:
            inside = not inside
        offset += len(line)
    return spans


def _url_only(text: str) -> bool:
    """A line made only of URLs / markdown links or images ("[CLIP 训练过程.gif](https://…)": its text is alt
    text, not a statement)."""
    if not text.strip():
        return False
    rest = _MARKDOWN_LINK.sub(" ", text)
    tokens = [t for t in re.split(r"[\s,，、;；]+", rest) if t]
    return all(_URL_TOKEN.match(t) for t in tokens)


def _listed_lines(text: str) -> set[int]:
    """Offsets of the numbered lines that are items of a list: the line before (blank lines aside) holds the
    number before theirs, or the line after the number after, at the same indentation ("1. 量化" above "2. 剪枝").
    A numbered title with text or a nested list under it heads them ("1. 深度神经网络（DNNs）" over its
    description, "3. 低成本部署考虑" over "   1. 模型量化")."""
    lines: list[tuple[int, int | None, int]] = []  # (offset, number, indentation) of each non-blank line
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            number = _ITEM_NUMBER.match(_PREFIX.sub("", line.strip()))
            indent = len(line) - len(line.lstrip())
            lines.append((offset, int(number.group(1)) if number else None, indent))
        offset += len(line)
    listed = set()
    for i, (start, n, indent) in enumerate(lines):
        before = lines[i - 1] if i > 0 else None
        after = lines[i + 1] if i + 1 < len(lines) else None
        if n is None or (after is not None and after[2] > indent):
            continue  # no number, or what follows is indented under it
        if (before is not None and before[1] == n - 1 and before[2] == indent) or (
            after is not None and after[1] == n + 1 and after[2] == indent
        ):
            listed.add(start)
    return listed


def _classify(raw_line: str, text: str, in_fence: bool, listed: bool = False) -> str:
    """The kind of a sentence; `listed`: its line is an item of a numbered list (`_listed_lines`), no title."""
    if in_fence:
        return "code"
    if _HEADING_LINE.match(raw_line) or (not listed and _TITLE_LINE.match(_GLOSS.sub("", text))):
        return "heading"
    if _url_only(text):
        return "url"
    if _CITE_LIKE.search(text):
        return "marker"  # would be confused with our own citation markers
    if _LIST_NUMBER.match(text):
        return "marker"  # a list number with no item after it ("5." closing a note's outline) says nothing
    if not HAS_CJK.search(text):
        if _CODE_LINE.match(text):
            return "code"
        symbols = sum(1 for ch in text if ch in _CODE_SYMBOLS)
        if symbols >= 3 and symbols / max(1, len(text)) > 0.12:
            return "code"
    if len(MEANINGFUL.findall(text)) < 4:
        return "short"
    return "text"


def _merged_spans(text: str) -> list[tuple[int, int]]:
    """sentence_spans, with a list number joined to its item ("1. 将输入……")."""
    merged: list[tuple[int, int]] = []
    for start, end in sentence_spans(text):
        if merged and _LIST_NUMBER.match(text[merged[-1][0] : merged[-1][1]]) and "\n" not in text[merged[-1][1] : start]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _heading_key(text: str) -> str:
    return text.strip().rstrip("：:").strip().lower()


def split_passage(index: int, hit: Hit) -> list[Sentence]:
    """Sentences of a passage, stripped of heading markers / bullets, classified."""
    text = hit.chunk.text
    fenced = _fenced_lines(text)
    listed = _listed_lines(text)
    # a line that repeats a heading of the chunk's path ("• 学习率(Learning rate)" in a web-page dump, which has
    # no '#') is that heading, never an answer
    section_titles = {_heading_key(h) for h in hit.chunk.heading_path if h.strip()}
    out: list[Sentence] = []
    prev_end = 0
    heading = hit.chunk.heading_path[-1] if hit.chunk.heading_path else ""
    for s, e in _merged_spans(text):
        piece = text[s:e]
        raw_start = s + len(piece) - len(piece.lstrip())
        line_begin = text.rfind("\n", 0, raw_start) + 1
        line_end = text.find("\n", raw_start)
        raw_line = text[line_begin : line_end if line_end >= 0 else len(text)]
        body = text[raw_start:e].rstrip()
        prefix = _PREFIX.match(body)
        body = (body[prefix.end() :] if prefix else body).strip()
        if not body:
            prev_end = e
            continue
        body_start = text.index(body, raw_start)
        in_fence = any(a <= body_start < b for a, b in fenced)
        kind = _classify(raw_line, body, in_fence, listed=line_begin in listed)
        line = _PREFIX.sub("", raw_line.strip())
        if kind in ("text", "short") and _heading_key(body) in section_titles and _heading_key(line) == _heading_key(body):
            kind = "heading"
        if kind == "heading":
            heading = body
        bullet = bool(prefix and _BULLET.search(prefix.group())) or bool(LIST_ITEM.match(body))
        previous = out[-1] if out else None
        continues = (
            previous is not None
            and previous.kind == kind == "text"
            and not bullet
            and _UNFINISHED.search(previous.text) is not None
            and text.count("\n", previous.end, body_start) <= 1
        )
        out.append(
            Sentence(
                passage=index,
                pos=len(out),
                start=body_start,
                end=body_start + len(body),
                text=body,
                kind=kind,
                line_start=not text[line_begin:raw_start].strip(),
                gap_newline=bool(out) and "\n" in text[prev_end:body_start],
                heading=heading,
                bullet=bullet,
                continues=continues,
            )
        )
        prev_end = e
    return out


def sentence_run(group: Sequence[Sentence], s: Sentence) -> range:
    """The positions of the pieces of the whole sentence `s` is one of: pieces a line break cut (`continues`)."""
    first = s.pos
    while group[first].continues:
        first -= 1
    last = s.pos
    while last + 1 < len(group) and group[last + 1].continues:
        last += 1
    return range(first, last + 1)


def whole_sentence(group: Sequence[Sentence], s: Sentence) -> str:
    """The text of the whole sentence `s` is a piece of, its pieces joined on one line as the answer renders
    them; `s.text` itself when no line break cut it."""
    text = ""
    for i in sentence_run(group, s):
        piece = group[i].text
        latin = text and re.search(r"[A-Za-z0-9.,;:)]\Z", text) and re.match(r"[A-Za-z0-9(]", piece)
        text += (" " if latin else "") + piece
    return text


def clause_cut(text: str, limit: int) -> str:
    """The longest prefix of `text` within `limit` chars, cut after a clause mark when possible."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = max(head.rfind(ch) for ch in "，,；;、：:）)")
    return head[: cut + 1] if cut >= limit // 2 else head


def lines_before(text: str, start: int, limit: int = 30) -> list[str]:
    """The lines of `text` above offset `start`, nearest first (at most `limit`), stripped of markdown heading marks:
    the headings a sentence may have been read under when its chunk stood alone."""
    above = text[:start].splitlines()
    if above and not text[:start].endswith("\n"):
        above.pop()  # the sentence's own line
    lines = (line.strip().lstrip("#").strip() for line in reversed(above))
    return [line for line in lines if line][:limit]
