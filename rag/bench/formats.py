"""Sample PDF, Word and HTML files built from blocks of text, and the conversion cost per MB of each format.

The builders serve the tests (fixtures with an outline, running headers and footers, tables, a password) and
the benchmark (the bundled notes rendered in each format). reportlab writes the PDFs (its STSong-Light CID font
needs no font file), python-docx the Word files.
"""

from __future__ import annotations

import html
import io
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Block = tuple[str, str]  # ("h1" | "h2" | "h3" | "p" | "table" | "page", text); table cells split by "|"

_FONT = "STSong-Light"
_SIZES = {"h1": 18.0, "h2": 14.0, "h3": 12.5, "p": 11.0, "table": 11.0}


def blocks_from_markdown(text: str) -> list[Block]:
    """Headings and paragraphs of a markdown note (enough structure for a realistic sample)."""
    blocks: list[Block] = []
    for part in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in part.strip().splitlines()]
        heading = re.match(r"^(#{1,3})\s+(\S.*)$", lines[0]) if lines else None
        if heading:
            blocks.append((f"h{len(heading.group(1))}", heading.group(2).strip()))
            lines = lines[1:]
        if lines and not lines[0].startswith(("```", "|", "<", "#")):
            blocks.append(("p", " ".join(lines)))
    return blocks


def pdf_bytes(
    blocks: Sequence[Block],
    *,
    title: str = "",
    header: str = "",
    footer: bool = True,
    outline: bool = True,
    password: str | None = None,
) -> bytes:
    """A Chinese PDF of `blocks`: wrapped paragraphs flowing over pages, headings (in the outline when `outline`),
    a running `header` and a "第 N 页" footer on every page."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.pdfencrypt import StandardEncryption
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont(_FONT))
    out = io.BytesIO()
    encrypt = StandardEncryption(password, ownerPassword=password + "-owner") if password else None
    pdf = canvas.Canvas(out, pagesize=A4, encrypt=encrypt)
    if title:
        pdf.setTitle(title)
    width, height = A4
    left, right, top, bottom = 72.0, width - 72.0, height - 90.0, 80.0
    state = {"page": 1, "y": top, "marks": 0, "level": -1}

    def furniture() -> None:
        pdf.setFont(_FONT, 9)
        if header:
            pdf.drawString(left, height - 40, header)
        if footer:
            pdf.drawCentredString(width / 2, 30, f"第 {state['page']} 页")

    def new_page() -> None:
        pdf.showPage()
        state["page"] += 1
        state["y"] = top
        furniture()

    def line(text: str, size: float, gap: float) -> None:
        if state["y"] - size < bottom:
            new_page()
        pdf.setFont(_FONT, size)
        pdf.drawString(left, state["y"], text)
        state["y"] -= gap

    furniture()
    for kind, text in blocks:
        if kind == "page":
            new_page()
            continue
        size = _SIZES[kind]
        if kind.startswith("h"):
            if state["y"] - 3 * size < bottom:
                new_page()
            state["y"] -= size * 0.6
            if outline:
                key = f"mark{state['marks']}"
                state["marks"] += 1
                pdf.bookmarkPage(key, fit="XYZ", top=state["y"] + size)
                level = min(int(kind[1]) - 1, state["level"] + 1)  # an outline cannot skip a level
                state["level"] = level
                pdf.addOutlineEntry(text, key, level=level)
            line(text, size, size * 1.8)
        elif kind == "table":
            cells = [c.strip() for c in text.split("|")]
            if state["y"] - size < bottom:
                new_page()
            pdf.setFont(_FONT, size)
            for i, cell in enumerate(cells):
                pdf.drawString(left + i * (right - left) / len(cells), state["y"], cell)
            state["y"] -= size * 1.6
        else:
            for piece in _wrap(text, size, right - left, pdfmetrics.stringWidth):
                line(piece, size, size * 1.5)
            state["y"] -= size * 0.9
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def _wrap(text: str, size: float, width: float, measure: Any) -> list[str]:
    """Lines of at most `width` points: Chinese breaks anywhere, Latin words stay whole."""
    lines: list[str] = []
    current = ""
    for token in re.findall(r"[A-Za-z0-9_\-.,:;'\"()%+/]+ ?|.", text):
        if current and measure(current + token.rstrip(), _FONT, size) > width:
            lines.append(current.rstrip())
            current = token.lstrip()
        else:
            current += token
    if current.strip():
        lines.append(current.rstrip())
    return lines


def docx_bytes(blocks: Sequence[Block], *, title: str = "") -> bytes:
    """A Word document of `blocks`: Heading 1-3 styles, plain paragraphs, tables of consecutive table blocks."""
    import docx

    document = docx.Document()
    if title:
        document.core_properties.title = title
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            table = document.add_table(rows=len(rows), cols=max(len(r) for r in rows))
            for r, cells in enumerate(rows):
                for c, cell in enumerate(cells):
                    table.cell(r, c).text = cell
            rows.clear()

    for kind, text in blocks:
        if kind == "table":
            rows.append([c.strip() for c in text.split("|")])
            continue
        flush()
        if kind.startswith("h"):
            document.add_heading(text, level=int(kind[1]))
        elif kind == "p":
            document.add_paragraph(text)
    flush()
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def html_bytes(blocks: Sequence[Block], *, title: str = "") -> bytes:
    """A web page of `blocks` inside an <article>, with navigation, a footer and a script around it."""
    body = []
    for kind, text in blocks:
        if kind.startswith("h"):
            body.append(f"<{kind}>{html.escape(text)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(text)}</p>")
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<script>window.tracker = 'TRACKER-CODE';</script></head><body>"
        "<nav><a href='/'>首页</a> <a href='/archive'>归档</a> <a href='/about'>关于本站</a></nav>"
        f"<main><article>{''.join(body)}</article></main>"
        "<footer><p>版权所有 © 2024 示例站点 保留所有权利</p></footer></body></html>"
    )
    return page.encode("utf-8")


def bench_formats(corpus_dir: Path, target_mb: float = 1.0) -> dict[str, Any]:
    """Seconds per MB of file to convert the bundled notes rendered as PDF, Word and HTML (in this process)."""
    from ingest.converters import CONVERTERS

    notes = sorted(p for p in corpus_dir.rglob("*.md") if p.is_file())
    blocks = [b for note in notes for b in blocks_from_markdown(note.read_text(encoding="utf-8", errors="replace"))]
    if not blocks:
        raise ValueError(f"no notes to render in {corpus_dir}")
    builders = {"pdf": pdf_bytes, "docx": docx_bytes, "html": html_bytes}
    results: dict[str, Any] = {}
    for name, build in builders.items():
        data = build(blocks)
        copies = max(1, round(target_mb * 1024 * 1024 / len(data)))
        if copies > 1:
            data = build(list(blocks) * copies)
        converter = CONVERTERS[name]
        converter.convert(build(blocks[:20]), f"warm-up.{name}")  # the first call imports and allocates
        started = time.perf_counter()
        converted = converter.convert(data, f"sample.{name}")
        seconds = time.perf_counter() - started
        mb = len(data) / 1024 / 1024
        results[name] = {
            "mb": round(mb, 2),
            "chars": len(converted.text),
            "seconds": round(seconds, 3),
            "seconds_per_mb": round(seconds / mb, 3),
            "chars_per_s": round(len(converted.text) / seconds),
        }
    return results
