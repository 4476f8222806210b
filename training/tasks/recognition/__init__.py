"""Action recognition: labelled video splits, cached frozen-encoder features, a linear probe and its metrics.

``datasets`` (folder per class, UCF101 and HMDB51 split files) -> ``features`` (multi-view pooled global-branch
features, cached on disk) -> ``probe`` (linear classifier, scores averaged over views) -> ``metrics``
(top-1/top-5, per-class accuracy, confusion matrix). ``cli`` is the ``probe`` command.
"""
