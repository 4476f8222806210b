"""Model configuration dataclasses; they serialise to the ``config.json`` stored beside the weights.

Every hyper-parameter that changes the network or the meaning of its weights lives here, together with the
preprocessing that belongs to the weights and where they came from. ``ModelConfig.from_dict`` is strict: an
unknown or missing field raises, so a ``config.json`` written by a newer or older release never loads silently
into the wrong network.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

CONFIG_FORMAT_VERSION = 1

Family = Literal["constcl", "cvrl"]


@dataclass(frozen=True)
class BackboneConfig:
    """R3D backbone (official TF ``ResNet3D`` / ``ResNet3DY``).

    ``temporal_kernels[i]`` lists the temporal kernel size of every block of stage ``res{i+2}``; its length is
    the number of blocks. ``width`` is the stem width; stage ``i`` has ``width * 2**i`` bottleneck filters and
    ``4 * width * 2**i`` output channels. ``region_branch`` builds the "Y": a second res5 fed from res4.
    """

    width: int = 64
    temporal_kernels: tuple[tuple[int, ...], ...] = ((1, 1, 1), (1, 1, 1, 1), (3, 3, 3, 3, 3, 3), (3, 3, 3))
    stem_kernel: tuple[int, int, int] = (5, 7, 7)
    stem_stride: tuple[int, int, int] = (2, 2, 2)
    stem_pool_kernel: tuple[int, int, int] = (1, 3, 3)
    stem_pool_stride: tuple[int, int, int] = (1, 2, 2)
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1  # PyTorch convention; TF norm_momentum 0.9
    region_branch: bool = True

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Output channels of res2..res5."""
        return tuple(4 * self.width * 2**i for i in range(len(self.temporal_kernels)))

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1]


@dataclass(frozen=True)
class GlobalHeadConfig:
    """Projection MLP on the pooled global branch: ``hidden_layers`` x [Linear -> BN -> ReLU] -> Linear.

    ConST-CL's MLP has no bias in the hidden Linear layers (BN momentum 0.9 in TF = 0.1 here); CVRL's has a bias
    and TF momentum 0.997 (= 0.003 here).
    """

    hidden_layers: int = 3
    hidden_dim: int = 2048
    out_dim: int = 128
    hidden_bias: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    normalize_inputs: bool = False


@dataclass(frozen=True)
class RegionHeadConfig:
    """Instance reconstructor on the region branch (paper §3.2, official ``InstanceReconstructor``).

    ``context_length`` frames of the target view's dense features (odd, strided around the key frame) form the
    memory that the transformer decoder queries. ``context_length=0`` is the paper's vanilla region-contrastive
    variant (Table 6, row "0"): no memory and no decoder; the ROI features go through an MLP shaped like the
    global head (``vanilla_mlp``), on both views.
    """

    context_length: int = 5
    crop_size: int = 4
    sample_offset: float = 0.5
    num_layers: int = 3
    num_heads: int = 3
    head_dim: int = 128
    layer_norm_eps: float = 1e-12
    dropout: float = 0.0
    positional_embedding: bool = True
    normalize_inputs: bool = True
    vanilla_mlp: GlobalHeadConfig = field(default_factory=GlobalHeadConfig)

    def __post_init__(self) -> None:
        if self.context_length < 0 or (self.context_length > 0 and self.context_length % 2 == 0):
            raise ValueError(
                f"context_length must be 0 (vanilla region contrast) or an odd number of frames, "
                f"got {self.context_length}"
            )


@dataclass(frozen=True)
class PreprocessConfig:
    """The preprocessing that belongs to the weights.

    A clip is ``num_frames`` frames taken every ``frame_stride`` decoded frames. Each frame is resized so its
    shorter side is ``resize_short_side`` (bilinear, antialiased), centre-cropped to ``crop_size`` x
    ``crop_size``, scaled from uint8 [0, 255] to ``value_range`` (official: [-1, 1], ``zero_centering_image``).
    """

    num_frames: int = 16
    frame_stride: int = 2
    crop_size: int = 224
    resize_short_side: int = 224
    value_range: tuple[float, float] = (-1.0, 1.0)
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    channel_order: Literal["rgb"] = "rgb"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network and use its weights."""

    arch: str
    family: Family = "constcl"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    global_head: GlobalHeadConfig = field(default_factory=GlobalHeadConfig)
    region_head: RegionHeadConfig | None = field(default_factory=RegionHeadConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family == "cvrl" and (self.region_head is not None or self.backbone.region_branch):
            raise ValueError("a 'cvrl' model has a single res5 and no region head")
        if self.region_head is not None and not self.backbone.region_branch:
            raise ValueError("a region head needs the backbone's region branch (backbone.region_branch=True)")

    @property
    def feature_dim(self) -> int:
        return self.backbone.out_channels

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": CONFIG_FORMAT_VERSION, **to_jsonable(dataclasses.asdict(self))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        version = data.pop("format_version", None)
        if version != CONFIG_FORMAT_VERSION:
            raise ValueError(
                f"config format_version {version!r} is not supported (this release reads {CONFIG_FORMAT_VERSION})"
            )
        data.pop("weights", None)  # integrity record written by save_pretrained, not a model field
        return dataclass_from_dict(cls, data, path="config")

    def to_json(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        payload = self.to_dict()
        if extra:
            payload.update(extra)
        Path(path).write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


def to_jsonable(value: Any) -> Any:
    """``dataclasses.asdict`` output -> JSON types (tuples become lists)."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def dataclass_from_dict(cls: type, data: Any, path: str = "config", numbers_as_str: bool = False) -> Any:
    """Build dataclass ``cls`` from JSON data, strictly: unknown or missing fields and wrong types raise, naming
    the dotted ``path`` of the bad value. ``numbers_as_str`` accepts numbers for ``str`` fields (command-line
    overrides parse ``-o run.name=1`` as a number)."""
    if not isinstance(data, dict):
        raise TypeError(f"{path}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{path}: missing field '{name}'")
            continue
        kwargs[name] = _coerce(hints[name], data[name], f"{path}.{name}", numbers_as_str)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str, numbers_as_str: bool) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return dataclass_from_dict(hint, value, path, numbers_as_str)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path, numbers_as_str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]", numbers_as_str) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{path}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{path}[{i}]", numbers_as_str)
                     for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if numbers_as_str and hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint in (int, float, bool, str) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise TypeError(f"{path}: expected {hint.__name__}, got {type(value).__name__}")
    return value
