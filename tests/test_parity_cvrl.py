"""Parity with the official CVRL code, run live from the tf-models-official wheel in an isolated venv.

``.ci/tf-venv`` prepares that venv (outside the repository) and CI exports ``CONSTCL_TF_PYTHON``. The official
script builds the published CVRL R3D-50 with formula weights, writes checkpoints in the published layouts (and a
tarball shaped like ``r3d_1x_k600_800ep.tar.gz``) and its outputs; we convert and compare every endpoint, the
pooled feature and the head: max |ours - official| <= 1e-4 * max |official| in float32.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl_zoo import load
from training.__main__ import main as training_main

HERE = Path(__file__).parent
TF_PYTHON = Path(os.environ.get("CONSTCL_TF_PYTHON",
                                Path.home() / ".cache/constcl-zoo/tf-venv/bin/python")).expanduser()
TOLERANCE = 1e-4
pytestmark = pytest.mark.slow  # the official code in TensorFlow, full-size R3D-50 forwards


def _require_tf() -> None:
    if TF_PYTHON.is_file():
        return
    message = f"no TensorFlow venv at {TF_PYTHON}; run `bash .ci/tf-venv` (CI always does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    _require_tf()
    out = tmp_path_factory.mktemp("official_cvrl")
    proc = subprocess.run([str(TF_PYTHON), str(HERE / "parity" / "official_cvrl.py"), str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _close(ours: np.ndarray, official: np.ndarray, label: str) -> None:
    scale = float(np.abs(official).max())
    err = float(np.abs(ours - official).max())
    assert ours.shape == official.shape and scale > 0
    assert err <= TOLERANCE * scale, f"{label}: max |diff| {err:.3g} > {TOLERANCE} x {scale:.3g}"
    print(f"parity cvrl {label}: max|ours-official|/max|official| = {err / scale:.2e}")


@pytest.mark.parametrize("case", ["16x224", "odd"])
def test_parity_cvrl_endpoints_and_head(official, tmp_path, case):
    folder = tmp_path / "full"
    assert training_main(["convert-tf", str(official / "full_ckpt"), "--out", str(folder)]) == 0
    model = load(folder, branch="full")
    data = np.load(official / f"outputs_{case}.npz")
    clip = torch.from_numpy(data["input"]).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        feats = model.forward_features(clip, ("res2", "res3", "res4", "res5"))
        head = model(clip)["global_embeddings"]
    for i, name in enumerate(("res2", "res3", "res4", "res5"), start=2):
        _close(feats[name].permute(0, 2, 3, 4, 1).numpy(), data[f"endpoint_{i}"], f"{case} endpoint {i} ({name})")
    _close(head.numpy(), data["head"], f"{case} head")


def test_parity_cvrl_published_tarball_loads_to_official_pooled_features(official, tmp_path):
    """The published layout (backbone-only TF2 checkpoint in a tarball): load(tarball) converts into the cache,
    then load(registry name) finds it offline, and the pooled features equal the official model's."""
    cache = tmp_path / "cache"
    data = np.load(official / "outputs_odd.npz")
    clip = torch.from_numpy(data["input"]).permute(0, 4, 1, 2, 3)
    first = load(official / "r3d_1x_k600_800ep.tar.gz", cache_dir=cache)
    again = load("cvrl_r3d50.k600_800ep", cache_dir=cache)
    assert again.config.provenance["name"] == "cvrl_r3d50.k600_800ep"
    assert again.config.provenance["converted_from"].endswith("/r3d_1x_k600_800ep.tar.gz")
    with torch.no_grad():
        pooled = first(clip)
        assert torch.equal(again(clip), pooled)
    _close(pooled.numpy(), data["pooled"], "tarball pooled features")
    region = load("cvrl_r3d50.k600_800ep", cache_dir=cache, branch="region")  # CVRL: one res5 for both
    with torch.no_grad():
        _close(region(clip).permute(0, 2, 3, 4, 1).numpy(), data["endpoint_5"], "tarball region branch res5")
    with pytest.raises(Exception, match="missing keys"):
        load("cvrl_r3d50.k600_800ep", cache_dir=cache, branch="full")  # a backbone checkpoint has no head
