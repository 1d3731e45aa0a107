"""`rag kb …` and `--kb` through the installed `rag` script, as a real subprocess: an install from before
knowledge bases becomes `default` in place, a knowledge base answers only from its own notes (in process and
through a running API), and bad names, unknown bases and refused deletes are one clear line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import CORPUS
from live import LiveServer

from rag.config import Settings
from rag.index.lock import WriteLock

RAG = Path(sys.executable).with_name("rag")
NOTES = {
    "kbtest-qinglan.md": (
        "# 青岚调度法\n\n青岚调度法是果园灌溉的一种调度方法。它分三个阶段：先采样土壤湿度，再给每块地评分，"
        "最后按评分轮换灌溉。青岚调度法由林晚舟在二〇一九年提出。\n"
    ),
    "kbtest-moss.md": (
        "# 苔原缓存\n\n苔原缓存是一种按访问温度分层的缓存策略。热数据留在内存层，温数据放在固态盘层，"
        "冷数据沉到对象存储。苔原缓存每十分钟重新计算一次温度。\n"
    ),
}
QUESTION = "青岚调度法分哪三个阶段？"


def rag(*args: str, data_dir: Path, api_url: str = "http://127.0.0.1:9", **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    base |= {
        "RAG_DATA_DIR": str(data_dir),
        "RAG_CORPUS_DIR": str(CORPUS),
        "RAG_API_URL": api_url,  # port 9: nothing listens, ask and search run in process
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "COLUMNS": "200",
    } | env
    return subprocess.run(
        [str(RAG), *args], cwd=data_dir.parent, env=base, capture_output=True, text=True, timeout=600,
        check=False, stdin=subprocess.DEVNULL,
    )


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])


def clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit and one `error:` line naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def cited(answer: dict) -> set[str]:
    return {c["doc_id"] for c in answer["citations"]}


def tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


def side_by_side(data_dir: Path, **commands: tuple[str, ...]) -> dict[str, dict]:
    """Run read-only `rag` commands on one data dir, as many at a time as there are cores (each that answers a
    question spends most of its time importing sentence-transformers and loading the model on one core); the
    JSON each printed last, by name."""
    with ThreadPoolExecutor(max_workers=min(len(commands), os.cpu_count() or 1)) as pool:
        running = {name: pool.submit(rag, *args, data_dir=data_dir) for name, args in commands.items()}
        return {name: last_json(proc.result()) for name, proc in running.items()}


@pytest.fixture(scope="module")
def old_install(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, corpus_index) -> Path:
    """A data dir as an install left it before knowledge bases existed: an index of the bundled notes, the
    model, the embedding cache, and no registry."""
    data = tmp_path_factory.mktemp("kb-cli") / "data"
    (data / "cache").mkdir(parents=True)
    os.symlink(base_settings.models_dir.resolve(), data / "models")
    shutil.copy(base_settings.cache_dir / "embeddings.sqlite", data / "cache" / "embeddings.sqlite")
    shutil.copytree(base_settings.index_dir, data / "index", ignore=shutil.ignore_patterns(".lock"))
    assert not (data / "kbs.json").exists()
    return data


@pytest.fixture(scope="module")
def fruit(old_install: Path, corpus_index) -> dict:
    """Knowledge base `fruit`: two notes of its own, ingested with `rag ingest --kb fruit`."""
    created = last_json(rag("kb", "create", "fruit", "--json", data_dir=old_install))
    corpus = Path(created["corpus"])
    assert corpus.is_dir() and corpus.is_relative_to(old_install.resolve())
    for name, text in NOTES.items():
        (corpus / name).write_text(text, encoding="utf-8")
    summary = last_json(rag("ingest", "--kb", "fruit", "--json", data_dir=old_install))
    assert summary["documents"] == 2 and summary["published"]
    return created


def test_an_existing_install_is_the_default_knowledge_base_in_place(old_install: Path, corpus_index) -> None:
    before = tree(old_install / "index")
    plain = last_json(rag("ask", "--json", "LoRA 微调里最重要的超参数是什么？", data_dir=old_install))  # first start
    assert plain["citations"] and all((CORPUS / doc).is_file() for doc in cited(plain))
    out = side_by_side(
        old_install, listed=("kb", "list", "--json"),
        named=("ask", "--kb", "default", "--json", "LoRA 微调里最重要的超参数是什么？"),
    )
    listed = out["listed"]["kbs"]
    default = next(row for row in listed if row["name"] == "default")
    assert default["default"] and default["documents"] == corpus_index.documents
    assert default["chunks"] == corpus_index.chunks
    assert Path(default["index"]) == old_install / "index" and Path(default["corpus"]) == CORPUS
    assert cited(out["named"]) == cited(plain)
    assert tree(old_install / "index") == before  # nothing moved, nothing rewritten
    assert json.loads((old_install / "kbs.json").read_text(encoding="utf-8"))["kbs"]["default"]["index"] is None


@pytest.mark.slow  # four processes that each load the embedder
def test_a_knowledge_base_answers_only_from_its_own_notes(old_install: Path, fruit: dict, tmp_path: Path) -> None:
    own = set(NOTES)
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"id": "q1", "question": QUESTION, "gold": ["最后按评分轮换灌溉"]}, ensure_ascii=False) + "\n")
    out = side_by_side(
        old_install,
        answer=("ask", "--kb", "fruit", "--json", QUESTION),
        found=("search", "--kb", "fruit", "--json", "苔原缓存 温度"),
        default=("ask", "--json", QUESTION),
        info=("kb", "info", "fruit", "--json"),
        figures=("eval", "--kb", "fruit", "--qa", str(qa), "--json"),
        glossary=("glossary", "--kb", "fruit", "--json"),
    )
    answer, found, default, info, figures = (out[k] for k in ("answer", "found", "default", "info", "figures"))
    assert answer["citations"] and cited(answer) <= own
    assert "采样" in answer["text"] and "评分" in answer["text"]
    assert found["hits"] and {h["chunk"]["doc_id"] for h in found["hits"]} <= own
    assert found["hits"][0]["chunk"]["doc_id"] == "kbtest-moss.md"
    assert not cited(default) & own
    assert (info["documents"], info["backend"]) == (2, "local") and info["version"]
    assert Path(info["index"]).parent == Path(fruit["corpus"]).parent
    assert figures["n"] == 1 and figures["hit@1"] == 1.0
    assert not any("LoRA" in name for group in out["glossary"]["groups"] for name in group)


def test_ask_and_search_send_the_knowledge_base_to_a_running_api(
    old_install: Path, fruit: dict, engine, tmp_path: Path
) -> None:
    from rag.api import create_app

    settings = Settings(_env_file=None, data_dir=old_install, corpus_dir=CORPUS)
    with LiveServer(create_app(settings, engine=engine)) as live:
        answer = rag("ask", "--kb", "fruit", "--json", QUESTION, data_dir=old_install, api_url=live.url)
        assert "via the API" in answer.stderr
        assert cited(last_json(answer)) and cited(last_json(answer)) <= set(NOTES)
        found = last_json(rag("search", "--kb", "fruit", "--json", "苔原缓存", data_dir=old_install, api_url=live.url))
        assert {h["chunk"]["doc_id"] for h in found["hits"]} <= set(NOTES)
        default = last_json(rag("ask", "--json", QUESTION, data_dir=old_install, api_url=live.url))
        assert not cited(default) & set(NOTES)
        clean_error(rag("ask", "--kb", "nope", "x", data_dir=old_install, api_url=live.url), "nope", "404")


def test_bad_names_unknown_bases_and_refused_commands_are_one_clear_line(old_install: Path) -> None:
    refused: list[tuple[tuple[str, ...], dict[str, str], str]] = [  # (command, environment, the error names)
        (("ask", "--kb", "nope", "什么是 LoRA"), {}, "unknown knowledge base 'nope'"),
        (("ingest", "--kb", "Bad_Name"), {}, "invalid knowledge base name"),
        (("search", "--kb=-x", "q"), {}, "invalid knowledge base name"),
        (("kb", "create", "Work"), {}, "a-z, 0-9"),
        (("kb", "create", "tiny", "--chunk-size", "10"), {}, "chunk_size"),
        (("kb", "create", "elsewhere", "--corpus", str(old_install / "none")), {}, "not found"),
        (("kb", "info", "nope"), {}, "unknown knowledge base"),
        (("kb", "delete", "default", "--yes"), {}, "cannot be deleted"),
        (("kb", "rename", "default", "main"), {}, "cannot be renamed"),
        (("kb", "create", "one"), {"RAG_MAX_KBS": "1"}, "RAG_MAX_KBS"),
    ]
    # each is refused before it changes anything, so they run side by side, as many at a time as there are cores
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        procs = [pool.submit(rag, *args, data_dir=old_install, **env) for args, env, _ in refused]
        for proc, (_, _, needle) in zip(procs, refused, strict=True):
            clean_error(proc.result(), needle)


@pytest.fixture
def scratch(old_install: Path) -> Iterator[Path]:
    created = last_json(rag("kb", "create", "scratch", "--chunk-size", "300", "--json", data_dir=old_install))
    assert created["overrides"] == {"chunk_size": 300}
    yield Path(created["corpus"])
    rag("kb", "delete", "scratch", "--yes", data_dir=old_install)


def test_create_rename_and_delete_keep_the_notes(old_install: Path, scratch: Path) -> None:
    note = scratch / "keep.md"
    note.write_text("# keep\n", encoding="utf-8")
    listed = rag("kb", "list", data_dir=old_install)
    assert listed.returncode == 0 and "* default" in listed.stdout and "scratch" in listed.stdout
    clean_error(rag("kb", "delete", "scratch", data_dir=old_install), "--yes")  # no terminal to ask on
    index = Path(last_json(rag("kb", "info", "scratch", "--json", data_dir=old_install))["index"])
    lock = WriteLock(index)
    lock.acquire()
    try:
        clean_error(rag("kb", "delete", "scratch", "--yes", data_dir=old_install), "while its ingest runs")
    finally:
        lock.release()
    assert rag("kb", "rename", "scratch", "notes2", data_dir=old_install).returncode == 0
    deleted = rag("kb", "delete", "notes2", "--yes", data_dir=old_install)
    assert deleted.returncode == 0 and str(scratch) in deleted.stdout
    assert note.read_text(encoding="utf-8") == "# keep\n" and not index.exists()
    names = [row["name"] for row in last_json(rag("kb", "list", "--json", data_dir=old_install))["kbs"]]
    assert "notes2" not in names and "scratch" not in names and names[0] == "default"
