"""Gated-convolution inpainting: coarse-to-fine generator and SN-PatchGAN.

The generator follows DeepFill v2 (Yu et al., "Free-Form Image Inpainting with
Gated Convolution", 2019) with one substitution: the refinement stage's
contextual-attention branch is replaced by SAGAN self-attention restricted to
known positions (:class:`restore.models.blocks.SelfAttention` with a hole
mask). It is simpler, fully differentiable, and keeps the idea of filling a
hole by borrowing features from the known surroundings.

Conventions (docs/design.md): images in [0, 1], masks N1HW with 1 = hole.
Inside the network images live in [-1, 1] and holes are filled with
``fill_value`` (0.5, i.e. 0 in [-1, 1]: mid-gray, the value that carries no
colour bias) before anything sees them, so pixels under the hole never leak
into the prediction. Masks are binarised at 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from restore.models.blocks import (
    GatedConv2d,
    GatedUpConv2d,
    ModelConfigError,
    ModelInputError,
    SelfAttention,
    _check_choice,
    _check_positive,
    _conv,
    crop_padding,
    pad_to_multiple,
    receptive_field,
)
from restore.models.fill import push_pull_fill

#: ``prefill`` choices: what the holes hold before the network sees the image.
PREFILLS = ("constant", "pushpull")

__all__ = ["InpaintGenerator", "SNPatchGAN", "inpaint_around"]


class _Stage(nn.Module):
    """One gated encoder / dilated bottleneck / gated decoder network.

    Encoder: 5x5 gated conv, then two stride-2 gated convs (to 1/4 resolution)
    with a 3x3 gated conv after each; bottleneck at 1/4: ``pre`` plain gated
    convs, the dilated gated convs, optional self-attention, two more gated
    convs; decoder: two gated up-convolutions back to full resolution, a
    narrowing gated conv and a plain output conv with ``tanh``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        c: int,
        widths: tuple[int, int, int, int],
        pre: int,
        dilations: Sequence[int],
        attention: bool,
        kv_pool: int,
        act: str,
        upsample: str,
    ) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths  # after conv1, after down1, after down2's follower, bottleneck
        self.encoder = nn.Sequential(
            GatedConv2d(in_ch, c, 5, act=act),
            GatedConv2d(c, w1, 3, stride=2, act=act),
            GatedConv2d(w1, w2, 3, act=act),
            GatedConv2d(w2, w3, 3, stride=2, act=act),
            GatedConv2d(w3, w4, 3, act=act),
            *[GatedConv2d(w4, w4, 3, act=act) for _ in range(pre)],
            *[GatedConv2d(w4, w4, 3, dilation=d, act=act) for d in dilations],
        )
        self.attention = SelfAttention(w4, kv_pool=kv_pool) if attention else None
        self.decoder = nn.Sequential(
            GatedConv2d(w4, w4, 3, act=act),
            GatedConv2d(w4, w4, 3, act=act),
            GatedUpConv2d(w4, 2 * c, 3, mode=upsample, act=act),
            GatedConv2d(2 * c, 2 * c, 3, act=act),
            GatedUpConv2d(2 * c, c, 3, mode=upsample, act=act),
            GatedConv2d(c, max(1, c // 2), 3, act=act),
        )
        # The output conv is not gated: a gate would pull colours towards 0
        # (mid-gray) wherever it is unsure.
        self.out = nn.Conv2d(max(1, c // 2), out_ch, 3, padding=1)

    def forward(self, x: Tensor, hole: Tensor | None) -> Tensor:
        h = self.encoder(x)
        if self.attention is not None:
            h = self.attention(h, hole)
        return torch.tanh(self.out(self.decoder(h)))


class InpaintGenerator(nn.Module):
    """Coarse-to-fine gated-convolution inpainting generator.

    Args:
        in_channels: image channels + 1 mask channel (4 for RGB, 2 for gray).
            Internally a constant ones channel is added (DeepFill v2: it lets
            the network tell zero padding at the image border from content).
        base_channels: DeepFill v2's ``cnum``: the conv width of the first
            gated layer *including* its gate maps, so features are
            ``base_channels // 2`` at full resolution and ``2 * base_channels``
            (with gates: 4x) in the 1/4-resolution bottleneck. 48 reproduces
            DeepFill v2's sizes; the default 32 keeps CPU inference
            affordable. Must be even.
        dilations: dilation rates of the bottleneck gated convs in both stages.
        attention: self-attention in the refinement bottleneck.
        attend_to_known: restrict attention keys to known (non-hole) positions,
            like contextual attention.
        kv_pool: max-pool factor for attention keys/values (memory / 4).
        fill_value: constant (in [0, 1]) written into holes before the
            network sees the image (``prefill="constant"``).
        prefill: ``constant`` (DeepFill v2) or ``pushpull``: holes start as
            `restore.models.fill.push_pull_fill`'s smooth membrane from the
            whole surroundings, and both stages predict a bounded residual
            on top of their input (output convs start at zero, so the
            untrained model *is* the pull-push fill). On CPU budgets this
            starts the model above OpenCV Telea instead of far below it.
        upsample: ``nearest`` | ``bilinear`` for the gated up-convolutions.
        act: feature activation of the gated convs (DeepFill v2: ELU).
        residual_init: with ``prefill="pushpull"``, the output convs start at their default random
            weights times this factor; 0 (the default) starts them at zero, so the untrained model is
            exactly the pull-push fill. Zero output weights also zero the gradient of every layer
            before them, and on CPU budgets the stages then never leave the fill (measured: output
            weights ~1e-4 after 700 steps, +0.00 dB); a small factor (0.1) lets the features learn
            from the first step while the untrained model stays within a few grey levels of the fill.
        gated_init: variance-preserving initialisation of the gated convs: feature weights
            N(0, 8 / fan_in) (He's 2 for the ELU/ReLU half, times 4 for the sigmoid gate's ~0.5),
            gate weights N(0, 1 / fan_in), zero biases. PyTorch's default init loses most of the
            signal in each gated layer, so through a stage's 17 layers the gradient reaching the
            first one is ~1e-13 of the last one's and the network cannot learn (measured); with this
            init it is ~1e-2. False keeps the default (the shipped weights were trained from it).

    ``forward(image, mask)`` returns a dict with ``coarse`` and ``refined``
    (full-frame predictions in [0, 1], ``tanh / 2 + 0.5``) and ``output``:
    ``refined`` inside the hole, the input's own pixels outside, selected with
    ``torch.where`` so known pixels are bit-identical to the input.
    """

    def __init__(
        self,
        in_channels: int = 4,
        base_channels: int = 32,
        dilations: Sequence[int] = (2, 4, 8, 16),
        attention: bool = True,
        attend_to_known: bool = True,
        kv_pool: int = 2,
        fill_value: float = 0.5,
        upsample: str = "nearest",
        act: str = "elu",
        prefill: str = "constant",
        residual_init: float = 0.0,
        gated_init: bool = False,
    ) -> None:
        super().__init__()
        _check_positive("InpaintGenerator", "in_channels", in_channels)
        _check_positive("InpaintGenerator", "base_channels", base_channels)
        _check_positive("InpaintGenerator", "kv_pool", kv_pool)
        _check_choice("InpaintGenerator", "upsample", upsample, ("nearest", "bilinear"))
        _check_choice("InpaintGenerator", "act", act, ("relu", "leaky", "gelu", "elu", "silu"))
        _check_choice("InpaintGenerator", "prefill", prefill, PREFILLS)
        if base_channels % 2:
            raise ModelConfigError(
                f"InpaintGenerator: base_channels={base_channels} must be even "
                "(half of each gated conv's output is its gate)"
            )
        if in_channels < 2:
            raise ModelConfigError(
                f"InpaintGenerator: in_channels={in_channels} must count image channels + 1 mask channel (>= 2)"
            )
        dil = list(dilations)
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dil):
            raise ModelConfigError(
                f"InpaintGenerator: dilations must be positive integers, got {dilations!r}"
            )
        if isinstance(residual_init, bool) or not isinstance(residual_init, (int, float)) or not 0 <= residual_init <= 1:
            raise ModelConfigError(f"InpaintGenerator: residual_init must be a number in [0, 1], got {residual_init!r}")
        if not 0.0 <= float(fill_value) <= 1.0:
            raise ModelConfigError(f"InpaintGenerator: fill_value must be in [0, 1], got {fill_value!r}")
        self.config = {
            "in_channels": in_channels,
            "base_channels": base_channels,
            "dilations": dil,
            "attention": bool(attention),
            "attend_to_known": bool(attend_to_known),
            "kv_pool": kv_pool,
            "fill_value": float(fill_value),
            "upsample": upsample,
            "act": act,
            "prefill": prefill,
        }
        if residual_init:  # recorded only when set: older cards and weights keep their exact config
            self.config["residual_init"] = float(residual_init)
        if gated_init:
            self.config["gated_init"] = True
        self.image_channels = in_channels - 1
        self.attend_to_known = bool(attend_to_known)
        self.fill_value = float(fill_value)
        c = base_channels // 2  # feature width; the gates double the conv width
        net_in = in_channels + 1  # + constant ones channel
        # Coarse: 17 layers (5 encoder, 2 plain + dilated + 2 plain at 1/4,
        # 2 up-convs, 2 convs, output), as DeepFill v2's coarse network.
        self.coarse = _Stage(
            net_in, self.image_channels, c, (2 * c, 2 * c, 4 * c, 4 * c), 1, dil,
            False, kv_pool, act, upsample,
        )
        # Refinement: DeepFill's slimmer encoder (c -> c -> 2c -> 2c -> 4c)
        # with self-attention after the dilated convs.
        self.refine = _Stage(
            net_in, self.image_channels, c, (c, 2 * c, 2 * c, 4 * c), 1, dil,
            bool(attention), kv_pool, act, upsample,
        )
        self.multiple = 4  # two stride-2 levels
        self.prefill = prefill
        if gated_init:
            for m in self.modules():
                if isinstance(m, GatedConv2d):
                    _init_gated(m)
        if prefill == "pushpull":  # residual stages: the untrained model returns (about) the pull-push fill
            with torch.no_grad():
                for stage in (self.coarse, self.refine):
                    stage.out.weight.mul_(float(residual_init))
                    nn.init.zeros_(stage.out.bias)

    def _stage_image(self, stage_input: Tensor, out: Tensor) -> Tensor:
        """A stage's tanh output as an image in [0, 1]: a residual over its input with the pull-push prefill."""
        if self.prefill == "pushpull":
            return (stage_input + out).clamp(0.0, 1.0)
        return out * 0.5 + 0.5

    def _network_input(self, image: Tensor, hole: Tensor) -> Tensor:
        x = image * 2.0 - 1.0
        return torch.cat([x, torch.ones_like(hole), hole], dim=1)

    def forward(self, image: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Inpaint ``image`` (N x C x H x W, [0, 1]) where ``mask`` (N x 1 x H x W) is 1."""
        if image.dim() != 4 or image.shape[1] != self.image_channels:
            raise ModelInputError(
                f"InpaintGenerator: image must be N x {self.image_channels} x H x W, got shape {tuple(image.shape)}"
            )
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != image.shape[0] or mask.shape[-2:] != image.shape[-2:]:
            raise ModelInputError(
                f"InpaintGenerator: mask must be N x 1 x H x W matching the image {tuple(image.shape)}, "
                f"got shape {tuple(mask.shape)}"
            )
        return inpaint_around(image, mask, self.refine_padded, prefill=self.prefill, fill_value=self.fill_value,
                              multiple=self.multiple)

    def refine_padded(self, img_p: Tensor, hole_p: Tensor) -> tuple[Tensor, Tensor]:
        """Coarse and refined images of a prefilled image and its hole, both padded to ``multiple``.

        The learnt part of `forward`, apart so that `restore.export` can export it with any H and W
        (the pull-push prefill's pyramid depth depends on the size, so it stays outside the graph).
        """
        attn_hole = hole_p if self.attend_to_known else None
        coarse_p = self._stage_image(img_p, self.coarse(self._network_input(img_p, hole_p), None))
        pasted = torch.where(hole_p > 0.5, coarse_p, img_p)
        refined_p = self._stage_image(pasted, self.refine(self._network_input(pasted, hole_p), attn_hole))
        return coarse_p, refined_p


def _init_gated(m: GatedConv2d) -> None:
    """Variance-preserving init of one gated conv (see ``InpaintGenerator(gated_init=True)``)."""
    w = m.conv.weight
    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
    c = m.out_channels
    with torch.no_grad():
        w[:c].normal_(0.0, math.sqrt(8.0 / fan_in))
        w[c:].normal_(0.0, math.sqrt(1.0 / fan_in))
        if m.conv.bias is not None:
            m.conv.bias.zero_()


def inpaint_around(image: Tensor, mask: Tensor, refine: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], *,
                   prefill: str, fill_value: float, multiple: int) -> dict[str, Tensor]:
    """`InpaintGenerator.forward` around its network ``refine`` (the module's, or an exported graph's):
    prefill the hole, pad to ``multiple``, refine, crop, and keep the known pixels exactly."""
    hole_b = mask > 0.5
    hole = hole_b.to(image.dtype)
    if prefill == "pushpull":
        filled = push_pull_fill(image, hole_b)
    else:
        filled = torch.where(hole_b, torch.full_like(image, fill_value), image)
    padded, pads = pad_to_multiple(torch.cat([filled, hole], dim=1), multiple)
    coarse_p, refined_p = refine(padded[:, :-1], padded[:, -1:])
    coarse = crop_padding(coarse_p, pads)
    refined = crop_padding(refined_p, pads)
    output = torch.where(hole_b, refined, image)
    return {"coarse": coarse, "refined": refined, "output": output}


class SNPatchGAN(nn.Module):
    """SN-PatchGAN discriminator (DeepFill v2) judging image + mask.

    ``n_layers`` spectral-norm 5x5 stride-2 convs with LeakyReLU(0.2)
    (widths c, 2c, 4c, 4c, ...), then a spectral-norm 3x3 conv to one channel:
    a map of logits, each judging a large patch (the task applies the hinge
    loss to every element). Stride-2 5x5 convs with padding 2 map H to
    ceil(H/2), so any input size gives at least a 1x1 map.

    ``forward(x)`` takes the concatenated ``in_channels`` tensor, or
    ``forward(image, mask)`` concatenates for you. Inputs are passed as given:
    the task chooses the value range (the generator works in [-1, 1]).
    """

    def __init__(self, in_channels: int = 4, base_channels: int = 64, n_layers: int = 6) -> None:
        super().__init__()
        _check_positive("SNPatchGAN", "in_channels", in_channels)
        _check_positive("SNPatchGAN", "base_channels", base_channels)
        _check_positive("SNPatchGAN", "n_layers", n_layers)
        if n_layers > 10:
            raise ModelConfigError(f"SNPatchGAN: n_layers={n_layers} is too deep (max 10)")
        self.config = {"in_channels": in_channels, "base_channels": base_channels, "n_layers": n_layers}
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        prev = in_channels
        for i in range(n_layers):
            width = base_channels * min(2**i, 4)
            layers += [_conv(prev, width, 5, 2, 2, 1, True, True, "zeros"), nn.LeakyReLU(0.2, inplace=True)]
            prev = width
        layers.append(_conv(prev, 1, 3, 1, 1, 1, True, True, "zeros"))
        self.model = nn.Sequential(*layers)

    def receptive_field(self) -> int:
        """Side of the input window each output logit sees."""
        return receptive_field(self.model)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            if mask.dim() != 4 or mask.shape[0] != x.shape[0] or mask.shape[-2:] != x.shape[-2:]:
                raise ModelInputError(
                    f"SNPatchGAN: mask shape {tuple(mask.shape)} does not match image shape {tuple(x.shape)}"
                )
            x = torch.cat([x, mask.to(x.dtype)], dim=1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelInputError(
                f"SNPatchGAN: expected an N x {self.in_channels} x H x W input (image + mask), got shape {tuple(x.shape)}"
            )
        return self.model(x)
