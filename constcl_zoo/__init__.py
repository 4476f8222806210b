"""ConST-CL video representations in PyTorch: ``from constcl_zoo import load``.

>>> encoder = load()                                          # the shipped small ConST-CL, offline
>>> tracker = load(task="tracking")                           # its SiamFC tracker; task="localization" too
>>> model = load("constcl_r3d50", pretrained=False)           # or a folder, or "hf-hub:org/repo"
>>> clip = model.preprocess(frames)                           # uint8 [T, H, W, 3] -> [3, T, 224, 224]
>>> embedding = model(clip[None])                             # [1, 2048]
"""

from . import archs as _archs  # noqa: F401  (registers the architectures)
from . import pretrained as _pretrained  # noqa: F401  (registers the published weights)
from .config import (
    BackboneConfig,
    ConfigError,
    GlobalHeadConfig,
    ModelConfig,
    PreprocessConfig,
    RegionHeadConfig,
)
from .embed import VideoEmbeddings, WindowSpec
from .errors import ConstclZooError
from .factory import load
from .model import ConstCLBase, GlobalEncoder, PretrainModel, RegionEncoder, build_model, init_weights
from .preprocess import ClipPreprocess
from .pretrained import sample_video
from .registry import PretrainedWeights, WeightsNotAvailableError, list_models, list_pretrained, register_weights
from .video import EmptyVideoError, FrameSizeError, VideoDecodeError, VideoError, VideoTooShortError
from .weights import CheckpointMismatchError, ChecksumError

__version__ = "0.1.0"

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
