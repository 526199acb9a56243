"""Loss functions shared by every task.

Everything here is a plain function or a small ``nn.Module`` with no knowledge
of the trainer or of any task, so each piece can be checked against a value
computed by hand. Losses are computed in float32 even when the inputs come from
an autocast region: GAN logits, Gram matrices and ``exp(logvar)`` are exactly
the quantities that overflow or lose precision in fp16/bf16.

Contents
--------
* `AdversarialLoss` - vanilla (BCE with logits), LSGAN and hinge, with one-sided
  label smoothing and label flipping for the discriminator, multi-scale aware.
* `l1_loss` - optionally split into hole / valid terms, each normalised by its
  own area (inpainting).
* `psnr_loss` - mean over the batch of each image's ``10 log10 MSE`` (minus its
  PSNR): what a per-image mean PSNR rewards, whatever each image's noise level.
* `VGGFeatures`, `SqueezeFeatures`, `PerceptualLoss`, `StyleLoss`, `gram_matrix` -
  feature losses on a frozen ImageNet backbone that is never downloaded: VGG16
  when its weights are on disk, or the SqueezeNet 1.1 that ships with the
  repository (``backbone="squeezenet"``).
* `tv_loss` - total variation, optionally restricted to a dilated hole region.
* `kl_divergence` - KL of a diagonal Gaussian to N(0, I), with free bits.
* `SupConLoss` - supervised contrastive loss (Khosla et al. 2020, L_out).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from restore.models.squeezenet import LAYERS, SqueezeNet, load_squeezenet, preprocess

__all__ = [
    "AdversarialLoss",
    "l1_loss",
    "psnr_loss",
    "VGGWeightsMissing",
    "VGG16_LAYERS",
    "VGG16_WEIGHTS_FILE",
    "VGG16_WEIGHTS_ENV",
    "VGGFeatures",
    "SqueezeFeatures",
    "SQUEEZE_PERCEPTUAL_LAYERS",
    "SQUEEZE_STYLE_LAYERS",
    "PerceptualLoss",
    "StyleLoss",
    "gram_matrix",
    "tv_loss",
    "kl_divergence",
    "SupConLoss",
]

# A discriminator may return one tensor, a list of tensors (one per scale), or a
# list of lists (pix2pixHD-style: intermediate features, the last is the output).
Predictions = Union[Tensor, Sequence[Union[Tensor, Sequence[Tensor]]]]
Reduction = Literal["mean", "sum", "none"]


def _flatten_predictions(pred: Predictions) -> list[Tensor]:
    """One tensor per scale; for nested lists, the last entry is the D output."""
    if isinstance(pred, Tensor):
        return [pred]
    if not isinstance(pred, (list, tuple)) or len(pred) == 0:
        raise TypeError(
            f"pred: expected a tensor or a non-empty list of tensors (one per scale), got {type(pred).__name__}"
        )
    out: list[Tensor] = []
    for i, p in enumerate(pred):
        if isinstance(p, (list, tuple)):
            if len(p) == 0 or not isinstance(p[-1], Tensor):
                raise TypeError(f"pred[{i}]: a nested list must end with the discriminator output tensor")
            p = p[-1]
        if not isinstance(p, Tensor):
            raise TypeError(f"pred[{i}]: expected a tensor, got {type(p).__name__}")
        out.append(p)
    return out


def _rand_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) noise with x's shape on x's device, in float32."""
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)


# --------------------------------------------------------------------------- #
# Adversarial
# --------------------------------------------------------------------------- #
class AdversarialLoss(nn.Module):
    """GAN loss for the generator and the discriminator, in one object.

    ``mode``:
      * ``"vanilla"`` - BCE with logits against the target labels (the
        non-saturating generator loss when called with ``target_is_real=True``).
      * ``"lsgan"`` - mean squared error to the target labels (Mao et al. 2017).
      * ``"hinge"`` - D: ``relu(1 - D(real)) + relu(1 + D(fake))``; G: ``-D(fake)``.

    Regularisation of the discriminator only (the generator always sees plain
    ``real_label`` targets, otherwise it would be taught to stop short of
    "real"):
      * ``smoothing`` - one-sided label smoothing (Salimans et al. 2016): the
        *real* targets become a fixed value (``0.9``) or, given ``(low, high)``,
        a value drawn uniformly per element. Fake targets are never smoothed.
      * ``flip_prob`` - each element's real/fake role is swapped with this
        probability. A flipped fake element becomes a (smoothed) real target,
        a flipped real element a fake one; with hinge, the other hinge term.

    Random draws use ``generator`` when given (on the predictions' device), so
    targets are reproducible and checkpoint-resumable.

    ``pred`` may be a tensor or a list of tensors from a multi-scale
    discriminator (a nested list's last entry is taken as the output); the loss
    is the mean over scales of each scale's mean over elements.
    """

    MODES = ("vanilla", "lsgan", "hinge")

    def __init__(
        self,
        mode: Literal["vanilla", "lsgan", "hinge"] = "vanilla",
        real_label: float = 1.0,
        fake_label: float = 0.0,
        smoothing: float | tuple[float, float] | None = None,
        flip_prob: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"AdversarialLoss: mode must be one of {self.MODES}, got {mode!r}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"AdversarialLoss: flip_prob must be in [0, 1], got {flip_prob}")
        if smoothing is not None:
            if mode == "hinge":
                raise ValueError(
                    "AdversarialLoss: smoothing is undefined for mode='hinge' (hinge has no target labels); "
                    "use flip_prob or instance noise instead"
                )
            if isinstance(smoothing, (tuple, list)):
                if len(smoothing) != 2 or not float(smoothing[0]) <= float(smoothing[1]):
                    raise ValueError(
                        f"AdversarialLoss: smoothing range must be (low, high) with low <= high, got {smoothing!r}"
                    )
                smoothing = (float(smoothing[0]), float(smoothing[1]))
            elif isinstance(smoothing, (int, float)):
                smoothing = float(smoothing)
            else:
                raise ValueError(
                    f"AdversarialLoss: smoothing must be None, a float or a (low, high) pair, got {smoothing!r}"
                )
        self.mode = mode
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)
        self.smoothing = smoothing
        self.flip_prob = float(flip_prob)

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, real_label={self.real_label}, fake_label={self.fake_label}, "
            f"smoothing={self.smoothing!r}, flip_prob={self.flip_prob}"
        )

    # -- targets -------------------------------------------------------------
    def _is_real(
        self, p: Tensor, target_is_real: bool, for_discriminator: bool, generator: torch.Generator | None
    ) -> Tensor:
        """Per-element real/fake role after optional flipping (bool tensor)."""
        role = torch.full(p.shape, bool(target_is_real), device=p.device, dtype=torch.bool)
        if for_discriminator and self.flip_prob > 0.0:
            role = role ^ (_rand_like(p, generator) < self.flip_prob)
        return role

    def _real_values(self, p: Tensor, for_discriminator: bool, generator: torch.Generator | None) -> Tensor:
        """The value a real target takes: smoothed for D only."""
        s = self.smoothing if for_discriminator else None
        if s is None:
            return torch.full(p.shape, self.real_label, device=p.device, dtype=torch.float32)
        if isinstance(s, tuple):
            low, high = s
            return low + (high - low) * _rand_like(p, generator)
        return torch.full(p.shape, s, device=p.device, dtype=torch.float32)

    def _targets_one(
        self, p: Tensor, target_is_real: bool, for_discriminator: bool, generator: torch.Generator | None
    ) -> Tensor:
        # Fixed draw order (flip, then smoothing) keeps results reproducible.
        role = self._is_real(p, target_is_real, for_discriminator, generator)
        real = self._real_values(p, for_discriminator, generator)
        return torch.where(role, real, torch.full_like(real, self.fake_label))

    def targets(
        self,
        pred: Predictions,
        target_is_real: bool,
        for_discriminator: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor | list[Tensor]:
        """The float32 target tensor(s) the loss compares ``pred`` against.

        Exposed so the smoothing and flipping formulas can be checked directly.
        For hinge the "targets" are ``real_label``/``fake_label`` marking which
        hinge term each element uses. Returns a list when ``pred`` is a list.
        Calling this consumes the same random numbers as the loss itself.
        """
        preds = _flatten_predictions(pred)
        out = [self._targets_one(p, target_is_real, for_discriminator, generator) for p in preds]
        return out[0] if isinstance(pred, Tensor) else out

    # -- loss ----------------------------------------------------------------
    def _loss_one(
        self, p: Tensor, target_is_real: bool, for_discriminator: bool, generator: torch.Generator | None
    ) -> Tensor:
        p = p.float()
        if self.mode == "hinge":
            if not for_discriminator:
                if not target_is_real:
                    raise ValueError(
                        "AdversarialLoss(hinge): the generator loss is -D(fake); call it with target_is_real=True"
                    )
                return -p.mean()
            role = self._is_real(p, target_is_real, True, generator)
            return torch.where(role, F.relu(1.0 - p), F.relu(1.0 + p)).mean()
        target = self._targets_one(p, target_is_real, for_discriminator, generator)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(p, target)
        return F.mse_loss(p, target)

    def forward(
        self,
        pred: Predictions,
        target_is_real: bool,
        for_discriminator: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Scalar loss; ``for_discriminator=False`` gives the generator's loss."""
        preds = _flatten_predictions(pred)
        losses = [self._loss_one(p, target_is_real, for_discriminator, generator) for p in preds]
        return torch.stack(losses).mean()


# --------------------------------------------------------------------------- #
# L1 (with hole / valid weighting)
# --------------------------------------------------------------------------- #
def _check_mask(mask: Tensor, x: Tensor, name: str = "mask") -> Tensor:
    if mask.dim() != 4 or x.dim() != 4:
        raise ValueError(f"{name}: expected N1HW mask and NCHW images, got {tuple(mask.shape)} and {tuple(x.shape)}")
    if mask.shape[0] != x.shape[0] or mask.shape[-2:] != x.shape[-2:] or mask.shape[1] not in (1, x.shape[1]):
        raise ValueError(
            f"{name}: shape {tuple(mask.shape)} does not match images {tuple(x.shape)} (expected N1HW or NCHW)"
        )
    return mask.to(device=x.device, dtype=torch.float32)


def _reduce(per_sample: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def l1_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    hole_weight: float = 1.0,
    valid_weight: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """Mean absolute error, optionally split into hole and valid terms.

    Without a mask this is the plain per-image mean ``|pred - target|``.
    With a mask (N1HW or NCHW, 1 = hole, soft values allowed) each image's loss
    is ``hole_weight * mean_hole|d| + valid_weight * mean_valid|d|``, every term
    normalised by the area of its own region (times channels). Normalising by
    region rather than image area keeps the hole weight meaningful whether a
    hole covers 5% or 50% of the image; an empty region contributes 0.
    ``reduction`` applies over the batch of per-image values.
    """
    if pred.shape != target.shape:
        raise ValueError(f"l1_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    diff = (pred.float() - target.float()).abs()
    n = diff.shape[0] if diff.dim() > 0 else 1
    if mask is None:
        per_sample = diff.reshape(n, -1).mean(dim=1)
        return _reduce(per_sample, reduction, "l1_loss")
    m = _check_mask(mask, diff).expand_as(diff)
    hole_area = m.reshape(n, -1).sum(dim=1)
    valid_area = (1.0 - m).reshape(n, -1).sum(dim=1)
    hole = (diff * m).reshape(n, -1).sum(dim=1) / hole_area.clamp_min(1e-8)
    valid = (diff * (1.0 - m)).reshape(n, -1).sum(dim=1) / valid_area.clamp_min(1e-8)
    per_sample = hole_weight * hole + valid_weight * valid
    return _reduce(per_sample, reduction, "l1_loss")


def psnr_loss(pred: Tensor, target: Tensor, eps: float = 1e-8, reduction: Reduction = "mean") -> Tensor:
    """Per-image ``10 * log10(MSE + eps)`` (= -PSNR for data range 1), reduced over the batch.

    Benchmarks average PSNR per image, and a plain MSE or L1 over a batch lets
    the hardest images (a blind model's sigma-50 patches) outweigh the easy ones
    the mean PSNR counts just as much: the gradient of this loss scales each
    image's MSE gradient by ``1 / MSE``, so every image moves the mean PSNR
    equally (the PSNR loss of NAFNet / HINet). ``eps`` caps a perfect image at
    80 dB so it cannot dominate.
    """
    if pred.shape != target.shape:
        raise ValueError(f"psnr_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if not eps > 0:
        raise ValueError(f"psnr_loss: eps must be > 0, got {eps!r}")
    diff = pred.float() - target.float()
    n = diff.shape[0] if diff.dim() > 0 else 1
    mse = diff.square().reshape(n, -1).mean(dim=1)
    return _reduce(10.0 * torch.log10(mse + eps), reduction, "psnr_loss")


# --------------------------------------------------------------------------- #
# VGG16 features, perceptual and style losses
# --------------------------------------------------------------------------- #
VGG16_WEIGHTS_FILE = "vgg16-397923af.pth"
VGG16_WEIGHTS_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_WEIGHTS_ENV = "RESTORE_VGG16_WEIGHTS"


def _vgg16_layer_names() -> dict[str, int]:
    """Name -> index in ``torchvision.models.vgg16().features``."""
    names: dict[str, int] = {}
    idx = 0
    for block, n_convs in enumerate((2, 2, 3, 3, 3), start=1):
        for j in range(1, n_convs + 1):
            names[f"conv{block}_{j}"] = idx
            names[f"relu{block}_{j}"] = idx + 1
            idx += 2
        names[f"pool{block}"] = idx
        idx += 1
    return names


VGG16_LAYERS: dict[str, int] = _vgg16_layer_names()
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16_features(last: int) -> nn.Sequential:
    """``torchvision.models.vgg16().features[: last + 1]`` with the same indices.

    Built directly so the 120M-parameter classifier is never allocated, and
    with non-inplace ReLUs so a captured conv output is not overwritten.
    """
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG16_CFG:
        if len(layers) > last:
            break
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            c_in = int(v)
    return nn.Sequential(*layers[: last + 1])

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


#: SqueezeNet layers and weights of `PerceptualLoss(backbone="squeezenet")`: each weight is the reciprocal
#: of that layer's mean L1 feature distance between photos and their Gaussian-blurred (sigma 2) copies,
#: so every layer contributes about 1 for that distortion (measured: python eval/perceptual_check.py --weights).
SQUEEZE_PERCEPTUAL_LAYERS: dict[str, float] = {"conv1": 0.27, "fire3": 0.088, "fire5": 0.13, "fire9": 0.74}
#: Layers and weights of `StyleLoss(backbone="squeezenet")` (Gram matrices; same normalisation idea).
SQUEEZE_STYLE_LAYERS: dict[str, float] = {"conv1": 1.1, "fire3": 0.5, "fire5": 2.0, "fire9": 150.0}


class VGGWeightsMissing(FileNotFoundError):
    """The VGG16 ImageNet weights file is not on disk (nothing is downloaded)."""


def _resolve_vgg_weights(weights_path: str | os.PathLike | None) -> Path:
    """Explicit path > $RESTORE_VGG16_WEIGHTS > torch hub cache; never downloads."""
    how_to = (
        f"download {VGG16_WEIGHTS_URL} on a machine with internet access and either put it in "
        f"the torch hub cache folder, set ${VGG16_WEIGHTS_ENV} to its path, or pass weights_path="
    )
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise VGGWeightsMissing(f"VGG16 weights file {p.name!r} not found in folder {str(p.parent)!r} (weights_path)")
        return p
    env = os.environ.get(VGG16_WEIGHTS_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise VGGWeightsMissing(
                f"VGG16 weights file {p.name!r} not found in folder {str(p.parent)!r} (from ${VGG16_WEIGHTS_ENV})"
            )
        return p
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    p = folder / VGG16_WEIGHTS_FILE
    if not p.is_file():
        raise VGGWeightsMissing(
            f"VGG16 weights file {VGG16_WEIGHTS_FILE!r} not found in folder {str(folder)!r} (torch hub cache); "
            f"{how_to}; or use pretrained=False (random weights, for tests only)"
        )
    return p


def _load_vgg_state(path: Path) -> dict[str, Tensor]:
    """Tensors only: safetensors, or a torch file read with weights_only=True."""
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a VGG16 state dict, got {type(state).__name__}")
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    # Accept the full torchvision model ("features.N.weight") or features only ("N.weight").
    out = {}
    for k, v in state.items():
        if k.startswith("features."):
            out[k[len("features.") :]] = v
        elif k.split(".")[0].isdigit():
            out[k] = v
    if not out:
        raise ValueError(f"{path}: no VGG16 'features.*' tensors found in this file")
    return out


class VGGFeatures(nn.Module):
    """Frozen VGG16 feature extractor for perceptual and style losses.

    Inputs are images in [0, 1] with 1 or 3 channels; gray is repeated to RGB and
    everything is normalised with the ImageNet mean/std inside, so callers never
    think about it. Only the layers up to the deepest requested one are built.
    Parameters never require grad and the module stays in eval mode even when a
    parent calls ``.train()``. ``forward`` returns ``{layer_name: features}``.

    Weights come from ``weights_path``, else ``$RESTORE_VGG16_WEIGHTS``, else
    ``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth``; a missing file raises
    `VGGWeightsMissing` (nothing is downloaded). ``pretrained=False`` gives random
    weights, which is only meaningful for tests.
    """

    def __init__(
        self,
        layers: Iterable[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        weights_path: str | os.PathLike | None = None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        names = list(dict.fromkeys(layers))  # keep order, drop duplicates
        if not names:
            raise ValueError("VGGFeatures: layers must name at least one VGG16 layer")
        unknown = [n for n in names if n not in VGG16_LAYERS]
        if unknown:
            raise ValueError(f"VGGFeatures: unknown layer(s) {unknown}; known: {', '.join(VGG16_LAYERS)}")
        self.layers: tuple[str, ...] = tuple(names)
        self._index = {VGG16_LAYERS[n]: n for n in names}
        last = max(self._index)

        # Resolve the weights first: a missing file fails before any work is done.
        path = _resolve_vgg_weights(weights_path) if pretrained else None
        self.body = _vgg16_features(last)
        if path is not None:
            state = _load_vgg_state(path)
            wanted = self.body.state_dict()
            missing = [k for k in wanted if k not in state]
            if missing:
                raise ValueError(f"{path}: missing VGG16 tensors {missing[:4]}{'...' if len(missing) > 4 else ''}")
            try:
                self.body.load_state_dict({k: state[k] for k in wanted})
            except RuntimeError as e:  # shape mismatch: not a VGG16 file
                raise ValueError(f"{path}: not compatible with VGG16 features: {e}") from None
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "VGGFeatures":
        """Always eval: a frozen loss network must not change with the trainer's mode."""
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"VGGFeatures: expected N1HW or N3HW images in [0, 1], got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h = (x.to(self.mean.dtype) - self.mean) / self.std
        out: dict[str, Tensor] = {}
        for i, m in enumerate(self.body):
            h = m(h)
            name = self._index.get(i)
            if name is not None:
                out[name] = h
        return out


class SqueezeFeatures(nn.Module):
    """Frozen ImageNet SqueezeNet 1.1 feature extractor (the backbone that installs offline, issue 22).

    Same contract as `VGGFeatures`: images in [0, 1] with 1 or 3 channels
    (gray is repeated), preprocessing inside (Caffe: BGR, 0-255, minus the
    mean), frozen, always in eval mode, ``forward`` returns ``{layer: features}``
    for ``layers`` (names of `restore.models.squeezenet.LAYERS`). Weights come
    from ``weights_path``, else ``$RESTORE_SQUEEZENET_WEIGHTS``, else the
    repository's ``weights/backbones/squeezenet1_1-imagenet.safetensors``
    (`SqueezeNetWeightsMissing` if absent; nothing is downloaded).
    ``pretrained=False`` gives random weights, for tests only.
    """

    def __init__(
        self,
        layers: Iterable[str] = SQUEEZE_PERCEPTUAL_LAYERS,
        weights_path: str | os.PathLike | None = None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        names = list(dict.fromkeys(layers))
        unknown = [n for n in names if n not in LAYERS]
        if not names or unknown:
            raise ValueError(f"SqueezeFeatures: unknown or no layer(s) {unknown or names}; known: {', '.join(LAYERS)}")
        self.layers: tuple[str, ...] = tuple(names)
        upto = max(names, key=LAYERS.index)
        self.body = load_squeezenet(upto, weights_path) if pretrained else SqueezeNet(upto)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "SqueezeFeatures":
        """Always eval: a frozen loss network must not change with the trainer's mode."""
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.body.features(preprocess(x), self.layers)


BACKBONES = ("vgg16", "squeezenet")


def _backbone_layers(backbone: str) -> Sequence[str]:
    if backbone == "vgg16":
        return tuple(VGG16_LAYERS)
    if backbone == "squeezenet":
        return LAYERS
    raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")


def _check_layer_weights(layers: Mapping[str, float], who: str, backbone: str = "vgg16") -> dict[str, float]:
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError(f"{who}: layers must be a non-empty mapping {{layer_name: weight}}, got {layers!r}")
    known = _backbone_layers(backbone)
    unknown = [n for n in layers if n not in known]
    if unknown:
        raise ValueError(f"{who}: unknown {backbone} layer(s) {unknown}; known: {', '.join(known)}")
    return {k: float(v) for k, v in layers.items()}


def _criterion(name: str, who: str):
    if name == "l1":
        return F.l1_loss
    if name == "l2":
        return F.mse_loss
    raise ValueError(f"{who}: criterion must be 'l1' or 'l2', got {name!r}")


class _FeatureLoss(nn.Module):
    """Shared plumbing: layer weights, criterion, an own or shared VGGFeatures."""

    _who = "feature loss"

    def __init__(
        self,
        layers: Mapping[str, float] | None = None,
        criterion: Literal["l1", "l2"] = "l1",
        weights_path: str | os.PathLike | None = None,
        pretrained: bool = True,
        features: VGGFeatures | SqueezeFeatures | None = None,
        backbone: str = "vgg16",
    ) -> None:
        super().__init__()
        if features is not None:
            backbone = "squeezenet" if isinstance(features, SqueezeFeatures) else "vgg16"
        if layers is None:
            layers = self._default_layers(backbone)
        self.backbone = backbone
        self.layer_weights = _check_layer_weights(layers, self._who, backbone)
        self.criterion = criterion
        self._crit = _criterion(criterion, self._who)
        if features is None:
            cls = SqueezeFeatures if backbone == "squeezenet" else VGGFeatures
            features = cls(self.layer_weights, weights_path=weights_path, pretrained=pretrained)
        else:
            missing = [n for n in self.layer_weights if n not in features.layers]
            if missing:
                raise ValueError(
                    f"{self._who}: the shared VGGFeatures does not compute {missing}; "
                    f"build it with layers covering both losses"
                )
        self.features = features

    @staticmethod
    def _default_layers(backbone: str) -> dict[str, float]:
        if backbone == "squeezenet":
            return dict(SQUEEZE_PERCEPTUAL_LAYERS)
        return {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0}

    def _features(self, x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        if x.shape != y.shape:
            raise ValueError(f"{self._who}: input {tuple(x.shape)} and target {tuple(y.shape)} differ in shape")
        fx = self.features(x)
        with torch.no_grad():  # the target is a constant; saves memory
            fy = self.features(y)
        return fx, fy

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Loss between images ``x`` (gets gradients) and target ``y`` (constant)."""
        fx, fy = self._features(x, y)
        return self.from_features(fx, fy)

    @staticmethod
    def _compare_as(feat: Tensor) -> Tensor:
        """What of a feature map the loss compares (the map itself; Gram matrices for style)."""
        return feat.float()

    def from_features(self, fx: Mapping[str, Tensor], fy: Mapping[str, Tensor]) -> Tensor:
        """Loss from precomputed ``VGGFeatures`` outputs (``fy`` treated as given), so VGG runs once for several losses."""
        total = None
        for name, w in self.layer_weights.items():
            term = w * self._crit(self._compare_as(fx[name]), self._compare_as(fy[name]))
            total = term if total is None else total + term
        return total


class PerceptualLoss(_FeatureLoss):
    """Weighted sum over backbone layers of the L1/L2 distance between features.

    ``backbone="vgg16"`` (its weights must be on disk) or ``"squeezenet"`` (ships
    with the repository; default layers `SQUEEZE_PERCEPTUAL_LAYERS`). ``layers``
    maps layer names (VGG16: ``relu1_2``, ``relu2_2``, ``relu3_3``, ``relu4_3``
    or any conv/relu/pool name; SqueezeNet: ``conv1``, ``fire2`` .. ``fire9``) to weights. Pass ``features=`` to
    share one `VGGFeatures` with a `StyleLoss`, and call `from_features` with
    features computed once to avoid running VGG twice.
    """

    _who = "PerceptualLoss"


def gram_matrix(feat: Tensor) -> Tensor:
    """(N, C, C) Gram matrix normalised by C*H*W, in float32 (fp16 overflows here)."""
    if feat.dim() != 4:
        raise ValueError(f"gram_matrix: expected NCHW features, got shape {tuple(feat.shape)}")
    n, c, h, w = feat.shape
    f = feat.float().reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


class StyleLoss(_FeatureLoss):
    """Distance between Gram matrices of backbone features (Gatys; Liu et al. 2018); VGG16 or SqueezeNet.

    Same layer/weight/criterion/sharing conventions as `PerceptualLoss`; the
    Gram matrices are normalised by C*H*W so layer weights are comparable.
    """

    _who = "StyleLoss"

    @staticmethod
    def _default_layers(backbone: str) -> dict[str, float]:
        if backbone == "squeezenet":
            return dict(SQUEEZE_STYLE_LAYERS)
        return _FeatureLoss._default_layers(backbone)

    @staticmethod
    def _compare_as(feat: Tensor) -> Tensor:
        return gram_matrix(feat)


# --------------------------------------------------------------------------- #
# Total variation
# --------------------------------------------------------------------------- #
def tv_loss(
    x: Tensor,
    mask: Tensor | None = None,
    dilation: int = 1,
    reduction: Reduction = "mean",
) -> Tensor:
    """Total variation: mean |horizontal diff| + mean |vertical diff| per image.

    With a mask (N1HW, 1 = hole) only neighbour pairs whose two pixels both lie
    in the hole region dilated by ``dilation`` pixels count (Liu et al. 2018,
    region P), so the known surroundings are not blurred and the seam is
    smoothed; each mean is over the counted pairs (0 when there are none).
    """
    if x.dim() != 4:
        raise ValueError(f"tv_loss: expected NCHW images, got shape {tuple(x.shape)}")
    if dilation < 0:
        raise ValueError(f"tv_loss: dilation must be >= 0, got {dilation}")
    x = x.float()
    n = x.shape[0]
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs()
    if mask is None:
        per_sample = dx.reshape(n, -1).mean(dim=1) + dy.reshape(n, -1).mean(dim=1)
        return _reduce(per_sample, reduction, "tv_loss")
    m = _check_mask(mask, x)
    region = (m > 0).float()
    if dilation > 0:
        k = 2 * dilation + 1
        region = F.max_pool2d(region, kernel_size=k, stride=1, padding=dilation)
    region = region.expand_as(x)
    wx = region[..., :, 1:] * region[..., :, :-1]
    wy = region[..., 1:, :] * region[..., :-1, :]
    tx = (dx * wx).reshape(n, -1).sum(1) / wx.reshape(n, -1).sum(1).clamp_min(1e-8)
    ty = (dy * wy).reshape(n, -1).sum(1) / wy.reshape(n, -1).sum(1).clamp_min(1e-8)
    return _reduce(tx + ty, reduction, "tv_loss")


# --------------------------------------------------------------------------- #
# KL divergence
# --------------------------------------------------------------------------- #
def kl_divergence(
    mu: Tensor,
    logvar: Tensor,
    free_bits: float = 0.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dims.

    Per sample: ``-0.5 * sum(1 + logvar - mu^2 - exp(logvar))``; ``reduction``
    is over the batch ("mean" is the usual VAE term). Inputs are (N, D) or
    (N, ...) latent maps (flattened).

    ``free_bits`` = lambda > 0 (Kingma et al. 2016): each latent dimension's
    batch-mean KL is clamped at >= lambda, so dimensions below the budget get no
    gradient and the encoder is not pushed to collapse them onto the prior. With
    reduction "none", dimensions under the budget contribute the constant
    lambda to every sample, so the mean of the per-sample values equals the
    "mean" result.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"kl_divergence: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ in shape")
    if mu.dim() < 2:
        raise ValueError(f"kl_divergence: expected (N, D) latents, got shape {tuple(mu.shape)}")
    if free_bits < 0:
        raise ValueError(f"kl_divergence: free_bits must be >= 0, got {free_bits}")
    mu = mu.float().flatten(1)
    logvar = logvar.float().flatten(1)
    kl = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())  # (N, D)
    if free_bits > 0:
        per_dim = kl.mean(dim=0, keepdim=True)
        kl = torch.where(per_dim >= free_bits, kl, torch.full_like(kl, float(free_bits)))
    return _reduce(kl.sum(dim=1), reduction, "kl_divergence")


# --------------------------------------------------------------------------- #
# Supervised contrastive loss
# --------------------------------------------------------------------------- #
class SupConLoss(nn.Module):
    """Supervised contrastive loss, the L_out form of Khosla et al. (2020).

    For each anchor i with positives P(i) (same label, i excluded) over all other
    samples A(i)::

        l_i = -(tau / base_tau) / |P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / tau)
                                                   / sum_{a in A(i)} exp(z_i.z_a / tau) )

    on L2-normalised features; the loss is the mean over anchors that have at
    least one positive (others are excluded; 0 if none has any). ``features`` is
    (N, D) or (N, V, D) for V views per sample (views of a sample are positives
    of each other). Logits are shifted by their row max for stability.
    ``base_temperature`` defaults to ``temperature`` (scale factor 1).
    """

    def __init__(self, temperature: float = 0.1, base_temperature: float | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"SupConLoss: temperature must be > 0, got {temperature}")
        if base_temperature is not None and base_temperature <= 0:
            raise ValueError(f"SupConLoss: base_temperature must be > 0, got {base_temperature}")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature) if base_temperature is not None else float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, base_temperature={self.base_temperature}"

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        if features.dim() == 2:
            features = features.unsqueeze(1)
        if features.dim() != 3:
            raise ValueError(f"SupConLoss: features must be (N, D) or (N, V, D), got shape {tuple(features.shape)}")
        n, v, _ = features.shape
        labels = labels.reshape(-1)
        if labels.numel() != n:
            raise ValueError(f"SupConLoss: {labels.numel()} labels for {n} feature vectors")
        z = F.normalize(features.float(), dim=-1).transpose(0, 1).reshape(n * v, -1)  # view-major
        lab = labels.to(z.device).repeat(v)
        logits = z @ z.T / self.temperature
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        not_self = ~torch.eye(n * v, dtype=torch.bool, device=z.device)
        positives = (lab[:, None] == lab[None, :]) & not_self
        # log-softmax over A(i) = everyone but the anchor itself.
        denom = torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), dim=1, keepdim=True)
        log_prob = logits - denom
        n_pos = positives.sum(dim=1)
        has_pos = n_pos > 0
        if not bool(has_pos.any()):
            return features.sum() * 0.0  # keeps the graph; nothing to contrast
        mean_log_prob_pos = (log_prob * positives).sum(dim=1)[has_pos] / n_pos[has_pos]
        return -(self.temperature / self.base_temperature) * mean_log_prob_pos.mean()
