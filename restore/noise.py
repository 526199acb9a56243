"""Per-image Gaussian noise level, for a denoiser that is given sigma (``--sigma auto``).

Default estimator: the patch-PCA method of Chen, Zhu and Heng, "An Efficient
Statistical Method for Image Noise Level Estimation" (ICCV 2015). The
covariance of the image's 8 x 8 x C patches has eigenvalues that are the
image's own (a few large ones: structure is low-rank) plus sigma^2 each (white
noise adds the same variance in every direction). The estimate is the mean of
the smallest eigenvalues, keeping as many as still look like one noise
population (their mean equals their median). Unlike the wavelet estimator
it does not read texture as noise, so near-clean photos get near-zero sigma,
which is what keeps a clean photo unharmed.

``method="mad"`` is Donoho's robust wavelet estimator (median absolute Haar
diagonal detail coefficient / 0.6745), kept as the classical reference for
``eval/noise_estimate.py``.

The raw PCA estimate is then mapped through a calibration table measured on
the TRAINING photos (``python eval/noise_estimate.py --fit``): the inputs are
clipped to [0, 1] (an 8-bit file is), which lowers the noise's std at high
sigma (about 44 measured for a true 50), and a photo's own fine texture gives a
clean photo an estimate of 1-2. A denoiser trained with the true sigma of
clipped noise wants the true sigma back, so the table inverts the mean
relation (piecewise linear; ``calibrated=False`` returns the raw estimate).

`NOISE_FLOOR` is the largest calibrated estimate of a CLEAN training photo
(``python eval/noise_estimate.py --fit``): a texture-rich photo without noise
still reads as 0.5 or so. The denoiser treats an estimate below it as "clean"
(``--sigma auto`` then returns the photo unchanged); estimates at a true sigma
of 1 already lie above it (0.87-1.20 on the same photos).

Cost is bounded whatever the image size: images larger than ``max_pixels``
are read through a regular grid of 128 x 128 crops spread over the image, and
the patches are taken with the stride that keeps about ``max_patches`` of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["METHODS", "NOISE_FLOOR", "estimate_sigma"]

METHODS = ("pca", "mad")
_CROP = 128
#: (mean raw PCA estimate, true sigma) on 10 training photos, 0-255 scale, from
#: ``python eval/noise_estimate.py --fit --limit 10`` (default-protocol noise, base seed 1234).
_CALIBRATION: tuple[tuple[float, float], ...] = (
    (0.334, 0), (1.09, 1), (2.03, 2), (2.986, 3), (4.919, 5), (7.313, 7.5), (9.714, 10), (14.44, 15),
    (19.058, 20), (23.635, 25), (28.09, 30), (36.686, 40), (44.797, 50), (52.163, 60),
)
#: Largest calibrated estimate (0-255) of the 15 clean (8-bit, noise-free) photos of ``photos-train``, from
#: ``python eval/noise_estimate.py --fit``: an ``auto`` estimate below it means the photo is clean.
NOISE_FLOOR = 0.54


def _crops(x: Tensor, max_pixels: int) -> list[Tensor]:
    """``x`` (C x H x W) itself when small enough, else a k x k grid of 128 px crops spread over it."""
    c, h, w = x.shape
    if h * w <= max_pixels or h < _CROP or w < _CROP:
        return [x]
    k = max(1, int(math.sqrt(max_pixels)) // _CROP)
    tops = torch.linspace(0, h - _CROP, k).round().long().tolist()
    lefts = torch.linspace(0, w - _CROP, k).round().long().tolist()
    return [x[:, t : t + _CROP, l : l + _CROP] for t in tops for l in lefts]


def _pca_sigma(crops: list[Tensor], patch: int, max_patches: int) -> float:
    area = sum(max(0, c.shape[1] - patch + 1) * max(0, c.shape[2] - patch + 1) for c in crops)
    if area == 0:
        raise ValueError(f"estimate_sigma: the image is smaller than the {patch}x{patch} patches the estimator uses")
    stride = max(1, math.ceil(math.sqrt(area / max_patches)))
    cols = [F.unfold(c[None].float(), patch, stride=stride)[0] for c in crops
            if c.shape[1] >= patch and c.shape[2] >= patch]
    x = torch.cat(cols, dim=1)  # d x L
    x = x - x.mean(dim=1, keepdim=True)
    eig = torch.linalg.eigvalsh((x @ x.T).double() / x.shape[1]).clamp_min(0)  # ascending
    # Chen et al.: the largest m such that the m smallest eigenvalues have as many above their mean as below
    for m in range(eig.numel() - 1, 0, -1):
        low = eig[:m]
        tau = low.mean()
        if int((low > tau).sum()) == int((low < tau).sum()):
            return math.sqrt(float(tau))
    return math.sqrt(float(eig[0]))


def _mad_sigma(crops: list[Tensor]) -> float:
    coeffs = []
    for c in crops:
        c = c[:, : c.shape[1] // 2 * 2, : c.shape[2] // 2 * 2].float()
        hh = (c[:, 0::2, 0::2] - c[:, 0::2, 1::2] - c[:, 1::2, 0::2] + c[:, 1::2, 1::2]) / 2
        coeffs.append(hh.reshape(-1))
    v = torch.cat(coeffs)
    if v.numel() == 0:
        raise ValueError("estimate_sigma: the image is smaller than 2x2")
    return float(v.abs().median()) / 0.6745


@torch.no_grad()
def estimate_sigma(image: Tensor, *, method: str = "pca", calibrated: bool = True, patch: int = 8,
                   max_patches: int = 10_000, max_pixels: int = 1024 * 1024) -> Tensor:
    """Gaussian noise std of each image of ``image`` (N x C x H x W in [0, 1]), as an (N,) tensor in [0, 1] units.

    ``method``: ``pca`` (Chen et al. 2015, default) or ``mad`` (Donoho's wavelet MAD). ``calibrated``
    maps a PCA estimate through the training-photo table (see the module docstring). The result is on
    ``image``'s device, float32.
    """
    if not isinstance(image, Tensor) or image.dim() != 4:
        raise ValueError(f"estimate_sigma: expected an N x C x H x W tensor, got {getattr(image, 'shape', type(image))}")
    if method not in METHODS:
        raise ValueError(f"estimate_sigma: method {method!r} is not one of {', '.join(METHODS)}")
    if patch < 2 or max_patches < 1 or max_pixels < 1:
        raise ValueError("estimate_sigma: patch must be >= 2, max_patches and max_pixels >= 1")
    out = []
    for x in image:
        crops = _crops(x, max_pixels)
        if method == "mad":
            out.append(_mad_sigma(crops))
        else:
            raw = _pca_sigma(crops, patch, max_patches)
            out.append(_calibrate(raw) if calibrated else raw)
    return torch.tensor(out, dtype=torch.float32, device=image.device)


def _calibrate(raw: float) -> float:
    """Raw PCA estimate (0-1 units) -> sigma through `_CALIBRATION`; proportional beyond its last entry."""
    if not _CALIBRATION:
        return raw
    est, true = (list(t) for t in zip(*_CALIBRATION))
    r = raw * 255.0
    if r >= est[-1]:
        return true[-1] * r / est[-1] / 255.0
    if r <= est[0]:
        return true[0] / 255.0
    for i in range(1, len(est)):
        if r <= est[i]:
            w = (r - est[i - 1]) / max(est[i] - est[i - 1], 1e-9)
            return (true[i - 1] + w * (true[i] - true[i - 1])) / 255.0
    return raw
