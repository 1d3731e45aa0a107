"""Writing notes into the corpus directory: the checks an uploaded note passes and its atomic write.

`save_note` refuses unsafe or unknown file names, the alias list's name, oversized, empty, binary or undecodable
data, any file that ingest would skip (`read_upload` reads it the way ingest does), and an existing file unless
asked to replace it; it writes through a temp file and a rename (or an exclusive hard
link), so nothing is ever half-written. Reading the corpus back is `ingest.loading`'s job.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from rag.errors import AlreadyExists, CorpusUnavailable, InvalidInput, NotFound, PayloadTooLarge
from rag.types import CONVERTED_SUFFIXES, NOTE_SUFFIXES

if TYPE_CHECKING:
    from ingest.converters import Converted, Converter

Convert = Callable[["Converter", bytes, str], "Converted"]  # (converter, bytes, name) -> conversion
UPLOAD_SUFFIXES = NOTE_SUFFIXES + CONVERTED_SUFFIXES
GLOSSARY_FILE = "glossary.txt"  # the user's alias list in the corpus root (read by ingest.pipeline)

MAX_NAME_CHARS = 120
MAX_NAME_BYTES = 255  # NAME_MAX of ext4, XFS, btrfs and most others
_UNSAFE_NAME_CHARS = frozenset('/\\:*?"<>|')


def check_note_name(filename: str | None) -> str:
    """The upload's file name if it is a plain, safe note name; InvalidInput otherwise."""
    if filename is None or not filename.strip():
        raise InvalidInput("the file name is empty")
    name = filename
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"the file name is longer than {MAX_NAME_CHARS} characters")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:  # file systems count bytes: "长" * 100 is 100 characters but 300 bytes
        raise InvalidInput(f"the file name is {size} bytes in UTF-8; the limit is {MAX_NAME_BYTES} bytes")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise InvalidInput("the file name contains control characters")
    if any(ch in _UNSAFE_NAME_CHARS for ch in name):
        raise InvalidInput('the file name must be a plain name without directories or any of /\\:*?"<>|')
    if name != name.strip() or name.startswith("."):
        raise InvalidInput("the file name must not start with a dot or start/end with spaces")
    if PurePosixPath(name).suffix.lower() not in UPLOAD_SUFFIXES:
        raise InvalidInput(f"only {', '.join(UPLOAD_SUFFIXES)} files can be uploaded")
    if name.lower() == GLOSSARY_FILE:
        raise InvalidInput(
            f"{GLOSSARY_FILE} is the corpus's alias list, not a note: edit it in the corpus directory "
            "(each ingest reads it); upload notes under other names"
        )
    return name


def read_upload(
    name: str, data: bytes, *, max_bytes: int, limits: Mapping[str, int] | None = None, convert: Convert | None = None
) -> dict[str, str]:
    """What ingest will make of an upload: {"encoding", "format"}. Refuses what ingest would skip.

    A note is read exactly as ingest reads it (`ingest.loading.note_document`: UTF-8, UTF-16/32 with a BOM,
    GB18030). A PDF, Word or HTML file must be that type by its content, within its size limit (`limits`, by
    format), and, when `convert` is given, convert (in the worker process, with its limits).
    """
    from ingest.converters import ConversionError, converter_for
    from ingest.converters.service import check_type
    from ingest.loading import note_document

    converter = converter_for(name)
    assert converter is not None, "check_note_name admits known suffixes only"
    note = converter.name in ("markdown", "text")
    limit = max_bytes if note else (limits or {}).get(converter.name, max_bytes)
    if len(data) > limit:
        raise PayloadTooLarge(f"the file is {len(data)} bytes; the limit for {converter.name} files is {limit}")
    if not data.strip():
        raise InvalidInput("the file is empty")
    if note:
        try:
            document = note_document(data, name)
        except ValueError as exc:
            raise InvalidInput(f"ingest could not read this note: {exc}") from None
        return {"encoding": document.encoding, "format": converter.name}
    try:
        check_type(converter, data)
        encoding = convert(converter, data, name).encoding if convert is not None else "binary"
    except ConversionError as exc:
        raise InvalidInput(f"ingest could not read this file: {exc}") from None
    return {"encoding": encoding, "format": converter.name}


def save_note(
    corpus_dir: Path,
    filename: str | None,
    data: bytes,
    *,
    max_bytes: int,
    overwrite: bool,
    limits: Mapping[str, int] | None = None,
    convert: Convert | None = None,
) -> dict:
    """Write an uploaded file into the corpus atomically (temp file + rename); nothing is half-written.

    Only a file that ingest will read is written (`read_upload`); `max_bytes` bounds notes, `limits` the others.
    """
    name = check_note_name(filename)
    found = read_upload(name, data, max_bytes=max_bytes, limits=limits, convert=convert)
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
        if exc.errno == errno.ENAMETOOLONG:  # a file system with a shorter limit than MAX_NAME_BYTES
            raise InvalidInput(f"the file name is too long for the corpus file system ({exc.strerror})") from exc
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return {
        "doc_id": name,
        "bytes": len(data),
        "encoding": found["encoding"],
        "replaced": existed and overwrite,
        "format": found["format"],
    }


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


# Python codec names of the note decoder -> the charset names HTTP uses.
_CHARSETS = {"utf-8-sig": "utf-8", "utf-16": "utf-16", "utf-32": "utf-32", "gb18030": "gb18030", "utf-8": "utf-8"}


def read_original(corpus_dir: Path, doc_id: str, encoding: str) -> tuple[bytes, str]:
    """The bytes of a corpus file as it lies on disk, and its media type (with the charset of a note).

    `doc_id` comes from the index; the file is still opened without following links and only inside the corpus.
    NotFound when it has gone since the last ingest.
    """
    from ingest.converters import converter_for

    root = Path(corpus_dir).resolve()
    path = root.joinpath(*PurePosixPath(doc_id).parts)
    converter = converter_for(doc_id)
    if converter is None or ".." in PurePosixPath(doc_id).parts or not path.resolve().is_relative_to(root):
        raise NotFound(f"no original file for {doc_id!r}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise NotFound(f"{doc_id} is not a regular file")
            data = handle.read()
    except OSError as exc:
        raise NotFound(f"the original of {doc_id!r} is no longer in the corpus ({exc.strerror or exc})") from None
    media_type = converter.media_type
    if media_type.startswith("text/") and encoding in _CHARSETS:
        media_type += f"; charset={_CHARSETS[encoding]}"
    return data, media_type


def delete_note(corpus_dir: Path, doc_id: str) -> dict:
    """Remove the corpus file of `doc_id` (a note, PDF, Word file or page ingest reads); NotFound otherwise.

    The path never leaves the corpus: no `..`, no absolute path, no link to outside it (a symbolic link itself
    is removed, never what it points to). The alias list is not a note and is never removed here.
    """
    from ingest.converters import converter_for

    root = Path(corpus_dir).resolve()
    parts = PurePosixPath(doc_id).parts
    unsafe = not parts or ".." in parts or PurePosixPath(doc_id).is_absolute() or "\\" in doc_id or "\x00" in doc_id
    if unsafe or converter_for(doc_id) is None or doc_id == GLOSSARY_FILE:
        raise NotFound(f"no note {doc_id!r} in the corpus")
    path = root.joinpath(*parts)
    if not path.parent.resolve().is_relative_to(root):
        raise NotFound(f"no note {doc_id!r} in the corpus")
    try:
        mode = os.lstat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise NotFound(f"{doc_id} is not a file")
        os.unlink(path)
    except FileNotFoundError:
        raise NotFound(f"no note {doc_id!r} in the corpus (already removed?)") from None
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise CorpusUnavailable(f"the corpus directory is not writable ({exc.strerror})") from exc
        raise
    return {"doc_id": doc_id, "deleted": True}
