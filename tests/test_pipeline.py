"""Ingest end to end on private copies of the bundled corpus: encodings, skipped files, offsets, incremental
counts, SIGKILLed ingests at every stage, the write lock and the user glossary."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, copy_corpus, copy_session_index

from ingest.loading import decode
from ingest.pipeline import IngestSummary, run_ingest
from rag.config import Settings
from rag.engine import Engine
from rag.errors import IngestBusy
from rag.index import PUBLISH_STAGES, IndexStore, LoadedIndex, WriteLock

SettingsFactory = Callable[..., Settings]

GBK_NOTE = "量子退火.md"
GBK_TEXT = (
    "# 量子退火笔记\n\n"
    "## 原理\n\n"
    "量子退火是一种利用量子隧穿效应在能量地形中寻找全局最优解的优化方法。\n"
    "退火机从所有状态的叠加态出发，缓慢减小横向磁场，系统便停在低能量的解上。\n"
)
EDITED = "python-for-ai.md"
PARAGRAPH = "\n\n## 附录：向量化\n\n用 NumPy 的向量化运算代替 Python 循环，可以把批量矩阵计算提速几十倍。\n"


def ingest(settings: Settings, embedder, **kwargs) -> IngestSummary:
    return run_ingest(settings, embedder=embedder, **kwargs)


def load_index(settings: Settings) -> LoadedIndex:
    return IndexStore.from_settings(settings).load()


def chunk_ids_by_doc(settings: Settings) -> dict[str, list[str]]:
    with load_index(settings) as index:
        ids: dict[str, list[str]] = {}
        for c in index.all_chunks_iter():
            ids.setdefault(c.doc_id, []).append(c.chunk_id)
        return ids


def tmp_debris(settings: Settings) -> list[str]:
    versions = settings.index_dir / "versions"
    found = [p.name for p in versions.iterdir() if p.name.startswith(".tmp-")] if versions.is_dir() else []
    if (settings.index_dir / "CURRENT.tmp").exists():
        found.append("CURRENT.tmp")
    return found


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = copy_corpus(tmp_path / "corpus")
    for note in path.iterdir():
        note.chmod(0o644)  # the bundled notes are read-only; the copies get edited
    return path


# ------------------------------------------------------------------------------- loading and offsets


def test_gbk_note_is_decoded_and_found_by_a_chinese_query(
    make_settings: SettingsFactory, embedder, corpus: Path
) -> None:
    (corpus / GBK_NOTE).write_bytes(GBK_TEXT.encode("gbk"))
    settings = make_settings(corpus_dir=corpus)
    summary = ingest(settings, embedder)
    assert GBK_NOTE in summary.added and summary.published
    engine = Engine(settings, embedder=embedder)
    engine.load()
    doc = engine.document(GBK_NOTE)
    assert doc["text"] == GBK_TEXT
    assert doc["encoding"] == "gb18030"
    assert doc["title"] == "量子退火笔记"
    hits = engine.search("怎样利用量子隧穿效应寻找全局最优解？", top_k=3).hits
    assert hits[0].chunk.doc_id == GBK_NOTE
    assert "量子隧穿效应" in hits[0].chunk.text


def test_binary_empty_and_oversized_files_are_skipped_with_warnings(
    make_settings: SettingsFactory, embedder, corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (corpus / "blob.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    (corpus / "empty.md").write_bytes(b"")
    (corpus / "huge.md").write_bytes(("# 大文件\n\n" + "这是一段很长的笔记。" * 30_000).encode("utf-8"))
    settings = make_settings(corpus_dir=corpus, max_file_mb=0.5)  # the largest bundled note is ~0.33 MB
    with caplog.at_level(logging.WARNING):
        summary = ingest(settings, embedder)
    reasons = {s.path: s.reason for s in summary.skipped}
    assert set(reasons) == {"blob.md", "empty.md", "huge.md"}
    assert "binary" in reasons["blob.md"]
    assert "empty" in reasons["empty.md"]
    assert "too large" in reasons["huge.md"] and "0.5 MB" in reasons["huge.md"]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    for name in reasons:
        assert name in warned
    assert summary.documents == 5
    with load_index(settings) as index:
        assert {d["doc_id"] for d in index.documents()} == {p.name for p in ROOT.joinpath("corpus").iterdir()}
        assert {(s.path, s.reason) for s in index.skipped} == set(reasons.items())


def test_every_chunk_is_an_exact_slice_of_its_original_file(
    base_settings: Settings, corpus_index: IngestSummary, engine: Engine
) -> None:
    originals = {p.name: decode(p.read_bytes())[0] for p in base_settings.corpus_dir.iterdir() if p.is_file()}
    checked = 0
    with load_index(base_settings) as index:
        for c in index.all_chunks_iter():
            text = originals[c.doc_id]
            assert 0 <= c.start < c.end <= len(text)
            assert text[c.start : c.end] == c.text
            checked += 1
        assert checked == corpus_index.chunks > 0
        for doc_id, text in originals.items():  # the same through the engine's document view
            doc = engine.document(doc_id)
            assert doc["text"] == text
            for c in doc["chunks"]:
                stored = index.chunk_by_id(c["chunk_id"])
                assert stored is not None and text[c["start"] : c["end"]] == stored.text


# --------------------------------------------------------------------------------- incremental counts


def test_nothing_changed_means_nothing_embedded_or_published(
    make_settings: SettingsFactory, embedder, corpus: Path
) -> None:
    settings = make_settings(corpus_dir=corpus)
    first = ingest(settings, embedder)
    assert first.published and first.chunks > 0
    assert sorted(first.added) == sorted(p.name for p in corpus.iterdir())
    again = ingest(settings, embedder)
    assert again.embedded == 0
    assert not again.published
    assert (again.added, again.changed, again.removed) == ([], [], [])
    assert again.version == first.version == IndexStore.from_settings(settings).current_version()
    assert again.chunks == first.chunks


def test_editing_one_note_embeds_only_its_new_chunks(
    make_settings: SettingsFactory, embedder, corpus: Path, base_settings: Settings
) -> None:
    settings = make_settings(corpus_dir=corpus)
    first_version = copy_session_index(base_settings, settings)  # what a first ingest of the copy publishes
    before = chunk_ids_by_doc(settings)
    with (corpus / EDITED).open("a", encoding="utf-8") as f:
        f.write(PARAGRAPH)
    summary = ingest(settings, embedder)
    assert summary.changed == [EDITED] and summary.added == [] and summary.removed == []
    assert summary.published and summary.version != first_version
    assert 0 < summary.embedded <= 3
    assert summary.reused >= summary.chunks - summary.embedded
    after = chunk_ids_by_doc(settings)
    for doc_id, ids in before.items():
        if doc_id != EDITED:
            assert after[doc_id] == ids
    new_ids = set(after[EDITED]) - set(before[EDITED])
    assert 0 < len(new_ids) <= 3 and summary.embedded <= len(new_ids)
    assert set(after[EDITED]) & set(before[EDITED])  # the untouched sections keep their ids
    engine = Engine(settings, embedder=embedder)
    engine.load()
    hits = engine.search("NumPy 向量化运算代替 Python 循环", top_k=3).hits
    assert any("向量化运算" in h.chunk.text and h.chunk.doc_id == EDITED for h in hits)


def test_deleted_note_disappears_from_the_index_and_from_results(
    make_settings: SettingsFactory, embedder, corpus: Path, base_settings: Settings
) -> None:
    gone = "ai-terms-explained.md"
    settings = make_settings(corpus_dir=corpus)
    copy_session_index(base_settings, settings)  # what a first ingest of the copy publishes
    with load_index(settings) as index:
        old_chunks = index.doc_chunks(gone)
    assert old_chunks
    (corpus / gone).unlink()
    summary = ingest(settings, embedder)
    assert summary.removed == [gone] and summary.added == [] and summary.changed == []
    assert summary.embedded == 0 and summary.published
    engine = Engine(settings, embedder=embedder)
    engine.load()
    assert gone not in {d["doc_id"] for d in engine.documents()}
    with load_index(settings) as index:
        assert all(index.chunk_by_id(c.chunk_id) is None for c in old_chunks)
    for c in old_chunks[:5]:  # the deleted note's own words find nothing of it any more
        query = c.text.strip()[:60]
        for mode in ("hybrid", "bm25", "dense"):
            assert all(h.chunk.doc_id != gone for h in engine.search(query, top_k=10, mode=mode).hits)


def test_renamed_note_is_removed_and_added_without_re_embedding(
    make_settings: SettingsFactory, embedder, corpus: Path, base_settings: Settings
) -> None:
    old, new = "learning-notes.md", "archive/learning-notes-2024.md"
    settings = make_settings(corpus_dir=corpus)
    copy_session_index(base_settings, settings)  # what a first ingest of the copy publishes
    before = chunk_ids_by_doc(settings)
    (corpus / "archive").mkdir()
    (corpus / old).rename(corpus / new)
    summary = ingest(settings, embedder)
    assert summary.removed == [old] and summary.added == [new] and summary.changed == []
    assert summary.embedded == 0  # the embedding cache keys on text, not on the path
    assert summary.published
    after = chunk_ids_by_doc(settings)
    assert old not in after
    assert len(after[new]) == len(before[old])
    assert not set(after[new]) & set(before[old])  # chunk ids include the path
    engine = Engine(settings, embedder=embedder)
    engine.load()
    assert engine.search("折扣率又叫折扣因子", top_k=3).hits[0].chunk.doc_id == new


def test_full_ingest_re_embeds_every_chunk(make_settings: SettingsFactory, embedder, corpus: Path) -> None:
    for note in corpus.iterdir():  # two short notes keep the full re-embed small
        if note.name not in ("ai-terms-explained.md", "python-for-ai.md"):
            note.unlink()
    settings = make_settings(corpus_dir=corpus)
    first = ingest(settings, embedder)
    assert first.published
    summary = ingest(settings, embedder, full=True)
    assert summary.published and summary.version != first.version
    with load_index(settings) as index:
        unique_texts = {c.index_text for c in index.all_chunks_iter()}
    assert summary.chunks == first.chunks > 0
    assert summary.embedded == len(unique_texts) == summary.chunks
    assert summary.reused == 0


# ------------------------------------------------------------------------------------ killed ingests

KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from ingest.pipeline import run_ingest
    from rag.config import Settings

    target, full = sys.argv[1], sys.argv[2] == "full"

    def on_stage(name):
        if name == target:
            os.kill(os.getpid(), signal.SIGKILL)

    def progress(stage, done, total):
        if target == "mid-embedding" and stage == "embeddings" and done > 0:
            os.kill(os.getpid(), signal.SIGKILL)

    run_ingest(Settings(_env_file=None), full=full, on_stage=on_stage, progress=progress)
    print("ingest finished: the kill never happened")
    """
)


def ingest_killed_at(settings: Settings, target: str, *, full: bool = False) -> None:
    """Run an ingest of `settings` in a fresh interpreter that SIGKILLs itself on reaching `target`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= {
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_CORPUS_DIR": str(settings.corpus_dir),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, target, "full" if full else "incremental"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr[-3000:])


def many_section_note(n: int) -> str:
    sections = [
        f"## 实验 {i}\n\n第 {i} 组实验把学习率设为 {i}e-4，批大小为 {8 * i}，在验证集上得到 {50 + i % 40} 分。"
        for i in range(n)
    ]
    return "# 调参实验记录\n\n" + "\n\n".join(sections) + "\n"


def test_ingest_killed_mid_embedding_keeps_the_old_index_and_the_finished_vectors(
    make_settings: SettingsFactory, embedder, corpus: Path, base_settings: Settings
) -> None:
    settings = make_settings(corpus_dir=corpus)
    first_version = copy_session_index(base_settings, settings)  # what a first ingest of the copy publishes
    serving = Engine(settings, embedder=embedder)
    serving.load()
    (corpus / "tuning.md").write_text(many_section_note(100), encoding="utf-8")

    ingest_killed_at(settings, "mid-embedding")

    store = IndexStore.from_settings(settings)
    assert store.current_version() == first_version
    fresh = Engine(settings, embedder=embedder)
    fresh.load()
    assert fresh.version == first_version
    assert fresh.search("灾难性遗忘", top_k=3).hits
    assert serving.search("灾难性遗忘", top_k=3).hits
    assert "tuning.md" not in {d["doc_id"] for d in fresh.documents()}

    rerun = ingest(settings, embedder)
    assert rerun.published and rerun.added == ["tuning.md"]
    # the killed run saved its first batch of vectors: only the rest is embedded again
    batch = max(settings.embed_batch_size * 4, 32)
    with load_index(settings) as index:
        new_chunks = len(index.doc_chunks("tuning.md"))
    assert new_chunks > batch
    assert rerun.embedded == new_chunks - batch
    assert tmp_debris(settings) == []
    assert serving.reload() and serving.version == rerun.version
    hits = serving.search("第 42 组实验的批大小", top_k=5).hits
    assert any(h.chunk.doc_id == "tuning.md" for h in hits)


@pytest.mark.parametrize("stage", ["embedding", *PUBLISH_STAGES])
def test_ingest_killed_at_each_stage_leaves_a_serving_index(
    make_settings: SettingsFactory, embedder, corpus: Path, stage: str, base_settings: Settings, corpus_index
) -> None:
    settings = make_settings(corpus_dir=corpus)
    first_version = copy_session_index(base_settings, settings)  # what a first ingest of the copy publishes
    # a rename needs no new vectors, so the killed interpreter never loads the embedder
    (corpus / "python-for-ai.md").rename(corpus / "python-for-ai-renamed.md")

    ingest_killed_at(settings, stage)

    store = IndexStore.from_settings(settings)
    switched = stage in ("publish:switched", "publish:done")
    current = store.current_version()
    assert (current != first_version) if switched else (current == first_version)
    if stage in PUBLISH_STAGES[:3]:
        assert tmp_debris(settings), "the kill should have left a half-built version behind"
    engine = Engine(settings, embedder=embedder)
    engine.load()
    assert engine.version == current
    assert engine.search("LoRA 微调里最重要的超参数是什么？", top_k=3).hits
    docs = {d["doc_id"] for d in engine.documents()}
    assert ("python-for-ai-renamed.md" in docs) == switched
    with store.load_version(first_version) as old:  # the previous version is intact either way
        assert len(old) == corpus_index.chunks

    rerun = ingest(settings, embedder)
    assert rerun.published != switched
    assert rerun.embedded == 0
    assert tmp_debris(settings) == []
    final = store.current_version()
    assert set(store.list_versions()) <= {final, current, first_version}
    with store.load() as index:
        assert "python-for-ai-renamed.md" in {d["doc_id"] for d in index.documents()}


# --------------------------------------------------------------------------------------- write lock


def test_a_second_ingest_while_one_holds_the_lock_is_refused(
    make_settings: SettingsFactory, embedder, corpus: Path
) -> None:
    settings = make_settings(corpus_dir=corpus)
    with WriteLock(settings.index_dir):
        with pytest.raises(IngestBusy, match="another ingest is running") as caught:
            ingest(settings, embedder)
        assert str(os.getpid()) in caught.value.message
        assert str(settings.index_dir) in caught.value.message
        with pytest.raises(IngestBusy):
            ingest(settings, embedder, lock_timeout=0.2)
    assert IndexStore.from_settings(settings).current_version() is None
    assert ingest(settings, embedder).published


def test_an_ingest_in_another_process_blocks_this_one(
    make_settings: SettingsFactory, embedder, corpus: Path
) -> None:
    settings = make_settings(corpus_dir=corpus)
    settings.index_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom rag.index import WriteLock\n"
            "with WriteLock(__import__('pathlib').Path(sys.argv[1])):\n"
            "    print('locked', flush=True)\n    sys.stdin.read()\n",
            str(settings.index_dir),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(IngestBusy, match=f"held by pid {holder.pid}"):
            ingest(settings, embedder)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    assert ingest(settings, embedder).published


# ----------------------------------------------------------------------------------------- glossary


def test_user_glossary_is_merged_into_alias_groups_and_not_indexed(
    make_settings: SettingsFactory, embedder, corpus: Path, base_settings: Settings, corpus_index: IngestSummary
) -> None:
    settings = make_settings(corpus_dir=corpus)
    first = corpus_index  # the session's ingest of the bundled notes
    first_version = copy_session_index(base_settings, settings)  # what a first ingest of the copy publishes
    (corpus / "glossary.txt").write_text(
        "# 我的别名\n灾难性遗忘 | 学完就忘症\n费曼学习法 = Feynman Technique\n", encoding="utf-8"
    )
    summary = ingest(settings, embedder)
    assert summary.published and summary.version != first_version  # a glossary change alone republishes
    assert "glossary.txt" not in summary.added
    assert summary.embedded == 0 and summary.documents == first.documents
    assert summary.alias_groups == first.alias_groups + 1
    with load_index(settings) as index:
        groups = index.alias_groups
        assert "glossary.txt" not in {d["doc_id"] for d in index.documents()}
    assert ["费曼学习法", "Feynman Technique"] in groups
    forgetting = [g for g in groups if "学完就忘症" in g]
    assert len(forgetting) == 1 and "灾难性遗忘" in forgetting[0] and len(forgetting[0]) > 2
    engine = Engine(settings, embedder=embedder)
    engine.load()
    assert ["费曼学习法", "Feynman Technique"] in engine.glossary()
    result = engine.search("学完就忘症", mode="bm25", top_k=3, explain=True)
    assert result.explanation is not None
    assert any("灾难性遗忘" in item["added"] for item in result.explanation["expansions"])
    assert any("灾难性遗忘" in h.chunk.text for h in result.hits)
    assert all(h.chunk.doc_id != "glossary.txt" for h in engine.search("费曼学习法 Feynman", top_k=10).hits)
    assert not ingest(settings, embedder).published  # and an unchanged glossary does not
