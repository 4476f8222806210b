"""Regenerate the ConST-CL golden fixtures with the official TensorFlow code.

ConST-CL's code (``official/projects/const_cl``) is in no pip wheel, so CI cannot run it; this script runs it once
and stores what it computed in ``tests/fixtures/constcl_golden.npz`` (weights are not stored: every variable is
``formula.formula_value(checkpoint key, shape)``). Run it in the TensorFlow venv `.ci/run` prepares, with a
checkout of tensorflow/models whose ``official/projects/const_cl`` files have the sha256 digests pinned below
(the files as of the commits listed; ``official`` itself comes from the tf-models-official 2.20.0 wheel):

    $TF_PYTHON tests/parity/make_constcl_fixtures.py --models-dir /path/to/tensorflow/models

The model is built as the official trainer builds it: the ``const_cl_pretrain_kinetics400`` experiment
overridden with ``const_cl_pretrain_k400_200k.yaml`` (minus its broken ``dropout_rate`` key), then the registered
``const_cl_model`` builder. Losses are the official ``ContrastiveLoss`` (τ 0.1) and ``InstanceContrastiveLoss``
(τ 0.2) fed as ``tasks/const_cl.py`` feeds them. Endpoints are stored for 8 channels (every C/8-th) at every
position, which keeps the file small and still covers every border where TF 'same' padding matters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from formula import formula_input  # noqa: E402

PINNED = {  # path: (commit the file was read at, sha256)
    "official/projects/const_cl/modeling/backbones/resnet_3d.py":
        ("2d4642ecfd09e30258a398ac25dd3b77cec4a51c",
         "5bfade0e7e74a5de56b524583fa6dc7d1e8505b37e98e2285414b9d72c86125c"),
    "official/projects/const_cl/modeling/backbones/nn_blocks_3d.py":
        ("0cfd9ba1d8e6ce0ea5114c6a0b894fc86e301ade",
         "e85fee38501f2edd94c242d1c2cabc839a608a4a115a0bd85108405e0a143f48"),
    "official/projects/const_cl/modeling/heads/simple.py":
        ("0ca414d5209edfddf5b018b6ca8b7d48e4f976ec",
         "f5a9e7e81f8cbaac8098a0e94738083e19a45834f0c14e65733ec77cc1d0b277"),
    "official/projects/const_cl/modeling/heads/instance_reconstructor.py":
        ("10e77a694567c5bb3f03bd6b5f61ace568b57edc",
         "21dcb3a05b2f7f306e48b4ed203c2b00c78ce2797b6beed30f790c0721b58033"),
    "official/projects/const_cl/modeling/heads/transformer_decoder.py":
        ("10e77a694567c5bb3f03bd6b5f61ace568b57edc",
         "99de8f17840f52734e3c54b15904c3d5914a3443acb1f78d09f6e7695f4e9989"),
    "official/projects/const_cl/modeling/const_cl_model.py":
        ("0ca414d5209edfddf5b018b6ca8b7d48e4f976ec",
         "472f1296b0b6a382b4bb93e2c7283746be53c554c729739dee3c5d6e7e8ea277"),
    "official/projects/const_cl/losses/losses.py":
        ("0ca414d5209edfddf5b018b6ca8b7d48e4f976ec",
         "e702a72acc44955acb32a83809edd129488d533a619a9bf6f0d2d258eac2daec"),
    "official/projects/const_cl/configs/const_cl.py":
        ("0ca414d5209edfddf5b018b6ca8b7d48e4f976ec",
         "56323c871993c24a6e8c79b33987e47962c0ed09e32f5312b8c84f6653f92c2e"),
    "official/projects/const_cl/configs/backbones_3d.py":
        ("0ca414d5209edfddf5b018b6ca8b7d48e4f976ec",
         "76b221cf932ed4bca5cd31374135ac8e6ae287e54130f5a1acead73870aabf1a"),
    "official/projects/const_cl/configs/head.py":
        ("0ca414d5209edfddf5b018b6ca8b7d48e4f976ec",
         "d6589d3f9afe75422feb1938df8b6115ea97c5626586d859b108c2e482b5ae57"),
}
YAML = HERE.parents[2] / "shared/reference/official-configs/const_cl_pretrain_k400_200k.yaml"
# case: (clip shape NTHWC with both views stacked, input seed)
CASES = {"16x224": ((4, 16, 224, 224, 3), 21), "odd": ((4, 15, 97, 89, 3), 22)}
NUM_BOXES = 8
KEPT_CHANNELS = 8


def check_sources(models_dir: Path) -> None:
    for rel, (_, digest) in PINNED.items():
        path = models_dir / rel
        if not path.is_file():
            sys.exit(f"{path}: missing; --models-dir must be a checkout of tensorflow/models")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != digest:
            sys.exit(f"{path}: sha256 {actual} differs from the pinned {digest}")


def random_boxes(n: int, t: int, seed: int) -> np.ndarray:
    """Valid normalised [ymin, xmin, ymax, xmax] boxes, [N, T, NUM_BOXES, 4] (TF order)."""
    rng = np.random.default_rng(seed)
    y1x1 = rng.uniform(0.0, 0.7, (n, t, NUM_BOXES, 2))
    hw = rng.uniform(0.05, 0.3, (n, t, NUM_BOXES, 2))
    return np.concatenate([y1x1, np.minimum(y1x1 + hw, 1.0)], axis=-1).astype(np.float32)


def channel_subset(channels: int) -> np.ndarray:
    return np.arange(0, channels, channels // KEPT_CHANNELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE.parent / "fixtures" / "constcl_golden.npz")
    args = parser.parse_args()
    check_sources(args.models_dir)

    import official.projects
    import tensorflow as tf
    import tf_keras

    official.projects.__path__.append(str(args.models_dir / "official" / "projects"))
    from official.core import exp_factory
    from official.projects.const_cl.configs import const_cl as const_cl_cfg  # noqa: F401  (experiments)
    from official.projects.const_cl.losses import losses
    from official.projects.const_cl.modeling import const_cl_model
    from official.projects.const_cl.modeling.backbones import resnet_3d  # noqa: F401  (backbone builder)
    from official_cvrl import load_yaml
    from tf_helpers import assign_formula_weights

    exp = exp_factory.get_exp_config("const_cl_pretrain_kinetics400")
    overrides = load_yaml(YAML)["task"]["model"]
    overrides.pop("dropout_rate")
    exp.override({"task": {"model": overrides}}, is_strict=True)
    cfg = exp.task.model
    global_loss = losses.ContrastiveLoss(normalize_inputs=True, temperature=0.1)
    local_loss = losses.InstanceContrastiveLoss(normalize_inputs=True, temperature=0.2)
    arrays: dict[str, np.ndarray] = {}
    all_shapes: dict[str, tuple[int, ...]] = {}
    for case, (shape, seed) in CASES.items():
        # The ROI aligner needs static feature sizes, so the functional model is built per input size; the
        # formula gives both builds the same weights.
        t, h, w = shape[1:4]
        specs = {"image": tf_keras.layers.InputSpec(shape=[None, t, h, w, 3]),
                 "instances_position": tf_keras.layers.InputSpec(shape=[None, t, NUM_BOXES, 4]),
                 "instances_mask": tf_keras.layers.InputSpec(shape=[None, t, NUM_BOXES])}
        model = const_cl_model.build_const_cl_pretrain_model(specs, cfg, num_classes=400)
        shapes = assign_formula_weights(tf.train.Checkpoint(backbone=model.backbone, model=model), model.variables)
        if all_shapes and shapes != all_shapes:
            raise RuntimeError("the two builds have different variables")
        all_shapes = shapes
        x = formula_input(shape, seed)
        boxes = random_boxes(shape[0], shape[1], seed + 100)
        mask = np.ones(boxes.shape[:3], dtype=bool)
        endpoints = model.backbone(x, training=False)
        out = model({"image": x, "instances_position": boxes, "instances_mask": mask}, training=False)
        g = global_loss(out["global_embeddings"])
        local = local_loss({"instances_a2b": out["inst_a2b"], "instances_b2a": out["inst_b2a"],
                            "instances_a": out["inst_a"], "instances_b": out["inst_b"],
                            "masks_a": out["masks_a"], "masks_b": out["masks_b"]})
        arrays[f"{case}/input_shape_seed"] = np.array([*shape, seed])  # regenerated by formula_input
        arrays[f"{case}/boxes_keyframe_yxyx"] = boxes[:, shape[1] // 2]
        for name, value in endpoints.items():
            value = value.numpy()
            keep = channel_subset(value.shape[-1])
            arrays[f"{case}/endpoint_{name}/channels"] = keep
            arrays[f"{case}/endpoint_{name}"] = value[..., keep]
            arrays[f"{case}/endpoint_{name}/absmax"] = np.abs(value).max()
        for key in ("global_embeddings", "inst_a", "inst_b", "inst_a2b", "inst_b2a"):
            arrays[f"{case}/{key}"] = out[key].numpy()
        arrays[f"{case}/global_loss"] = g["loss"].numpy()
        arrays[f"{case}/local_loss"] = local["loss"].numpy()
    meta = {"variables": {k: list(v) for k, v in sorted(all_shapes.items())},
            "sources": {k: {"commit": c, "sha256": d} for k, (c, d) in PINNED.items()},
            "tensorflow": tf.__version__, "context_length": cfg.local_head.context_level,
            "global_temperature": 0.1, "local_temperature": 0.2}
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
