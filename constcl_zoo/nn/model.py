"""The three networks a checkpoint can be loaded as, selected by ``branch``.

* ``"global"`` -> :class:`GlobalEncoder`: backbone up to the global res5, ``forward(clip) -> [B, C]`` pooled
  clip features (C = 2048 for R3D-50).
* ``"region"`` -> :class:`RegionEncoder`: backbone up to the region res5, ``forward(clip) -> [B, C, T', H', W']``
  dense features, and ``roi_features(clip, boxes) -> [B, N, C]`` with the training ROIAlign.
* ``"full"`` -> :class:`PretrainModel`: the pretraining network (Y backbone, global MLP, instance reconstructor;
  or CVRL's backbone and MLP).

All share ``config``, ``preprocess``, ``forward_features`` (named intermediate feature maps), ``feature_info``
and ``save_pretrained``. A clip is ``[B, 3, T, H, W]`` float, already preprocessed (see ``model.preprocess``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from ..checkpoint import format_state, save_checkpoint
from ..config import ModelConfig
from ..errors import InvalidArgumentError, InvalidTypeError
from ..formats.boxes import check_boxes
from .backbone import ResNet3D
from .heads import InstanceReconstructor, ProjectionMLP
from .layers import roi_align_mean
from .preprocess import ClipPreprocess

if TYPE_CHECKING:
    from ..inference.embed import VideoEmbeddings, VideoInput

Branch = Literal["global", "region", "full"]
BRANCHES: tuple[str, ...] = ("global", "region", "full")
_MIN_SPATIAL = 32  # total spatial stride of the backbone


class ConstCLBase(nn.Module):
    """What every loaded ConST-CL network offers."""

    branch: str
    res5_branches: tuple[str, ...]

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.preprocess = ClipPreprocess(config.preprocess)
        self.backbone = ResNet3D(config.backbone, self.res5_branches)

    # -- introspection ------------------------------------------------------------------------------------
    @property
    def feature_info(self) -> list[dict[str, object]]:
        """Endpoints this network computes: name, channels and (temporal, spatial) reduction vs the input."""
        cfg = self.config.backbone
        t = cfg.stem_stride[0] * cfg.stem_pool_stride[0]
        s1 = cfg.stem_stride[1] * cfg.stem_pool_stride[1]
        info = {"stem": (cfg.width, s1), "res2": (cfg.stage_channels[0], s1),
                "res3": (cfg.stage_channels[1], 2 * s1), "res4": (cfg.stage_channels[2], 4 * s1),
                "res5": (cfg.stage_channels[3], 8 * s1), "res5_region": (cfg.stage_channels[3], 8 * s1)}
        return [{"name": n, "channels": info[n][0], "reduction": (t, info[n][1], info[n][1])}
                for n in self.backbone.endpoints]

    @property
    def min_frames(self) -> int:
        """Fewest input frames accepted: one output time step per stem temporal stride."""
        return self.config.backbone.stem_stride[0]

    # -- inputs -------------------------------------------------------------------------------------------
    def check_clip(self, clip: object) -> torch.Tensor:
        """Raise a clear error unless ``clip`` is a preprocessed ``[B, 3, T, H, W]`` float tensor."""
        if not isinstance(clip, torch.Tensor):
            raise InvalidTypeError(f"clip must be a torch.Tensor [B, 3, T, H, W], got {type(clip).__name__}")
        if not clip.is_floating_point():
            raise InvalidTypeError(
                f"clip has dtype {clip.dtype}; the model takes preprocessed float clips — "
                f"call model.preprocess(frames) on uint8 [T, H, W, 3] frames first")
        if clip.ndim != 5:
            hint = " (add the batch axis: clip[None])" if clip.ndim == 4 else ""
            raise InvalidArgumentError(f"clip must have 5 dims [B, 3, T, H, W], got shape {tuple(clip.shape)}{hint}")
        if clip.shape[1] != 3:
            hint = " — it looks channels-last; use model.preprocess or clip.permute(0, 4, 1, 2, 3)" \
                if clip.shape[-1] == 3 else ""
            raise InvalidArgumentError(
                f"clip must have 3 (RGB) channels on axis 1, got shape {tuple(clip.shape)}{hint}")
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            return clip
        t, h, w = clip.shape[2:]
        if t < self.min_frames:
            raise InvalidArgumentError(f"clip has {t} frame(s); this model needs at least {self.min_frames} "
                             f"(weights expect {self.config.preprocess.num_frames})")
        if h < _MIN_SPATIAL or w < _MIN_SPATIAL:
            raise InvalidArgumentError(f"clip frames are {h}x{w}; at least {_MIN_SPATIAL}x{_MIN_SPATIAL} is needed "
                             f"(weights expect {self.config.preprocess.crop_size}x{self.config.preprocess.crop_size})")
        return clip

    # -- features -----------------------------------------------------------------------------------------
    def forward_features(self, clip: torch.Tensor,
                         endpoints: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Named intermediate feature maps ``[B, C, T', H', W']``, e.g. ``endpoints=("res3", "res4", "res5")``.

        Defaults to the last endpoint(s). Available names: ``[i["name"] for i in model.feature_info]``.
        """
        self.check_clip(clip)
        if endpoints is None:
            endpoints = self.backbone.endpoints[4:]
        if isinstance(endpoints, str):
            endpoints = (endpoints,)
        return self.backbone(clip, tuple(endpoints))

    # -- checkpoints --------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (this network's weights) to ``directory``."""
        return save_checkpoint(self, directory)

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor a checkpoint of this architecture may hold, whichever branch it was saved from (meta
        tensors: shapes and dtypes): :func:`architecture_tensors`."""
        return architecture_tensors(self.config)

    @property
    def description(self) -> str:
        """Names the model in messages: ``"<branch> branch of <arch>"``."""
        return f"{self.branch} branch of {self.config.arch}"

    def extra_repr(self) -> str:
        return f"arch={self.config.arch!r}, branch={self.branch!r}"


class _Embedder(ConstCLBase):
    """``embed(video)``: features of every sliding window of a whole video (see :mod:`constcl_zoo.inference.embed`)."""

    def embed(self, video: VideoInput, *, clip_frames: int | None = None, stride: int | None = None,
              batch_size: int = 8, precision: str = "auto", fps: float | None = None) -> VideoEmbeddings:
        """Embed every window of ``video`` (a file path, or uint8 ``[T, H, W, 3]`` frames with ``fps``).

        Windows are ``clip_frames`` frames every ``frame_stride`` decoded frames, starting every ``stride``
        decoded frames; both default to the weights' preprocessing (``clip_frames = num_frames``, windows
        tiling the video). ``precision``: ``"auto"`` (bf16 autocast where the hardware runs bf16 natively,
        else fp32; channels_last_3d on CPUs and bf16 GPUs), ``"fp32"`` (the reference: fp32, default layout) or
        ``"bf16"`` — see :mod:`constcl_zoo.inference.precision`. The model's weights are put in that layout in place.
        Returns :class:`~constcl_zoo.inference.embed.VideoEmbeddings` with ``embeddings``
        ``[N, D]`` (global) or ``[N, C, T', H', W']`` (region) and each window's ``start_s`` / ``end_s``.
        Peak memory does not grow with the video's length (streaming decode).
        """
        from ..inference.embed import embed_video

        return embed_video(self, video, clip_frames=clip_frames, stride=stride, batch_size=batch_size,
                           precision=precision, fps=fps)


class GlobalEncoder(_Embedder):
    """Clip embeddings from the global branch: ``[B, 3, T, H, W] -> [B, C]`` (mean over T', H', W' of res5)."""

    branch = "global"
    res5_branches = ("global",)

    @property
    def output_endpoint(self) -> str:
        return "res5"

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.forward_features(clip, ("res5",))["res5"].mean(dim=(2, 3, 4))


class RegionEncoder(_Embedder):
    """Dense features from the region branch (``res5_region``; ``res5`` for single-res5 networks such as CVRL)."""

    branch = "region"
    res5_branches = ("region",)

    @property
    def output_endpoint(self) -> str:
        return "res5_region" if self.config.backbone.region_branch else "res5"

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W] -> [B, C, T', H', W']`` (T' = T/2, H' = H/32 for R3D-50)."""
        return self.forward_features(clip, (self.output_endpoint,))[self.output_endpoint]

    def roi_features(self, clip: torch.Tensor, boxes: torch.Tensor,
                     frame: int | Literal["center", "mean"] = "center",
                     normalize: bool | None = None) -> torch.Tensor:
        """Region features ``[B, N, C]`` for boxes ``[B, N, 4]`` normalised ``(x1, y1, x2, y2)``.

        Uses the training ROIAlign (crop 4, one sample per bin, then the mean) on feature time step ``frame``:
        ``"center"`` (``T' // 2``, the training key frame), an index into T', or ``"mean"`` (features averaged
        over time first). ``normalize`` L2-normalises the feature map first, as in training; it defaults to the
        weights' ``region_head.normalize_inputs`` (True for ConST-CL).
        """
        features = self(clip)
        check_boxes(boxes, batch=features.shape[0])
        t = features.shape[2]
        if frame == "mean":
            frames = features.mean(dim=2)
        elif frame == "center":
            frames = features[:, :, t // 2]
        elif isinstance(frame, int) and -t <= frame < t:
            frames = features[:, :, frame]
        else:
            raise InvalidArgumentError(f"frame must be 'center', 'mean' or an index into the {t} feature time steps, "
                             f"got {frame!r}")
        region = self.config.region_head
        if normalize is None:
            normalize = region.normalize_inputs if region is not None else False
        if normalize:
            frames = nn.functional.normalize(frames, dim=1)
        crop, offset = (region.crop_size, region.sample_offset) if region is not None else (4, 0.5)
        return roi_align_mean(frames, boxes, crop, offset)


class PretrainModel(ConstCLBase):
    """The whole pretraining network.

    ``forward(clips, boxes=None, key_frames=None)`` takes both views stacked on the batch axis, view a first:
    ``clips [2B, 3, T, H, W]``, key-frame boxes ``[2B, N, 4]`` normalised ``(x1, y1, x2, y2)`` and optional
    key-frame indices ``[2B]`` into T' (default ``T' // 2``, the paper's "center" pairing). Returns
    ``global_embeddings [2B, 128]`` and, for ConST-CL, the instance reconstructor outputs (see
    :class:`~constcl_zoo.nn.heads.InstanceReconstructor`).
    """

    branch = "full"

    def __init__(self, config: ModelConfig) -> None:
        self.res5_branches = ("global", "region") if config.backbone.region_branch else ("global",)
        super().__init__(config)
        self.global_head = ProjectionMLP(config.feature_dim, config.global_head)
        if config.region_head is not None:
            self.region_head = InstanceReconstructor(config.feature_dim, config.region_head)

    @property
    def min_frames(self) -> int:
        region = self.config.region_head
        stride = self.config.backbone.stem_stride[0]
        if region is None or region.context_length == 0:
            return stride
        # The context memory needs context_length distinct feature time steps.
        return stride * (region.context_length - 1) + 1

    def forward(self, clips: torch.Tensor, boxes: torch.Tensor | None = None,
                key_frames: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        has_region = hasattr(self, "region_head")
        endpoints = ("res5", "res5_region") if has_region else ("res5",)
        feats = self.forward_features(clips, endpoints)
        out = {"global_embeddings": self.global_head(feats["res5"].mean(dim=(2, 3, 4)))}
        if not has_region:
            return out
        if boxes is None:
            raise InvalidArgumentError("a ConST-CL pretraining forward needs key-frame boxes [2B, N, 4]")
        check_boxes(boxes, batch=clips.shape[0])
        t = feats["res5_region"].shape[2]
        if key_frames is not None:
            key_frames = torch.as_tensor(key_frames, device=clips.device).long()
            if key_frames.shape != (clips.shape[0],):
                raise InvalidArgumentError(
                    f"key_frames must have shape [{clips.shape[0]}], got {tuple(key_frames.shape)}")
            if (key_frames < 0).any() or (key_frames >= t).any():
                raise InvalidArgumentError(
                    f"key_frames must index the {t} feature time steps, got {key_frames.tolist()}")
        out.update(self.region_head(feats["res5_region"], boxes, key_frames))
        return out


MODEL_CLASSES: dict[str, type[ConstCLBase]] = {"global": GlobalEncoder, "region": RegionEncoder,
                                                "full": PretrainModel}


def build_model(config: ModelConfig, branch: str = "global") -> ConstCLBase:
    """Build (uninitialised) the network of ``config`` for ``branch``."""
    if branch not in MODEL_CLASSES:
        raise InvalidArgumentError(f"branch must be one of {list(BRANCHES)}, got {branch!r}")
    return MODEL_CLASSES[branch](config)


_ARCHITECTURE_TENSORS: dict[str, dict[str, torch.Tensor]] = {}  # the architecture (config JSON) -> its tensors


def architecture_tensors(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The tensors of the whole pretraining network of ``config`` (every branch and head), as a checkpoint stores
    them (:func:`~constcl_zoo.checkpoint.format_state`), on the meta device: built once per architecture."""
    key = json.dumps({k: v for k, v in config.to_dict().items() if k != "provenance"}, sort_keys=True)
    if key not in _ARCHITECTURE_TENSORS:
        with torch.device("meta"):
            full = build_model(config, "full")
        if len(_ARCHITECTURE_TENSORS) >= 16:
            _ARCHITECTURE_TENSORS.pop(next(iter(_ARCHITECTURE_TENSORS)))
        _ARCHITECTURE_TENSORS[key] = format_state(full)
    return _ARCHITECTURE_TENSORS[key]


@torch.no_grad()
def init_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded random init with the official (Keras) initialisers; the global RNG is left untouched.

    Conv kernels: VarianceScaling(fan_in, truncated normal); Linear: Glorot uniform; biases 0; norms (1, 0).
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            fan_in = m.weight[0].numel()
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # truncation-corrected, as in Keras
            _fill(m.weight, nn.init.trunc_normal_, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=gen)
        elif isinstance(m, nn.Linear):
            _fill(m.weight, nn.init.xavier_uniform_, generator=gen)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm3d, nn.LayerNorm)):
            if m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm3d)):
                m.reset_running_stats()
    return model


def _fill(param: torch.Tensor, init: Callable[..., torch.Tensor], **kwargs: Any) -> None:
    """Initialise in float32 on CPU (so any dtype/device gets the same values), then copy in."""
    tmp = torch.empty(param.shape, dtype=torch.float32)
    init(tmp, **kwargs)
    param.copy_(tmp)
