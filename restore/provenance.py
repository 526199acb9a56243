"""Where a figure or a run came from: the git commit, the device and the machine.

Why one module: the trainer's config.yaml and model card, and every ``eval/``
report, record these; computed in one place they read the same everywhere
(a card's ``hardware`` and a speed table's ``cpu`` name the same CPU, a
report's commit is marked ``+dirty`` exactly when a training run's is).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

#: the repository this package runs from (commits are read here)
REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: str | os.PathLike = REPO) -> str:
    """``<sha>`` of HEAD, with ``+dirty`` when tracked files differ; ``unknown`` outside git or without git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what `platform` knows, else ``cpu``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device | str, world_size: int = 1) -> str:
    """What ran the work, for a model card's ``hardware``: the GPU's name or ``CPU (<model>, N cores)``,
    prefixed with ``N x`` for several processes."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({cpu_name()}, {os.cpu_count()} cores)"
    return f"{world_size} x {name}" if world_size > 1 else name


def machine() -> str:
    """One line saying where CPU timings were taken (they are only comparable on the same machine)."""
    threads = torch.get_num_threads()
    return f"{platform.machine()} {platform.processor() or platform.system()}, torch {torch.__version__}, " \
           f"{threads} CPU thread(s), {os.cpu_count()} logical CPU(s)"


def machine_info(device: torch.device | str) -> dict[str, Any]:
    """The machine a benchmark ran on, as fields (date, commit, versions, CPU, threads, GPU, load)."""
    device = torch.device(device)
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_commit(), "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_name(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?",
    }
