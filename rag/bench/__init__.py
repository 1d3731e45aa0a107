"""`rag bench`: embedder, ingest, retrieval-at-scale and HTTP benchmarks, written as JSON, PNG and Markdown.

Everything runs on real components in a temporary work directory; the configured data dir is only read
(converted model, embedding cache). Sections:

- embedder: passages/s and single-query latency per dtype (float32, bfloat16);
- ingest: full, no-change and one-note-edited runs of the corpus per dtype (the quick run ingests a few
  small notes only);
- retrieval: p50/p95 of the BM25 stage, the dense stage (query embedding, never cached, + FAISS) and the
  whole hybrid search, at the corpus size and at 10x, 100x and ~1M chunks. Larger indexes are built from
  the real chunks under new ids with perturbed real vectors (gaussian noise, renormalised), published
  through `IndexStore.publish` in a child process (so its peak RSS is its own); nothing is re-embedded;
- hnsw: recall@10 of HNSW against exact search at the largest size, per efSearch;
- http: POST /ask (extractive) against a real uvicorn server on loopback at concurrency 1, 8 and 32.

Figures are compared with the targets of the issue; they are reported, never asserted.

Modules: `run` (`run_bench`, the whole run), `plan` (`BenchPlan` and the questions asked), `probes` (machine,
memory and latency statistics), `ingest` (embedder and ingest sections), `scale` (scaled indexes, retrieval
and HNSW recall), `http` (the server and its load driver), `report` (targets, tables, Markdown, plot).
`matplotlib` and `psutil` come with the optional extra: `pip install -e '.[bench]'`.
"""
