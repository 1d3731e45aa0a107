"""Shared fixtures: one converted embedder, one ingested copy of the bundled corpus, per test run.

Tests that need their own index get a fresh data dir whose model directory points at the shared one
and whose embedding cache starts as a copy of the shared cache, so nothing is converted or embedded twice.
Under pytest-xdist (`make test` runs two workers) the workers share that data dir: the first one converts and
ingests under a file lock, the others wait for it and load what it built.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rag.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"
DATA = Path(__file__).resolve().parent / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (other test workers wait)."""
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared data dir's parent: one per run, shared by all xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # every worker's base temp sits in the same run directory
    path = root / "rag-base"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def base_settings(base_dir: Path) -> Settings:
    """Settings of the shared data dir (bundled corpus, default embedder), isolated from any .env."""
    return Settings(_env_file=None, data_dir=base_dir / "data", corpus_dir=CORPUS)


@pytest.fixture(scope="session")
def embedder(base_settings: Settings):
    """The default embedder, converted once and loaded once for the whole session."""
    from rag.embedding import load_embedder, prepare_embed_model

    with exclusive(base_settings.data_dir.parent / "model.lock"):
        prepare_embed_model(base_settings)
    return load_embedder(base_settings)


# Developer machines keep converted weights and corpus vectors between sessions here (git-ignored);
# CI starts from a clean clone, so there everything is converted and embedded for real.
LOCAL_CACHE = Path(__file__).resolve().parent / ".cache"


@pytest.fixture(scope="session")
def corpus_index(base_settings: Settings, embedder):
    """The bundled corpus ingested into the shared data dir; returns the ingest summary."""
    from ingest.pipeline import run_ingest

    done = base_settings.data_dir.parent / "ingest-summary.pickle"
    with exclusive(base_settings.data_dir.parent / "ingest.lock"):
        if done.exists():  # another worker ingested it
            return pickle.loads(done.read_bytes())
        cached = LOCAL_CACHE / "embeddings.sqlite"
        target = base_settings.cache_dir / "embeddings.sqlite"
        if cached.exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(cached, target)
        summary = run_ingest(base_settings, embedder=embedder)
        LOCAL_CACHE.mkdir(exist_ok=True)
        shutil.copy(target, cached)
        done.write_bytes(pickle.dumps(summary))
        return summary


@pytest.fixture(scope="session")
def engine(base_settings: Settings, embedder, corpus_index):
    """An engine serving the bundled corpus with default settings (extractive answerer)."""
    from rag.engine import Engine

    eng = Engine(base_settings, embedder=embedder)
    eng.load()
    return eng


@pytest.fixture
def make_settings(tmp_path: Path, base_settings: Settings, embedder, corpus_index) -> Callable[..., Settings]:
    """Settings for a private data dir sharing the converted model and a copy of the embedding cache."""

    def factory(**overrides) -> Settings:
        data = tmp_path / f"data{len(list(tmp_path.glob('data*')))}"
        (data / "cache").mkdir(parents=True)
        os.symlink(base_settings.models_dir.resolve(), data / "models")
        shared_cache = base_settings.cache_dir / "embeddings.sqlite"
        if shared_cache.exists():
            shutil.copy(shared_cache, data / "cache" / "embeddings.sqlite")
        values = {"data_dir": data, "corpus_dir": CORPUS} | overrides
        return Settings(_env_file=None, **values)

    return factory


def copy_session_index(base: Settings, settings: Settings) -> str:
    """Publish in `settings`' data dir a copy of the session's index: exactly what ingesting an unchanged copy
    of the bundled corpus there would publish (the manifest names notes by relative path and hash), without
    re-reading and re-tokenizing every note. Returns its version."""
    from rag.index import IndexStore

    shutil.copytree(base.index_dir, settings.index_dir, ignore=shutil.ignore_patterns(".lock"))
    version = IndexStore.from_settings(settings).current_version()
    assert version is not None
    return version


def copy_corpus(dest: Path) -> Path:
    """A private, editable copy of the bundled corpus."""
    shutil.copytree(CORPUS, dest)
    return dest


def fit_reader_script():
    """scripts/fit_reader.py, imported as a module."""
    import importlib.util
    import sys

    path = ROOT / "scripts" / "fit_reader.py"
    spec = importlib.util.spec_from_file_location("fit_reader", path)
    assert spec is not None and spec.loader is not None
    fit_reader = importlib.util.module_from_spec(spec)
    sys.modules["fit_reader"] = fit_reader  # its dataclasses look their module up
    try:
        spec.loader.exec_module(fit_reader)
    finally:
        del sys.modules["fit_reader"]
    return fit_reader
