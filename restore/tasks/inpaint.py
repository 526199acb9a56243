"""Free-form inpainting: gated-convolution coarse-to-fine generator + SN-PatchGAN (issue 8).

Training side (`InpaintTask`, driven by `restore.engine.Trainer`):

* G = `restore.models.inpaint.InpaintGenerator` (coarse gated network, then a
  refinement network with self-attention over known positions). Its
  ``output`` is the refined prediction inside the hole and the input's own
  pixels outside, selected with ``torch.where``: known pixels are never touched.
* D = `restore.models.inpaint.SNPatchGAN` judging the composited image (in
  [-1, 1]) together with the hole mask, with the trainer's annealed instance
  noise (`StepContext.d_noise`) on the image it is shown. Built only when
  ``lambda_adv > 0``.
* Losses, each switchable so its effect can be measured (the DeepFill v2
  recipe is L1 + hinge only, ``train/configs/inpaint-deepfill.yaml``):
  L1 on the coarse and on the refined full-frame predictions, hole and valid
  regions weighted separately and each normalised by its own area
  (`restore.losses.l1_loss`); adversarial (hinge by default); perceptual and
  style (Gram) losses (Liu et al. 2018) on ImageNet features, computed once
  for both: ``task.backbone`` squeezenet (shipped in weights/backbones) or
  vgg16 (switched off with a logged warning when its weights are not on
  disk; nothing is downloaded); total variation inside the
  dilated hole.
* Masks are drawn on the fly in `prepare_batch` from ``mask:freeform`` /
  ``mask:box`` spec strings with a coverage range (`restore.corrupt`), with the
  trainer's checkpointed generator, so a resumed run sees the same masks.
  Each image picks one of ``task.masks`` with probability ``task.mask_probs``.
* Data: random crops of a photo folder, optionally rescaled (``scale_range``)
  so that a small training patch shows a scene at the scale the model will
  meet at its working resolution. A few photos are held back for validation.

Restoring: `restore.restorers.inpaint` (working resolution, known pixels kept
bit-exactly, pull-push fill at full resolution).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.data import Dataset

from restore.corrupt import CorruptionSpecError, RandomStreams, parse_spec
from restore.engine.config import ConfigError
from restore.engine.task import LossTerms, StepContext, Task
from restore.losses import (
    BACKBONES,
    SQUEEZE_PERCEPTUAL_LAYERS,
    SQUEEZE_STYLE_LAYERS,
    AdversarialLoss,
    PerceptualLoss,
    SqueezeFeatures,
    StyleLoss,
    VGGFeatures,
    VGGWeightsMissing,
    l1_loss,
    tv_loss,
)
from restore.models.blocks import ModelConfigError
from restore.models.inpaint import InpaintGenerator, SNPatchGAN
from restore.models.squeezenet import SqueezeNetWeightsMissing
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

__all__ = [
    "DEFAULT_WORK_SIZE",
    "InpaintConfigError",
    "InpaintInputError",
    "InpaintTask",
]

log = logging.getLogger("restore.engine")

#: Shorter image side the model works at when neither ``--work-size`` nor the card says otherwise.
DEFAULT_WORK_SIZE = 512



class InpaintConfigError(ConfigError):
    """An inpaint task option or its data is invalid (the message names which and why); exit status 2."""


class InpaintInputError(ValueError):
    """An image/mask pair cannot be inpainted (the message says why); fails that file only."""


# The GPU recipe (DeepFill v2 widths); the CPU run in train/configs narrows it.
_GENERATOR_DEFAULTS: dict[str, Any] = {
    "base_channels": 48,
    "dilations": [2, 4, 8, 16],
    "attention": True,
    "attend_to_known": True,
    "kv_pool": 2,
    "fill_value": 0.5,
    "upsample": "nearest",
    "act": "elu",
}
_DISCRIMINATOR_DEFAULTS: dict[str, Any] = {"base_channels": 64, "n_layers": 6}


class InpaintTask(Task):
    """Gated-conv inpainter trained from clean photos and masks drawn on the fly."""

    name = "inpaint"
    loss_names_G = ("l1_coarse", "l1_refined", "adv", "perc", "style", "tv")
    loss_names_D = ("real", "fake")
    adversarial_term = "adv"
    visual_names = ("masked", "coarse", "refined", "target")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The full-size GPU recipe; every ``task`` key below is a valid YAML/``--set`` option."""
        return {
            "task": {
                "patch_size": 256,
                "scale_range": [1.0, 3.0],       # crop side = patch_size x U(range), resized to patch_size
                "patches_per_image": 512,        # epoch length = this x training photos
                "val_images": 2,                 # training photos held back for validation
                "val_patches_per_image": 4,
                "cache": True,                   # decode photos once (multi-megapixel PNGs are slow)
                "masks": ["mask:freeform,coverage=0.05-0.5", "mask:box,coverage=0.05-0.35"],
                "mask_probs": [0.8, 0.2],
                "generator": dict(_GENERATOR_DEFAULTS),
                "discriminator": dict(_DISCRIMINATOR_DEFAULTS),
                "lambda_hole": 6.0,              # L1 inside the hole (Liu et al. 2018 weights)
                "lambda_valid": 1.0,             # L1 on known pixels of the full-frame prediction
                "lambda_coarse": 1.0,            # factor on the coarse stage's L1
                "lambda_adv": 0.1,
                "gan_mode": "hinge",             # hinge | vanilla | lsgan
                "lambda_perc": 0.05,
                "lambda_style": 120.0,
                "lambda_tv": 0.1,
                "tv_dilation": 1,
                "backbone": "squeezenet",        # feature network of the perceptual / style terms: squeezenet
                                                 # (ships in weights/backbones) | vgg16 (when its weights are on disk)
                "vgg_weights": None,             # backbone weights file (else the backbone's env var / default place)
                "vgg_pretrained": True,          # False: random backbone (tests only)
                "work_size": DEFAULT_WORK_SIZE,  # recorded in the card: shorter side used when restoring
            },
            "steps": 300_000,
            "batch_size": 16,
            "num_workers": 6,
            "ema_decay": 0.999,
            "d_noise_std": 0.1,
            "d_noise_anneal_steps": 100_000,
            "val_every": 5000,
            "image_every": 2000,
            "ckpt_every": 5000,
            "log_every": 100,
            "optim": {
                "G": {"lr": 1e-4, "betas": [0.5, 0.999], "schedule": "cosine", "warmup": 1000,
                      "min_lr_factor": 0.05, "grad_clip": 10.0},
                "D": {"lr": 1e-4, "betas": [0.5, 0.999], "schedule": "cosine", "min_lr_factor": 0.05},
            },
        }

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        opts = merge_task_options(self.defaults()["task"], options, ("generator", "discriminator"), InpaintConfigError)
        super().__init__(opts)
        self._validate()
        self.corruptions = self._parse_masks()
        self.use_gan = float(opts["lambda_adv"]) > 0
        self.adv_loss: nn.Module | None = None
        names = list(type(self).loss_names_G)
        if self.use_gan:
            self.adv_loss = AdversarialLoss(opts["gan_mode"])
        else:
            names.remove("adv")
            self.loss_names_D = ()
            self.adversarial_term = None
        self.features: nn.Module | None = None
        self.perceptual: nn.Module | None = None
        self.style: nn.Module | None = None
        self._backbone_note: str | None = None
        want_perc, want_style = float(opts["lambda_perc"]) > 0, float(opts["lambda_style"]) > 0
        if (want_perc or want_style) and not self._build_backbone(want_perc, want_style):
            want_perc = want_style = False
        self.perc_enabled, self.style_enabled = want_perc, want_style
        if not self.perc_enabled:
            names.remove("perc")
        if not self.style_enabled:
            names.remove("style")
        if float(opts["lambda_tv"]) <= 0:
            names.remove("tv")
        if float(opts["lambda_coarse"]) <= 0:
            names.remove("l1_coarse")
        # declare only what is computed, so nothing logs a constant zero
        self.loss_names_G = tuple(names)

    # ---- options -------------------------------------------------------------------
    def _validate(self) -> None:
        o = self.options

        def bad(key: str, why: str) -> InpaintConfigError:
            return InpaintConfigError(f"task.{key}: {why}, got {o[key]!r}")

        for key in ("patch_size", "patches_per_image", "val_patches_per_image", "work_size"):
            if not is_int(o[key]) or o[key] < 1:
                raise bad(key, "must be a positive integer")
        if o["patch_size"] < 16:
            raise bad("patch_size", "must be >= 16 (free-form strokes need room)")
        if not is_int(o["val_images"]) or o["val_images"] < 0:
            raise bad("val_images", "must be an integer >= 0")
        why = scale_range_error(o["scale_range"])
        if why:
            raise bad("scale_range", why)
        for key in ("lambda_hole", "lambda_valid", "lambda_coarse", "lambda_adv", "lambda_perc", "lambda_style",
                    "lambda_tv"):
            if not is_number(o[key]) or o[key] < 0:
                raise bad(key, "must be a finite number >= 0")
        if o["lambda_hole"] == 0 and o["lambda_valid"] == 0:
            raise InpaintConfigError("task.lambda_hole / task.lambda_valid: at least one L1 weight must be > 0")
        if not is_int(o["tv_dilation"]) or o["tv_dilation"] < 0:
            raise bad("tv_dilation", "must be an integer >= 0")
        if o["backbone"] not in BACKBONES:
            raise bad("backbone", f"must be one of {', '.join(BACKBONES)}")
        if o["gan_mode"] not in ("hinge", "vanilla", "lsgan"):
            raise bad("gan_mode", "must be hinge, vanilla or lsgan")
        masks, probs = o["masks"], o["mask_probs"]
        if isinstance(masks, str):
            masks = o["masks"] = [masks]
        if not isinstance(masks, list) or not masks or not all(isinstance(m, str) for m in masks):
            raise bad("masks", "must be a non-empty list of mask spec strings (mask:freeform / mask:box)")
        if probs is None:
            probs = o["mask_probs"] = [1.0 / len(masks)] * len(masks)
        if (not isinstance(probs, list) or len(probs) != len(masks) or not all(is_number(p) and p >= 0 for p in probs)
                or sum(probs) <= 0):
            raise bad("mask_probs", f"must be {len(masks)} non-negative numbers (one per task.masks entry), not all 0")

    def _parse_masks(self) -> list[Any]:
        out = []
        for spec in self.options["masks"]:
            try:
                c = parse_spec(spec)
            except (CorruptionSpecError, ValueError) as e:
                raise InpaintConfigError(f"task.masks {spec!r}: {e}") from None
            if not c.uses_masks:
                raise InpaintConfigError(f"task.masks {spec!r}: not a mask spec (use mask:freeform or mask:box)")
            out.append(c)
        return out

    def _build_backbone(self, perc: bool, style: bool) -> bool:
        """One shared backbone for both feature losses; False (with a warning) when its weights are absent."""
        o = self.options
        try:
            if o["backbone"] == "squeezenet":
                # the layers of both losses, each loss with its own measured layer weights
                self.features = SqueezeFeatures({**SQUEEZE_PERCEPTUAL_LAYERS, **SQUEEZE_STYLE_LAYERS},
                                           weights_path=o["vgg_weights"], pretrained=bool(o["vgg_pretrained"]))
            else:
                self.features = VGGFeatures(("relu1_2", "relu2_2", "relu3_3", "relu4_3"), weights_path=o["vgg_weights"],
                                       pretrained=bool(o["vgg_pretrained"]))
        except (VGGWeightsMissing, SqueezeNetWeightsMissing) as e:
            self._backbone_note = f"perceptual/style terms requested but switched off: {e}"
            log.warning("inpaint: perceptual and style terms switched off (lambda_perc=%g, lambda_style=%g "
                        "ignored): %s", o["lambda_perc"], o["lambda_style"], e)
            return False
        self.perceptual = PerceptualLoss(features=self.features) if perc else None
        self.style = StyleLoss(features=self.features) if style else None
        return True

    # ---- construction -------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        gen = dict(self.options["generator"])
        gen.setdefault("in_channels", 4)
        try:
            models: dict[str, nn.Module] = {"G": InpaintGenerator(**gen)}
            if self.use_gan:
                d = dict(self.options["discriminator"])
                d["in_channels"] = models["G"].image_channels + 1
                models["D"] = SNPatchGAN(**d)
        except (TypeError, ModelConfigError) as e:
            raise InpaintConfigError(f"task.generator / task.discriminator: {e}") from None
        return models

    def build_datasets(self, data: str) -> tuple[Dataset, Dataset | None]:
        """Per-photo crop datasets; ``val_images`` photos (spread over the sorted list) held back."""
        o = self.options
        # crops of the largest side the scale range asks for; prepare_batch picks the actual scale
        # (validation: the middle of the range)
        load = crop_load_size(o["patch_size"], o["scale_range"])
        train, val, self._data_info = photo_patch_datasets(
            data, task="inpaint", error=InpaintConfigError, patch_size=load,
            patches_per_image=o["patches_per_image"], val_images=o["val_images"], val_patch_size=load,
            val_patches_per_image=o["val_patches_per_image"], cache=o["cache"], val_seed=4321,
        )
        return train, val

    # ---- one step -----------------------------------------------------------------
    def _rescale(self, target: Tensor, ctx: StepContext) -> Tensor:
        """Crop a random square of side patch x U(scale_range) and area-resize it to the patch size."""
        return scaled_crop(target, int(self.options["patch_size"]), self.options["scale_range"],
                           ctx.generator if ctx.training else None, mode="area")

    def draw_masks(self, target: Tensor, streams: RandomStreams) -> Tensor:
        """N1HW hole masks (1 = hole), one spec of ``task.masks`` per image drawn with ``mask_probs``."""
        n = target.shape[0]
        probs = torch.tensor(self.options["mask_probs"], dtype=torch.float32, device=streams.device)
        choice = torch.multinomial(probs.expand(n, -1), 1, generator=streams.generator).flatten().tolist()
        mask = torch.zeros(n, 1, *target.shape[-2:], device=target.device, dtype=target.dtype)
        for k, c in enumerate(self.corruptions):
            idx = [i for i, ch in enumerate(choice) if ch == k]
            if idx:
                mask[idx] = c(target[idx], streams).mask.to(target.dtype)
        return mask

    def prepare_batch(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Move clean crops to the device, rescale them to the patch size and draw the holes there."""
        batch = super().prepare_batch(batch, ctx)
        target = self._rescale(batch["target"].float(), ctx)
        mask = self.draw_masks(target, ctx.streams)
        batch["target"] = target
        batch["mask"] = mask
        # the network never sees hole pixels (it fills them itself); 0 here only makes the logged input readable
        batch["input"] = target.masked_fill(mask.bool(), 0.0)
        return batch

    def forward(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        return G(batch["input"], batch["mask"])

    def _d_input(self, image: Tensor, mask: Tensor, ctx: StepContext) -> Tensor:
        # D works in [-1, 1] like G; instance noise on the image only: the mask is the same
        # condition for real and fake, noise on it would carry no information
        return torch.cat([ctx.d_noise(image * 2.0 - 1.0), mask.to(image.dtype)], dim=1)

    def generator_losses(
        self, batch: dict[str, Any], out: dict[str, Tensor], D: nn.Module | None, ctx: StepContext
    ) -> LossTerms:
        o = self.options
        target, mask = batch["target"], batch["mask"]
        wh, wv = float(o["lambda_hole"]), float(o["lambda_valid"])
        terms: LossTerms = {
            "l1_refined": l1_loss(out["refined"], target, mask, hole_weight=wh, valid_weight=wv),
        }
        if "l1_coarse" in self.loss_names_G:
            terms["l1_coarse"] = o["lambda_coarse"] * l1_loss(out["coarse"], target, mask, hole_weight=wh,
                                                               valid_weight=wv)
        if self.use_gan:
            if D is None:
                raise RuntimeError("inpaint: lambda_adv > 0 but the trainer passed no discriminator")
            pred = D(self._d_input(out["output"], mask, ctx))
            terms["adv"] = o["lambda_adv"] * self.adv_loss(pred, True, for_discriminator=False)
        if self.perc_enabled or self.style_enabled:
            follow_device(self.features, target.device)
            # composited output and raw prediction (Liu et al. 2018), one VGG pass for both losses
            x = torch.cat([out["output"], out["refined"]], dim=0).float().clamp(0, 1)
            fx = self.features(x)
            with torch.no_grad():
                ft = self.features(target.float())
            fy = {k: torch.cat([v, v], dim=0) for k, v in ft.items()}
            if self.perc_enabled:
                terms["perc"] = o["lambda_perc"] * self.perceptual.from_features(fx, fy)
            if self.style_enabled:
                terms["style"] = o["lambda_style"] * self.style.from_features(fx, fy)
        if "tv" in self.loss_names_G:
            terms["tv"] = o["lambda_tv"] * tv_loss(out["output"], mask, dilation=int(o["tv_dilation"]))
        return terms

    def discriminator_losses(
        self, batch: dict[str, Any], out: dict[str, Tensor], D: nn.Module, ctx: StepContext
    ) -> LossTerms:
        mask = batch["mask"]
        real = D(self._d_input(batch["target"], mask, ctx))
        fake = D(self._d_input(out["output"], mask, ctx))
        return discriminator_terms(self.adv_loss, real, fake, ctx, self.options["gan_mode"])

    @torch.no_grad()
    def validation_step(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> tuple[Tensor, Tensor]:
        out = G(batch["input"], batch["mask"])
        return out["output"].float().clamp(0, 1), batch["target"].float()

    def visuals(self, batch: dict[str, Any], out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Masked input (holes white) / coarse / refined (both pasted into the known region) / target."""
        mask = batch["mask"][:8].detach().float().bool()
        target = batch["target"][:8].detach().float()
        known = batch["input"][:8].detach().float()
        return {
            "masked": known.masked_fill(mask, 1.0).clamp(0, 1),
            "coarse": torch.where(mask, out["coarse"][:8].detach().float(), known).clamp(0, 1),
            "refined": out["output"][:8].detach().float().clamp(0, 1),
            "target": target.clamp(0, 1),
        }

    def model_card(self) -> dict[str, Any]:
        o = self.options
        card: dict[str, Any] = {
            "task": self.name,
            "corruption": self.corruptions[0].spec,
            "masks": [c.spec for c in self.corruptions],
            "mask_probs": list(o["mask_probs"]),
            "input": "RGB NCHW in [0,1] + N1HW mask (1 = hole); gray images are repeated to RGB",
            "patch_size": o["patch_size"],
            "scale_range": list(o["scale_range"]),
            "work_size": o["work_size"],
            "losses": {
                "lambda_hole": o["lambda_hole"],
                "lambda_valid": o["lambda_valid"],
                "lambda_coarse": o["lambda_coarse"],
                "lambda_adv": o["lambda_adv"] if self.use_gan else 0.0,
                "gan_mode": o["gan_mode"] if self.use_gan else None,
                "lambda_perc": o["lambda_perc"] if self.perc_enabled else 0.0,
                "lambda_style": o["lambda_style"] if self.style_enabled else 0.0,
                "lambda_tv": o["lambda_tv"],
                "backbone": o["backbone"] if (self.perc_enabled or self.style_enabled) else None,
                "discriminator": dict(o["discriminator"]) if self.use_gan else None,
            },
            "options": {k: v for k, v in o.items() if k not in ("generator", "discriminator")},
        }
        if getattr(self, "_data_info", None):
            card["data_split"] = self._data_info
        if self._backbone_note:
            card["notes"] = [self._backbone_note]
        return card
