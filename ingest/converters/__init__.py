"""Converters: one per file format, each turning a file's bytes into the text the index sees.

Every converter returns a `Converted`: markdown-like text with headings marked ("# …"), the offsets where
each page starts (PDF), and the metadata it found (title, tags, aliases, link targets). Chunking, citations and
the reader then work on that text exactly as on a note.

| converter | reads | library |
| --- | --- | --- |
| `markdown` / `obsidian` | .md, .markdown (front matter; in a vault also wikilinks, embeds, comments, #tags) | PyYAML |
| `text` | .txt | none |
| `pdf` | .pdf with a text layer | pypdfium2 |
| `docx` | .docx | python-docx |
| `html` | .html, .htm | trafilatura |

Markdown and text are converted in the ingest process (they cannot hang); the others run in a worker process
with a time and a memory limit (`ingest.converters.worker`). Their libraries are imported inside `convert`,
so importing this package stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rag.types import CONVERTED_SUFFIXES, NOTE_SUFFIXES


class ConversionError(ValueError):
    """The file cannot be converted; the message is the skip reason shown to the user."""


@dataclass(frozen=True, slots=True)
class Converted:
    """A file as the index sees it."""

    text: str  # markdown-like; chunk offsets index into this string
    title: str = ""  # empty: the loader picks one (first top-level heading, else the file name)
    tags: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    links: tuple[str, ...] = ()  # link targets as written ("note", "folder/note"), resolved later
    page_starts: tuple[int, ...] = ()  # offset in `text` where page i+1 begins; empty without pages
    encoding: str = "binary"  # the text encoding found, for text formats


class Converter(Protocol):
    """One file format."""

    name: str
    version: int  # bump when the output changes: cached conversions of this format are redone
    suffixes: tuple[str, ...]
    media_type: str  # of the original file, for GET /documents/{id}/original

    def sniff(self, head: bytes) -> bool:
        """Whether the file's first bytes look like this format (the type is checked by content)."""
        ...

    def convert(self, data: bytes, path: str) -> Converted:
        """The file as text; raises ConversionError with the reason it cannot be read."""
        ...


def _registry() -> dict[str, Converter]:
    from ingest.converters.markdown import MarkdownConverter, TextConverter
    from ingest.converters.pdf import PdfConverter
    from ingest.converters.web import HtmlConverter
    from ingest.converters.word import DocxConverter

    converters: list[Converter] = [
        MarkdownConverter(obsidian=False),
        MarkdownConverter(obsidian=True),
        TextConverter(),
        PdfConverter(),
        DocxConverter(),
        HtmlConverter(),
    ]
    return {c.name: c for c in converters}


CONVERTERS: dict[str, Converter] = _registry()
_BY_SUFFIX = {
    suffix: c for c in CONVERTERS.values() if c.name not in ("obsidian",) for suffix in c.suffixes
}
assert set(_BY_SUFFIX) == set(NOTE_SUFFIXES) | set(CONVERTED_SUFFIXES), "suffix lists out of step"


def converter_for(path: str, *, vault: bool = False) -> Converter | None:
    """The converter for a file name by its suffix (a markdown note inside an Obsidian vault gets `obsidian`)."""
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    converter = _BY_SUFFIX.get(suffix)
    if vault and converter is not None and converter.name == "markdown":
        return CONVERTERS["obsidian"]
    return converter


def converter_versions() -> dict[str, int]:
    """name -> version of every converter; part of the index fingerprint."""
    return {name: c.version for name, c in sorted(CONVERTERS.items())}


__all__ = [
    "CONVERTERS",
    "ConversionError",
    "Converted",
    "Converter",
    "converter_for",
    "converter_versions",
]
