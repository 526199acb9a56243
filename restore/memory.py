"""How much memory restoring an image needs, and the cap that refuses what would not fit.

The pipeline keeps one full-size float32 copy of an image (the decoded image, overwritten by its
result in place on the command line's path; for inpaint there, the image's uint8/uint16 samples as
decoded, only hole pixels rewritten); everything else works in row bands or tiles, so the
working memory grows with the tile and the image width, not the image area. `estimate` adds up
those parts; `check` refuses a run whose estimate is above the cap, before any work, with a
message that says what to change. The cap is ``RESTORE_MAX_MEMORY_GB`` when set, else this
machine's physical RAM: above it the run would swap or be killed part-way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ENV", "MemoryLimitError", "Estimate", "cap_bytes", "check", "estimate"]

#: environment variable that sets the cap, in GB (10**9 bytes)
ENV = "RESTORE_MAX_MEMORY_GB"

#: bytes the process holds besides the images: Python, torch, the model, one tile's activations and
#: what the allocator keeps (the shipped denoiser's peak at 6000x4000 on CPU less its decoded image:
#: 1.3 GB, `python eval/speed.py --sections huge`)
BASE_BYTES = 1300 * 10**6


class MemoryLimitError(ValueError):
    """The image needs more memory than the cap allows."""


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs: the full-size image buffers and the tile/band working memory (plus `BASE_BYTES`)."""

    image: int
    working: int

    @property
    def total(self) -> int:
        return self.image + self.working + BASE_BYTES


def estimate(task: str, n: int, channels: int, height: int, width: int, tile: int, *, inplace: bool = True,
             colour_output: bool = False, model_channels: int | None = None, sample_bytes: int = 4) -> Estimate:
    """Memory of restoring an N x C x H x W batch with ``task`` in ``tile``-pixel tiles.

    ``sample_bytes``: 4 for a float32 image, 1 or 2 for uint8/uint16 samples restored in place
    (`restore.pipeline.Restorer.integer_inplace`: inpaint on the command line). ``inplace``: the
    result overwrites the input (the command line); else a full-size float32 output exists too (the
    Python API keeps the caller's tensor). A colour result of a gray input (colorize) is one more
    full-size buffer; inpainting adds its hole mask (bool, and its samples as decoded: two bytes a
    pixel, three more for a gray network on colour, which fills each channel with its own copy) and
    the pull-push fill's pyramid from quarter resolution down (the fed channels plus a weight plane
    in float32, the coarser levels a third more) with the quarter level's push temporaries (about
    four times that level); its half- and full-resolution steps are banded.
    """
    if sample_bytes not in (1, 2, 4):
        raise ValueError(f"sample_bytes must be 1, 2 or 4, got {sample_bytes!r}")
    pixels = n * height * width
    out_channels = 3 if colour_output else channels
    image = sample_bytes * pixels * channels
    if not inplace or out_channels != channels:
        image += 4 * pixels * out_channels
    if task == "inpaint":
        gray_on_colour = model_channels == 1 and channels == 3
        image += pixels * (5 if gray_on_colour else 2)
        planes = 3 * 2 if gray_on_colour else (model_channels or channels) + 1
        quarter = 4 * pixels * planes // 16  # float32 at a sixteenth of the pixels
        image += quarter * 4 // 3 + 4 * quarter
    rows = min(height, max(tile, 256)) if tile else height  # a tile row, or the bands of row-wise steps
    # the tile row's accumulator and its finished rows waiting to be written, in the widest channels
    working = 2 * 4 * n * rows * width * max(channels, out_channels, model_channels or 0)
    return Estimate(image=image, working=working)


def cap_bytes() -> int:
    """The cap: ``RESTORE_MAX_MEMORY_GB`` (GB) when set, else the machine's physical RAM."""
    value = os.environ.get(ENV)
    if value:
        try:
            gb = float(value)
        except ValueError:
            raise MemoryLimitError(f"{ENV}={value!r}: expected a number of GB") from None
        if not gb > 0:
            raise MemoryLimitError(f"{ENV}={value!r}: must be > 0")
        return int(gb * 1e9)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: no cap


def check(task: str, need: Estimate, height: int, width: int, n: int = 1) -> None:
    """Raise `MemoryLimitError` when ``need`` is above the cap, naming the size, the estimate and the remedies."""
    cap = cap_bytes()
    if need.total <= cap:
        return
    source = f"{ENV}={os.environ[ENV]}" if os.environ.get(ENV) else "this machine's RAM; set " + ENV + " to change it"
    batch = f"{n} images of " if n > 1 else "a "
    raise MemoryLimitError(
        f"{task}: {batch}{width}x{height} image needs about {need.total / 1e9:.1f} GB "
        f"(full-size buffers {need.image / 1e9:.1f} GB, tiles and bands {need.working / 1e9:.1f} GB, "
        f"program and model {BASE_BYTES / 1e9:.1f} GB), above the limit of {cap / 1e9:.1f} GB ({source}). "
        "A smaller --tile only shrinks the tiles-and-bands part, never the image itself: "
        "crop or downscale the image, restore fewer images at once, or raise the limit on a machine with the memory"
    )
