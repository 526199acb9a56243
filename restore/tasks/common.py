"""What the image tasks share, written once so that they cannot drift apart.

The denoise, inpaint and colorize tasks were written side by side and grew the
same pieces: merging nested model options over their defaults, the
discriminator's real/fake loss with its ``D/real_mean`` / ``D/fake_mean``
scalars (which the trainer's collapse watch compares), keeping a frozen VGG on
the batch's device, splitting a photo folder into training and held-back
validation patches, and feeding gray or colour files to a 1- or 3-channel
network. Each task module keeps only what is specific to it and calls these.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from restore import io as rio  # module attribute: tests count rio.read_image calls
from restore.data import ImageFolderPatches
from restore.engine.task import LossTerms, StepContext

__all__ = [
    "discriminator_terms",
    "follow_device",
    "from_model_channels",
    "is_int",
    "is_number",
    "list_photos",
    "merge_model_options",
    "merge_task_options",
    "photo_patch_datasets",
    "to_model_channels",
]

log = logging.getLogger("restore.engine")


# --------------------------------------------------------------------------- options


def is_int(value: Any) -> bool:
    """A real integer option: YAML's ``true`` is an ``int`` to Python but never a size or a count."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number (not a bool): loss weights and ranges must not be inf/nan or ``true``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def merge_model_options(
    defaults: Mapping[str, Any],
    given: Any,
    *,
    name: str,
    error: type[Exception],
    cls: type | None = None,
    fixed: Iterable[str] = (),
) -> dict[str, Any]:
    """``{**defaults, **given}`` for a nested ``task.<name>`` mapping of constructor arguments.

    Merging key by key (rather than replacing the mapping) is what lets a run
    change one argument, e.g. ``task.unet.base_channels``, and keep the rest.
    With ``cls``, keys that are not arguments of ``cls.__init__``, or that the
    task sets itself (``fixed``, e.g. channel counts), are rejected up front
    with the list of allowed ones; ``error`` is the task's config error type.
    """
    if given is None:
        given = {}
    what = f"{cls.__name__} arguments" if cls is not None else "constructor arguments"
    if not isinstance(given, dict):
        raise error(f"task.{name}: expected a mapping of {what}, got {given!r}")
    if cls is not None:
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self"} - set(fixed)
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise error(
                f"task.{name}: unknown or fixed {cls.__name__} argument(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
    return {**defaults, **given}


def merge_task_options(
    defaults: Mapping[str, Any], options: Mapping[str, Any] | None, model_keys: Iterable[str], error: type[Exception]
) -> dict[str, Any]:
    """A task's options over its defaults, with each nested model mapping (``model_keys``) merged key by key."""
    opts = {**defaults, **(options or {})}
    for key in model_keys:
        opts[key] = merge_model_options(defaults[key], opts[key], name=key, error=error)
    return opts


# --------------------------------------------------------------------------- training


def discriminator_terms(adv_loss: nn.Module, real: Tensor, fake: Tensor, ctx: StepContext,
                        gan_mode: str) -> LossTerms:
    """D's loss on its outputs for real and fake inputs (half each), and the D/real_mean, D/fake_mean scalars.

    The scalars feed the trainer's collapse watch, which reads their gap as
    "how sure D is": for ``vanilla`` (logits) they are sigmoid probabilities;
    lsgan targets are 0/1 and hinge margins +-1, so the raw outputs are already
    on a comparable scale. The loss draws its label smoothing from
    ``ctx.generator`` so a resumed run repeats it exactly.
    """
    if gan_mode == "vanilla":
        ctx.log("D/real_mean", torch.sigmoid(real.float()).mean())
        ctx.log("D/fake_mean", torch.sigmoid(fake.float()).mean())
    else:
        ctx.log("D/real_mean", real.float().mean())
        ctx.log("D/fake_mean", fake.float().mean())
    g = ctx.generator
    return {
        "real": 0.5 * adv_loss(real, True, for_discriminator=True, generator=g),
        "fake": 0.5 * adv_loss(fake, False, for_discriminator=True, generator=g),
    }


def follow_device(module: nn.Module, device: torch.device) -> nn.Module:
    """Move a frozen loss network (VGG16) to ``device`` if it is not there yet; returns it.

    Such networks belong to the task, not to the trainer's models, so nothing
    else moves them to the training device; checking one tensor per step is
    cheaper than remembering where they went.
    """
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    if first is not None and first.device != torch.device(device):
        module.to(device)
    return module


def list_photos(data: str, error: type[Exception]) -> list[Path]:
    """The images of the training folder ``--data`` (recursive, sorted); ``error`` when there are none."""
    root = Path(data)
    if not root.exists():
        raise error(f"--data {root}: no such folder")
    paths = rio.list_images(root)
    if not paths:
        raise error(f"--data {root}: no images found (png, jpg, bmp, tif, webp; searched recursively)")
    return paths


def photo_patch_datasets(
    data: str,
    *,
    task: str,
    error: type[Exception],
    patch_size: int,
    patches_per_image: int,
    val_images: int,
    val_patch_size: int,
    val_patches_per_image: int,
    cache: bool,
    val_seed: int,
) -> tuple[Dataset, Dataset | None, dict[str, list[str]]]:
    """Random patches of a photo folder for training, fixed patches of held-back photos for validation.

    ``val_images`` photos (at most all but one, with a warning) are spread over
    the sorted list, so validation does not come from one package or theme;
    their crops are seeded (``val_seed + k``) and never flipped, so the
    validation curve compares like with like. Every photo is its own
    `restore.data.ImageFolderPatches` (``patches_per_image`` items each).
    Unreadable files (corrupt, truncated, not images) are logged and left out
    before the split, since a one-photo dataset has no other image to fall
    back on; none readable is ``error``.
    Returns (train, validation or None, the split's photo names for the card).
    """
    def train_set(path: Path) -> ImageFolderPatches:
        return ImageFolderPatches(path, patch_size, patches_per_image=patches_per_image, augment=True, cache=cache)

    listed = list_photos(data, error)
    built = _readable_photos(listed, train_set if cache else None, task)
    paths = list(built)
    if not paths:
        raise error(f"--data {data}: none of the {len(listed)} image(s) can be read (reasons logged above)")
    n_val = min(val_images, len(paths) - 1)
    if n_val < val_images:
        log.warning("%s: only %d photo(s) in %s: %d held back for validation", task, len(paths), data, n_val)
    val_idx = {min(len(paths) - 1, round((i + 0.5) * len(paths) / n_val)) for i in range(n_val)} if n_val else set()
    train_paths = [p for i, p in enumerate(paths) if i not in val_idx]
    val_paths = [p for i, p in enumerate(paths) if i in val_idx]
    train = ConcatDataset([built[p] or train_set(p) for p in train_paths])

    def val_set(k: int, path: Path) -> ImageFolderPatches:
        if built[path] is not None:  # already decoded for the readability check: crop that copy
            return built[path].resampled(val_patch_size, val_patches_per_image, augment=False, seed=val_seed + k)
        return ImageFolderPatches(path, val_patch_size, patches_per_image=val_patches_per_image, augment=False,
                                  cache=cache, seed=val_seed + k)

    val = ConcatDataset([val_set(k, p) for k, p in enumerate(val_paths)]) if val_paths else None
    log.info("%s: %d training photo(s), %d validation photo(s): %s", task, len(train_paths), len(val_paths),
             ", ".join(p.name for p in val_paths) or "-")
    info = {"train_images": [p.name for p in train_paths], "val_images": [p.name for p in val_paths]}
    return train, val, info


def _readable_photos(paths: list[Path], build: Callable[[Path], Any] | None, task: str) -> dict[Path, Any]:
    """The readable ``paths``, each with its dataset when ``build`` (a caching constructor, which decodes
    the photo anyway) is given, else None after a test decode; unreadable ones are logged and dropped."""
    good: dict[Path, Any] = {}
    for path in paths:
        try:
            if build is not None:
                good[path] = build(path)
            else:
                rio.read_image(path)
                good[path] = None
        except (rio.ImageReadError, FileNotFoundError) as e:
            log.warning("%s: skipping unreadable training image %s", task, e)
    return good


def scale_range_error(value: Any) -> str | None:
    """Why ``value`` is not a valid ``task.scale_range`` ([low, high], 1 <= low <= high), or None."""
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(is_number(v) for v in value)
            or not 1.0 <= float(value[0]) <= float(value[1])):
        return "must be [low, high] with 1 <= low <= high (crop side / patch side)"
    return None


def crop_load_size(patch: int, scale_range: Iterable[float]) -> int:
    """Side of the training crops `scaled_crop` needs: the largest square ``scale_range`` can ask for."""
    return int(math.ceil(int(patch) * float(list(scale_range)[1])))


def scaled_crop(target: Tensor, patch: int, scale_range: Iterable[float], generator: torch.Generator | None,
                mode: str = "area") -> Tensor:
    """A random square of side ``patch x U(scale_range)`` of NCHW ``target``, resized to ``patch``.

    Why: a model restores photos at whatever scale they come at, while training
    photos have one (a 2048 px wallpaper is far smoother per pixel than a photo
    downscaled to 768 px). One draw per batch; ``generator=None`` takes the
    middle of the range and the centre (validation). ``target`` holds crops of
    side `crop_load_size`; ``mode`` is an ``F.interpolate`` mode (bicubic
    is antialiased and clamped to [0, 1], as a photo editor's downscale is).
    """
    lo, hi = (float(v) for v in scale_range)
    size = target.shape[-1]
    if size == patch and lo == hi == 1.0:
        return target
    if generator is not None:
        u = torch.rand(3, generator=generator, device=generator.device).tolist()
    else:
        u = [0.5, 0.5, 0.5]
    side = min(size, max(patch, int(round(patch * (lo + (hi - lo) * u[0])))))
    y = min(int(u[1] * (size - side + 1)), size - side)
    x = min(int(u[2] * (size - side + 1)), size - side)
    crop = target[..., y: y + side, x: x + side]
    if side == patch:
        return crop.contiguous()
    if mode == "bicubic":
        return F.interpolate(crop, size=(patch, patch), mode="bicubic", antialias=True,
                             align_corners=False).clamp_(0, 1)
    return F.interpolate(crop, size=(patch, patch), mode=mode).clamp_(0, 1)


# --------------------------------------------------------------------------- restoring


def to_model_channels(x: Tensor, model_channels: int, error: type[Exception], what: str) -> Tensor:
    """Feed NCHW ``x`` (C = 1 or 3) to a network that takes ``model_channels`` channels.

    A colour network sees a gray image as three equal channels; a gray network
    restores each colour channel on its own (the batch grows to N*3 x 1).
    `from_model_channels` undoes either. ``what`` names the network in errors.
    """
    n, c, h, w = x.shape
    if c == model_channels:
        return x
    if c == 1 and model_channels == 3:
        return x.expand(n, 3, h, w)
    if c == 3 and model_channels == 1:
        return x.reshape(n * 3, 1, h, w)
    raise error(f"cannot feed {c}-channel images to a {model_channels}-channel {what}")


def from_model_channels(y: Tensor, channels: int, model_channels: int) -> Tensor:
    """Inverse of `to_model_channels`: back to ``channels`` per image (a colour output of a gray input is averaged)."""
    if channels == 1 and model_channels == 3:
        return y.mean(dim=1, keepdim=True)
    if channels == 3 and model_channels == 1:
        return y.reshape(-1, 3, *y.shape[-2:])
    return y
