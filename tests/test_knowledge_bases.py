"""The knowledge-base registry (names, create/rename/delete, limits, overrides, the default and its settings,
atomic writes across processes) and the engine pool (one engine per knowledge base, one shared embedder,
idle unloading), on real files, real locks and real engines."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from pathlib import Path

import pytest
from conftest import CORPUS

from rag.config import Settings
from rag.engine_pool import EnginePool
from rag.errors import AlreadyExists, InvalidInput, RagError
from rag.index.lock import WriteLock
from rag.knowledge_bases import (
    KnowledgeBaseBusy,
    KnowledgeBaseNotFound,
    KnowledgeBaseRegistry,
    TooManyKnowledgeBases,
    check_name,
    kb_settings,
)


def settings_in(tmp_path: Path, **values) -> Settings:
    return Settings(_env_file=None, **({"data_dir": tmp_path / "data", "corpus_dir": CORPUS} | values))


@pytest.fixture
def registry(tmp_path: Path) -> KnowledgeBaseRegistry:
    return KnowledgeBaseRegistry(settings_in(tmp_path))


# --- names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "0", "work", "team-2_notes", "9lives", "a" * 63])
def test_valid_names_are_accepted(name: str, registry: KnowledgeBaseRegistry) -> None:
    assert check_name(name) == name
    assert registry.create(name).name == name


@pytest.mark.parametrize(
    "name", ["", "a" * 64, "Work", "WORK", "-work", "_work", "my notes", "a/b", "../x", "a.b", "笔记", "work\n"]
)
def test_invalid_names_are_refused_with_the_rule(name: str, registry: KnowledgeBaseRegistry) -> None:
    with pytest.raises(InvalidInput, match="a-z, 0-9"):
        registry.create(name)
    assert [kb.name for kb in registry.list()] == ["default"]
    assert not (registry.data_dir / "kbs").exists() or not any((registry.data_dir / "kbs").iterdir())


# --- create, settings, the default ---------------------------------------------------------------------


def test_a_new_knowledge_base_gets_its_own_folders_under_the_data_dir(registry: KnowledgeBaseRegistry) -> None:
    kb = registry.create("work")
    own = registry.settings_for("work")
    data = registry.data_dir.resolve()
    assert own.corpus_dir == data / "kbs" / "work" / "corpus" and own.corpus_dir.is_dir()
    assert own.index_dir == data / "kbs" / "work" / "index"
    assert kb.owns_corpus
    default = registry.settings_for(None)
    assert default.corpus_dir == CORPUS and default.index_dir == registry.data_dir / "index"
    assert default.milvus_collection_prefix == "rag"
    assert own.milvus_collection_prefix.startswith("rag_work_")
    with pytest.raises(AlreadyExists):
        registry.create("work")


def test_an_existing_notes_folder_is_used_in_place(tmp_path: Path, registry: KnowledgeBaseRegistry) -> None:
    notes = tmp_path / "my-notes"
    notes.mkdir()
    kb = registry.create("mine", corpus=notes)
    assert registry.settings_for("mine").corpus_dir == notes.resolve() and not kb.owns_corpus
    with pytest.raises(InvalidInput, match="not found"):
        registry.create("ghost", corpus=tmp_path / "nowhere")


def test_overrides_are_validated_like_settings(registry: KnowledgeBaseRegistry) -> None:
    with pytest.raises(InvalidInput, match="chunk_size"):
        registry.create("tiny", overrides={"chunk_size": 10})
    with pytest.raises(InvalidInput, match="cannot override top_k"):
        registry.create("wide", overrides={"top_k": 9})
    with pytest.raises(InvalidInput, match="index_backend"):
        registry.create("odd", overrides={"index_backend": "elastic"})
    assert [kb.name for kb in registry.list()] == ["default"]
    kb = registry.create("small", overrides={"chunk_size": "300", "index_backend": "milvus"})
    assert kb.overrides == {"chunk_size": 300, "index_backend": "milvus"}  # stored as the settings read them
    small = kb_settings(registry.settings, registry.get("small"))
    assert (small.chunk_size, small.index_backend, small.chunk_overlap) == (300, "milvus", 80)
    assert registry.settings_for(None).chunk_size == 500


def test_rag_default_kb_chooses_the_default(tmp_path: Path) -> None:
    KnowledgeBaseRegistry(settings_in(tmp_path)).create("work")
    registry = KnowledgeBaseRegistry(settings_in(tmp_path, default_kb="work"))
    assert registry.get().name == "work"
    assert registry.settings_for(None).index_dir == registry.settings_for("work").index_dir
    assert registry.get("default").name == "default"
    with pytest.raises(InvalidInput, match="default"):
        registry.delete("work")
    with pytest.raises(InvalidInput, match="default"):
        registry.rename("work", "job")
    missing = KnowledgeBaseRegistry(settings_in(tmp_path, default_kb="gone"))
    with pytest.raises(KnowledgeBaseNotFound, match="'gone'.*known: default, work"):
        missing.settings_for(None)


def test_max_kbs_counts_the_default(tmp_path: Path) -> None:
    registry = KnowledgeBaseRegistry(settings_in(tmp_path, max_kbs=3))
    registry.create("one")
    registry.create("two")
    with pytest.raises(TooManyKnowledgeBases, match="RAG_MAX_KBS"):
        registry.create("three")
    registry.delete("two")
    registry.create("three")
    assert [kb.name for kb in registry.list()] == ["default", "one", "three"]


def test_a_moved_data_dir_keeps_its_knowledge_bases(tmp_path: Path, registry: KnowledgeBaseRegistry) -> None:
    registry.create("work")
    (registry.settings_for("work").corpus_dir / "a.md").write_text("# a\n", encoding="utf-8")
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(registry.data_dir, moved)
    shutil.rmtree(registry.data_dir)
    again = KnowledgeBaseRegistry(settings_in(tmp_path, data_dir=moved))
    assert (again.settings_for("work").corpus_dir / "a.md").is_file()
    assert again.settings_for("work").index_dir == moved.resolve() / "kbs" / "work" / "index"


def test_a_damaged_registry_is_one_clear_error(registry: KnowledgeBaseRegistry) -> None:
    registry.list()  # writes it
    registry.path.write_text('{"kbs": [1, 2', encoding="utf-8")
    with pytest.raises(RagError, match="unreadable.*restore or remove it"):
        registry.list()
    registry.path.write_text('{"kbs": {"x": 3}}', encoding="utf-8")
    with pytest.raises(RagError, match="damaged"):
        registry.get("x")


# --- rename and delete ---------------------------------------------------------------------------------


def test_rename_moves_nothing(registry: KnowledgeBaseRegistry) -> None:
    registry.create("work")
    before = registry.settings_for("work")
    registry.create("other")
    with pytest.raises(AlreadyExists):
        registry.rename("work", "other")
    with pytest.raises(InvalidInput):
        registry.rename("work", "Job")
    with pytest.raises(InvalidInput, match="default"):
        registry.rename("default", "main")
    registry.rename("work", "job")
    after = registry.settings_for("job")
    assert (after.corpus_dir, after.index_dir) == (before.corpus_dir, before.index_dir)
    with pytest.raises(KnowledgeBaseNotFound, match="'work'"):
        registry.get("work")
    registry.create("work")  # the old name is free again, with folders of its own
    assert registry.settings_for("work").index_dir != after.index_dir


def test_delete_removes_the_index_and_keeps_the_notes(registry: KnowledgeBaseRegistry) -> None:
    registry.create("work")
    settings = registry.settings_for("work")
    note = settings.corpus_dir / "note.md"
    note.write_text("# note\n", encoding="utf-8")
    (settings.index_dir / "versions").mkdir(parents=True)
    (settings.index_dir / "CURRENT").write_text("v1", encoding="utf-8")
    registry.delete("work")
    assert not settings.index_dir.exists()
    assert note.read_text(encoding="utf-8") == "# note\n"
    assert [kb.name for kb in registry.list()] == ["default"]
    with pytest.raises(KnowledgeBaseNotFound):
        registry.delete("work")


def test_delete_notes_removes_only_a_folder_the_registry_made(tmp_path: Path, registry: KnowledgeBaseRegistry) -> None:
    registry.create("work")
    corpus = registry.settings_for("work").corpus_dir
    (corpus / "note.md").write_text("# note\n", encoding="utf-8")
    registry.delete("work", delete_notes=True)
    assert not corpus.exists() and not (registry.data_dir / "kbs" / "work").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.md").write_text("# keep\n", encoding="utf-8")
    registry.create("mine", corpus=mine)
    with pytest.raises(InvalidInput, match="never deleted for you"):
        registry.delete("mine", delete_notes=True)
    assert registry.get("mine")
    registry.delete("mine")
    assert (mine / "keep.md").is_file()


def test_the_default_cannot_be_deleted(registry: KnowledgeBaseRegistry) -> None:
    with pytest.raises(InvalidInput, match="default"):
        registry.delete("default")
    assert registry.get("default")


def test_delete_is_refused_while_the_ingest_lock_is_held(registry: KnowledgeBaseRegistry) -> None:
    registry.create("work")
    index_dir = registry.settings_for("work").index_dir
    lock = WriteLock(index_dir)
    lock.acquire()
    try:
        with pytest.raises(KnowledgeBaseBusy, match="while its ingest runs") as refused:
            registry.delete("work")
        assert refused.value.status == 409
        assert registry.get("work") and index_dir.is_dir()
    finally:
        lock.release()
    registry.delete("work")
    assert not index_dir.exists()


# --- atomicity across processes ------------------------------------------------------------------------


def _create_many(data_dir: str, prefix: str, count: int) -> None:
    registry = KnowledgeBaseRegistry(Settings(_env_file=None, data_dir=Path(data_dir), corpus_dir=CORPUS))
    for i in range(count):
        registry.create(f"{prefix}{i}")
        if i % 3 == 2:
            registry.rename(f"{prefix}{i}", f"{prefix}{i}-renamed")


def _read_forever(path: str, stop, seen) -> None:
    reads = 0
    while not stop.is_set():
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        json.loads(text)  # a torn file would raise here and the process would exit non-zero
        reads += 1
        seen.value = reads


def test_concurrent_processes_all_land_and_the_file_always_parses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    registry = KnowledgeBaseRegistry(settings_in(tmp_path))
    registry.list()
    ctx = multiprocessing.get_context("spawn")
    stop, seen = ctx.Event(), ctx.Value("i", 0)
    reader = ctx.Process(target=_read_forever, args=(str(registry.path), stop, seen))
    reader.start()
    # the writers start once the reader reads (a spawned process takes a while to start on a loaded machine:
    # the writers could otherwise finish before its first read)
    deadline = time.monotonic() + 120
    while seen.value == 0 and reader.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    writers = [ctx.Process(target=_create_many, args=(str(data), prefix, 8)) for prefix in ("a", "b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    stop.set()
    reader.join(30)
    assert [w.exitcode for w in writers] == [0, 0]
    assert reader.exitcode == 0 and seen.value > 0
    names = {kb.name for kb in registry.list()}
    expected = {"default"} | {
        f"{p}{i}-renamed" if i % 3 == 2 else f"{p}{i}" for p in ("a", "b") for i in range(8)
    }
    assert names == expected
    assert len({registry.settings_for(n).index_dir for n in names}) == len(names)
    assert not list(data.glob("kbs.json.*.tmp"))


# --- the engine pool -----------------------------------------------------------------------------------


def test_each_knowledge_base_gets_its_own_engine_sharing_one_embedder(tmp_path: Path, embedder) -> None:
    settings = settings_in(tmp_path)
    pool = EnginePool(settings, embedder=embedder)
    pool.registry.create("work")
    default, work = pool.engine(None), pool.engine("work")
    assert default is not work
    assert default.embedder is embedder and work.embedder is embedder
    assert default.settings.index_dir == settings.index_dir
    assert work.settings.index_dir == pool.registry.settings_for("work").index_dir
    assert pool.engine("default") is default and pool.engine("work") is work
    assert pool.loaded() == ["default", "work"]
    with pytest.raises(KnowledgeBaseNotFound, match="'nope'"):
        pool.engine("nope")
    with pytest.raises(InvalidInput):
        pool.engine("No Such")
    assert pool.loaded() == ["default", "work"]


def test_an_adopted_engines_embedder_is_shared(tmp_path: Path, embedder) -> None:
    from rag.engine import Engine

    settings = settings_in(tmp_path)
    pool = EnginePool(settings)
    app_engine = Engine(settings, embedder=embedder)
    pool.adopt("default", app_engine)
    pool.registry.create("work")
    assert pool.engine() is app_engine
    assert pool.engine("work").embedder is embedder


def test_unused_knowledge_bases_are_unloaded_after_the_idle_time(tmp_path: Path, embedder) -> None:
    now = [1000.0]
    settings = settings_in(tmp_path, kb_idle_seconds=60)
    pool = EnginePool(settings, embedder=embedder, clock=lambda: now[0])
    pool.registry.create("work")
    first = pool.engine("default")
    now[0] += 50
    pool.engine("work")
    now[0] += 20  # default unused for 70 s, work for 20 s
    assert pool.unload_idle() == ["default"]
    assert pool.loaded() == ["work"]
    now[0] += 100
    assert pool.unload_idle(keep={"work"}) == []  # a running ingest pins it
    assert pool.unload_idle() == ["work"] and pool.loaded() == []
    again = pool.engine("default")
    assert again is not first and again.embedder is embedder
    never = EnginePool(settings_in(tmp_path / "never", kb_idle_seconds=0), embedder=embedder, clock=lambda: now[0])
    never.engine()
    now[0] += 10**6
    assert never.unload_idle() == [] and never.loaded() == ["default"]


# --- a knowledge base on a shared Milvus ---------------------------------------------------------------


def test_deleting_a_milvus_knowledge_base_drops_only_its_collections(tmp_path: Path, make_settings, embedder) -> None:
    from test_milvus_serve import milvus_lite_server

    from ingest.pipeline import run_ingest
    from rag.engine import Engine
    from rag.index.milvus_schema import connect, disconnect

    with milvus_lite_server(tmp_path / "milvus") as uri:
        registry = KnowledgeBaseRegistry(make_settings(milvus_uri=uri))
        for name, note in (("alpha", "青岚调度法分三个阶段：采样、评分、轮换。"), ("beta", "苔原缓存把冷数据沉到对象存储。")):
            registry.create(name, overrides={"index_backend": "milvus"})
            settings = registry.settings_for(name)
            (settings.corpus_dir / f"{name}.md").write_text(f"# {name}\n\n{note}\n", encoding="utf-8")
            assert run_ingest(settings, embedder=embedder).documents == 1
        alpha, beta = (registry.settings_for(n).milvus_collection_prefix for n in ("alpha", "beta"))
        try:
            client = connect(uri, None)
            assert any(c.startswith(alpha + "_") for c in client.list_collections())
            registry.delete("alpha")
            left = client.list_collections()
            assert not any(c.startswith(alpha + "_") for c in left)
            assert any(c.startswith(beta + "_") for c in left)
            answer = Engine(registry.settings_for("beta"), embedder=embedder).ask("苔原缓存把冷数据放在哪里？")
            assert {c.doc_id for c in answer.citations} == {"beta.md"}
        finally:
            disconnect(uri)
