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
from contextvars import ContextVar

import torch
import torch.nn.functional as F

#: Called as ``(tiles done, tiles of the image)`` after each tile of `tiled`, when set: the command
#: line's progress bar counts the tiles of a large image with it. A context variable, so each thread
#: (one model per thread) reports to its own caller.
TILE_PROGRESS: ContextVar[Callable[[int, int], None] | None] = ContextVar("restore_tile_progress", default=None)

__all__ = ["ENSEMBLES", "TILE_PROGRESS", "aligned_size", "bilinear_rows", "bilinear_source_rows", "float_rows",
           "float_type", "reflect_pad", "sample_max", "self_ensemble", "tiled", "tiled_on_grid"]


# --------------------------------------------------------------------------- integer samples, a band at a time


def sample_max(dtype: torch.dtype) -> float:
    """The value of white in uint8 (255) or uint16 (65535) samples: [0, 1] floats are samples / this."""
    if dtype == torch.uint8:
        return 255.0
    if dtype == torch.uint16:
        return 65535.0
    raise ValueError(f"expected uint8 or uint16 samples, got {dtype}")


def float_type(x: torch.Tensor) -> torch.dtype:
    """The float dtype computations on ``x`` use: its own, or float32 for integer samples."""
    return x.dtype if x.is_floating_point() else torch.float32


def float_rows(x: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """Rows ``[r0, r1)`` of NCHW ``x`` as float: as they are, or uint8/uint16 samples scaled to [0, 1]
    exactly as `restore.io.read_image` scales them, so an image kept as stored (a quarter of its float32
    size) is converted only a band at a time."""
    band = x[..., r0:r1, :]
    if band.is_floating_point():
        return band
    return band.float().div_(sample_max(band.dtype))


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
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply ``fn`` (NCHW -> NC'HW, same H and W) over overlapping tiles and blend them.

    Each tile is padded to ``multiple`` (for networks with a stride) and the
    result cropped back, so any image size works, 1x1 included. Outputs are
    accumulated as ``sum(out * w)`` and divided by ``sum(w)``; the weights are
    separable and the tiles form a grid, so ``sum(w)`` is the outer product of
    two 1-D vectors and never materialised as an image. Tiles run row by row
    and each output row is finished once the last tile over it is done, so the
    accumulator holds one row of tiles: memory is the output plus a tile row.
    Weights are exactly 1 outside overlaps, so those pixels are bit-exact
    copies of ``fn``'s tile output. Accumulation happens on ``image.device`` in
    float32; ``fn`` may compute elsewhere and return any device. ``image`` may
    be CHW (returned as C'HW) or NCHW. ``out`` (float32, the output's shape)
    receives the result instead of a new tensor; it may be ``image`` itself
    (rows are written only when no later tile reads them).
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4):
        raise ValueError(f"tiled: image must be a CHW or NCHW tensor, got {getattr(image, 'shape', type(image))}")
    _check_tiling(tile, overlap, multiple)
    single = image.dim() == 3
    x = image[None] if single else image
    height, width = x.shape[-2:]
    if height == 0 or width == 0:
        raise ValueError(f"tiled: empty image of shape {tuple(image.shape)}")
    rows, cols = torch.arange(height), torch.arange(width)
    result = _blend(fn, x, rows, cols, (0, height, 0, width), tile, overlap, multiple,
                    None if out is None else (out[None] if single else out))
    return result[0] if single else result


def _check_tiling(tile: int, overlap: int, multiple: int) -> None:
    if tile < 1:
        raise ValueError(f"tiled: tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tiled: overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    if multiple < 1:
        raise ValueError(f"tiled: multiple must be >= 1, got {multiple}")


def _reflect_index(size: int, before: int, after: int) -> torch.Tensor:
    """Which row (or column) of a ``size``-long axis each position of `reflect_pad`'s output copies.

    Padding by gathering these indices tile by tile gives `reflect_pad`'s values without ever
    holding the padded image (computed by padding the indices themselves, so the two agree).
    """
    idx = torch.arange(size, dtype=torch.float64).view(1, 1, size, 1)
    return reflect_pad(idx, before, after, 0, 0).view(-1).long()


def _selector(index: torch.Tensor) -> slice | torch.Tensor:
    """A slice when ``index`` is a run of consecutive positions (a view, no copy), else the index itself."""
    first = int(index[0])
    if torch.equal(index, torch.arange(first, first + len(index))):
        return slice(first, first + len(index))
    return index


def _gather(x: torch.Tensor, rows: slice | torch.Tensor, cols: slice | torch.Tensor) -> torch.Tensor:
    """``x[..., rows, cols]`` for slices or index tensors: one tile-sized result at most."""
    if isinstance(rows, slice) and isinstance(cols, slice):
        return x[..., rows, cols]
    if isinstance(rows, slice):
        return x[..., rows, :].index_select(-1, cols)
    if isinstance(cols, slice):
        return x[..., cols].index_select(-2, rows)
    return x[:, :, rows[:, None], cols[None, :]]


def _blend(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    crop: tuple[int, int, int, int],
    tile: int,
    overlap: int,
    multiple: int,
    out: torch.Tensor | None,
) -> torch.Tensor:
    """Blend ``fn`` over the tiles of the virtual image ``x[..., rows, :][..., cols]`` (never built).

    ``rows``/``cols`` give, for each position of the virtual image, the row/column of ``x`` it
    copies (`reflect_pad`'s, for `tiled_on_grid`); only ``crop = (top, height, left, width)`` of
    the blended result is kept, written into ``out`` (new if None). Tiles run in row order; the
    accumulator holds one tile row, and a finished output row goes to ``out`` as soon as no later
    tile reads the row of ``x`` it occupies, so ``out`` may be ``x`` itself (or a view of it
    with the same rows).
    """
    n = x.shape[0]
    vh, vw = len(rows), len(cols)
    top, height, left, width = crop
    dev = x.device
    with torch.no_grad():
        ys, xs = _starts(vh, tile, overlap), _starts(vw, tile, overlap)
        th, tw = min(tile, vh), min(tile, vw)
        win_y = [_window(ys, i, th).to(dev) for i in range(len(ys))]
        win_x = [_window(xs, j, tw).to(dev) for j in range(len(xs))]
        wy = torch.zeros(vh, dtype=torch.float32, device=dev)
        wx = torch.zeros(vw, dtype=torch.float32, device=dev)
        for i, y0 in enumerate(ys):
            wy[y0 : y0 + th] += win_y[i]
        for j, x0 in enumerate(xs):
            wx[x0 : x0 + tw] += win_x[j]
        row_sel = [_selector(rows[y0 : y0 + th]) for y0 in ys]
        col_sel = [_selector(cols[x0 : x0 + tw]) for x0 in xs]
        # the lowest row of x each tile row and every later one reads: output rows above it are free
        lowest = [int(rows[y0 : y0 + th].min()) for y0 in ys] + [height]
        for i in range(len(ys) - 2, -1, -1):
            lowest[i] = min(lowest[i], lowest[i + 1])

        acc: torch.Tensor | None = None  # virtual rows [ys[i], ys[i] + th) of the blended sums
        spare: torch.Tensor | None = None  # the next tile row's (two buffers, reused: no allocation per row)
        pending: list[tuple[int, torch.Tensor]] = []  # finished output rows (first row, band) not yet safe to write
        for i, y0 in enumerate(ys):
            for j, x0 in enumerate(xs):
                y = _run_tile(fn, _gather(x, row_sel[i], col_sel[j]), multiple).to(dev, torch.float32)
                if acc is None:
                    acc = torch.zeros(n, y.shape[1], th, vw, dtype=torch.float32, device=dev)
                    if out is None:
                        out = torch.empty(n, y.shape[1], height, width, dtype=torch.float32, device=dev)
                    elif tuple(out.shape) != (n, y.shape[1], height, width):
                        raise ValueError(f"tiled: out has shape {tuple(out.shape)}, the result is "
                                         f"{(n, y.shape[1], height, width)}")
                weight = win_y[i][:, None] * win_x[j][None, :]
                acc[..., x0 : x0 + tw].addcmul_(y, weight)
                report = TILE_PROGRESS.get()
                if report is not None:
                    report(i * len(xs) + j + 1, len(ys) * len(xs))
            assert acc is not None and out is not None
            # virtual rows [y0, done) are final: no later tile row reaches them
            done = ys[i + 1] if i + 1 < len(ys) else y0 + th
            r0, r1 = max(y0, top), min(done, top + height)
            keep = []
            for o0, rows_done in pending:
                if o0 + rows_done.shape[-2] <= lowest[i + 1]:
                    out[..., o0 : o0 + rows_done.shape[-2], :] = rows_done
                else:
                    keep.append((o0, rows_done))
            pending = keep
            if r0 < r1:
                band = acc[..., r0 - y0 : r1 - y0, :].div_(wy[r0:r1, None]).div_(wx[None, :])[..., left : left + width]
                if not pending and r1 - top <= lowest[i + 1]:
                    out[..., r0 - top : r1 - top, :] = band
                else:  # a later tile still reads these rows of x (a reflected border): held back
                    pending.append((r0 - top, band.clone()))
            if i + 1 < len(ys):
                spare = torch.zeros_like(acc) if spare is None else spare.zero_()
                spare[..., : y0 + th - done, :] = acc[..., done - y0 :, :]
                acc, spare = spare, acc
        assert not pending and out is not None
    return out


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
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`tiled` with every tile on the whole image's stride grid: the one tiling policy of the pipeline.

    A strided network (a UNet of stride ``multiple``) pads a whole image itself, centred. Here the
    image gets the same top/left padding, so each tile sees the pixels at the phase the whole-image
    pass would, plus bottom/right padding up to a size where every tile start is a multiple of the
    stride. Tiled and whole-image outputs then differ only where a tile border cuts the receptive
    field (blended away by the overlap ramps) and at the bottom/right image border. The overlap is
    at most half a tile, widened where needed so that tiles step by a multiple of the stride. The padded image is never built (each tile gathers its pixels), so memory
    is the output (or none: ``out`` may be ``image`` itself, see `tiled`) plus one row of tiles.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"tiled_on_grid: image must be an NCHW tensor, got {getattr(image, 'shape', type(image))}")
    h, w = image.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"tiled_on_grid: empty image of shape {tuple(image.shape)}")
    t = max(multiple, tile // multiple * multiple)
    ov = min(overlap, t // 2)
    # tiles step by a multiple of the stride, else `aligned_size` may find no size at all (it looped
    # for ever on --tile 64 --tile-overlap 20 with a stride of 16): the overlap widens up to that
    ov = t - max(multiple, (t - ov) // multiple * multiple)
    _check_tiling(t, ov, multiple)
    top, left = ((-h) % multiple) // 2, ((-w) % multiple) // 2
    hp, wp = aligned_size(h + top, t, ov, multiple), aligned_size(w + left, t, ov, multiple)
    # the padded image is never built: each tile gathers its rows and columns of it from ``image``
    rows, cols = _reflect_index(h, top, hp - h - top), _reflect_index(w, left, wp - w - left)
    return _blend(fn, image, rows, cols, (top, h, left, w), t, ov, multiple, out)


def _bilinear_index(small_height: int, height: int, r0: int, r1: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For rows ``[r0, r1)`` of a bilinear upscale to ``height`` rows: the two source rows of each and the
    second one's weight (PyTorch's ``align_corners=False`` formula, float32)."""
    scale = torch.tensor(small_height / height, dtype=torch.float32)
    src = ((torch.arange(r0, r1, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min_(0.0)
    i0 = src.long().clamp_max_(small_height - 1)
    i1 = torch.where(i0 < small_height - 1, i0 + 1, i0)
    return i0, i1, (src - i0.float()).clamp_(0.0, 1.0)


def bilinear_source_rows(small_height: int, height: int, r0: int, r1: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a ``small_height``-row image that rows ``[r0, r1)`` of its `bilinear_rows` upscale read."""
    i0, i1, _ = _bilinear_index(small_height, height, r0, r1)
    return int(i0.min()), int(i1.max()) + 1


def bilinear_rows(small: torch.Tensor, size: tuple[int, int] | torch.Size, r0: int, r1: int, *, top: int = 0,
                  small_height: int | None = None) -> torch.Tensor:
    """Rows ``[r0, r1)`` of ``F.interpolate(small, size, mode="bilinear", align_corners=False)`` (NCHW).

    Bilinear scaling is separable: the band's rows come from a few rows of ``small``, widened
    first (one call with the height unchanged, which is exact) and then mixed with the row weights
    of PyTorch's formula in float32. Equal to the one-pass result up to float rounding (its kernel
    computes the weights another way), and each row independent of the band it is computed in,
    so a full-size upscale can be consumed band by band (no antialiasing: for upscaling).
    ``small`` may be only the rows from ``top`` on of a ``small_height``-row image (covering at least
    `bilinear_source_rows`): the same values, bit for bit, without holding the whole small image.
    """
    height, width = size
    sh = small.shape[-2] if small_height is None else small_height
    i0, i1, l1 = _bilinear_index(sh, height, r0, r1)
    l1 = l1.to(small.device)[:, None]
    lo, hi = int(i0.min()), int(i1.max()) + 1
    wide = F.interpolate(small[..., lo - top : hi - top, :], size=(hi - lo, width), mode="bilinear",
                         align_corners=False)
    i0, i1 = (i0 - lo).to(small.device), (i1 - lo).to(small.device)
    return wide[..., i0, :] * (1.0 - l1) + wide[..., i1, :] * l1


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
