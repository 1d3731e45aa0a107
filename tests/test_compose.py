"""docker-compose.yml, Dockerfile and .dockerignore, checked without a Docker engine.

The structure is always checked by parsing the files. When the `docker-compose` binary is installed
(Debian/Ubuntu package `docker-compose`), `docker-compose config -q` must accept the file as well.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rag.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _env(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume entry."""
    mounts = []
    for entry in service.get("volumes", []):
        parts = entry.split(":")
        mounts.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return mounts


def _probes(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def test_api_ingests_then_serves_with_persistent_data(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    command = _command(api)
    assert command.index("rag ingest") < command.index("rag serve")
    assert "--host 0.0.0.0" in command and "--port 8000" in command
    env = _env(api)
    mounts = {target: (source, mode) for source, target, mode in _mounts(api)}
    data_source, data_mode = mounts[env["RAG_DATA_DIR"]]
    assert data_source in compose["volumes"] and data_mode == "rw"
    corpus_source, corpus_mode = mounts[env["RAG_CORPUS_DIR"]]
    assert corpus_source == "./corpus" and corpus_mode == "ro"
    assert "8000:8000" in api["ports"]
    assert "/healthz" in _probes(api) and api["healthcheck"]["start_period"]
    assert "profiles" not in api


def test_ui_talks_to_the_api_service(compose: dict[str, Any]) -> None:
    ui = compose["services"]["ui"]
    assert _command(ui).startswith("rag ui") and "--host 0.0.0.0" in _command(ui)  # rag ui binds loopback by default
    assert _env(ui)["RAG_API_URL"] == "http://api:8000"
    assert ui["depends_on"]["api"]["condition"] == "service_healthy"
    assert "8501:8501" in ui["ports"] and "/_stcore/health" in _probes(ui)
    assert "profiles" not in ui


def test_ollama_is_an_optional_profile(compose: dict[str, Any]) -> None:
    ollama = compose["services"]["ollama"]
    assert ollama["image"].startswith("ollama/ollama")
    assert ollama["profiles"] == ["ollama"] and "healthcheck" in ollama
    text = COMPOSE.read_text(encoding="utf-8")
    assert re.search(r"#\s*RAG_LLM_MODEL: ollama/qwen2\.5:3b", text)
    assert re.search(r"#\s*RAG_LLM_API_BASE: http://ollama:11434", text)


def test_a_reverse_proxy_is_an_optional_profile(compose: dict[str, Any]) -> None:
    """For deployments facing the internet: Caddy in front of the api, with client timeouts and SSE passed through."""
    proxy = compose["services"]["proxy"]
    assert proxy["image"].startswith("caddy:") and proxy["profiles"] == ["proxy"]
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy" and "8080:8080" in proxy["ports"]
    source, target, mode = next(m for m in _mounts(proxy) if m[1] == "/etc/caddy/Caddyfile")
    assert mode == "ro" and (ROOT / source).is_file()
    caddyfile = (ROOT / source).read_text(encoding="utf-8")
    assert re.search(r"reverse_proxy api:8000", caddyfile) and "flush_interval -1" in caddyfile
    for timeout in ("read_header", "read_body", "idle"):
        assert re.search(rf"^\s*{timeout} \d+s$", caddyfile, re.M), timeout
    assert "{$PROXY_SITE::8080}" in caddyfile


def test_every_rag_variable_is_a_setting(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    names = set(re.findall(r"\b(RAG_[A-Z_]+):", text))
    for service in compose["services"].values():
        names |= {k for k in _env(service) if k.startswith("RAG_")}
    fields = set(Settings.model_fields)
    assert names and {n for n in names if n.removeprefix("RAG_").lower() not in fields} == set()


def test_dockerfile_installs_like_the_readme() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r"^RUN pip install -e \.$", dockerfile, re.M)
    assert re.search(r"^RUN rag model$", dockerfile, re.M)
    assert "EXPOSE 8000" in dockerfile and "HEALTHCHECK" in dockerfile
    for path in re.findall(r"^COPY (?:--chown=\S+ )?(.+?) \S+$", dockerfile, re.M):
        for name in path.split():
            assert (ROOT / name).exists() or name == "README.md", name
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", "data", ".git", "corpus"} <= set(ignored)


def test_docker_compose_accepts_the_file() -> None:
    """`docker-compose config -q` (with and without the ollama profile) when the binary is installed."""
    binary = shutil.which("docker-compose")
    if binary is None:
        print("docker-compose not installed (apt-get install docker-compose): structural checks only")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    for extra in ([], ["--profile", "ollama"], ["--profile", "proxy"]):
        result = subprocess.run(
            [binary, "-f", str(COMPOSE), *extra, "config", "-q"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
    services = subprocess.run(
        [binary, "-f", str(COMPOSE), "--profile", "ollama", "config", "--services"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert set(services.stdout.split()) == {"api", "ui", "ollama", "proxy"}
