"""Writing notes into the corpus directory: the checks an uploaded note passes and its atomic write.

`save_note` refuses unsafe or non-note file names, oversized, empty, binary or undecodable data, and an
existing note unless asked to replace it; it writes through a temp file and a rename (or an exclusive hard
link), so nothing is ever half-written. Reading the corpus back is `ingest.loading`'s job.
"""

from __future__ import annotations

import errno
import os
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath

from rag.errors import AlreadyExists, CorpusUnavailable, InvalidInput, PayloadTooLarge

NOTE_SUFFIXES = (".md", ".markdown", ".txt")
MAX_NAME_CHARS = 120
_UNSAFE_NAME_CHARS = frozenset('/\\:*?"<>|')


def check_note_name(filename: str | None) -> str:
    """The upload's file name if it is a plain, safe note name; InvalidInput otherwise."""
    if filename is None or not filename.strip():
        raise InvalidInput("the file name is empty")
    name = filename
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"the file name is longer than {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise InvalidInput("the file name contains control characters")
    if any(ch in _UNSAFE_NAME_CHARS for ch in name):
        raise InvalidInput('the file name must be a plain name without directories or any of /\\:*?"<>|')
    if name != name.strip() or name.startswith("."):
        raise InvalidInput("the file name must not start with a dot or start/end with spaces")
    if PurePosixPath(name).suffix.lower() not in NOTE_SUFFIXES:
        raise InvalidInput(f"only {', '.join(NOTE_SUFFIXES)} notes can be uploaded")
    return name


def decode_note(data: bytes) -> str:
    """The encoding a note decodes with (UTF-8, else GB18030); InvalidInput for binary or undecodable data."""
    if b"\x00" in data:
        raise InvalidInput("the file is not text (it contains NUL bytes)")
    for encoding in ("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v")
        if controls > max(2, len(text) // 100):
            raise InvalidInput("the file does not look like text (too many control characters)")
        return encoding
    raise InvalidInput("the file is neither UTF-8 nor GB18030 text")


def save_note(corpus_dir: Path, filename: str | None, data: bytes, *, max_bytes: int, overwrite: bool) -> dict:
    """Write an uploaded note into the corpus atomically (temp file + rename); nothing is half-written."""
    name = check_note_name(filename)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the file is {len(data)} bytes; the limit is {max_bytes}")
    if not data.strip():
        raise InvalidInput("the file is empty")
    encoding = decode_note(data)
    corpus = Path(corpus_dir)
    if not corpus.is_dir():
        raise CorpusUnavailable(f"the corpus directory {corpus} does not exist")
    target = corpus / name
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise AlreadyExists(f"{name} exists and is not a regular file")
    existed = target.exists()
    if existed and not overwrite:
        raise AlreadyExists(f"{name} already exists; pass ?overwrite=true to replace it")
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=corpus, prefix=".upload-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_exclusive(tmp, target, name)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise CorpusUnavailable(f"the corpus directory is not writable ({exc.strerror})") from exc
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return {"doc_id": name, "bytes": len(data), "encoding": encoding, "replaced": existed and overwrite}


def _link_exclusive(tmp: str, target: Path, name: str) -> None:
    """Publish `tmp` as `target` only if `target` does not exist (no race between two uploads)."""
    try:
        os.link(tmp, target)
    except FileExistsError as exc:
        raise AlreadyExists(f"{name} already exists; pass ?overwrite=true to replace it") from exc
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if target.exists():  # hard links unsupported: check-then-rename is the best we can do
            raise AlreadyExists(f"{name} already exists; pass ?overwrite=true to replace it") from exc
        os.replace(tmp, target)
