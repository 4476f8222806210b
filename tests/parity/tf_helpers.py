"""TensorFlow-side helpers for the parity scripts (run only inside the TensorFlow venv)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from formula import formula_value

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def assign_formula_weights(ckpt: tf.train.Checkpoint, variables: list[tf.Variable]) -> dict[str, tuple[int, ...]]:
    """Set every variable to ``formula_value(checkpoint key, shape)``; return the keys' shapes.

    Checkpoint keys are found by tagging each variable with a unique value, writing ``ckpt`` once and matching
    the values read back, so the names are exactly those a checkpoint of ``ckpt`` contains.
    """
    rng = np.random.default_rng(0)
    tags = {}
    for var in variables:
        tag = rng.standard_normal(var.shape).astype(np.float32) + len(tags) * 1000.0
        var.assign(tag)
        tags[id(var)] = tag
    with tempfile.TemporaryDirectory() as tmp:
        path = ckpt.write(str(Path(tmp) / "tags"))
        reader = tf.train.load_checkpoint(path)
        by_value = {}
        for key in reader.get_variable_to_shape_map():
            if key.endswith(SUFFIX) and "OPTIMIZER" not in key:
                value = reader.get_tensor(key)
                if value.dtype == np.float32 and value.size:
                    by_value[(value.shape, float(value.flat[0]), float(value.sum()))] = key
    shapes = {}
    for var in variables:
        tag = tags[id(var)]
        key = by_value.pop((tag.shape, float(tag.flat[0]), float(tag.sum())))
        name = key.removesuffix(SUFFIX)
        var.assign(formula_value(name, tuple(var.shape)))
        shapes[name] = tuple(var.shape)
    return shapes
