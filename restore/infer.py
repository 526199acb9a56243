"""Inference helpers shared by every restoring subcommand.

* ``tiled``: run a network over overlapping tiles and blend them
  (Restormer-style weighted accumulation, STYLE.md), so a 6000x4000 photo
  restores in the memory of one tile plus the output, without seams.
* ``self_ensemble``: average a network over flips and 90-degree rotations of
  its input (EDSR+/KAIR "x8"), a PSNR gain for the price of 2 or 8 passes.
* ``process_folder``: the one folder driver behind ``restore corrupt``,
  ``denoise``, ``colorize`` and ``inpaint`` (DESIGN section 4): mirrored
  relative paths, skip-existing, per-file error isolation, a progress bar and
  a summary, and the guarantee that no input file is ever written.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
import torch.nn.functional as F

__all__ = ["ENSEMBLES", "BatchJob", "Summary", "UsageError", "is_inside", "plan_outputs", "process_folder",
           "self_ensemble", "tiled"]


class UsageError(ValueError):
    """The command as a whole cannot run (bad IN/OUT, empty folder...): exit status 2."""


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


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple (reflect; replicate when the tile is too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


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


# --------------------------------------------------------------------------- folder driver


@dataclass
class Summary:
    """What ``process_folder`` did: counts, and each failed input with its reason."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self, desc: str = "") -> str:
        head = f"{desc}: " if desc else ""
        return f"{head}{self.done} done, {self.skipped} skipped (output exists), {len(self.failed)} failed"


T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchJob(Generic[T, R]):
    """A job split in three so the driver can batch inputs that share a ``key``.

    ``load(src)`` reads and prepares one input (per-file errors belong here);
    ``key(item)`` says which items may be stacked together (e.g. their shape);
    ``run(items)`` processes a list of same-key items and returns one result
    each; ``save(item, result, dst)`` writes one output. A batch whose ``run``
    fails is retried one item at a time so the error lands on the right file.
    """

    load: Callable[[Path], T]
    run: Callable[[list[T]], Sequence[R]]
    save: Callable[[T, R, Path], None]
    key: Callable[[T], Hashable] = lambda item: id(item)
    batch_size: int = 1


def _reason(e: BaseException, src: Path | None = None) -> str:
    """The failure's reason, naming the file at fault when it is not ``src`` (a bad mask, not a bad photo)."""
    reason = getattr(e, "reason", None)
    path = getattr(e, "path", None)
    if isinstance(reason, str) and reason:
        if path is not None and src is not None and Path(path) != Path(src):
            return f"{path}: {reason}"
        return reason
    text = str(e) or type(e).__name__
    return text if type(e).__name__ in text else f"{type(e).__name__}: {text}"


def is_inside(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies under it (both already resolved)."""
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def plan_outputs(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    suffix: str = ".png",
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> list[tuple[Path, Path]]:
    """Pair each input image with its output path, refusing plans that would write an input.

    IN may be a file (OUT is then an output file when it has an image suffix
    and is not a folder, otherwise a folder) or a folder walked recursively;
    OUT mirrors relative paths with ``suffix``. When OUT lies inside IN its
    subtree is not treated as input, so a re-run does not restore its own
    outputs; nor are the ``exclude`` paths (``restore inpaint``'s
    ``--masks``, which ``restore corrupt`` writes into ``OUT/masks``), which
    are inputs too: OUT may not be or lie inside one. Raises ``UsageError``
    for a missing IN, OUT == IN, an OUT that is a file where a folder is
    needed or cannot be written, an empty folder, or any output that would
    land on an input. Paths are compared resolved and, where both exist, by
    device and inode, so case-insensitive file systems and links are caught.
    """
    from restore.io import IMAGE_EXTENSIONS, list_images

    inp, out = Path(inp), Path(out)
    if not inp.exists():
        raise UsageError(f"{inp}: input does not exist")
    if not suffix.startswith("."):
        raise UsageError(f"suffix must start with '.', got {suffix!r}")
    in_abs, out_abs = inp.resolve(), out.resolve()
    if _same_file(inp, out):  # IN exists, so this covers equal resolved paths too
        raise UsageError(f"{out}: OUT is the same as IN; choose another output folder (inputs are never overwritten)")
    excluded = [(Path(e), Path(e).resolve()) for e in exclude]
    for e, e_abs in excluded:
        if out_abs == e_abs or _same_file(out, e) or (e.is_dir() and is_inside(out_abs, e_abs)):
            raise UsageError(f"{out}: OUT is {e} or lies inside it, and this command reads that as input; "
                             "choose another output folder")

    if inp.is_file():
        if out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir():
            pairs = [(inp, out)]
        else:
            pairs = [(inp, out / (inp.stem + suffix))]
        files = [inp]
    else:
        files = list_images(inp)
        # OUT's tree is never input (also when reached through a link inside IN), nor are the excluded
        # folders; when IN itself lies in such a tree, only what a link leads out of IN to is dropped
        for skip in [out_abs, *(e_abs for _, e_abs in excluded)]:
            keep_in = is_inside(in_abs, skip)
            files = [f for f in files
                     if not is_inside(r := f.resolve(), skip) or (keep_in and is_inside(r, in_abs))]
        if not files:
            raise UsageError(f"{inp}: no images found (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        pairs = [(f, out / f.relative_to(inp).with_suffix(suffix)) for f in files]
    _check_writable(pairs[0][1].parent, out)

    # by device and inode: an output that is an input under any spelling (link, case) exists, so this is enough
    input_ids = {_file_id(f) for f in files} | {_file_id(e) for e, _ in excluded if e.is_file()}
    for src, dst in pairs:
        if dst.exists() and _file_id(dst) in input_ids:
            raise UsageError(f"{dst}: output path is an input file ({src} would overwrite it); choose another OUT")
    return pairs


def _file_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _same_file(a: Path, b: Path) -> bool:
    """Both exist and are one file or folder (another spelling on a case-insensitive disk, a link...)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_writable(folder: Path, out: Path) -> None:
    """Fail before any image is restored when the outputs' folder cannot exist or be written."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"{out}: {probe} is a file, not a folder; choose another OUT")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: cannot write in {probe} (permission denied); choose another OUT")


def process_folder(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    job: Callable[[Path, Path], None] | BatchJob[Any, Any],
    *,
    overwrite: bool = False,
    suffix: str = ".png",
    desc: str = "",
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> Summary:
    """Run ``job(src, dst)`` (or a ``BatchJob``) for every input image of ``inp``.

    Existing outputs are skipped unless ``overwrite``; any exception from one
    file (``ImageReadError``, a model error...) is reported on stderr with the
    file and reason and the rest continue. Two inputs that map to the same
    output (``a.jpg`` and ``a.png``) are not both written: the later one fails
    with a reason naming the first. A final summary line goes to stderr.
    """
    from tqdm import tqdm

    pairs = plan_outputs(inp, out, suffix=suffix, exclude=exclude)
    summary = Summary()
    claimed: dict[Path, Path] = {}
    todo: list[tuple[Path, Path]] = []
    for src, dst in pairs:
        first = claimed.setdefault(dst.resolve(), src)
        if first != src:
            reason = f"output {dst} is also the output of {first}; rename one of them"
            summary.failed.append((src, reason))
            print(f"failed: {src}: {reason}", file=sys.stderr)
        elif dst.exists() and not overwrite:
            summary.skipped += 1
        else:
            todo.append((src, dst))

    bar = tqdm(total=len(todo), desc=desc or None, unit="img", file=sys.stderr, disable=None, dynamic_ncols=True)

    def fail(src: Path, e: BaseException) -> None:
        reason = _reason(e, src)
        summary.failed.append((src, reason))
        bar.write(f"failed: {src}: {reason}", file=sys.stderr)

    def prepare(dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)

    try:
        if isinstance(job, BatchJob):
            _run_batched(job, todo, summary, bar, fail, prepare)
        else:
            for src, dst in todo:
                try:
                    prepare(dst)
                    job(src, dst)
                    summary.done += 1
                except Exception as e:  # noqa: BLE001 - one bad file must not stop the folder
                    fail(src, e)
                bar.update(1)
    finally:
        bar.close()
    print(summary.line(desc), file=sys.stderr)
    return summary


def _run_batched(job: BatchJob[Any, Any], todo, summary: Summary, bar, fail, prepare) -> None:
    """Read inputs in order, stack same-key items up to ``batch_size``; bounded pending items."""
    if job.batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {job.batch_size}")
    pending: dict[Hashable, list[tuple[Path, Path, Any]]] = {}

    def run_group(group: list[tuple[Path, Path, Any]]) -> None:
        try:
            results = list(job.run([item for _, _, item in group]))
            if len(results) != len(group):
                raise RuntimeError(f"batch job returned {len(results)} results for {len(group)} inputs")
        except Exception as e:  # noqa: BLE001 - retry one by one so the failure lands on its file
            if len(group) > 1:
                for entry in group:
                    run_group([entry])
            else:
                fail(group[0][0], e)
                bar.update(1)
            return
        for (src, dst, item), result in zip(group, results):
            try:
                prepare(dst)
                job.save(item, result, dst)
                summary.done += 1
            except Exception as e:  # noqa: BLE001
                fail(src, e)
            bar.update(1)

    def flush(key: Hashable) -> None:
        run_group(pending.pop(key))

    for src, dst in todo:
        try:
            item = job.load(src)
            key = job.key(item)
        except Exception as e:  # noqa: BLE001
            fail(src, e)
            bar.update(1)
            continue
        pending.setdefault(key, []).append((src, dst, item))
        if len(pending[key]) >= job.batch_size:
            flush(key)
        elif sum(len(g) for g in pending.values()) >= 2 * job.batch_size:
            # many distinct sizes: do not hold an unbounded number of images in memory
            for k in list(pending):
                flush(k)
    for k in list(pending):
        flush(k)
