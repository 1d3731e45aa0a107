"""`rag bench`: embedder, ingest, retrieval-at-scale and HTTP benchmarks, written as JSON, PNG and Markdown.

Everything runs on real components in a temporary work directory; the configured data dir is only read
(converted model, embedding cache). Sections:

- embedder: passages/s and single-query latency per dtype (float32, bfloat16);
- ingest: full, no-change and one-note-edited runs of the corpus per dtype (the quick run ingests a few
  small notes only);
- retrieval: per index backend (local files; Milvus Lite) at the corpus size, 10k, 100k and 1M chunks: build
  time, the build's peak RSS, p50/p95 of the BM25 stage, the dense stage (query embedding, never cached, +
  search) and the whole hybrid search, and the dev questions' hit@5 and MRR@10 through the real retriever.
  Larger indexes hold the real chunks among distractors drawn from models fitted to the corpus (a Gaussian
  of the chunk vectors, the unigram distribution of its tokens), published through the backend's store in a
  child process; nothing is re-embedded. Lite sizes whose build would not fit in memory or time are skipped
  with the reason;
- hnsw: recall@10 of HNSW against exact search per efSearch at the largest local size;
- http: POST /ask (extractive) against a real uvicorn server on loopback at concurrency 1, 8 and 32.

Figures are compared with the targets of the issue; they are reported, never asserted.

Modules: `run` (`run_bench`, the whole run), `plan` (`BenchPlan` and the questions asked), `probes` (machine,
memory and latency statistics), `ingest` (embedder and ingest sections), `distractors` (the filler of the
scaled indexes), `scale` (building them per backend, HNSW recall), `measure` (search latency and dev quality
on one), `http` (the server and its load driver), `report` (targets, tables, Markdown, plot).
`matplotlib` and `psutil` come with the optional extra: `pip install -e '.[bench]'`.
"""
