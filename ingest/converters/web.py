"""Saved web pages and web clips (.html, .htm), read with trafilatura: the main content without navigation,
headers, footers, comments, scripts or styles, as markdown with its headings, lists and tables."""

from __future__ import annotations

import re

from ingest.converters import ConversionError, Converted

_LOOKS_HTML = re.compile(
    rb"<(?:!doctype\s+html|html|head|body|meta|title|article|main|section|div|p|h[1-6]|table|ul)\b", re.IGNORECASE
)
# Markup that only a page's code uses; a page whose text shows such a tag as an example loses the tag, not the text.
_ACTIVE_TAG = re.compile(r"\\?<\\?/?\s*(?:script|style|iframe|object|embed)\b[^>\n]{0,500}>", re.IGNORECASE)


class HtmlConverter:
    name = "html"
    version = 1
    suffixes = (".html", ".htm")
    media_type = "text/html"

    def sniff(self, head: bytes) -> bool:
        sample = head[:4096]
        if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
            sample = sample.decode("utf-16", "ignore").encode("utf-8")
        elif b"\x00" in sample:
            return False  # binary data, whatever its name
        return _LOOKS_HTML.search(sample) is not None

    def convert(self, data: bytes, path: str) -> Converted:
        import trafilatura

        from ingest.loading import decode

        try:
            source: str | bytes
            source, encoding = decode(data)
        except ValueError:  # a charset the note decoder does not know (declared in <meta>): trafilatura detects it
            source, encoding = data, "detected"
        options = {
            "output_format": "markdown",
            "include_tables": True,
            "include_formatting": True,
            "include_links": False,
            "include_images": False,
            "include_comments": False,
        }
        text = trafilatura.extract(source, **options) or trafilatura.extract(source, favor_recall=True, **options)
        if not text or not text.strip():
            raise ConversionError("no readable text in the page")
        text = _ACTIVE_TAG.sub("", text).strip() + "\n"
        metadata = trafilatura.extract_metadata(source)
        title = " ".join((metadata.title or "").split())[:200] if metadata is not None else ""
        return Converted(text=text, title=title, encoding=encoding)
