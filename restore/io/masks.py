"""Inpainting masks from files: any nonzero pixel is a hole; painted alpha layers; lossy-mask warnings.

A mask is read with `restore.io.read.read_image` as stored (no float copy of a huge mask) and
reduced to a 1HW hole map; what counts as a hole, and when a JPEG's ringing deserves a warning,
is decided here only.
"""

from __future__ import annotations

import os
import shlex
import warnings
from pathlib import Path

import numpy as np
import torch

from restore.io.read import LoadedImage, read_image

__all__ = ["RINGING_SHARE", "LossyMaskWarning", "read_mask"]


class LossyMaskWarning(UserWarning):
    """A lossy (JPEG, lossy WebP) mask has many faint pixels: compression ringing that would become holes."""


#: Warn about a lossy mask when at least this share of the pixels it marks are faint (nonzero, under 50%):
#: JPEG at quality 50-95 gives ~10% around freeform strokes, quality 100 about 0.7%.
RINGING_SHARE: float = 0.005


def _lossy_kind(path: Path) -> str | None:
    """"JPEG" or "WebP" when the file is lossily compressed (its magic number and WebP chunks), else None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if head.startswith(b"\xff\xd8\xff"):
                return "JPEG"
            if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
                return None
            for _ in range(64):  # VP8 (lossy) or VP8L (lossless), maybe after VP8X, ICCP, ANIM, ALPH chunks
                chunk = handle.read(8)
                if len(chunk) < 8 or chunk[:4] == b"VP8L":
                    return None
                if chunk[:4] == b"VP8 ":
                    return "WebP"
                size = int.from_bytes(chunk[4:], "little")
                handle.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None
    return None


def _warn_if_ringing(path: Path, loaded: LoadedImage, holes: torch.Tensor) -> None:
    """LossyMaskWarning, with the command that thresholds the mask, when a lossy mask's holes are often faint."""
    kind = _lossy_kind(path)
    if kind is None:
        return
    marked = int(holes.sum())
    # under 50%: below (top + 1) / 2 as stored (v / top < 0.5 for integer v); 0.5 for a float image
    image = loaded.image if loaded.image.dtype != torch.uint16 else loaded.image.to(torch.int32)  # no uint16 amax
    half = 0.5 if image.is_floating_point() else (2 ** loaded.bit_depth) // 2
    faint = int((holes[0] & (image.amax(dim=0) < half)).sum())
    if faint < 10 or faint < RINGING_SHARE * marked:
        return
    png = path.with_suffix(".png")
    fix = ("python -c \"import sys, numpy as np; from PIL import Image; "
           "a = np.asarray(Image.open(sys.argv[1]).convert('RGB')).max(2); "
           "Image.fromarray(np.uint8(255 * (a >= 128))).save(sys.argv[2])\" "
           f"{shlex.quote(str(path))} {shlex.quote(str(png))}")
    warnings.warn(LossyMaskWarning(
        f"{path} is a lossy {kind} mask and {faint} of the {marked} pixels it marks as holes "
        f"({100 * faint / max(marked, 1):.1f}%) are faint (nonzero but under 50%): compression ringing around "
        "the drawn region, and every nonzero pixel is a hole. Save masks as PNG, or threshold this one at 50% "
        f"(a pixel is a hole when its brightest channel is at least 128) and pass the PNG: {fix}"), stacklevel=3)


def read_mask(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Read an inpainting mask as a 1HW float tensor, 1 = hole (``dtype=torch.bool``: True = hole, a
    quarter of the float mask's memory).

    On disk a mask is an image of the same size where any nonzero pixel (in any
    colour channel) marks a hole. A fully opaque alpha channel changes nothing.
    Editors also export masks as strokes on a transparent layer, where the
    alpha, not the colour, says what was painted; so when the alpha is not
    fully opaque, a pixel is a hole iff its alpha > 0 and its colour is
    nonzero, except when the colour is the same at every pixel with alpha > 0
    (black or white strokes, an alpha-only layer): then alpha > 0 alone marks
    the holes. A lossy (JPEG, lossy WebP) mask whose holes are often faint
    (compression ringing) gets a :class:`LossyMaskWarning` saying how to
    threshold it; the mask is returned as read.
    """
    loaded = read_image(path, integers=True)  # the samples as stored: no float32 copy of a huge mask
    painted = (loaded.image != 0).any(dim=0, keepdim=True)  # != : torch compares uint16 for equality only
    alpha = loaded.alpha
    if alpha is None or bool((alpha == np.iinfo(alpha.dtype).max).all()):
        _warn_if_ringing(Path(path), loaded, painted)
        return painted.to(dtype)
    visible = torch.from_numpy(alpha > 0)[None]
    colours = loaded.image[:, visible[0]]  # C x (pixels with alpha > 0)
    if colours.shape[1] == 0 or bool((colours == colours[:, :1]).all()):
        return visible.to(dtype)
    _warn_if_ringing(Path(path), loaded, visible & painted)
    return (visible & painted).to(dtype)
