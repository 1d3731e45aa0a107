"""Which store holds the index: `open_store` returns `IndexStore` (local files) or `MilvusStore` by
`settings.index_backend`; both publish an `IndexBuild` and load an `IndexBackend` the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rag.index.local import IndexStore

if TYPE_CHECKING:
    from rag.config import Settings
    from rag.index.milvus import MilvusStore


def open_store(settings: Settings, *, index_dir: Path | None = None) -> IndexStore | MilvusStore:
    """The store of `settings` (index_backend, index_dir, and for milvus its URI, token and prefix)."""
    if settings.index_backend == "milvus":
        from rag.index.milvus import MilvusStore  # pymilvus is imported only when Milvus is used

        return MilvusStore.from_settings(settings, index_dir=index_dir)
    return IndexStore.from_settings(settings, index_dir=index_dir)


__all__ = ["open_store"]
