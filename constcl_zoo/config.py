"""Model configuration dataclasses; they serialise to the ``config.json`` stored beside the weights.

Every hyper-parameter that changes the network or the meaning of its weights lives here, together with the
preprocessing that belongs to the weights and where they came from. ``ModelConfig.from_dict`` is strict: an
unknown or missing field raises, so a ``config.json`` written by a newer or older release never loads silently
into the wrong network.

An *architecture* is a named ``ModelConfig``: :func:`register_arch` keeps the table (the built-in ones are in
:mod:`constcl_zoo.archs`; :mod:`constcl_zoo.registry` lists them beside the weights), and a config read from a file
must name one (:func:`check_registered_arch`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConstclZooError, InvalidArgumentError, InvalidTypeError

CONFIG_FORMAT_VERSION = 1

Family = Literal["constcl", "cvrl"]

# Bounds a config must stay within before anything is built. They keep a hostile or mistyped config.json from
# asking for absurd networks or buffers, and sit far above every published or sensible model.
MAX_WIDTH = 1024  # backbone stem width (R3D-50: 64)
MAX_BLOCKS_PER_STAGE = 64  # residual blocks in one stage (R3D-152: 36)
MAX_KERNEL = 15  # any conv / pool kernel extent
MAX_STRIDE = 8
MAX_DIM = 65536  # MLP widths, head sizes
MAX_LAYERS = 64  # MLP hidden layers, decoder layers and heads
MAX_CONTEXT_LENGTH = 63
MAX_ROI_CROP = 64  # ROIAlign output side (official: 4)
MAX_NUM_FRAMES = 1024  # frames in one clip
MAX_FRAME_STRIDE = 1024
MAX_IMAGE_SIZE = 8192  # crop_size, resize_short_side (constcl_zoo.inference.video.MAX_FRAME_SIDE)


class ConfigError(ConstclZooError, ValueError):
    """A config value out of its range, of the wrong type or not one of the allowed strings (names the field)."""


MAX_CONFIG_BYTES = 4 << 20  # the shipped configs are 2-3 KB; provenance records stay far below this


def read_config_json(path: str | Path, error: type[ConstclZooError] | None = None) -> Any:
    """The parsed JSON of a ``config.json``, read with a size cap (:data:`MAX_CONFIG_BYTES`): a file that is over it,
    not UTF-8, not JSON or nested too deeply raises ``error`` (default :class:`ConfigError`) naming the file."""
    error = error or ConfigError
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise error(f"{path}: over {MAX_CONFIG_BYTES >> 20} MB — not a constcl-zoo config.json")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}) — not a config.json") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply — not a config.json") from None


def _fail(owner: object, name: str, value: Any, need: str) -> None:
    raise ConfigError(f"{type(owner).__name__}.{name} = {value!r}: {need}")


def _check_int(owner: object, name: str, lo: int, hi: int, value: Any = None) -> None:
    value = getattr(owner, name) if value is None else value
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        _fail(owner, name, value, f"must be an integer in [{lo}, {hi}]")


def _check_float(owner: object, name: str, lo: float, hi: float, *, open_lo: bool = False,
                 open_hi: bool = False) -> None:
    value = getattr(owner, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
        (value > lo if open_lo else value >= lo) and (value < hi if open_hi else value <= hi)
    if not ok:
        _fail(owner, name, value, f"must be a finite number in {'(' if open_lo else '['}{lo:g}, {hi:g}"
                                  f"{')' if open_hi else ']'}")


def _check_ints(owner: object, name: str, length: int, lo: int, hi: int) -> None:
    value = getattr(owner, name)
    if not isinstance(value, tuple) or len(value) != length or not all(
            isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value):
        _fail(owner, name, value, f"must be {length} integers in [{lo}, {hi}]")


def _check_choices(owner: object) -> None:
    """Fields typed ``Literal[...]`` (or ``bool``) hold one of their allowed values."""
    for name, hint in typing.get_type_hints(type(owner)).items():
        value = getattr(owner, name)
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            _fail(owner, name, value, f"must be one of {list(typing.get_args(hint))}")
        if hint is bool and not isinstance(value, bool):
            _fail(owner, name, value, "must be true or false")


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

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_int(self, "width", 1, MAX_WIDTH)
        kernels = self.temporal_kernels
        if not isinstance(kernels, tuple) or len(kernels) != 4 or not all(
                isinstance(stage, tuple) and 1 <= len(stage) <= MAX_BLOCKS_PER_STAGE for stage in kernels):
            _fail(self, "temporal_kernels", kernels, f"must list 4 stages (res2..res5) of 1 to "
                                                    f"{MAX_BLOCKS_PER_STAGE} temporal kernel sizes")
        for stage in kernels:
            for k in stage:
                _check_int(self, "temporal_kernels", 1, MAX_KERNEL, k)
        _check_ints(self, "stem_kernel", 3, 1, MAX_KERNEL)
        _check_ints(self, "stem_stride", 3, 1, MAX_STRIDE)
        _check_ints(self, "stem_pool_kernel", 3, 1, MAX_KERNEL)
        _check_ints(self, "stem_pool_stride", 3, 1, MAX_STRIDE)
        _check_float(self, "bn_eps", 0.0, 1.0, open_lo=True)
        _check_float(self, "bn_momentum", 0.0, 1.0)

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

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_int(self, "hidden_layers", 0, MAX_LAYERS)
        _check_int(self, "hidden_dim", 1, MAX_DIM)
        _check_int(self, "out_dim", 1, MAX_DIM)
        _check_float(self, "bn_eps", 0.0, 1.0, open_lo=True)
        _check_float(self, "bn_momentum", 0.0, 1.0)


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
        _check_choices(self)
        _check_int(self, "context_length", 0, MAX_CONTEXT_LENGTH)
        if self.context_length > 0 and self.context_length % 2 == 0:
            _fail(self, "context_length", self.context_length,
                  "must be 0 (vanilla region contrast) or an odd number of frames")
        _check_int(self, "crop_size", 1, MAX_ROI_CROP)
        _check_float(self, "sample_offset", 0.0, 1.0)
        _check_int(self, "num_layers", 1, MAX_LAYERS)
        _check_int(self, "num_heads", 1, MAX_LAYERS)
        _check_int(self, "head_dim", 1, MAX_DIM)
        _check_float(self, "layer_norm_eps", 0.0, 1.0, open_lo=True)
        _check_float(self, "dropout", 0.0, 1.0, open_hi=True)
        if not isinstance(self.vanilla_mlp, GlobalHeadConfig):
            _fail(self, "vanilla_mlp", self.vanilla_mlp, "must be a GlobalHeadConfig")


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

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_int(self, "num_frames", 1, MAX_NUM_FRAMES)
        _check_int(self, "frame_stride", 1, MAX_FRAME_STRIDE)
        _check_int(self, "crop_size", 1, MAX_IMAGE_SIZE)
        _check_int(self, "resize_short_side", self.crop_size, MAX_IMAGE_SIZE)  # the crop fits the resized frame
        lo_hi = self.value_range
        if not (isinstance(lo_hi, tuple) and len(lo_hi) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in lo_hi)
                and lo_hi[0] < lo_hi[1]):
            _fail(self, "value_range", lo_hi, "must be two finite numbers (low, high) with low < high")


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
        _check_choices(self)
        if not isinstance(self.arch, str) or not self.arch.strip():
            _fail(self, "arch", self.arch, "must be a non-empty architecture name")
        for name, kind in (("backbone", BackboneConfig), ("global_head", GlobalHeadConfig),
                           ("preprocess", PreprocessConfig)):
            if not isinstance(getattr(self, name), kind):
                _fail(self, name, getattr(self, name), f"must be a {kind.__name__}")
        if self.region_head is not None and not isinstance(self.region_head, RegionHeadConfig):
            _fail(self, "region_head", self.region_head, "must be a RegionHeadConfig or None")
        if self.family == "cvrl" and (self.region_head is not None or self.backbone.region_branch):
            raise ConfigError("a 'cvrl' model has a single res5 and no region head")
        if self.region_head is not None and not self.backbone.region_branch:
            raise ConfigError("a region head needs the backbone's region branch (backbone.region_branch=True)")

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
            raise InvalidArgumentError(
                f"config format_version {version!r} is not supported (this release reads {CONFIG_FORMAT_VERSION})"
            )
        data.pop("weights", None)  # integrity record written by save_pretrained, not a model field
        config = dataclass_from_dict(cls, data, path="config")
        check_registered_arch(config)
        return config

    def to_json(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write ``config.json`` (plus ``extra`` top-level records), atomically."""
        from .fileio import atomic_write

        payload = self.to_dict()
        if extra:
            payload.update(extra)
        atomic_write(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        data = read_config_json(path)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc


def custom_arch_name(family: str) -> str:
    """The ``arch`` of a converted official checkpoint whose shapes are no registered architecture's."""
    return f"{family}_r3d_custom"


# -- architectures: named configs ----------------------------------------------------------------------------------
_ARCHS: dict[str, Callable[[], ModelConfig]] = {}


def register_arch(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Decorator: register an architecture (a function returning its :class:`ModelConfig`) under the function's
    name."""
    if fn.__name__ in _ARCHS:
        raise InvalidArgumentError(f"architecture {fn.__name__!r} is already registered")
    _ARCHS[fn.__name__] = fn
    return fn


def is_arch(name: str) -> bool:
    """Whether ``name`` is a registered architecture."""
    return name in _ARCHS


def arch_names() -> list[str]:
    """The registered architectures, sorted."""
    return sorted(_ARCHS)


def registered_arch_config(name: str) -> ModelConfig:
    """The configuration of registered architecture ``name`` (``KeyError`` if there is none;
    :func:`constcl_zoo.registry.arch_config` says what exists instead)."""
    return _ARCHS[name]()


def check_registered_arch(config: ModelConfig) -> None:
    """A config read from a file names a registered architecture of its family, or is a converted checkpoint of
    custom shapes (:func:`custom_arch_name`); ``"arch"`` is how a checkpoint says what it is, so an unknown name or
    a family that is not the architecture's is refused."""
    customs = {custom_arch_name(f): f for f in typing.get_args(Family)}
    if not is_arch(config.arch) and config.arch not in customs:
        raise ConfigError(f"config.arch: {config.arch[:60]!r} is not a registered architecture "
                          f"(one of {', '.join(arch_names())}; or {', '.join(customs)} for a converted "
                          f"checkpoint of other shapes)")
    family = customs[config.arch] if config.arch in customs else registered_arch_config(config.arch).family
    if config.family != family:
        raise ConfigError(f"config.family: {config.family!r}, but architecture {config.arch!r} is a {family!r} model")


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
        raise InvalidTypeError(f"{path}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {unknown}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: missing field '{name}'")
            continue
        kwargs[name] = _coerce(hints[name], data[name], f"{path}.{name}", numbers_as_str)
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # say where in the file the bad value is
        if str(exc).startswith(f"{path}"):
            raise
        raise ConfigError(f"{path}: {exc}") from None


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
        return _coerce_tuple(args, value, path, numbers_as_str)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if numbers_as_str and hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint in (int, float, bool, str) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise InvalidTypeError(f"{path}: expected {hint.__name__}, got {type(value).__name__}")
    return value


def _coerce_tuple(args: tuple, value: Any, path: str, numbers_as_str: bool) -> tuple:
    """A JSON list -> ``tuple[X, ...]`` (any length) or ``tuple[X, Y]`` (exactly as many values as types)."""
    if not isinstance(value, (list, tuple)):
        raise InvalidTypeError(f"{path}: expected a list, got {type(value).__name__}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v, f"{path}[{i}]", numbers_as_str) for i, v in enumerate(value))
    if len(args) != len(value):
        raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
    return tuple(_coerce(a, v, f"{path}[{i}]", numbers_as_str)
                 for i, (a, v) in enumerate(zip(args, value, strict=True)))
