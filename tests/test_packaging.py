"""The layout rules: only ``constcl_zoo`` goes into the wheel, and it never imports the repository packages."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

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


def test_wheel_contains_only_constcl_zoo(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("constcl_zoo-*.whl")
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert top == {"constcl_zoo", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "constcl_zoo/layers/roi_align.py" in zipfile.ZipFile(wheel).namelist()
