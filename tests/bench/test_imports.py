"""The benchmarks are product code (typed strictly, run by ``make bench``); the tests use
them, never the other way round: nothing under bench/ imports from tests/."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _from_tests(path: Path) -> set[str]:
    return {n for n in _imports(path) if n == "tests" or n.startswith("tests.")}


def test_no_benchmark_module_imports_the_tests() -> None:
    offenders = {
        str(path.relative_to(BENCH.parent)): sorted(_from_tests(path))
        for path in sorted(BENCH.rglob("*.py"))
        if _from_tests(path)
    }
    assert offenders == {}, "move what bench needs into bench/ (tests may import from bench)"


def test_the_check_sees_an_import_of_the_tests(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom tests.support.services import free_port\n")
    assert _from_tests(module) == {"tests.support.services"}
