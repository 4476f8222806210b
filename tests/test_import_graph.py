"""The import graph of the repository's packages, read from the source (an ast walk, no imports run).

Every ``import`` / ``from ... import`` counts, at module level or inside a function (relative imports resolved;
``from package import name`` counts as an import of ``package.name`` when that is a module), imports under
``if TYPE_CHECKING:`` too (a type named from a module that imports this one is a circle a reader follows all the
same). The rules:

* no import cycle between modules (the cycle is reported), apart from the ones listed in :data:`KNOWN_CYCLES`;
* no module imports another module's private name (``from x import _name``, ``x._name``);
* nothing imports ``constcl_zoo.commands`` but the console script (:mod:`constcl_zoo.cli`) and the commands
  themselves: commands parse arguments and call the library;
* no module of the repository imports a deprecated module path or name (``constcl_zoo._moved.MOVED``,
  ``training._moved``: ``MOVED``, ``SPLIT``, ``RENAMED``).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("constcl_zoo", "training", "export", "demos")
# Cycles tolerated for now: none left (issue 22 removed the last ones). A cycle not listed here fails the test, and so
# does a listed one that no longer exists (so the list only shrinks).
KNOWN_CYCLES: set[frozenset[str]] = set()


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    names: tuple[str, ...]  # the names imported (from ... import a, b), or () for ``import x``


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node``: module level, in functions and classes, under ``if TYPE_CHECKING:``."""
    yield from ast.walk(node)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[:-(level - 1)]
    return ".".join([*base, *([target] if target else [])])


def edges(known: dict[str, Path]) -> list[Edge]:
    """Imports of repository modules by repository modules."""
    out = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node in _walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _nearest(alias.name, known)
                    if target is not None:
                        out.append(Edge(module, target, node.lineno, ()))
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    target = full if full in known else _nearest(base, known)
                    if target is not None:
                        out.append(Edge(module, target, node.lineno, () if full in known else (alias.name,)))
    return [e for e in out if e.source != e.target]


def _nearest(name: str, known: dict[str, Path]) -> str | None:
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _one_cycle(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (breadth first)."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, ())):
            if w == start:
                return [*paths[v], start]
            if w in members and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Edge]]:
    known = modules()
    return known, edges(known)


def test_the_walk_sees_function_level_relative_and_type_checking_imports(tmp_path):
    files = {"pkg/__init__.py": "",
             "pkg/a.py": "from .sub import b\n\n_hidden = 1\n",
             "pkg/sub/__init__.py": "",
             "pkg/sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n\n"
                             "def f():\n    from ..a import _hidden\n    return _hidden\n",
             "pkg/c.py": "import pkg.a as alias\n\nprint(alias._hidden)\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    known = modules(tmp_path, ("pkg",))
    assert sorted(known) == ["pkg", "pkg.a", "pkg.c", "pkg.sub", "pkg.sub.b"]
    found = edges(known)
    assert sorted({(e.source, e.target) for e in found}) == [("pkg.a", "pkg.sub.b"), ("pkg.c", "pkg.a"),
                                                            ("pkg.sub.b", "pkg.a")]
    adjacency: dict[str, set[str]] = {}
    for e in found:
        adjacency.setdefault(e.source, set()).add(e.target)
    assert cycles(adjacency) == [["pkg.a", "pkg.sub.b"]]
    assert _one_cycle(["pkg.a", "pkg.sub.b"], adjacency) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    assert private_imports(known, found) == ["pkg.sub.b:6: from pkg.a import _hidden",
                                             "pkg.c:3: alias._hidden (pkg.a)"]


def test_no_import_cycles(graph):
    _, found = graph
    adjacency: dict[str, set[str]] = {}
    for e in found:
        adjacency.setdefault(e.source, set()).add(e.target)
    components = cycles(adjacency)
    seen = []
    for component in components:
        pairs = {frozenset(c) for c in KNOWN_CYCLES if set(c) <= set(component)}
        if not pairs:
            cycle = _one_cycle(component, adjacency)
            where = [next(f"{e.source}:{e.line} imports {e.target}" for e in found if (e.source, e.target) == (a, b))
                     for a, b in itertools.pairwise(cycle)]
            raise AssertionError(f"import cycle {' -> '.join(cycle)}\n  " + "\n  ".join(where))
        seen += pairs
        # a known cycle's component must be exactly the known cycles (nothing new joined it)
        assert set(component) == set().union(*pairs), f"a new module joined a known cycle: {component}"
    stale = KNOWN_CYCLES - set(seen)
    assert not stale, f"these cycles are gone: remove them from KNOWN_CYCLES: {sorted(map(sorted, stale))}"


def private_imports(known: dict[str, Path], found: list[Edge]) -> list[str]:
    """``from x import _name`` and ``x._name`` (``x`` another module of the repository)."""
    offenders = [f"{e.source}:{e.line}: from {e.target} import {n}" for e in found for n in e.names
                 if n.startswith("_") and not n.startswith("__")]
    for module, path in known.items():
        imported: dict[str, str] = {}  # local name -> module, for `import a.b as c` / `from a import b`
        tree = ast.parse(path.read_text())
        for node in _walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _nearest(alias.name, known) is not None:
                        imported[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node.level, node.module)
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        imported[alias.asname or alias.name] = f"{base}.{alias.name}"
        for node in _walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = ast.unparse(node.value)
                if owner in imported and imported[owner] != module:
                    offenders.append(f"{module}:{node.lineno}: {owner}.{node.attr} ({imported[owner]})")
    return offenders


def test_no_import_of_private_names(graph):
    offenders = private_imports(*graph)
    assert not offenders, "imports of other modules' private names:\n  " + "\n  ".join(offenders)


def test_nothing_imports_the_commands(graph):
    _, found = graph
    allowed = {"constcl_zoo.cli"}
    offenders = [f"{e.source}:{e.line} imports {e.target}" for e in found
                 if e.target.startswith("constcl_zoo.commands") and e.source not in allowed
                 and not e.source.startswith("constcl_zoo.commands")]
    assert not offenders, "commands only parse arguments; import the library instead:\n  " + "\n  ".join(offenders)


def test_no_in_repo_import_of_a_moved_module():
    from constcl_zoo._moved import MOVED
    from training._moved import MOVED as TRAINING_MOVED
    from training._moved import RENAMED, SPLIT

    moved = {**MOVED, **TRAINING_MOVED, **{old: ", ".join(new) for old, (new, _) in SPLIT.items()}}
    offenders = []
    for folder in (*PACKAGES, "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name in ("_moved.py", "test_moved.py", "test_training_moved.py"):
                continue
            module = module_name(path)
            for node in _walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = _resolve(module, path.name == "__init__.py", node.level, node.module)
                    names = [base, *(f"{base}.{a.name}" for a in node.names)]
                    offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {base}.{a.name} (now "
                                  f"{RENAMED[base][a.name]})" for a in node.names if a.name in RENAMED.get(base, {})]
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {n} (now {moved[n]})" for n in names
                              if n in moved]
    assert not offenders, "deprecated module paths and names in the repository:\n  " + "\n  ".join(offenders)
