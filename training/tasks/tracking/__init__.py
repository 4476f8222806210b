"""SiamFC tracking: ``config`` (the trainer's config and presets), ``data`` (OTB / GOT-10k / VOT sequence readers;
training pairs from labelled sequences or label-free crops of raw videos), ``learner`` (the tracker's trainer on
the engine), ``evaluate`` (OTB-protocol one-pass evaluation and its metrics), ``baselines`` (OpenCV's MIL / KCF /
CSRT and a static box) and ``cli`` (``track-train``, ``eval-tracking``).

    python -m training eval-tracking --dataset DIR --model CHECKPOINT --out DIR
    python -m training track-train --videos ../shared/data/videos --encoder ENCODER --out RUN
"""
