"""The video data every trainer shares: frame-exact decoding, the frame cache and the index of decoded frame counts
(:mod:`.videos`), the reproducible sample stream and its loader (:mod:`.loader`) and clip augmentation
(:mod:`.augment`). Which frames a clip takes is :mod:`constcl_zoo.inference.clips` (the one copy, shared with
inference).
"""
