"""Prometheus metrics of one API app: requests by route template, latency, ingest durations, readiness.

Each app gets its own `CollectorRegistry`, so several apps in one process (tests) never share counters.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INGEST_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
UNMATCHED_ROUTE = "<unmatched>"


class Metrics:
    """The counters and histograms the API exports at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rag_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rag_http_request_duration_seconds",
            "Time from request start to the end of the response body, by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "rag_http_requests_in_flight", "Requests being handled right now.", registry=self.registry
        )
        self.ingest = Histogram(
            "rag_ingest_duration_seconds",
            "Duration of background ingest jobs, by outcome.",
            ["outcome"],
            buckets=INGEST_BUCKETS,
            registry=self.registry,
        )
        self.index_ready = Gauge(
            "rag_index_ready", "1 when an index is loaded and queries are served.", registry=self.registry
        )

    def observe_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Count one finished request; `route` is the template ("/documents/{doc_id:path}"), not the path."""
        label = route or UNMATCHED_ROUTE
        self.requests.labels(method, label, str(status)).inc()
        self.latency.labels(method, label).observe(seconds)

    def observe_ingest(self, outcome: str, seconds: float) -> None:
        """Record one finished ingest job ("succeeded" or "failed")."""
        self.ingest.labels(outcome).observe(seconds)

    def track_ready(self, is_ready: Callable[[], bool]) -> None:
        """Report readiness by asking `is_ready` at every scrape."""
        self.index_ready.set_function(lambda: 1.0 if is_ready() else 0.0)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
