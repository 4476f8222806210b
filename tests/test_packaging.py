"""The layout rules: only ``constcl_zoo`` (and one placeholder per repository package) goes into the wheel, and
``constcl_zoo`` never imports the repository packages."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import setuptools

from constcl_zoo.checkout_hint import REPOSITORY_PACKAGES, hint

ROOT = Path(__file__).resolve().parents[1]
REPO_PACKAGES = {"training", "export", "demos", "tests", "benchmarks"}


def test_constcl_zoo_does_not_import_repository_packages():
    offenders = []
    for path in (ROOT / "constcl_zoo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in REPO_PACKAGES]
    assert not offenders


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``pip wheel .`` builds (in an isolated build environment, as a user's pip would)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
                   check=True, capture_output=True)
    (built,) = out.glob("constcl_zoo-*.whl")
    return built


def _dist_info(wheel: Path) -> str:
    return wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"


def _setuptools_config() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_the_wheel_lists_every_constcl_zoo_package_and_the_placeholders():
    config = _setuptools_config()
    found = setuptools.find_packages(str(ROOT), include=["constcl_zoo", "constcl_zoo.*"])
    assert sorted(config["packages"]) == sorted([*found, *REPOSITORY_PACKAGES])
    for package in REPOSITORY_PACKAGES:  # each placeholder is one __init__.py that refuses, nothing else
        folder = ROOT / config["package-dir"][package]
        assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == ["__init__.py"]
        assert "refuse(__name__)" in (folder / "__init__.py").read_text()


@pytest.mark.parametrize("package", REPOSITORY_PACKAGES)
def test_python_m_outside_a_checkout_says_where_to_run_it_in_one_line(package, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", package, "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"error: {hint(package)}"]
    assert "repository root" in done.stderr
    imported = subprocess.run([sys.executable, "-c", f"import {package}"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
    assert imported.returncode == 1
    assert f"ModuleNotFoundError: {hint(package)}" in imported.stderr


def test_in_a_checkout_the_real_packages_win():
    done = subprocess.run([sys.executable, "-c", "import training, export, demos; "
                           "print(training.__file__, export.__file__, demos.__file__)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(ROOT / p / "__init__.py") for p in ("training", "export", "demos")]


@pytest.mark.slow
def test_wheel_contains_only_constcl_zoo_and_the_placeholders(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"constcl_zoo", *REPOSITORY_PACKAGES, _dist_info(wheel)}
    assert sorted(n for n in names if n.split("/")[0] in REPOSITORY_PACKAGES) == [
        f"{p}/__init__.py" for p in sorted(REPOSITORY_PACKAGES)]
    assert "constcl_zoo/nn/layers/roi_align.py" in names
    shipped = ROOT / "constcl_zoo" / "models"
    if (shipped / "index.json").is_file():  # the default models and the sample travel in the wheel (offline use)
        expected = {f"constcl_zoo/models/{p.relative_to(shipped).as_posix()}" for p in shipped.rglob("*")
                    if p.is_file()}
        assert expected <= set(names), sorted(expected - set(names))


@pytest.mark.slow
def test_wheel_declares_the_apache_license_and_ships_its_text(wheel):
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"{_dist_info(wheel)}/METADATA").decode().splitlines()
        license_text = archive.read(f"{_dist_info(wheel)}/licenses/LICENSE").decode()
    assert "License-Expression: Apache-2.0" in metadata  # PEP 639 (core metadata 2.4)
    assert "License-File: LICENSE" in metadata
    assert not [line for line in metadata if line.startswith("License:")]  # no legacy free-text field
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
