"""Word documents (.docx), read with python-docx: headings from the paragraph styles (Heading 1-9, Title, or an
outline level), list items as "- " lines, tables as "| a | b |" rows, in document order.

A .docx is a zip archive: its directory is checked before anything is unpacked, so a zip bomb with a Word
name is refused instead of filling the memory."""

from __future__ import annotations

import io
import re
import zipfile

from ingest.converters import ConversionError, Converted

MAX_ENTRIES = 10_000
MAX_UNPACKED_BYTES = 256 * 1024 * 1024  # what all parts of the archive may unpack to
MAX_RATIO = 100  # unpacked / packed; real documents compress 2-20 times
_HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*([1-9])$", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


class DocxConverter:
    name = "docx"
    version = 1
    suffixes = (".docx",)
    media_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

    def sniff(self, head: bytes) -> bool:
        return head.startswith(b"PK\x03\x04")

    def convert(self, data: bytes, path: str) -> Converted:
        check_archive(data)
        import docx

        try:
            document = docx.Document(io.BytesIO(data))
        except MemoryError:
            raise
        except Exception as exc:  # python-docx raises many kinds for a damaged part  # noqa: BLE001
            raise ConversionError(f"damaged Word document ({type(exc).__name__}: {exc})") from None
        styles = _paragraph_styles(document)
        default = styles.get("", ("", None))
        blocks: list[str] = []
        title = " ".join((document.core_properties.title or "").split())
        for item in document.iter_inner_content():
            if isinstance(item, docx.table.Table):
                rows = _table_rows(item)
                if rows:
                    blocks.append("\n".join(rows))
                continue
            text = item.text.strip()
            if not text:
                continue
            style, outline = styles.get(_style_id(item._p), default)
            own = _outline_level(item._p)
            level = _heading_level(style, own if own is not None else outline)
            if style.lower() == "title" and not title:
                title = " ".join(text.split())
            if level:
                blocks.append("#" * level + " " + " ".join(text.split()))
            elif style.lower().startswith("list") or item._p.find(f"{_W}pPr/{_W}numPr") is not None:
                blocks.append("  " * _list_depth(item._p) + "- " + _escaped(" ".join(text.split())))
            else:
                blocks.append("\n".join(_escaped(line) for line in text.splitlines()))
        text = _join(blocks)
        if not text.strip():
            raise ConversionError("the Word document has no text")
        return Converted(text=text, title=title[:200])


def check_archive(data: bytes) -> None:
    """Refuse what is not a Word archive, or would unpack to far more than it weighs (a zip bomb)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ConversionError(f"damaged or not a Word document ({exc})") from None
    unpacked = sum(entry.file_size for entry in entries)
    if len(entries) > MAX_ENTRIES or unpacked > MAX_UNPACKED_BYTES or unpacked > MAX_RATIO * max(len(data), 1) + 10_000_000:
        raise ConversionError(
            f"refused as a zip bomb: {len(entries)} parts unpacking to {unpacked / 1024 / 1024:.0f} MB "
            f"from {len(data) / 1024 / 1024:.1f} MB"
        )
    if "word/document.xml" not in {entry.filename for entry in entries}:
        raise ConversionError("not a Word document (the archive has no word/document.xml)")


def _paragraph_styles(document) -> dict[str, tuple[str, int | None]]:
    """style id -> (name, outline level through the basedOn chain); "" -> the default paragraph style.

    Read once from styles.xml: python-docx looks a paragraph's style up by a linear search each time."""
    raw: dict[str, tuple[str, str | None, int | None]] = {}
    default = ""
    for element in document.styles.element.findall(f"{_W}style"):
        if element.get(f"{_W}type") != "paragraph":
            continue
        style_id = element.get(f"{_W}styleId") or ""
        name = element.find(f"{_W}name")
        based = element.find(f"{_W}basedOn")
        raw[style_id] = (
            name.get(f"{_W}val", "") if name is not None else style_id,
            based.get(f"{_W}val") if based is not None else None,
            _outline_level(element),
        )
        if element.get(f"{_W}default") in ("1", "true"):
            default = style_id
    table: dict[str, tuple[str, int | None]] = {}
    for style_id, (name, based, level) in raw.items():
        seen = {style_id}
        while level is None and based in raw and based not in seen:  # a basedOn cycle must not loop
            seen.add(based)
            _, based, level = raw[based]
        table[style_id] = (name, level)
    table[""] = table.get(default, ("", None))
    return table


def _style_id(paragraph) -> str:
    found = paragraph.find(f"{_W}pPr/{_W}pStyle")
    return (found.get(f"{_W}val") or "") if found is not None else ""


def _heading_level(style: str, outline: int | None) -> int:
    match = _HEADING_STYLE.match(style.strip())
    if match:
        return int(match.group(1))
    if style.lower() == "title":
        return 1
    return outline + 1 if outline is not None and 0 <= outline < 9 else 0


def _outline_level(element) -> int | None:
    """The outline level (0-8; 9 is body text) set on a paragraph or a style element, if any."""
    found = element.find(f"{_W}pPr/{_W}outlineLvl")
    if found is None:
        return None
    try:
        return int(found.get(f"{_W}val"))
    except (TypeError, ValueError):
        return None


def _list_depth(paragraph) -> int:
    level = paragraph.find(f"{_W}pPr/{_W}numPr/{_W}ilvl")
    try:
        return min(int(level.get(f"{_W}val")), 8) if level is not None else 0
    except (TypeError, ValueError):
        return 0


def _table_rows(table) -> list[str]:
    """One "| a | b |" line per row; merged cells once; a delimiter after the first row (a markdown table)."""
    rows: list[str] = []
    for row in table.rows:
        cells = []
        seen = set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()).replace("|", "\\|"))
        if any(cells):
            rows.append("| " + " | ".join(cells) + " |")
            if len(rows) == 1:
                rows.append("|" + " --- |" * len(cells))
    return rows


def _escaped(line: str) -> str:
    """A body line that would read as a markdown heading keeps its "#" as text."""
    return "\\" + line if line.lstrip().startswith("#") else line


def _join(blocks: list[str]) -> str:
    """Blocks separated by blank lines; consecutive list items on consecutive lines."""
    out: list[str] = []
    for block in blocks:
        if out:
            both_items = out[-1].lstrip().startswith("- ") and block.lstrip().startswith("- ")
            out.append("\n" if both_items else "\n\n")
        out.append(block)
    return "".join(out) + "\n"
