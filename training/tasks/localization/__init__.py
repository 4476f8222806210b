"""Spatio-temporal action localization in the AVA v2.2 formats: file formats (:mod:`.ava`), the official frame-mAP
(:mod:`.evaluate`, ``python -m training eval-ava``), clips around key frames (:mod:`.data`), a synthetic dataset
generator (:mod:`.synthetic`) and the trainer (:mod:`.train`)."""
