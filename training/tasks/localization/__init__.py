"""Spatio-temporal action localization in the AVA v2.2 formats: ``config`` (the trainer's config and presets),
``data`` (clips around key frames), ``learner`` (the trainer on the shared engine), ``evaluate`` (the official
frame-mAP), ``calibrate`` (per-class thresholds at a target precision), ``synthetic`` (an AVA-format synthetic
dataset generator) and ``cli`` (``train-localizer``, ``calibrate-localizer``, ``eval-ava``). The file formats are
:mod:`constcl_zoo.formats.ava`."""
