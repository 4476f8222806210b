"""Deterministic "random" weights defined by a formula, so golden fixtures need not store them.

Both the official-code side (a TensorFlow venv) and our tests import this file; it needs only numpy. A variable's
values depend only on its TF name and shape: a PCG64 stream seeded with the name's CRC32, scaled like a sensible
initialisation (kernels ~ N(0, 1/fan_in), BN statistics and scales near their usual values) so activations stay
in a normal range through 50 layers.
"""

from __future__ import annotations

import zlib

import numpy as np


def formula_value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values for TF variable ``name`` (without ``/.ATTRIBUTES/VARIABLE_VALUE``)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "kernel":
        fan_in = int(np.prod(shape[:-1]))
        return (rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)).astype(np.float32)
    if leaf in ("gamma", "moving_variance"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if leaf in ("beta", "bias", "moving_mean"):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    raise ValueError(f"no formula for variable {name}")


def formula_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A clip in [-1, 1] (the official value range), channels-last as TF takes it."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)
