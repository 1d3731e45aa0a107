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
    """`docker-compose config -q` (with and without each profile) when the binary is installed."""
    binary = shutil.which("docker-compose")
    if binary is None:
        print("docker-compose not installed (apt-get install docker-compose): structural checks only")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") and k != "FEEDBACK_DB_PASSWORD"}
    for extra in ([], ["--profile", "ollama"], ["--profile", "proxy"], ["--profile", "scale"]):
        result = subprocess.run(
            [binary, "-f", str(COMPOSE), *extra, "config", "-q"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
    services = subprocess.run(
        [binary, "-f", str(COMPOSE), "--profile", "ollama", "config", "--services"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert set(services.stdout.split()) == {"api", "ui", "ollama", "proxy"} | SCALE_SERVICES
    resolved = subprocess.run(
        [binary, "-f", str(COMPOSE), "--profile", "scale", "config"],
        cwd=ROOT, env=env | {"FEEDBACK_DB_PASSWORD": "s3cret"}, capture_output=True, text=True, timeout=120,
    )
    assert resolved.returncode == 0, resolved.stderr
    scale = yaml.safe_load(resolved.stdout)["services"]
    urls = {_env(scale[name])["RAG_FEEDBACK_URL"] for name in REPLICAS}  # interpolated the same in both
    assert urls == {"postgresql://rag:s3cret@postgres:5432/feedback"}
    assert _env(scale["postgres"])["POSTGRES_PASSWORD"] == "s3cret"


# --- the `scale` profile: Milvus standalone, PostgreSQL, two API replicas behind one balancer ---------------

SCALE_SERVICES = {"etcd", "minio", "milvus", "postgres", "scale-ingest", "api-1", "api-2", "lb", "scale-ui"}
REPLICAS = ("api-1", "api-2")


def _published(service: dict[str, Any]) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


def test_the_default_services_stay_outside_every_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {name for name, service in services.items() if "profiles" not in service} == {"api", "ui"}
    assert {name for name, service in services.items() if service.get("profiles") == ["scale"]} == SCALE_SERVICES
    for name in SCALE_SERVICES:  # the scale profile has volumes of its own: the default rag-data stays untouched
        assert all(source != "rag-data" for source, _, _ in _mounts(services[name])), name


def test_the_scale_profile_pins_milvus_standalone_and_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    pinned = {
        "etcd": r"quay\.io/coreos/etcd:v3\.5\.\d+",
        "minio": r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ",
        "milvus": r"milvusdb/milvus:v2\.[56]\.\d+",
        "postgres": r"postgres:\d+\.\d+(-\w+)?",
        "lb": r"nginx:\d+\.\d+\.\d+(-\w+)?",
    }
    for name, pattern in pinned.items():
        assert re.fullmatch(pattern, services[name]["image"]), services[name]["image"]
        assert services[name]["healthcheck"]["test"], name
    milvus = services["milvus"]
    assert _command(milvus) == "milvus run standalone"
    assert _env(milvus)["ETCD_ENDPOINTS"] == "etcd:2379" and _env(milvus)["MINIO_ADDRESS"] == "minio:9000"
    assert {dep: c["condition"] for dep, c in milvus["depends_on"].items()} == {
        "etcd": "service_healthy", "minio": "service_healthy"
    }
    assert "/healthz" in _probes(milvus) and "pg_isready" in _probes(services["postgres"])
    for name in ("etcd", "minio", "milvus", "postgres"):  # reachable only on the compose network
        assert not _published(services[name]), name


def test_two_replicas_share_the_index_and_the_feedback_behind_one_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    envs = [_env(services[name]) for name in REPLICAS]
    assert envs[0] == envs[1]
    env = envs[0]
    assert env["RAG_INDEX_BACKEND"] == "milvus" and env["RAG_MILVUS_URI"] == "http://milvus:19530"
    url = env["RAG_FEEDBACK_URL"]
    match = re.fullmatch(r"postgresql://(\w+):(\$\{FEEDBACK_DB_PASSWORD:-[^}]+\})@postgres:5432/(\w+)", url)
    assert match, url
    pg = _env(services["postgres"])
    assert (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]) == match.groups()
    for name in REPLICAS:
        replica = services[name]
        assert "rag serve" in _command(replica) and "--host 0.0.0.0" in _command(replica)
        assert not _published(replica) and "/healthz" in _probes(replica)
        assert {dep: c["condition"] for dep, c in replica["depends_on"].items() if dep != "scale-ingest"} == {
            "milvus": "service_healthy", "postgres": "service_healthy"
        }
    published = {name: _published(services[name]) for name in SCALE_SERVICES if _published(services[name])}
    assert published == {"lb": ["8100:8000"], "scale-ui": ["8601:8501"]}  # one port for the API, one for the UI
    assert {dep: c["condition"] for dep, c in services["lb"]["depends_on"].items()} == {
        name: "service_healthy" for name in REPLICAS
    }


def test_the_balancer_config_names_both_replicas(compose: dict[str, Any]) -> None:
    lb = compose["services"]["lb"]
    source, target, mode = next(m for m in _mounts(lb) if m[1].startswith("/etc/nginx/"))
    assert mode == "ro" and target == "/etc/nginx/conf.d/default.conf"
    conf = (ROOT / source).read_text(encoding="utf-8")
    servers = re.findall(r"^\s*server ([\w.-]+:\d+)\b[^;]*;", conf, re.M)
    assert sorted(servers) == [f"{name}:8000" for name in REPLICAS]
    assert re.search(r"^\s*listen 8000;", conf, re.M) and "proxy_pass http://rag_api;" in conf
    assert re.search(r"^\s*proxy_buffering off;", conf, re.M)  # server-sent events stream through
    assert "/healthz" in _probes(lb)


def test_the_scale_ui_and_ingest_use_the_shared_backends(compose: dict[str, Any]) -> None:
    services = compose["services"]
    ui = services["scale-ui"]
    assert _env(ui)["RAG_API_URL"] == "http://lb:8000" and ui["depends_on"]["lb"]["condition"] == "service_healthy"
    assert _command(ui).startswith("rag ui") and "/_stcore/health" in _probes(ui)
    ingest = services["scale-ingest"]
    assert _command(ingest) == "rag ingest" and ingest["restart"] == "no"  # one-shot
    assert _env(ingest) == _env(services["api-1"]) and _mounts(ingest) == _mounts(services["api-1"])
    assert ingest["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert ("./corpus", "/corpus", "ro") in _mounts(ingest)
