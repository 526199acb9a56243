"""PatchGAN discriminator (pix2pix ``NLayerDiscriminator``).

Shared by the denoiser, the (conditional) colorizer and, with spectral norm,
available to the inpainter. It classifies overlapping patches instead of the
whole image: each output logit sees a ``receptive_field()`` x
``receptive_field()`` window (70 for the default ``n_layers=3``), which models
high-frequency realism while the L1 term handles low frequencies.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from restore.models.blocks import (
    ConvNormAct,
    ModelConfigError,
    ModelInputError,
    _check_choice,
    _check_positive,
    _conv,
    init_weights,
    receptive_field,
)

__all__ = ["PatchGAN"]


class PatchGAN(nn.Module):
    """pix2pix PatchGAN: 4x4 convs, stride 2 except the last two, LeakyReLU(0.2).

    Args:
        in_channels: channels of what the discriminator judges (for a
            conditional GAN, the task concatenates condition and image, e.g.
            L + ab = 3).
        base_channels: width of the first layer; later layers double up to
            ``8 * base_channels``.
        n_layers: number of stride-2 layers after the first; 3 gives the
            classic 70x70 receptive field.
        norm: ``batch`` | ``instance`` | ``group`` | ``none``; never on the
            first layer (it sees raw pixels) nor on the output layer.
        spectral_norm: wrap every conv in spectral normalisation (stabilises
            the discriminator; usually combined with ``norm="none"``).
        init: weight init scheme; pix2pix's N(0, 0.02) by default.

    ``forward`` returns raw logits of shape ``N x 1 x h x w`` (losses apply the
    sigmoid / hinge themselves).
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        n_layers: int = 3,
        norm: str = "batch",
        spectral_norm: bool = False,
        init: str = "normal",
    ) -> None:
        super().__init__()
        _check_positive("PatchGAN", "in_channels", in_channels)
        _check_positive("PatchGAN", "base_channels", base_channels)
        _check_positive("PatchGAN", "n_layers", n_layers)
        _check_choice("PatchGAN", "norm", norm, ("batch", "instance", "group", "none"))
        _check_choice("PatchGAN", "init", init, ("normal", "xavier", "kaiming", "orthogonal"))
        if n_layers > 8:
            raise ModelConfigError(f"PatchGAN: n_layers={n_layers} is too deep (max 8)")
        self.config = {
            "in_channels": in_channels,
            "base_channels": base_channels,
            "n_layers": n_layers,
            "norm": norm,
            "spectral_norm": bool(spectral_norm),
            "init": init,
        }
        self.in_channels = in_channels
        sn = bool(spectral_norm)
        layers: list[nn.Module] = [
            ConvNormAct(in_channels, base_channels, 4, 2, 1, norm="none", act="leaky", spectral_norm=sn)
        ]
        prev = base_channels
        for n in range(1, n_layers):
            width = base_channels * min(2**n, 8)
            layers.append(ConvNormAct(prev, width, 4, 2, 1, norm=norm, act="leaky", spectral_norm=sn))
            prev = width
        width = base_channels * min(2**n_layers, 8)
        layers.append(ConvNormAct(prev, width, 4, 1, 1, norm=norm, act="leaky", spectral_norm=sn))
        layers.append(_conv(width, 1, 4, 1, 1, 1, True, sn, "zeros"))
        self.model = nn.Sequential(*layers)
        self.n_strided = n_layers
        init_weights(self, init)

    def receptive_field(self) -> int:
        """Side of the input window each output logit sees (70 for ``n_layers=3``)."""
        return receptive_field(self.model)

    def min_input_size(self) -> int:
        """Smallest H/W that yields at least one output logit.

        Each stride-2 4x4 conv (padding 1) maps H to floor(H/2); the two
        stride-1 4x4 convs each remove one pixel, so we need
        ``floor(H / 2**n_layers) >= 3``.
        """
        return 3 * 2**self.n_strided

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelInputError(
                f"PatchGAN: expected an N x {self.in_channels} x H x W tensor, got shape {tuple(x.shape)}"
            )
        smallest = self.min_input_size()
        if min(x.shape[-2:]) < smallest:
            raise ModelInputError(
                f"PatchGAN: input of size {x.shape[-2]}x{x.shape[-1]} is too small for "
                f"n_layers={self.n_strided} (needs at least {smallest}x{smallest}); "
                "use larger patches or fewer layers"
            )
        return self.model(x)
