"""Two `rag serve` replicas (real uvicorn processes) on one Milvus Lite server in its gRPC mode keep answering
while a third process (`rag ingest`) publishes a new version, and both pick the new version up."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile import ServeProcess, free_port, settings_env
from test_index_contract import NOTES, write_notes

from ingest.pipeline import run_ingest
from rag.config import Settings
from rag.index import open_store
from rag.index.milvus_schema import disconnect

QUESTION = "学习率过大会怎样？"
NEW_NOTE = {"momentum.md": "# 动量法\n\n## 原理\n\n动量法（Momentum）累积过去梯度的指数滑动平均，让参数更新穿过狭长的山谷。\n"}


@contextlib.contextmanager
def milvus_lite_server(data_dir: Path):
    """`milvus-lite server` in its own process; yields its URI."""
    port = free_port()
    code = "import sys; from milvus_lite.cmdline import main; sys.exit(main())"
    cmd = [sys.executable, "-c", code, "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "milvus-lite server exited"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "milvus-lite server did not listen"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def replicas(settings: Settings, root: Path, names: str = "ab"):
    """One `rag serve` per name, started side by side (each start imports torch and loads the model); yields them
    once all of them answer."""
    with contextlib.ExitStack() as stack:
        servers = []
        for name in names:
            server = ServeProcess(settings, root / name)
            stack.callback(server.__exit__)
            servers.append(server.start())
        for server in servers:
            server.wait_started()
        yield servers


def version_of(url: str) -> str | None:
    response = httpx.get(f"{url}/readyz", timeout=30)
    return response.json().get("version") if response.status_code == 200 else None


@pytest.mark.slow
def test_two_replicas_on_one_milvus_lite_server_answer_while_a_third_process_publishes(
    tmp_path: Path, make_settings: Callable[..., Settings], embedder: Any
) -> None:
    corpus = tmp_path / "notes"
    write_notes(corpus, NOTES)
    with milvus_lite_server(tmp_path / "milvus") as uri:
        # the default knowledge base: `rag serve` and `rag ingest` use its collection prefix, "rag"
        settings = make_settings(corpus_dir=corpus, index_backend="milvus", milvus_uri=uri)
        try:
            first = run_ingest(settings, embedder=embedder)
            assert not (settings.index_dir / "milvus.db").exists()  # with a server, no index on local disk
            with replicas(settings, tmp_path) as (a, b):
                urls = [a.url, b.url]
                assert [version_of(u) for u in urls] == [first.version] * 2

                results: dict[str, list[int]] = {u: [] for u in urls}
                stop = threading.Event()

                def ask(url: str) -> None:
                    with httpx.Client(base_url=url, timeout=120) as client:
                        while not stop.is_set():
                            try:
                                results[url].append(client.post("/ask", json={"question": QUESTION}).status_code)
                            except httpx.HTTPError:
                                results[url].append(0)

                askers = [threading.Thread(target=ask, args=(u,)) for u in urls]
                for t in askers:
                    t.start()
                try:
                    write_notes(corpus, NEW_NOTE)
                    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | settings_env(settings)
                    code = "import sys; from rag.cli import main; sys.argv[0] = 'rag'; main()"
                    cli = subprocess.run(
                        [sys.executable, "-c", code, "ingest", "--json"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                    )
                    assert cli.returncode == 0, cli.stderr[-3000:]
                    second = json.loads(cli.stdout.strip().splitlines()[-1])["version"]
                    assert second != first.version and open_store(settings).current_version() == second
                    deadline = time.monotonic() + 120
                    while [version_of(u) for u in urls] != [second] * 2:  # the replicas' 2 s poll
                        assert time.monotonic() < deadline, "a replica did not pick up the new version"
                        time.sleep(0.5)
                    counts = {u: len(r) for u, r in results.items()}
                    while any(len(results[u]) < counts[u] + 2 for u in urls):  # answers from the new version too
                        time.sleep(0.2)
                finally:
                    stop.set()
                    for t in askers:
                        t.join(180)
                assert all(r and set(r) == {200} for r in results.values()), results
                for url in urls:
                    answer = httpx.post(f"{url}/ask", json={"question": "动量法累积什么？"}, timeout=120).json()
                    assert any(c["doc_id"] == "momentum.md" for c in answer["citations"]), answer
        finally:
            disconnect(uri)
