"""Probes of the machine and the process: CPU, RAM and library versions, RSS, directory sizes, latency stats.

Also the gate of the optional `bench` extra (`matplotlib`, `psutil`): the runtime never needs them, so the
benchmark imports them through `bench_dependency`, which says what to install when they are missing.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import platform
import resource
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from rag.errors import RagError

BENCH_EXTRA = "pip install -e '.[bench]'"
BENCH_PACKAGES = ("matplotlib", "psutil", "reportlab")  # reportlab: the sample PDFs of the format section


def bench_dependency(name: str) -> ModuleType:
    """Import `name` from a package of the optional `bench` extra, or fail saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        package = name.partition(".")[0]
        raise RagError(f"{package} is not installed: the benchmark needs the bench extra ({BENCH_EXTRA})") from exc


def check_bench_extra() -> None:
    """Fail at the start of a run, not at its end, when a package of the `bench` extra is missing."""
    for name in BENCH_PACKAGES:
        bench_dependency(name)


def latency_stats(values_ms: Sequence[float]) -> dict[str, float | int]:
    """p50, p95 and mean of a list of milliseconds."""
    arr = np.asarray(values_ms, dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, "p50_ms": math.nan, "p95_ms": math.nan, "mean_ms": math.nan}
    p50, p95 = np.percentile(arr, [50, 95])
    return {"n": int(arr.size), "p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "mean_ms": round(float(arr.mean()), 3)}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def vm_status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process image from /proc/self/status (unlike ru_maxrss, not inherited from
    the parent a spawned child was forked from); falls back to ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return peak_rss_mb()


def rss_mb() -> dict[str, float]:
    """Current RSS and its anonymous part (RSS minus file-backed/shared pages such as mmapped indexes)."""
    psutil = bench_dependency("psutil")
    info = psutil.Process().memory_info()
    shared = getattr(info, "shared", 0)
    return {"rss_mb": round(info.rss / 2**20, 1), "anon_mb": round((info.rss - shared) / 2**20, 1)}


def dir_mb(path: Path) -> float:
    """Size in MiB of the files under `path`."""
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 2)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, bf16 support, load average and library versions of this machine."""
    import faiss
    import torch

    from rag.embedding import cpu_supports_bf16

    psutil = bench_dependency("psutil")
    model = "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        model = platform.processor() or "unknown"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "bf16_native": cpu_supports_bf16(),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
    }



def tree_rss_mb(pid: int | None) -> float:
    """RSS in MiB of process `pid` and all its descendants; `pid` None: this process's descendants only."""
    psutil = bench_dependency("psutil")
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + ([root] if pid is not None else [])
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return round(total / 2**20, 1)


class TreeRss:
    """Samples the RSS of a process tree every `interval` s in a thread; `peak_mb` is the largest sum seen.

    Sampling can miss a peak shorter than the interval; a build's peak lasts seconds.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval, self.peak_mb = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def kill_tree(self) -> None:
        """Kill the sampled process and its descendants (a timed-out or failed build)."""
        psutil = bench_dependency("psutil")
        try:
            root = psutil.Process(self.pid)
            procs = root.children(recursive=True) + [root]
        except psutil.Error:
            return
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
