"""Action recognition: labelled video splits -> a linear probe of a frozen encoder, or fine-tuning on the engine ->
a task checkpoint.

``config`` (:class:`~.config.FinetuneConfig` and its presets, :class:`~.config.ProbeSettings`); ``data``
(labelled splits: a folder per class, UCF101 and HMDB51 split files; the fine-tuning samples); ``features``
(multi-view pooled global-branch features, cached on disk); the two trainers ``probe`` (a linear classifier on
cached features) and ``finetune`` (:class:`~.finetune.FinetuneLearner` on the engine); ``evaluate`` (a
classifier on the validation split; top-1/top-5, per-class accuracy, confusion matrix); ``cli`` (the ``probe``
and ``finetune`` commands).
"""
