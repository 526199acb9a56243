"""The one trainer all tasks use: Task interface, Trainer, config, checkpoints.

Names are imported lazily (PEP 562) so ``import restore.engine`` stays cheap and
one optional dependency (tensorboard, tqdm) never breaks the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Task": "restore.engine.task",
    "StepContext": "restore.engine.task",
    "EpochContext": "restore.engine.task",
    "TrainConfig": "restore.engine.config",
    "OptimConfig": "restore.engine.config",
    "ConfigError": "restore.engine.config",
    "Trainer": "restore.engine.trainer",
    "TrainingDiverged": "restore.engine.trainer",
    "TrainingInterrupted": "restore.engine.trainer",
    "EMA": "restore.engine.ema",
    "CheckpointError": "restore.engine.checkpoint",
    "main": "restore.engine.cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'restore.engine' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)
