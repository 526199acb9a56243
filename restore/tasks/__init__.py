"""Tasks: what is specific to each restoration problem.

Each task module (``restore.tasks.<name>``) provides the training side
(a `restore.engine.Task` subclass) and the restoring side: a function
``restore_batch(model, batch: dict, card: dict) -> Tensor`` used by the
folder driver and `restore demo`. Tasks are looked up lazily by name so the CLI
only imports what it runs.
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
