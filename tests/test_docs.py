"""The documentation site builds cleanly and documents what it shows.

``mkdocs build --strict`` (as ``.ci/run`` runs it) fails on a broken link or anchor, a README section the pages
include that is gone, and an API reference that does not resolve. The docstring checks read the source the way
the API reference does (griffe, static): every public name of ``constcl_zoo.__all__``, and every public function
and class on an API page, has a docstring.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import griffe
import pytest

import constcl_zoo

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.md"))
# Named in the docs as the file a command will write, not measured yet (no GPU was available to this work).
PENDING_RESULTS = {"benchmarks/results/embed_constcl_r3d50_cuda.md"}


def test_mkdocs_build_strict(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    site = tmp_path / "site"
    # The README sections the pages include arrived, and the API reference rendered load()'s docstring.
    assert "pip install torch==2.13.0" in (site / "install" / "index.html").read_text(encoding="utf-8")
    assert "my_classifier" in (site / "quickstart" / "index.html").read_text(encoding="utf-8")
    assert "Load a ConST-CL network or task model" in (site / "api" / "index.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def package() -> griffe.Module:
    return griffe.load("constcl_zoo", search_paths=[str(ROOT)], resolve_aliases=True, resolve_external=False)


def _target(obj: griffe.Object | griffe.Alias) -> griffe.Object:
    return obj.final_target if obj.is_alias else obj


def test_every_public_name_has_a_docstring(package) -> None:
    missing = [name for name in constcl_zoo.__all__ if not _target(package[name]).docstring]
    assert not missing, f"constcl_zoo.__all__ names without a docstring: {missing}"


def _documented(package: griffe.Module) -> list[str]:
    """Paths of the objects the API pages render (``::: path``), and of the public functions and classes of a
    rendered module (its ``__all__``, which may import them from submodules, else those it defines)."""
    paths = []
    for page in API_PAGES:
        for path in re.findall(r"^::: ([\w.]+)$", page.read_text(encoding="utf-8"), re.M):
            paths.append(path)
            obj = _target(package[path.removeprefix("constcl_zoo.")])
            if obj.is_module:  # what mkdocstrings renders: the names of __all__ (imported ones too), else the
                # public functions and classes the module defines
                names = obj.exports if obj.exports is not None else [
                    name for name, m in obj.members.items() if not name.startswith("_") and not m.is_alias]
                paths += [f"{path}.{name}" for name in names
                          if _target(obj.members[name]).is_class or _target(obj.members[name]).is_function]
    return paths


def test_every_documented_function_and_class_has_a_docstring(package) -> None:
    documented = _documented(package)
    assert "constcl_zoo.load" in documented and "constcl_zoo.tasks.tracking.SiamFCTracker" in documented
    assert set(f"constcl_zoo.{name}" for name in constcl_zoo.__all__) <= set(documented), \
        "every name of constcl_zoo.__all__ is on an API page"
    missing = [p for p in documented if not _target(package[p.removeprefix("constcl_zoo.")]).docstring]
    assert not missing, f"on the API pages without a docstring: {missing}"


def test_benchmark_result_paths_named_in_the_docs_exist() -> None:
    """Every ``benchmarks/results/...`` file the pages name (a results file beside its table) is in the repository;
    ``{a,b}`` and ``*`` stand for several files, ``<x>`` for a part that depends on the run, and a name without a
    suffix is an ``--out`` prefix (``track_default`` -> ``track_default.json`` and ``.md``)."""
    missing, count = [], 0
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for ref in re.findall(r"benchmarks/results/[\w./{},*<>-]*[\w/}*>]", page.read_text(encoding="utf-8")):
            count += 1
            if ref in PENDING_RESULTS:
                continue
            pattern = re.sub(r"<[^>]+>", "*", ref)
            alternatives = re.search(r"\{([^}]+)\}", pattern)
            patterns = ([pattern.replace(alternatives.group(0), a) for a in alternatives.group(1).split(",")]
                        if alternatives else [pattern])
            for p in patterns:
                if not (ROOT / p).exists() and not any(ROOT.glob(p if "*" in p else p + ".*")):
                    missing.append(f"{page.relative_to(ROOT)}: {ref}")
    assert count >= 20
    assert not missing, "\n".join(missing)
