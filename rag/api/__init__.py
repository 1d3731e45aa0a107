"""The HTTP API, an edge: `create_app(settings)` builds the FastAPI app around one `Engine`.

`app` wires it together; `routes` holds the handlers, `schemas` the request and response models, `workers`
the thread pool and streams, `openai` the OpenAI-compatible translation, `middleware` the ASGI layers and
`responses` the JSON, error and event formatting.
"""

from rag.api.app import create_app

__all__ = ["create_app"]
