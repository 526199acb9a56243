"""Tasks: the training side of each restoration problem.

Each task module (``restore.tasks.<name>``) provides a `restore.engine.task.Task`
subclass: it builds its models, turns a batch into named losses and writes its
model card. Restoring lives in `restore.restorers` (the pipeline's hooks).
Tasks are looked up lazily by name so a script only imports what it trains.
What several tasks need alike (nested model options, the discriminator's loss
and scalars, photo-folder splits, gray/colour channel adaptation) lives once in
`restore.tasks.common`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS: dict[str, str] = {
    "denoise": "restore.tasks.denoise",
    "colorize": "restore.tasks.colorize",
    "inpaint": "restore.tasks.inpaint",
    "vae": "restore.tasks.vae",
}


def get(name: str) -> ModuleType:
    """Import and return the task module registered under ``name``."""
    try:
        return importlib.import_module(TASKS[name])
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None
