"""Tasks: what is specific to each restoration problem.

Each task module (``restore.tasks.<name>``) provides the training side
(a `restore.engine.task.Task` subclass) and the restoring side used by the
folder driver and `restore demo`: ``DEFAULT_WEIGHTS``,
``restore_batch(model, batch, card, *, tile, device, options=None)`` and the
optional ``add_arguments`` / ``demo`` (docs/internals.md, "Task restoring API"). Tasks are looked up lazily by name so the CLI
only imports what it runs. What several tasks need alike (nested model options,
the discriminator's loss and scalars, photo-folder splits, gray/colour channel
adaptation) lives once in `restore.tasks.common`.
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
