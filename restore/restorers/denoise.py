"""Denoising: a residual UNet (photos, Fashion-MNIST) restores each image in overlap-blended tiles.

A colour model sees a gray image as three equal channels (the output is
averaged back to one); a gray model (Fashion-MNIST) denoises each colour
channel on its own. The whole image is padded by the UNet itself (centred,
as in training: a model trained on one size depends on that layout); tiles
sit on the same stride grid (`restore.tiling.tiled_on_grid`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from restore import corrupt
from restore.data import load_idx_split
from restore.noise import estimate_sigma
from restore.options import OptionError, PhotoOptions, option
from restore.pipeline import Restorer, Work
from restore.tasks.common import from_model_channels, to_model_channels

__all__ = ["DEFAULT_WEIGHTS", "DenoiseOptions", "DenoiseRestorer"]

#: Shipped weights used by ``restore denoise`` when ``--weights`` is not given.
DEFAULT_WEIGHTS = "denoise-gaussian"


@dataclass(frozen=True)
class DenoiseOptions(PhotoOptions):
    """``restore denoise`` / ``restore.load("denoise-...")(image, ...)`` options."""

    task: ClassVar[str] = "denoise"

    sigma: str = option("auto", "noise level on the 0-255 scale for a noise-conditioned model, or auto: "
                                "estimated per image (restore.noise.estimate_sigma); a lower value denoises "
                                "more lightly; blind models ignore it", kind=str, metavar="auto|N")

    def check(self) -> None:
        if self.sigma != "auto":
            try:
                level = float(self.sigma)
            except ValueError:
                raise OptionError(f"--sigma: expected auto or a number 0-255, got {self.sigma!r}") from None
            if not (math.isfinite(level) and 0.0 <= level <= 255.0):
                raise OptionError(f"--sigma: must be auto or within 0-255, got {self.sigma!r}")

    def level(self) -> float | None:
        """The given noise level in [0, 1] units, or None for ``auto``."""
        return None if self.sigma == "auto" else float(self.sigma) / 255.0


class DenoiseRestorer(Restorer):
    task = "denoise"
    options_type = DenoiseOptions
    commands = ("denoise",)

    def __init__(self, model: Any, card: Any, device: Any) -> None:
        super().__init__(model, card, device)
        c = getattr(model, "in_channels", None)
        self.model_channels = int(c if c is not None else (card.get("config") or {}).get("in_channels", 3))
        self.conditioned = bool(getattr(model, "noise_conditioned", False))

    def prepare(self, x: Tensor, mask: Tensor | None, opts: DenoiseOptions) -> Work:
        net_input = to_model_channels(x, self.model_channels, ValueError, "model")
        if not self.conditioned:
            if opts.level() is not None:
                warnings.warn(f"{self.card.get('name') or 'this model'} is a blind denoiser: --sigma is ignored",
                              stacklevel=2)
            return Work(net_input, {"x": x})
        given = opts.level()
        sigma = estimate_sigma(x) if given is None else torch.full((x.shape[0],), given)
        if net_input.shape[0] != x.shape[0]:  # a gray model denoises each colour channel as an image
            sigma = sigma.repeat_interleave(net_input.shape[0] // x.shape[0])
        return Work(net_input, {"x": x, "sigma": sigma.float()})

    def network(self, work: Work, opts: DenoiseOptions) -> Tensor:
        assert work.net_input is not None
        x, net_input = work.state.pop("x"), work.net_input
        if "sigma" in work.state:
            sigma = work.state["sigma"].to(self.device, self.dtype)
            forward = lambda t: self.model(t.to(self.device, self.dtype), sigma).float()  # noqa: E731
        else:
            forward = lambda t: self.forward(t, opts)  # noqa: E731
        post, out = None, None
        if net_input.shape[1] != x.shape[1] and net_input.shape[0] == x.shape[0]:
            # a gray image through a colour model: each tile goes back to gray before blending, so
            # no full-size 3-channel output exists (the mean commutes with the blend up to rounding)
            def post(y: Tensor) -> Tensor:
                return from_model_channels(y, x.shape[1], self.model_channels)
            out = x if work.inplace else None
        elif work.inplace:
            out = net_input  # x itself, or (a gray model on colour) a view of its channels as images
        return self.tiled_passes(net_input, opts, forward, post=post, out=out)

    def finish(self, y: Tensor | None, x: Tensor, work: Work, opts: DenoiseOptions) -> Tensor:
        assert y is not None
        if y.shape != x.shape:
            y = from_model_channels(y, x.shape[1], self.model_channels)
        return y.clamp_(0.0, 1.0)

    def demo(self, photo: Tensor, seed: int, opts: DenoiseOptions, run: Any) -> list[tuple[str, Tensor]]:
        """Photo models denoise the bundled photo; Fashion-MNIST models 8 of their test images.

        A model trained on 28x28 clothing says little on a 512 px photo, so a
        ``fashion-mnist`` card shows its test images (x4 nearest upscale, one
        column each for noisy / restored / clean) when the IDX files are
        installed, and falls back to the photo otherwise.
        """
        clean = photo.float()
        if self.card.get("dataset") == "fashion-mnist":
            try:
                images, _ = load_idx_split(None, "test")
                pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(int(seed)))[:8]
                clean = torch.from_numpy(images[pick.numpy()].copy()).float().div_(255.0).unsqueeze(1)
            except (OSError, ValueError):
                pass  # no Fashion-MNIST here: the photo stands in
        noisy = corrupt.apply(clean, str(self.card["corruption"]), seed).input
        out = run(noisy)
        if clean.shape[0] == 1:
            return [("input", noisy), ("restored", out), ("target", clean)]

        def column(x: Tensor) -> Tensor:  # N1HW -> 1 x 1 x (N*4H) x 4W
            x = F.interpolate(x, scale_factor=4, mode="nearest")
            return torch.cat(list(x), dim=1)[None]

        return [("input", column(noisy)), ("restored", column(out)), ("target", column(clean))]
