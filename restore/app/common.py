"""What every page of the app shares: loaded models, reading uploads, the bundled samples, image helpers.

The app is a face over the Python API (`restore.load`, `Model.restore`,
`Model.options_type`, `restore.list_weights`): it converts what the browser
sends into NCHW tensors, calls the same pipeline as the CLI and turns the
result back into pictures. A problem the user can fix (a text file, a
truncated PNG, a mask of the wrong size, an image too large) is raised as
`UserError`, which each page shows as a message; the server keeps serving.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

import restore
from restore.io.read import ImageReadError, read_image
from restore.io.write import to_uint8
from restore.metrics import psnr
from restore.pipeline import match_channels

__all__ = ["AppContext", "UserError", "outline", "psnr_db", "read_upload", "sample_photo", "takes_option",
           "to_array", "to_tensor"]

#: Largest image (pixels) a page accepts: a restoring run keeps a few float32 copies of the image in memory.
MAX_PIXELS = 36_000_000
#: Bundled scikit-image photos offered as samples (no download: they ship inside scikit-image).
SAMPLES = ("astronaut", "coffee", "chelsea")
#: Longer side of the samples on the task pages: big enough to see the damage, small enough for a CPU.
SAMPLE_SIDE = 384


class UserError(ValueError):
    """A problem with what the user gave (file, mask, choice): shown on the page, the app goes on."""


@dataclass
class AppContext:
    """Settings and the model cache of one app; pages only read it (models load once, under a lock)."""

    device: torch.device
    workdir: Path
    tile: int = 512
    max_pixels: int = MAX_PIXELS
    weights: list[dict[str, Any]] = field(default_factory=list)
    _models: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def names(self, *tasks: str, dataset: str | None = None) -> list[str]:
        """Installed weights of the given tasks (optionally of one training set), in the listing's order."""
        return [str(w["name"]) for w in self.weights
                if w.get("task") in tasks and (dataset is None or w.get("dataset") == dataset)]

    def card(self, name: str) -> dict[str, Any]:
        for w in self.weights:
            if w.get("name") == name:
                return w
        raise UserError(f"weights {name!r} are not installed; installed: {', '.join(self.names(*_ALL_TASKS))}")

    def model(self, name: str) -> Any:
        """`restore.Model` for installed weights ``name``, loaded on first use and kept."""
        self.card(name)  # a name the page did not offer is the user's error, not a crash
        with self._lock:
            if name not in self._models:
                self._models[name] = restore.load(name, device=self.device)
            return self._models[name]


_ALL_TASKS = ("denoise", "colorize", "inpaint", "vae")


def takes_option(options_type: type, name: str) -> bool:
    """True when a model's options dataclass has field ``name`` (e.g. a noise-conditioned denoiser's ``sigma``)."""
    return any(f.name == name for f in dataclasses.fields(options_type))


# --------------------------------------------------------------------------- uploads


def read_upload(path: str | Path | None, ctx: AppContext, what: str = "image") -> Tensor:
    """An uploaded file -> 1CHW float in [0, 1] (C = 1 or 3; alpha dropped), or `UserError` saying why not.

    The size is checked from the header before decoding, so a huge upload is
    refused without allocating it.
    """
    if path is None:
        raise UserError(f"no {what}: upload one (or pick a sample)")
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - not readable by Pillow: read_image gives the precise reason
        w = h = 0
    if w * h > ctx.max_pixels:
        raise UserError(f"{what} {path.name}: {w}x{h} is too large for this app "
                        f"(at most {ctx.max_pixels / 1e6:.0f} megapixels); use the command line for it")
    try:
        loaded = read_image(path)
    except ImageReadError as e:
        raise UserError(f"{what} {path.name}: {e.reason}") from None
    x = loaded.image[None]
    if x.shape[-2] * x.shape[-1] > ctx.max_pixels:
        raise UserError(f"{what} {path.name}: {x.shape[-1]}x{x.shape[-2]} is too large for this app "
                        f"(at most {ctx.max_pixels / 1e6:.0f} megapixels)")
    return x


def to_tensor(array: np.ndarray) -> Tensor:
    """HxW or HxWxC uint8 array (gradio's numpy images) -> 1CHW float (RGBA: alpha dropped)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.shape[2] == 2:
        a = a[:, :, :1]
    t = torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1).float()  # gradio's arrays are read-only
    return t.div_(255.0 if a.dtype == np.uint8 else 65535.0 if a.dtype == np.uint16 else 1.0)[None]


def to_array(x: Tensor, scale: int = 1) -> np.ndarray:
    """1CHW / CHW float in [0, 1] -> HxWx3 uint8 for the page (gray shown as RGB), optionally enlarged ``scale``x
    (nearest: 28x28 garments stay pixel-exact)."""
    t = x[0] if x.dim() == 4 else x
    t = t.detach().float().cpu().clamp(0, 1)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    a = to_uint8(t[:3])
    if scale > 1:
        a = a.repeat(scale, axis=0).repeat(scale, axis=1)
    return a


def psnr_db(restored: Tensor, clean: Tensor) -> float:
    """PSNR (dB) of two 1CHW images of one size; a gray/colour mismatch compares luma."""
    if restored.shape[-2:] != clean.shape[-2:]:
        raise UserError(f"the clean image is {clean.shape[-1]}x{clean.shape[-2]}, the noisy one "
                        f"{restored.shape[-1]}x{restored.shape[-2]}: PSNR needs the same size")
    if restored.shape[1] != clean.shape[1]:
        restored, clean = match_channels(restored, 1), match_channels(clean, 1)
    return float(psnr(restored.float(), clean.float())[0])


def outline(image: np.ndarray, hole: np.ndarray, colour: tuple[int, int, int] = (255, 0, 255)) -> np.ndarray:
    """``image`` (HxWx3 uint8) with the border of ``hole`` (HxW bool) drawn inside the hole, 2 px wide.

    Drawn on hole pixels only, so every known pixel stays as the user gave it.
    """
    h = np.asarray(hole, bool)
    inner = h.copy()
    for _ in range(2):  # erode twice: the outline is the hole minus its 2-px erosion
        p = np.pad(inner, 1, constant_values=False)
        inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    out = image.copy()
    out[h & ~inner] = colour
    return out


_PHOTOS: dict[tuple[str, int], Tensor] = {}


def sample_photo(name: str, longest: int = 0) -> Tensor:
    """A bundled scikit-image photo as 1CHW float RGB, area-resized so that its longer side is at most ``longest``."""
    key = (name, longest)
    if key not in _PHOTOS:
        from skimage import data  # lazily: scikit-image's data module is slow to import

        if name not in SAMPLES:
            raise UserError(f"unknown sample {name!r}; samples: {', '.join(SAMPLES)}")
        a = getattr(data, name)()
        t = torch.from_numpy(np.ascontiguousarray(a[:, :, :3])).permute(2, 0, 1).float().div_(255.0)[None]
        s = longest / max(t.shape[-2:]) if longest else 1.0
        if s < 1:
            hw = (max(1, round(t.shape[-2] * s)), max(1, round(t.shape[-1] * s)))
            t = torch.nn.functional.interpolate(t, size=hw, mode="area")
        _PHOTOS[key] = t.contiguous()
    return _PHOTOS[key]


def save_png(array: np.ndarray, ctx: AppContext, stem: str) -> str:
    """Write a page's result as a PNG under the app's temp folder (for the download button)."""
    folder = ctx.workdir / "outputs"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{stem}-", suffix=".png", dir=folder)
    with open(fd, "wb") as f:
        Image.fromarray(array).save(f, format="PNG")
    return name
