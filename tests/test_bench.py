"""`rag bench --quick --json`: a smoke test that every figure is produced and every report written.

Timings are never asserted: this machine's speed is not the code's correctness.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.bench.plan import BenchPlan, bench_questions, unique_texts
from rag.bench.report import evaluate_targets
from rag.cli import app
from rag.config import Settings

STATS = ("n", "p50_ms", "p95_ms", "mean_ms")


def numbers(value: object, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number inside a JSON value, with its path."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield path, float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{path}[{i}]")


def assert_stats(stats: dict, n: int | None = None) -> None:
    assert set(STATS) <= set(stats)
    assert all(math.isfinite(stats[k]) and stats[k] >= 0 for k in STATS)
    assert stats["p50_ms"] <= stats["p95_ms"]
    if n is not None:
        assert stats["n"] == n


def test_unique_texts_never_repeat_a_request() -> None:
    texts = unique_texts(["a", "b", "c"], 2, 5)
    assert texts == ["c", "a（1）", "b（1）", "c（1）", "a（2）"]
    assert len(set(unique_texts(["a", "b"], 0, 50))) == 50
    assert len(bench_questions()) >= 100  # eval/dev.jsonl + eval/calibration.jsonl


def test_targets_are_judged_only_when_measured() -> None:
    results = {"settings": {"embed_dtype": "bfloat16"}, "machine": {"bf16_native": False}, "http": {
        "1": {"p95_ms": 80.0}, "8": {"requests_per_s": 12.0}, "32": {"errors": 0}}}
    targets = {t["name"]: t for t in evaluate_targets(results)}
    assert targets["/ask p95 at concurrency 1"]["met"] is True
    assert targets["/ask throughput at concurrency 8"]["met"] is False
    assert targets["/ask errors at concurrency 32"]["met"] is True
    assert targets["hybrid p95 at 1M chunks"]["met"] is None
    assert targets["full ingest speed-up bf16 vs fp32"]["met"] is None  # not native: not applicable


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quick_bench_produces_every_figure_and_report(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    out_dir = tmp_path / "results"
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    env = {"RAG_DATA_DIR": str(settings.data_dir), "RAG_CORPUS_DIR": str(settings.corpus_dir)}
    result = CliRunner().invoke(app, ["bench", "--quick", "--json", "--out", str(out_dir)], env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads(result.stdout.strip().splitlines()[-1])
    plan = BenchPlan.for_run(quick=True)

    bad = [(path, v) for path, v in numbers(results) if not math.isfinite(v)]
    assert not bad, bad
    assert results["meta"]["quick"] is True
    assert {"cpu", "cores", "ram_gb", "bf16_native"} <= set(results["machine"])

    for dtype in ("float32", "bfloat16"):
        emb = results["embedder"][dtype]
        assert emb["passages"] == plan.embed_passages and emb["passages_per_s"] > 0
        assert_stats(emb["query"], plan.query_samples)
        assert_stats(emb["query_1_thread"], plan.query_samples)
        assert len(emb["passages_per_s_rounds"]) == plan.repeats
        ingest = results["ingest"][dtype]
        assert ingest["subset"] is True and ingest["notes"] >= 1
        assert len(ingest["full_seconds_rounds"]) == plan.repeats
        full, same, edited = ingest["full"], ingest["no_change"], ingest["edited"]
        assert full["published"] and 0 < full["embedded"] <= full["chunks"]
        assert 0 <= full["outside_embedder_share"] <= 1
        assert not same["published"] and same["embedded"] == 0
        assert edited["published"] and 0 < edited["embedded"] < edited["chunks"]
    assert results["embedder"]["bf16_speedup"] > 0

    rows = results["retrieval"]
    assert [r["label"] for r in rows] == ["corpus", "x10"]
    assert rows[1]["chunks"] == 10 * rows[0]["chunks"]
    assert [r["keyword_backend"] for r in rows] == ["rank_bm25", "bm25s"]  # auto switches with size
    for row in rows:
        for mode in ("bm25", "dense", "hybrid"):
            assert_stats(row[mode], plan.retrieval_queries)
        assert row["disk_mb"]["total"] > 0 and row["build_peak_rss_mb"] > 0 and row["build_seconds"] >= 0

    hnsw = results["hnsw"]
    assert hnsw["chunks"] == rows[-1]["chunks"]
    assert set(hnsw["by_ef_search"]) == {str(ef) for ef in set(plan.ef_search) | {settings.hnsw_ef_search}}
    for figures in hnsw["by_ef_search"].values():
        assert 0 < figures["recall@10"] <= 1 and 0 < figures["passage_recall@10"] <= 1
        assert_stats(figures["search"], plan.retrieval_queries)

    for concurrency, requests in plan.http_requests.items():
        http = results["http"][str(concurrency)]
        assert http["requests"] == requests and http["errors"] == 0 and http["requests_per_s"] > 0
        assert_stats(http, requests)

    targets = {t["name"]: t for t in results["targets"]}
    assert len(targets) == 8
    for name, target in targets.items():
        if name != "hybrid p95 at 1M chunks":  # the quick run stops at 10x the corpus
            assert target["value"] is not None, name

    files = results["files"]
    assert {Path(p).name for p in files.values()} == {"quick.json", "quick.png", "quick.md"}
    assert json.loads(Path(files["json"]).read_text(encoding="utf-8"))["targets"] == results["targets"]
    assert Path(files["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = Path(files["md"]).read_text(encoding="utf-8")
    for name in ("pdf", "docx", "html"):
        assert results["formats"][name]["seconds_per_mb"] > 0 and results["formats"][name]["chars"] > 1000
    for title in ("## Embedder", "## Ingest", "## Conversion", "## Retrieval", "## HNSW", "## POST /ask", "## Targets"):
        assert title in markdown
    assert results["machine"]["cpu"] in markdown
