"""LAB colorization (issue 7): a UNet predicts CIELAB a/b from L, judged by a conditional PatchGAN.

Everything colour-specific lives in this module, in one place (richzhang's
``BaseColor`` idea): the LAB conversions (kornia, differentiable, on whatever
device the tensors are on), the normalisation the networks see (``L/50 - 1``
and ``ab/110``), the training task (`ColorizeTask`), the photo-crop dataset and
the restoring side uses them too (`restore.restorers.colorize`).

Restoring works at full resolution (DeOldify / richzhang): the input's own L is
kept, a/b are predicted at the model's working resolution, upsampled and
recombined with the full-resolution L, and the result is gamut-mapped by
reducing chroma at constant L and hue, so the luminance of every output pixel
equals the input's (no detail of the original is lost or shifted).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.data import Dataset

from restore import io as rio
from restore.engine.config import ConfigError
from restore.engine.task import LossTerms, StepContext, Task
from restore.losses import AdversarialLoss, PerceptualLoss, l1_loss
from restore.models.colorizer import SqueezeColorizer
from restore.models.patchgan import PatchGAN
from restore.models.unet import UNet
from restore.tasks.common import (
    discriminator_terms,
    is_int,
    list_photos,
    merge_model_options,
)

log = logging.getLogger("restore.tasks.colorize")

__all__ = [
    "AB_SCALE",
    "L_CENTER",
    "L_SCALE",
    "ColorizeError",
    "ColorizeConfigError",
    "ColorizeTask",
    "PhotoCrops",
    "rgb_to_lab",
    "soft_encode",
    "lab_to_rgb",
    "normalize_l",
    "denormalize_l",
    "normalize_ab",
    "denormalize_ab",
    "rgb_to_model",
    "model_to_rgb",
    "lightness",
    "lab_to_rgb_keep_l",
]


#: L in [0, 100] is centred at 50 and scaled by 50 -> [-1, 1]; a/b are scaled by 110 (richzhang BaseColor)
L_CENTER = 50.0
L_SCALE = 50.0
AB_SCALE = 110.0

#: Pixels converted at a time between sRGB and CIELAB at full resolution (whole rows; see `_bands`).
#: Each conversion step (kornia's, the gamut mapping) is per pixel, so banding changes no value; it
#: bounds their temporaries, a dozen float32 copies of whatever is converted, to one band (tens of
#: MB) instead of the photo (gigabytes at 24 megapixels).
BAND_PIXELS = 1 << 18


class ColorizeError(ValueError):
    """Bad input to the colorization functions (the message names the parameter and the reason)."""


class ColorizeConfigError(ColorizeError, ConfigError):
    """A bad task option or training folder (a `ConfigError`, so ``train/colorize.py`` exits with 2)."""


# ============================================================================ colour: one home
def _check_rgb(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() < 3 or x.shape[-3] != 3:
        raise ColorizeError(f"{name}: expected a (..., 3, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")


def rgb_to_lab(rgb: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """sRGB in [0, 1] -> CIELAB (D65): L in [0, 100], a/b roughly [-110, 110]. Computed in ``dtype``:
    float32 for the model; float64 for scoring (``eval/``), where it equals scikit-image's rgb2lab to 1e-12."""
    import kornia.color

    _check_rgb(rgb, "rgb_to_lab")
    return kornia.color.rgb_to_lab(rgb.to(dtype).clamp(0.0, 1.0))


def lab_to_rgb(lab: Tensor, clip: bool = True, dtype: torch.dtype = torch.float32) -> Tensor:
    """CIELAB (D65) -> sRGB in ``dtype``; ``clip=False`` keeps out-of-gamut values (used to detect them)."""
    import kornia.color

    _check_rgb(lab, "lab_to_rgb")
    return kornia.color.lab_to_rgb(lab.to(dtype), clip=clip)


def normalize_l(L: Tensor) -> Tensor:
    """L in [0, 100] -> [-1, 1] (the generator's input)."""
    return (L - L_CENTER) / L_SCALE


def denormalize_l(l_norm: Tensor) -> Tensor:
    return l_norm * L_SCALE + L_CENTER


def normalize_ab(ab: Tensor) -> Tensor:
    """a/b in CIELAB units -> about [-1, 1] (the generator's tanh output range)."""
    return ab / AB_SCALE


def denormalize_ab(ab_norm: Tensor) -> Tensor:
    return ab_norm * AB_SCALE


def rgb_to_model(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """N3HW sRGB [0, 1] -> (normalised L N1HW, normalised ab N2HW), as the networks see them."""
    lab = rgb_to_lab(rgb)
    return normalize_l(lab[..., :1, :, :]), normalize_ab(lab[..., 1:, :, :])


def model_to_rgb(l_norm: Tensor, ab_norm: Tensor, keep_l: bool = False) -> Tensor:
    """Inverse of `rgb_to_model`. ``keep_l`` gamut-maps by chroma reduction (see `lab_to_rgb_keep_l`);
    otherwise out-of-gamut colours are clipped per channel (cheap; fine for training visuals)."""
    L, ab = denormalize_l(l_norm), denormalize_ab(ab_norm)
    if keep_l:
        return lab_to_rgb_keep_l(L, ab)
    return lab_to_rgb(torch.cat([L, ab], dim=-3))


def lightness(image: Tensor) -> Tensor:
    """CIELAB L (0-100, N1HW) of an N1HW gray or N3HW RGB image in [0, 1].

    Gray means R = G = B = the pixel value (how a gray PNG is displayed), so
    its L is the L of that neutral colour. An N4HW / N2HW input (with alpha)
    uses its colour channels only.
    """
    if not isinstance(image, Tensor) or image.dim() != 4:
        raise ColorizeError(f"lightness: expected an NCHW tensor, got {getattr(image, 'shape', type(image).__name__)}")
    c = image.shape[1]
    if c in (1, 2):
        rgb = image[:, :1].expand(-1, 3, -1, -1)
    elif c in (3, 4):
        rgb = image[:, :3]
    else:
        raise ColorizeError(f"lightness: expected 1 (gray), 3 (RGB) or 2/4 (with alpha) channels, got {c}")
    n, _, h, w = rgb.shape
    L = torch.empty(n, 1, h, w, dtype=torch.float32, device=rgb.device)
    for r0, r1 in _bands(h, w):  # in bands: the full LAB conversion of a photo is several copies of it
        L[:, :, r0:r1] = rgb_to_lab(rgb[:, :, r0:r1])[:, :1]
    return L


def _bands(height: int, width: int) -> list[tuple[int, int]]:
    """Row ranges ``[r0, r1)`` of about `BAND_PIXELS` pixels each, covering ``height`` rows.

    Each band but the last holds a multiple of 64 pixels, so vectorised kernels split a band's
    channels into vectors where they split the whole image's (their scalar remainder loop may
    round pow() differently in the last bit): banded results are bit-identical to whole-image
    ones when H x W is a multiple of 64 too (6000x4000 is), else they may differ by an ulp.
    """
    align = 64 // math.gcd(width, 64)  # rows per multiple of 64 pixels
    rows = max(align, BAND_PIXELS // max(1, width) // align * align)
    return [(r0, min(height, r0 + rows)) for r0 in range(0, height, rows)]


#: `lab_to_rgb_keep_l`: out-of-gamut pixels bisected at a time (a multiple of 64; see `_keep_l_into`)
BISECT_PIXELS = 1 << 18

#: `lab_to_rgb_keep_l`: bisection steps on the chroma factor, and how far outside [0, 1] counts as out of gamut
KEEP_L_ITERATIONS = 16
KEEP_L_TOL = 1e-4


def _out_of_gamut(rgb: Tensor, tol: float) -> Tensor:
    """Bool mask (..., 1, H, W): any channel outside [-tol, 1 + tol]."""
    return ((rgb < -tol) | (rgb > 1.0 + tol)).any(dim=-3, keepdim=True)


@torch.no_grad()
def lab_to_rgb_keep_l(L: Tensor, ab: Tensor, iterations: int = KEEP_L_ITERATIONS, tol: float = KEEP_L_TOL) -> Tensor:
    """L (N1HW, 0-100) + ab (N2HW) -> sRGB in [0, 1] whose L equals ``L``.

    Clipping an out-of-gamut colour channel-wise changes its lightness (a
    saturated blue at L = 80 does not exist in sRGB; clipped, it becomes a
    darker blue). Instead each out-of-gamut pixel keeps its L and hue and its
    chroma is scaled down by the largest factor in [0, 1] that fits the gamut,
    found by bisection (factor 0 = the neutral gray of that L, always in gamut).
    Only out-of-gamut pixels are iterated, so the cost is one conversion plus a
    few on the (usually small) set of saturated pixels. Rows are converted in
    bands of about `BAND_PIXELS` pixels (every step is per pixel, so the
    result is the same as converting the whole image at once).
    """
    if L.dim() != 4 or L.shape[1] != 1 or ab.dim() != 4 or ab.shape[1] != 2 or L.shape[-2:] != ab.shape[-2:]:
        raise ColorizeError(
            f"lab_to_rgb_keep_l: expected L N1HW and ab N2HW of the same size, got {tuple(L.shape)} and {tuple(ab.shape)}"
        )
    n, _, h, w = L.shape
    rgb = torch.empty(n, 3, h, w, dtype=torch.float32, device=L.device)
    _keep_l_into(rgb, L, ab, iterations, tol)
    return rgb


@torch.no_grad()
def _keep_l_into(out: Tensor, L: Tensor, ab: Tensor, iterations: int, tol: float) -> None:
    """`lab_to_rgb_keep_l` of L/ab written into ``out`` (N3HW), converting band by band.

    ``out`` may be the tensor that L and ab are views of (the colorize restorer
    converts its LAB image in place, saving a full-size copy): each band is
    read, into fresh tensors, before its rows are overwritten. The
    out-of-gamut pixels are queued in whole-image order and bisected in
    chunks of `BISECT_PIXELS` (a multiple of 64, so vectorised kernels split
    them where they split one whole-image vector), each as soon as the queue
    holds one: every value is computed as by one whole-image pass, and memory
    stays a chunk's even when most pixels are out of gamut.
    """
    n, _, h, w = L.shape
    picked: list[tuple[int, int, int, Tensor]] = []  # queued: (image, first row, last row + 1, flat indices in the band)
    flat_L: list[Tensor] = []
    flat_ab: list[Tensor] = []

    def bisect_queued(final: bool) -> None:
        nonlocal picked, flat_L, flat_ab
        queued = sum(len(idx) for *_, idx in picked)
        take = queued if final else queued // BISECT_PIXELS * BISECT_PIXELS
        if take == 0:
            return
        all_L, all_ab = torch.cat(flat_L, dim=1), torch.cat(flat_ab, dim=1)
        fixed = _bisect_chroma(all_L[:, :take], all_ab[:, :take], iterations, tol)  # 3 x take
        start, rest = 0, []
        for i, r0, r1, idx in picked:
            k = min(len(idx), take - start)
            if k > 0:
                out[i, :, r0:r1].view(3, -1)[:, idx[:k]] = fixed[:, start : start + k]
                start += k
            if k < len(idx):
                rest.append((i, r0, r1, idx[k:]))
        picked, flat_L, flat_ab = rest, [all_L[:, take:]], [all_ab[:, take:]]

    for i in range(n):
        for r0, r1 in _bands(h, w):
            band_L = L[i : i + 1, :, r0:r1].float().clamp(0.0, 100.0)
            band_ab = ab[i : i + 1, :, r0:r1].float()
            rgb = lab_to_rgb(torch.cat([band_L, band_ab], dim=1), clip=False)
            bad = _out_of_gamut(rgb, tol).flatten()
            if bool(bad.any()):
                idx = bad.nonzero().squeeze(1)
                picked.append((i, r0, r1, idx))
                flat_L.append(band_L.reshape(1, -1)[:, idx])
                flat_ab.append(band_ab.reshape(2, -1)[:, idx])
            out[i : i + 1, :, r0:r1] = rgb
            del band_L, band_ab, rgb, bad
            bisect_queued(final=False)
    bisect_queued(final=True)
    out.clamp_(0.0, 1.0)


def _bisect_chroma(flat_L: Tensor, flat_ab: Tensor, iterations: int, tol: float) -> Tensor:
    """sRGB (3 x K) of K out-of-gamut colours (L 1 x K, ab 2 x K) with their chroma bisected into the gamut."""
    lo = torch.zeros_like(flat_L)                                  # known to fit
    hi = torch.ones_like(flat_L)                                   # known not to fit
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lab = torch.cat([flat_L, flat_ab * mid], dim=0)[None, :, :, None]  # a (1, 3, K, 1) "image"
        fits = ~_out_of_gamut(lab_to_rgb(lab, clip=False), tol)[0, :, :, 0]  # 1 x K
        lo = torch.where(fits, mid, lo)
        hi = torch.where(fits, hi, mid)
    lab = torch.cat([flat_L, flat_ab * lo], dim=0)[None, :, :, None]
    return lab_to_rgb(lab, clip=False)[0, :, :, 0]


# ============================================================================ bins head (Zhang et al. 2016)
#: soft encoding of a target a/b over the bins: its nearest ``SOFT_NEIGHBOURS`` bin centres, Gaussian
#: weights of standard deviation ``SOFT_SIGMA`` CIELAB units (Zhang et al.'s 5 and 5)
SOFT_NEIGHBOURS = 5
SOFT_SIGMA = 5.0


def soft_encode(ab_norm: Tensor, bins: Tensor, neighbours: int = SOFT_NEIGHBOURS,
                sigma: float = SOFT_SIGMA / AB_SCALE) -> Tensor:
    """Normalised a/b (N2HW) -> target distributions over the Q bins (NQHW, each pixel summing to 1).

    Zhang et al.'s soft encoding: a hard one-hot target would ignore that
    neighbouring bins are nearly the same colour; each pixel's weight goes to
    its ``neighbours`` nearest bin centres (``bins``, Q x 2, normalised units)
    with Gaussian weights of std ``sigma``.
    """
    if ab_norm.dim() != 4 or ab_norm.shape[1] != 2 or bins.dim() != 2 or bins.shape[1] != 2:
        raise ColorizeError(f"soft_encode: expected N2HW a/b and Q x 2 bins, got {tuple(ab_norm.shape)} and "
                            f"{tuple(bins.shape)}")
    k = min(int(neighbours), bins.shape[0])
    if k < 1 or not sigma > 0:
        raise ColorizeError(f"soft_encode: need neighbours >= 1 and sigma > 0, got {neighbours}, {sigma}")
    ab = ab_norm.float()
    c = bins.float().to(ab.device)
    d2 = (ab[:, :1] - c[:, 0, None, None]) ** 2 + (ab[:, 1:] - c[:, 1, None, None]) ** 2  # NQHW
    near, idx = d2.topk(k, dim=1, largest=False)
    w = torch.softmax(-near / (2.0 * sigma**2), dim=1)  # Gaussian weights, normalised
    return torch.zeros_like(d2).scatter_(1, idx, w)


def bins_cross_entropy(logits: Tensor, ab_norm: Tensor, bins: Tensor) -> Tensor:
    """Mean over pixels of the cross-entropy between the bin logits (NQhw) and the soft-encoded target a/b.

    The target is area-downscaled to the logits' size first (the bins head predicts at half resolution).
    """
    if ab_norm.shape[-2:] != logits.shape[-2:]:
        ab_norm = torch.nn.functional.interpolate(ab_norm.float(), size=logits.shape[-2:], mode="area")
    target = soft_encode(ab_norm, bins)
    return -(target * torch.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


# ============================================================================ data
def _resize_short(arr: np.ndarray, short: int) -> np.ndarray:
    """Resize HxWxC so the shorter side is ``short`` (area when shrinking, cubic when enlarging)."""
    h, w = arr.shape[:2]
    scale = short / min(h, w)
    size = (max(short, round(w * scale)), max(short, round(h * scale)))  # cv2: (width, height)
    if size == (w, h):
        return arr
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    out = cv2.resize(arr, size, interpolation=interp)
    return out[..., None] if out.ndim == 2 else out


class PhotoCrops(Dataset):
    """Random (or centred) crops of colour photos at a random scale, for colorization.

    pix2pix ``resize_and_crop``: each item resizes a photo so its shorter side
    is ``load_size`` (an int, or a ``(low, high)`` range drawn per item, which
    gives scale augmentation on small photo sets), takes a ``crop_size``
    square crop (random, or centred when ``random=False``) and, with ``flip``,
    mirrors it left-right. Vertical flips and rotations are deliberately not
    used: skies are up, and colour priors depend on it.

    Gray photos (1 channel, or R = G = B everywhere) are skipped with a
    warning: they would teach the model that gray is a right answer.
    Photos are decoded once (``paths`` given explicitly so a caller can hold
    some back for validation) and kept as 8-bit arrays already shrunk so the
    shorter side is the largest load size. Items: ``{"target": 3 x P x P}``.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        crop_size: int,
        load_size: int | Sequence[int],
        *,
        flip: bool = True,
        random: bool = True,
        crops_per_image: int = 1,
        seed: int | None = None,
    ) -> None:
        if not is_int(crop_size) or crop_size < 8:
            raise ColorizeConfigError(f"crop_size: must be an integer >= 8, got {crop_size!r}")
        lo, hi = _size_range(load_size, "load_size")
        if lo < crop_size:
            raise ColorizeConfigError(f"load_size: {lo} is smaller than crop_size {crop_size}")
        if not is_int(crops_per_image) or crops_per_image < 1:
            raise ColorizeConfigError(f"crops_per_image: must be an integer >= 1, got {crops_per_image!r}")
        self.crop_size, self.load_range = crop_size, (lo, hi)
        self.flip, self.random, self.crops_per_image, self.seed = bool(flip), bool(random), crops_per_image, seed
        self.images: list[np.ndarray] = []
        self.paths: list[Path] = []
        self.skipped: dict[Path, str] = {}
        for p in map(Path, paths):
            try:
                loaded = rio.read_image(p)
            except rio.ImageReadError as e:
                self.skipped[p] = e.reason
                continue
            img = loaded.image[:3]
            if img.shape[0] == 1 or float((img.max(0).values - img.min(0).values).max()) < 2.0 / 255.0:
                self.skipped[p] = "grayscale photo (no colour to learn from)"
                continue
            arr = (img.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
            self.images.append(np.ascontiguousarray(_resize_short(arr, hi) if min(arr.shape[:2]) > hi else arr))
            self.paths.append(p)
        for p, why in self.skipped.items():
            log.warning("PhotoCrops: skipping %s: %s", p, why)
        if not self.images:
            raise ColorizeConfigError(f"PhotoCrops: none of the {len(list(paths))} photo(s) can be used ({self.skipped})")

    def __len__(self) -> int:
        return len(self.images) * self.crops_per_image

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} crops")
        arr = self.images[index % len(self.images)]
        if self.random:
            # a fresh seed from torch's RNG: seeded by the trainer, distinct per DataLoader worker
            seed = int(torch.randint(0, 2**62, (1,)).item()) if self.seed is None else self.seed * 1_000_003 + index
            rng = np.random.default_rng(seed)
            lo, hi = self.load_range
            arr = _resize_short(arr, int(rng.integers(lo, hi + 1)))
            h, w = arr.shape[:2]
            y = int(rng.integers(0, h - self.crop_size + 1))
            x = int(rng.integers(0, w - self.crop_size + 1))
            flip = self.flip and bool(rng.integers(0, 2))
        else:
            arr = _resize_short(arr, (self.load_range[0] + self.load_range[1]) // 2)
            h, w = arr.shape[:2]
            y, x, flip = (h - self.crop_size) // 2, (w - self.crop_size) // 2, False
        crop = arr[y : y + self.crop_size, x : x + self.crop_size]
        if flip:
            crop = crop[:, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float().div_(255.0)
        return {"target": t}


def _size_range(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ColorizeConfigError(f"{name}: expected an integer or a [low, high] pair, got {value!r}")
        lo, hi = value
    else:
        lo = hi = value
    for v in (lo, hi):
        if not is_int(v) or v < 1:
            raise ColorizeConfigError(f"{name}: sizes must be positive integers, got {value!r}")
    if lo > hi:
        raise ColorizeConfigError(f"{name}: low {lo} > high {hi}")
    return int(lo), int(hi)


def split_photos(paths: Sequence[Path], val_images: int) -> tuple[list[Path], list[Path]]:
    """Hold back ``val_images`` photos, evenly spread over the sorted list (deterministic)."""
    paths = sorted(paths)
    if val_images <= 0:
        return list(paths), []
    if val_images >= len(paths):
        raise ColorizeConfigError(
            f"val_images: {val_images} held back from {len(paths)} photo(s) leaves none to train on"
        )
    step = len(paths) / val_images
    held = {int(step * i + step / 2) for i in range(val_images)}
    return [p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held]


# ============================================================================ the task
#: pix2pix unet_256 colorization generator (L -> ab); the task's `generator` option overrides keys
GENERATOR_DEFAULTS: dict[str, Any] = {
    "base_channels": 64,
    "depth": 8,
    "channel_mult": None,
    "max_channels": 512,
    "norm": "batch",
    "dropout": 0.5,
    "dropout_layers": 3,
    "upsample": "transpose",
    "convs_per_level": 0,
    "fuse_input": False,
    "init": "normal",
}
#: `restore.models.colorizer.SqueezeColorizer` (task.arch "squeeze-colorizer"): frozen ImageNet encoder, trainable decoder
SQUEEZE_GENERATOR_DEFAULTS: dict[str, Any] = {"widths": [96, 64, 48, 32], "global_fusion": True,
                                              "head": "regression"}
#: generator architectures of task.arch
GENERATOR_ARCHS = ("unet", "squeeze-colorizer")
#: pix2pix 70x70 PatchGAN judging the (L, ab) pair
DISCRIMINATOR_DEFAULTS: dict[str, Any] = {"base_channels": 64, "n_layers": 3, "norm": "batch", "init": "normal"}


class ColorizeTask(Task):
    """pix2pix-style colorization: G(L) -> ab, conditional D(L, ab), loss = adv + lambda_L1 * L1(ab)."""

    name = "colorize"
    loss_names_G = ("adv", "l1")
    loss_names_D = ("real", "fake")
    adversarial_term = "adv"
    visual_names = ("input", "output", "target")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The full pix2pix recipe (GPU scale); see train/configs/colorize-cpu.yaml for the small one."""
        sched = {"lr": 2e-4, "betas": [0.5, 0.999], "schedule": "step", "schedule_unit": "epochs",
                 "step_size": 30, "gamma": 0.1}
        return {
            "task": {
                "crop_size": 256,          # training crop side
                "load_size": 286,          # shorter side before cropping: int or [low, high] (scale augmentation)
                "work_size": 256,          # restoring: shorter side at which a/b are predicted
                "max_work_side": 1024,     # restoring: cap on the longer working side (panoramas)
                "crops_per_image": 1,      # dataset length = photos x this (one "epoch")
                "val_images": 2,           # photos of --data held back for validation (unless val_data)
                "val_data": "",            # a separate validation folder instead
                "flip": True,
                "lambda_l1": 100.0,
                "lambda_adv": 1.0,
                "gan_mode": "vanilla",     # vanilla | lsgan | hinge
                "label_smoothing": 0.9,    # D's real target (None/null = off, or [low, high])
                "arch": "unet",            # generator: unet (from scratch) | squeeze-colorizer (frozen ImageNet encoder)
                "lambda_perceptual": 0.0,  # SqueezeNet perceptual loss on the colorized RGB (restore.losses)
                "lambda_ce": 1.0,          # generator.head "bins": weight of the soft-encoded cross-entropy
                "generator": {},           # overrides of GENERATOR_DEFAULTS (unet) / SQUEEZE_GENERATOR_DEFAULTS
                "discriminator": {},       # PatchGAN overrides of DISCRIMINATOR_DEFAULTS
            },
            "batch_size": 1,
            "epochs": 200,
            "ema": True,
            "ema_decay": 0.999,
            "d_noise_std": 0.05,
            "d_noise_anneal_steps": 20000,
            "optim": {"G": dict(sched), "D": dict(sched)},
        }

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        defaults = self.defaults()["task"]
        opts = {**defaults, **(options or {})}
        unknown = sorted(set(opts) - set(defaults))
        if unknown:
            raise ColorizeConfigError(f"task: unknown colorize option(s) {', '.join(unknown)}; known: {', '.join(sorted(defaults))}")
        _size_range(opts["load_size"], "task.load_size")
        for key in ("crop_size", "work_size", "max_work_side"):
            v = opts[key]
            if not is_int(v) or v < 8:
                raise ColorizeConfigError(f"task.{key}: must be an integer >= 8, got {v!r}")
        if opts["max_work_side"] < opts["work_size"]:
            raise ColorizeConfigError(f"task.max_work_side: {opts['max_work_side']} is below work_size {opts['work_size']}")
        if opts["arch"] not in GENERATOR_ARCHS:
            raise ColorizeConfigError(f"task.arch: must be one of {', '.join(GENERATOR_ARCHS)}, got {opts['arch']!r}")
        for key in ("lambda_l1", "lambda_adv", "lambda_perceptual", "lambda_ce"):
            if not isinstance(opts[key], (int, float)) or isinstance(opts[key], bool) or opts[key] < 0:
                raise ColorizeConfigError(f"task.{key}: must be a number >= 0, got {opts[key]!r}")
        if opts["arch"] == "squeeze-colorizer":
            opts["generator"] = merge_model_options(
                SQUEEZE_GENERATOR_DEFAULTS, opts["generator"], name="generator", error=ColorizeConfigError,
                cls=SqueezeColorizer,
            )
        else:
            opts["generator"] = merge_model_options(
                GENERATOR_DEFAULTS, opts["generator"], name="generator", error=ColorizeConfigError, cls=UNet,
                fixed=("in_channels", "out_channels", "residual", "out_activation"),
            )
        opts["discriminator"] = merge_model_options(
            DISCRIMINATOR_DEFAULTS, opts["discriminator"], name="discriminator", error=ColorizeConfigError,
            cls=PatchGAN, fixed=("in_channels",),
        )
        self.bins_head = opts["arch"] == "squeeze-colorizer" and opts["generator"].get("head") == "bins"
        super().__init__(opts)
        if self.bins_head:
            self.loss_names_G = (*self.loss_names_G, "ce")
        sm = opts["label_smoothing"]
        sm = tuple(sm) if isinstance(sm, list) else sm
        try:
            self.adv = AdversarialLoss(opts["gan_mode"], smoothing=sm)
        except ValueError as e:
            raise ColorizeConfigError(f"task.gan_mode / task.label_smoothing: {e}") from None
        self.perceptual: nn.Module | None = None
        if opts["lambda_perceptual"] > 0:
            self.perceptual = PerceptualLoss(backbone="squeezenet")
            self.loss_names_G = (*self.loss_names_G, "perceptual")

    # ---- construction -------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        if self.options["arch"] == "squeeze-colorizer":
            G: nn.Module = SqueezeColorizer(**self.options["generator"]).load_backbone()
        else:
            G = UNet(in_channels=1, out_channels=2, residual=False, out_activation="tanh", **self.options["generator"])
        D = PatchGAN(in_channels=3, **self.options["discriminator"])
        return {"G": G, "D": D}

    def build_datasets(self, data: str) -> tuple[Dataset, Dataset | None]:
        o = self.options
        paths = list_photos(data, ColorizeConfigError)
        if o["val_data"]:
            train_paths, val_paths = sorted(paths), rio.list_images(Path(o["val_data"]))
        else:
            train_paths, val_paths = split_photos(paths, int(o["val_images"]))
        train = PhotoCrops(train_paths, o["crop_size"], o["load_size"], flip=o["flip"],
                           crops_per_image=o["crops_per_image"])
        val = PhotoCrops(val_paths, o["crop_size"], o["load_size"], random=False) if val_paths else None
        log.info("colorize data: %d training photo(s), %d validation photo(s)", len(train.images),
                 len(val.images) if val is not None else 0)
        return train, val

    # ---- one step -----------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        """RGB -> LAB on the device: ``L`` (N1HW in [-1, 1]) is G's input, ``ab`` (N2HW) its target."""
        batch = super().prepare_batch(batch, ctx)
        batch["L"], batch["ab"] = rgb_to_model(batch["target"])
        return batch

    def forward(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        if self.bins_head and ctx.training:
            ab, logits = G(batch["L"], return_logits=True)
            return {"output": ab, "logits": logits, "bins": G.ab_bins}  # the centres the logits are over
        return {"output": G(batch["L"])}

    def pair(self, L: Tensor, ab: Tensor) -> Tensor:
        """The conditional discriminator's input: the condition L with the colours it is judged with."""
        return torch.cat([L, ab.to(L.dtype)], dim=1)

    def discriminator_losses(self, batch: dict[str, Any], out: dict[str, Tensor], D: nn.Module, ctx: StepContext) -> LossTerms:
        real = D(ctx.d_noise(self.pair(batch["L"], batch["ab"])))
        fake = D(ctx.d_noise(self.pair(batch["L"], out["output"])))
        return discriminator_terms(self.adv, real, fake, ctx, self.options["gan_mode"])

    def generator_losses(self, batch: dict[str, Any], out: dict[str, Tensor], D: nn.Module | None, ctx: StepContext) -> LossTerms:
        ab = out["output"]
        l1 = l1_loss(ab, batch["ab"])
        if D is not None and self.options["lambda_adv"] > 0:
            adv = self.adv(D(ctx.d_noise(self.pair(batch["L"], ab))), True, False, ctx.generator)
        else:
            adv = ab.sum() * 0.0
        terms = {"adv": self.options["lambda_adv"] * adv, "l1": self.options["lambda_l1"] * l1}
        if self.bins_head:
            if "logits" not in out:
                raise ColorizeError("bins head: the generator's bin logits are missing (forward in training mode)")
            terms["ce"] = self.options["lambda_ce"] * bins_cross_entropy(out["logits"], batch["ab"], out["bins"])
        if self.perceptual is not None:
            # what ImageNet features see of the colours: the RGB of the input's L with the predicted a/b
            rgb = model_to_rgb(batch["L"].float(), ab.float())
            terms["perceptual"] = self.options["lambda_perceptual"] * self.perceptual(rgb, batch["target"].float())
        return terms

    # ---- monitoring ---------------------------------------------------------------
    def visuals(self, batch: dict[str, Any], out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Gray input, colorized and target, as RGB."""
        L = batch["L"].float()
        with torch.no_grad():
            colorized = model_to_rgb(L, out["output"].detach().float())
        gray = lab_to_rgb(torch.cat([denormalize_l(L), torch.zeros_like(L).expand(-1, 2, -1, -1)], dim=1))
        return {"input": gray, "output": colorized, "target": batch["target"].float()}

    @torch.no_grad()
    def validation_step(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> tuple[Tensor, Tensor]:
        ab = self.forward(G, batch, ctx)["output"].float()
        return model_to_rgb(batch["L"].float(), ab, keep_l=True), batch["target"].float()

    def model_card(self) -> dict[str, Any]:
        o = self.options
        return {
            "task": self.name,
            "corruption": "gray",
            "color": {
                "space": "CIELAB, D65, 2 degree observer (kornia.color)",
                "input": "L", "output": "ab",
                "l_center": L_CENTER, "l_scale": L_SCALE, "ab_scale": AB_SCALE,
            },
            "work_size": o["work_size"],
            "max_work_side": o["max_work_side"],
            "options": {k: v for k, v in o.items() if k not in ("generator", "discriminator")},
            "discriminator": {"arch": "patchgan", "config": {"in_channels": 3, **o["discriminator"]}},
        }
