"""Single-object tracking: a SiamFC tracker on the encoder's dense features (``task="tracking"``).

>>> tracker = load("my_tracker/")                  # a tracking checkpoint (python -m training track-train)
>>> tracker = load("constcl_r3d14_w16", task="tracking", pretrained=False)   # any encoder, a fresh head
>>> result = tracker.track("video.mp4", init_box=(x, y, w, h))      # boxes [N, 4] x,y,w,h px, scores [N], fps
>>> tracker.init(frame, box); box, score = tracker.update(next_frame)   # frame by frame (uint8 RGB [H, W, 3])

The paper's setting (§4, "Single object tracking", after VFS / SeCo / VINCE):

* Backbone: the encoder's branch (``region`` by default: ``res5_region``; ``global`` and single-res5 encoders
  work too) with res4 / res5 at spatial stride 1 and dilation 2 / 4 (the first block of a dilated stage at half
  the dilation, as VFS), same weights (:func:`constcl_zoo.nn.backbone.dilate_backbone`): feature stride 8.
* Input: each frame with its ``temporal_radius`` (n = 2) neighbours on each side, 5 frames, the edge frames
  repeated at the start and end of a video; the features are the centre time slice after res5. ``causal=True``
  uses the 2n *past* frames and the last time slice instead, so nothing waits for future frames (live video):
  a deviation from the paper, which looks 2 frames ahead.
* Head: SiamFC cross-correlation with a learned 1x1 "adjust" conv on the exemplar and on the search features,
  then a one-channel BatchNorm on the response (SiamFC's ``BNorm`` adjust option; its other option, a fixed
  0.001 gain on the sum, assumes AlexNet's feature magnitudes). The correlation is the *mean* over channels and
  exemplar cells (a sum scaled by ``1 / (C * hz * wz)``). In training the BatchNorm gives the logits unit
  variance from the first step whatever the backbone's feature scale, so the logistic loss has a gradient to
  follow (a learned scale that starts at 1 on a mean correlation leaves the logits ~0 and the loss at log 2);
  its learned gain / bias and running statistics make the calibrated output scale and bias at inference. A
  fresh head's BatchNorm is the identity.
* Tracking: SiamFC's reference PyTorch tracker (exemplar 127 / search 255 crops, context 0.5, 3 scales of step
  1.0375 run as one batch, scale penalty 0.9745, scale learning rate 0.59, response upsampled x16 bicubic, cosine
  window 0.176), all in :class:`TrackerConfig`. At feature stride 8 and TF 'same' padding, 127 / 255 crops give
  16x16 / 32x32 features and a 17x17 response — SiamFC's response size — and the crops' centres stay aligned
  (both sizes go odd -> even -> even -> even through the stride-2 layers, so their padding offsets agree).

Exemplar features are computed once, at ``init``. Exact shortcuts (same numbers up to float rounding): the output
stage runs only on the time slices the kept one depends on (:func:`stage_time_slice`), the search-side 1x1 adjust
is folded into the exemplar side and the correlation is one matrix product (:meth:`SiamFCHead.respond`); crops
are affine warps of the uint8 frames (:func:`crop_and_resize`). The backbone runs in the embedding path's precision plan
(:mod:`constcl_zoo.inference.precision`: bf16 autocast + channels_last_3d where the hardware has bf16) under
``torch.inference_mode``; the head and the post-processing run in fp32.

The tracking loop (:class:`SiamFC`) only needs two functions — exemplar features and scale responses — so the
ONNX Runtime tracker (``export.runtime``) runs the same loop on exported graphs.
"""

from .annotate import track_video, video_fps
from .config import (
    CORRELATIONS,
    ENDPOINTS,
    NCC_CONFIG,
    PIXEL_FEATURES,
    PixelTrackerConfig,
    TrackerConfig,
    is_pixel_tracker_config,
)
from .head import SiamFCHead, cross_correlation, normalized_cross_correlation, stage_time_slice
from .model import SiamFCTracker
from .ncc import NCCTracker
from .results import TrackResult, format_boxes
from .siamfc import FrameByFrame, FrameSource, SiamFC, TrackerInputError, check_box, check_frame, crop_and_resize

__all__ = [
    "CORRELATIONS",
    "ENDPOINTS",
    "NCC_CONFIG",
    "PIXEL_FEATURES",
    "FrameByFrame",
    "FrameSource",
    "NCCTracker",
    "PixelTrackerConfig",
    "SiamFC",
    "SiamFCHead",
    "SiamFCTracker",
    "TrackResult",
    "TrackerConfig",
    "TrackerInputError",
    "check_box",
    "check_frame",
    "crop_and_resize",
    "cross_correlation",
    "format_boxes",
    "is_pixel_tracker_config",
    "normalized_cross_correlation",
    "stage_time_slice",
    "track_video",
    "video_fps",
]
