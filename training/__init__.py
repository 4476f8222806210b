"""ConST-CL training side (run from a checkout: ``python -m training ...``).

Pretraining, downstream training/evaluation, checkpoint conversion and publishing. It imports the networks from
``constcl_zoo``; ``constcl_zoo`` never imports this package, and only ``constcl_zoo`` goes into the wheel.
"""

from . import _moved  # noqa: F401  (first: old module paths and names (training.pretrain.videos, TrainTask, ...) still work)
