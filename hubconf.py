"""PyTorch Hub entry points: ``torch.hub.load("<owner>/constcl-zoo", "constcl_r3d50", pretrained=False)`` (or a
local checkout with ``source="local"``). One entry point per registered architecture
(``constcl_zoo.list_models()``); each is :func:`constcl_zoo.load` of that name, so ``pretrained=True`` (the
default, as for ``load``) means the architecture's published default weights and keyword arguments (``branch``,
``task``, ``labels``, ``device``, ...) are ``load``'s.
"""

from __future__ import annotations

from typing import Any as _Any  # underscored: torch.hub.list() lists every public callable

dependencies = ["torch", "numpy", "safetensors", "huggingface_hub", "google_crc32c", "filelock"]


def _entry(arch: str) -> _Any:
    def entry(pretrained: bool = True, **kwargs: _Any) -> _Any:
        from constcl_zoo import load

        return load(arch, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = arch
    entry.__doc__ = (f"``constcl_zoo.load({arch!r}, pretrained=pretrained, **kwargs)``: the {arch} network "
                     f"(pretrained=True: its published default weights; False: a seeded random init).")
    return entry


def _register() -> list[str]:
    from constcl_zoo import list_models

    names = list_models()
    globals().update({name: _entry(name) for name in names})
    return names


__all__ = _register()
