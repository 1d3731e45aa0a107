"""Background ingest jobs for the API: one at a time, with progress, a summary, and a hot index swap.

A job runs `run_ingest` in a worker thread. Queries keep being served from the loaded index meanwhile;
when the job has published a new version, `engine.reload()` swaps it in between requests.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from rag.config import Settings
from rag.engine import Engine
from rag.errors import IngestBusy, NotFound, RagError

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed"]
StageHook = Callable[[str], None]
Finished = Callable[[str, float], None]  # (outcome, seconds)


@dataclass
class IngestJob:
    """The state of one ingest job, as reported by GET /ingest/{id}."""

    job_id: str
    full: bool
    state: JobState = "queued"
    progress: dict[str, dict[str, int]] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    reloaded: bool = False  # True when the finished job swapped a new index in
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "full": self.full,
            "progress": {stage: dict(counts) for stage, counts in self.progress.items()},
            "summary": self.summary,
            "error": dict(self.error) if self.error else None,
            "reloaded": self.reloaded,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class IngestJobs:
    """Starts and tracks ingest jobs for one engine. At most one job is queued or running."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        on_finished: Finished | None = None,
        on_stage: StageHook | None = None,
        keep: int = 20,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self._on_finished = on_finished
        self._on_stage = on_stage
        self._keep = keep
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, IngestJob] = OrderedDict()
        self._threads: dict[str, threading.Thread] = {}

    def start(self, *, full: bool = False) -> dict[str, Any]:
        """Queue a job and start its worker; IngestBusy when one is already queued or running."""
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.active), None)
            if busy is not None:
                raise IngestBusy(f"ingest job {busy.job_id} is still {busy.state}; wait for it to finish")
            job = IngestJob(job_id=uuid.uuid4().hex, full=full)
            self._jobs[job.job_id] = job
            while len(self._jobs) > self._keep:
                self._jobs.popitem(last=False)
            thread = threading.Thread(target=self._run, args=(job,), name=f"ingest-{job.job_id[:8]}", daemon=True)
            self._threads = {k: t for k, t in self._threads.items() if t.is_alive()}
            self._threads[job.job_id] = thread
            snapshot = job.to_dict()
        thread.start()
        return snapshot

    def get(self, job_id: str) -> dict[str, Any]:
        """A snapshot of one job; NotFound for an unknown (or long forgotten) id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound(f"no ingest job {job_id!r}")
            return job.to_dict()

    def latest(self) -> dict[str, Any] | None:
        """The most recent job, if any."""
        with self._lock:
            return next(reversed(self._jobs.values())).to_dict() if self._jobs else None

    def wait(self, timeout: float | None = None) -> None:
        """Block until every started worker has finished (used at shutdown and in tests)."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)

    # --- worker ---------------------------------------------------------------------------------

    def _progress(self, job: IngestJob, stage: str, done: int, total: int) -> None:
        with self._lock:
            job.progress[stage] = {"done": int(done), "total": int(total)}

    def _run(self, job: IngestJob) -> None:
        from ingest.pipeline import run_ingest

        started = time.perf_counter()
        with self._lock:
            job.state = "running"
            job.started_at = time.time()
        summary: dict[str, Any] | None = None
        error: dict[str, str] | None = None
        reloaded = False
        try:
            result = run_ingest(
                self.settings,
                full=job.full,
                progress=lambda stage, done, total: self._progress(job, stage, done, total),
                embedder=self.engine.embedder,
                on_stage=self._on_stage,
            )
            # the API's index poll may have swapped the new version in first: it serves either way
            reloaded = self.engine.reload() or (result.published and self.engine.version == result.version)
            summary = result.to_dict()
            log.info("ingest job %s succeeded (version %s, reloaded=%s)", job.job_id, result.version, reloaded)
        except RagError as exc:
            error = {"code": exc.code, "message": exc.message}
        except Exception as exc:  # the worker records every failure rather than dying silently
            log.exception("ingest job %s crashed", job.job_id)
            error = {"code": "ingest_failed", "message": f"ingest failed: {type(exc).__name__}"}
        if error is not None:
            log.warning("ingest job %s failed: %s", job.job_id, error["message"])
        outcome = "failed" if error else "succeeded"
        if self._on_finished is not None:
            try:
                self._on_finished(outcome, time.perf_counter() - started)
            except Exception:
                log.exception("ingest job callback failed")
        with self._lock:
            job.summary = summary
            job.error = error
            job.reloaded = reloaded
            job.state = outcome
            job.finished_at = time.time()
