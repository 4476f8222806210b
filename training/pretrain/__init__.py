"""Self-supervised ConST-CL pretraining: video data (``videos``, ``sampling``, ``augment``, ``regions``,
``dataset``), the losses, the config and presets, and :class:`~training.pretrain.task.PretrainTask`, which the
shared engine (:mod:`training.engine`) trains. ``python -m training pretrain`` is :mod:`training.pretrain.cli`.
"""
