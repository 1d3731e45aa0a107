"""Find and decode the notes under the corpus directory.

`discover` walks the corpus without following symbolic links (so a link can neither pull in files from
elsewhere nor send the walk into a loop) and returns the decodable notes plus every file it had to skip,
with the reason. `decode` detects the encoding of one file's bytes.
"""

from __future__ import annotations

import codecs
import logging
import os
import stat
import unicodedata
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ingest.cleaning import heading_title, markdown_headings
from rag.types import CONVERTED_SUFFIXES, NOTE_SUFFIXES, Document, SkippedFile

logger = logging.getLogger(__name__)

ConvertFile = Callable[[Path, str], Document]  # (path, doc_id) -> document of a PDF/Word/HTML file
VAULT_MARKER = ".obsidian"  # the settings folder that makes a folder an Obsidian vault

# Share of control characters (other than tab, line breaks, form feed) above which text counts as binary.
_MAX_CONTROL_SHARE = 0.05
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # checked before UTF-16: its BOM starts with UTF-16-LE's
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode(raw: bytes) -> tuple[str, str]:
    """Decode a note's bytes; return (text, encoding name).

    Order: UTF-8 with BOM (BOM stripped, "utf-8-sig"), UTF-32/UTF-16 with BOM, UTF-8, GB18030 (a superset
    of GBK and GB2312). Each is tried strictly, so a GBK file is never read as mojibake UTF-8 or
    vice versa. Raises ValueError for binary data (NUL bytes, many control characters) or bytes that no
    candidate decodes. Line endings are kept as they are: chunk offsets index into this text.
    """
    if raw.startswith(codecs.BOM_UTF8):
        return _checked(_strict(raw, "utf-8-sig"), "utf-8-sig")
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return _checked(_strict(raw, encoding), encoding)
    if b"\x00" in raw:
        raise ValueError("binary file: contains NUL bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        gbk_text = _gb18030_if_more_plausible(raw, text)
        if gbk_text is not None:
            return _checked(gbk_text, "gb18030")
        return _checked(text, "utf-8")
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"undecodable: not UTF-8, UTF-16 or GB18030 ({exc.reason} at byte {exc.start})"
        ) from None
    if not _looks_chinese(text):
        # GB18030 maps almost every byte pair somewhere; text that is mostly rare characters is a misread.
        raise ValueError("undecodable: not UTF-8, UTF-16 or GB18030 (GB18030 reading is implausible)")
    return _checked(text, "gb18030")


def _strict(raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"undecodable: invalid {encoding} ({exc.reason} at byte {exc.start})") from None


def _checked(text: str, encoding: str) -> tuple[str, str]:
    """Reject decoded text that is really binary data; strip a BOM the codec left in place."""
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise ValueError("binary file: contains NUL characters")
    if text:
        controls = sum(1 for ch in text if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc")
        if controls / len(text) > _MAX_CONTROL_SHARE:
            raise ValueError(f"binary file: {controls} control characters in {len(text)}")
    return text, encoding


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3400 <= code <= 0x9FFF  # CJK ideographs (ext. A and unified)
        or 0x3000 <= code <= 0x303F  # CJK punctuation
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
    )


def _looks_chinese(text: str) -> bool:
    """Whether a GB18030 reading is plausible: few private-use, unassigned or stray control characters.

    Random bytes that happen to be valid GB18030 land in the user-defined (private use) areas and in
    unassigned code points far more often than real notes do.
    """
    non_ascii = [ch for ch in text if ord(ch) > 0x7F]
    if not non_ascii:
        return True
    odd = sum(1 for ch in non_ascii if unicodedata.category(ch) in ("Co", "Cn", "Cs", "Cc"))
    return odd / len(non_ascii) <= 0.1


# Unicode blocks between U+0250 and U+07FF (the two-byte UTF-8 range beyond Latin), by first code point.
_TWO_BYTE_BLOCKS = (0x250, 0x2B0, 0x300, 0x370, 0x400, 0x530, 0x590, 0x600, 0x700)
_COMBINING_BLOCK = 2


def _gb18030_if_more_plausible(raw: bytes, utf8_text: str) -> str | None:
    """The GB18030 reading of bytes that are valid UTF-8 too, when that reading is clearly the intended one.

    Runs of some GBK hanzi ("一为之") happen to form valid two-byte UTF-8, which decodes to a jumble of
    letters from several scripts (Cyrillic, Greek, Hebrew...) and no CJK at all. Real UTF-8 Chinese notes
    contain three-byte characters, and real Greek or Russian text stays within one script, so only a
    multi-script jumble whose GB18030 reading is pure CJK is re-read.
    """
    non_ascii = [ord(ch) for ch in utf8_text if ord(ch) > 0x7F]
    if not non_ascii or max(non_ascii) >= 0x800:
        return None
    blocks = {bisect_right(_TWO_BYTE_BLOCKS, code) - 1 for code in non_ascii if code >= 0x250}
    if len(blocks - {_COMBINING_BLOCK}) < 2:
        return None
    try:
        gbk_text = raw.decode("gb18030")
    except UnicodeDecodeError:
        return None
    if all(_is_cjk(ch) for ch in gbk_text if ord(ch) > 0x7F):
        return gbk_text
    return None


def document_title(text: str, fallback: str) -> str:
    """The note's title: its first markdown heading when that heading alone is top-level, else `fallback`.

    "Top-level" means no later heading has a smaller level: a glossary starting with "### term" and
    later using "#" has no title heading, and would otherwise be named after its first term. "Alone" means
    no later heading shares its level: notes made of many "# topic" sections ("# learning", "# trl", …) are
    named by their file, not by their first topic.
    """
    headings = markdown_headings(text)
    if (
        headings
        and headings[0][0] <= min(level for level, *_ in headings)
        and not any(level == headings[0][0] for level, *_ in headings[1:])
    ):
        return heading_title(headings[0][1]) or fallback
    return fallback


def load_document(path: Path, doc_id: str, max_bytes: int | None = None, *, vault: bool = False) -> Document:
    """Read and decode one note. Raises ValueError (empty, binary, undecodable, too large) or OSError.

    `vault`: the note lies in an Obsidian vault, and is read with its wikilinks, embeds, comments and #tags.
    """
    # O_NOFOLLOW: the walk saw a regular file, but it could have been swapped for a link since.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        # Read one byte past the limit, so a file that grew since the size check is still caught.
        raw = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(raw) > max_bytes:
        raise ValueError(f"too large: over {max_bytes / 1024 / 1024:g} MB")
    return note_document(raw, doc_id, info.st_mtime, vault=vault)


def note_document(raw: bytes, doc_id: str, mtime: float = 0.0, *, vault: bool = False) -> Document:
    """A note's bytes as a `Document`, the one reading that ingest and upload share.

    Raises ValueError (binary, undecodable, empty). A markdown note's YAML front matter becomes metadata (title,
    tags, aliases); without front matter and outside a vault its text is the decoded bytes, unchanged.
    """
    from ingest.converters import converter_for
    from ingest.converters.service import as_document

    converter = converter_for(doc_id, vault=vault)
    if converter is None or converter.name not in ("markdown", "obsidian", "text"):
        raise ValueError(f"not a note ({', '.join(NOTE_SUFFIXES)})")
    converted = converter.convert(raw, doc_id)
    text = converted.text
    if not text.strip():
        if not raw.strip() or converted.text == decode(raw)[0]:
            raise ValueError("empty file (no text)" if not text else "empty file (whitespace only)")
        raise ValueError("empty note (nothing but front matter)")
    return as_document(converted, converter, doc_id, raw, mtime)


def discover(
    corpus_dir: Path, max_file_mb: float, *, convert: ConvertFile | None = None
) -> tuple[list[Document], list[SkippedFile]]:
    """All notes (.md, .markdown, .txt) under `corpus_dir`, recursively, sorted by doc_id; with `convert`,
    also the PDF, Word and HTML files it turns into documents (its ValueError is the skip reason).

    Hidden files and directories (".name") are ignored. Symbolic links are never followed: they, and
    anything that resolves outside the corpus, are returned as skipped, as are files that are too large,
    empty, binary or undecodable. A warning is logged for each skipped file. A folder holding `.obsidian/`
    (or inside one) is an Obsidian vault: its notes are read as Obsidian shows them.
    """
    root = corpus_dir.resolve()
    max_bytes = int(max_file_mb * 1024 * 1024)
    documents: list[Document] = []
    skipped: list[SkippedFile] = []

    def skip(rel: str, reason: str) -> None:
        logger.warning("skipping %s: %s", rel, reason)
        skipped.append(SkippedFile(path=rel, reason=reason))

    if not root.is_dir():
        skip(str(corpus_dir), "corpus directory does not exist or is not a directory")
        return documents, skipped

    seen_dirs: set[tuple[int, int]] = set()
    in_vault = any((folder / VAULT_MARKER).is_dir() for folder in (root, *root.parents))
    pending: list[tuple[Path, bool]] = [(root, in_vault)]
    wanted = NOTE_SUFFIXES + (CONVERTED_SUFFIXES if convert is not None else ())
    while pending:
        directory, vault = pending.pop()
        try:
            dir_stat = directory.stat()
            # Guards against bind-mount cycles; symlinked directories are never entered at all.
            if (dir_stat.st_dev, dir_stat.st_ino) in seen_dirs:
                continue
            seen_dirs.add((dir_stat.st_dev, dir_stat.st_ino))
            with os.scandir(directory) as entries:
                listing = sorted(entries, key=lambda entry: entry.name)
            vault = vault or any(e.name == VAULT_MARKER and e.is_dir(follow_symlinks=False) for e in listing)
        except OSError as exc:
            skip(_relative(directory, root), f"directory not readable: {exc.strerror or exc}")
            continue
        for entry in listing:
            if entry.name.startswith("."):
                logger.debug("ignoring hidden %s", entry.path)
                continue
            path = Path(entry.path)
            rel = _relative(path, root)
            suffix = path.suffix.lower()
            try:
                if entry.is_symlink():
                    # Only links that look like notes or folders are worth a mention.
                    if suffix in wanted or os.path.isdir(path):
                        skip(rel, f"symbolic link, not followed (points to {os.readlink(path)})")
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((path, vault))
                    continue
                if suffix not in wanted:
                    continue
                if any(unicodedata.category(ch) in _NAME_CONTROLS for ch in rel):
                    # the API could not address it, and it would forge lines in logs and source lists
                    skip(_escaped(rel), "the file name contains control characters (line breaks, format codes)")
                    continue
                if not entry.is_file(follow_symlinks=False):
                    skip(rel, "not a regular file")
                    continue
                if not path.resolve().is_relative_to(root):
                    skip(rel, "resolves outside the corpus directory")
                    continue
                if convert is not None and suffix in CONVERTED_SUFFIXES:
                    documents.append(convert(path, rel))  # its own size limit per format
                    continue
                size = entry.stat(follow_symlinks=False).st_size
                if size > max_bytes:
                    skip(rel, f"too large: {size / 1024 / 1024:.1f} MB > limit of {max_file_mb:g} MB")
                    continue
                documents.append(load_document(path, rel, max_bytes, vault=vault))
            except ValueError as exc:
                skip(rel, str(exc))
            except OSError as exc:
                skip(rel, f"not readable: {exc.strerror or exc}")
    documents.sort(key=lambda doc: doc.doc_id)
    skipped.sort(key=lambda item: item.path)
    return documents, skipped


_NAME_CONTROLS = frozenset({"Cc", "Cf", "Zl", "Zp"})  # the same rule as for uploaded note names


def _escaped(name: str) -> str:
    """`name` with control and format characters written as escapes ("line\\nbreak.md")."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in _NAME_CONTROLS else ch
        for ch in name
    )


def _relative(path: Path, root: Path) -> str:
    """POSIX path of `path` relative to the corpus root (the doc_id)."""
    try:
        return PurePosixPath(*path.relative_to(root).parts).as_posix()
    except ValueError:
        return path.as_posix()
