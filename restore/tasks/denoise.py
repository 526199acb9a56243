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

Restoring: `restore.restorers.denoise` (the restore pipeline's hooks).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.data import Dataset, Subset

from restore.corrupt import CorruptionSpecError, RandomStreams, parse_spec
from restore.data import IdxDataset, IdxError
from restore.engine.config import ConfigError
from restore.engine.task import LossTerms, StepContext, Task
from restore.losses import AdversarialLoss, PerceptualLoss, VGGWeightsMissing, psnr_loss
from restore.models.blocks import ModelConfigError
from restore.models.cond_unet import CondUNet
from restore.models.ffdnet import FFDNet
from restore.models.patchgan import PatchGAN
from restore.models.unet import UNet
from restore.tasks.common import (
    crop_load_size,
    discriminator_terms,
    follow_device,
    is_int,
    is_number,
    merge_task_options,
    photo_patch_datasets,
    scale_range_error,
    scaled_crop,
)

__all__ = ["DenoiseTask", "DenoiseConfigError"]

log = logging.getLogger("restore.engine")


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
# The noise-level-conditioned generator (``generator: ffdnet``, restore.models.ffdnet).
_FFDNET_DEFAULTS: dict[str, Any] = {"width": 64, "depth": 10, "block": "conv", "scale": 2, "pad_mode": "reflect"}
#: ``task.generator`` choices: the blind UNet; FFDNet, or the UNet with a noise-map input (``cond-unet``, options
#: from ``task.unet``), which are given the sigma the corruption drew.
_GENERATORS = ("unet", "ffdnet", "cond-unet")


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
                "generator": "unet",          # unet (blind) | ffdnet | cond-unet (given each image's sigma)
                "unet": dict(_UNET_DEFAULTS, base_channels=64, convs_per_level=2),
                "ffdnet": dict(_FFDNET_DEFAULTS),
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
        opts = merge_task_options(self.defaults()["task"], options, ("unet", "patchgan", "ffdnet"),
                                  DenoiseConfigError)
        super().__init__(opts)
        self._validate()

        try:
            self.corruption = parse_spec(opts["spec"])
        except CorruptionSpecError as e:
            raise DenoiseConfigError(f"task.spec {opts['spec']!r}: {e}") from None
        if self.corruption.uses_masks:
            raise DenoiseConfigError(f"task.spec {opts['spec']!r}: masks belong to the inpaint task, not denoise")
        #: the generator is given the noise level the corruption drew for each image
        self.conditioned = opts["generator"] != "unet"
        if self.conditioned and self.corruption(torch.zeros(1, 1, 2, 2)).sigma is None:
            raise DenoiseConfigError(f"task.spec {opts['spec']!r}: generator {opts['generator']!r} is given the sigma, "
                                     "so the spec must draw one (gaussian:sigma=A-B, e.g. 0-60)")
        self.channels = 1 if opts["dataset"] == "fashion-mnist" else 3
        self.use_gan = float(opts["lambda_adv"]) > 0
        self.adv_loss: nn.Module | None = None
        if self.use_gan:
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

    # ---- options -------------------------------------------------------------------
    def _validate(self) -> None:
        o = self.options

        def bad(key: str, why: str) -> DenoiseConfigError:
            return DenoiseConfigError(f"task.{key}: {why}, got {o[key]!r}")

        if o["dataset"] not in _DATASETS:
            raise bad("dataset", f"must be one of {', '.join(_DATASETS)}")
        if o["generator"] not in _GENERATORS:
            raise bad("generator", f"must be one of {', '.join(_GENERATORS)}")
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
        try:
            kind = self.options["generator"]
            G: nn.Module = (FFDNet(in_channels=self.channels, **self.options["ffdnet"]) if kind == "ffdnet"
                            else CondUNet(in_channels=self.channels, **self.options["unet"]) if kind == "cond-unet"
                            else UNet(in_channels=self.channels, out_channels=self.channels, **self.options["unet"]))
            models: dict[str, nn.Module] = {"G": G}
            if self.use_gan:
                d_in = 2 * self.channels if self.options["d_conditional"] else self.channels
                models["D"] = PatchGAN(in_channels=d_in, **self.options["patchgan"])
        except (TypeError, ModelConfigError) as e:
            where = "ffdnet" if self.options["generator"] == "ffdnet" else "unet"
            raise DenoiseConfigError(f"task.{where} / task.patchgan: {e}") from None
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

    def _generate(self, G: nn.Module, batch: dict[str, Any]) -> Tensor:
        """G on the noisy input; a conditioned G also gets each image's sigma (0-1 units, as the pipeline gives)."""
        if self.conditioned:
            return G(batch["input"], batch["sigma"].to(batch["input"].dtype) / 255.0)
        return G(batch["input"])

    def forward(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        return {"output": self._generate(G, batch)}

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
        output = self._generate(G, batch)
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
            "noise_conditioned": self.conditioned,
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
            "options": {k: v for k, v in o.items() if k not in ("unet", "patchgan", "ffdnet")},
        }
        if getattr(self, "_data_info", None):
            card["data_split"] = self._data_info
        if float(o["lambda_perc"]) > 0 and not self.perc_enabled:
            card["notes"] = ["perceptual term requested but switched off: VGG16 ImageNet weights were not available"]
        return card
