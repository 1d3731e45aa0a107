"""Split a note into heading-aware chunks whose text is an exact slice of the note.

Structure first, size second:

1. The note is cut into sections. Markdown ATX headings ("#".."######", outside fenced code) define them;
   before the first of them (all of a note without any, such as a web page saved as text) the note is cut
   at numbered outline lines ("1. 关键字", "2.1 训练过程") and at bullet terms (a short "• 术语" line whose
   explanation is indented below it). Structure is decided per region, not per note, so adding a markdown
   section to an outline note leaves the chunks before it as they were.
2. Each section becomes atoms that must never be cut: sentences (rag.text.sentence_spans), whole fenced
   code blocks, whole table rows. Boilerplate lines (cleaning.noise_spans) are not atoms.
3. Atoms are packed into chunks of about `chunk_size` characters, with whole sentences of overlap between
   consecutive chunks of the same section. A chunk never spans two sections, so a citation always
   points at one heading.

`Chunk.text` is `doc.text[start:end]`, trimmed, including the section's heading line in its first chunk;
`Chunk.index_text` is the heading path plus the cleaned text without boilerplate lines.
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from ingest.cleaning import (
    atx_heading,
    clean_for_index,
    fenced_blocks,
    heading_title,
    noise_spans,
    split_lines,
)
from rag.text import sentence_spans
from rag.types import Chunk, Document

AtomKind = Literal["heading", "text", "code", "table"]

# A text sentence longer than this many chunk sizes is cut at commas/spaces; a code block or table row
# longer than CODE_SPLIT_FACTOR chunk sizes is cut at line ends. Below that they stay whole.
TEXT_SPLIT_FACTOR = 2.0
CODE_SPLIT_FACTOR = 3.0
# When what is left of a section fits in this many chunk sizes it becomes one chunk, instead of a full
# chunk plus a tiny remainder.
TAIL_SLACK = 1.25

# "1. 关键字", "2.1 神经网络的训练过程", "3、总结": a number (dotted for sub-levels) then a short title.
_OUTLINE = re.compile(r"^(\d{1,3}(?:\.\d{1,3})*)(\.|、|\))?[ \t]+(\S.*?)\s*$")
_BULLET = re.compile(r"^([ \t\u3000]*)[•·▪◦‣●○■□\-*+][ \t]+(\S.*?)\s*$")
_ENDS_LIKE_SENTENCE = re.compile(r"[。，,；;：:！？!?、…]$")
# Spans a sentence split must not cut: links/images ("...image?)" has a "?"), inline code, HTML tags, URLs.
_PROTECTED = re.compile(
    # Bounded and "["-free link texts keep this linear on pathological lines such as "[[[[...".
    r"!?\[[^\[\]\n]{0,300}\]\([^()\n]{0,2000}\)|`[^`\n]{1,2000}`|<[^<>\n]{1,2000}>"
    r"|\b(?:https?|ftp)://[A-Za-z0-9\-._~:/?#\[\]@!$&'*+,;=%]+",
    re.IGNORECASE,
)
_SOFT_BREAK = re.compile(r"[，,、；;：:）)」』\]】 \t]")
_OUTLINE_MAX_TITLE = 40
_BULLET_MAX_TITLE = 60
_BULLET_LEVEL_BASE = 100  # bullet terms nest below every outline level; deeper indent = deeper level


@dataclass(slots=True)
class _Atom:
    start: int
    end: int
    kind: AtomKind


@dataclass(slots=True)
class _Section:
    path: tuple[str, ...]
    atoms: list[_Atom] = field(default_factory=list)


@dataclass(slots=True)
class _Heading:
    level: int
    title: str
    bullet_indent: int | None = None  # set for bullet terms: their explanation is indented deeper


def chunk_id(doc_id: str, heading_path: tuple[str, ...], text: str) -> str:
    """Stable 16-hex-digit id from the note's path, the heading path and the chunk text.

    No offsets go in, so editing one section (or another file) leaves the other chunks' ids unchanged.
    """
    payload = json.dumps([doc_id, list(heading_path), text], ensure_ascii=False)
    # surrogatepass: file names decoded with surrogateescape may carry lone surrogates.
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def heading_texts(chunks: Iterable[Chunk]) -> list[str]:
    """Unique heading strings of the chunks' heading paths, in order of first appearance."""
    seen: dict[str, None] = {}
    for chunk in chunks:
        for heading in chunk.heading_path:
            if heading.strip():
                seen.setdefault(heading, None)
    return list(seen)


def chunk_document(doc: Document, chunk_size: int = 500, overlap: int = 80) -> list[Chunk]:
    """Heading-aware chunks of `doc`, in document order (see the module docstring).

    `overlap` is clamped to half the chunk size so that every chunk adds new text.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    overlap = max(0, min(overlap, chunk_size // 2))
    text = doc.text
    noise = noise_spans(text)
    sections = _merge_empty_parents(_sections(text, noise, chunk_size))
    chunks: list[Chunk] = []
    seen_ids: dict[str, int] = {}
    for section in sections:
        for start, end in _pack(section.atoms, chunk_size, overlap):
            body = _without_spans(text, start, end, noise)
            cleaned = clean_for_index(body)
            prefix = " > ".join(section.path)
            index_text = f"{prefix}\n{cleaned}" if prefix else cleaned
            chunk_text = text[start:end]
            cid = chunk_id(doc.doc_id, section.path, chunk_text)
            occurrence = seen_ids.get(cid, 0)
            seen_ids[cid] = occurrence + 1
            if occurrence:  # identical text in the same section: the n-th copy gets its own stable id
                cid = hashlib.blake2b(f"{cid}#{occurrence}".encode(), digest_size=8).hexdigest()
            chunks.append(
                Chunk(
                    chunk_id=cid,
                    doc_id=doc.doc_id,
                    heading_path=section.path,
                    start=start,
                    end=end,
                    text=chunk_text,
                    index_text=index_text,
                    ordinal=len(chunks),
                    **_pages(doc.page_starts, start, end),
                )
            )
    return chunks


def _pages(page_starts: tuple[int, ...], start: int, end: int) -> dict:
    """`page` and `page_breaks` of the span [start, end) of a document with pages (nothing without)."""
    if not page_starts:
        return {}
    return {
        "page": max(1, bisect_right(page_starts, start)),
        "page_breaks": tuple(b for b in page_starts if start < b <= end),
    }


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def _indent(line: str) -> int:
    """Width of the leading whitespace, tabs counted as 4 columns."""
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())


def _sections(text: str, noise: list[tuple[int, int]], chunk_size: int) -> list[_Section]:
    """Cut the text into sections and each section into atoms."""
    lines = split_lines(text)
    blocks = {first: last for first, last in fenced_blocks(text, lines)}
    fenced = [False] * len(lines)
    for first, last in blocks.items():
        fenced[first : last + 1] = [True] * (last + 1 - first)
    is_noise = _noise_lines(lines, noise)

    markdown = {
        i: heading
        for i, (start, end) in enumerate(lines)
        if not fenced[i] and not is_noise[i] and (heading := atx_heading(text[start:end])) is not None
    }
    # Outline headings only in the region before the first markdown heading, judged as if the note ended
    # there: what follows (an appended "## section", say) cannot change them.
    first_markdown = min(markdown, default=len(lines))
    headings = _outline_headings(text, lines[:first_markdown], fenced, is_noise)
    headings |= {i: _Heading(level, heading_title(raw)) for i, (level, raw) in markdown.items()}

    sections: list[_Section] = []
    current = _Section(())
    stack: list[_Heading] = []
    first_depth: dict[int, int] = {}
    i = 0
    while i < len(lines):
        start, end = lines[i]
        if is_noise[i]:
            i += 1
            continue
        if i in blocks:
            last = blocks[i]
            current.atoms.extend(_code_atoms(text, start, lines[last][1], chunk_size))
            i = last + 1
            continue
        line = text[start:end]
        if not line.strip():
            i += 1
            continue
        heading = headings.get(i)
        if heading is not None:
            sections.append(current)
            if i == first_markdown:
                stack.clear()  # the markdown region starts its own hierarchy, below no outline heading
            _push(stack, heading, first_depth, consistent_levels=i in markdown)
            current = _Section(tuple(h.title for h in stack))
            current.atoms.extend(_split_atom(text, start, end, "heading", chunk_size))
            i += 1
            continue
        indent = _indent(line)
        if stack and stack[-1].bullet_indent is not None and indent <= stack[-1].bullet_indent:
            # Back at (or left of) the bullet's column: the term's explanation is over; what follows
            # belongs to the enclosing section again.
            while stack and stack[-1].bullet_indent is not None and indent <= stack[-1].bullet_indent:
                stack.pop()
            sections.append(current)
            current = _Section(tuple(h.title for h in stack))
        current.atoms.extend(_line_atoms(text, start, end, chunk_size))
        i += 1
    sections.append(current)
    return sections


def _noise_lines(lines: list[tuple[int, int]], noise: list[tuple[int, int]]) -> list[bool]:
    """Per line, whether it lies in a noise span (noise spans always cover whole lines)."""
    flags = [False] * len(lines)
    k = 0
    for i, (start, _end) in enumerate(lines):
        while k < len(noise) and noise[k][1] <= start:
            k += 1
        flags[i] = k < len(noise) and noise[k][0] <= start < noise[k][1]
    return flags


def _push(
    stack: list[_Heading], heading: _Heading, first_depth: dict[int, int], consistent_levels: bool
) -> None:
    """Put `heading` on the stack of enclosing headings.

    With `consistent_levels` (markdown), a heading level keeps the nesting depth at which it first
    appeared: in a glossary of "###" entries with a stray "# term" in the middle, later "###" entries
    stay top-level siblings instead of all becoming children of that one "#" heading.
    """
    while stack and stack[-1].level >= heading.level:
        stack.pop()
    if consistent_levels:
        depth = first_depth.setdefault(heading.level, len(stack))
        del stack[depth:]
    stack.append(heading)


def _blank_or_noise(text: str, lines: list[tuple[int, int]], is_noise: list[bool], i: int) -> bool:
    if i < 0 or i >= len(lines):
        return True
    start, end = lines[i]
    return is_noise[i] or not text[start:end].strip()


def _outline_headings(
    text: str, lines: list[tuple[int, int]], fenced: list[bool], is_noise: list[bool]
) -> dict[int, _Heading]:
    """Headings of a note without markdown headings: numbered outline lines and bullet terms.

    An outline heading is an unindented "1." / "2.1" line with a short title that does not read like a
    sentence, standing alone between blank lines (list items run on without blank lines). A bullet term
    is a short bullet line whose next non-blank line is indented deeper than the bullet: the term and
    its indented explanation.
    """
    headings: dict[int, _Heading] = {}
    for i, (start, end) in enumerate(lines):
        if fenced[i] or is_noise[i]:
            continue
        line = text[start:end].rstrip("\r")
        outline = _OUTLINE.match(line)
        if outline:
            number, delimiter, title = outline.groups()
            if (
                ("." in number or delimiter)
                and len(title) <= _OUTLINE_MAX_TITLE
                and not _ENDS_LIKE_SENTENCE.search(title)
                and any(ch.isalpha() for ch in title)
                and _blank_or_noise(text, lines, is_noise, i - 1)
                and _blank_or_noise(text, lines, is_noise, i + 1)
            ):
                headings[i] = _Heading(number.count(".") + 1, heading_title(title))
            continue
        bullet = _BULLET.match(line)
        if not bullet:
            continue
        title = bullet.group(2)
        if (
            len(title) > _BULLET_MAX_TITLE
            or _ENDS_LIKE_SENTENCE.search(title)
            or not any(ch.isalpha() for ch in title)
        ):
            continue
        following = _next_content_line(text, lines, fenced, is_noise, i)
        indent = _indent(line)
        if following is not None and _indent(text[lines[following][0] : lines[following][1]]) > indent:
            headings[i] = _Heading(_BULLET_LEVEL_BASE + indent, heading_title(title), bullet_indent=indent)
    return headings


def _next_content_line(
    text: str, lines: list[tuple[int, int]], fenced: list[bool], is_noise: list[bool], i: int
) -> int | None:
    for j in range(i + 1, len(lines)):
        if fenced[j]:
            return None  # a code block is not an indented explanation
        if not _blank_or_noise(text, lines, is_noise, j):
            return j
    return None


def _merge_empty_parents(sections: list[_Section]) -> list[_Section]:
    """Drop empty sections; a heading with no body of its own that is directly followed by a subheading
    is carried into the subsection's first chunk (it is also in that chunk's heading path)."""
    merged: list[_Section] = []
    carry: list[_Atom] = []
    for k, section in enumerate(sections):
        atoms = carry + section.atoms
        carry = []
        if not atoms:
            continue
        following = sections[k + 1].path if k + 1 < len(sections) else ()
        heading_only = all(atom.kind == "heading" for atom in atoms)
        if (
            heading_only
            and len(following) > len(section.path)
            and following[: len(section.path)] == section.path
        ):
            carry = atoms
            continue
        merged.append(_Section(section.path, atoms))
    return merged


# --------------------------------------------------------------------------------------------------
# Atoms
# --------------------------------------------------------------------------------------------------


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The span without leading/trailing whitespace, or None when nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _line_atoms(text: str, start: int, end: int, chunk_size: int) -> list[_Atom]:
    """Atoms of one body line: a table row is one atom, any other line one atom per sentence."""
    line = text[start:end]
    if line.lstrip().startswith("|"):
        return _split_atom(text, start, end, "table", chunk_size)
    atoms: list[_Atom] = []
    for sentence_start, sentence_end in _sentences(line):
        atoms.extend(_split_atom(text, start + sentence_start, start + sentence_end, "text", chunk_size))
    return atoms


def _sentences(line: str) -> list[tuple[int, int]]:
    """sentence_spans of a line, re-joined where a boundary falls inside a link, code span, tag or URL."""
    protected = [(m.start(), m.end()) for m in _PROTECTED.finditer(line)]
    merged: list[tuple[int, int]] = []
    p = 0
    for start, end in sentence_spans(line):
        if merged:
            boundary = merged[-1][1]
            while p < len(protected) and protected[p][1] <= boundary:
                p += 1
            if p < len(protected) and protected[p][0] < boundary:
                merged[-1] = (merged[-1][0], end)
                continue
        merged.append((start, end))
    return merged


def _split_atom(text: str, start: int, end: int, kind: AtomKind, chunk_size: int) -> list[_Atom]:
    """One trimmed atom, or several when it is far longer than a chunk (cut at commas/spaces or hard)."""
    span = _trim(text, start, end)
    if span is None:
        return []
    start, end = span
    factor = TEXT_SPLIT_FACTOR if kind in ("text", "heading") else CODE_SPLIT_FACTOR
    if end - start <= chunk_size * factor:
        return [_Atom(start, end, kind)]
    atoms: list[_Atom] = []
    position = start
    while end - position > chunk_size:
        window_end = position + chunk_size
        cut = window_end
        # Prefer the last comma/space in the second half of the window over a hard cut.
        for match in _SOFT_BREAK.finditer(text, position + chunk_size // 2, window_end):
            cut = match.end()
        piece = _trim(text, position, cut)
        if piece:
            atoms.append(_Atom(piece[0], piece[1], kind))
        position = cut
    piece = _trim(text, position, end)
    if piece:
        atoms.append(_Atom(piece[0], piece[1], kind))
    return atoms


def _code_atoms(text: str, start: int, end: int, chunk_size: int) -> list[_Atom]:
    """A fenced block is one atom; a huge one is cut at line ends into pieces of about a chunk."""
    span = _trim(text, start, end)
    if span is None:
        return []
    start, end = span
    if end - start <= chunk_size * CODE_SPLIT_FACTOR:
        return [_Atom(start, end, "code")]
    atoms: list[_Atom] = []
    piece_start = start
    for line_start, line_end in split_lines(text[start:end]):
        line_start += start
        line_end += start
        if line_end - piece_start > chunk_size and line_start > piece_start:
            atoms.extend(_split_atom(text, piece_start, line_start, "code", chunk_size))
            piece_start = line_start
    atoms.extend(_split_atom(text, piece_start, end, "code", chunk_size))
    return atoms


# --------------------------------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------------------------------


def _pack(atoms: list[_Atom], chunk_size: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of each chunk of one section: greedy packing of whole atoms with sentence overlap."""
    spans: list[tuple[int, int]] = []
    n = len(atoms)
    i = 0
    while i < n:
        first = atoms[i].start
        if atoms[-1].end - first <= chunk_size * TAIL_SLACK:
            j = n - 1
        else:
            j = i
            only_headings = atoms[i].kind == "heading"
            while j + 1 < n:
                size = atoms[j + 1].end - first
                # A heading never stands alone in front of a big code block or sentence: it joins the
                # next atom as long as the two stay within the hard limit for code blocks.
                if size > chunk_size and not (only_headings and size <= chunk_size * CODE_SPLIT_FACTOR):
                    break
                j += 1
                only_headings = only_headings and atoms[j].kind == "heading"
        spans.append((first, atoms[j].end))
        if j == n - 1:
            break
        # Overlap: the last whole sentences of this chunk (not its first atom, never code, tables or
        # headings), as long as they fit in `overlap` and leave room for the next new atom.
        k = j + 1
        while k - 1 > i and atoms[k - 1].kind == "text" and atoms[j].end - atoms[k - 1].start <= overlap:
            k -= 1
        if k <= j and atoms[j + 1].end - atoms[k].start > chunk_size:
            k = j + 1
        i = k
    return spans


def _without_spans(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> str:
    """text[start:end] with the parts covered by `spans` (sorted, disjoint) cut out."""
    pieces: list[str] = []
    position = start
    for span_start, span_end in spans:
        if span_end <= position:
            continue
        if span_start >= end:
            break
        if span_start > position:
            pieces.append(text[position:span_start])
        position = max(position, span_end)
    if position < end:
        pieces.append(text[position:end])
    return "".join(pieces)
