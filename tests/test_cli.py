"""The installed `rag` console script, run as a real subprocess against private data dirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import CORPUS, ROOT

from rag.config import Settings

RAG = Path(sys.executable).with_name("rag")
EVAL_KEYS = {
    "hit@1",
    "hit@5",
    "hit@10",
    "mrr@10",
    "refusal_accuracy",
    "false_refusal_rate",
    "keyword_coverage",
    "citation_precision",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_chinese_p95_ms",
    "latency_english_p95_ms",
    "n",
}


def rag(*args: str, data_dir: Path, cwd: Path, corpus: Path = CORPUS) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= {
        "RAG_DATA_DIR": str(data_dir),
        "RAG_CORPUS_DIR": str(corpus),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "COLUMNS": "200",
        "RAG_API_URL": "http://127.0.0.1:9",  # nothing listens: ask and search load the index in process
    }
    return subprocess.run(
        [str(RAG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr[-3000:]
    data = json.loads(lines[-1])
    assert isinstance(data, dict)
    return data


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit, one `error:` line on stderr naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, corpus_index) -> Path:
    """A data dir sharing the converted model and a copy of the embedding cache, not yet ingested."""
    data = tmp_path_factory.mktemp("cli") / "data"
    (data / "cache").mkdir(parents=True)
    os.symlink(base_settings.models_dir.resolve(), data / "models")
    shutil.copy(base_settings.cache_dir / "embeddings.sqlite", data / "cache" / "embeddings.sqlite")
    return data


@pytest.fixture(scope="module")
def ingested(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`rag ingest --json` on the bundled corpus: its parsed summary."""
    return last_json(rag("ingest", "--json", data_dir=data_dir, cwd=tmp_path_factory.mktemp("cwd")))


@pytest.fixture(scope="module")
def answered(
    ingested: dict, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    """`rag search`, `rag ask` and `rag eval` on the ingested data dir, each in its own working directory, run
    as many at a time as there are cores (each spends most of its time importing sentence-transformers and
    loading the model on one core): the finished processes, by command."""
    work = tmp_path_factory.mktemp("answered")
    questions = work / "questions.jsonl"
    lines = (ROOT / "eval" / "dev.jsonl").read_text(encoding="utf-8").splitlines()[:2]
    lines.append(json.dumps({"id": "u1", "question": "红烧肉怎么做才好吃？", "answerable": False}))
    questions.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    commands = {
        "search": ("search", "灾难性遗忘", "--json", "-k", "3"),
        "ask": ("ask", "LoRA 微调里最重要的超参数是什么？"),
        "eval": ("eval", "--qa", str(questions), "--json"),
    }
    for name in commands:
        (work / name).mkdir()
    with ThreadPoolExecutor(max_workers=min(len(commands), os.cpu_count() or 1)) as pool:
        running = {name: pool.submit(rag, *args, data_dir=data_dir, cwd=work / name) for name, args in commands.items()}
        return {name: proc.result() for name, proc in running.items()}


def test_help_lists_the_commands(tmp_path: Path) -> None:
    proc = rag("--help", data_dir=tmp_path / "data", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for command in ("model", "ingest", "search", "ask", "eval", "glossary", "serve", "ui"):
        assert command in proc.stdout


def test_model_prints_a_loadable_directory_last(tmp_path: Path, data_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    proc = rag("model", data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.splitlines()[-1].strip())
    assert path.is_dir() and path.is_relative_to(data_dir / "models")
    model = SentenceTransformer(str(path), device="cpu")
    vector = model.encode(["query: 灾难性遗忘"], normalize_embeddings=True)
    assert vector.shape == (1, 384)


def test_ingest_json_summary(ingested: dict) -> None:
    assert {"added", "changed", "removed", "skipped", "chunks", "embedded", "seconds"} <= set(ingested)
    assert sorted(ingested["added"]) == sorted(p.name for p in CORPUS.iterdir())
    assert ingested["changed"] == [] and ingested["removed"] == [] and ingested["skipped"] == []
    assert ingested["chunks"] > 0 and ingested["embedded"] == 0  # every vector came from the copied cache
    assert ingested["published"] is True and isinstance(ingested["seconds"], float)


def test_search_json_returns_hits(answered: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = last_json(answered["search"])  # rag search 灾难性遗忘 --json -k 3
    assert result["query"] == "灾难性遗忘" and result["mode"] == "hybrid"
    assert len(result["hits"]) == 3
    assert "灾难性遗忘" in result["hits"][0]["chunk"]["text"]
    assert [h["rank"] for h in result["hits"]] == [1, 2, 3]
    assert result["gate"]["answerable"] is True


def test_ask_prints_an_answer_and_a_sources_table(answered: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = answered["ask"]  # rag ask "LoRA 微调里最重要的超参数是什么？"
    assert proc.returncode == 0, proc.stderr
    assert "秩" in proc.stdout
    assert "sources" in proc.stdout and "[1]" in proc.stdout
    assert "[n]" in proc.stdout  # stdout is data, never Rich markup
    assert "deep-learning-glossary" in proc.stdout and "LoRA" in proc.stdout
    assert "extractive" in proc.stdout


def test_eval_json_figures(answered: dict[str, subprocess.CompletedProcess[str]]) -> None:
    figures = last_json(answered["eval"])  # rag eval on the first two dev questions and one unanswerable
    assert set(figures) >= EVAL_KEYS
    assert figures["n"] == 3
    assert figures["refusal_accuracy"] == 1.0
    assert figures["hit@10"] == 1.0
    assert (
        0.0 <= figures["false_refusal_rate"] <= 1.0 and figures["latency_p95_ms"] >= figures["latency_p50_ms"]
    )


def test_empty_question_is_a_clear_error(ingested: dict, data_dir: Path, tmp_path: Path) -> None:
    assert_clean_error(rag("ask", "", data_dir=data_dir, cwd=tmp_path), "empty")


def test_search_without_an_index_says_to_ingest(tmp_path: Path) -> None:
    assert_clean_error(rag("search", "x", data_dir=tmp_path / "data", cwd=tmp_path), "rag ingest")


def test_eval_file_errors_are_clear(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # a name that looks like Rich markup is printed verbatim, not parsed
    missing = assert_clean_error(
        rag("eval", "--qa", "missing[/b].jsonl", data_dir=data, cwd=tmp_path), "not found"
    )
    assert "missing[/b].jsonl" in missing
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"question": "什么是 LoRA？", "gold": ["秩"]}, ensure_ascii=False)
        + "\n"
        + '["not", "a record"]\n',
        encoding="utf-8",
    )
    assert_clean_error(rag("eval", "--qa", str(bad), data_dir=data, cwd=tmp_path), "bad.jsonl:2")
    bad.write_text('{"question": "ok"}\n\n{"question": \n', encoding="utf-8")
    assert_clean_error(rag("eval", "--qa", str(bad), data_dir=data, cwd=tmp_path), "bad.jsonl:3")


def _rag_with_env(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= {"RAG_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", **extra}
    return subprocess.run([str(RAG), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_bad_setting_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    result = _rag_with_env(tmp_path, "ask", "x", RAG_TOP_K="many", RAG_API_KEY="secret-value-123")
    assert result.returncode == 2, result.stderr
    assert "RAG_TOP_K" in result.stderr and "integer" in result.stderr
    assert "Traceback" not in result.stderr and "secret-value-123" not in result.stderr + result.stdout


def test_a_mistyped_rag_variable_is_named_in_a_warning(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RAG_GATE_TRESHOLD=0.5\n", encoding="utf-8")
    result = _rag_with_env(tmp_path, "ask", "", RAG_TOPK="3")
    assert result.returncode == 2 and "the question is empty" in result.stderr  # the command itself ran
    assert "RAG_TOPK is not a setting" in result.stderr and "did you mean RAG_TOP_K" in result.stderr
    assert "RAG_GATE_TRESHOLD is not a setting" in result.stderr  # from .env too
    assert "RAG_DATA_DIR" not in result.stderr
