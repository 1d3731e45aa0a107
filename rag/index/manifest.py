"""What an index version is: its file names, the build a publish takes (`IndexBuild`) and the manifest that
describes and checksums the result (`Manifest`).

A version directory holds manifest.json, chunks.sqlite, vectors.faiss, keyword/, glossary.json and terms.npy.
Every file but the manifest is listed in it with size and sha256, so truncation, flipped bytes and missing
files surface as `IndexCorrupted` instead of wrong answers. Row `i` is the same chunk everywhere: SQLite
`chunks.row`, FAISS id and BM25 document index.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rag.errors import REPAIR_HINT
from rag.index.keyword import KEYWORD_BACKENDS
from rag.index.vectors import VECTOR_INDEX_KINDS
from rag.types import Chunk, Document, SkippedFile

FORMAT_VERSION = 2  # 2: glossary term vectors (terms.npy)

CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
TMP_PREFIX = ".tmp-"
MANIFEST_FILE = "manifest.json"
SQLITE_FILE = "chunks.sqlite"
TERM_VECTORS_FILE = "terms.npy"  # glossary names embedded as queries, rows = glossary.json "vector_terms"
VECTORS_FILE = "vectors.faiss"
KEYWORD_DIR = "keyword"
GLOSSARY_FILE = "glossary.json"
READER_TEXTS_FILE = "reader.json"  # the reader's candidate sentences ("heading：sentence"), rows of reader.npy
READER_VECTORS_FILE = "reader.npy"  # their passage vectors; optional: an index without them reads degraded

REINGEST = REPAIR_HINT  # the remedy named in every "this index is damaged" message
SERVER_KEYWORD_BACKENDS = ("milvus_sparse",)  # keyword sides kept by a server (rag/index/milvus.py)



@dataclass
class IndexBuild:
    """Everything a publish needs; row i of `chunks` <-> `vectors[i]` <-> `tokens[i]`."""

    documents: list[Document]
    chunks: list[Chunk]
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    tokens: list[list[str]]  # BM25 tokens of each chunk's index_text
    embed_model_id: str
    settings_fingerprint: dict
    alias_groups: list[list[str]] = field(default_factory=list)
    user_words: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    ingest_summary: dict = field(default_factory=dict)
    vector_terms: list[str] = field(default_factory=list)  # glossary names with a vector in term_vectors
    term_vectors: np.ndarray | None = None  # (len(vector_terms), dim) float32, L2-normalised
    reader_texts: list[str] = field(default_factory=list)  # candidate sentences with a vector in reader_vectors
    reader_vectors: np.ndarray | None = None  # (len(reader_texts), dim) float32, L2-normalised


@dataclass
class Manifest:
    """What a version holds and how to check it: sizes and sha256 of every other file in the version."""

    version: str
    created_at: str
    embed_model_id: str
    dim: int
    settings_fingerprint: dict
    files: dict[str, str]  # doc_id -> sha256 of the note's raw bytes
    counts: dict[str, int]  # documents, chunks
    checksums: dict[str, str]  # relative POSIX path -> sha256
    sizes: dict[str, int]  # relative POSIX path -> bytes
    keyword_backend: str
    vector_index: str
    ingest_summary: dict = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """Serialise as pretty, deterministic JSON."""
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse and type-check; raises ValueError on anything malformed."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        try:
            manifest = cls(
                version=str(data["version"]),
                created_at=str(data["created_at"]),
                embed_model_id=str(data["embed_model_id"]),
                dim=int(data["dim"]),
                settings_fingerprint=dict(data["settings_fingerprint"]),
                files={str(k): str(v) for k, v in dict(data["files"]).items()},
                counts={str(k): int(v) for k, v in dict(data["counts"]).items()},
                checksums={str(k): str(v) for k, v in dict(data["checksums"]).items()},
                sizes={str(k): int(v) for k, v in dict(data["sizes"]).items()},
                keyword_backend=str(data["keyword_backend"]),
                vector_index=str(data["vector_index"]),
                ingest_summary=dict(data.get("ingest_summary", {})),
                skipped=[
                    {"path": str(s["path"]), "reason": str(s["reason"])} for s in data.get("skipped", [])
                ],
                format_version=int(data.get("format_version", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"manifest field missing or malformed: {exc}") from exc
        if manifest.keyword_backend not in KEYWORD_BACKENDS + SERVER_KEYWORD_BACKENDS:
            raise ValueError(f"unknown keyword backend {manifest.keyword_backend!r}")
        if manifest.vector_index not in VECTOR_INDEX_KINDS:
            raise ValueError(f"unknown vector index {manifest.vector_index!r}")
        if set(manifest.checksums) != set(manifest.sizes):
            raise ValueError("manifest checksums and sizes list different files")
        return manifest


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def version_files(root: Path) -> list[Path]:
    """Every regular file under `root`, sorted, excluding the manifest itself."""
    files = [p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


__all__ = [
    "CURRENT_FILE",
    "FORMAT_VERSION",
    "GLOSSARY_FILE",
    "IndexBuild",
    "KEYWORD_DIR",
    "MANIFEST_FILE",
    "Manifest",
    "REINGEST",
    "SQLITE_FILE",
    "TERM_VECTORS_FILE",
    "READER_TEXTS_FILE",
    "READER_VECTORS_FILE",
    "TMP_PREFIX",
    "VECTORS_FILE",
    "VERSIONS_DIR",
    "file_sha256",
    "version_files",
]
