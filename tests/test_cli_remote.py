"""The command line next to a running API, and the UI launcher: `rag ask`/`rag search` use the API when
RAG_API_URL answers (`--local` forces in-process), tables fit 80 columns, `rag glossary` says where each alias
group came from, and `rag ui` binds to 127.0.0.1, passes the `.env` URL and key, and stops on SIGTERM.

Everything runs for real: the installed `rag` script as a subprocess, uvicorn on a free port, Streamlit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import CORPUS
from live import LiveServer
from pydantic import SecretStr
from rich.cells import cell_len

from rag.api import create_app
from rag.cli import ui_command
from rag.config import Settings

RAG = Path(sys.executable).with_name("rag")
KEY = "remote-cli-key-0123456789"
QUESTION = "LoRA 微调里最重要的超参数是什么？"
GLOSSARY = (
    "- RLHF = Recursive Human Feedback\n"
    "- 点积运算\n"
    "- 样本 = 输入 = input\n"
    "输入, input\n"
    "灾难性遗忘, 遗忘问题\n"
)


def rag(*args: str, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    base |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"} | env
    return subprocess.run(
        [str(RAG), *args], cwd=cwd, env=base, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings, engine) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("remote") / "data"
    settings = Settings(_env_file=None, data_dir=data, corpus_dir=CORPUS, api_key=SecretStr(KEY))
    with LiveServer(create_app(settings, engine=engine)) as live:
        yield live


def test_ask_and_search_use_the_running_api(keyed_api: LiveServer, tmp_path: Path) -> None:
    # This data dir has no index: an answer can only have come from the API; --local proves the other path.
    empty = {"RAG_DATA_DIR": str(tmp_path / "no-index"), "RAG_API_URL": keyed_api.url, "RAG_API_KEY": KEY}
    before = httpx.get(f"{keyed_api.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    proc = rag("ask", QUESTION, cwd=tmp_path, **empty)
    assert proc.returncode == 0, proc.stderr
    assert "秩" in proc.stdout and f"via the API at {keyed_api.url}" in proc.stdout
    after = httpx.get(f"{keyed_api.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert _asks(after) == _asks(before) + 1, "the API counted the question"

    found = rag("search", "灾难性遗忘", "--json", "-k", "3", cwd=tmp_path, **empty)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout.strip().splitlines()[-1])
    assert [h["rank"] for h in result["hits"]] == [1, 2, 3] and "via the API" in found.stderr

    local = rag("ask", QUESTION, "--local", cwd=tmp_path, **empty)
    assert local.returncode != 0 and "rag ingest" in local.stderr and "Traceback" not in local.stderr

    wrong = rag("ask", QUESTION, cwd=tmp_path, **(empty | {"RAG_API_KEY": "wrong-key"}))
    assert wrong.returncode != 0 and "refused the key" in wrong.stderr and "--local" in wrong.stderr


def _asks(metrics: str) -> float:
    """The number of POST /ask requests answered, from the Prometheus text."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("rag_http_requests_total{") and 'route="/ask"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_sources_table_fits_80_columns_with_whole_note_names(keyed_api: LiveServer, tmp_path: Path) -> None:
    env = {"RAG_DATA_DIR": str(tmp_path / "x"), "RAG_API_URL": keyed_api.url, "RAG_API_KEY": KEY, "COLUMNS": "80"}
    proc = rag("ask", QUESTION, cwd=tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= 80, "\n".join(lines)
    assert any("deep-learning-glossary" in line for line in lines), proc.stdout
    searched = rag("search", "灾难性遗忘", cwd=tmp_path, **env)
    assert searched.returncode == 0, searched.stderr
    assert max(cell_len(line) for line in searched.stdout.splitlines()) <= 80, searched.stdout
    assert "deep-learning-glossary" in searched.stdout


def test_ask_explain_shows_the_readers_verdict_and_top_sentences(keyed_api: LiveServer, tmp_path: Path) -> None:
    env = {"RAG_DATA_DIR": str(tmp_path / "x"), "RAG_API_URL": keyed_api.url, "RAG_API_KEY": KEY, "COLUMNS": "100"}
    proc = rag("ask", "--explain", QUESTION, cwd=tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "reader answers: probability" in out and "threshold" in out
    table = out[out.index("reader's top sentences") :]
    assert "deep-learning-glossary" in table and "LoRA" in table and "score" in table
    assert "{" not in table, "readable rows, not raw JSON"
    plain = rag("ask", QUESTION, cwd=tmp_path, **env)
    assert plain.returncode == 0 and "reader's top sentences" not in plain.stdout
    refused = rag("ask", "--explain", "法国的首都是哪里？", cwd=tmp_path, **env)
    assert refused.returncode == 0 and "reader refuses" in refused.stdout


def test_glossary_minus_lines_and_sources_everywhere(
    make_settings, embedder, tmp_path: Path
) -> None:
    from ingest.pipeline import run_ingest
    from rag.engine import Engine

    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    (corpus / "glossary.txt").write_text(GLOSSARY, encoding="utf-8")
    settings = make_settings(corpus_dir=corpus)
    first = run_ingest(settings, embedder=embedder)
    engine = Engine(settings, embedder=embedder)
    engine.load()
    report = engine.glossary_report()
    by_member = {m: s for g, s in zip(report["groups"], report["sources"], strict=True) for m in g}
    assert by_member["输入"] == "user" and by_member["遗忘问题"] == "notes+user" and by_member["样本"] == "notes"
    assert "Recursive Human Feedback" not in by_member and "点积运算" not in by_member
    assert [r["removed"] for r in report["removed"]] == [["Recursive Human Feedback"], ["点积运算", "张量积"], ["输入", "input"]]
    again = run_ingest(settings, embedder=embedder)
    assert not again.published and again.alias_groups == first.alias_groups == len(report["groups"])

    with LiveServer(create_app(settings, engine=engine)) as live:
        assert httpx.get(f"{live.url}/glossary").json() == report

    env = {"RAG_DATA_DIR": str(settings.data_dir), "RAG_CORPUS_DIR": str(corpus)}
    shown = rag("glossary", "--json", cwd=tmp_path, **env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == report
    text = rag("glossary", cwd=tmp_path, **env)
    assert "输入 = input  [glossary.txt]" in text.stdout and "removed: 点积运算 = 张量积" in text.stdout
    assert "1 from glossary.txt" in text.stderr and "3 removals" in text.stderr


# --- rag ui ------------------------------------------------------------------------------------------------


def test_ui_command_passes_url_and_key_from_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("RAG_API_URL=http://127.0.0.1:8123\nRAG_API_KEY=from-dotenv\n", encoding="utf-8")
    monkeypatch.delenv("RAG_API_URL", raising=False)
    monkeypatch.delenv("RAG_API_KEY", raising=False)
    argv, env = ui_command(Settings(_env_file=dotenv))
    assert env["RAG_API_URL"] == "http://127.0.0.1:8123" and env["RAG_API_KEY"] == "from-dotenv"
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    argv, _ = ui_command(Settings(_env_file=None, ui_host="0.0.0.0"), port=9999)
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0" and argv[argv.index("--server.port") + 1] == "9999"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on `port` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(address)
    return found


def test_rag_ui_binds_to_loopback_gets_dotenv_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / ".env").write_text(
        f"RAG_API_URL=http://127.0.0.1:{free_port()}\nRAG_API_KEY=dotenv-key\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    log = (tmp_path / "ui.log").open("wb")
    proc = subprocess.Popen(
        [str(RAG), "ui", "--port", str(port)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # like a shell's background job: only the signal we send reaches it
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text(errors="replace")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the UI did not come up"
            time.sleep(0.3)
        assert listening_addresses(port) == {"0100007F"}, "listens on 127.0.0.1 only"
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{proc.pid}/environ").read_text().split("\0") if "=" in item
        )
        assert environ["RAG_API_KEY"] == "dotenv-key" and environ["RAG_API_URL"].startswith("http://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        deadline = time.monotonic() + 30
        while listening_addresses(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not listening_addresses(port), "nothing is left holding the port"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
