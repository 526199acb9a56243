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

Two heads (issue 22 asks whether a confidence-aware output beats plain
regression): ``head="regression"`` predicts a/b directly (trained with L1);
``head="bins"`` is Zhang et al. 2016's: logits over the Q a/b cells of a
10-unit grid that hold an sRGB colour (`gamut_bins`), trained with
cross-entropy against soft-encoded targets, and decoded by the *annealed
mean* (softmax of logits / T, T = 0.38, then the mean bin): between the mean
(T = 1, greyish where colours are ambiguous) and the mode (T -> 0, saturated
but blotchy). Both return the same a/b, so restoring needs no change.
`bins_from_regression` starts a bins head from a trained regression head.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restore.models.blocks import ConvNormAct, ModelInputError, crop_padding, pad_to_multiple
from restore.models.squeezenet import SqueezeNet, layer_channels, load_squeezenet, preprocess

__all__ = ["HEADS", "SqueezeColorizer", "annealed_mean", "bins_from_regression", "gamut_bins", "gray_of_lightness"]

#: Smallest side the backbone accepts (smaller inputs are padded, then cropped back).
MIN_SIDE = 32
#: Backbone features fused into the decoder, coarse to fine, and their strides.
_TAPS = (("fire9", 16), ("fire5", 8), ("fire3", 4), ("conv1", 2))
#: output heads: a/b directly, or Zhang et al.'s distribution over a/b bins
HEADS = ("regression", "bins")
#: the bins head's grid: cell side and extent (CIELAB units; Zhang et al. 2016 use 10 and +-110)
BIN_STEP = 10.0
BIN_LIMIT = 110.0
#: a/b the network's outputs are divided by (the package's ``AB_SCALE``; kept here so the model stands alone)
_AB_SCALE = 110.0
#: Zhang et al.'s annealed-mean temperature
ANNEAL_T = 0.38


def gamut_bins(step: float = BIN_STEP, limit: float = BIN_LIMIT) -> Tensor:
    """Centres (Q x 2, CIELAB a/b units) of the grid cells whose centre is an sRGB colour at some L.

    Zhang et al. kept the 313 cells of a 10-unit grid that ImageNet's pixels
    occupy; without ImageNet's pixels, this keeps the cells whose centre lies
    in the sRGB gamut (D65) for at least one lightness in 0.5 .. 99.5 - the
    colours an output can show. Computed in float64 with numpy (the same
    values on every device, also when a model is built on the meta device).
    """
    if step <= 0 or limit < step:
        raise ValueError(f"gamut_bins: need 0 < step <= limit, got step={step}, limit={limit}")
    centres = np.arange(-np.floor(limit / step), np.floor(limit / step) + 1) * step
    a, b = np.meshgrid(centres, centres, indexing="ij")
    L = np.arange(0.5, 100.0, 0.5)[:, None, None]
    fy = (L + 16.0) / 116.0
    fx, fz = fy + a[None] / 500.0, fy - b[None] / 200.0

    def finv(f: np.ndarray) -> np.ndarray:
        return np.where(f > 6.0 / 29.0, f**3, 3.0 * (6.0 / 29.0) ** 2 * (f - 4.0 / 29.0))

    x, y, z = 0.95047 * finv(fx), finv(fy) * np.ones_like(fx), 1.08883 * finv(fz)
    rgb = np.stack([3.2404542 * x - 1.5371385 * y - 0.4985314 * z,
                    -0.9692660 * x + 1.8760108 * y + 0.0415560 * z,
                    0.0556434 * x - 0.2040259 * y + 1.0572252 * z])  # linear sRGB: 3 x L x A x B
    inside = ((rgb >= 0.0) & (rgb <= 1.0)).all(axis=0).any(axis=0)
    return torch.tensor(np.stack([a[inside], b[inside]], axis=1), dtype=torch.float32)


def annealed_mean(logits: Tensor, bins: Tensor, temperature: float = ANNEAL_T) -> Tensor:
    """Zhang et al.'s decoding: NQHW logits over Q bins (Q x 2) -> N2HW, the mean bin under softmax(logits / T).

    T = 1 is the distribution's mean (desaturated where it is multimodal), T -> 0
    its mode; Zhang et al. chose T = 0.38. Differentiable (training feeds it to
    the adversarial and perceptual losses).
    """
    if logits.dim() != 4 or bins.dim() != 2 or bins.shape[1] != 2 or logits.shape[1] != bins.shape[0]:
        raise ModelInputError(f"annealed_mean: expected NQHW logits and Q x 2 bins, got {tuple(logits.shape)} "
                              f"and {tuple(bins.shape)}")
    if not temperature > 0:
        raise ModelInputError(f"annealed_mean: temperature must be > 0, got {temperature}")
    p = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("nqhw,qc->nchw", p, bins.float().to(p.device))


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
    """L -> a/b with a frozen SqueezeNet 1.1 encoder; ``widths`` are the decoder's channels at /16, /8, /4, /2.

    ``head``: "regression" (a/b, tanh) or "bins" (logits over `gamut_bins`, decoded by the annealed mean
    at ``anneal_t``; the bins are a buffer, in units of a/b / 110).
    """

    multiple = 16

    def __init__(self, widths: tuple[int, ...] | list[int] = (96, 64, 48, 32), global_fusion: bool = True,
                 head: str = "regression", anneal_t: float = ANNEAL_T) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"SqueezeColorizer: widths must be 4 positive channel counts (/16 .. /2), got {widths}")
        if head not in HEADS:
            raise ValueError(f"SqueezeColorizer: head must be one of {', '.join(HEADS)}, got {head!r}")
        if isinstance(anneal_t, bool) or not isinstance(anneal_t, (int, float)) or not anneal_t > 0:
            raise ValueError(f"SqueezeColorizer: anneal_t must be a number > 0, got {anneal_t!r}")
        self.head, self.anneal_t = head, float(anneal_t)
        self.config = {"widths": list(widths), "global_fusion": bool(global_fusion)}
        if head != "regression":  # a regression model's config stays what cards written before heads recorded
            self.config.update(head=head, anneal_t=self.anneal_t)
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
        if head == "bins":
            self.register_buffer("ab_bins", gamut_bins() / _AB_SCALE)
        self.out = nn.Conv2d(widths[3], self.n_outputs, 3, padding=1)

    @property
    def n_outputs(self) -> int:
        """Channels of the last convolution: 2 (a/b) or the number of bins."""
        return 2 if self.head == "regression" else int(self.ab_bins.shape[0])

    def load_backbone(self, path: str | None = None) -> "SqueezeColorizer":
        """Fill the frozen encoder with the converted ImageNet weights (training; a card's file has them)."""
        self.backbone.load_state_dict(load_squeezenet("fire9", path).state_dict())
        self.backbone.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "SqueezeColorizer":
        super().train(mode)
        self.backbone.eval()  # no dropout/BN in it, but keep the frozen part's mode fixed
        return self

    def forward(self, l_norm: Tensor, return_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """a/b / 110 (N2HW); with ``return_logits`` (bins head) also the bin logits at half resolution
        (NQ(H/2)(W/2), the padding cropped to the nearest half pixel) that the cross-entropy is taken on."""
        if return_logits and self.head != "bins":
            raise ModelInputError("SqueezeColorizer: return_logits needs head='bins'")
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
        y = self.out(d)
        if self.head == "regression":
            return crop_padding(torch.tanh(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)), pad)
        ab = F.interpolate(annealed_mean(y, self.ab_bins, self.anneal_t).to(y.dtype), scale_factor=2,
                           mode="bilinear", align_corners=False)
        ab = crop_padding(ab, pad)
        if return_logits:
            return ab, crop_padding(y, tuple(p // 2 for p in pad))  # type: ignore[arg-type]
        return ab


@torch.no_grad()
def bins_from_regression(model: SqueezeColorizer, anneal_t: float = ANNEAL_T) -> SqueezeColorizer:
    """A bins-head colorizer that starts where a trained regression colorizer is.

    Every layer but the last is copied. The last gives bin q the logit
    ``(c_q . y - |c_q|^2 / 2) / s^2``, ``y`` being the regression head's
    pre-tanh a/b and ``c_q`` the bin centre: softmax(logits / T) is then a
    Gaussian over the bins centred on ``y`` with a standard deviation of one
    bin (``s^2 T`` = step^2), so the annealed mean starts at about the
    regression output (exactly, away from the gamut's edge and where tanh is
    near linear) and training changes the decoding, not the starting point.
    """
    if not isinstance(model, SqueezeColorizer) or model.head != "regression":
        raise ValueError("bins_from_regression: expected a SqueezeColorizer with head='regression'")
    cfg = model.config
    new = SqueezeColorizer(cfg["widths"], cfg["global_fusion"], head="bins", anneal_t=anneal_t)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("out.")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"out.weight", "out.bias", "ab_bins"}:
        raise ValueError(f"bins_from_regression: state mismatch (missing {missing}, unexpected {unexpected})")
    bins = new.ab_bins.double()
    s2 = (BIN_STEP / _AB_SCALE) ** 2 / new.anneal_t
    new.out.weight.copy_(torch.einsum("qc,cihw->qihw", bins, model.out.weight.double()) / s2)
    new.out.bias.copy_((bins @ model.out.bias.double() - 0.5 * (bins**2).sum(1)) / s2)
    return new.to(model.out.weight.device).train(model.training)
