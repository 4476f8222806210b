"""The README quickstart runs as written (docs/quickstart.md includes these blocks from the README)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path, monkeypatch):
    block = re.search(r"## Quickstart\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["emb"].shape == (1, 2048)
    assert [tuple(v.shape) for v in scope["feats"].values()] == [(1, 512, 8, 28, 28), (1, 1024, 8, 14, 14),
                                                                 (1, 2048, 8, 7, 7)]
    assert scope["dense"].shape == (1, 2048, 8, 7, 7) and scope["roi"].shape == (1, 1, 2048)
    with torch.inference_mode():
        assert torch.equal(scope["same"](scope["clip"][None]), scope["emb"])


def test_readme_task_models_example_runs(tmp_path, monkeypatch):
    block = re.search(r"### Task models\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert type(scope["clf"]).__name__ == "VideoClassifier" and scope["clf"].labels == ("a", "b")
    assert len(scope["result"].top) == 2 and scope["logits"].shape == (1, 3)
    assert (tmp_path / "my_classifier" / "config.json").is_file()
