"""Self-supervised ConST-CL pretraining: its samples (``dataset``: two views with their key-frame boxes; ``sampling``:
the two views' temporal sampling; ``regions``: the boxes), the losses, the config and presets, and
:class:`~training.pretrain.learner.PretrainLearner`, which the shared engine (:mod:`training.engine`) trains. The
video reading and augmentation are the shared :mod:`training.data`. ``python -m training pretrain`` is
:mod:`training.pretrain.cli`.
"""
