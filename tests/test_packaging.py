"""The layout rules: only ``constcl_zoo`` goes into the wheel, and it never imports the repository packages."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_wheel_contains_only_constcl_zoo(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"constcl_zoo", _dist_info(wheel)}
    assert "constcl_zoo/layers/roi_align.py" in names
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
