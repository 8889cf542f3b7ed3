"""Services, stores and the database layer know nothing of requests: who is calling comes to
them as a ``cloud.identity.Principal``, never through ``cloud.deps`` (FastAPI's dependencies),
so a job, a CLI or a test can call a service without building a request."""

from __future__ import annotations

import ast
from pathlib import Path

CLOUD = Path(__file__).resolve().parents[2] / "cloud"
LAYERS = ("services", "store", "db")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_service_store_or_db_module_imports_the_request_dependencies() -> None:
    offenders = [
        str(path.relative_to(CLOUD.parent))
        for layer in LAYERS
        for path in sorted((CLOUD / layer).rglob("*.py"))
        if "cloud.deps" in _imports(path)
    ]
    assert offenders == [], "import Principal/Role/User from cloud.identity instead"


def test_the_check_sees_an_import_of_the_dependencies(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from cloud.deps import Principal\n")
    assert "cloud.deps" in _imports(module)
