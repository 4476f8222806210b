"""SiamFC tracking: dataset readers (OTB, GOT-10k, VOT), OTB-protocol evaluation, OpenCV baselines, training pairs
(labelled sequences or label-free crops of raw videos) and the tracker's trainer.

    python -m training eval-tracking --dataset DIR --model CHECKPOINT --out DIR
    python -m training track-train --videos ../shared/data/videos --encoder ENCODER --out RUN
"""
