"""Task-independent scoring and report writers for every ``eval/<task>.py``.

Why one module: the denoise, inpaint, colorize and VAE evaluations must score
and report identically (same PSNR, same rounding, same table layout), so a
number in one report means the same thing as in another. Writers:

* :func:`write_metrics_csv` -- one row per (image, method[, group]), every metric;
* :func:`write_summary_md`  -- a markdown table per group: mean of each metric
  per method, runtime per image, plus the exact command, git commit and notes;
* :func:`save_grid`         -- labelled comparison grid (input / baselines /
  model / target) with a zoomed crop under every image.

Metrics beyond :mod:`restore.metrics`: PSNR/SSIM inside inpainting holes, the
known-pixels-unchanged check, CIELAB a/b error and Hasler-Suesstrunk colorfulness.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from restore.metrics import LPIPS, LPIPSWeightsMissing, perceptual_distance, psnr, ssim, ssim_map
from restore.provenance import git_commit, machine  # noqa: F401 - every eval script's report.git_commit/machine
from restore.tasks.colorize import rgb_to_lab

REPO = Path(__file__).resolve().parents[1]

#: How each protocol makes the degraded input (printed in every summary).
PROTOCOL_NOTES: dict[str, str] = {
    "default": (
        "**default protocol** (restoring files): the corruption is applied with a per-image seed derived "
        "from the image name and the base seed, then the input is clipped to [0, 1] and rounded to 8 bits "
        "(as a PNG would store it). Outputs are rounded to 8 bits before scoring; RGB, no border crop."
    ),
    "published": (
        "**published protocol** (as DnCNN / DRUNet / SwinIR tables on CBSD68 / Kodak24): unclipped float "
        "Gaussian noise (`clip=0`), seed 0 for every image, input kept in memory as float; outputs are "
        "rounded to 8 bits and scored on RGB without border crop."
    ),
}

#: Columns aggregated by something other than the mean in summaries.
AGGREGATE: dict[str, str] = {"known_max_diff": "max"}

#: Preferred column order in CSV files and tables; others follow alphabetically.
COLUMN_ORDER = ("group", "image", "method", "psnr", "ssim", "lpips", "sq_dist", "psnr_hole", "ssim_hole",
                "known_max_diff", "coverage", "ab_mae", "colorfulness", "colorfulness_gt",
                "colorfulness_ratio", "runtime_s")

HEADERS: dict[str, str] = {
    "psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "sq_dist": "SqueezeNet feature dist. (not LPIPS)",
    "psnr_hole": "PSNR hole (dB)",
    "ssim_hole": "SSIM hole", "known_max_diff": "known px max diff (max, /255)", "coverage": "hole coverage",
    "ab_mae": "a/b MAE", "colorfulness": "colorfulness", "colorfulness_gt": "colorfulness GT",
    "colorfulness_ratio": "colorfulness / GT", "runtime_s": "s / image",
}


class ReportError(ValueError):
    """Inputs a report writer cannot use (empty rows, mismatched shapes, bad grid)."""


# --------------------------------------------------------------------------- metrics


def _batch(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ReportError(f"expected a CHW or NCHW image tensor, got shape {tuple(x.shape)}")
    return x.detach().cpu().float()


def _check_same(out: torch.Tensor, target: torch.Tensor, who: str) -> None:
    if out.shape != target.shape:
        raise ReportError(f"{who}: output shape {tuple(out.shape)} != target shape {tuple(target.shape)}")


def psnr_ssim(out: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Whole-image PSNR and SSIM (``restore.metrics``, data range 1) of one CHW image."""
    o, t = _batch(out), _batch(target)
    _check_same(o, t, "psnr_ssim")
    return {"psnr": float(psnr(o, t)[0]), "ssim": float(ssim(o, t)[0])}


def _hole(mask: torch.Tensor, shape: torch.Size) -> np.ndarray:
    m = _batch(mask)[0, 0].numpy() > 0.5
    if m.shape != tuple(shape[-2:]):
        raise ReportError(f"mask is {m.shape[0]}x{m.shape[1]}, image is {shape[-2]}x{shape[-1]}")
    return m


def masked_psnr(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR over the hole pixels only (all channels); NaN when the mask is empty."""
    o, t = _batch(out)[0].double(), _batch(target)[0].double()
    _check_same(o, t, "masked_psnr")
    m = torch.from_numpy(_hole(mask, o.shape))
    if not m.any():
        return float("nan")
    err = ((o - t) ** 2)[:, m].mean().item()
    return float("inf") if err == 0 else 10.0 * math.log10(1.0 / err)


def masked_ssim(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of the SSIM map over hole pixels (`restore.metrics.ssim_map`: the window and border of
    ``restore.metrics.ssim``), so an all-ones mask gives the whole-image SSIM. NaN when no hole pixel
    lies inside the 5-pixel border.
    """
    o, t = _batch(out).double(), _batch(target).double()
    _check_same(o, t, "masked_ssim")
    m = _hole(mask, o.shape)
    smap = ssim_map(o, t, 1.0, "masked_ssim")[0].mean(0).numpy()  # (H - 10, W - 10), channel mean
    pad = (m.shape[0] - smap.shape[0]) // 2
    sel = m[pad:-pad, pad:-pad]
    return float(smap[sel].mean()) if sel.any() else float("nan")


def known_max_diff(out: torch.Tensor, degraded: torch.Tensor, mask: torch.Tensor) -> float:
    """Largest change (in 8-bit levels) an inpainter made to KNOWN pixels; 0 means untouched.

    Both images are compared after 8-bit rounding, so float round-off is not
    reported as a change.
    """
    o = _batch(out)[0].clamp(0, 1).mul(255).round()
    d = _batch(degraded)[0].clamp(0, 1).mul(255).round()
    _check_same(o, d, "known_max_diff")
    known = torch.from_numpy(~_hole(mask, o.shape))
    if not known.any():
        return 0.0
    return float((o - d).abs()[:, known].max())


def _lab(x: torch.Tensor) -> np.ndarray:
    a = _batch(x)[0].clamp(0, 1)
    if a.shape[0] == 1:
        a = a.expand(3, -1, -1)
    if a.shape[0] != 3:
        raise ReportError(f"CIELAB needs 1 or 3 channels, got {a.shape[0]}")
    return rgb_to_lab(a, dtype=torch.float64).permute(1, 2, 0).numpy()


def ab_mae(out: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error of CIELAB a and b (D65; `restore.tasks.colorize.rgb_to_lab` in float64, which is
    scikit-image's rgb2lab to 1e-12), averaged over pixels and both channels."""
    lo, lt = _lab(out), _lab(target)
    if lo.shape != lt.shape:
        raise ReportError(f"ab_mae: output {lo.shape} != target {lt.shape}")
    return float(np.abs(lo[..., 1:] - lt[..., 1:]).mean())


def colorfulness(x: torch.Tensor) -> float:
    """Hasler & Suesstrunk (2003) colorfulness M on the 0-255 scale; 0 for any gray image.

    ``rg = R - G``, ``yb = (R + G)/2 - B``;
    ``M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)``.
    """
    a = _batch(x)[0].clamp(0, 1).double() * 255.0
    if a.shape[0] == 1:
        return 0.0
    if a.shape[0] != 3:
        raise ReportError(f"colorfulness needs 1 or 3 channels, got {a.shape[0]}")
    r, g, b = a[0], a[1], a[2]
    rg, yb = r - g, 0.5 * (r + g) - b
    std = math.sqrt(rg.var(unbiased=False).item() + yb.var(unbiased=False).item())
    mean = math.sqrt(rg.mean().item() ** 2 + yb.mean().item() ** 2)
    return std + 0.3 * mean


def detail_ratio(out: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute neighbour difference of the output over the target's (1 = as much fine structure).

    A no-reference view of what PSNR averages away: below 1 the restorer
    smoothed the photo, above 1 it left noise or invented texture. It is what
    tells a GAN-trained denoiser from a pixel-loss one when LPIPS's backbone
    weights are not on the machine.
    """
    _check_same(out, target, "detail_ratio")

    def energy(x: torch.Tensor) -> float:
        x = _batch(x).double()
        return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()).item()

    t = energy(target)
    return energy(out) / t if t > 0 else float("nan")


def feature_distance(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """`restore.metrics.perceptual_distance` (SqueezeNet features, LPIPS's lin=False form; not LPIPS) of one image,
    averaged over ``mask`` (HxW, 1HW or N1HW; e.g. an inpainting hole) when given."""
    m = None if mask is None else mask.float().reshape(1, 1, *mask.shape[-2:])
    return float(perceptual_distance(_batch(out).float(), _batch(target).float(), m)[0])


class LpipsScorer:
    """LPIPS (AlexNet) when its backbone weights exist on this machine, else a recorded reason.

    Evaluation must never fail (or download) because LPIPS is unavailable: the
    column is dropped and the summary says which file to provide.
    """

    def __init__(self, enabled: bool = True, device: str = "cpu") -> None:
        self.model = None
        self.reason = "disabled (--no-lpips)"
        self.device = device
        if not enabled:
            return
        try:
            self.model = LPIPS(net="alex").to(device)
            self.reason = ""
        except LPIPSWeightsMissing as e:
            self.reason = str(e)

    @property
    def available(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def __call__(self, out: torch.Tensor, target: torch.Tensor) -> float:
        if self.model is None:
            return float("nan")
        return float(self.model(_batch(out).to(self.device), _batch(target).to(self.device))[0])


# --------------------------------------------------------------------------- provenance


def command_line(argv: Sequence[str] | None = None, script: str | os.PathLike | None = None) -> str:
    """The command that produced a report, runnable from the repository root.

    ``argv`` without ``script`` is a whole command line (default ``sys.argv``);
    with ``script``, ``argv`` holds only the arguments given to that script's
    ``main(argv)`` (tests call it so), and ``None`` still means ``sys.argv``.
    """
    if argv is not None and script is not None:
        argv = [str(Path(script).resolve()), *argv]
    argv = list(sys.argv if argv is None else argv)
    if argv:
        try:
            argv[0] = os.path.relpath(argv[0], REPO)
        except ValueError:
            pass
    return shlex.join(["python", *argv])


# --------------------------------------------------------------------------- tables


def _columns(rows: Iterable[dict]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    ordered = [c for c in COLUMN_ORDER if c in keys]
    return ordered + sorted(k for k in keys if k not in ordered)


def _fmt_cell(v: object) -> object:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def write_metrics_csv(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Write one CSV row per scored image (columns: union of the rows' keys, stable order)."""
    if not rows:
        raise ReportError(f"{path}: no rows to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_cell(r.get(k, "")) for k in cols})
    return path


def summarize(rows: Sequence[dict], metrics: Sequence[str] | None = None) -> list[dict]:
    """Aggregate per (group, method), keeping first-appearance order; NaNs are ignored.

    Mean by default; ``known_max_diff`` takes the max (one changed pixel matters).
    Each summary row carries ``n`` (images scored).
    """
    if not rows:
        raise ReportError("summarize: no rows")
    if metrics is None:
        metrics = [c for c in _columns(rows) if c not in ("group", "image", "method")
                   and all(isinstance(r.get(c), (int, float)) for r in rows if c in r)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("group", ""), r["method"]), []).append(r)
    out = []
    for (group, method), rs in groups.items():
        s: dict = {"group": group, "method": method, "n": len(rs)}
        for m in metrics:
            vals = np.array([float(r[m]) for r in rs if m in r and r[m] is not None], dtype=np.float64)
            vals = vals[~np.isnan(vals)]
            if vals.size == 0:
                s[m] = float("nan")
            elif AGGREGATE.get(m) == "max":
                s[m] = float(vals.max())
            else:
                s[m] = float(vals.mean())
        out.append(s)
    return out


def _md_number(metric: str, v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if metric in ("psnr", "psnr_hole"):
        return f"{v:.2f}"
    if metric in ("ssim", "ssim_hole", "lpips"):
        return f"{v:.4f}"
    if metric == "detail":
        return f"{v:.3f}"
    if metric == "runtime_s":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def markdown_table(summary: Sequence[dict], metrics: Sequence[str], labels: dict[str, str] | None = None) -> str:
    """One markdown table: a row per method, a column per metric (methods in given order)."""
    labels = labels or {}
    head = ["method", "images", *[HEADERS.get(m, m) for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for s in summary:
        cells = [labels.get(s["method"], s["method"]), str(s["n"])] + [_md_number(m, s.get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary_md(
    path: str | os.PathLike,
    rows: Sequence[dict],
    *,
    title: str,
    metrics: Sequence[str],
    labels: dict[str, str] | None = None,
    protocol: str | None = None,
    notes: Sequence[str] = (),
    command: str | None = None,
    commit: str | None = None,
) -> Path:
    """Write ``summary.md``: one table per group (or one table), then protocol, notes, command, commit.

    Metric columns that are NaN for every method (e.g. LPIPS without weights)
    are dropped from the table; say why in ``notes``.
    """
    summary = summarize(rows, [*metrics, "runtime_s"] if "runtime_s" not in metrics else metrics)
    shown = [m for m in metrics if any(not math.isnan(s.get(m, float("nan"))) for s in summary)]
    if "runtime_s" not in shown and any("runtime_s" in r for r in rows):
        shown.append("runtime_s")
    parts = [f"# {title}", ""]
    groups = list(dict.fromkeys(s["group"] for s in summary))
    for g in groups:
        if g:
            parts += [f"## {g}", ""]
        parts += [markdown_table([s for s in summary if s["group"] == g], shown, labels), ""]
    if protocol:
        parts += [PROTOCOL_NOTES.get(protocol, protocol), ""]
    for n in notes:
        parts += [f"- {n}"]
    if notes:
        parts.append("")
    parts += [
        "Command:", "", "```", command if command is not None else command_line(), "```", "",
        f"Git commit: `{commit if commit is not None else git_commit()}`  ",
        f"Machine: {machine()}  ",
        f"Date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


# --------------------------------------------------------------------------- comparison grid


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _u8_rgb(x: torch.Tensor) -> np.ndarray:
    a = _batch(x)[0].clamp(0, 1).mul(255).round().to(torch.uint8)
    if a.shape[0] == 1:
        a = a.expand(3, -1, -1)
    return a.permute(1, 2, 0).numpy().copy()


def detail_crop(image: torch.Tensor, size: int) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of the most detailed ``size`` square (max gradient energy): where zooms are useful."""
    a = _batch(image)[0].mean(0).numpy().astype(np.float64)
    h, w = a.shape
    size = min(size, h, w)
    gy, gx = np.abs(np.diff(a, axis=0))[:, :-1], np.abs(np.diff(a, axis=1))[:-1, :]
    energy = np.pad(gy + gx, ((0, 1), (0, 1)))
    ii = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    # avoid the very border (padding artefacts of restorers are not what a zoom should show)
    t, l = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(t), int(l), size, size


def save_grid(
    path: str | os.PathLike,
    rows: Sequence[tuple[str, Sequence[tuple[str, torch.Tensor]]]],
    *,
    cell: int = 256,
    crop: int = 64,
    crop_from: int = -1,
) -> Path:
    """Save a labelled comparison grid: one row per image, one column per method, zoom under each cell.

    ``rows`` is ``[(image_name, [(column_label, CHW tensor), ...]), ...]``; every
    row must have the same column labels. The zoomed region (``crop`` pixels of
    the image, nearest-neighbour enlarged to the cell width) is the most
    detailed square of column ``crop_from`` (default: the last, the target) and
    is outlined in red on each full image.
    """
    if not rows:
        raise ReportError(f"{path}: no rows for the grid")
    labels = [lbl for lbl, _ in rows[0][1]]
    if not labels:
        raise ReportError(f"{path}: grid rows have no columns")
    for name, cols in rows:
        if [lbl for lbl, _ in cols] != labels:
            raise ReportError(f"{path}: row {name!r} has columns {[l for l, _ in cols]}, expected {labels}")
    font, small = _font(15), _font(13)
    pad, head = 6, 26
    blocks = []
    for name, cols in rows:
        ref = cols[crop_from][1]
        t, l, ch, cw = detail_crop(ref, crop)
        shapes = {tuple(_batch(img).shape[-2:]) for _, img in cols}
        if len(shapes) != 1:
            raise ReportError(f"{path}: row {name!r} mixes image sizes {sorted(shapes)}")
        h, w = next(iter(shapes))
        disp_h = max(1, round(h * cell / w))
        tiles = []
        for _, img in cols:
            rgb = _u8_rgb(img)
            full = Image.fromarray(rgb).resize((cell, disp_h), Image.LANCZOS if w > cell else Image.NEAREST)
            d = ImageDraw.Draw(full)
            sx = cell / w
            d.rectangle([l * sx, t * sx, (l + cw) * sx - 1, (t + ch) * sx - 1], outline=(255, 0, 0), width=2)
            zoom = Image.fromarray(rgb[t : t + ch, l : l + cw]).resize((cell, round(cell * ch / cw)), Image.NEAREST)
            tiles.append((full, zoom))
        blocks.append((name, disp_h, tiles))
    width = pad + len(labels) * (cell + pad)
    height = head + sum(18 + dh + pad + tiles[0][1].height + pad for _, dh, tiles in blocks)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, lbl in enumerate(labels):
        draw.text((pad + j * (cell + pad) + 2, 5), lbl, fill=(0, 0, 0), font=font)
    y = head
    for name, dh, tiles in blocks:
        draw.text((pad, y + 1), name, fill=(80, 80, 80), font=small)
        y += 18
        for j, (full, zoom) in enumerate(tiles):
            x = pad + j * (cell + pad)
            canvas.paste(full, (x, y))
            canvas.paste(zoom, (x, y + dh + pad))
        y += dh + pad + tiles[0][1].height + pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
