"""Parity with the official ConST-CL TensorFlow code, against golden fixtures it produced.

``tests/fixtures/constcl_golden.npz`` was written by ``tests/parity/make_constcl_fixtures.py`` running the official
code (pinned by sha256 there). Weights are not stored: every TF variable is ``formula_value(name, shape)``. This
test builds those variables, converts them with our converter (the same mapping the TF checkpoint path uses),
loads the result with ``load()`` and compares every endpoint, both heads and both losses:
max |ours - official| <= 1e-4 * max |official| in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl_zoo import load
from constcl_zoo.checkpoint import write_checkpoint
from constcl_zoo.convert import convert_variables, model_variables
from constcl_zoo.formats.boxes import xyxy_to_yxyx
from training.pretrain.losses import global_contrastive_loss, local_contrastive_loss

from .conftest import reference_key_list
from .parity.formula import formula_input, formula_value

pytestmark = pytest.mark.slow  # full-size R3D-50 forwards

GOLDEN = Path(__file__).parent / "fixtures" / "constcl_golden.npz"
TOLERANCE = 1e-4
ENDPOINTS = {"2": "res2", "3": "res3", "4": "res4", "5": "res5", "5_1": "res5_region"}


@pytest.fixture(scope="module")
def golden():
    data = np.load(GOLDEN)
    return data, json.loads(bytes(data["meta_json"]).decode())


@pytest.fixture(scope="module")
def converted(golden, tmp_path_factory):
    _, meta = golden
    shapes = {k: tuple(v) for k, v in meta["variables"].items()}
    config, tensors, layout = convert_variables(shapes, lambda n: formula_value(n, shapes[n]),
                                                context_length=meta["context_length"])
    assert layout == "constcl" and config.arch == "constcl_r3d50"
    folder = write_checkpoint(config, tensors, tmp_path_factory.mktemp("golden") / "ckpt", branch="full")
    return load(folder, branch="full")


def _close(ours: np.ndarray, official: np.ndarray, scale: float | None = None, label: str = "") -> float:
    scale = float(np.abs(official).max()) if scale is None else scale
    err = float(np.abs(ours - official).max())
    assert ours.shape == official.shape
    assert scale > 0, "degenerate reference: all zeros"
    assert err <= TOLERANCE * scale, f"{label}: max |diff| {err:.3g} > {TOLERANCE} x {scale:.3g}"
    print(f"parity constcl {label}: max|ours-official|/max|official| = {err / scale:.2e}")
    return err / scale


def test_formula_variables_cover_the_official_checkpoint_layout(golden):
    """The fixture's variables are exactly the official trainer checkpoint's (reference key list)."""
    _, meta = golden
    official = model_variables(reference_key_list("constcl_ckpt_vars_TF2.20_random.txt"))
    assert {k: tuple(v) for k, v in meta["variables"].items()} == official


@pytest.mark.parametrize("case", ["16x224", "odd"])
def test_parity_constcl_endpoints_heads_losses(golden, converted, case):
    data, meta = golden
    *shape, seed = data[f"{case}/input_shape_seed"].tolist()
    clip = torch.from_numpy(formula_input(tuple(shape), seed)).permute(0, 4, 1, 2, 3)
    boxes = xyxy_to_yxyx(torch.from_numpy(data[f"{case}/boxes_keyframe_yxyx"]))
    with torch.no_grad():
        feats = converted.forward_features(clip, tuple(ENDPOINTS.values()))
        out = converted(clip, boxes)
    for tf_name, name in ENDPOINTS.items():
        keep = data[f"{case}/endpoint_{tf_name}/channels"]
        ours = feats[name].permute(0, 2, 3, 4, 1).numpy()[..., keep]
        _close(ours, data[f"{case}/endpoint_{tf_name}"], scale=float(data[f"{case}/endpoint_{tf_name}/absmax"]),
               label=f"{case} endpoint {tf_name} ({name})")
    for key in ("global_embeddings", "inst_a", "inst_b", "inst_a2b", "inst_b2a"):
        _close(out[key].numpy(), data[f"{case}/{key}"], label=f"{case} {key}")
    g = global_contrastive_loss(out["global_embeddings"], temperature=meta["global_temperature"])["loss"]
    local = local_contrastive_loss(out["inst_a"], out["inst_b"], out["inst_a2b"], out["inst_b2a"],
                                   target_a=out["target_a"], target_b=out["target_b"],
                                   temperature=meta["local_temperature"])["loss"]
    _close(np.array(g.item()), data[f"{case}/global_loss"], label=f"{case} global loss")
    _close(np.array(local.item()), data[f"{case}/local_loss"], label=f"{case} local loss")
