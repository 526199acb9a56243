"""Noise-level-conditioned photo denoiser (FFDNet-style), for CPU budgets.

Why this shape (Zhang et al. 2018, FFDNet; Chen et al. 2022, NAFNet):

* the image is pixel-unshuffled by ``scale`` (2: four sub-images), so every
  body layer runs at a quarter of the pixels with ``scale**2`` times the input
  channels: more channels for the same CPU time, and a receptive field twice
  as wide per layer;
* the noise level is an input: a map of sigma (one channel, uniform) is
  concatenated with the sub-images, so one network covers sigma 0-60 and the
  caller decides the strength (the true sigma, an estimate from
  `restore.noise.estimate_sigma`, or less for lighter denoising);
* residual learning: the output is ``x + f(x, sigma)`` with the last conv
  zero-initialised, so the untrained model is the identity.

Two bodies (``block``): ``conv`` is FFDNet's plain 3x3 conv + ReLU stack;
``naf`` is a stack of NAFNet blocks (per-pixel LayerNorm, 1x1 expand,
depthwise 3x3, SimpleGate, 1x1, then a gated 1x1 FFN) without the simplified
channel attention, whose global average pool would make a tile's output
depend on the rest of the tile (tiled restoring must equal whole-image
restoring). No batch norm either, for the same reason and because the
statistics would mix noise levels.

Contract used by the restore pipeline: ``noise_conditioned = True`` and
``forward(x, sigma)`` with x N x C x H x W in [0, 1] and sigma an (N,) tensor in
[0, 1] units (sigma_255 / 255); any H, W (reflect-padded to ``multiple``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restore.models.blocks import (
    ModelConfigError,
    ModelInputError,
    _check_choice,
    _check_positive,
    crop_padding,
    pad_to_multiple,
)

__all__ = ["BLOCKS", "FFDNet", "sigma_vector"]

BLOCKS = ("conv", "naf")


def sigma_vector(sigma: Tensor | float, n: int, like: Tensor) -> Tensor:
    """``sigma`` (scalar, (N,) or (N, 1)) as an (N,) tensor on ``like``'s device and dtype; clear error otherwise."""
    s = torch.as_tensor(sigma, device=like.device, dtype=like.dtype)
    if s.dim() == 0:
        s = s.expand(n)
    s = s.reshape(-1)
    if s.numel() != n:
        raise ModelInputError(f"FFDNet: sigma must hold one value per image ({n}), got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ModelInputError("FFDNet: sigma must be finite and >= 0 (0-1 units: sigma_255 / 255)")
    return s


class _LayerNorm2d(nn.Module):
    """LayerNorm over channels at each pixel (NAFNet's): tile-independent, unlike batch/instance norm."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) * torch.rsqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class _NAFBlock(nn.Module):
    """NAFNet block without channel attention (see the module docstring)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm1 = _LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.dw = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.conv2 = nn.Conv2d(c, c, 1)
        self.norm2 = _LayerNorm2d(c)
        self.conv3 = nn.Conv2d(c, 2 * c, 1)
        self.conv4 = nn.Conv2d(c, c, 1)
        # zero-initialised branch scales: each block starts as the identity (NAFNet's beta / gamma)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.dw(self.conv1(self.norm1(x))).chunk(2, dim=1)
        x = x + self.beta * self.conv2(a * b)
        a, b = self.conv3(self.norm2(x)).chunk(2, dim=1)
        return x + self.gamma * self.conv4(a * b)


class FFDNet(nn.Module):
    """Residual denoiser at 1/scale^2 of the pixels, conditioned on a noise-level map.

    Args:
        in_channels: image channels (3 for photos, 1 for gray).
        width: channels of the body.
        depth: ``conv``: number of 3x3 convolutions (>= 2, head and tail included);
            ``naf``: number of NAF blocks between a 3x3 head and a 3x3 tail.
        block: ``conv`` | ``naf`` (see the module docstring).
        scale: pixel-unshuffle factor (1 = full resolution, 2 = FFDNet).
        pad_mode: how inputs are padded to a multiple of ``scale``.
    """

    noise_conditioned = True

    def __init__(self, in_channels: int = 3, width: int = 64, depth: int = 12, block: str = "conv",
                 scale: int = 2, pad_mode: str = "reflect") -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("depth", depth), ("scale", scale)):
            _check_positive("FFDNet", name, value)
        _check_choice("FFDNet", "block", block, BLOCKS)
        _check_choice("FFDNet", "pad_mode", pad_mode, ("reflect", "replicate", "constant"))
        if block == "conv" and depth < 2:
            raise ModelConfigError(f"FFDNet: block='conv' needs depth >= 2 (head and tail convs), got {depth}")
        if scale > 8:
            raise ModelConfigError(f"FFDNet: scale={scale} is unreasonably coarse (max 8)")
        self.config = {"in_channels": in_channels, "width": width, "depth": depth, "block": block,
                       "scale": scale, "pad_mode": pad_mode}
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.scale = scale
        self.multiple = scale
        self.pad_mode = pad_mode
        sub = in_channels * scale * scale
        self.head = nn.Conv2d(sub + 1, width, 3, padding=1)
        if block == "conv":
            layers: list[nn.Module] = [nn.ReLU(inplace=True)]
            for _ in range(depth - 2):
                layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
            self.body = nn.Sequential(*layers)
        else:
            self.body = nn.Sequential(*[_NAFBlock(width) for _ in range(depth)])
        self.tail = nn.Conv2d(width, sub, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.groups == 1:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Denoise ``x`` (N x C x H x W in [0, 1]) at noise level ``sigma`` ((N,) in [0, 1] units)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelInputError(
                f"FFDNet: expected an N x {self.in_channels} x H x W tensor, got shape {tuple(x.shape)}"
            )
        n = x.shape[0]
        s = sigma_vector(sigma, n, x)
        padded, pads = pad_to_multiple(x, self.scale, mode=self.pad_mode)
        sub = F.pixel_unshuffle(padded, self.scale) if self.scale > 1 else padded
        level = s.view(n, 1, 1, 1).expand(n, 1, sub.shape[2], sub.shape[3])
        h = self.tail(self.body(self.head(torch.cat([sub, level], dim=1))))
        res = F.pixel_shuffle(h, self.scale) if self.scale > 1 else h
        return crop_padding(padded + res, pads)
