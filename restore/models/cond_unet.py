"""The blind denoising UNet with a noise-level map as a fourth input (noise-conditioned, as FFDNet/DRUNet).

Why a wrapper and not a new network: the shipped blind UNet took tens of
thousands of CPU steps; `from_blind` turns its weights into this model's
exactly (the extra input channel's weights start at zero, so the output is the
blind model's until training teaches it to read sigma), so a session can train
the conditioning instead of the whole denoiser again.

The map enters where the image does: the first encoder convolution and the
full-resolution fuse convolution (``fuse_input``). Contract of the restore
pipeline: ``noise_conditioned = True``, ``forward(x, sigma)`` with sigma an
(N,) tensor in [0, 1] units; any H, W (the UNet pads to ``multiple``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from restore.models.blocks import ModelConfigError, ModelInputError
from restore.models.ffdnet import sigma_vector
from restore.models.unet import UNet

__all__ = ["CondUNet", "from_blind"]


class CondUNet(nn.Module):
    """Residual UNet on (image, noise-level map); ``unet_kwargs`` are `restore.models.unet.UNet`'s."""

    noise_conditioned = True

    def __init__(self, in_channels: int = 3, **unet_kwargs: Any) -> None:
        super().__init__()
        if unet_kwargs.get("keep_input", "none") != "none":
            raise ModelConfigError("CondUNet: keep_input must be 'none' (the impulse switch is for salt-and-pepper)")
        if not unet_kwargs.get("fuse_input", True):
            raise ModelConfigError("CondUNet: fuse_input must be true (the fuse conv reads the exact input pixels)")
        for key in ("out_channels", "residual"):  # fixed: a residual output with the input's channels
            unet_kwargs.pop(key, None)
        self.unet = UNet(in_channels=in_channels + 1, out_channels=in_channels, residual=False, **unet_kwargs)
        # residual learning, identity at start (what UNet(residual=True) does)
        last = self.unet._last_conv()
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        cfg = {k: v for k, v in self.unet.config.items() if k not in ("in_channels", "out_channels", "residual")}
        self.config = {"in_channels": in_channels, **cfg}
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.multiple = self.unet.multiple

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Denoise ``x`` (N x C x H x W in [0, 1]) at noise level ``sigma`` ((N,) in [0, 1] units)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelInputError(
                f"CondUNet: expected an N x {self.in_channels} x H x W tensor, got shape {tuple(x.shape)}"
            )
        n, _, h, w = x.shape
        level = sigma_vector(sigma, n, x).view(n, 1, 1, 1).expand(n, 1, h, w)
        return x + self.unet(torch.cat([x, level], dim=1))


def from_blind(blind: UNet) -> CondUNet:
    """A CondUNet that computes exactly what the residual ``blind`` UNet does, whatever sigma it is given."""
    cfg = dict(blind.config)
    if not cfg.get("residual") or cfg.get("keep_input") != "none" or not cfg.get("fuse_input"):
        raise ModelConfigError("from_blind: needs a residual UNet with fuse_input and keep_input='none'")
    c = cfg.pop("in_channels")
    for key in ("out_channels", "residual"):
        cfg.pop(key)
    cond = CondUNet(in_channels=c, **cfg)
    src = blind.state_dict()
    new = {}
    for k, v in cond.unet.state_dict().items():
        if v.shape == src[k].shape:
            new[k] = src[k]
        elif v.dim() == 4 and v.shape[1] == src[k].shape[1] + 1 and v.shape[2:] == src[k].shape[2:]:
            # a conv that reads the input (first encoder conv, fuse conv): the map is its last input
            # channel, whose weights start at zero
            new[k] = torch.cat([src[k], torch.zeros_like(v[:, :1])], dim=1)
        else:
            raise ModelConfigError(f"from_blind: {k} is {tuple(src[k].shape)} in the UNet, {tuple(v.shape)} here")
    cond.unet.load_state_dict(new, strict=True)
    return cond
