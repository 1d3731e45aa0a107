"""The HTTP API, an edge: `create_app(settings)` builds the FastAPI app around an `EnginePool` (one `Engine`
per knowledge base, loaded on first use).

`app` wires it together; `routes` holds the handlers, `kbs` those of knowledge bases, `knowledge` resolves a
request's `kb`, `schemas` the request and response models, `workers`
the thread pool, streams and time budget, `openai` the OpenAI-compatible translation, `middleware` the ASGI
layers, `responses` the JSON, error and event formatting, `shaping` the sanitising of returned text, `docs` the
OpenAPI document and `server` the uvicorn setup of `rag serve`.
"""

from rag.api.app import create_app

__all__ = ["create_app"]
