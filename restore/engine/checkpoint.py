"""Checkpoint files: atomic writes, keep-last-K, finding the latest good one, RNG states.

Layout: ``runs/NAME/checkpoints/step_XXXXXXXX.pt``. A checkpoint is written to a
temporary file in the same folder, flushed and fsync'ed, then `os.replace`d
onto its name, so a crash never leaves a half-written ``step_*.pt`` (a
truncated file can still appear from a full disk or a copied run: loading
falls back to the previous checkpoint with a warning). Everything is stored as
tensors or plain containers so loading uses ``torch.load(weights_only=True)``
and never unpickles arbitrary objects (BasicSR issues 717/718: resume takes the
run folder and finds the file itself).
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from restore.corrupt import RandomStreams
from restore.io.atomic import atomic_output

CHECKPOINT_RE = re.compile(r"^step_(\d{8,})\.pt$")


class CheckpointError(RuntimeError):
    """No loadable checkpoint, or a checkpoint that does not fit the run (message names the path)."""


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every ``step_*.pt`` in the run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """torch.save ``state`` to ``path`` atomically (temp file + fsync + os.replace, via `restore.io`)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return path


def prune(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (``<= 0`` keeps all); returns the removed paths."""
    if keep_last <= 0:
        return []
    ckpts = list_checkpoints(run_dir)
    removed = []
    for _, p in ckpts[: max(0, len(ckpts) - keep_last)]:
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint with ``weights_only=True``; CheckpointError names the file on failure."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, unsupported type ...
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or "step" not in state or "models" not in state:
        raise CheckpointError(f"{path}: not a restore training checkpoint (missing 'step'/'models')")
    return state


def find_latest(
    run_dir: str | os.PathLike, map_location: str | torch.device = "cpu", healthy_only: bool = False
) -> tuple[Path, dict[str, Any]]:
    """Newest checkpoint of the run that loads (and is marked healthy if asked).

    Unloadable files are skipped with a warning, so a truncated newest file falls
    back to the one before it.
    """
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(f"{checkpoint_dir(run_dir)}: no step_*.pt checkpoints to resume from")
    for _, path in reversed(ckpts):
        try:
            state = load(path, map_location)
        except CheckpointError as e:
            warnings.warn(f"skipping unloadable checkpoint: {e}", RuntimeWarning, stacklevel=2)
            continue
        if healthy_only and not bool(state.get("trainer", {}).get("healthy", True)):
            continue
        return path, state
    what = "healthy " if healthy_only else ""
    raise CheckpointError(f"{checkpoint_dir(run_dir)}: none of {len(ckpts)} checkpoints is a loadable {what}checkpoint")


# ---- RNG states as weights_only-friendly containers ---------------------------------------
def rng_state(streams: RandomStreams | None = None) -> dict[str, Any]:
    """Python, NumPy, torch CPU (+ CUDA when present) and the task's random streams' states."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [str(np_name), torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "task": None,
        "mask_stream": None,
    }
    if streams is not None:
        state.update(streams.state_dict())
    return state


def set_rng_state(state: dict[str, Any], streams: RandomStreams | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            torch.cuda.set_rng_state(cuda_states[0])
    if streams is not None and state.get("task") is not None:
        streams.load_state_dict(state)
