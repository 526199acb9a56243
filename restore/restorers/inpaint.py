"""Inpainting: fill the holes of a mask (nonzero = hole), keep every known pixel bit-exactly.

An empty mask copies the input through; a mask that covers the whole image
is refused (there is nothing to inpaint *from*: the model's unconditional
output would be a context-free texture, not a restoration). Images are
inpainted at a working resolution (shorter side at most ``work_size``): the
hole is filled with context from the whole image and only the hole content
is upscaled; a ``prefill: pushpull`` generator's correction of its pull-push
fill is upscaled and added to the same fill computed at full resolution,
which keeps hole edges sharp. The known region is the input itself,
selected (not blended), at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from restore.corrupt import freeform_mask, make_generator
from restore.models.fill import push_pull_fill, push_pull_rows
from restore.options import PhotoOptions, option
from restore.pipeline import Restorer, Work
from restore.tasks.common import from_model_channels, to_model_channels
from restore.tasks.inpaint import DEFAULT_WORK_SIZE, InpaintInputError
from restore.tiling import bilinear_rows, float_rows, float_type, sample_max

__all__ = ["DEFAULT_WEIGHTS", "FULL_MASK_HELP", "InpaintOptions", "InpaintRestorer"]

#: Shipped weights used by ``restore inpaint`` when ``--weights`` is not given.
DEFAULT_WEIGHTS = "inpaint"

#: Rows of a full-resolution image processed at a time by `InpaintRestorer.finish` (the pull-push fill's
#: finest level and the final composite): their temporaries, several float32 copies of what is
#: processed, stay a band's instead of the photo's (gigabytes at 24 megapixels). Even, so that a
#: band's 2x2 pooling windows are the whole image's. The results do not depend on it.
BAND_ROWS = 256

FULL_MASK_HELP = (
    "the mask covers the whole image, so nothing is known to inpaint from; "
    "an inpainter would only invent a context-free texture (use a mask with some known pixels)"
)


@dataclass(frozen=True)
class InpaintOptions(PhotoOptions):
    """``restore inpaint`` / ``restore.load("inpaint")(image, mask=mask, ...)`` options."""

    task: ClassVar[str] = "inpaint"

    tile_overlap: int = option(64, "pixels shared by neighbouring tiles, blended linearly (at most half a tile)",
                               minimum=0, metavar="PX")
    work_size: int | None = option(None, "inpaint at this shorter image side (context from the whole image, hole "
                                         f"content upscaled; known pixels kept exactly); 0 = full resolution; "
                                         f"unset: the card's work_size, else {DEFAULT_WORK_SIZE}",
                                   kind=int, minimum=0, metavar="PX")


def downscale_known(x: Tensor, hole: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Area-downscale with known pixels only; a low-res pixel touching the hole becomes hole.

    Area averaging is separable: each band of `BAND_ROWS` rows is narrowed first, then the narrow
    image is shortened, so no full-size product exists (equal to one 2-D pass up to rounding).
    ``x`` may hold uint8/uint16 samples (converted a band at a time, `float_rows`).
    """
    n, c, h, _ = x.shape
    dtype = float_type(x)
    # preallocated: small results kept between the bands' temporaries would fragment the heap
    nums = x.new_empty(n, c, h, size[1], dtype=dtype)
    dens = x.new_empty(hole.shape[0], 1, h, size[1], dtype=dtype)
    for r0 in range(0, h, BAND_ROWS):
        r1 = min(h, r0 + BAND_ROWS)
        known = (~hole[..., r0:r1, :]).to(dtype)
        nums[..., r0:r1, :] = F.interpolate(float_rows(x, r0, r1) * known, size=(r1 - r0, size[1]), mode="area")
        dens[..., r0:r1, :] = F.interpolate(known, size=(r1 - r0, size[1]), mode="area")
        del known
    num = F.interpolate(nums, size=size, mode="area")
    den = F.interpolate(dens, size=size, mode="area")
    del nums, dens
    small_hole = den < 1.0 - 1e-4
    small = torch.where(small_hole, torch.zeros_like(num), num / den.clamp_min(1e-6))
    return small.clamp_(0, 1), small_hole


class InpaintRestorer(Restorer):
    task = "inpaint"
    options_type = InpaintOptions
    commands = ("inpaint",)
    needs_mask = True
    # only hole pixels change, computed in float row bands: a uint8/uint16 image is written in place
    integer_inplace = True

    def __init__(self, model: Any, card: Any, device: Any) -> None:
        super().__init__(model, card, device)
        self.model_channels = int(getattr(model, "image_channels", (card.get("config") or {}).get("in_channels", 4) - 1))

    def prepare(self, x: Tensor, mask: Tensor | None, opts: InpaintOptions) -> Work:
        assert mask is not None
        n, c, h, w = x.shape
        counts = torch.count_nonzero(mask.flatten(1), dim=1)  # sum() would make an int64 copy of the mask
        full = [i for i in range(n) if int(counts[i]) == h * w]
        if full:
            raise InpaintInputError(FULL_MASK_HELP + (f" (batch item(s) {full})" if n > 1 else ""))
        if int(counts.max()) == 0:
            return Work(None)  # nothing to fill anywhere: the pipeline copies the input through
        work = opts.work_size if opts.work_size is not None else int(self.card.get("work_size") or DEFAULT_WORK_SIZE)
        xd, hd = x.to(self.device), mask.to(self.device)
        feed = to_model_channels(xd, self.model_channels, InpaintInputError, "inpainting model")
        # a gray model fills each colour channel on its own, each with the image's hole
        hmask = hd.repeat_interleave(3, dim=0) if feed.shape[0] != n else hd
        scale = min(1.0, work / min(h, w)) if work > 0 else 1.0
        if scale < 1.0:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            small, small_hole = downscale_known(feed, hmask, size)
        else:  # full resolution: the network sees the whole image (a float copy of integer samples)
            small, small_hole = float_rows(feed, 0, h), hmask
        packed = torch.cat([small, small_hole.to(small.dtype)], dim=1)  # image and hole mirror/rotate together
        state = {"xd": xd, "hole": hd, "feed": feed, "hmask": hmask, "scale": scale}
        if scale < 1.0:
            state.update(small=small, small_hole=small_hole)
        return Work(packed, state)

    def forward(self, t: Tensor, opts: InpaintOptions) -> Tensor:
        img, m = t[:, :-1], t[:, -1:]
        return self.model(img.to(self.dtype), (m > 0.5).to(self.dtype))["output"].float()

    def finish(self, y: Tensor, x: Tensor, work: Work, opts: InpaintOptions) -> Tensor:
        s = work.state
        h, w = x.shape[-2:]
        work.net_input = None
        xd, hd = s["xd"], s["hole"]
        # Full resolution from here on, in row bands: each band's fill (the network's result upscaled,
        # or its upscaled correction plus the full-resolution pull-push fill) is composited into the
        # output at once. The output is the input itself with ``inplace`` (only hole pixels change,
        # and the fill never reads them), else a copy of it: no other full-size buffer exists.
        out = xd if work.inplace else xd.clone()
        if s["scale"] < 1.0:
            small = y
            pushpull = getattr(self.model, "prefill", "constant") == "pushpull"
            if pushpull:
                # the network corrects a pull-push fill at the working scale; its upscaled correction is
                # added to the same fill computed at full resolution, which keeps hole edges sharp
                small = y - push_pull_fill(s.pop("small"), s.pop("small_hole"))
            del y
            bands = (push_pull_rows(s["feed"], s["hmask"], band_rows=BAND_ROWS) if pushpull else
                     ((r0, min(h, r0 + BAND_ROWS), None) for r0 in range(0, h, BAND_ROWS)))
            for r0, r1, fill in bands:
                band = bilinear_rows(small, (h, w), r0, r1)
                self._composite(out, band if fill is None else band.add_(fill), hd, r0, r1)
        else:
            for r0 in range(0, h, BAND_ROWS):
                r1 = min(h, r0 + BAND_ROWS)
                self._composite(out, y[..., r0:r1, :].clone(), hd, r0, r1)
        return out

    def _composite(self, out: Tensor, fill: Tensor, hole: Tensor, r0: int, r1: int) -> None:
        """Rows [r0, r1) of ``out`` take ``fill`` (model channels, clamped here) where ``hole``: known pixels
        stay the input's, bit-exact. Integer ``out`` (samples as stored) gets the fill rounded as
        `restore.io.write_image` rounds a float image, so the file written is the same either way."""
        fill = from_model_channels(fill.clamp_(0, 1), out.shape[1], self.model_channels)
        if not out.is_floating_point():
            fill = fill.mul(sample_max(out.dtype)).round_().to(out.dtype)
        band = out[..., r0:r1, :]
        band.copy_(torch.where(hole[..., r0:r1, :], fill, band))

    def demo(self, photo: Tensor, seed: int, opts: InpaintOptions, run: Any) -> list[tuple[str, Tensor]]:
        """Masked photo (holes white) / inpainted / original, on a seeded free-form mask."""
        h, w = photo.shape[-2:]
        mask = freeform_mask(h, w, coverage=(0.15, 0.3), generator=make_generator(seed, "cpu"))[None]
        out = run(photo, mask)
        return [("masked", photo.masked_fill(mask.bool(), 1.0)), ("inpainted", out), ("target", photo)]
