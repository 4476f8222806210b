"""What every trainer shares: run folder, config (presets, ``-o`` overrides, validation), seeding, DDP
(``torchrun``), optimizer and schedule, the step loop (accumulation, bf16), logging (TensorBoard,
``metrics.jsonl``, tqdm) and exact checkpoint/resume.

A trainer provides a :class:`Learner` (data, model, loss, optional evaluation) and calls :func:`train`; its
subcommand uses :func:`add_run_arguments` and :func:`resolve_config`. See :mod:`training.engine.loop` for a
complete example of a new trainer. (``TrainTask``, the old name of :class:`Learner`, still imports, deprecated.)
"""

from .._moved import deprecated_names
from .checkpoint import CheckpointError, latest_checkpoint, read_latest
from .config import ConfigError, OptimConfig, RunConfig, TrainConfig, check, get_preset
from .distributed import DistInfo
from .learner import Learner, RunContext, StepOutput
from .loop import train
from .run import RunExistsError, add_run_arguments, read_jsonl, resolve_config

__all__ = ["CheckpointError", "ConfigError", "DistInfo", "Learner", "OptimConfig", "RunConfig", "RunContext",
           "RunExistsError", "StepOutput", "TrainConfig", "add_run_arguments", "check", "get_preset",
           "latest_checkpoint", "read_jsonl", "read_latest", "resolve_config", "train"]
__getattr__ = deprecated_names(__name__)  # TrainTask: the old name of Learner
