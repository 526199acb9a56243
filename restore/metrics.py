"""Image-quality metrics: batched MSE / PSNR / SSIM in torch, and an offline LPIPS.

Why our own SSIM: evaluation numbers must reproduce the ones people quote, which
are almost always scikit-image's (``structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)``, i.e. Wang et al. 2004), yet they must
run batched on the training device during validation. The implementation below
is the same computation: an 11-tap Gaussian (sigma 1.5, truncated at 3.5 sigma)
applied as a *valid* convolution, which is exactly skimage's filtered map with
its ``(win_size - 1) // 2`` border cropped, averaged per channel then over
channels. Statistics are accumulated in float64 because ``E[x^2] - E[x]^2``
cancels badly in float32 on smooth regions.

All functions take ``NCHW`` (or a single ``CHW``) tensors with any number of
channels and return one value per image, shape ``(N,)``.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restore.losses import SqueezeFeatures

__all__ = [
    "mse",
    "psnr",
    "ssim",
    "LPIPS",
    "LPIPSWeightsMissing",
    "LPIPS_BACKBONE_FILES",
    "LPIPS_BACKBONE_ENV",
    "PERCEPTUAL_LAYERS",
    "SqueezeDistance",
    "perceptual_distance",
]

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scipy.ndimage.gaussian_filter's default, as used by skimage
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5
SSIM_WIN = 2 * SSIM_RADIUS + 1  # 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _acc_dtype(device: torch.device) -> torch.dtype:
    """float64 wherever the backend supports it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _out_dtype(x: Tensor) -> torch.dtype:
    """Results come back in the input's float dtype (float32 for integer inputs)."""
    if x.dtype in (torch.float64, torch.float32):
        return x.dtype
    return torch.float32


def _check_pair(x: Tensor, y: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{name}: expected two torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise ValueError(f"{name}: shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"{name}: expected NCHW (or CHW) tensors, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name}: empty input of shape {tuple(x.shape)}")
    if x.device != y.device:
        raise ValueError(f"{name}: inputs on different devices ({x.device} vs {y.device})")
    return x, y


def _check_range(data_range: float, name: str) -> float:
    data_range = float(data_range)
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"{name}: data_range must be a positive finite number, got {data_range}")
    return data_range


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error per image, ``(N,)``; accumulated in float64."""
    x, y = _check_pair(x, y, "mse")
    acc = _acc_dtype(x.device)
    diff = x.to(acc) - y.to(acc)
    return diff.pow(2).flatten(1).mean(1).to(_out_dtype(x))


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image, ``(N,)``.

    Equals ``skimage.metrics.peak_signal_noise_ratio(y, x, data_range=...)`` per
    image. Identical images have zero error and give ``inf`` (as skimage does);
    average PSNRs over a set with ``torch.isfinite`` in mind, or clamp.
    """
    x, y = _check_pair(x, y, "psnr")
    data_range = _check_range(data_range, "psnr")
    acc = _acc_dtype(x.device)
    err = (x.to(acc) - y.to(acc)).pow(2).flatten(1).mean(1)
    out = 10.0 * torch.log10(data_range**2 / err)  # err == 0 -> inf (torch does not warn)
    return out.to(_out_dtype(x))


def _gaussian_taps() -> list[float]:
    """scipy.ndimage's Gaussian taps for sigma 1.5, truncate 3.5: 11 taps summing to 1."""
    w = [math.exp(-0.5 * (r / SSIM_SIGMA) ** 2) for r in range(-SSIM_RADIUS, SSIM_RADIUS + 1)]
    total = math.fsum(w)
    return [v / total for v in w]


_TAPS = _gaussian_taps()


def _filter_valid(img: Tensor) -> Tensor:
    """Separable 11x11 Gaussian over the last two dims, valid region only.

    Written as 2 x 11 shifted multiply-adds rather than conv2d: float64 conv2d
    has no fast CPU kernel (about 5x slower here), while this is memory-bound
    on every device and differentiable.
    """
    h = img.shape[-2] - SSIM_WIN + 1
    w = img.shape[-1] - SSIM_WIN + 1
    rows = img[..., 0:h, :] * _TAPS[0]
    for i in range(1, SSIM_WIN):
        rows.add_(img[..., i : i + h, :], alpha=_TAPS[i])
    out = rows[..., 0:w] * _TAPS[0]
    for i in range(1, SSIM_WIN):
        out.add_(rows[..., i : i + w], alpha=_TAPS[i])
    return out


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity per image, ``(N,)``, averaged over channels.

    Same numbers as ``skimage.metrics.structural_similarity(a, b, data_range=R,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    channel_axis=...)``: 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
    K2 = 0.03, mean over the map without its 5-pixel border. Images must be at
    least 11x11. Differentiable, so it also works as a loss (``1 - ssim``).
    """
    per_channel = ssim_map(x, y, data_range, "ssim").flatten(2).mean(2)  # (N, C)
    return per_channel.mean(1).to(_out_dtype(x))


def ssim_map(x: Tensor, y: Tensor, data_range: float = 1.0, name: str = "ssim_map") -> Tensor:
    """The SSIM map of `ssim` before its mean, ``(N, C, H - 10, W - 10)`` in float64 (float32 on MPS):
    the window-centred values without the 5-pixel border, for scores over a region (inpainting holes)."""
    x, y = _check_pair(x, y, name)
    data_range = _check_range(data_range, name)
    n, c, h, w = x.shape
    if h < SSIM_WIN or w < SSIM_WIN:
        raise ValueError(f"{name}: images of {h}x{w} are smaller than the {SSIM_WIN}x{SSIM_WIN} Gaussian window")
    acc = _acc_dtype(x.device)
    a = x.to(acc)
    b = y.to(acc)
    # One filter pass over the five stacked moment images instead of five passes.
    stacked = torch.stack([a, b, a * a, b * b, a * b], dim=0)
    mu_a, mu_b, e_aa, e_bb, e_ab = _filter_valid(stacked).unbind(0)
    var_a = e_aa - mu_a * mu_a
    var_b = e_bb - mu_b * mu_b
    cov = e_ab - mu_a * mu_b
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return num / den


# --------------------------------------------------------------------------- LPIPS

LPIPS_BACKBONE_ENV = "RESTORE_LPIPS_BACKBONE"
#: torchvision's ImageNet checkpoints that the `lpips` package would download.
LPIPS_BACKBONE_FILES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}


class LPIPSWeightsMissing(FileNotFoundError):
    """The ImageNet backbone checkpoint LPIPS needs is not on this machine."""


def _hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _resolve_backbone(net: str, weights_path: str | os.PathLike | None) -> Path:
    """Find the backbone file without touching the network; explicit > env > hub cache."""
    fname = LPIPS_BACKBONE_FILES[net]
    hub_dir = _hub_checkpoint_dir()
    if weights_path is not None:
        source, path = "weights_path", Path(weights_path).expanduser()
    elif os.environ.get(LPIPS_BACKBONE_ENV):
        source, path = f"${LPIPS_BACKBONE_ENV}", Path(os.environ[LPIPS_BACKBONE_ENV]).expanduser()
    else:
        path = hub_dir / fname
        if path.is_file():
            return path
        raise LPIPSWeightsMissing(
            f"LPIPS(net={net!r}) needs torchvision's ImageNet backbone '{fname}', which is not in "
            f"the torch hub cache {hub_dir}. No download is attempted: copy '{fname}' into {hub_dir} "
            f"(or point weights_path= / ${LPIPS_BACKBONE_ENV} at it), or use pretrained=False "
            f"for an uncalibrated random backbone."
        )
    if not path.is_file():
        raise LPIPSWeightsMissing(
            f"LPIPS(net={net!r}): {source} points at {path}, which does not exist; it should be "
            f"torchvision's '{fname}' (or copy that file into {hub_dir})."
        )
    return path


def _load_backbone(lp_net: nn.Module, path: Path, net: str) -> None:
    """Copy ``features.*`` of a torchvision checkpoint into lpips' sliced backbone.

    lpips splits ``torchvision.models.<net>().features`` into ``slice1..5`` that
    keep the original child indices, so ``sliceK.<i>.weight`` is ``features.<i>.weight``.
    Only tensors are loaded (``weights_only=True``): no pickled code runs.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated / not a checkpoint
        raise ValueError(f"{path}: cannot read LPIPS backbone checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    own = lp_net.state_dict()
    new = {}
    for key, tensor in own.items():
        _, rest = key.split(".", 1)  # "slice1.0.weight" -> "0.weight"
        src_key = f"features.{rest}"
        src = state.get(src_key)
        if src is None:
            raise ValueError(
                f"{path}: not a torchvision {net} checkpoint ('{src_key}' missing; expected "
                f"'{LPIPS_BACKBONE_FILES[net]}')"
            )
        if tuple(src.shape) != tuple(tensor.shape):
            raise ValueError(
                f"{path}: '{src_key}' has shape {tuple(src.shape)}, the {net} backbone needs {tuple(tensor.shape)}"
            )
        new[key] = src
    lp_net.load_state_dict(new, strict=True)


class LPIPS(nn.Module):
    """Learned perceptual distance (Zhang et al. 2018) through the `lpips` package, offline.

    `lpips` ships its calibrated linear heads but fetches the torchvision ImageNet
    backbone from the internet on first use. Here the backbone comes from, in
    order: ``weights_path``, ``$RESTORE_LPIPS_BACKBONE``, or the torch hub cache
    (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`` /
    ``vgg16-397923af.pth``); if none exists :class:`LPIPSWeightsMissing` names
    the file and folder, and nothing is downloaded. ``pretrained=False`` builds
    a random backbone (meaningless values, for tests and smoke runs only).

    ``forward(x, y)`` takes images in ``[0, 1]`` (NCHW, 1 or 3 channels; gray is
    repeated to RGB) and returns ``(N,)`` distances, lower = more similar. The
    module stays in eval mode (the heads contain dropout) and its parameters are
    frozen, but gradients flow to the inputs so it can serve as a loss.
    """

    def __init__(
        self,
        net: str = "alex",
        weights_path: str | os.PathLike | None = None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if net not in LPIPS_BACKBONE_FILES:
            raise ValueError(f"LPIPS: net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
        self.net_name = net
        self.pretrained = bool(pretrained)
        # Resolve the file before building anything: fail fast, never download.
        path = _resolve_backbone(net, weights_path) if pretrained else None
        try:
            import lpips as _lpips
        except ImportError as e:  # pragma: no cover - declared dependency
            raise ImportError("LPIPS needs the 'lpips' package (pip install lpips)") from e
        with warnings.catch_warnings():
            # torchvision's deprecation notice for lpips' legacy `pretrained=` argument.
            warnings.simplefilter("ignore", UserWarning)
            # pnet_rand=True: build the backbone with random weights (no download);
            # pretrained=True: load the calibrated linear heads shipped in the package.
            self.model = _lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if path is not None:
            _load_backbone(self.model.net, path, net)
        self.weights_file = path
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        """Always stays in eval mode: the linear heads have dropout layers."""
        super().train(False)
        return self

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        x, y = _check_pair(x, y, "LPIPS")
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"LPIPS: expected 1 or 3 channels, got {x.shape[1]}")
        dtype = next(self.model.parameters()).dtype
        d = self.model(x.to(dtype), y.to(dtype), normalize=True)  # [0,1] -> [-1,1] inside
        return d.view(d.shape[0])


# --------------------------------------------------------------------------- SqueezeNet feature distance

#: Layers of `SqueezeDistance`: the seven taps LPIPS's own SqueezeNet variant reads (conv1, fire3, fire5..fire9).
PERCEPTUAL_LAYERS = ("conv1", "fire3", "fire5", "fire6", "fire7", "fire8", "fire9")


class SqueezeDistance(nn.Module):
    """SqueezeNet feature distance: an uncalibrated perceptual distance that works offline (issue 22).

    LPIPS needs AlexNet/VGG ImageNet weights that cannot be obtained here; this
    is the computation of LPIPS with ``lin=False`` (no learned per-channel
    weights) on the ImageNet SqueezeNet 1.1 that ships with the repository:
    at each layer of `PERCEPTUAL_LAYERS` the feature vector of every pixel is
    scaled to unit length over channels, the squared difference is summed over
    channels and averaged over the image, and the layers are summed with equal
    weights. It is **not LPIPS** (no human-judgement calibration; values are
    not comparable with published LPIPS numbers): it ranks distortions, 0 for
    identical images, larger = more different. ``eval/perceptual_check.py``
    checks that it grows with blur, noise and JPEG strength on photos.

    ``forward(x, y)`` takes NCHW images in [0, 1] (1 or 3 channels) and returns
    ``(N,)``; frozen, but differentiable in its inputs.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, pretrained: bool = True) -> None:
        super().__init__()

        self.features = SqueezeFeatures(PERCEPTUAL_LAYERS, weights_path=weights_path, pretrained=pretrained)

    def train(self, mode: bool = True) -> "SqueezeDistance":
        """Always eval (frozen)."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
        """``mask`` (N1HW, 1 = where to compare) restricts the average to a region, e.g. an inpainted hole:
        at each layer it is area-resized to the feature grid and weights the positions (an empty mask gives 0)."""
        x, y = _check_pair(x, y, "SqueezeDistance")
        if x.shape[1] not in (1, 3):
            raise ValueError(f"SqueezeDistance: expected 1 or 3 channels, got {x.shape[1]}")
        if mask is not None and (mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0]
                                 or mask.shape[-2:] != x.shape[-2:]):
            raise ValueError(f"SqueezeDistance: mask must be N x 1 x H x W matching {tuple(x.shape)}, "
                             f"got {tuple(mask.shape)}")
        fx, fy = self.features(x.float()), self.features(y.float())
        total = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        for name in PERCEPTUAL_LAYERS:
            a = fx[name] / (fx[name].norm(dim=1, keepdim=True) + 1e-10)
            b = fy[name] / (fy[name].norm(dim=1, keepdim=True) + 1e-10)
            d = (a - b).pow(2).sum(dim=1, keepdim=True)
            if mask is None:
                total = total + d.mean(dim=(1, 2, 3))
            else:
                w = F.interpolate(mask.float(), size=d.shape[-2:], mode="area")
                total = total + (d * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)).clamp_min(1e-12)
        return total


_DISTANCE: dict[str, SqueezeDistance] = {}


def perceptual_distance(x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """`SqueezeDistance` per image, ``(N,)``, with one shared frozen model per device (not LPIPS)."""
    key = str(x.device)
    if key not in _DISTANCE:
        _DISTANCE[key] = SqueezeDistance().to(x.device)
    with torch.no_grad():
        return _DISTANCE[key](x, y, mask)
