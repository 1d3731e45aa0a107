"""PDF with a text layer, read with pypdfium2 (PDFium: fast, exact text, positions, font sizes, the outline).

What a reader of the page sees, not the content stream:

* running headers, footers and page numbers are dropped: lines in the top or bottom margin that repeat on at
  least half of the pages (digits ignored), and page-number lines ("第 3 页", "Page 3 of 9", "- 3 -") there;
* headings come from the outline (bookmarks) when it names lines of the text, otherwise from the font: lines
  clearly larger than the body text, the largest size level 1;
* lines are re-joined into paragraphs, across page breaks too; Chinese lines are joined without a space;
* a run of lines split into cells by wide gaps is a table and stays one "| a | b |" row per line.

Scanned pages (no text layer), encrypted, truncated and damaged files raise `ConversionError` with the reason.
The output records where each page starts, so a citation can name its page.
"""

from __future__ import annotations

import math
import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from ingest.converters import ConversionError, Converted

MARGIN = 0.08  # share of the page height at the top and bottom where running headers and footers sit
MIN_CHARS_PER_PAGE = 10  # fewer visible characters per page on average: a scan without a text layer
MAX_ODD_SHARE = 0.1  # more private-use / unmapped characters: fonts without a Unicode map (garbage text)
HEADING_RATIO = 1.15  # a line this much larger than the body text may be a heading
CELL_GAP = 1.5  # a gap of this many font sizes between two characters separates table cells

_PAGE_NUMBER = re.compile(r"^(?:第#页(?:/?共#页)?|(?:page|p\.?)#(?:(?:of|/)#)?|#(?:/#)?|[-–—]#[-–—]|\(#\))$")
_SENTENCE_END = tuple("。．.！!？?；;…\"”’」』）)")
_LATIN_END = re.compile(r"[A-Za-z]-$")


@dataclass(slots=True)
class _Line:
    text: str
    size: float
    bold: bool
    top: float
    bottom: float
    left: float
    right: float
    cells: list[str] = field(default_factory=list)
    kind: str = "body"  # body, heading, table, furniture
    level: int = 0


class PdfConverter:
    name = "pdf"
    version = 1
    suffixes = (".pdf",)
    media_type = "application/pdf"

    def sniff(self, head: bytes) -> bool:
        return b"%PDF-" in head[:1024]

    def convert(self, data: bytes, path: str) -> Converted:
        return convert_pdf(data)


def convert_pdf(data: bytes) -> Converted:
    """The PDF's text as the index sees it, with the offset where each page starts."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    if b"%%EOF" not in data[-2048:]:
        raise ConversionError("truncated or damaged PDF: it has no end-of-file marker")
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise ConversionError("encrypted PDF: it needs a password to open") from None
        raise ConversionError(f"damaged or unreadable PDF ({exc})") from None
    try:
        pages, heights = [], []
        for i in range(len(pdf)):
            page = pdf[i]
            heights.append(page.get_height())
            pages.append(_page_lines(page, pdfium_c))
        outline = _outline(pdf)
        title = _meta_title(pdf)
    finally:
        pdf.close()
    if not pages:
        raise ConversionError("the PDF has no pages")
    visible = sum(len(line.text) - line.text.count(" ") for lines in pages for line in lines)
    if visible < MIN_CHARS_PER_PAGE * len(pages):
        raise ConversionError("no text layer (a scanned or image-only PDF): OCR is not supported")
    odd = sum(1 for lines in pages for line in lines for ch in line.text if _odd(ch))
    if odd > MAX_ODD_SHARE * visible:
        raise ConversionError("the text layer is unreadable (fonts without a Unicode map): OCR is not supported")

    _mark_furniture(pages, heights)
    if not _mark_outline(pages, outline):
        _mark_by_font(pages)
    _mark_tables(pages)
    text, page_starts = _assemble(pages)
    if not text.strip():
        raise ConversionError("no text left after removing page headers and footers")
    return Converted(text=text, title=title, page_starts=page_starts)


# ---------------------------------------------------------------------------------------------- reading


def _page_lines(page, pdfium_c) -> list[_Line]:
    """The page's lines in PDFium's reading order, with sizes and positions."""
    textpage = page.get_textpage()
    try:
        handle = textpage.raw
        rect = pdfium_c.FS_RECTF()
        lines: list[_Line] = []
        chars: list[tuple[str, float, float, float, float, float, int]] = []
        for i in range(textpage.count_chars()):
            code = pdfium_c.FPDFText_GetUnicode(handle, i)
            if code in (10, 13):
                if chars:
                    lines.append(_line(chars))
                    chars = []
                continue
            if code == 0xFFFE or code == 2:  # soft hyphen markers PDFium adds at line ends
                continue
            if 0xDC00 <= code <= 0xDFFF and chars and 0xD800 <= ord(chars[-1][0]) <= 0xDBFF:
                # the second half of a character beyond the BMP (an emoji): join the pair
                high = chars.pop()
                code = 0x10000 + ((ord(high[0]) - 0xD800) << 10) + (code - 0xDC00)
            ch = chr(code) if code < 0x110000 else "\ufffd"
            if ch.isspace():
                chars.append((" ", 0, 0, 0, 0, 0, 0))
                continue
            pdfium_c.FPDFText_GetLooseCharBox(handle, i, rect)
            size = pdfium_c.FPDFText_GetFontSize(handle, i)
            weight = pdfium_c.FPDFText_GetFontWeight(handle, i)
            chars.append((ch, rect.left, rect.right, rect.bottom, rect.top, size, weight))
        if chars:
            lines.append(_line(chars))
    finally:
        textpage.close()
        page.close()
    return [line for line in lines if line.text]


def _line(chars: list[tuple[str, float, float, float, float, float, int]]) -> _Line:
    # a surrogate left unpaired cannot be stored as UTF-8
    chars = [("\ufffd", *c[1:]) if 0xD800 <= ord(c[0]) <= 0xDFFF else c for c in chars]
    ink = [c for c in chars if c[0] != " "]
    text = re.sub(r" {2,}", " ", "".join(c[0] for c in chars)).strip()
    if not ink:
        return _Line("", 0, False, 0, 0, 0, 0)
    sizes = Counter(round(c[5] * 2) / 2 for c in ink)
    cells: list[str] = []
    current = [ink[0][0]]
    previous = ink[0]
    for c in ink[1:]:
        gap = c[1] - previous[2]
        if gap > CELL_GAP * max(c[5], 1.0):
            cells.append("".join(current))
            current = []
        elif gap > 0.2 * max(c[5], 1.0) and current and _needs_space(current[-1], c[0]):
            current.append(" ")
        current.append(c[0])
        previous = c
    cells.append("".join(current))
    return _Line(
        text=text,
        size=sizes.most_common(1)[0][0],
        bold=sum(1 for c in ink if c[6] >= 600) > len(ink) / 2,
        top=max(c[4] for c in ink),
        bottom=min(c[3] for c in ink),
        left=ink[0][1],
        right=ink[-1][2],
        cells=cells if len(cells) > 1 else [],
    )


def _outline(pdf) -> list[tuple[int, str, int]]:
    """(level from 1, title, page index) of each bookmark that points at a page."""
    entries = []
    try:
        for item in pdf.get_toc(max_depth=6):
            dest = item.get_dest()
            index = dest.get_index() if dest is not None else None
            title = " ".join((item.get_title() or "").split())
            if index is not None and title:
                entries.append((min(item.level + 1, 6), title, index))
    except Exception:  # a broken outline is no reason to lose the text  # noqa: BLE001
        return []
    return entries


def _meta_title(pdf) -> str:
    try:
        title = " ".join(str(pdf.get_metadata_dict().get("Title", "")).split())
    except Exception:  # noqa: BLE001
        return ""
    if not title or title.lower() in ("untitled", "无标题") or re.search(r"\.(?:docx?|pdf|tex)$|^microsoft word", title, re.I):
        return ""
    return title[:200]


def _odd(ch: str) -> bool:
    return ch == "\ufffd" or unicodedata.category(ch) in ("Co", "Cn", "Cs", "Cc")


# ---------------------------------------------------------------------------------------------- marking


def _key(text: str) -> str:
    return re.sub(r"\d+", "#", re.sub(r"\s+", "", text)).lower()


def _mark_furniture(pages: list[list[_Line]], heights: list[float]) -> None:
    """Running headers, footers and page numbers: lines in the margins that repeat or count pages."""
    in_margin = [
        [line for line in lines if line.top >= height * (1 - MARGIN) or line.bottom <= height * MARGIN]
        for lines, height in zip(pages, heights, strict=True)
    ]
    seen = Counter(key for lines in in_margin for key in {_key(line.text) for line in lines})
    enough = max(2, math.ceil(len(pages) / 2))
    repeated = {key for key, count in seen.items() if count >= enough}
    for lines in in_margin:
        for line in lines:
            key = _key(line.text)
            if key in repeated or _PAGE_NUMBER.match(key):
                line.kind = "furniture"


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def _mark_outline(pages: list[list[_Line]], outline: list[tuple[int, str, int]]) -> bool:
    """Mark the lines the bookmarks name as headings; False when none matched."""
    matched = False
    for level, title, index in outline:
        if not 0 <= index < len(pages):
            continue
        wanted = _norm(title)
        for line in pages[index]:
            if line.kind != "body":
                continue
            have = _norm(line.text)
            if have == wanted or (len(have) >= 2 and wanted.startswith(have) and len(have) >= len(wanted) // 2):
                line.kind, line.level = "heading", level
                matched = True
                break
    return matched


def _body_size(pages: list[list[_Line]]) -> float:
    sizes: Counter[float] = Counter()
    for lines in pages:
        for line in lines:
            if line.kind == "body":
                sizes[line.size] += len(line.text)
    return sizes.most_common(1)[0][0] if sizes else 0.0


def _mark_by_font(pages: list[list[_Line]]) -> None:
    """Headings by font size: lines clearly larger than the body text, short and not ending a sentence."""
    body = _body_size(pages)
    if body <= 0:
        return
    candidates = [
        line
        for lines in pages
        for line in lines
        if line.kind == "body"
        and line.size >= max(body * HEADING_RATIO, body + 1)
        and len(line.text) <= 80
        and not line.text.endswith(_SENTENCE_END)
    ]
    levels = {size: rank for rank, size in enumerate(sorted({c.size for c in candidates}, reverse=True), start=1)}
    for line in candidates:
        line.kind, line.level = "heading", min(levels[line.size], 3)
    # bold body-size lines standing alone are the lowest heading level
    lowest = min(len(levels) + 1, 4)
    for lines in pages:
        for i, line in enumerate(lines):
            if (
                line.kind == "body"
                and line.bold
                and len(line.text) <= 40
                and not line.text.endswith(_SENTENCE_END)
                and (i + 1 == len(lines) or not lines[i + 1].bold)
            ):
                line.kind, line.level = "heading", lowest


def _mark_tables(pages: list[list[_Line]]) -> None:
    """Runs of two or more body lines split into cells are table rows."""
    for lines in pages:
        i = 0
        while i < len(lines):
            j = i
            while j < len(lines) and lines[j].kind == "body" and lines[j].cells:
                j += 1
            if j - i >= 2:
                for line in lines[i:j]:
                    line.kind = "table"
            i = max(j, i + 1)


# ---------------------------------------------------------------------------------------------- writing


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x2E80 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
        or 0x3000 <= code <= 0x303F
        or 0x20000 <= code <= 0x3FFFF
    )


def _needs_space(before: str, after: str) -> bool:
    return not (_is_cjk(before) or _is_cjk(after))


def _joiner(before: str, after: str) -> str:
    """What joins two lines of one paragraph: nothing for Chinese or a hyphenated word, else a space."""
    if not before or not after:
        return ""
    if _LATIN_END.search(before) and after[0].isalpha():
        return ""
    return " " if _needs_space(before[-1], after[0]) else ""


def _pitch(pages: list[list[_Line]]) -> float:
    """The usual distance between the baselines of two lines of one paragraph."""
    steps = [
        a.bottom - b.bottom
        for lines in pages
        for a, b in zip(lines, lines[1:], strict=False)
        if a.kind == b.kind == "body" and 0 < a.bottom - b.bottom < 3 * max(a.size, 1)
    ]
    return statistics.median(steps) if steps else 0.0


def _assemble(pages: list[list[_Line]]) -> tuple[str, tuple[int, ...]]:
    """Markdown-like text of the marked lines, and the offset where each page starts."""
    pitch = _pitch(pages)
    right_edge = max((line.right for lines in pages for line in lines if line.kind == "body"), default=0.0)
    parts: list[str] = []
    length = 0
    page_starts: list[int] = []
    previous: _Line | None = None  # the last line written
    previous_kind = ""

    def write(piece: str) -> None:
        nonlocal length
        parts.append(piece)
        length += len(piece)

    for number, lines in enumerate(pages):
        pending_page = True
        first_on_page = True
        for line in lines:
            if line.kind == "furniture":
                continue
            if line.kind == "heading":
                separator = "\n\n" if length else ""
                body = "#" * line.level + " " + line.text
                if previous_kind == "heading" and previous is not None and previous.level == line.level and not first_on_page:
                    # a heading wrapped over two lines: one heading
                    separator, body = _joiner(previous.text, line.text), line.text
            elif line.kind == "table":
                separator = ("\n" if previous_kind == "table" else "\n\n") if length else ""
                body = "| " + " | ".join(cell.strip() for cell in line.cells) + " |"
            else:
                text = " ".join(line.cells) if line.cells else line.text
                continues = previous_kind == "body" and previous is not None and _continues(
                    previous, line, pitch, right_edge, first_on_page
                )
                separator = _joiner(parts[-1] if parts else "", text) if continues else ("\n\n" if length else "")
                # a paragraph line that would read as a markdown heading keeps its "#" as text
                body = "\\" + text if not continues and text.startswith("#") else text
            write(separator)
            if pending_page:
                page_starts.extend([length] * (number + 1 - len(page_starts)))
                pending_page = False
            write(body)
            previous, previous_kind, first_on_page = line, line.kind, False
    page_starts.extend([length] * (len(pages) - len(page_starts)))
    if page_starts:
        page_starts[0] = 0
    return "".join(parts) + "\n", tuple(page_starts)


def _continues(previous: _Line, line: _Line, pitch: float, right_edge: float, new_page: bool) -> bool:
    """Whether `line` goes on the paragraph `previous` ended, or starts a new one."""
    ended = previous.text.endswith(_SENTENCE_END)
    if new_page:
        return not ended  # a sentence cut by the page break goes on
    step = previous.bottom - line.bottom
    if pitch and not 0 < step <= pitch * 1.35:
        return False  # a wider gap, or a jump up (a new column)
    if ended and previous.right < right_edge - 2 * max(previous.size, 1):
        return False  # the last line ended short with a full stop
    return not line.left > previous.left + 1.5 * max(line.size, 1)  # an indented first line
