"""Building blocks shared by the generators and discriminators.

Everything here is small and composable: conv-norm-activation stacks,
spectral-norm convolutions, gated convolutions (DeepFill v2), SAGAN-style
self-attention, and the pad-to-stride / crop-back helpers that let every
model accept any image size without silently changing it (LaMa's
``pad_out_to_modulo`` idea).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restore.tiling import reflect_pad

__all__ = [
    "ModelConfigError",
    "ModelInputError",
    "NORMS",
    "ACTIVATIONS",
    "make_norm",
    "make_activation",
    "ConvNormAct",
    "spectral_norm_conv",
    "GatedConv2d",
    "GatedUpConv2d",
    "SelfAttention",
    "pad_to_multiple",
    "crop_padding",
    "receptive_field",
    "init_weights",
    "count_parameters",
]

NORMS = ("batch", "instance", "group", "none")
ACTIVATIONS = ("relu", "leaky", "gelu", "elu", "silu", "none")
PAD_MODES = ("reflect", "replicate", "constant")


class ModelConfigError(ValueError):
    """A model or block was constructed with an invalid argument."""


class ModelInputError(ValueError):
    """A model received a tensor it cannot process (wrong rank, channels, size)."""


def _check_choice(owner: str, name: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ModelConfigError(f"{owner}: {name}={value!r} is not one of {', '.join(choices)}")


def _check_positive(owner: str, name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(f"{owner}: {name} must be a positive integer, got {value!r}")


def make_norm(norm: str, channels: int) -> nn.Module:
    """Normalisation layer by name.

    Instance norm is affine (a learned scale/shift costs nothing and lets the
    layer undo the normalisation where it hurts); group norm uses up to 32
    groups, the largest count that divides ``channels``, so it works for any
    width.
    """
    _check_choice("make_norm", "norm", norm, NORMS)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        groups = math.gcd(32, channels)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def make_activation(act: str, inplace: bool = True) -> nn.Module:
    """Activation by name; ``leaky`` is LeakyReLU(0.2), the GAN convention.

    ``inplace=False`` is needed where the input is a view that autograd must
    keep (e.g. one half of a split).
    """
    _check_choice("make_activation", "act", act, ACTIVATIONS)
    if act == "relu":
        return nn.ReLU(inplace=inplace)
    if act == "leaky":
        return nn.LeakyReLU(0.2, inplace=inplace)
    if act == "gelu":
        return nn.GELU()
    if act == "elu":
        return nn.ELU(inplace=inplace)
    if act == "silu":
        return nn.SiLU(inplace=inplace)
    return nn.Identity()


def _same_padding(kernel_size: int, dilation: int) -> int:
    return dilation * (kernel_size - 1) // 2


def spectral_norm_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int | None = None,
    dilation: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
) -> nn.Conv2d:
    """A Conv2d whose weight is spectrally normalised (Miyato et al. 2018).

    Uses the parametrization API, so the module stays a plain ``nn.Conv2d``
    (receptive-field code and ``deepcopy`` for EMA keep working) and the state
    dict holds only tensors (safetensors-friendly). ``padding=None`` keeps the
    spatial size for stride 1.
    """
    if padding is None:
        padding = _same_padding(kernel_size, dilation)
    return _conv(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, True, padding_mode)


def _conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    bias: bool,
    spectral_norm: bool,
    padding_mode: str,
) -> nn.Conv2d:
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        bias=bias,
        padding_mode=padding_mode,
    )
    return nn.utils.parametrizations.spectral_norm(conv) if spectral_norm else conv


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation, the unit every encoder/decoder is made of.

    ``bias=None`` drops the conv bias when a norm follows (the norm's shift
    makes it redundant, as in pix2pix). ``padding=None`` means "same" padding
    for stride 1 (and exact halving for even kernels with stride 2 and
    padding ``(k-2)//2``, which callers pass explicitly).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        norm: str = "none",
        act: str = "relu",
        bias: bool | None = None,
        spectral_norm: bool = False,
        padding_mode: str = "zeros",
    ) -> None:
        _check_choice("ConvNormAct", "norm", norm, NORMS)
        _check_choice("ConvNormAct", "act", act, ACTIVATIONS)
        if padding is None:
            padding = _same_padding(kernel_size, dilation)
        if bias is None:
            bias = norm == "none"
        super().__init__(
            _conv(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation,
                bias,
                spectral_norm,
                padding_mode,
            ),
            make_norm(norm, out_channels),
            make_activation(act),
        )


class GatedConv2d(nn.Module):
    """Gated convolution (Yu et al., DeepFill v2): ``act(features) * sigmoid(gate)``.

    One convolution produces ``2 * out_channels`` maps that are split into
    features and a soft, learned per-pixel/per-channel gate. The gate lets the
    network learn which positions are valid (known pixels) vs. holes, instead
    of the hard rule of partial convolutions. ``act="none"`` gives gated linear
    outputs (used before an output non-linearity).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        padding: int | None = None,
        act: str = "elu",
        norm: str = "none",
        spectral_norm: bool = False,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        _check_positive("GatedConv2d", "in_channels", in_channels)
        _check_positive("GatedConv2d", "out_channels", out_channels)
        _check_positive("GatedConv2d", "kernel_size", kernel_size)
        _check_positive("GatedConv2d", "stride", stride)
        _check_positive("GatedConv2d", "dilation", dilation)
        _check_choice("GatedConv2d", "act", act, ACTIVATIONS)
        _check_choice("GatedConv2d", "norm", norm, NORMS)
        if padding is None:
            padding = _same_padding(kernel_size, dilation)
        self.out_channels = out_channels
        self.conv = _conv(
            in_channels,
            2 * out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            norm == "none",
            spectral_norm,
            padding_mode,
        )
        # The norm acts on the features only: normalising the gate would fight
        # the sigmoid's job of saying "this position is invalid".
        self.norm = make_norm(norm, out_channels)
        self.act = make_activation(act, inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        features, gate = self.conv(x).split(self.out_channels, dim=1)
        return self.act(self.norm(features)) * torch.sigmoid(gate)


class GatedUpConv2d(nn.Module):
    """Upsample x``scale`` (nearest or bilinear) then a gated convolution.

    Resize-then-convolve instead of a transposed convolution avoids the
    checkerboard artefacts that are especially visible inside filled holes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        scale: int = 2,
        mode: str = "nearest",
        act: str = "elu",
        norm: str = "none",
        spectral_norm: bool = False,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        _check_choice("GatedUpConv2d", "mode", mode, ("nearest", "bilinear"))
        _check_positive("GatedUpConv2d", "scale", scale)
        self.scale = scale
        self.mode = mode
        self.conv = GatedConv2d(
            in_channels,
            out_channels,
            kernel_size,
            act=act,
            norm=norm,
            spectral_norm=spectral_norm,
            padding_mode=padding_mode,
        )

    def forward(self, x: Tensor) -> Tensor:
        align = False if self.mode == "bilinear" else None
        x = F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=align)
        return self.conv(x)


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019) with a learned residual weight.

    Query and key are 1x1 projections to ``channels // reduction`` maps, the
    value keeps ``channels``; attention is a softmax over all key positions and
    the block returns ``x + gamma * attended``. ``gamma`` starts at 0, so the
    block is the identity at initialisation and the network learns how much
    non-local context to use (the SAGAN recipe for stable training).

    ``kv_pool`` max-pools keys/values (BigGAN's trick) to cut the N x N memory
    by ``kv_pool**2``. ``forward(x, hole=...)`` optionally forbids attending to
    hole positions (1 = hole), which turns the block into a learned,
    differentiable stand-in for DeepFill's contextual attention: filled pixels
    borrow features from the known region. Samples with no known key fall back
    to attending everywhere instead of producing NaNs.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 8,
        kv_pool: int = 1,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_positive("SelfAttention", "channels", channels)
        _check_positive("SelfAttention", "reduction", reduction)
        _check_positive("SelfAttention", "kv_pool", kv_pool)
        inner = max(1, channels // reduction)
        self.channels = channels
        self.inner = inner
        self.kv_pool = kv_pool
        self.query = _conv(channels, inner, 1, 1, 0, 1, True, spectral_norm, "zeros")
        self.key = _conv(channels, inner, 1, 1, 0, 1, True, spectral_norm, "zeros")
        self.value = _conv(channels, channels, 1, 1, 0, 1, True, spectral_norm, "zeros")
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, hole: Tensor | None = None) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ModelInputError(
                f"SelfAttention: expected an N{self.channels}HW tensor, got shape {tuple(x.shape)}"
            )
        n, c, h, w = x.shape
        q = self.query(x).flatten(2)  # N, C', HW
        k = self.key(x)
        v = self.value(x)
        pool = self.kv_pool if min(h, w) >= self.kv_pool else 1
        if pool > 1:
            k = F.max_pool2d(k, pool, ceil_mode=True)
            v = F.max_pool2d(v, pool, ceil_mode=True)
        k = k.flatten(2)  # N, C', M
        v = v.flatten(2)  # N, C, M
        # Scaled dot product: keeps logits O(1) as the projection width grows,
        # which matters under mixed precision.
        energy = torch.bmm(q.transpose(1, 2), k) / math.sqrt(self.inner)  # N, HW, M
        if hole is not None:
            if hole.dim() != 4 or hole.shape[0] != n:
                raise ModelInputError(
                    f"SelfAttention: hole mask must be N1HW with N={n}, got shape {tuple(hole.shape)}"
                )
            if hole.shape[-2:] != (h, w):
                # Masks come at image resolution; "nearest" would drop thin
                # strokes, so a feature cell is a hole if any pixel in it is. An exact stride pools the
                # same cells with a fixed window, which an exported graph (restore.export) can do at any size.
                fh, fw = int(hole.shape[-2]) // int(h), int(hole.shape[-1]) // int(w)
                if (fh * h, fw * w) == tuple(hole.shape[-2:]):
                    hole = F.max_pool2d(hole.float(), (fh, fw))
                else:
                    hole = F.adaptive_max_pool2d(hole.float(), (h, w))
            hole = hole[:, :1].to(energy.dtype)
            if pool > 1:
                # A pooled key is "known" only if every pixel under it is known.
                hole = F.max_pool2d(hole, pool, ceil_mode=True)
            known = hole.flatten(2) < 0.5  # N, 1, M
            has_known = known.any(dim=2, keepdim=True)  # N, 1, 1
            allowed = known | ~has_known
            energy = energy.masked_fill(~allowed, torch.finfo(energy.dtype).min)
        attn = torch.softmax(energy, dim=-1)
        out = torch.bmm(v, attn.transpose(1, 2)).view(n, c, h, w)
        return x + self.gamma * out


def pad_to_multiple(
    x: Tensor, multiple: int, mode: str = "reflect", value: float = 0.0
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Pad H and W of ``x`` (..., H, W) up to multiples of ``multiple``.

    The padding is split between both sides (top/bottom, left/right) so the
    image stays centred in the network's receptive field. ``reflect`` padding
    is applied repeatedly when the pad is larger than the image allows (mirror
    of the mirror, as needed for e.g. a 5x5 image into a 256-stride network)
    and falls back to ``replicate`` along a dimension of size 1, where there
    is nothing to reflect. Returns the padded tensor and
    ``(top, bottom, left, right)`` for :func:`crop_padding`.
    """
    _check_choice("pad_to_multiple", "mode", mode, PAD_MODES)
    _check_positive("pad_to_multiple", "multiple", multiple)
    if x.dim() < 3:
        raise ModelInputError(
            f"pad_to_multiple: expected a (..., H, W) tensor with at least 3 dims, got shape {tuple(x.shape)}"
        )
    h, w = x.shape[-2:]
    if h == 0 or w == 0:
        raise ModelInputError(f"pad_to_multiple: empty image of size {h}x{w}")
    ph = (-h) % multiple
    pw = (-w) % multiple
    top, left = ph // 2, pw // 2
    pads = (top, ph - top, left, pw - left)
    if ph == 0 and pw == 0:
        return x, pads
    # F.pad's reflect/replicate need a batch dimension for 3D/4D inputs of
    # every dtype; normalise to 4D and restore the shape afterwards.
    shape = x.shape
    y = x.reshape(-1, 1, h, w) if x.dim() != 4 else x
    if mode == "constant":
        y = F.pad(y, (pads[2], pads[3], pads[0], pads[1]), mode="constant", value=value)
    elif mode == "replicate":
        y = F.pad(y, (pads[2], pads[3], pads[0], pads[1]), mode="replicate")
    else:
        y = reflect_pad(y, *pads)
    if x.dim() != 4:
        y = y.reshape(*shape[:-2], y.shape[-2], y.shape[-1])
    return y, pads


def crop_padding(x: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple`: crop ``(top, bottom, left, right)`` from H/W."""
    top, bottom, left, right = pads
    h, w = x.shape[-2:]
    if top + bottom > h or left + right > w or min(pads) < 0:
        raise ModelInputError(f"crop_padding: cannot crop pads {pads} from a {h}x{w} tensor")
    return x[..., top : h - bottom, left : w - right]


def receptive_field(module: nn.Module) -> int:
    """Receptive field (pixels, one side) of a plain chain of convolutions.

    Walks the ``nn.Conv2d`` layers in registration order and accumulates
    ``rf += (k - 1) * dilation * jump; jump *= stride``. Valid for sequential
    feature extractors such as PatchGAN discriminators, not for UNets.
    """
    rf, jump = 1, 1
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0]
            rf += (k - 1) * layer.dilation[0] * jump
            jump *= layer.stride[0]
    return rf


def init_weights(module: nn.Module, scheme: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights in place (pix2pix's ``init_weights``).

    ``normal``: N(0, gain) (pix2pix / DCGAN default for GANs); ``xavier``,
    ``kaiming`` (fan-in, for ReLU nets without normalisation) and
    ``orthogonal``. Norm layers get weight N(1, gain) / bias 0 for ``normal``
    and 1/0 otherwise. Spectral-norm convs are initialised through their
    unnormalised ``original`` weight. Returns the module for chaining.
    """
    _check_choice("init_weights", "scheme", scheme, ("normal", "xavier", "kaiming", "orthogonal"))
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            with torch.no_grad():
                if scheme == "normal":
                    nn.init.normal_(weight, 0.0, gain)
                elif scheme == "xavier":
                    nn.init.xavier_normal_(weight, gain=1.0)
                elif scheme == "kaiming":
                    nn.init.kaiming_normal_(weight, a=0.0, mode="fan_in", nonlinearity="relu")
                else:
                    nn.init.orthogonal_(weight, gain=1.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            if hasattr(m, "parametrizations"):
                _refresh_spectral_norm(m)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None:
            with torch.no_grad():
                if scheme == "normal":
                    nn.init.normal_(m.weight, 1.0, gain)
                else:
                    nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return module


def _refresh_spectral_norm(module: nn.Module) -> None:
    """Re-run the power iteration after the weight was re-initialised.

    Otherwise the stored singular vectors belong to the old weight and the
    first training steps divide by a wrong sigma (and ``eval()`` models would
    keep using it). Uses the parametrization's own power method when this
    torch version has it; otherwise the vectors converge during training.
    """
    for p in module.parametrizations.weight:
        power = getattr(p, "_power_method", None)
        reshape = getattr(p, "_reshape_weight_to_matrix", None)
        if power is not None and reshape is not None and getattr(p, "n_power_iterations", 0) > 0:
            with torch.no_grad():
                power(reshape(module.parametrizations.weight.original), 15)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, for model cards and reports."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
