"""The benchmark's report: the issue's targets judged, the summary tables, Markdown, the latency plot, files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rag.bench.probes import bench_dependency


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured value and whether it was met (None = not measured)."""
    dtype = results["settings"]["embed_dtype"]
    ingest = results.get("ingest", {})
    retrieval = {
        row["label"]: row for row in results.get("retrieval", [])
        if "hybrid" in row and row.get("backend", "local") == "local"
    }
    http = results.get("http", {})
    native = results["machine"]["bf16_native"]

    def get(mapping: Any, *keys: str) -> Any:
        for key in keys:
            if not isinstance(mapping, dict) or key not in mapping:
                return None
            mapping = mapping[key]
        return mapping

    fp32 = get(ingest, "float32", "full", "seconds")
    bf16 = get(ingest, "bfloat16", "full", "seconds")
    rows = [
        ("full ingest speed-up bf16 vs fp32", fp32 / bf16 if fp32 and bf16 else None, ">=", 2.5, "x",
         "where bf16 is native" + ("" if native else " (not native here: not applicable)")),
        ("full ingest time outside the embedder", get(ingest, dtype, "full", "outside_embedder_share"),
         "<=", 0.20, "share", dtype),
        ("no-change re-ingest", get(ingest, dtype, "no_change", "seconds"), "<=", 2.0, "s", dtype),
        ("hybrid p95 at the corpus size", get(retrieval, "corpus", "hybrid", "p95_ms"), "<=", 30.0, "ms",
         "incl. query embedding"),
        ("hybrid p95 at 1M chunks", get(retrieval, "1M", "hybrid", "p95_ms"), "<=", 150.0, "ms",
         "incl. query embedding"),
        ("/ask p95 at concurrency 1", get(http, "1", "p95_ms"), "<=", 100.0, "ms", "extractive"),
        ("/ask throughput at concurrency 8", get(http, "8", "requests_per_s"), ">=", 20.0, "req/s", ""),
        ("/ask errors at concurrency 32", get(http, "32", "errors"), "<=", 0, "errors", ""),
    ]
    out = []
    for name, value, op, target, unit, note in rows:
        met = None
        if value is not None and not (name.startswith("full ingest speed-up") and not native):
            met = bool(value >= target) if op == ">=" else bool(value <= target)
        out.append({
            "name": name, "value": None if value is None else round(float(value), 3), "op": op,
            "target": target, "unit": unit, "met": met, "note": note,
        })
    return out


# ----------------------------------------------------------------------------------------------- reports


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:,.{digits}f}"
    return str(value)


def summary_tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table of the report; shared by the CLI and the Markdown file."""
    tables = []
    emb = results.get("embedder", {})
    rows = [
        [dtype, _fmt(v["load_seconds"], 2), _fmt(v["passages"]), _fmt(v["passages_per_s"]),
         f"{_fmt(v['query']['p50_ms'])} / {_fmt(v['query']['p95_ms'])}",
         f"{_fmt(v['query_1_thread']['p50_ms'])} / {_fmt(v['query_1_thread']['p95_ms'])}"]
        for dtype, v in emb.items() if isinstance(v, dict)
    ]
    threads = next((v["torch_threads"] for v in emb.values() if isinstance(v, dict)), "?")
    tables.append((
        "Embedder",
        ["dtype", "load s", "passages", "passages/s", f"query ms p50 / p95 ({threads} threads)",
         "query ms p50 / p95 (1 thread)"],
        rows,
    ))

    rows = []
    for dtype, v in results.get("ingest", {}).items():
        if not isinstance(v, dict) or "full" not in v:
            continue
        for run in ("full", "no_change", "edited"):
            r = v[run]
            rows.append([
                dtype, run.replace("_", " "), _fmt(r["seconds"], 2), _fmt(r["chunks"]), _fmt(r["embedded"]),
                _fmt(r["chunks_per_s"]), _fmt(r["embed_passages_per_s"]),
                _fmt(100 * r["outside_embedder_share"]) + " %",
            ])
    tables.append((
        "Ingest", ["dtype", "run", "seconds", "chunks", "embedded", "chunks/s", "embed passages/s",
                   "outside embedder"], rows,
    ))

    rows = [
        [name, _fmt(v["mb"], 2), _fmt(v["chars"]), _fmt(v["seconds"], 2), _fmt(v["seconds_per_mb"], 2),
         _fmt(v["chars_per_s"])]
        for name, v in results.get("formats", {}).items()
    ]
    tables.append((
        "Conversion (the bundled notes rendered as each format, one process)",
        ["format", "MB", "characters out", "seconds", "seconds per MB", "characters/s"], rows,
    ))

    rows = []
    for r in results.get("retrieval", []):
        backend = r.get("backend", "local")
        if "skipped" in r:
            rows.append([backend, r["label"], _fmt(r["chunks"]), "skipped: " + r["skipped"]] + [""] * 12)
            continue
        recall = r.get("hnsw_recall@10")
        rows.append([
            backend, r["label"], _fmt(r["chunks"]), f"{r['keyword_backend']} + {r['vector_index']}",
            f"{_fmt(r['bm25']['p50_ms'])} / {_fmt(r['bm25']['p95_ms'])}",
            f"{_fmt(r['dense']['p50_ms'])} / {_fmt(r['dense']['p95_ms'])}",
            f"{_fmt(r['hybrid']['p50_ms'])} / {_fmt(r['hybrid']['p95_ms'])}",
            _fmt(r.get("hit@5"), 3), _fmt(r.get("mrr@10"), 3),
            _fmt(recall, 3) if recall is not None else ("exact" if r["vector_index"] == "flat" else "—"),
            _fmt(r["build_seconds"]), _fmt(r["disk_mb"]["total"]), _fmt(r["build_peak_rss_mb"], 0),
            _fmt(r.get("serve_rss_mb"), 0), _fmt(r["load_seconds"], 2), _fmt(r["load_verified_seconds"], 2),
        ])
    tables.append((
        "Retrieval (ms: p50 / p95; dev questions' hit@5 and MRR@10; real chunks among distractors)",
        ["backend", "size", "chunks", "indexes", "bm25", "dense", "hybrid", "hit@5", "MRR", "HNSW recall@10",
         "build s", "disk MB", "build peak RSS MB", "serving RSS +MB", "load s", "load+verify s"],
        rows,
    ))

    hnsw = results.get("hnsw")
    if hnsw:
        rows = [
            [ef, _fmt(v["recall@10"], 3), _fmt(v["search"]["p50_ms"], 2), _fmt(v["search"]["p95_ms"], 2)]
            for ef, v in hnsw["by_ef_search"].items()
        ]
        title = (f"HNSW vs exact at {hnsw['chunks']:,} chunks (M={hnsw['m']}, efConstruction="
                 f"{hnsw['ef_construction']}, {hnsw['source']}, built in {hnsw['build_seconds']} s)")
        tables.append((title, ["efSearch", "recall@10", "FAISS p50 ms", "FAISS p95 ms"], rows))

    http = results.get("http", {})
    rows = [
        [str(v["concurrency"]), _fmt(v["requests"]), _fmt(v["p50_ms"]), _fmt(v["p95_ms"]),
         _fmt(v["requests_per_s"]), _fmt(v["errors"]), _fmt(v["refused"])]
        for v in http.values() if isinstance(v, dict)
    ]
    tables.append(("POST /ask (extractive, loopback)",
                   ["concurrency", "requests", "p50 ms", "p95 ms", "req/s", "errors", "refused"], rows))

    rows = [
        [t["name"], _fmt(t["value"], 3) + f" {t['unit']}", f"{t['op']} {t['target']} {t['unit']}",
         {True: "met", False: "missed", None: "not measured"}[t["met"]], t["note"]]
        for t in results.get("targets", [])
    ]
    tables.append(("Targets", ["figure", "value", "target", "status", "note"], rows))
    return tables


def machine_line(results: dict[str, Any]) -> str:
    """One line naming the machine and how busy it was while the benchmark ran."""
    m = results["machine"]
    loads = [x[1] for x in m.get("loadavg_by_stage", [])] or [math.nan]
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, bf16 native: {_fmt(m['bf16_native'])} "
        f"({', '.join(m['cpu_flags'])}); 1-minute load average over the stages {min(loads):.2f}–"
        f"{max(loads):.2f} (start {m['loadavg_start']}, end {m.get('loadavg_end')}); Python {m['python']}, "
        f"torch {m['torch']}, faiss {m['faiss']}"
    )


def to_markdown(results: dict[str, Any]) -> str:
    """The report as Markdown tables (for benchmarks/results/latest.md and the README)."""
    meta = results["meta"]
    s = results["settings"]
    lines = [
        f"# Benchmark ({'quick' if meta['quick'] else 'full'} run, {meta['finished_at']})",
        "",
        f"Machine: {machine_line(results)}.",
        "",
        f"Settings: embed dtype {s['embed_dtype']} (setting {s['embed_dtype_setting']}), keyword backend "
        f"{s['keyword_backend']}, vector index {s['vector_index']} (HNSW M={s['hnsw_m']}, efSearch="
        f"{s['hnsw_ef_search']}), top_k {s['top_k']}, candidates {s['candidates']}. Total "
        f"{meta['seconds']:.0f} s, peak RSS of the benchmark process {meta['peak_rss_mb']:.0f} MB.",
        "",
        "Retrieval: *bm25* and *dense* are the two stages inside a hybrid search (bm25 = tokenise, expand "
        "aliases, BM25 top-N; dense = embed the query, never cached, + FAISS top-N); *hybrid* is the whole "
        "`Retriever.search` incl. fusion, chunk fetch, merging and the relevance gate. Sizes above the corpus "
        "hold the real chunks at random rows among distractors: vectors drawn from a Gaussian fitted to the real "
        "chunk vectors (mean, full covariance; L2-normalised), texts drawn from the corpus's unigram distribution "
        "with real chunk lengths. hit@5 and MRR@10 are the dev questions' (eval/dev.jsonl), scored as `rag eval` "
        "does; HNSW recall@10 is against exact search for the timed questions' vectors. Build peak RSS is the "
        "build process tree's (a Milvus Lite server included), sampled; serving RSS is what loading and querying "
        "added to the benchmark process and its children.",
        "",
        f"Embedder and ingest: fp32 and bf16 take turns for {meta.get('repeats', 1)} round(s); the best "
        "round of each is shown (all rounds are in the JSON). Query latency is per single query, never cached.",
        "",
    ]
    for title, header, rows in summary_tables(results):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Retrieval latency (p95 solid, p50 dashed) against corpus size, per mode (local) and Milvus Lite hybrid."""
    matplotlib = bench_dependency("matplotlib")
    matplotlib.use("Agg")
    plt = bench_dependency("matplotlib.pyplot")

    all_rows = [r for r in results.get("retrieval", []) if "hybrid" in r]
    rows = [r for r in all_rows if r.get("backend", "local") == "local"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for mode, color in (("bm25", "tab:blue"), ("dense", "tab:orange"), ("hybrid", "tab:green")):
        xs = [r["chunks"] for r in rows]
        ax.plot(xs, [r[mode]["p95_ms"] for r in rows], marker="o", color=color, label=f"{mode} p95")
        ax.plot(xs, [r[mode]["p50_ms"] for r in rows], ls="--", marker=".", color=color, alpha=0.6,
                label=f"{mode} p50")
    lite = [r for r in all_rows if r.get("backend") == "milvus"]
    if lite:
        xs = [r["chunks"] for r in lite]
        ax.plot(xs, [r["hybrid"]["p95_ms"] for r in lite], marker="s", color="tab:red", label="Milvus Lite hybrid p95")
        ax.plot(xs, [r["hybrid"]["p50_ms"] for r in lite], ls="--", marker=".", color="tab:red", alpha=0.6,
                label="Milvus Lite hybrid p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("chunks in the index")
    ax.set_ylabel("latency per query (ms)")
    ax.set_title(f"Retrieval latency vs corpus size\n{results['machine']['cpu']}, "
                 f"{results['machine']['cores']} cores, embed {results['settings']['embed_dtype']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_reports(results: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Write <name>.json, <name>.png and <name>.md (name: latest, or quick for --quick) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "quick" if results["meta"]["quick"] else "latest"
    paths = {kind: out_dir / f"{name}.{kind}" for kind in ("json", "png", "md")}
    results["files"] = {kind: str(p) for kind, p in paths.items()}
    png_tmp = paths["png"].with_name(paths["png"].name + ".tmp.png")
    plot(results, png_tmp)
    os.replace(png_tmp, paths["png"])
    _write_atomic(paths["md"], to_markdown(results).encode("utf-8"))
    _write_atomic(paths["json"], json.dumps(results, ensure_ascii=False, indent=2).encode("utf-8"))
    return results["files"]

