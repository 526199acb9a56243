"""Colorization at full resolution (DeOldify / richzhang): a/b predicted small, the input's own L kept.

a/b are predicted at the model's working resolution (shorter side
``work_size``), upsampled and recombined with the full-resolution L, and the
result is gamut-mapped by reducing chroma at constant L and hue, so the
luminance of every output pixel equals the input's. A colour input is
colorized from its own L (its colours are discarded).

Memory: one full-size float32 N3HW buffer holds L and a/b, then (converted
in place, band by band) the RGB result; with ``inplace`` that buffer is the
RGB input itself, whose colours are discarded anyway. Everything else works
in row bands: L is computed band by band (twice: for the network's small
input, downscaled width first then height, and into the buffer), and a/b are
upsampled band by band (bilinear is separable), so no other full-size copy
exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from restore.options import PhotoOptions, OptionError, option
from restore.pipeline import Restorer, Work
from restore.tiling import bilinear_rows
from restore.tasks.colorize import (
    AB_SCALE,
    KEEP_L_ITERATIONS,
    KEEP_L_TOL,
    L_CENTER,
    L_SCALE,
    ColorizeError,
    _bands,
    _keep_l_into,
    lightness,
)
from restore.tasks.common import is_number

__all__ = ["DEFAULT_WEIGHTS", "ColorizeOptions", "ColorizeRestorer", "working_size"]

#: shipped weights used by ``restore colorize`` without ``--weights``
DEFAULT_WEIGHTS = "colorize"


@dataclass(frozen=True)
class ColorizeOptions(PhotoOptions):
    """``restore colorize`` / ``restore.load("colorize")(image, ...)`` options."""

    task: ClassVar[str] = "colorize"

    work_size: int | None = option(None, "shorter side (pixels) at which colours are predicted",
                                   kind=int, minimum=8, metavar="N")
    saturation: float = option(1.0, "multiply the predicted a/b by F (1 = as predicted, 0 = gray); L is always kept",
                               minimum=0.0, metavar="F")


def working_size(height: int, width: int, work_size: int, max_side: int) -> tuple[int, int]:
    """(h, w) with the shorter side ``work_size`` and the longer at most ``max_side``, aspect kept."""
    if height < 1 or width < 1:
        raise ColorizeError(f"empty image of size {height}x{width}")
    scale = work_size / min(height, width)
    scale = min(scale, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def card_scales(card: Any) -> tuple[float, float, float]:
    """(L centre, L scale, a/b scale) of the network's normalisation, from the card (richzhang's defaults)."""
    color = card.get("color") or {}
    values = (color.get("l_center", L_CENTER), color.get("l_scale", L_SCALE), color.get("ab_scale", AB_SCALE))
    if not all(is_number(v) for v in values) or values[1] <= 0:
        raise ColorizeError(f"model card {card.get('name')!r}: bad colour scaling {color!r}")
    return float(values[0]), float(values[1]), float(values[2])


class ColorizeRestorer(Restorer):
    task = "colorize"
    options_type = ColorizeOptions
    commands = ("colorize",)
    colour_output = True

    def lightness_rows(self, x: Tensor, r0: int, r1: int) -> Tensor:
        """CIELAB L of rows ``[r0, r1)`` of ``x``, on the device (moved there band by band)."""
        return lightness(x[:, :, r0:r1].to(self.device, torch.float32))

    def prepare(self, x: Tensor, mask: Tensor | None, opts: ColorizeOptions) -> Work:
        l_center, l_scale, _ = card_scales(self.card)
        n, _, height, width = x.shape
        ws = int(opts.work_size or self.card.get("work_size") or 256)
        if ws < 8:
            raise OptionError(f"--work-size: must be >= 8, got {ws}")
        max_side = max(ws, int(self.card.get("max_work_side") or 4 * ws))
        h, w = working_size(height, width, ws, max_side)
        if h <= height and w <= width and (h, w) != (height, width):
            # separable (antialiased) downscale, width first in row bands, then height: what one 2-D
            # call computes, without the full-size L
            # preallocated: small results kept between the bands' temporaries would fragment the heap (+300 MB
            # of RSS at 6000x4000)
            narrow = torch.empty(n, 1, height, w, dtype=torch.float32, device=self.device)
            for r0, r1 in _bands(height, width):
                narrow[:, :, r0:r1] = F.interpolate(self.lightness_rows(x, r0, r1), size=(r1 - r0, w),
                                                    mode="bilinear", align_corners=False, antialias=h < height)
            small = F.interpolate(narrow, size=(h, w), mode="bilinear", align_corners=False, antialias=h < height)
            del narrow
        else:
            small = torch.cat([self.lightness_rows(x, r0, r1) for r0, r1 in _bands(height, width)], dim=2)
            if (h, w) != (height, width):
                small = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False, antialias=h < height)
        return Work((small - l_center) / l_scale)

    def forward(self, t: Tensor, opts: ColorizeOptions) -> Tensor:
        return self.model(t.to(self.device, self.dtype)).float()

    def full_size_ab(self, y: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
        """The network's normalised a/b at the working size -> CIELAB a/b at the image's ``size``."""
        height, width = size
        ab = y.float().to(self.device) * card_scales(self.card)[2]
        if ab.shape[-2:] != (height, width):
            ab = F.interpolate(ab, size=(height, width), mode="bilinear", align_corners=False,
                               antialias=ab.shape[-2] > height)
        return ab

    def ab_rows(self, y: Tensor, size: tuple[int, int] | torch.Size) -> Any:
        """`full_size_ab` in row bands (`restore.tiling.bilinear_rows`, equal to rounding): yields
        ``(r0, r1, a/b of rows [r0, r1))``. A downscale (an image under the working size) is one pass."""
        height, width = size
        ab = y.float().to(self.device) * card_scales(self.card)[2]
        sh = ab.shape[-2]
        if sh > height or ab.shape[-1] > width:
            full = self.full_size_ab(y, size)
            for r0, r1 in _bands(height, width):
                yield r0, r1, full[:, :, r0:r1]
            return
        for r0, r1 in _bands(height, width):
            yield r0, r1, bilinear_rows(ab, (height, width), r0, r1)

    def finish(self, y: Tensor, x: Tensor, work: Work, opts: ColorizeOptions) -> Tensor:
        n, c, height, width = x.shape
        if work.inplace and c == 3 and x.device == self.device:
            lab = x  # its colours are discarded: each band's L is taken before the band is overwritten
        else:
            lab = torch.empty(n, 3, height, width, dtype=torch.float32, device=self.device)
        for r0, r1 in _bands(height, width):
            lab[:, :1, r0:r1] = self.lightness_rows(x, r0, r1)
        for r0, r1, ab in self.ab_rows(y, (height, width)):
            torch.mul(ab, opts.saturation, out=lab[:, 1:, r0:r1])
        _keep_l_into(lab, lab[:, :1], lab[:, 1:], KEEP_L_ITERATIONS, KEEP_L_TOL)
        return lab
