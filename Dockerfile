# The rag-notes API and UI, installed the same way as in the README (`pip install -e .`).
#   docker build -t rag-notes .
# The torch pin in pyproject.toml resolves from PyPI; for the smaller CPU-only wheel build with
#   --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
FROM python:3.11-slim

ARG PIP_EXTRA_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    RAG_DATA_DIR=/data \
    RAG_CORPUS_DIR=/corpus

RUN useradd --create-home --uid 1000 rag \
    && mkdir -p /app /data /corpus \
    && chown rag:rag /app /data /corpus

WORKDIR /app
COPY --chown=rag:rag pyproject.toml README.md ./
COPY --chown=rag:rag rag ./rag
COPY --chown=rag:rag ingest ./ingest
COPY --chown=rag:rag ui ./ui
RUN pip install -e .

USER rag
# Convert the default embedder now, into /data/models: a new named volume mounted at /data starts as a
# copy of it, so the first container start does not convert again (and `rag model` is a no-op if present).
RUN rag model

EXPOSE 8000 8501
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["sh", "-c", "rag ingest || echo 'rag ingest failed: serving without a new index' >&2; exec rag serve --host 0.0.0.0 --port 8000"]
