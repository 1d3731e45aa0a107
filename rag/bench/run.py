"""`run_bench`: every section of the benchmark in turn in a temporary work directory, then the reports."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.bench.formats import bench_formats
from rag.bench.http import bench_http
from rag.bench.ingest import bench_embedder, bench_ingest, ingest_base, sample_passages
from rag.bench.plan import ONE_MILLION, BenchPlan, Progress, bench_questions
from rag.bench.probes import check_bench_extra, machine_info, peak_rss_mb
from rag.bench.report import evaluate_targets, write_reports
from rag.bench.scale import bench_scale
from rag.config import Settings

if TYPE_CHECKING:
    from rag.embedding import SentenceTransformerEmbedder

DEFAULT_OUT_DIR = Path("benchmarks/results")


def _load_embedder(settings: Settings, dtype: str) -> tuple[SentenceTransformerEmbedder, float]:
    """The configured model in `dtype` without a query cache (every query is embedded); load seconds."""
    from rag.embedding import load_embedder

    started = time.perf_counter()
    embedder = load_embedder(settings, dtype=dtype, cache_size=0)
    return embedder, time.perf_counter() - started



def run_bench(
    settings: Settings,
    *,
    quick: bool = False,
    out_dir: Path = DEFAULT_OUT_DIR,
    progress: Progress | None = None,
    max_chunks: int = ONE_MILLION + 10_000,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Run every section, write the reports into `out_dir`, return the results."""
    from rag.embedding import resolve_dtype

    check_bench_extra()
    loads: list[list[Any]] = []

    def say(message: str) -> None:  # also samples the load average: other work on the machine skews figures
        loads.append([message, round(os.getloadavg()[0], 2)])
        if progress is not None:
            progress(message)

    plan = BenchPlan.for_run(quick)
    started = time.perf_counter()
    dtype = resolve_dtype(settings.embed_dtype)
    results: dict[str, Any] = {
        "meta": {"quick": quick, "repeats": plan.repeats, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "machine": machine_info(),
        "settings": {
            "embed_dtype": dtype, "embed_dtype_setting": settings.embed_dtype,
            "embed_model_id": None, "keyword_backend": settings.keyword_backend,
            "vector_index": settings.vector_index, "hnsw_m": settings.hnsw_m,
            "hnsw_ef_search": settings.hnsw_ef_search, "top_k": settings.top_k,
            "candidates": settings.candidates, "embed_batch_size": settings.embed_batch_size,
        },
    }
    with tempfile.TemporaryDirectory(prefix="rag-bench-", dir=work_dir) as tmp:
        work = Path(tmp)
        passages = sample_passages(settings, plan.embed_passages)
        questions = bench_questions(passages)
        dtypes = ("float32", "bfloat16")
        embedders: dict[str, SentenceTransformerEmbedder] = {}
        load_seconds: dict[str, float] = {}
        for each in dtypes:
            say(f"embedder {each}: loading")
            embedders[each], load_seconds[each] = _load_embedder(settings, each)
        # fp32 and bf16 take turns, `repeats` rounds; the best round of each is reported (other processes
        # on the machine only ever slow a run down) and every round is kept in the JSON
        emb_runs: dict[str, list[dict[str, Any]]] = {d: [] for d in dtypes}
        ingest_runs: dict[str, list[dict[str, Any]]] = {d: [] for d in dtypes}
        for round_ in range(plan.repeats):
            for each in dtypes:
                say(f"embedder {each}: {len(passages)} passages, {plan.query_samples} queries (round {round_ + 1})")
                emb_runs[each].append(bench_embedder(embedders[each], passages, questions[: plan.query_samples]))
            for each in dtypes:
                say(f"ingest {each} (round {round_ + 1})")
                ingest_runs[each].append(
                    bench_ingest(settings, embedders[each], work / f"ingest-{each}-{round_}", plan.ingest_max_bytes)
                )
        results["embedder"] = {}
        results["ingest"] = {}
        for each in dtypes:
            best = max(emb_runs[each], key=lambda r: r["passages_per_s"])
            results["embedder"][each] = {
                "load_seconds": round(load_seconds[each], 2), **best,
                "passages_per_s_rounds": [r["passages_per_s"] for r in emb_runs[each]],
            }
            best = min(ingest_runs[each], key=lambda r: r["full"]["seconds"])
            results["ingest"][each] = {**best, "full_seconds_rounds": [r["full"]["seconds"] for r in ingest_runs[each]]}
        for each in dtypes:
            if each != dtype:  # keep one model in memory from here on
                del embedders[each]
        e = results["embedder"]
        e["bf16_speedup"] = round(e["bfloat16"]["passages_per_s"] / e["float32"]["passages_per_s"], 2)
        embedder = embedders[dtype]
        results["settings"]["embed_model_id"] = embedder.model_id

        say("formats: PDF, Word and HTML conversion per MB")
        results["formats"] = bench_formats(settings.corpus_dir, target_mb=0.25 if quick else 1.0)

        say("retrieval: base index of the corpus")
        seeds = [settings.cache_dir / "embeddings.sqlite"]
        if not plan.ingest_max_bytes:
            seeds.insert(0, work / f"ingest-{dtype}-0" / "data" / "cache" / "embeddings.sqlite")
        base = ingest_base(settings, embedder, work, seeds)
        results["retrieval"], results["hnsw"] = bench_scale(
            settings, base, embedder, plan, questions[: plan.retrieval_queries], work, say, max_chunks
        )
        say("http: /ask at concurrency " + ", ".join(map(str, plan.http_requests)))
        results["http"] = bench_http(base, plan, questions, work)

    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["loadavg_by_stage"] = loads
    results["meta"]["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    results["meta"]["peak_rss_mb"] = peak_rss_mb()
    results["targets"] = evaluate_targets(results)
    write_reports(results, out_dir)
    return results
