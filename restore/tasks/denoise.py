"""Photo denoising: a residual UNet generator, optionally sharpened by a PatchGAN.

Training side (`DenoiseTask`, driven by `restore.engine.Trainer`):

* G = `restore.models.unet.UNet` (residual, input fused into the head), so the
  untrained model is the identity and learns only the noise;
* D = `restore.models.patchgan.PatchGAN` (70x70 patches) unless
  ``lambda_adv == 0``: the L1-only configuration builds no discriminator at
  all, which is what makes the GAN-vs-L1 comparison of the issue fair;
* loss = lambda_l1 * L1 + lambda_mse * MSE + lambda_psnr * PSNR loss + lambda_adv * adversarial
  + lambda_perc * perceptual (MSE's optimum is the posterior mean, the PSNR-optimal estimate; L1's
  the median; the PSNR loss, mean of per-image 10 log10 MSE, weighs a blind model's low-noise
  patches as much as its high-noise ones, as a per-image mean PSNR does)
  (VGG16; switched off with a warning when its ImageNet weights are absent,
  because nothing may be downloaded implicitly);
* corruption happens on the training device in `prepare_batch`, from a spec
  string (``gaussian:sigma=5-50`` blind by default, ``saltpepper:...``,
  ``speckle:...``, mixtures with ``+``), with the trainer's checkpointed
  generator, so a resumed run sees the same noise;
* data: random patches of a photo folder (a few photos held back for
  validation), optionally downscaled by a random factor (``scale_range``) so
  the model meets photos' detail at more than the training photos' one scale;
  or a Fashion-MNIST IDX folder (``dataset: fashion-mnist``).

Restoring side (`restore_batch`, used by ``restore denoise`` and the eval
scripts): gray/colour adaptation between the file and the model, overlap-
blended tiles (`restore.tiling.tiled`) so memory is bounded and seams vanish,
output clamped to [0, 1].
"""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.data import Dataset, Subset

from restore.corrupt import RandomStreams
from restore.engine.config import ConfigError
from restore.engine.task import LossTerms, StepContext, Task
from restore.tasks.common import (
    add_ensemble_argument,
    crop_load_size,
    discriminator_terms,
    ensemble_mode,
    follow_device,
    from_model_channels,
    is_int,
    is_number,
    merge_task_options,
    model_device_dtype,
    option,
    photo_patch_datasets,
    scale_range_error,
    scaled_crop,
    to_model_channels,
)

__all__ = ["DEFAULT_WEIGHTS", "DEFAULT_TILE_OVERLAP", "DenoiseTask", "DenoiseConfigError", "add_arguments",
           "demo", "restore_batch"]

log = logging.getLogger("restore.engine")

#: Shipped weights used by ``restore denoise`` when ``--weights`` is not given.
DEFAULT_WEIGHTS = "denoise-gaussian"
#: Pixels shared by neighbouring tiles; 32 covers the blending ramp of a depth-4 UNet's context.
DEFAULT_TILE_OVERLAP = 32

_DATASETS = ("photos", "fashion-mnist")
#: Pixel losses; at least one must be on (their lambda_* keys are task options).
_PIXEL_LOSSES = ("l1", "mse", "psnr")


class DenoiseConfigError(ConfigError):
    """A denoise task option or its data is invalid (the message names it); train scripts exit 2."""


# The small CPU-friendly generator; the GPU recipe in train/configs widens it.
_UNET_DEFAULTS: dict[str, Any] = {
    "base_channels": 32,
    "depth": 4,
    "convs_per_level": 1,
    "norm": "batch",
    "residual": True,
    "fuse_input": True,
    "upsample": "bilinear",
}
_PATCHGAN_DEFAULTS: dict[str, Any] = {"base_channels": 64, "n_layers": 3, "norm": "batch", "spectral_norm": False}


class DenoiseTask(Task):
    """UNet (+ PatchGAN) denoiser trained on the fly from clean images and a corruption spec."""

    name = "denoise"
    loss_names_G = ("l1", "mse", "psnr", "adv", "perc")
    loss_names_D = ("real", "fake")
    adversarial_term = "adv"
    visual_names = ("input", "output", "target")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The full-size GPU recipe; every ``task`` key below is a valid YAML/``--set`` option."""
        return {
            "task": {
                "dataset": "photos",          # photos | fashion-mnist
                "spec": "gaussian:sigma=5-50",
                "quantize": True,             # round the noisy input to 8 bits, as files are
                "patch_size": 256,
                "scale_range": [1.0, 1.0],    # crop side = patch_size x U(range), downscaled (bicubic) to patch_size
                "patches_per_image": 512,     # epoch length = this x training photos
                "val_images": 2,              # training photos held back for validation
                "val_patch_size": 256,
                "val_patches_per_image": 4,
                "val_size": 2000,             # fashion-mnist: last N training images held back
                "cache": True,                # decode photos once (multi-megapixel PNGs are slow)
                "unet": dict(_UNET_DEFAULTS, base_channels=64, convs_per_level=2),
                "patchgan": dict(_PATCHGAN_DEFAULTS),
                "lambda_l1": 1.0,
                "lambda_mse": 0.0,
                "lambda_psnr": 0.0,           # per-image -PSNR in dB (NAFNet); ~0.002 gives L1's gradient scale
                "lambda_adv": 0.005,
                "lambda_perc": 0.0,
                "gan_mode": "vanilla",        # vanilla | lsgan | hinge
                "label_smoothing": 0.9,       # real targets for D (null = off; [lo, hi] = random)
                "d_conditional": False,       # D sees (noisy input, image) instead of the image alone
                "vgg_weights": None,          # path to vgg16-397923af.pth (else $RESTORE_VGG16_WEIGHTS / hub cache)
                "vgg_pretrained": True,       # False: random VGG (tests only)
            },
            "steps": 200_000,
            "batch_size": 16,
            "num_workers": 4,
            "ema_decay": 0.999,
            "d_noise_std": 0.05,
            "d_noise_anneal_steps": 50_000,
            "val_every": 5000,
            "image_every": 2000,
            "ckpt_every": 5000,
            "log_every": 100,
            "optim": {
                "G": {"lr": 2e-4, "betas": [0.9, 0.999], "schedule": "cosine", "warmup": 1000, "min_lr_factor": 0.01,
                      "grad_clip": 1.0},
                "D": {"lr": 1e-4, "betas": [0.5, 0.999], "schedule": "cosine", "min_lr_factor": 0.01},
            },
        }

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        opts = merge_task_options(self.defaults()["task"], options, ("unet", "patchgan"), DenoiseConfigError)
        super().__init__(opts)
        self._validate()
        from restore.corrupt import CorruptionSpecError, parse_spec

        try:
            self.corruption = parse_spec(opts["spec"])
        except CorruptionSpecError as e:
            raise DenoiseConfigError(f"task.spec {opts['spec']!r}: {e}") from None
        if self.corruption.uses_masks:
            raise DenoiseConfigError(f"task.spec {opts['spec']!r}: masks belong to the inpaint task, not denoise")
        self.channels = 1 if opts["dataset"] == "fashion-mnist" else 3
        self.use_gan = float(opts["lambda_adv"]) > 0
        self.adv_loss: nn.Module | None = None
        if self.use_gan:
            from restore.losses import AdversarialLoss

            sm = opts["label_smoothing"]
            if opts["gan_mode"] == "hinge":
                sm = None  # hinge has no target labels to smooth
            self.adv_loss = AdversarialLoss(opts["gan_mode"], smoothing=tuple(sm) if isinstance(sm, list) else sm)
        else:
            # no D: declare only what is computed, so nothing logs a constant zero
            self.loss_names_G = ("l1", "mse", "psnr", "perc")
            self.loss_names_D = ()
            self.adversarial_term = None
        self.perceptual: nn.Module | None = None
        self.perc_enabled = float(opts["lambda_perc"]) > 0 and self._build_perceptual()
        unused = {"perc"} if not self.perc_enabled else set()
        unused |= {k for k in _PIXEL_LOSSES if float(opts[f"lambda_{k}"]) == 0}
        self.loss_names_G = tuple(n for n in self.loss_names_G if n not in unused)

    def objective(self, which: str) -> tuple[str, ...]:  # type: ignore[override]
        """All declared terms; per instance, because the L1-only/no-VGG variants declare fewer."""
        return tuple(self.loss_names_G if which == "G" else self.loss_names_D)

    # ---- options -------------------------------------------------------------------
    def _validate(self) -> None:
        o = self.options

        def bad(key: str, why: str) -> DenoiseConfigError:
            return DenoiseConfigError(f"task.{key}: {why}, got {o[key]!r}")

        if o["dataset"] not in _DATASETS:
            raise bad("dataset", f"must be one of {', '.join(_DATASETS)}")
        for key in ("patch_size", "patches_per_image", "val_patch_size", "val_patches_per_image"):
            if not is_int(o[key]) or o[key] < 1:
                raise bad(key, "must be a positive integer")
        for key in ("val_images", "val_size"):
            if not is_int(o[key]) or o[key] < 0:
                raise bad(key, "must be an integer >= 0")
        why = scale_range_error(o["scale_range"])
        if why:
            raise bad("scale_range", why)
        if o["dataset"] == "fashion-mnist" and list(o["scale_range"]) != [1.0, 1.0]:
            raise bad("scale_range", "applies to photos; Fashion-MNIST images are used whole")
        for key in [f"lambda_{k}" for k in _PIXEL_LOSSES] + ["lambda_adv", "lambda_perc"]:
            if not is_number(o[key]) or o[key] < 0:
                raise bad(key, "must be a finite number >= 0")
        if all(o[f"lambda_{k}"] == 0 for k in _PIXEL_LOSSES):
            raise bad("lambda_l1", "task.lambda_mse and task.lambda_psnr are all 0: the output would learn no pixel loss")
        if o["gan_mode"] not in ("vanilla", "lsgan", "hinge"):
            raise bad("gan_mode", "must be vanilla, lsgan or hinge")
        if o["unet"].get("norm") == "instance":
            # instance statistics depend on the tile, so tiled restoring would not equal whole-image restoring
            raise DenoiseConfigError("task.unet.norm: 'instance' breaks tiled inference; use batch, group or none")

    def _build_perceptual(self) -> bool:
        """Build the VGG16 perceptual loss; False (with a warning) when its weights are not on disk."""
        from restore.losses import PerceptualLoss, VGGWeightsMissing

        try:
            self.perceptual = PerceptualLoss(weights_path=self.options["vgg_weights"],
                                             pretrained=bool(self.options["vgg_pretrained"]))
        except VGGWeightsMissing as e:
            log.warning("denoise: perceptual term switched off (lambda_perc=%g ignored): %s",
                        self.options["lambda_perc"], e)
            return False
        return True

    # ---- construction -------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        from restore.models.blocks import ModelConfigError
        from restore.models.patchgan import PatchGAN
        from restore.models.unet import UNet

        try:
            models: dict[str, nn.Module] = {
                "G": UNet(in_channels=self.channels, out_channels=self.channels, **self.options["unet"])
            }
            if self.use_gan:
                d_in = 2 * self.channels if self.options["d_conditional"] else self.channels
                models["D"] = PatchGAN(in_channels=d_in, **self.options["patchgan"])
        except (TypeError, ModelConfigError) as e:
            raise DenoiseConfigError(f"task.unet / task.patchgan: {e}") from None
        if self.use_gan:
            smallest = models["D"].min_input_size()
            size = self._train_size()
            if size < smallest:
                raise DenoiseConfigError(
                    f"task.patch_size: the PatchGAN with n_layers={models['D'].n_strided} needs patches of at "
                    f"least {smallest}px, training images are {size}px (raise patch_size or lower patchgan.n_layers)"
                )
        return models

    def _train_size(self) -> int:
        return 28 if self.options["dataset"] == "fashion-mnist" else int(self.options["patch_size"])

    def build_datasets(self, data: str) -> tuple[Dataset, Dataset | None]:
        """Photos: per-photo patch datasets, ``val_images`` photos held back; Fashion-MNIST: train split, tail held back."""
        if self.options["dataset"] == "fashion-mnist":
            return self._fashion_datasets(data)
        return self._photo_datasets(data)

    def _photo_datasets(self, data: str) -> tuple[Dataset, Dataset | None]:
        o = self.options
        train, val, self._data_info = photo_patch_datasets(
            data, task="denoise", error=DenoiseConfigError,
            patch_size=crop_load_size(o["patch_size"], o["scale_range"]),  # rescale() brings them to patch_size
            patches_per_image=o["patches_per_image"], val_images=o["val_images"],
            val_patch_size=o["val_patch_size"], val_patches_per_image=o["val_patches_per_image"],
            cache=o["cache"], val_seed=1234,
        )
        return train, val

    def _fashion_datasets(self, data: str) -> tuple[Dataset, Dataset | None]:
        from restore.data import IdxDataset, IdxError

        try:
            full = IdxDataset(data or None, "train")
        except (IdxError, FileNotFoundError) as e:
            raise DenoiseConfigError(f"--data {data}: {e}") from None
        n_val = min(self.options["val_size"], len(full) - 1)
        n_train = len(full) - n_val
        train = Subset(full, range(n_train))
        val = Subset(full, range(n_train, len(full))) if n_val else None
        self._data_info = {"train_images": n_train, "val_images": n_val, "split": "train"}
        return train, val

    # ---- one step -----------------------------------------------------------------
    def rescale(self, target: Tensor, generator: torch.Generator, patch: int | None = None) -> Tensor:
        """Training crops (side ``ceil(patch x scale_range[1])``) -> ``patch``-px patches at a random scale
        (bicubic, antialiased); the identity for ``scale_range: [1, 1]`` and for Fashion-MNIST."""
        if self.options["dataset"] != "photos":
            return target
        return scaled_crop(target.float(), int(patch or self.options["patch_size"]), self.options["scale_range"],
                           generator, mode="bicubic")

    def degrade(self, target: Tensor, generator: torch.Generator | RandomStreams) -> tuple[Tensor, Tensor | None]:
        """The network's training input for clean ``target`` and the sigma drawn (None for other specs):
        the task's corruption, rounded to 8 bits when ``quantize`` (as files are). One place, so anything
        that must see the training distribution (``train/recalibrate_bn.py``) sees exactly this."""
        degraded = self.corruption(target, generator=generator)
        noisy = degraded.input
        if self.options["quantize"]:
            noisy = noisy.clamp(0, 1).mul(255).round().div(255)
        return noisy, degraded.sigma

    def prepare_batch(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Move clean images to the device and corrupt them there with the trainer's generator."""
        batch = super().prepare_batch(batch, ctx)
        if ctx.training:
            # validation crops keep their native scale, so the curve stays comparable across runs
            batch["target"] = self.rescale(batch["target"], ctx.generator)
        batch["input"], sigma = self.degrade(batch["target"], ctx.streams)
        if sigma is not None:
            batch["sigma"] = sigma
        return batch

    def forward(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        return {"output": G(batch["input"])}

    def _d_input(self, batch: dict[str, Any], image: Tensor, ctx: StepContext) -> Tensor:
        x = torch.cat([batch["input"], image], dim=1) if self.options["d_conditional"] else image
        return ctx.d_noise(x)

    def generator_losses(
        self, batch: dict[str, Any], out: dict[str, Tensor], D: nn.Module | None, ctx: StepContext
    ) -> LossTerms:
        o = self.options
        output, target = out["output"], batch["target"]
        diff = output.float() - target.float()
        terms: LossTerms = {}
        if "l1" in self.loss_names_G:
            terms["l1"] = o["lambda_l1"] * diff.abs().mean()
        if "mse" in self.loss_names_G:
            terms["mse"] = o["lambda_mse"] * diff.square().mean()
        if "psnr" in self.loss_names_G:
            from restore.losses import psnr_loss

            terms["psnr"] = o["lambda_psnr"] * psnr_loss(output, target)
        if self.use_gan:
            if D is None:
                raise RuntimeError("denoise: lambda_adv > 0 but the trainer passed no discriminator")
            pred = D(self._d_input(batch, output, ctx))
            terms["adv"] = o["lambda_adv"] * self.adv_loss(pred, True, for_discriminator=False)
        if self.perc_enabled:
            follow_device(self.perceptual, output.device)
            # VGG sees the clamped image a user would see; the L1 term keeps gradients outside [0, 1]
            terms["perc"] = o["lambda_perc"] * self.perceptual(output.float().clamp(0, 1), target.float())
        return terms

    def discriminator_losses(
        self, batch: dict[str, Any], out: dict[str, Tensor], D: nn.Module, ctx: StepContext
    ) -> LossTerms:
        real = D(self._d_input(batch, batch["target"], ctx))
        fake = D(self._d_input(batch, out["output"], ctx))
        return discriminator_terms(self.adv_loss, real, fake, ctx, self.options["gan_mode"])

    @torch.no_grad()
    def validation_step(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> tuple[Tensor, Tensor]:
        output = G(batch["input"])
        return output.float().clamp(0, 1), batch["target"].float()

    def visuals(self, batch: dict[str, Any], out: dict[str, Tensor]) -> dict[str, Tensor]:
        v = super().visuals(batch, out)
        return {k: t[:8].detach().float().clamp(0, 1) for k, t in v.items()}

    def model_card(self) -> dict[str, Any]:
        o = self.options
        card: dict[str, Any] = {
            "task": self.name,
            "corruption": self.corruption.spec,
            "input": "gray 1x28x28 in [0,1]" if self.channels == 1 else "RGB NCHW in [0,1] (gray is repeated)",
            "dataset": o["dataset"],
            "losses": {
                "lambda_l1": o["lambda_l1"],
                "lambda_mse": o["lambda_mse"],
                "lambda_psnr": o["lambda_psnr"],
                "lambda_adv": o["lambda_adv"] if self.use_gan else 0.0,
                "lambda_perc": o["lambda_perc"] if self.perc_enabled else 0.0,
                "gan_mode": o["gan_mode"] if self.use_gan else None,
                "discriminator": dict(o["patchgan"], conditional=o["d_conditional"]) if self.use_gan else None,
            },
            "patch_size": o["patch_size"] if o["dataset"] == "photos" else 28,
            "input_quantized_8bit": bool(o["quantize"]),
            "options": {k: v for k, v in o.items() if k not in ("unet", "patchgan")},
        }
        if getattr(self, "_data_info", None):
            card["data_split"] = self._data_info
        if float(o["lambda_perc"]) > 0 and not self.perc_enabled:
            card["notes"] = ["perceptual term requested but switched off: VGG16 ImageNet weights were not available"]
        return card


# --------------------------------------------------------------------------- restoring


def add_arguments(parser: argparse._ActionsContainer) -> None:
    """``restore denoise`` flags of this task."""
    parser.add_argument(
        "--tile-overlap", type=int, default=DEFAULT_TILE_OVERLAP, metavar="PX",
        help=f"pixels shared by neighbouring tiles, blended linearly (default {DEFAULT_TILE_OVERLAP})",
    )
    add_ensemble_argument(parser)


def _model_channels(model: nn.Module, card: dict[str, Any]) -> int:
    c = getattr(model, "in_channels", None)
    if c is None:
        c = (card.get("config") or {}).get("in_channels", 3)
    return int(c)


def _aligned_size(size: int, tile: int, overlap: int, multiple: int) -> int:
    """Smallest padded size >= ``size`` for which `restore.tiling.tiled` puts every tile start on a multiple.

    ``tiled`` spaces n tiles evenly: start_i = i * (size - tile) / (n - 1); that is a multiple of
    ``multiple`` exactly when (size - tile) is divisible by (n - 1) * multiple. ``tile`` must itself
    be a multiple. The extra padding is at most (n - 1) * multiple pixels (a few percent).
    """
    s = -(-size // multiple) * multiple
    if s <= tile:
        return s
    while True:
        n = math.ceil((s - overlap) / (tile - overlap))
        if n <= 1 or (s - tile) % ((n - 1) * multiple) == 0:
            return s
        s += multiple


def _reflect_pad(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """Reflect-pad NCHW ``x`` (mirroring repeatedly for pads larger than the image; replicate for 1-px sides)."""
    import torch.nn.functional as F

    for dim, (before, after) in ((2, (top, bottom)), (3, (left, right))):
        while before > 0 or after > 0:
            size = x.shape[dim]
            if size == 1:
                pad = (0, 0, before, after) if dim == 2 else (before, after, 0, 0)
                x = F.pad(x, pad, mode="replicate")
                break
            b, a = min(before, size - 1), min(after, size - 1)
            x = F.pad(x, (0, 0, b, a) if dim == 2 else (b, a, 0, 0), mode="reflect")
            before, after = before - b, after - a
    return x


def restore_batch(
    model: nn.Module,
    batch: dict[str, Tensor],
    card: dict[str, Any],
    *,
    tile: int = 512,
    device: torch.device | str | None = None,
    options: argparse.Namespace | None = None,
) -> Tensor:
    """Denoise ``batch["input"]`` (NCHW in [0, 1], C = 1 or 3); returns N x C x H x W in [0, 1].

    A colour model sees a gray image as three equal channels (the output is
    averaged back to one); a gray model (Fashion-MNIST) denoises each colour
    channel on its own. ``tile > 0`` runs overlap-blended tiles of at most
    ``tile`` pixels, so memory is bounded whatever the image size; tiles are
    padded to the UNet's stride by `restore.tiling.tiled` and cropped back.
    """
    from restore.tiling import self_ensemble, tiled

    x = batch.get("input") if isinstance(batch, dict) else None
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"restore_batch: batch['input'] must be an NCHW tensor, got {getattr(x, 'shape', type(x))}")
    _, c, h, w = x.shape
    cin = _model_channels(model, card)
    if c not in (1, 3):
        raise ValueError(f"restore_batch: images must have 1 or 3 channels (alpha is kept aside by the CLI), got {c}")
    device, dtype = model_device_dtype(model, device)
    overlap = int(option(options, "tile_overlap", DEFAULT_TILE_OVERLAP))
    if overlap < 0:
        raise ValueError(f"--tile-overlap must be >= 0, got {overlap}")
    if tile < 0:
        raise ValueError(f"--tile must be >= 0 (0 = whole image), got {tile}")
    mode = ensemble_mode(options, card)

    inp = to_model_channels(x.float(), cin, ValueError, "model")

    def run(t: Tensor) -> Tensor:
        return self_ensemble(lambda u: model(u.to(device, dtype)).float(), t, mode)

    # Whole image: the UNet pads itself (reflect, split between both sides) exactly as in training
    # and validation; a model trained on one size (Fashion-MNIST: 28 px in a 32 px frame) depends on
    # that layout. Tiles: the same top/left padding, so every tile sits on the whole image's stride
    # grid, plus bottom/right padding up to a size where `tiled` puts every tile start on a multiple
    # of the stride. Tiled and whole-image outputs then differ only where a tile border cuts the
    # receptive field (blended away by the overlap ramps) and at the bottom/right image border.
    m = int(getattr(model, "multiple", 1))
    if tile and (h > tile or w > tile):
        t = max(m, tile // m * m)
        ov = min(overlap, t // 2)
        top, left = ((-h) % m) // 2, ((-w) % m) // 2
        hp, wp = _aligned_size(h + top, t, ov, m), _aligned_size(w + left, t, ov, m)
        padded = _reflect_pad(inp, top, hp - h - top, left, wp - w - left)
        out = tiled(run, padded, tile=t, overlap=ov, multiple=m)[..., top : top + h, left : left + w]
    else:
        out = run(inp)
    return from_model_channels(out, c, cin).clamp_(0.0, 1.0)


def demo(model: nn.Module, card: dict[str, Any], photo: Tensor, seed: int, *,
         device: torch.device | str, tile: int = 512) -> list[tuple[str, Tensor]]:
    """Panels for ``restore demo``: photo models denoise the bundled photo; Fashion-MNIST models their test images.

    A model trained on 28x28 clothing says little on a 512 px photo, so a
    ``fashion-mnist`` card shows 8 test images (x4 nearest upscale, one column
    each for noisy / restored / clean) when the IDX files are installed, and
    falls back to the photo otherwise.
    """
    import torch.nn.functional as F

    from restore import corrupt

    clean = photo.float()
    if card.get("dataset") == "fashion-mnist":
        try:
            from restore.data import load_idx_split

            images, _ = load_idx_split(None, "test")
            pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(int(seed)))[:8]
            clean = torch.from_numpy(images[pick.numpy()].copy()).float().div_(255.0).unsqueeze(1)
        except (OSError, ValueError):
            pass  # no Fashion-MNIST here: the photo stands in
    noisy = corrupt.apply(clean, str(card["corruption"]), seed).input
    with torch.no_grad():
        out = restore_batch(model, {"input": noisy}, card, tile=tile, device=device).cpu()
    if clean.shape[0] == 1:
        return [("input", noisy), ("restored", out), ("target", clean)]

    def column(x: Tensor) -> Tensor:  # N1HW -> 1 x 1 x (N*4H) x 4W
        x = F.interpolate(x, scale_factor=4, mode="nearest")
        return torch.cat(list(x), dim=1)[None]

    return [("input", column(noisy)), ("restored", column(out)), ("target", column(clean))]
