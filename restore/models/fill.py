"""Classical fills of missing pixels that the generators start from.

A network that only has to *refine* a good classical estimate learns far
faster than one that must rebuild the image, and it can never start worse
than that estimate (its residual output begins at zero). Two estimates live
here, both plain tensor ops (any device, any batch, no gradients needed
through the masks):

* `fill_impulses`: the switching mean filter for salt-and-pepper noise (only
  the hit pixels, found by `impulse_mask`, are replaced);
* `push_pull_fill`: multi-scale normalised interpolation (Gortler et al.'s
  pull-push) for inpainting holes of any size: a smooth membrane from the
  hole's whole surroundings, which on the held-out photos already scores above
  OpenCV's Telea inside the holes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from restore.tiling import bilinear_rows, bilinear_source_rows, float_rows, float_type

__all__ = ["fill_impulses", "impulse_mask", "push_pull_fill", "push_pull_rows"]


def impulse_mask(x: Tensor, tol: float = 0.5 / 255.0) -> Tensor:
    """N1HW bool: pixels whose channels are all ~0 (pepper) or all ~1 (salt), as `corrupt.SaltPepper` writes them."""
    return (x <= tol).all(dim=1, keepdim=True) | (x >= 1.0 - tol).all(dim=1, keepdim=True)


def fill_impulses(x: Tensor, hit: Tensor, windows: Sequence[int] = (3, 5, 7)) -> Tensor:
    """Replace each hit pixel by the mean of its unhit neighbours (switching mean filter).

    Growing windows fill clusters of hits from the outside in; a hit with no
    unhit pixel within the largest window (the inside of a genuinely black or
    white area) keeps its value, which is then usually right.
    """
    out, valid = x, (~hit).to(x.dtype)
    for k in windows:
        weight = F.avg_pool2d(valid, k, 1, k // 2, count_include_pad=False)
        total = F.avg_pool2d(out * valid, k, 1, k // 2, count_include_pad=False)
        fill = (valid == 0) & (weight > 0)
        out = torch.where(fill, total / weight.clamp_min(1e-6), out)
        valid = torch.where(fill, torch.ones_like(valid), valid)
    return out


def push_pull_fill(x: Tensor, hole: Tensor, smooth_iters: int = 16, empty_value: float = 0.5, *,
                   band_rows: int | None = None, add_to: Tensor | None = None) -> Tensor:
    """Fill ``hole`` (N1HW, true = missing) of ``x`` (NCHW) with a smooth membrane; known pixels kept exactly.

    Pull: halve known-weighted sums and weights level by level down to one
    pixel. Push: from the coarsest level up, every pixel with no known pixel
    under it starts from the bilinearly upsampled coarser estimate and is
    relaxed ``smooth_iters`` Jacobi steps towards the mean of its four
    neighbours, the others take the mean of their known pixels. Relaxing on
    every level (nested iteration, as in multigrid) approaches the harmonic
    interpolant of the hole's border at the cost of a few convolutions per
    level, and removes pull-push's blockiness: on the held-out photos it
    raises the in-hole PSNR from 19.54 to 20.29 dB (small holes) and from
    18.71 to 19.41 dB (large), against Telea's 19.02 / 17.80. An image with
    no known pixel at all gets ``empty_value``.

    Memory: the full-resolution steps hold several full-size temporaries
    (products, pads, neighbour sums, the upscaled half-resolution estimate);
    with ``band_rows`` they run on that many rows at a time (plus
    ``smooth_iters`` rows of halo, as far as the Jacobi steps carry
    information; the estimate upscaled band by band, `push_pull_rows`): `restore
    inpaint` on a 100-megapixel photo. Banded values do not depend on the band
    size; they equal the one-pass ones up to float rounding (the upscale's
    weights are computed another way). ``add_to`` (NCHW like ``x``) receives
    the fill added in place and is returned, which saves one more full-size buffer.
    """
    hole = hole.bool()
    h, w = x.shape[-2:]
    if band_rows is not None or (h == 1 and w == 1):
        out = add_to if add_to is not None else torch.zeros_like(x, dtype=float_type(x))
        for r0, r1, est in push_pull_rows(x, hole, smooth_iters, empty_value, band_rows=band_rows or 2):
            out[..., r0:r1, :].add_(est)
        return out
    x = float_rows(x, 0, h)
    rows = h + h % 2  # even, so every band pools whole 2x2 windows (one band: the image, rounded up to even)
    half = _half_level(x, hole, smooth_iters, empty_value, rows)
    if half.device.type == "cpu":
        # channels-last input: the CPU kernel writes the upsampled image straight into its output
        # instead of into a buffer copied back (one full-size copy less); the values are the same
        half = half.contiguous(memory_format=torch.channels_last)
    up = F.interpolate(half, size=(h, w), mode="bilinear", align_corners=False)
    del half
    est = _relax(torch.where(hole, up, x), hole, smooth_iters)
    return est if add_to is None else add_to.add_(est)


def push_pull_rows(x: Tensor, hole: Tensor, smooth_iters: int = 16, empty_value: float = 0.5, *,
                   band_rows: int = 256) -> Iterator[tuple[int, int, Tensor]]:
    """`push_pull_fill`'s rows ``[r0, r1)``, ``band_rows`` at a time: yields ``(r0, r1, fill of those rows)``.

    Only the quarter-resolution estimate and a band (with its halo) are held, so the caller can use
    each band (add, composite) before the next is made: the half-resolution level a band needs is
    pooled again from its rows of ``x`` and relaxed with a halo (a sixth of a 12000x12000 image
    less held; the half level's relaxation is repeated over the halos, a few percent more work).
    ``x``'s hole pixels are never read, so the caller may write the fill into them as the bands
    come. ``x`` may hold uint8/uint16 samples (`float_rows`: converted a band at a time); the fill
    is float.
    """
    hole = hole.bool()
    h, w = x.shape[-2:]
    if h == 1 and w == 1:  # a 1x1 image: known or empty
        xf = float_rows(x, 0, 1)
        yield 0, 1, torch.where(hole.expand_as(xf), torch.full_like(xf, empty_value), xf)
        return
    rows = max(2, int(band_rows) // 2 * 2)  # even, so every band pools whole 2x2 windows
    hh, hw = (h + 1) // 2, (w + 1) // 2
    if hh == 1 and hw == 1:  # the half level is the pyramid's top: one pixel, not relaxed
        half: Tensor | None = _half_level(x, hole, smooth_iters, empty_value, rows)
        quarter = None
    else:
        half, quarter = None, _quarter_level(x, hole, smooth_iters, empty_value, rows)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        a, b = max(0, r0 - smooth_iters), min(h, r1 + smooth_iters)
        band_hole = hole[..., a:b, :]
        lo, hi = bilinear_source_rows(hh, h, a, b)
        part = half[..., lo:hi, :] if half is not None else _half_rows(x, hole, quarter, lo, hi, smooth_iters)
        up = bilinear_rows(part, (h, w), a, b, top=lo, small_height=hh)
        del part
        est = _relax(torch.where(band_hole, up, float_rows(x, a, b)), band_hole, smooth_iters)
        yield r0, r1, est[..., r0 - a : r1 - a, :]
        del est, up


def _pool_rows(x: Tensor, hole: Tensor, r0: int, r1: int) -> tuple[Tensor, Tensor]:
    """Half-resolution known-weighted sums and weights of rows ``[r0, r1)`` (``r0`` even): rows
    ``[r0 // 2, ceil(r1 / 2))`` of the pull's first level, whatever band they are computed in."""
    valid = (~hole[..., r0:r1, :]).to(float_type(x))
    sums = F.avg_pool2d(float_rows(x, r0, r1) * valid, 2, ceil_mode=True)
    return sums, F.avg_pool2d(valid, 2, ceil_mode=True)


def _quarter_level(x: Tensor, hole: Tensor, smooth_iters: int, empty_value: float, rows: int) -> Tensor:
    """The push's estimate at quarter resolution, the one `_half_level` pushes its half level from (the
    half level is not held: pulled ``rows`` rows at a time and pooled again at once)."""
    n, c, h, w = x.shape
    dtype = float_type(x)
    rows = max(4, (rows + 3) // 4 * 4)  # a multiple of 4: whole 2x2 windows on both levels
    qh, qw = (h + 3) // 4, (w + 3) // 4
    sums = x.new_empty(n, c, qh, qw, dtype=dtype)
    weights = x.new_empty(n, 1, qh, qw, dtype=dtype)
    for r0 in range(0, h, rows):
        half_sums, half_weights = _pool_rows(x, hole, r0, r0 + rows)
        sums[..., r0 // 4 : (r0 + rows) // 4, :] = F.avg_pool2d(half_sums, 2, ceil_mode=True)
        weights[..., r0 // 4 : (r0 + rows) // 4, :] = F.avg_pool2d(half_weights, 2, ceil_mode=True)
        del half_sums, half_weights
    return _push(sums, weights, smooth_iters, empty_value)


def _half_rows(x: Tensor, hole: Tensor, quarter: Tensor, lo: int, hi: int, iters: int) -> Tensor:
    """Rows ``[lo, hi)`` of the half-resolution estimate: pooled from ``x`` with ``iters`` rows of halo
    and relaxed from ``quarter`` upscaled (the values of `_relax_in_bands` over the whole level)."""
    h, w = x.shape[-2:]
    hh, hw = (h + 1) // 2, (w + 1) // 2
    a, b = max(0, lo - iters), min(hh, hi + iters)
    sums, weights = _pool_rows(x, hole, 2 * a, min(h, 2 * b))
    free = weights <= 0
    est = _relax(torch.where(free, bilinear_rows(quarter, (hh, hw), a, b), sums / weights.clamp_min(1e-12)),
                 free, iters)
    return est[..., lo - a : hi - a, :]


def _half_level(x: Tensor, hole: Tensor, smooth_iters: int, empty_value: float, rows: int) -> Tensor:
    """The push's estimate at half resolution: pull to one pixel (the first halving ``rows`` rows at a time),
    push back up relaxing every level."""
    n, c, h, w = x.shape
    dtype = float_type(x)
    sums = x.new_empty(n, c, (h + 1) // 2, (w + 1) // 2, dtype=dtype)
    weights = x.new_empty(n, 1, (h + 1) // 2, (w + 1) // 2, dtype=dtype)
    for r0 in range(0, h, rows):
        sums[..., r0 // 2 : (r0 + rows) // 2, :], weights[..., r0 // 2 : (r0 + rows) // 2, :] = _pool_rows(
            x, hole, r0, r0 + rows)
    return _push(sums, weights, smooth_iters, empty_value)


def _push(sums: Tensor, weights: Tensor, smooth_iters: int, empty_value: float) -> Tensor:
    """Pull ``sums``/``weights`` (a pyramid level) down to one pixel, then push back up to their resolution,
    relaxing every level."""
    levels = [(sums, weights)]
    while sums.shape[-2] > 1 or sums.shape[-1] > 1:
        sums = F.avg_pool2d(sums, 2, ceil_mode=True)
        weights = F.avg_pool2d(weights, 2, ceil_mode=True)
        levels.append((sums, weights))
    sums, weights = levels[-1]
    est = torch.where(weights > 0, sums / weights.clamp_min(1e-12), torch.full_like(sums, empty_value))
    for k in range(len(levels) - 2, -1, -1):
        sums, weights = levels[k]
        up = F.interpolate(est, size=sums.shape[-2:], mode="bilinear", align_corners=False)
        free = weights <= 0
        est = _relax(torch.where(free, up, sums / weights.clamp_min(1e-12)), free, smooth_iters)
    return est


def _relax(est: Tensor, free: Tensor, iters: int) -> Tensor:
    """``iters`` Jacobi steps: each ``free`` pixel becomes the mean of its 4 neighbours (replicated border).

    Written as four shifted adds rather than a 3x3 convolution: a grouped conv
    on the CPU unfolds its input 9-fold, which at 6000x4000 costs gigabytes.
    """
    for _ in range(iters):
        padded = F.pad(est, (1, 1, 1, 1), mode="replicate")
        neighbours = padded[..., :-2, 1:-1].clone()
        neighbours.add_(padded[..., 2:, 1:-1]).add_(padded[..., 1:-1, :-2]).add_(padded[..., 1:-1, 2:])
        del padded
        est = torch.where(free, neighbours.mul_(0.25), est)
    return est
