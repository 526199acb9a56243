"""A colorizer that knows what it sees (issue 22): frozen ImageNet SqueezeNet encoder + trainable decoder.

Trained from scratch on a few dozen photos, a UNet cannot learn what a cat or a
meadow is, so it paints hues it cannot justify (the shipped ``colorize`` is
worse than gray on held-out a/b error). DeOldify and ChromaGAN start from an
ImageNet encoder instead; this model does the same with the SqueezeNet 1.1
that installs offline (`restore.models.squeezenet`):

* the L channel is turned into the neutral sRGB gray of that lightness,
  replicated to three channels and Caffe-preprocessed, and run through the
  frozen backbone up to ``fire9``;
* its features at strides 2, 4, 8 and 16 (``conv1``, ``fire3``, ``fire5``,
  ``fire9``) are projected by 1x1 convolutions and fused into a small
  UNet-style decoder, with the globally pooled ``fire9`` vector broadcast at
  the coarsest level (Iizuka et al.'s global fusion: scene-level colour cues);
* the decoder ends at half resolution (with two convolutions on L itself at
  that scale for edges) and its a/b are upsampled bilinearly: colour is
  low-frequency (Zhang et al. predict a/b at a quarter of the resolution), the
  restore path keeps the input's own full-resolution L, and dropping the
  full-resolution level halves the CPU cost of a training step.

Only the decoder and fusion layers train. The call is the one every
colorizer of this package has: ``model(l_norm)`` with ``l_norm = L/50 - 1``
(N1HW, any H/W) returns ``ab/110`` (N2HW, same size, tanh range). The backbone
weights are part of the state dict (the file is self-contained); the
constructor builds them empty and `load_backbone` fills them for training.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restore.models.blocks import ConvNormAct, ModelInputError, crop_padding, pad_to_multiple
from restore.models.squeezenet import SqueezeNet, layer_channels, load_squeezenet, preprocess

__all__ = ["SqueezeColorizer", "gray_of_lightness"]

#: Smallest side the backbone accepts (smaller inputs are padded, then cropped back).
MIN_SIDE = 32
#: Backbone features fused into the decoder, coarse to fine, and their strides.
_TAPS = (("fire9", 16), ("fire5", 8), ("fire3", 4), ("conv1", 2))


def gray_of_lightness(l_norm: Tensor) -> Tensor:
    """Normalised L (``L/50 - 1``) -> the sRGB value in [0, 1] of the neutral gray of that CIELAB lightness."""
    L = (l_norm.float() + 1.0) * 50.0
    fy = (L + 16.0) / 116.0
    y = torch.where(fy > 6.0 / 29.0, fy**3, (fy - 4.0 / 29.0) * 3.0 * (6.0 / 29.0) ** 2)
    y = y.clamp(0.0, 1.0)
    return torch.where(y <= 0.0031308, 12.92 * y, 1.055 * y.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


class _Block(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(ConvNormAct(in_ch, out_ch, 3, norm="group", act="leaky"),
                         ConvNormAct(out_ch, out_ch, 3, norm="group", act="leaky"))


class SqueezeColorizer(nn.Module):
    """L -> a/b with a frozen SqueezeNet 1.1 encoder; ``widths`` are the decoder's channels at /16, /8, /4, /2."""

    multiple = 16

    def __init__(self, widths: tuple[int, ...] | list[int] = (96, 64, 48, 32), global_fusion: bool = True) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"SqueezeColorizer: widths must be 4 positive channel counts (/16 .. /2), got {widths}")
        self.config = {"widths": list(widths), "global_fusion": bool(global_fusion)}
        self.backbone = SqueezeNet(upto="fire9")
        self.backbone.requires_grad_(False)
        self.proj = nn.ModuleDict({name: nn.Conv2d(layer_channels(name), w, 1)
                                   for (name, _), w in zip(_TAPS, widths[:4])})
        self.global_fc = nn.Linear(layer_channels("fire9"), widths[0]) if global_fusion else None
        self.head16 = _Block(widths[0] * (2 if global_fusion else 1), widths[0])
        self.up = nn.ModuleList()
        for i in range(1, 4):  # /8, /4, /2: upsampled coarser decoder + projected tap
            self.up.append(_Block(widths[i - 1] + widths[i], widths[i]))
        self.stem = nn.Sequential(ConvNormAct(1, 16, 3, stride=2, padding=1, act="leaky"),
                                  ConvNormAct(16, 16, 3, act="leaky"))
        self.final = ConvNormAct(widths[3] + 16, widths[3], 3, norm="group", act="leaky")
        self.out = nn.Conv2d(widths[3], 2, 3, padding=1)

    def load_backbone(self, path: str | None = None) -> "SqueezeColorizer":
        """Fill the frozen encoder with the converted ImageNet weights (training; a card's file has them)."""
        self.backbone.load_state_dict(load_squeezenet("fire9", path).state_dict())
        self.backbone.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "SqueezeColorizer":
        super().train(mode)
        self.backbone.eval()  # no dropout/BN in it, but keep the frozen part's mode fixed
        return self

    def forward(self, l_norm: Tensor) -> Tensor:
        if l_norm.dim() != 4 or l_norm.shape[1] != 1:
            raise ModelInputError(f"SqueezeColorizer: expected normalised L as N1HW, got {tuple(l_norm.shape)}")
        x, pad = pad_to_multiple(l_norm, self.multiple)
        grow_h, grow_w = max(0, MIN_SIDE - x.shape[-2]), max(0, MIN_SIDE - x.shape[-1])
        if grow_h or grow_w:  # the backbone's valid conv and pools need 32 px to reach stride 16
            x = F.pad(x, (0, grow_w, 0, grow_h), mode="replicate")
            pad = (pad[0], pad[1] + grow_h, pad[2], pad[3] + grow_w)
        h, w = x.shape[-2:]
        with torch.no_grad():
            feats = self.backbone.features(preprocess(gray_of_lightness(x)), [name for name, _ in _TAPS])
        taps = {name: F.interpolate(self.proj[name](feats[name].to(x.dtype)), size=(h // s, w // s),
                                    mode="bilinear", align_corners=False)
                for name, s in _TAPS}
        d = taps["fire9"]
        if self.global_fc is not None:
            g = self.global_fc(feats["fire9"].to(x.dtype).mean(dim=(2, 3)))
            d = torch.cat([d, g[:, :, None, None].expand(-1, -1, d.shape[2], d.shape[3])], dim=1)
        d = self.head16(d)
        for block, (name, _) in zip(self.up, _TAPS[1:]):
            d = F.interpolate(d, scale_factor=2, mode="bilinear", align_corners=False)
            d = block(torch.cat([d, taps[name]], dim=1))
        d = self.final(torch.cat([d, self.stem(x)], dim=1))
        ab = F.interpolate(self.out(d), scale_factor=2, mode="bilinear", align_corners=False)
        return crop_padding(torch.tanh(ab), pad)
