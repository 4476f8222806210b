"""PyTorch Hub: ``hubconf.py`` at the repository root, loaded with ``torch.hub.load(repo, name, source="local")``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from constcl_zoo import list_models, load

ROOT = Path(__file__).resolve().parents[1]


def test_entry_points_are_the_registered_architectures() -> None:
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    public = sorted(n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_"))
    assert public == list_models()  # what torch.hub.list() shows: no helpers, no typing names
    assert "constcl_zoo.load('cvrl_r3d50'" in module.cvrl_r3d50.__doc__
    assert {"torch", "numpy", "safetensors"} <= set(module.dependencies)


def test_torch_hub_load_local_means_load() -> None:
    random = torch.hub.load(str(ROOT), "constcl_r3d14_w16", source="local", pretrained=False, seed=3)
    same = load("constcl_r3d14_w16", pretrained=False, seed=3)
    assert type(random) is type(same)
    for (name, a), b in zip(random.state_dict().items(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    shipped = torch.hub.load(str(ROOT), "constcl_r3d14_w16", source="local")  # pretrained=True: published weights
    reference = load("constcl_r3d14_w16")
    assert all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), reference.state_dict().values(),
                                                 strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), same.state_dict().values(),
                                                     strict=True))
    tracker = torch.hub.load(str(ROOT), "constcl_r3d14_w16", source="local", task="tracking")
    assert type(tracker).__name__ == type(load("constcl_r3d14_w16", task="tracking")).__name__
