"""The knowledge-base registry: which bodies of notes exist, where their notes and index live.

A knowledge base has a name (`[a-z0-9][a-z0-9_-]{0,62}`), a corpus folder, an index directory (its own glossary
lives in its corpus folder, its alias groups in its index) and optional settings overrides. The registry is one
JSON file, `data_dir/kbs.json`, replaced atomically under a file lock, so create, rename and delete are atomic
and every process sees the whole file or the previous one.

The knowledge base `default` is the install as it was before knowledge bases existed: its notes are
RAG_CORPUS_DIR and its index data_dir/index. The registry records it on first open (no command, nothing
moved). Every other knowledge base gets data_dir/kbs/<slug>/index and, unless created with a corpus folder of
its own, data_dir/kbs/<slug>/corpus. The slug is fixed at creation, so a rename moves nothing on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rag.config import Settings
from rag.errors import AlreadyExists, IngestBusy, InvalidInput, NotFound, RagError
from rag.index.durable import fsync_dir, write_text_durably
from rag.index.lock import WriteLock

DEFAULT_KB = "default"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
REGISTRY_FILE = "kbs.json"
KBS_DIR = "kbs"
FORMAT = 1
# Settings a knowledge base may set for itself; everything else is the install's.
OVERRIDABLE = ("chunk_size", "chunk_overlap", "embed_model", "embed_query_prompt", "embed_passage_prompt",
               "index_backend")


class KnowledgeBaseNotFound(NotFound):
    code = "kb_not_found"


class TooManyKnowledgeBases(RagError):
    code = "too_many_kbs"
    status = 409


class KnowledgeBaseEmpty(RagError):
    """A knowledge base (not the default one) that has never been ingested: the client's to fill, not a fault."""

    code = "kb_empty"
    status = 409


class KnowledgeBaseBusy(IngestBusy):
    code = "kb_busy"


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    """One registered knowledge base. `corpus` and `index` are None for `default` (it follows the settings)."""

    name: str
    slug: str
    created: float
    corpus: Path | None = None
    index: Path | None = None
    owns_corpus: bool = False  # the corpus folder was made by the registry (delete may remove it)
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_json(self, data_dir: Path | None = None) -> dict[str, Any]:
        """The registry entry; folders inside `data_dir` are stored relative to it, so a data dir that is
        moved or mounted elsewhere (a container volume) keeps working."""
        return {
            "slug": self.slug,
            "created": self.created,
            "corpus": _stored_path(self.corpus, data_dir),
            "index": _stored_path(self.index, data_dir),
            "owns_corpus": self.owns_corpus,
            "overrides": self.overrides,
        }

    @classmethod
    def from_json(cls, name: str, raw: dict[str, Any], data_dir: Path | None = None) -> KnowledgeBase:
        return cls(
            name=name,
            slug=str(raw.get("slug") or name),
            created=float(raw.get("created") or 0.0),
            corpus=_loaded_path(raw.get("corpus"), data_dir),
            index=_loaded_path(raw.get("index"), data_dir),
            owns_corpus=bool(raw.get("owns_corpus", False)),
            overrides=dict(raw.get("overrides") or {}),
        )


def _stored_path(path: Path | None, data_dir: Path | None) -> str | None:
    if path is None:
        return None
    if data_dir is not None:
        with contextlib.suppress(ValueError):
            return Path(path).resolve().relative_to(Path(data_dir).resolve()).as_posix()
    return str(path)


def _loaded_path(raw: object, data_dir: Path | None) -> Path | None:
    if not raw:
        return None
    path = Path(str(raw))
    return path if path.is_absolute() or data_dir is None else Path(data_dir).resolve() / path


def check_name(name: str) -> str:
    """`name` when it is a valid knowledge-base name, else InvalidInput saying what a name may be."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            f"invalid knowledge base name {str(name)[:80]!r}: use 1-63 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def kb_settings(settings: Settings, kb: KnowledgeBase) -> Settings:
    """The settings one knowledge base runs with: the install's, its own folders, and its overrides."""
    update: dict[str, Any] = dict(kb.overrides)
    if kb.corpus is not None:
        update["corpus_dir"] = kb.corpus
    if kb.index is not None:
        update["index_path"] = kb.index
    update["milvus_collection_prefix"] = milvus_prefix(kb)
    return settings.model_copy(update=update)


def milvus_prefix(kb: KnowledgeBase) -> str:
    """Collection prefix of a knowledge base on a shared Milvus: readable, and unique even though names may
    differ only in '-' against '_' (Milvus names allow neither '-' nor a leading digit)."""
    if kb.name == DEFAULT_KB:
        return "rag"
    digest = hashlib.sha1(kb.slug.encode()).hexdigest()[:6]
    return f"rag_{re.sub(r'[^a-z0-9]', '_', kb.slug)[:24]}_{digest}"


def check_overrides(settings: Settings, overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides validated the way the settings validate them; unknown or refused ones raise InvalidInput."""
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise InvalidInput(f"a knowledge base cannot override {', '.join(unknown)}; it may set {', '.join(OVERRIDABLE)}")
    try:
        checked = Settings.model_validate({**settings.model_dump(), **overrides})
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors(include_input=False) if e["loc"])
        raise InvalidInput(f"invalid knowledge base settings: {problems}") from None
    return {key: getattr(checked, key) for key in overrides}  # coerced ("300" -> 300), as kb_settings needs


def _drop_milvus_collections(settings: Settings) -> None:
    """A knowledge base on a Milvus server loses its collections with it. Milvus Lite keeps them in a file
    inside the index directory, which the delete removes (and Lite lets only one process open it)."""
    if settings.index_backend != "milvus" or not settings.milvus_uri:
        return
    from rag.index import open_store

    store = open_store(settings)
    store.drop_all()  # type: ignore[union-attr]  # MilvusStore, by index_backend


class KnowledgeBaseRegistry:
    """The registry file of `settings.data_dir`. Reads are lock-free (the file is replaced whole); writes
    take `kbs.json.lock` so two processes never lose each other's change."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.path = self.data_dir / REGISTRY_FILE

    # --- reading ----------------------------------------------------------------------------------

    def list(self) -> list[KnowledgeBase]:
        """Every knowledge base, `default` first, then by name."""
        kbs = self._read()
        return sorted(kbs.values(), key=lambda kb: (kb.name != DEFAULT_KB, kb.name))

    def get(self, name: str | None = None) -> KnowledgeBase:
        """The knowledge base `name` (RAG_DEFAULT_KB when None); KnowledgeBaseNotFound names the known ones."""
        name = self.settings.default_kb if name is None else check_name(name)
        kbs = self._read()
        if name not in kbs:
            known = ", ".join(sorted(kbs)) or "none"
            raise KnowledgeBaseNotFound(f"unknown knowledge base {name!r} (known: {known})")
        return kbs[name]

    def settings_for(self, name: str | None = None) -> Settings:
        """The settings of knowledge base `name` (the default one when None)."""
        return kb_settings(self.settings, self.get(name))

    def corpus_dir(self, kb: KnowledgeBase) -> Path:
        return kb.corpus if kb.corpus is not None else Path(self.settings.corpus_dir)

    def index_dir(self, kb: KnowledgeBase) -> Path:
        return kb_settings(self.settings, kb).index_dir

    # --- changing ---------------------------------------------------------------------------------

    def create(self, name: str, *, corpus: Path | None = None, overrides: dict[str, Any] | None = None) -> KnowledgeBase:
        """Register a new knowledge base; without `corpus`, an empty notes folder under the data dir."""
        check_name(name)
        checked = check_overrides(self.settings, overrides or {})
        if corpus is not None:
            corpus = Path(corpus).expanduser().resolve()
            if not corpus.is_dir():
                raise InvalidInput(f"corpus folder not found: {corpus}")
        with self._locked() as kbs:
            if name in kbs:
                raise AlreadyExists(f"knowledge base {name!r} already exists")
            if len(kbs) >= self.settings.max_kbs:
                raise TooManyKnowledgeBases(
                    f"there are already {len(kbs)} knowledge bases, the most RAG_MAX_KBS allows; delete one first"
                )
            slug = self._free_slug(name, kbs)
            home = (self.data_dir / KBS_DIR / slug).resolve()
            owns = corpus is None
            if corpus is None:
                corpus = home / "corpus"
                corpus.mkdir(parents=True, exist_ok=True)
            kb = KnowledgeBase(name, slug, time.time(), corpus, home / "index", owns, checked)
            kbs[name] = kb
            self._write(kbs)
        return kb

    def rename(self, name: str, new_name: str) -> KnowledgeBase:
        """Give a knowledge base another name; its folders stay where they are."""
        check_name(new_name)
        with self._locked() as kbs:
            kb = self._known(kbs, name)
            if new_name in kbs:
                raise AlreadyExists(f"knowledge base {new_name!r} already exists")
            if name in (DEFAULT_KB, self.settings.default_kb):
                raise InvalidInput(f"the default knowledge base {name!r} cannot be renamed")
            renamed = KnowledgeBase(new_name, kb.slug, kb.created, kb.corpus, kb.index, kb.owns_corpus, kb.overrides)
            del kbs[name]
            kbs[new_name] = renamed
            self._write(kbs)
        return renamed

    def delete(self, name: str, *, delete_notes: bool = False) -> KnowledgeBase:
        """Unregister a knowledge base and remove its index; its notes stay unless `delete_notes`.

        Refused (KnowledgeBaseBusy) while an ingest of it runs, and for the default knowledge base.
        """
        with self._locked() as kbs:
            kb = self._known(kbs, name)
            if name in (DEFAULT_KB, self.settings.default_kb):
                raise InvalidInput(f"the default knowledge base {name!r} cannot be deleted")
            if delete_notes and not kb.owns_corpus:
                raise InvalidInput(
                    f"the notes of {name!r} are your folder {kb.corpus}; they are never deleted for you "
                    "(delete without deleting notes, then remove the folder yourself)"
                )
            index_dir = self.index_dir(kb)
            lock = WriteLock(index_dir, timeout=0.0)
            try:
                lock.acquire()
            except IngestBusy:
                raise KnowledgeBaseBusy(
                    f"knowledge base {name!r} cannot be deleted while its ingest runs; try again when it ends"
                ) from None
            try:
                _drop_milvus_collections(kb_settings(self.settings, kb))  # fails before anything is unregistered
                del kbs[name]
                self._write(kbs)  # unregistered first: a crash below leaves debris, never a half-registered base
                shutil.rmtree(index_dir, ignore_errors=True)  # under the lock: no ingest can start meanwhile
            finally:
                lock.release()
        home = self.data_dir / KBS_DIR / kb.slug
        if delete_notes and kb.corpus is not None:
            shutil.rmtree(kb.corpus, ignore_errors=True)
        with contextlib.suppress(OSError):
            home.rmdir()  # only when nothing of the user's is left in it
        return kb

    # --- the file ---------------------------------------------------------------------------------

    def _known(self, kbs: dict[str, KnowledgeBase], name: str) -> KnowledgeBase:
        check_name(name)
        if name not in kbs:
            raise KnowledgeBaseNotFound(f"unknown knowledge base {name!r} (known: {', '.join(sorted(kbs))})")
        return kbs[name]

    def _free_slug(self, name: str, kbs: dict[str, KnowledgeBase]) -> str:
        used = {kb.slug for kb in kbs.values()}
        slug, n = name, 1
        while slug in used or (self.data_dir / KBS_DIR / slug).exists():
            n += 1
            slug = f"{name}-{n}"
        return slug

    def _read(self) -> dict[str, KnowledgeBase]:
        kbs = self._parse()
        return kbs if kbs is not None else self._migrate()

    def _parse(self) -> dict[str, KnowledgeBase] | None:
        """The registry file's knowledge bases; None when there is no file yet."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RagError(f"the knowledge-base registry {self.path} is unreadable ({exc}); restore or remove it") from None
        entries = raw.get("kbs") if isinstance(raw, dict) else None
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            raise RagError(f"the knowledge-base registry {self.path} is damaged; restore or remove it")
        kbs = {name: KnowledgeBase.from_json(name, entry, self.data_dir) for name, entry in entries.items()}
        kbs.setdefault(DEFAULT_KB, KnowledgeBase(DEFAULT_KB, DEFAULT_KB, 0.0))
        return kbs

    def _migrate(self) -> dict[str, KnowledgeBase]:
        """First open: the existing corpus and index become `default`, in place (nothing moves). A data dir
        this process may not write (a read-only mount) is served as it is, with `default` alone."""
        try:
            with self._locked() as kbs:
                if not self.path.exists():
                    self._write(kbs)
        except PermissionError:
            return {DEFAULT_KB: KnowledgeBase(DEFAULT_KB, DEFAULT_KB, 0.0)}
        return kbs

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, KnowledgeBase]]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / f"{REGISTRY_FILE}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            kbs = self._parse()
            yield kbs if kbs is not None else {DEFAULT_KB: KnowledgeBase(DEFAULT_KB, DEFAULT_KB, time.time())}
        finally:
            os.close(fd)

    def _write(self, kbs: dict[str, KnowledgeBase]) -> None:
        body = {"format": FORMAT, "kbs": {name: kb.to_json(self.data_dir) for name, kb in sorted(kbs.items())}}
        tmp = self.path.with_name(f"{REGISTRY_FILE}.{os.getpid()}.tmp")
        try:
            write_text_durably(tmp, json.dumps(body, ensure_ascii=False, indent=1))
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.data_dir)
