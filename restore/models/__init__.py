"""Model architectures, built by name.

A small name -> "module:attribute" mapping instead of an if/elif chain, and
lazy imports so one model's dependencies never break another (docs/design.md).
Every model class stores the keyword arguments it was built with in
``self.config`` so that `restore.weights` can rebuild it from a model card.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch.nn as nn

ARCHITECTURES: dict[str, str] = {
    "unet": "restore.models.unet:UNet",
    "patchgan": "restore.models.patchgan:PatchGAN",
    "vae": "restore.models.vae:ConvVAE",
    "cvae": "restore.models.vae:ConditionalVAE",
    "inpaint": "restore.models.inpaint:InpaintGenerator",
    "sn-patchgan": "restore.models.inpaint:SNPatchGAN",
    "squeezenet": "restore.models.squeezenet:SqueezeNet",
    "squeeze-colorizer": "restore.models.colorizer:SqueezeColorizer",
    "ffdnet": "restore.models.ffdnet:FFDNet",
    "cond-unet": "restore.models.cond_unet:CondUNet",
}


def resolve(name: str) -> type[nn.Module]:
    """Return the class registered under ``name`` (clear error if unknown)."""
    try:
        target = ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise KeyError(f"unknown architecture {name!r}; known: {known}") from None
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build architecture ``name`` with ``kwargs`` (as recorded in a model card)."""
    return resolve(name)(**kwargs)
