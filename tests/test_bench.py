"""`rag bench --quick --json`: a smoke test that every figure is produced and every report written.

Timings are never asserted: this machine's speed is not the code's correctness.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rag.bench.distractors import ScaledCorpus, UnigramModel, fit_gaussian, sample_distractors
from rag.bench.plan import BenchPlan, bench_questions, size_label, unique_texts
from rag.bench.report import evaluate_targets
from rag.cli import app
from rag.config import Settings
from rag.types import Chunk, Document

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


def _anisotropic_unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors with a shared mean direction and correlated dimensions, like sentence embeddings."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((dim, dim)) * np.linspace(1.0, 0.05, dim)
    x = 1.5 * rng.standard_normal(dim) + rng.standard_normal((n, dim)) @ mix.T * 0.3
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_distractors_follow_the_fitted_distribution() -> None:
    real = _anisotropic_unit_vectors(600, 32, seed=3)
    mean, chol = fit_gaussian(real)
    assert np.allclose(mean, real.mean(axis=0)) and np.allclose(chol @ chol.T, np.cov(real.T), atol=1e-5)

    out = sample_distractors(mean, chol, 70_000, seed=7)  # more than one sampling block
    assert out.shape == (70_000, 32) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # normalising moves the samples little: their moments stay those of the real vectors
    assert np.abs(out.mean(axis=0) - mean).max() < 0.02
    cov = np.cov(real.T)
    assert np.linalg.norm(np.cov(out.T) - cov) < 0.1 * np.linalg.norm(cov)
    # not copies: no distractor is a near-duplicate of a real vector
    assert (out[:2000] @ real.T).max() < 0.999

    assert np.array_equal(out[:100], sample_distractors(mean, chol, 100, seed=7))  # seeded
    assert not np.array_equal(out[:100], sample_distractors(mean, chol, 100, seed=8))
    with pytest.raises(ValueError):
        fit_gaussian(real[:1])


def test_distractor_texts_follow_the_unigram_model_and_keep_the_real_chunks() -> None:
    tokens = [["注意力", "机制", "attention"], ["梯度", "下降", "梯度"], ["注意力", "梯度"]] * 4
    docs = [Document(doc_id=f"n{i}.md", title=f"n{i}", text="x", sha256="0", encoding="utf-8") for i in range(3)]
    chunks = [
        Chunk(chunk_id=f"c{i}", doc_id=f"n{i % 3}.md", heading_path=(), start=0, end=1, text="x", index_text="x")
        for i in range(12)
    ]
    model = UnigramModel.fit(tokens)
    ids, offsets = model.sample(5_000, seed=1)
    assert offsets[-1] == ids.size and set(np.diff(offsets).tolist()) <= {2, 3}
    freq = np.bincount(ids, minlength=len(model.vocab)) / ids.size
    assert np.abs(freq - model.probs).max() < 0.01
    assert model.probs[model.vocab.index("梯度")] == pytest.approx(3 / 8)

    corpus = ScaledCorpus(chunks, tokens, docs, 200, seed=5)
    rows = corpus.real_rows.tolist()
    assert len(rows) == 12 and len(set(rows)) == 12 and rows != list(range(12))  # spread among distractors
    assert [corpus.chunks[r].chunk_id for r in rows] == [c.chunk_id for c in chunks]
    assert [corpus.tokens[r] for r in rows] == tokens
    built = list(corpus.chunks)
    assert len(built) == 200 and len({c.chunk_id for c in built}) == 200
    by_id = {d.doc_id: d for d in corpus.documents}
    assert {c.doc_id for c in built} <= set(by_id)
    for row, chunk in enumerate(built):
        if row not in rows:  # a distractor: its text is its tokens, and exactly its document's slice
            assert by_id[chunk.doc_id].text[chunk.start : chunk.end] == chunk.text
            assert set(corpus.tokens[row]) <= set(model.vocab)
    assert [c.text for c in ScaledCorpus(chunks, tokens, docs, 200, seed=5).chunks] == [c.text for c in built]
    assert size_label(200, 12) == "200" and size_label(1_000_000, 637) == "1M" and size_label(12, 12) == "corpus"


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
    local = [r for r in rows if r["backend"] == "local"]
    lite = [r for r in rows if r["backend"] == "milvus"]
    assert [r["label"] for r in local] == ["corpus", "6k"] and [r["label"] for r in lite] == ["corpus"]
    assert local[1]["chunks"] == 6_000 and local[1]["real_chunks"] == local[0]["chunks"] == lite[0]["chunks"]
    assert [r["keyword_backend"] for r in local] == ["rank_bm25", "bm25s"]  # auto switches with size
    for row in rows:
        for mode in ("bm25", "dense", "hybrid"):
            assert_stats(row[mode], plan.retrieval_queries)
        assert row["disk_mb"]["total"] > 0 and row["build_peak_rss_mb"] > 0 and row["build_seconds"] >= 0
        assert row["dev_questions"] >= 40 and 0 <= row["mrr@10"] <= row["hit@5"] <= 1
    # the real chunks are still found among the distractors, by either backend
    assert min(r["hit@5"] for r in rows) >= 0.5

    hnsw = results["hnsw"]
    assert hnsw["chunks"] == local[-1]["chunks"]
    assert set(hnsw["by_ef_search"]) == {str(ef) for ef in set(plan.ef_search) | {settings.hnsw_ef_search}}
    for figures in hnsw["by_ef_search"].values():
        assert 0 < figures["recall@10"] <= 1
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
