"""Run the official CVRL model (tf-models-official wheel) with formula weights; save checkpoints and outputs.

Runs in the TensorFlow venv that `.ci/run` prepares (never imported by the test process):

    $TF_PYTHON tests/parity/official_cvrl.py OUT_DIR

The model is built the official way: the `video_ssl_pretrain_kinetics600` experiment, overridden with the
published CVRL yaml (`../shared/reference/official-configs/cvrl_pretrain_k600_200ep.yaml`, whose `dropout_rate`
key the strict override rejects, so it is dropped), then `factory_3d.build_model`. Every variable is set from
`formula.py`. Writes, under OUT_DIR:

- `backbone_ckpt/ckpt-1.*` (`tf.train.Checkpoint(backbone=...)`, the published layout), the same packed as
  `r3d_1x_k600_800ep.tar.gz` (`r3d_1x_k600_800ep/r3d_1x_k600_800ep_backbone-1.*`, as the real tarball);
- `full_ckpt/ckpt-1.*` (`tf.train.Checkpoint(backbone=..., model=...)`);
- `outputs_<case>.npz`: the input clip (NTHWC), endpoints 2..5, the pooled feature and the head output.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml
from official.core import exp_factory
from official.projects.video_ssl.configs import video_ssl  # noqa: F401  (registers the experiments)
from official.projects.video_ssl.modeling import video_ssl_model  # noqa: F401  (registers the builder)
from official.vision.modeling import factory_3d

sys.path.insert(0, str(Path(__file__).parent))
from formula import formula_input
from tf_helpers import assign_formula_weights

YAML = Path(__file__).resolve().parents[3] / "shared/reference/official-configs/cvrl_pretrain_k600_200ep.yaml"
CASES = {"16x224": ((1, 16, 224, 224, 3), 11), "odd": ((2, 15, 97, 89, 3), 12)}


class _TupleLoader(yaml.SafeLoader):
    """SafeLoader that also reads the ``!!python/tuple`` tags the official yaml files use (as lists)."""


_TupleLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


def load_yaml(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_TupleLoader)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    exp = exp_factory.get_exp_config("video_ssl_pretrain_kinetics600")
    overrides = load_yaml(YAML)
    overrides["task"]["model"].pop("dropout_rate", None)
    exp.override({"task": {"model": overrides["task"]["model"]}}, is_strict=True)
    model_cfg = exp.task.model
    input_specs = tf.keras.layers.InputSpec(shape=[None, None, None, None, 3])
    model = factory_3d.build_model(model_cfg.model_type, input_specs, model_cfg, num_classes=600)

    assign_formula_weights(tf.train.Checkpoint(backbone=model.backbone, model=model), model.variables)

    tf.train.Checkpoint(backbone=model.backbone).write(str(out / "backbone_ckpt" / "ckpt-1"))
    tf.train.Checkpoint(backbone=model.backbone, model=model).write(str(out / "full_ckpt" / "ckpt-1"))
    with tarfile.open(out / "r3d_1x_k600_800ep.tar.gz", "w:gz") as tar:
        for f in sorted((out / "backbone_ckpt").glob("ckpt-1.*")):
            tar.add(f, arcname=f"r3d_1x_k600_800ep/r3d_1x_k600_800ep_backbone-1{f.name[len('ckpt-1'):]}")

    for case, (shape, seed) in CASES.items():
        x = formula_input(shape, seed)
        endpoints = model.backbone(x, training=False)
        pooled = tf.reduce_mean(endpoints["5"], axis=[1, 2, 3])
        head = model(x, training=False)
        np.savez(out / f"outputs_{case}.npz", input=x, pooled=pooled.numpy(), head=head.numpy(),
                 **{f"endpoint_{k}": v.numpy() for k, v in endpoints.items()})
    print("official CVRL outputs written to", out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
