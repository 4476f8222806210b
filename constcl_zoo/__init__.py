"""ConST-CL video representations in PyTorch: ``from constcl_zoo import load``.

>>> encoder = load()                                          # the shipped small ConST-CL, offline
>>> tracker = load(task="tracking")                           # its SiamFC tracker; task="localization" too
>>> model = load("constcl_r3d50", pretrained=False)           # or a folder, or "hf-hub:org/repo"
>>> clip = model.preprocess(frames)                           # uint8 [T, H, W, 3] -> [3, T, 224, 224]
>>> embedding = model(clip[None])                             # [1, 2048]
"""

from . import _moved  # first: old module paths (constcl_zoo.model, ...) still import, with a DeprecationWarning
from ._factory import load
from .checkpoint import CheckpointMismatchError, ChecksumError
from .config import (
    BackboneConfig,
    ConfigError,
    GlobalHeadConfig,
    ModelConfig,
    PreprocessConfig,
    RegionHeadConfig,
)
from .errors import ConstclZooError
from .inference.embed import VideoEmbeddings, WindowSpec
from .inference.video import EmptyVideoError, FrameSizeError, VideoDecodeError, VideoError, VideoTooShortError
from .nn.model import ConstCLBase, GlobalEncoder, PretrainModel, RegionEncoder, build_model, init_weights
from .nn.preprocess import ClipPreprocess
from .registry import (
    PretrainedWeights,
    WeightsNotAvailableError,
    list_models,
    list_pretrained,
    register_weights,
    sample_video,
)

__version__ = "0.1.0"


def __getattr__(name: str):  # constcl_zoo.<moved module> as an attribute: imported from its new path, with a warning
    return _moved.attribute(__name__, name)


__all__ = [
    "BackboneConfig",
    "CheckpointMismatchError",
    "ChecksumError",
    "ClipPreprocess",
    "ConfigError",
    "ConstCLBase",
    "ConstclZooError",
    "EmptyVideoError",
    "FrameSizeError",
    "GlobalEncoder",
    "GlobalHeadConfig",
    "ModelConfig",
    "PreprocessConfig",
    "PretrainModel",
    "PretrainedWeights",
    "RegionEncoder",
    "RegionHeadConfig",
    "VideoDecodeError",
    "VideoEmbeddings",
    "VideoError",
    "VideoTooShortError",
    "WeightsNotAvailableError",
    "WindowSpec",
    "build_model",
    "init_weights",
    "list_models",
    "list_pretrained",
    "load",
    "register_weights",
    "sample_video",
]
