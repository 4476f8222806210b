"""Spatio-temporal action localization (``task="localization"``): who does what, where and when.

>>> localizer = load("my_localizer/")                            # a localization checkpoint (python -m training)
>>> result = localizer.localize("video.mp4")                      # person boxes from the built-in detector

:mod:`.model`: :class:`ActionLocalizer` (clip + person boxes -> action logits per person: the action transformer or
SlowFast's ROI head on the encoder's dense features) and its head config. :mod:`.infer`: whole videos (key frames,
given or detected person boxes, clips, tracks: :func:`localize`) and the annotated MP4 (:func:`write_annotated`).
"""

from .infer import (
    MAX_INTERVAL_S,
    MIN_INTERVAL_S,
    KeyFrameResult,
    Localization,
    LocalizationInputError,
    PersonResult,
    check_interval,
    link_tracks,
    localize,
    write_annotated,
)
from .model import (
    DEFAULT_SCORE_THRESHOLD,
    HEADS,
    ActionLocalizer,
    ActionTransformerHead,
    LocalizationHeadConfig,
    RoiActionHead,
    TxUnit,
)

__all__ = [
    "DEFAULT_SCORE_THRESHOLD",
    "HEADS",
    "MAX_INTERVAL_S",
    "MIN_INTERVAL_S",
    "ActionLocalizer",
    "ActionTransformerHead",
    "KeyFrameResult",
    "Localization",
    "LocalizationHeadConfig",
    "LocalizationInputError",
    "PersonResult",
    "RoiActionHead",
    "TxUnit",
    "check_interval",
    "link_tracks",
    "localize",
    "write_annotated",
]
