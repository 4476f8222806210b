from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from constcl_zoo import load

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY = "constcl_r3d14_w16"


def reference_key_list(name: str) -> dict[str, tuple[int, ...]]:
    """A key list of an official TF checkpoint from ../shared/reference (``key<TAB>[shape]`` lines)."""
    listing = SHARED / "reference" / name
    if not listing.exists():
        pytest.skip(f"{listing} not found: ../shared/reference is not beside this checkout")
    shapes = {}
    for line in listing.read_text().splitlines():
        key, shape = line.split("\t")
        shapes[key] = tuple(json.loads(shape))
    return shapes


def tiny_clip(batch: int = 2, frames: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def random_boxes(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, n, 2, generator=gen) * 0.6
    wh = 0.1 + torch.rand(batch, n, 2, generator=gen) * 0.3
    return torch.cat([xy, xy + wh], dim=-1)


@pytest.fixture(scope="session")
def tiny_full():
    """A tiny ConST-CL pretraining network with non-trivial BN statistics."""
    model = load(TINY, branch="full", pretrained=False, seed=3)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(len(name)))
            elif name.endswith("running_mean"):
                buf.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_full) -> Path:
    return tiny_full.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")
