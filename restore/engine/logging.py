"""Run monitoring: TensorBoard scalars/images/hparams and the run's config.yaml.

Only rank 0 creates a `RunLogger` with ``enabled=True``; on other ranks every
method is a no-op, so the trainer never branches on rank around logging.
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from restore.provenance import git_commit


def run_info(world_size: int = 1, device: str = "") -> dict[str, Any]:
    """What config.yaml records next to the config: how and where the run was started."""
    return {
        "argv": list(sys.argv),
        "git_commit": git_commit(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "host": platform.node(),
        "device": device,
        "world_size": world_size,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            flat[key] = v
        elif v is None:
            flat[key] = "None"
        else:
            flat[key] = str(v)
    return flat


class RunLogger:
    """TensorBoard writer for ``runs/NAME/tb`` (lazy import, rank-0 only)."""

    def __init__(self, tb_dir: str | os.PathLike, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tb_dir = Path(tb_dir)
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=str(self.tb_dir))

    def scalar(self, tag: str, value: float | Tensor, step: int) -> None:
        if self._writer is None:
            return
        if isinstance(value, Tensor):
            value = float(value.detach().float().mean())
        self._writer.add_scalar(tag, float(value), step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, v in values.items():
            self.scalar(tag, v, step)

    def images(self, images: dict[str, Tensor], step: int, max_images: int = 8) -> None:
        """One grid per name (``images/<name>``), first ``max_images`` of the batch, clamped to [0, 1]."""
        if self._writer is None:
            return
        from torchvision.utils import make_grid

        for name, x in images.items():
            x = x.detach()[:max_images].float().cpu().clamp(0, 1)
            if x.ndim != 4 or x.shape[1] not in (1, 3):
                raise ValueError(f"visual {name!r}: expected N1HW or N3HW in [0,1], got shape {tuple(x.shape)}")
            grid = make_grid(x.contiguous(), nrow=min(len(x), 8), padding=2, pad_value=1.0)
            self._writer.add_image(f"images/{name}", grid, step)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """Write hparams + final metrics once, into the same event file (hparams plugin API)."""
        if self._writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hp_summary

        flat = _flatten(hparams)
        exp, ssi, sei = hp_summary(flat, metrics)
        fw = self._writer._get_file_writer()
        for s in (exp, ssi, sei):
            fw.add_summary(s, step)
        for tag, v in metrics.items():
            self._writer.add_scalar(tag, float(v), step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
