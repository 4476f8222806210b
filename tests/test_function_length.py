"""No function of the inference, training, export and demo packages or of the benchmarks is longer than a reader
can hold: 80 lines at most (decorators and docstring included), checked on the source like tests/test_import_graph.py
checks the imports (ruff's C901 / PLR0915 hold complexity and statements: pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def long_functions(folder: Path, limit: int = MAX_LINES) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - start + 1
                if lines > limit:
                    found.append(f"{path.relative_to(folder.parent)}:{node.lineno} {node.name}: {lines} lines")
    return found


def test_the_count_includes_decorators_and_docstrings(tmp_path):
    (tmp_path / "m.py").write_text("@property\ndef f():\n    '''doc'''\n" + "    x = 1\n" * 77)  # 80 lines
    assert long_functions(tmp_path, 80) == [] and long_functions(tmp_path, 79) != []


def test_no_function_of_constcl_zoo_is_over_80_lines():
    assert not long_functions(ROOT / "constcl_zoo")


@pytest.mark.parametrize("folder", ["training", "export", "demos", "benchmarks"])
def test_no_function_of_the_repository_packages_is_over_80_lines(folder):
    assert not long_functions(ROOT / folder)
