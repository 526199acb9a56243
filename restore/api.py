"""The Python API: ``restore.load(NAME)(image, **options)`` and ``restore.list_weights()``.

A `Model` takes the image types people hold in memory (numpy arrays, PIL
images, torch tensors) and gives back the same type, size, channel layout
and dtype, as the CLI keeps them for files: a uint8 array comes back uint8,
16-bit stays 16-bit, an alpha channel is carried through untouched. The
restoring itself is `restore.pipeline.Pipeline`, the same code the CLI and
the app run, so the API's output for a file's pixels is byte-identical to
what ``restore denoise FILE OUT`` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from restore import backends
from restore import weights as W
from restore.io.read import pil_to_array
from restore.io.write import quantize
from restore.options import Options, OptionError
from restore.pipeline import Pipeline, Restored

__all__ = ["Model", "list_weights", "load"]

_SUMMARY_KEYS = ("name", "task", "arch", "corruption", "dataset", "size_bytes", "description", "summary")


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise OptionError(f"device must be auto, cpu or cuda, got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise OptionError(f"device {device}: no CUDA device is available (use cpu or auto)")
    return torch.device(device)


def load(name_or_path: str | Path, device: str | torch.device = "auto", backend: str = "torch") -> Model:
    """Shipped weights by name (``restore.list_weights()``) or a ``.safetensors``/``.json`` path.

    ``backend="onnxruntime"`` runs the model exported to ONNX (CPU; also an ``.onnx`` file from
    ``restore export``) through the same pipeline (`restore.backends`).
    """
    if backend == "onnxruntime" and device == "auto":
        device = "cpu"
    model, card = backends.load(name_or_path, backend, resolve_device(device))
    return Model(model, card)


def list_weights() -> list[dict[str, Any]]:
    """The installed weights: name, task, architecture, corruption, size and the card's headline metrics."""
    rows = []
    for card in W.available():
        row = {k: card[k] for k in _SUMMARY_KEYS if k in card}
        metrics = card.get("metrics")
        if isinstance(metrics, dict):
            row["metrics"] = metrics
        rows.append(row)
    return rows


class Model:
    """Restoring weights bound to their task: call it on an image.

    ``model(image, mask=None, **options)``: ``image`` is a numpy array
    (HxW, HxWx1/2/3/4; uint8, uint16 or float in [0, 1]), a PIL image, or a
    torch tensor (NCHW or CHW, float in [0, 1], any device); ``mask``
    (inpainting, nonzero = hole) the same kinds, of the image's size. Options
    are the task's (`options_type`; the CLI flags' names, e.g. ``tile=256``,
    ``ensemble="x8"``); a bad one raises ``ValueError``. Side images (a VAE's
    ``std`` with ``uncertainty=True``) come from `restore`, which returns
    the pipeline's `Restored`.
    """

    def __init__(self, model: torch.nn.Module, card: dict[str, Any]) -> None:
        self.pipeline = Pipeline(model, card)
        self.card = card
        self.name = str(card.get("name"))
        self.task = self.pipeline.task

    @property
    def options_type(self) -> type[Options]:
        return self.pipeline.options_type

    @property
    def device(self) -> torch.device:
        return self.pipeline.restorer.device

    def __repr__(self) -> str:
        return f"<restore.Model {self.name!r} task={self.task} device={self.device}>"

    def options(self, **values: Any) -> Options:
        """The task's typed options with ``values`` set (checked: a bad value raises ``ValueError``)."""
        return self.pipeline.options(None, **values)

    def restore(self, x: Tensor, mask: Tensor | None = None, **options: Any) -> Restored:
        """NCHW float tensors in, the pipeline's `Restored` (image and side images, CPU float32) out."""
        return self.pipeline.run(x, mask, None, **options)

    def __call__(self, image: Any, mask: Any = None, **options: Any) -> Any:
        opts = self.options(**options)  # options first: a bad option is reported before any work
        if isinstance(image, Tensor):
            return self._call_tensor(image, mask, opts)
        if isinstance(image, Image.Image):
            return self._call_pil(image, mask, opts)
        if isinstance(image, np.ndarray):
            return self._call_array(image, mask, opts)
        raise TypeError(f"{self.name}: expected a numpy array, PIL image or torch tensor, got {type(image).__name__}")

    # ---------------------------------------------------------------------- torch

    def _call_tensor(self, image: Tensor, mask: Any, opts: Options) -> Tensor:
        if image.dim() not in (3, 4):
            raise ValueError(f"{self.name}: expected a CHW or NCHW tensor, got shape {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"{self.name}: expected a float tensor in [0, 1], got {image.dtype}")
        x = image[None] if image.dim() == 3 else image
        colour, alpha = _split_alpha(x.shape[1], x, dim=1)
        m = None
        if mask is not None:
            m = _mask_tensor(mask, x.shape[-2:], x.shape[0])
        out = self.pipeline.run(colour.detach(), m, opts).image.to(image.device, image.dtype)
        if alpha is not None:
            out = torch.cat([out, alpha], dim=1)
        return out[0] if image.dim() == 3 else out

    # ---------------------------------------------------------------------- numpy / PIL

    def _call_array(self, array: np.ndarray, mask: Any, opts: Options) -> np.ndarray:
        colour, alpha, scale = _split_array(array, self.name)
        x = torch.from_numpy(colour.transpose(2, 0, 1).astype(np.float32, order="C"))
        if scale != 1.0:
            x = x.div_(scale)
        m = _mask_tensor(mask, x.shape[-2:], 1) if mask is not None else None
        out = self.pipeline.run(x[None], m, opts, inplace=True).image[0]  # x is this call's own copy
        if array.dtype in (np.uint8, np.uint16):
            result = quantize(out, 8 if array.dtype == np.uint8 else 16)
        else:
            result = out.permute(1, 2, 0).numpy().astype(array.dtype)
        if alpha is not None:
            result = np.concatenate([result, alpha[:, :, None]], axis=2)
        if array.ndim == 2 and result.shape[2] == 1:
            result = result[:, :, 0]
        return result

    def _call_pil(self, image: Image.Image, mask: Any, opts: Options) -> Image.Image:
        colour, alpha = pil_to_array(Path("<PIL image>"), image)
        array = colour if alpha is None else np.concatenate(
            [colour if colour.ndim == 3 else colour[:, :, None], alpha[:, :, None]], axis=2)
        out = self._call_array(array, mask, opts)
        if out.dtype == np.uint16:
            if out.ndim == 2:
                return Image.fromarray(out)  # mode I;16
            out = (out.astype(np.uint32) * 255 + 32767) // 65535  # PIL has no 16-bit colour mode
            out = out.astype(np.uint8)
        return Image.fromarray(out)


def _split_alpha(channels: int, x: Any, dim: int) -> tuple[Any, Any]:
    """(colour, alpha or None) of an image with 1-4 channels along ``dim`` (2 = gray+alpha, 4 = RGBA)."""
    if channels in (1, 3):
        return x, None
    if channels in (2, 4):
        index = [slice(None)] * x.ndim
        index[dim] = slice(0, channels - 1)
        colour = x[tuple(index)]
        index[dim] = slice(channels - 1, channels)
        return colour, x[tuple(index)]
    raise ValueError(f"expected 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels, got {channels}")


def _split_array(array: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray | None, float]:
    """HxWxC colour, HxW alpha or None, and the value of white (255, 65535 or 1.0 for floats)."""
    if array.dtype == np.uint8:
        scale = 255.0
    elif array.dtype == np.uint16:
        scale = 65535.0
    elif array.dtype.kind == "f":
        scale = 1.0
        if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 1):
            raise ValueError(f"{name}: a float image must hold values in [0, 1] (no NaN)")
    else:
        raise ValueError(f"{name}: expected a uint8, uint16 or float array, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected an HxW or HxWxC array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: empty image of shape {array.shape}")
    if array.shape[2] not in (1, 2, 3, 4) and array.shape[0] in (1, 3):
        raise ValueError(f"{name}: shape {array.shape} looks channels-first; pass HxWxC (array.transpose(1, 2, 0))")
    colour, alpha = _split_alpha(array.shape[2], array, dim=2)
    return colour, (alpha[:, :, 0] if alpha is not None else None), scale


def _mask_tensor(mask: Any, size: tuple[int, int] | torch.Size, n: int) -> Tensor:
    """Any mask (array, PIL, tensor; nonzero = hole) -> bool N1HW of ``size``."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L") if mask.mode not in ("L", "1", "I;16") else mask)
    if isinstance(mask, np.ndarray):
        if mask.ndim == 3:
            mask = mask.any(axis=2) if mask.shape[2] != 2 else mask[:, :, 0] != 0
        mask = torch.from_numpy(np.ascontiguousarray(mask != 0))
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask: expected a numpy array, PIL image or tensor, got {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() == 3:
        mask = mask[:, None] if mask.shape[0] == n and n > 1 else mask[None]
    if mask.dim() != 4 or tuple(mask.shape[-2:]) != tuple(size):
        raise ValueError(f"mask: it is {tuple(mask.shape[-2:])} (HxW), the image is {tuple(size)}; they must match")
    if mask.shape[1] != 1:
        mask = (mask != 0).any(dim=1, keepdim=True)
    return (mask.expand(n, -1, -1, -1) if mask.shape[0] == 1 else mask).to("cpu") != 0
