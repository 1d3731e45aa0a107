"""Background ingest jobs for the API: one at a time per knowledge base, with progress, a summary, and a hot
index swap.

A job runs `run_ingest` in a worker thread. Queries keep being served from the loaded index meanwhile;
when the job has published a new version, `engine.reload()` swaps it in between requests. `IngestJobs` are the
jobs of one knowledge base; `KnowledgeBaseJobs` keeps one `IngestJobs` per knowledge base, made on first use,
so jobs of two knowledge bases run at once while two on the same one are refused.
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
from rag.errors import IngestBusy, InvalidInput, NotFound, RagError

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed"]
StageHook = Callable[[str], None]
Finished = Callable[[str, float], None]  # (outcome, seconds)
DEFAULT_KB = "default"


@dataclass
class IngestJob:
    """The state of one ingest job, as reported by GET /ingest/{id}."""

    job_id: str
    full: bool
    kb: str = DEFAULT_KB
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
            "kb": self.kb,
            "progress": {stage: dict(counts) for stage, counts in self.progress.items()},
            "summary": self.summary,
            "error": dict(self.error) if self.error else None,
            "reloaded": self.reloaded,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class IngestJobs:
    """Starts and tracks the ingest jobs of one knowledge base. At most one job is queued or running.

    `engine` is the knowledge base's engine, or a function returning it (an engine pool may unload and
    rebuild it between jobs).
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine | Callable[[], Engine],
        *,
        on_finished: Finished | None = None,
        on_stage: StageHook | None = None,
        keep: int = 20,
        kb: str = DEFAULT_KB,
    ) -> None:
        self.settings = settings
        self.kb = kb
        self._engine = engine
        self._on_finished = on_finished
        self._on_stage = on_stage
        self._keep = keep
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, IngestJob] = OrderedDict()
        self._threads: dict[str, threading.Thread] = {}

    @property
    def engine(self) -> Engine:
        return self._engine if isinstance(self._engine, Engine) else self._engine()

    def running(self, kb: str | None = None) -> bool:
        """True while a job (of knowledge base `kb`, when named) is queued or running."""
        if kb is not None and kb != self.kb:
            return False
        with self._lock:
            return any(j.active for j in self._jobs.values())

    def start(self, *, full: bool = False, kb: str | None = None) -> dict[str, Any]:
        """Queue a job and start its worker; IngestBusy when one is already queued or running."""
        if kb is not None and kb != self.kb:
            raise InvalidInput(f"these ingest jobs are those of knowledge base {self.kb!r}, not {kb!r}")
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.active), None)
            if busy is not None:
                raise IngestBusy(
                    f"another ingest is running on knowledge base {self.kb!r} (job {busy.job_id} is still "
                    f"{busy.state}); wait for it to finish"
                )
            job = IngestJob(job_id=uuid.uuid4().hex, full=full, kb=self.kb)
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

    def latest(self, kb: str | None = None) -> dict[str, Any] | None:
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

        engine = self.engine
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
                embedder=engine.embedder,
                on_stage=self._on_stage,
            )
            # the API's index poll may have swapped the new version in first: it serves either way
            engine = self.engine  # the pool may have rebuilt it meanwhile: the one serving now reloads
            reloaded = engine.reload() or (result.published and engine.version == result.version)
            summary = result.to_dict()
            log.info(
                "ingest job %s of %r succeeded (version %s, reloaded=%s)", job.job_id, self.kb, result.version, reloaded
            )
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


class KnowledgeBaseJobs:
    """The ingest jobs of every knowledge base: one `IngestJobs` each, made on first use with the knowledge
    base's settings (`settings_for`, which raises for an unknown one) and its engine (`engine_for`)."""

    def __init__(
        self,
        settings_for: Callable[[str], Settings],
        engine_for: Callable[[str], Engine],
        *,
        default_kb: str = DEFAULT_KB,
        on_finished: Finished | None = None,
    ) -> None:
        self._settings_for = settings_for
        self._engine_for = engine_for
        self.default_kb = default_kb
        self._on_finished = on_finished
        self._lock = threading.Lock()
        self._by_kb: dict[str, IngestJobs] = {}

    def jobs(self, kb: str | None = None) -> IngestJobs:
        """The jobs of knowledge base `kb` (the default one when None)."""
        name = kb or self.default_kb
        with self._lock:
            found = self._by_kb.get(name)
        if found is not None:
            return found
        settings = self._settings_for(name)  # outside the lock: reads the registry
        with self._lock:
            return self._by_kb.setdefault(
                name,
                IngestJobs(settings, lambda: self._engine_for(name), on_finished=self._on_finished, kb=name),
            )

    def start(self, *, full: bool = False, kb: str | None = None) -> dict[str, Any]:
        """Start a job on knowledge base `kb`; IngestBusy when one of that knowledge base is queued or running."""
        return self.jobs(kb).start(full=full)

    def get(self, job_id: str) -> dict[str, Any]:
        """A snapshot of a job of any knowledge base; NotFound for an unknown id."""
        for jobs in self._all():
            try:
                return jobs.get(job_id)
            except NotFound:
                continue
        raise NotFound(f"no ingest job {job_id!r}")

    def latest(self, kb: str | None = None) -> dict[str, Any] | None:
        """The most recent job of knowledge base `kb`, if any (None before its first job)."""
        with self._lock:
            jobs = self._by_kb.get(kb or self.default_kb)
        return jobs.latest() if jobs is not None else None

    def running(self, kb: str | None = None) -> bool:
        """True while a job of knowledge base `kb` (the default one when None) is queued or running."""
        with self._lock:
            jobs = self._by_kb.get(kb or self.default_kb)
        return jobs is not None and jobs.running()

    def busy(self) -> set[str]:
        """The knowledge bases with a job queued or running (never unloaded meanwhile)."""
        with self._lock:
            items = list(self._by_kb.items())
        return {name for name, jobs in items if jobs.running()}

    def forget(self, kb: str) -> None:
        """Drop the jobs of a deleted or renamed knowledge base (none of them may be running)."""
        with self._lock:
            self._by_kb.pop(kb, None)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every started worker of every knowledge base has finished."""
        for jobs in self._all():
            jobs.wait(timeout)

    def _all(self) -> list[IngestJobs]:
        with self._lock:
            return list(self._by_kb.values())
