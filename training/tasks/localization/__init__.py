"""Spatio-temporal action localization in the AVA v2.2 formats: the official frame-mAP (:mod:`.evaluate`,
``python -m training eval-ava``), clips around key frames (:mod:`.data`), a synthetic dataset generator
(:mod:`.synthetic`) and the trainer on the shared engine (:mod:`.task`, :mod:`.config`; ``python -m training
train-localizer``: :mod:`.cli`). The file formats are :mod:`constcl_zoo.formats.ava`."""
