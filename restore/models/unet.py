"""UNet generator shared by the photo denoiser and the colorizer.

One class covers both ends of the range the toolkit needs:

* the pix2pix "unet_256" colorization generator::

      UNet(1, 2, base_channels=64, depth=8, max_channels=512, norm="batch",
           dropout=0.5, residual=False, fuse_input=False, upsample="transpose",
           convs_per_level=0, out_activation="tanh", init="normal")

* a small CPU-friendly residual denoiser (the defaults, ~2.3 M parameters).

Encoder: stride-2 4x4 convolutions (learned downsampling, as in pix2pix), each
optionally followed by ``convs_per_level`` 3x3 convolutions. Decoder: x2
upsampling (bilinear/nearest + 3x3 conv, or a 4x4 transposed conv), skip
concatenation, the same optional 3x3 convs. With ``fuse_input`` the input
image is concatenated with the last full-resolution decoder features before
the output convolutions, so the prediction can use the exact input pixels
(important for residual denoising, where the network predicts the noise).
Any input size works: the input is reflection-padded to a multiple of
``2**depth`` and the output cropped back (LaMa ``pad_out_to_modulo``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restore.models.blocks import (
    ConvNormAct,
    ModelConfigError,
    ModelInputError,
    _check_choice,
    _check_positive,
    crop_padding,
    init_weights,
    make_activation,
    make_norm,
    pad_to_multiple,
)
from restore.models.fill import fill_impulses, impulse_mask

__all__ = ["KEEP_INPUT", "UNet"]

#: ``keep_input`` choices: which input pixels the UNet returns unchanged.
KEEP_INPUT = ("none", "impulse")

_UNET_NORMS = ("batch", "instance", "group", "none")


class _Up(nn.Module):
    """x2 upsampling followed by norm/act (and dropout), producing ``out`` channels."""

    def __init__(
        self, in_ch: int, out_ch: int, mode: str, norm: str, act: str, dropout: float
    ) -> None:
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            self.conv: nn.Module = nn.ConvTranspose2d(
                in_ch, out_ch, 4, stride=2, padding=1, bias=norm == "none"
            )
            self.post = nn.Sequential(make_norm(norm, out_ch), make_activation(act))
        else:
            self.conv = ConvNormAct(in_ch, out_ch, 3, norm=norm, act=act)
            self.post = nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.mode != "transpose":
            align = False if self.mode == "bilinear" else None
            x = F.interpolate(x, scale_factor=2, mode=self.mode, align_corners=align)
        return self.drop(self.post(self.conv(x)))


class UNet(nn.Module):
    """Configurable UNet (see the module docstring for the two reference setups).

    Args:
        in_channels / out_channels: image channels in and out.
        base_channels: width of the first (highest-resolution) level.
        depth: number of stride-2 downsamplings; inputs are padded to a
            multiple of ``2**depth``.
        channel_mult: per-level width multipliers (length ``depth``);
            default ``2**i`` capped by ``max_channels``.
        max_channels: cap on any level's width (pix2pix uses 512).
        norm: ``batch`` | ``instance`` | ``group`` | ``none``. As in pix2pix,
            the first encoder conv (raw pixels) and the innermost level (which
            may be 1x1, where instance/batch statistics are undefined) have no
            norm.
        dropout: dropout probability in ``dropout_layers`` decoder stages,
            counted from the one after the innermost up-conv (pix2pix: 0.5
            in 3 stages, its only noise source; its innermost up-conv has
            none).
        residual: predict a residual added to the input (needs
            ``in_channels == out_channels``); the final conv starts at zero so
            the untrained model is the identity. The sum is not clipped here:
            the task clips at inference, so training gradients stay intact.
        out_activation: ``none`` | ``sigmoid`` | ``tanh``, applied to the
            network's prediction (the residual when ``residual=True``, where
            ``sigmoid`` is refused because a residual must be able to be
            negative).
        fuse_input: concatenate the input image with the last decoder
            features before the output convolutions.
        upsample: ``bilinear`` | ``nearest`` (resize + 3x3 conv, no
            checkerboard) or ``transpose`` (4x4 transposed conv, pix2pix).
        convs_per_level: extra 3x3 conv-norm-act layers after every
            downsampling and after every skip concatenation.
        act: decoder activation (the encoder uses LeakyReLU(0.2), as pix2pix).
        init: weight init scheme (``kaiming`` works with and without norm;
            ``normal`` is pix2pix's N(0, 0.02)).
        pad_mode: how inputs are padded to the stride (``reflect`` default).
        keep_input: ``none`` | ``impulse``. ``impulse`` is the switching-filter
            rule for salt-and-pepper noise: pixels whose channels are all at 0
            or all at 1 (within half an 8-bit step) are treated as hits, first
            pre-filled by `fill_impulses` (the network then refines that
            estimate, residually when ``residual``) and finally take the
            network's value; every other pixel is returned exactly as it came
            in, since impulse noise leaves it untouched (needs
            ``in_channels == out_channels``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 32,
        depth: int = 4,
        channel_mult: Sequence[int] | None = None,
        max_channels: int | None = None,
        norm: str = "batch",
        dropout: float = 0.0,
        dropout_layers: int = 3,
        residual: bool = True,
        out_activation: str = "none",
        fuse_input: bool = True,
        upsample: str = "bilinear",
        convs_per_level: int = 1,
        act: str = "relu",
        init: str = "kaiming",
        pad_mode: str = "reflect",
        keep_input: str = "none",
    ) -> None:
        super().__init__()
        _check_positive("UNet", "in_channels", in_channels)
        _check_positive("UNet", "out_channels", out_channels)
        _check_positive("UNet", "base_channels", base_channels)
        _check_positive("UNet", "depth", depth)
        _check_choice("UNet", "norm", norm, _UNET_NORMS)
        _check_choice("UNet", "out_activation", out_activation, ("none", "sigmoid", "tanh"))
        _check_choice("UNet", "upsample", upsample, ("bilinear", "nearest", "transpose"))
        _check_choice("UNet", "act", act, ("relu", "leaky", "gelu", "elu", "silu"))
        _check_choice("UNet", "init", init, ("normal", "xavier", "kaiming", "orthogonal"))
        _check_choice("UNet", "pad_mode", pad_mode, ("reflect", "replicate", "constant"))
        _check_choice("UNet", "keep_input", keep_input, KEEP_INPUT)
        if keep_input != "none" and in_channels != out_channels:
            raise ModelConfigError(
                f"UNet: keep_input={keep_input!r} needs in_channels == out_channels "
                f"(got {in_channels} and {out_channels})"
            )
        if depth > 12:
            raise ModelConfigError(f"UNet: depth={depth} is unreasonably deep (max 12)")
        if not 0.0 <= float(dropout) < 1.0:
            raise ModelConfigError(f"UNet: dropout must be in [0, 1), got {dropout!r}")
        if isinstance(dropout_layers, bool) or not isinstance(dropout_layers, int) or dropout_layers < 0:
            raise ModelConfigError(f"UNet: dropout_layers must be an integer >= 0, got {dropout_layers!r}")
        if isinstance(convs_per_level, bool) or not isinstance(convs_per_level, int) or convs_per_level < 0:
            raise ModelConfigError(
                f"UNet: convs_per_level must be an integer >= 0, got {convs_per_level!r}"
            )
        if residual and in_channels != out_channels:
            raise ModelConfigError(
                f"UNet: residual=True needs in_channels == out_channels "
                f"(got {in_channels} and {out_channels}); use residual=False"
            )
        if residual and out_activation == "sigmoid":
            raise ModelConfigError(
                "UNet: out_activation='sigmoid' cannot produce a residual (it is never negative); "
                "use 'none' or 'tanh', or residual=False"
            )
        if max_channels is not None:
            _check_positive("UNet", "max_channels", max_channels)
        if channel_mult is None:
            widths = [base_channels * 2**i for i in range(depth)]
        else:
            mult = list(channel_mult)
            if len(mult) != depth or any(
                isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mult
            ):
                raise ModelConfigError(
                    f"UNet: channel_mult must hold {depth} positive integers (one per level), got {channel_mult!r}"
                )
            widths = [base_channels * m for m in mult]
        if max_channels is not None:
            widths = [min(wd, max_channels) for wd in widths]

        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_channels": base_channels,
            "depth": depth,
            "channel_mult": None if channel_mult is None else [int(m) for m in channel_mult],
            "max_channels": max_channels,
            "norm": norm,
            "dropout": float(dropout),
            "dropout_layers": dropout_layers,
            "residual": bool(residual),
            "out_activation": out_activation,
            "fuse_input": bool(fuse_input),
            "upsample": upsample,
            "convs_per_level": convs_per_level,
            "act": act,
            "init": init,
            "pad_mode": pad_mode,
            "keep_input": keep_input,
        }
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.widths = tuple(widths)
        self.residual = bool(residual)
        self.fuse_input = bool(fuse_input)
        self.pad_mode = pad_mode
        self.keep_input = keep_input
        self.multiple = 2**depth

        # Encoder: level i maps to resolution H / 2**(i+1) with widths[i] channels.
        self.encoder = nn.ModuleList()
        prev = in_channels
        for i, wd in enumerate(widths):
            innermost = i == depth - 1
            level_norm = "none" if (i == 0 or innermost) else norm
            layers: list[nn.Module] = [
                ConvNormAct(prev, wd, 4, stride=2, padding=1, norm=level_norm, act="leaky")
            ]
            extra_norm = "none" if innermost else norm
            layers += [
                ConvNormAct(wd, wd, 3, norm=extra_norm, act="leaky") for _ in range(convs_per_level)
            ]
            self.encoder.append(nn.Sequential(*layers))
            prev = wd

        # Decoder: stage j upsamples from level depth-1-j to the level above it
        # and fuses the skip connection; the last stage returns to full size.
        self.ups = nn.ModuleList()
        self.merges = nn.ModuleList()
        for j, i in enumerate(range(depth - 1, 0, -1)):
            target = widths[i - 1]
            p = dropout if 1 <= j <= dropout_layers else 0.0
            self.ups.append(_Up(prev, target, upsample, norm, act, p))
            merge: list[nn.Module] = []
            merge_in = 2 * target
            for _ in range(convs_per_level):
                merge.append(ConvNormAct(merge_in, target, 3, norm=norm, act=act))
                merge_in = target
            self.merges.append(nn.Sequential(*merge))
            prev = merge_in

        if fuse_input:
            # Full-resolution head: bring the features to H, fuse the input
            # image, then one 3x3 conv-act and the output conv. For resize
            # modes the fuse conv doubles as the up-conv (one full-resolution
            # conv instead of two: full-resolution convs dominate CPU time).
            head_width = widths[0]
            if upsample == "transpose":
                self.final_up: nn.Module = _Up(prev, head_width, upsample, "none", act, 0.0)
                up_width = head_width
            else:
                self.final_up = nn.Upsample(
                    scale_factor=2,
                    mode=upsample,
                    align_corners=False if upsample == "bilinear" else None,
                )
                up_width = prev
            self.fuse = ConvNormAct(up_width + in_channels, head_width, 3, norm="none", act=act)
            self.out_conv: nn.Module = nn.Conv2d(head_width, out_channels, 3, padding=1)
        else:
            # pix2pix outermost block: one x2 up-conv straight to the output.
            self.final_up = nn.Identity()
            self.fuse = nn.Identity()
            if upsample == "transpose":
                self.out_conv = nn.ConvTranspose2d(prev, out_channels, 4, stride=2, padding=1)
            else:
                self.out_conv = nn.Sequential(
                    nn.Upsample(
                        scale_factor=2,
                        mode=upsample,
                        align_corners=False if upsample == "bilinear" else None,
                    ),
                    nn.Conv2d(prev, out_channels, 3, padding=1),
                )
        if out_activation == "sigmoid":
            self.out_act: nn.Module = nn.Sigmoid()
        elif out_activation == "tanh":
            self.out_act = nn.Tanh()
        else:
            self.out_act = nn.Identity()

        init_weights(self, init)
        if self.residual:
            last = self._last_conv()
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def _last_conv(self) -> nn.Module:
        return [m for m in self.out_conv.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]

    def forward(self, x: Tensor) -> Tensor:
        """Map an ``N x in_channels x H x W`` tensor to ``N x out_channels x H x W``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelInputError(
                f"UNet: expected an N x {self.in_channels} x H x W tensor, got shape {tuple(x.shape)}"
            )
        x_in, hit = x, None
        if self.keep_input == "impulse":
            hit = impulse_mask(x)
            x_in = fill_impulses(x, hit)
        padded, pads = pad_to_multiple(x_in, self.multiple, mode=self.pad_mode)
        skips: list[Tensor] = []
        h = padded
        for level in self.encoder:
            h = level(h)
            skips.append(h)
        skips.pop()  # the innermost output is ``h`` itself
        for up, merge in zip(self.ups, self.merges):
            h = torch.cat([up(h), skips.pop()], dim=1)
            h = merge(h)
        if self.fuse_input:
            h = self.fuse(torch.cat([self.final_up(h), padded], dim=1))
        out = self.out_act(self.out_conv(h))
        out = crop_padding(out, pads)
        if self.residual:
            out = x_in + out
        if hit is not None:
            out = torch.where(hit, out, x)
        return out
