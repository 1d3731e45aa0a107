"""The running API, as `rag ask` and `rag search` use it: when `RAG_API_URL` answers /readyz, the question goes
there (with `RAG_API_KEY`) instead of loading the model and the index in process, which takes seconds.

Results come back as the API's JSON, the same dicts the command line prints for an in-process answer.
"""

from __future__ import annotations

from typing import Any

import httpx

from rag.config import Settings
from rag.errors import IndexNotReady, InvalidInput, NotFound, RagError, Unauthorized

PROBE_TIMEOUT = httpx.Timeout(2.0, connect=0.5)  # a server on this machine answers /readyz at once
REQUEST_TIMEOUT = httpx.Timeout(120.0, connect=2.0)


class RemoteApi:
    """A few calls to the API at `url`; errors become the project's own (one clear line in the CLI)."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT)

    @classmethod
    def if_ready(cls, settings: Settings) -> RemoteApi | None:
        """The API at `settings.api_url` when it answers /readyz with 200, else None (nothing listens, no index
        yet, not our API)."""
        key = settings.api_key.get_secret_value().strip() if settings.api_key else None
        remote = cls(settings.api_url, key or None)
        try:
            response = remote._http.get("/readyz", timeout=PROBE_TIMEOUT)
            if response.status_code == 200 and response.json().get("status") in ("ready", "degraded"):
                return remote
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        remote.close()
        return None

    def close(self) -> None:
        self._http.close()

    def ask(
        self, question: str, *, top_k: int | None, mode: str, explain: bool = False, kb: str | None = None
    ) -> dict[str, Any]:
        """POST /ask: the answer as JSON. Without `kb` the API answers from its default knowledge base."""
        body: dict[str, Any] = {"question": question, "mode": mode, "explain": explain}
        if top_k:
            body["top_k"] = top_k
        if kb:
            body["kb"] = kb
        return self._post("/ask", body)

    def search(
        self, query: str, *, top_k: int | None, mode: str, explain: bool, kb: str | None = None
    ) -> dict[str, Any]:
        """POST /search: ranked passages and the relevance decision as JSON."""
        body: dict[str, Any] = {"query": query, "mode": mode, "explain": explain}
        if top_k:
            body["top_k"] = top_k
        if kb:
            body["kb"] = kb
        return self._post("/search", body)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise RagError(f"the API at {self.url} did not answer ({type(exc).__name__}); retry, or use --local") from exc
        if response.is_success:
            return response.json()
        try:
            error = response.json().get("error") or {}
            message = str(error.get("message") or response.reason_phrase)
        except (ValueError, AttributeError):
            message = response.reason_phrase
        status = response.status_code
        if status == 401:
            raise Unauthorized(f"the API at {self.url} refused the key (401): set RAG_API_KEY, or use --local")
        kind = {400: InvalidInput, 404: NotFound, 422: InvalidInput, 503: IndexNotReady}.get(status, RagError)
        raise kind(f"{message} (API at {self.url}, {status})")
