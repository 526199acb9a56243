"""Calibration of every shipped weight: one small fixed sample, one recorded PSNR/SSIM per card.

Why (issue 4 item 6; pyiqa-style calibration tests): a model card's headline
figures take minutes to recompute, so nothing would notice a change in a
model, a corruption, a metric or the file I/O that quietly moves them. Each
card therefore carries a ``calibration`` block measured on a sample small
enough to restore in about a second on a CPU, and ``tests/test_calibration.py``
recomputes it for every card in ``weights/`` (PSNR within 0.05 dB, SSIM within
0.002). A card without the block fails that test: shipping a weight means
calibrating it.

The sample goes through the path ``restore <task> IN OUT`` takes: the
degraded input is written as an 8-bit PNG and read back with `restore.io`
(inpainting: its mask too, with `restore.io.read_mask`), restored by the
restore pipeline (`restore.pipeline.Pipeline`, tile 512, CPU)
with the model in ``eval()``, clamped, written and read back as an 8-bit PNG,
then scored with `restore.metrics` against the clean image.

Samples (never in any training set):

* photo cards (denoise-*, colorize, inpaint): the 128x128 centre crop of
  scikit-image's ``astronaut`` (an evaluation photo), degraded with the card's
  ``corruption`` by ``restore.corrupt.apply(clean, spec, seed=0)``; colorize
  gets the gray (BT.601 luma, one channel) image, inpaint a seeded free-form
  mask (the card's mask spec when it names one);
* Fashion-MNIST cards (``dataset == "fashion-mnist"`` or task ``vae``): the
  first 64 images of the official test split, degraded the same way (the
  conditional VAEs' ``gaussian:sigma=0`` is the identity: they are calibrated
  on reconstructing clean images, with the class inferred by the pipeline
  as ``restore denoise`` does when no ``--label`` is given).

Commands (from the repository root; deterministic, so re-running is idempotent)::

    OMP_NUM_THREADS=1 python eval/calibrate.py                      # measure and compare with the cards
    OMP_NUM_THREADS=1 python eval/calibrate.py --update-card        # (re)write every card's calibration block
    OMP_NUM_THREADS=1 python eval/calibrate.py --update-card NAME   # after retraining / re-exporting NAME

Re-exporting a weight rewrites its card without the block, so run the
``--update-card NAME`` line after every export. Only the ``calibration`` key
of the JSON changes (key order and formatting kept); the SHA-256 recorded for
the safetensors file is unaffected. Exit status: 0 ok, 1 a card has no block or
disagrees with its recorded values (without ``--update-card``) or failed to
load, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from skimage import data as skdata
from torch import Tensor

if __package__ in (None, ""):  # run as `python eval/calibrate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.common import eval_parser  # noqa: E402
from restore import corrupt, io  # noqa: E402
from restore import weights as W  # noqa: E402
from restore.data import IdxError, load_idx_split  # noqa: E402
from restore.io.atomic import atomic_output  # noqa: E402
from restore.metrics import psnr, ssim  # noqa: E402
from restore.options import OptionError  # noqa: E402
from restore.pipeline import Pipeline  # noqa: E402

__all__ = [
    "CALIBRATION_KEY",
    "PSNR_TOLERANCE",
    "SSIM_TOLERANCE",
    "CalibrationError",
    "Sample",
    "SampleUnavailable",
    "calibrate",
    "check",
    "load_model",
    "main",
    "make_sample",
    "measure",
    "update_card",
]

#: Key of the block in the model card.
CALIBRATION_KEY = "calibration"
#: Largest |recomputed - recorded| accepted by `check` (dB / SSIM units).
PSNR_TOLERANCE = 0.05
SSIM_TOLERANCE = 0.002
#: Corruption seed of every sample.
SEED = 0
#: Photo sample: a scikit-image evaluation photo, centre crop of this side.
PHOTO = "astronaut"
PHOTO_CROP = 128
#: Fashion-MNIST sample: the first N test images.
FASHION_IMAGES = 64
#: Tile side passed to the pipeline: the ``restore`` command's default.
TILE = 512
#: Mask spec for inpainting cards whose corruption is not a mask spec.
DEFAULT_MASK_SPEC = "mask:freeform"


class CalibrationError(RuntimeError):
    """A card cannot be calibrated, has no calibration block, or disagrees with it."""


class SampleUnavailable(CalibrationError):
    """The sample's data is not installed here (e.g. the Fashion-MNIST IDX files)."""


@dataclass
class Sample:
    """A clean target, the degraded input the restorer sees, and how it was made."""

    name: str  # e.g. "skimage:astronaut[center 128x128]"
    clean: Tensor  # NCHW float [0, 1], exactly 8-bit values
    input: Tensor  # NCHW float [0, 1], before the PNG round trip
    mask: Tensor | None  # N1HW, 1 = hole (inpaint only)
    corruption: str  # the spec actually applied


# --------------------------------------------------------------------------- samples


def _is_fashion(card: dict[str, Any]) -> bool:
    return card.get("dataset") == "fashion-mnist" or card.get("task") == "vae"


def _photo() -> Tensor:
    """1x3xCxC centre crop of the scikit-image photo (bundled with the package: no download)."""
    try:
        arr = getattr(skdata, PHOTO)()
    except Exception as e:  # noqa: BLE001 - a broken scikit-image install is "sample unavailable"
        raise SampleUnavailable(f"skimage.data.{PHOTO}() failed ({type(e).__name__}: {e})") from e
    h, w = arr.shape[:2]
    if min(h, w) < PHOTO_CROP:
        raise SampleUnavailable(f"skimage.data.{PHOTO} is {w}x{h}, smaller than the {PHOTO_CROP} px crop")
    top, left = (h - PHOTO_CROP) // 2, (w - PHOTO_CROP) // 2
    crop = np.ascontiguousarray(arr[top : top + PHOTO_CROP, left : left + PHOTO_CROP, :3])
    return torch.from_numpy(crop).permute(2, 0, 1)[None].float().div_(255.0)


def _fashion() -> Tensor:
    try:
        images, _ = load_idx_split(None, "test")
    except (IdxError, OSError) as e:
        raise SampleUnavailable(f"Fashion-MNIST test split not available: {e}") from e
    if len(images) < FASHION_IMAGES:
        raise SampleUnavailable(f"Fashion-MNIST test split has {len(images)} images, need {FASHION_IMAGES}")
    x = torch.from_numpy(images[:FASHION_IMAGES].copy()).float().div_(255.0)
    return x[:, None]


def make_sample(card: dict[str, Any], seed: int = SEED) -> Sample:
    """The calibration sample of a card: clean target + degraded input (+ mask), all seeded."""
    spec = card.get("corruption")
    if not isinstance(spec, str) or not spec.strip():
        raise CalibrationError(f"card {card.get('name')!r}: no 'corruption' spec to degrade the sample with")
    task = card.get("task")
    if _is_fashion(card):
        clean = _fashion()
        name = f"fashion-mnist:test[0:{FASHION_IMAGES}]"
    else:
        clean = _photo()
        name = f"skimage:{PHOTO}[center {PHOTO_CROP}x{PHOTO_CROP}]"
    try:
        if task == "inpaint" and corrupt.parse_spec(spec).uses_masks is not True:
            spec = DEFAULT_MASK_SPEC
        degraded = corrupt.apply(clean, spec, seed)
    except (corrupt.CorruptionSpecError, ValueError) as e:
        raise CalibrationError(f"card {card.get('name')!r}: corruption {spec!r}: {e}") from e
    x = degraded.input
    if task == "colorize":
        x = x[:, :1]  # a gray photo: one channel, as users give it
    if task == "inpaint" and degraded.mask is None:
        raise CalibrationError(f"card {card.get('name')!r}: corruption {spec!r} made no mask to inpaint")
    return Sample(name=name, clean=clean, input=x, mask=degraded.mask, corruption=spec)


# --------------------------------------------------------------------------- the restoring path


def _grid_side(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))


def _to_grid(x: Tensor) -> Tensor:
    """NCHW -> CxH'xW' mosaic, so a batch makes one PNG (one write, one read)."""
    n, c, h, w = x.shape
    cols = _grid_side(n)
    rows = math.ceil(n / cols)
    canvas = x.new_zeros(c, rows * h, cols * w)
    for i in range(n):
        r, k = divmod(i, cols)
        canvas[:, r * h : (r + 1) * h, k * w : (k + 1) * w] = x[i]
    return canvas


def _from_grid(canvas: Tensor, n: int, h: int, w: int) -> Tensor:
    cols = _grid_side(n)
    tiles = [canvas[:, (i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] for i in range(n)]
    return torch.stack(tiles)


def _png_roundtrip(x: Tensor, path: Path, *, mask: bool = False) -> Tensor:
    """Write NCHW as one 8-bit PNG with restore.io and read it back (masks through read_mask)."""
    n, _, h, w = x.shape
    io.write_image(path, _to_grid(x.detach().cpu().float().clamp(0, 1)), bit_depth=8)
    canvas = io.read_mask(path) if mask else io.read_image(path).image
    return _from_grid(canvas, n, h, w)


def load_model(name: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a shipped weight as the CLI does: verified, ``eval()``, no gradients."""
    try:
        model, card = W.load(name, device=device)
    except W.WeightsError as e:
        raise CalibrationError(str(e)) from e
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, card


def _mean_psnr(x: Tensor, y: Tensor) -> float | None:
    """Mean per-image PSNR; None when every image is identical (the identity corruption's input)."""
    values = psnr(x, y)
    finite = values[torch.isfinite(values)]
    if finite.numel() == 0:
        return None
    if finite.numel() != values.numel():
        raise CalibrationError("some images of the sample are restored exactly and others not: PSNR mean undefined")
    return float(finite.mean())


@torch.no_grad()
def measure(model: nn.Module, card: dict[str, Any], sample: Sample | None = None,
            *, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Restore the card's sample through the user path; return the calibration block (without ``command``)."""
    try:
        pipeline = Pipeline(model, card, device=device)
    except OptionError as e:
        raise CalibrationError(f"card {card.get('name')!r}: {e}") from e
    sample = make_sample(card) if sample is None else sample
    clean = sample.clean
    with tempfile.TemporaryDirectory(prefix="restore-calib-") as tmp:
        folder = Path(tmp)
        x = _png_roundtrip(sample.input, folder / "input.png")
        mask = _png_roundtrip(sample.mask, folder / "mask.png", mask=True) if sample.mask is not None else None
        options = {"tile": TILE} if "tile" in pipeline.options_type.__dataclass_fields__ else {}
        try:
            out = pipeline.run(x, mask, **options).image  # side maps (uncertainty) are not calibrated
        except (RuntimeError, ValueError) as e:
            raise CalibrationError(f"restoring the sample of {card.get('name')!r} failed: {e}") from e
        out = _png_roundtrip(out.float().clamp(0, 1), folder / "output.png")
    if out.shape[1] != clean.shape[1]:
        if out.shape[1] == 1:
            out = out.expand_as(clean)
        else:
            raise CalibrationError(f"output has {out.shape[1]} channels, the clean sample {clean.shape[1]}")
    seen = x.expand_as(clean) if x.shape[1] == 1 and clean.shape[1] == 3 else x
    psnr_value = _mean_psnr(out, clean)
    if psnr_value is None:
        raise CalibrationError("the restored sample equals the clean one exactly: nothing to calibrate against")
    input_psnr = _mean_psnr(seen, clean)
    return {
        "sample": sample.name,
        "corruption": sample.corruption,
        "seed": SEED,
        "psnr": round(psnr_value, 4),
        "ssim": round(float(ssim(out, clean).mean()), 4),
        "input_psnr": None if input_psnr is None else round(input_psnr, 4),
    }


def _command(name: str) -> str:
    return f"python eval/calibrate.py --update-card {name}"


def calibrate(name: str, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The full calibration block of one shipped weight (``command`` included)."""
    model, card = load_model(name, device)
    block = measure(model, card, device=device)
    block["command"] = _command(str(card.get("name", name)))
    return block


def check(card: dict[str, Any], measured: dict[str, Any]) -> None:
    """Raise `CalibrationError` unless the card's block matches ``measured`` within tolerance."""
    name = card.get("name")
    recorded = card.get(CALIBRATION_KEY)
    if not isinstance(recorded, dict):
        raise CalibrationError(
            f"weights {name!r}: the model card has no {CALIBRATION_KEY!r} block; a shipped weight must be "
            f"calibrated: run `{_command(str(name))}`"
        )
    problems = []
    for key in ("sample", "corruption", "seed"):
        if recorded.get(key) != measured.get(key):
            problems.append(f"{key}: card {recorded.get(key)!r}, this run {measured.get(key)!r}")
    for key, tol in (("psnr", PSNR_TOLERANCE), ("ssim", SSIM_TOLERANCE)):
        want, got = recorded.get(key), measured.get(key)
        if not isinstance(want, (int, float)) or isinstance(want, bool):
            problems.append(f"{key}: card records {want!r}, not a number")
        elif abs(float(got) - float(want)) > tol:
            problems.append(f"{key}: measured {got:.4f}, card {want:.4f} (tolerance {tol})")
    if problems:
        raise CalibrationError(
            f"weights {name!r} disagree with their calibration: " + "; ".join(problems)
            + f". If the change is intended, re-run `{_command(str(name))}` and say why in the commit"
        )


# --------------------------------------------------------------------------- card update


def _dump(card: dict[str, Any], ensure_ascii: bool) -> str:
    return json.dumps(card, indent=2, ensure_ascii=ensure_ascii) + "\n"


def update_card(path: str | Path, block: dict[str, Any]) -> bool:
    """Set ``card["calibration"] = block`` in place (same key position, same JSON style); True if the file changed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        card = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationError(f"{path}: unreadable model card ({e})") from e
    if not isinstance(card, dict):
        raise CalibrationError(f"{path}: a model card must be a JSON object")
    # keep the file's own escaping of non-ASCII characters, whichever it uses
    if _dump(card, False) == text:
        ensure_ascii = False
    elif _dump(card, True) == text:
        ensure_ascii = True
    else:  # hand-edited layout: keep whichever escaping it shows
        ensure_ascii = "\\u" in text
    card[CALIBRATION_KEY] = block  # an existing key keeps its position; a new one goes last
    new = _dump(card, ensure_ascii)
    if new == text:
        return False
    with atomic_output(path) as tmp:
        Path(tmp).write_text(new, encoding="utf-8")
    return True


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = eval_parser(
        "Restore a small fixed sample with every shipped weight and compare PSNR/SSIM with "
        "the calibration block of its model card (or write that block with --update-card).",
        "calibrate",
        update_card={"help": "write the measured block into each card (idempotent; the safetensors file is untouched)"},
        device={"help": "torch device (recorded figures are CPU ones; default cpu)"},
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="shipped weights to calibrate (default: all in weights/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = list(args.names) or [str(c["name"]) for c in W.available()]
    if not names:
        print(f"no weights in {W.weights_dir()}", file=sys.stderr)
        return 0
    failed = 0
    for name in names:
        t0 = time.perf_counter()
        try:
            model, card = load_model(name, args.device)
            block = measure(model, card, device=args.device)
            block["command"] = _command(str(card.get("name", name)))
            elapsed = time.perf_counter() - t0
            inp = "-" if block["input_psnr"] is None else f"{block['input_psnr']:.2f}"
            line = (f"{name}: psnr {block['psnr']:.4f} dB, ssim {block['ssim']:.4f} (input {inp} dB) "
                    f"on {block['sample']}, {block['corruption']} ({elapsed:.1f} s)")
            if args.update_card:
                changed = update_card(W.card_path(name), block)
                print(line + (" -> card updated" if changed else " -> card unchanged"))
            else:
                print(line, flush=True)
                check(card, block)
                print(f"{name}: matches the card")
        except CalibrationError as e:
            failed += 1
            print(f"{name}: FAILED: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
