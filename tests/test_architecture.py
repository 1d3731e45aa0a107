"""The layering in ARCHITECTURE.md, checked on the source: who may import `ingest/`, `ui/` stands apart, room sizes.

Imports are read with `ast` (every `import`, including those inside functions and `TYPE_CHECKING` blocks), so
a lazy import counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The edges: they parse, call the engine or the ingest pipeline, and format. Only they may import `ingest/`.
EDGES = ("rag/cli.py", "rag/jobs.py", "rag/api/", "rag/bench/")
MAX_LINES = 500
# Modules allowed over MAX_LINES, each with the reason. Keep it empty: split a room along its seams instead.
OVERSIZE_ALLOWED: dict[str, str] = {}


def _modules(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules `path` imports (relative imports resolved against its package)."""
    package = path.relative_to(ROOT).parent.parts
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from rag import api`
    return names


def _top(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def _is_edge(rel: str) -> bool:
    return any(rel == edge or (edge.endswith("/") and rel.startswith(edge)) for edge in EDGES)


def _edge_module(name: str) -> bool:
    """Whether an imported module name is one of the edges (or inside one): "rag.cli", "rag.api.routes"."""
    edges = [edge.removesuffix(".py").rstrip("/").replace("/", ".") for edge in EDGES]
    return any(name == edge or name.startswith(edge + ".") for edge in edges)


def test_the_modules_are_found() -> None:
    rels = {_rel(path) for path in _modules("rag", "ingest", "ui")}
    assert {"rag/engine.py", "rag/api/app.py", "ingest/pipeline.py", "ui/app.py"} <= rels
    assert "ingest" in _top(_imports(ROOT / "rag/cli.py"))  # the parser sees a real ingest import


def test_only_the_edges_import_ingest() -> None:
    offenders = {
        _rel(path): sorted(name for name in _imports(path) if name.split(".")[0] == "ingest")
        for path in _modules("rag")
        if not _is_edge(_rel(path)) and "ingest" in _top(_imports(path))
    }
    assert offenders == {}, "only rag/cli.py, rag/jobs.py, rag/api/ and rag/bench/ may import ingest/"


def test_nothing_below_the_edges_imports_an_edge() -> None:
    offenders = {
        _rel(path): sorted(name for name in _imports(path) if _edge_module(name))
        for path in _modules("rag", "ingest")
        if not _is_edge(_rel(path)) and any(_edge_module(name) for name in _imports(path))
    }
    assert offenders == {}


def test_ui_imports_neither_rag_nor_ingest() -> None:
    offenders = {
        _rel(path): sorted(_top(_imports(path)) & {"rag", "ingest"})
        for path in _modules("ui")
        if _top(_imports(path)) & {"rag", "ingest"}
    }
    assert offenders == {}, "ui/ talks to the API over HTTP only"


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {_rel(path): path.read_text(encoding="utf-8").count("\n") for path in _modules("rag", "ingest")}
    over = {rel: lines for rel, lines in sizes.items() if lines > MAX_LINES and rel not in OVERSIZE_ALLOWED}
    assert over == {}, f"split these along their seams (or allow them, with the reason): {over}"
    stale = set(OVERSIZE_ALLOWED) - {rel for rel, lines in sizes.items() if lines > MAX_LINES}
    assert not stale, f"no longer over {MAX_LINES} lines: drop them from OVERSIZE_ALLOWED"


def test_every_name_imported_from_the_project_exists() -> None:
    """`from rag.x import y` resolves everywhere, scripts and lazy imports included: a name moved to another
    module must not leave a script (run by hand, not by the suite) failing at its first line."""
    import importlib

    broken = []
    for path in _modules("rag", "ingest", "scripts", "ui"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] not in {"rag", "ingest"}:
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name != "*" and not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ModuleNotFoundError:
                        broken.append(f"{_rel(path)}:{node.lineno}: {node.module}.{alias.name}")
    assert not broken, broken


def test_every_module_imports_on_its_own() -> None:
    """No import cycle hides behind the order the engine happens to import in: each module of `rag/` and
    `ingest/` imports first in a fresh set of project modules (the gate and the refusal rules once could not)."""
    import subprocess
    import sys

    script = """
import importlib, pkgutil, sys
import ingest, rag
names = sorted(m.name for pkg in (rag, ingest) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
               if not m.name.endswith("__main__"))
failed = []
for name in names:
    for loaded in [k for k in sys.modules if k.split(".")[0] in ("rag", "ingest")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as error:
        failed.append(f"{name}: {error}")
print("\\n".join(failed))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", result.stdout
