"""Tensor utilities shared by every restoring network: tiling and self-ensemble.

* ``tiled``: run a network over overlapping tiles and blend them
  (Restormer-style weighted accumulation), so a 6000x4000 photo restores in
  the memory of one tile plus the output, without seams.
* ``self_ensemble``: average a network over flips and 90-degree rotations of
  its input (EDSR+/KAIR "x8"), a PSNR gain for the price of 2 or 8 passes.

Pure functions of tensors: they know nothing of files, tasks or options
(`restore.pipeline` combines them; `restore.folder` drives folders).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["ENSEMBLES", "aligned_size", "reflect_pad", "self_ensemble", "tiled", "tiled_on_grid"]


# --------------------------------------------------------------------------- tiling


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Evenly spaced tile starts covering ``[0, size)`` with at least ``overlap`` shared pixels."""
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (n - 1)
    return [round(i * step) for i in range(n)]


def _window(starts: list[int], index: int, length: int) -> torch.Tensor:
    """1-D blending weights of tile ``index``: exactly 1 where no neighbour overlaps it,
    a linear ramp strictly inside (0, 1) across each overlap, so every pixel gets weight > 0."""
    w = torch.ones(length, dtype=torch.float32)
    s = starts[index]
    if index > 0:
        ramp = starts[index - 1] + length - s  # pixels shared with the previous tile
        if ramp > 0:
            w[:ramp] = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp
    if index + 1 < len(starts):
        ramp = s + length - starts[index + 1]  # pixels shared with the next tile
        if ramp > 0:
            down = (torch.arange(ramp, 0, -1, dtype=torch.float32) - 0.5) / ramp
            w[length - ramp :] = torch.minimum(w[length - ramp :], down)
    return w


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect-pad the H and W of NCHW ``x``, mirroring again for pads larger than the image
    (a 5x5 image into a 256-stride network) and replicating along a side of one pixel."""
    for dim, (before, after) in ((2, (top, bottom)), (3, (left, right))):
        while before > 0 or after > 0:
            size = x.shape[dim]
            if size == 1:
                pad = (0, 0, before, after) if dim == 2 else (before, after, 0, 0)
                x = F.pad(x, pad, mode="replicate")
                break
            b, a = min(before, size - 1), min(after, size - 1)
            x = F.pad(x, (0, 0, b, a) if dim == 2 else (b, a, 0, 0), mode="reflect")
            before, after = before - b, after - a
    return x


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    return reflect_pad(x, 0, (-h) % multiple, 0, (-w) % multiple)


def _run_tile(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    padded = _pad_to_multiple(x, multiple)
    y = fn(padded)
    if not isinstance(y, torch.Tensor) or y.dim() != 4:
        raise ValueError(f"tiled: fn must return an NCHW tensor, got {type(y).__name__} {getattr(y, 'shape', '')}")
    if y.shape[0] != x.shape[0] or tuple(y.shape[-2:]) != tuple(padded.shape[-2:]):
        raise ValueError(
            f"tiled: fn changed the batch or spatial size: {tuple(padded.shape)} -> {tuple(y.shape)}"
        )
    return y[..., :h, :w]


def tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int = 512,
    overlap: int = 32,
    multiple: int = 1,
) -> torch.Tensor:
    """Apply ``fn`` (NCHW -> NC'HW, same H and W) over overlapping tiles and blend them.

    Each tile is padded to ``multiple`` (for networks with a stride) and the
    result cropped back, so any image size works, 1x1 included. Outputs are
    accumulated as ``sum(out * w)`` and divided by ``sum(w)``; the weights are
    separable and the tiles form a grid, so ``sum(w)`` is the outer product of
    two 1-D vectors and never materialised as an image: memory is the output
    plus one tile. Weights are exactly 1 outside overlaps, so those pixels are
    bit-exact copies of ``fn``'s tile output. Accumulation happens on
    ``image.device`` in float32; ``fn`` may compute elsewhere and return any
    device. ``image`` may be CHW (returned as C'HW) or NCHW.
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4):
        raise ValueError(f"tiled: image must be a CHW or NCHW tensor, got {getattr(image, 'shape', type(image))}")
    if tile < 1:
        raise ValueError(f"tiled: tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tiled: overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    if multiple < 1:
        raise ValueError(f"tiled: multiple must be >= 1, got {multiple}")
    single = image.dim() == 3
    x = image[None] if single else image
    n, _, height, width = x.shape
    if height == 0 or width == 0:
        raise ValueError(f"tiled: empty image of shape {tuple(image.shape)}")

    with torch.no_grad():
        if height <= tile and width <= tile:
            out = _run_tile(fn, x, multiple).to(image.device, torch.float32)
            return out[0] if single else out

        ys, xs = _starts(height, tile, overlap), _starts(width, tile, overlap)
        th, tw = min(tile, height), min(tile, width)
        wy = torch.zeros(height, dtype=torch.float32, device=image.device)
        wx = torch.zeros(width, dtype=torch.float32, device=image.device)
        win_y = [_window(ys, i, th).to(image.device) for i in range(len(ys))]
        win_x = [_window(xs, j, tw).to(image.device) for j in range(len(xs))]
        for i, y0 in enumerate(ys):
            wy[y0 : y0 + th] += win_y[i]
        for j, x0 in enumerate(xs):
            wx[x0 : x0 + tw] += win_x[j]

        out: torch.Tensor | None = None
        for i, y0 in enumerate(ys):
            for j, x0 in enumerate(xs):
                y = _run_tile(fn, x[..., y0 : y0 + th, x0 : x0 + tw], multiple)
                y = y.to(image.device, torch.float32)
                if out is None:
                    out = torch.zeros(n, y.shape[1], height, width, dtype=torch.float32, device=image.device)
                weight = win_y[i][:, None] * win_x[j][None, :]
                out[..., y0 : y0 + th, x0 : x0 + tw].addcmul_(y, weight)
        assert out is not None
        # sum of weights = wy (outer) wx, because every row band meets every column band once.
        out.div_(wy[:, None]).div_(wx[None, :])
    return out[0] if single else out


def aligned_size(size: int, tile: int, overlap: int, multiple: int) -> int:
    """Smallest padded size >= ``size`` for which `tiled` puts every tile start on a multiple.

    ``tiled`` spaces n tiles evenly: start_i = i * (size - tile) / (n - 1); that is a multiple of
    ``multiple`` exactly when (size - tile) is divisible by (n - 1) * multiple. ``tile`` must itself
    be a multiple. The extra padding is at most (n - 1) * multiple pixels (a few percent).
    """
    s = -(-size // multiple) * multiple
    if s <= tile:
        return s
    while True:
        n = math.ceil((s - overlap) / (tile - overlap))
        if n <= 1 or (s - tile) % ((n - 1) * multiple) == 0:
            return s
        s += multiple


def tiled_on_grid(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int,
    overlap: int,
    multiple: int = 1,
) -> torch.Tensor:
    """`tiled` with every tile on the whole image's stride grid: the one tiling policy of the pipeline.

    A strided network (a UNet of stride ``multiple``) pads a whole image itself, centred. Here the
    image gets the same top/left padding, so each tile sees the pixels at the phase the whole-image
    pass would, plus bottom/right padding up to a size where every tile start is a multiple of the
    stride. Tiled and whole-image outputs then differ only where a tile border cuts the receptive
    field (blended away by the overlap ramps) and at the bottom/right image border. The overlap is
    at most half a tile.
    """
    h, w = image.shape[-2:]
    t = max(multiple, tile // multiple * multiple)
    ov = min(overlap, t // 2)
    top, left = ((-h) % multiple) // 2, ((-w) % multiple) // 2
    hp, wp = aligned_size(h + top, t, ov, multiple), aligned_size(w + left, t, ov, multiple)
    padded = reflect_pad(image, top, hp - h - top, left, wp - w - left)
    return tiled(fn, padded, tile=t, overlap=ov, multiple=multiple)[..., top : top + h, left : left + w]


# --------------------------------------------------------------------------- self-ensemble

#: ``--ensemble`` modes and their number of network passes.
ENSEMBLES: dict[str, int] = {"none": 1, "flip": 2, "x8": 8}


def self_ensemble(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str = "none") -> torch.Tensor:
    """Mean of ``inverse_t(fn(t(x)))`` over a group of flips/rotations ``t`` of NCHW ``x``.

    A network is never exactly equivariant, so its errors on the transformed
    copies are partly independent and the mean is a better estimate (EDSR+,
    KAIR's ``x8`` test mode). ``flip``: identity and left-right mirror (2
    passes; what suits photos, whose up and down differ); ``x8``: the 8
    symmetries of the square (4 rotations x mirror). A rotation swaps H and W,
    so ``fn`` must accept both orientations (the UNets pad themselves). The sum
    is accumulated in float32, one pass at a time, so memory is one extra
    output, not eight.
    """
    if mode not in ENSEMBLES:
        raise ValueError(f"ensemble mode must be one of {', '.join(ENSEMBLES)}, got {mode!r}")
    if mode == "none":
        return fn(x)
    rotations = ENSEMBLES[mode] // 2  # each rotation is run plain and mirrored
    total: torch.Tensor | None = None
    for k in range(rotations):
        for mirror in (False, True):
            t = torch.rot90(x, k, dims=(-2, -1)) if k else x
            if mirror:
                t = t.flip(-1)
            y = fn(t).float()
            if mirror:
                y = y.flip(-1)
            if k:
                y = torch.rot90(y, -k, dims=(-2, -1))
            # the first output is copied: fn may hand back a tensor the caller still holds
            total = y.clone() if total is None else total.add_(y)
    assert total is not None
    return total.div_(2 * rotations)
