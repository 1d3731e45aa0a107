"""The HTTP section: the API served by uvicorn in a child process on loopback, and a concurrent /ask driver."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.bench.plan import WARMUP_QUERIES, BenchPlan, unique_texts
from rag.bench.probes import latency_stats
from rag.config import Settings


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(settings_file: Path, port: int) -> None:
    """Child-process body of the HTTP benchmark: the API for the settings in `settings_file`."""
    import uvicorn

    from rag.api import create_app

    settings = Settings(_env_file=None, **json.loads(settings_file.read_text(encoding="utf-8")))
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _drive(url: str, texts: Sequence[str], concurrency: int) -> dict[str, Any]:
    """POST every text to /ask with `concurrency` clients in flight; latency, throughput, errors."""
    import httpx

    latencies: list[float] = []
    errors = refused = 0
    pending = iter(texts)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors, refused
            for text in pending:
                t0 = time.perf_counter()
                try:
                    response = await client.post("/ask", json={"question": text})
                    ok = response.status_code == 200
                    if ok and response.json().get("refused"):
                        refused += 1
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += 0 if ok else 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "requests": len(texts),
        "errors": errors,
        "refused": refused,
        "requests_per_s": round(len(texts) / wall, 2),
        **latency_stats(latencies),
    }


def bench_http(base: Settings, plan: BenchPlan, questions: Sequence[str], work: Path) -> dict[str, Any]:
    """Start `python -m rag.bench serve` on loopback and load it at each planned concurrency."""
    import httpx

    values = base.model_dump(mode="json") | {"api_key": None, "llm_api_key": None, "llm_model": None}
    settings_file = work / "server-settings.json"
    settings_file.write_text(json.dumps(values), encoding="utf-8")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work / "server.log"
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "rag.bench", "serve", str(settings_file), str(port)],
            cwd=work, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        started = time.perf_counter()
        while True:
            if server.poll() is not None:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise RuntimeError(f"benchmark server exited with {server.returncode}:\n{tail}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > 300:
                raise RuntimeError("benchmark server not ready after 300 s")
            time.sleep(0.25)
        startup = time.perf_counter() - started
        asyncio.run(_drive(url, list(WARMUP_QUERIES), 1))
        figures: dict[str, Any] = {"server_startup_seconds": round(startup, 2)}
        offset = 0
        for concurrency, count in plan.http_requests.items():
            texts = unique_texts(questions, offset, count)
            offset += count
            figures[str(concurrency)] = {"concurrency": concurrency, **asyncio.run(_drive(url, texts, concurrency))}
        return figures
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

