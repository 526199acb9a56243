"""The one restore pipeline under the CLI, the Python API and the app.

A task supplies a `Restorer`: a typed options dataclass and three hooks,
``prepare`` (image -> what the network sees, at its working resolution),
``forward`` (one network pass on a tile) and ``finish`` (network output ->
image at the input's size). Everything the tasks share lives here once:
input checks, device, gray/colour/alpha/bit depth round trips, tiling on the
network's stride grid, self-ensemble, clamping and NaN checks, no gradients.

Data flows one way: ``restore.io`` (files) or ``restore.api`` (numpy, PIL,
torch) -> `Pipeline` -> the task's `Restorer` -> back the same way.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn
from torch import Tensor

from restore import memory
from restore.io.read import LoadedImage
from restore.options import Options, OptionError
from restore.tiling import sample_max, self_ensemble, tiled_on_grid

__all__ = ["CANONICAL_POSE_DATASETS", "Pipeline", "Restored", "Restorer", "Work", "match_channels",
           "restorer_class"]

#: task name (a card's ``task``) -> "module:Class" of its restorer; imported on first use.
RESTORERS: dict[str, str] = {
    "denoise": "restore.restorers.denoise:DenoiseRestorer",
    "colorize": "restore.restorers.colorize:ColorizeRestorer",
    "inpaint": "restore.restorers.inpaint:InpaintRestorer",
    "vae": "restore.restorers.vae:VAERestorer",
}

#: Datasets whose images all share one pose (Fashion-MNIST: upright, shoes facing left). A model trained on
#: them has learnt that pose, so mirrored or rotated copies are outside what it knows.
CANONICAL_POSE_DATASETS = frozenset({"fashion-mnist", "mnist"})

#: Rows checked at a time for NaN: isfinite of a whole 24-megapixel batch allocates hundreds of MB.
_CHECK_ROWS = 256


@dataclass
class Work:
    """What ``prepare`` hands on: the network's input (None: nothing to compute, the input comes back
    unchanged without `Restorer.finish`) and the task's state."""

    net_input: Tensor | None
    state: dict[str, Any] = field(default_factory=dict)
    #: Set by `Pipeline.run`: the hooks may write their result into the input ``x`` (the pipeline owns it,
    #: or the caller said ``inplace=True``), saving a full-size copy of the image.
    inplace: bool = False
    #: Set by `Pipeline.run`: ``x`` holds integer samples (uint8/uint16; only for an `integer_inplace` restorer).
    integers: bool = False


@dataclass
class Restored:
    """A restored NCHW batch (float32, CPU, [0, 1]) and named side images of the same size (VAE ``std``)."""

    image: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


class Restorer:
    """A task's hooks. Subclasses set the class attributes and override ``prepare``/``forward``/``finish``."""

    task: ClassVar[str]
    options_type: ClassVar[type[Options]] = Options
    #: CLI subcommands this task answers (a VAE card answers ``restore denoise``).
    commands: ClassVar[tuple[str, ...]] = ()
    #: True when each image needs an inpainting mask (1 = hole).
    needs_mask: ClassVar[bool] = False
    #: True when the output is RGB whatever the input (colorize); else it keeps the input's channels.
    colour_output: ClassVar[bool] = False
    #: True when the restorer can write its result into an integer (uint8/uint16, values as a file stores
    #: them) input in place, converting to float only the rows it computes: inpainting changes only hole
    #: pixels, so a huge photo stays a quarter of its float32 size (`Pipeline.run` with ``integers=True``).
    #: Such hooks get ``x`` as stored (`Work.integers`) and quantize what they write as `restore.io` does.
    integer_inplace: ClassVar[bool] = False

    def __init__(self, model: nn.Module, card: Mapping[str, Any], device: torch.device) -> None:
        self.model, self.card, self.device = model, card, device
        first = next(iter(model.parameters()), None)
        self.dtype = first.dtype if first is not None else torch.float32
        self.multiple = int(getattr(model, "multiple", 1))

    def prepare(self, x: Tensor, mask: Tensor | None, opts: Any) -> Work:
        """``x``: NCHW float in [0, 1] (C = 1 or 3, on the CPU), or its uint8/uint16 samples for an
        `integer_inplace` restorer run with ``integers=True``; ``mask``: bool N1HW or None."""
        return Work(x)

    def forward(self, t: Tensor, opts: Any) -> Tensor:
        """One network pass on ``t`` (a tile, or the whole working image): same H and W out."""
        return self.model(t.to(self.device, self.dtype)).float()

    def network(self, work: Work, opts: Any) -> Tensor:
        """The network over the whole working image: self-ensemble inside overlap-blended tiles."""
        assert work.net_input is not None
        return self.tiled_passes(work.net_input, opts, lambda u: self.forward(u, opts))

    def tiled_passes(self, x: Tensor, opts: Any, forward: Callable[[Tensor], Tensor], *,
                     post: Callable[[Tensor], Tensor] | None = None, out: Tensor | None = None) -> Tensor:
        """``forward`` (one pass, NCHW -> NCHW of the same size) self-ensembled inside overlap-blended tiles.

        ``post`` maps each tile's result before blending (e.g. back to the image's channels, so no
        full-size output of the network's channels exists); ``out`` receives the result, and may be
        ``x`` itself or a view of it (`restore.tiling.tiled`): then the image exists once in memory.
        """
        mode = getattr(opts, "ensemble", "none")

        def run(t: Tensor) -> Tensor:
            y = self_ensemble(forward, t, mode)
            return post(y) if post is not None else y

        tile = int(opts.tile)
        if tile and max(x.shape[-2:]) > tile:
            overlap = int(getattr(opts, "tile_overlap", 32))
            return tiled_on_grid(run, x, tile=tile, overlap=overlap, multiple=self.multiple, out=out)
        return run(x)

    def finish(self, y: Tensor, x: Tensor, work: Work, opts: Any) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Network output -> N x C x H x W image (optionally with a dict of side images)."""
        return y

    def demo(self, photo: Tensor, seed: int, opts: Any, run: Any) -> list[tuple[str, Tensor]]:
        """``restore demo`` panels for one bundled photo (1CHW): degraded by the card's corruption, restored.

        ``run(x, mask, **options)`` restores an NCHW batch through the pipeline (so demos test the real
        path) and returns the image, or the whole `Restored` with ``full=True``.
        """
        from restore import corrupt

        degraded = corrupt.apply(photo, str(self.card["corruption"]), seed)
        out = run(degraded.input, degraded.mask)
        return [("input", degraded.input), ("restored", out), ("target", photo)]


def restorer_class(task: str) -> type[Restorer]:
    """The restorer registered for a card's ``task``."""
    try:
        module_name, cls_name = RESTORERS[task].split(":")
    except KeyError:
        raise OptionError(f"no restorer for task {task!r}; known: {', '.join(sorted(RESTORERS))}") from None
    return getattr(importlib.import_module(module_name), cls_name)


def match_channels(image: Tensor, channels: int) -> Tensor:
    """(N)CHW -> the same image with ``channels`` channels (gray broadcast, or ITU-R 601 luma)."""
    c = image.shape[-3]
    if c == channels:
        return image
    if c == 1:
        return image.expand(*image.shape[:-3], channels, *image.shape[-2:]).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
        return (image * w[:, None, None]).sum(-3, keepdim=True)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def _all_finite(x: Tensor) -> bool:
    return all(bool(torch.isfinite(x[..., r0 : r0 + _CHECK_ROWS, :]).all()) for r0 in range(0, x.shape[-2], _CHECK_ROWS))


class Pipeline:
    """A loaded model bound to its task's restorer: restores tensors (`run`) and pictures (`run_images`).

    Holds no global state and never builds graphs (no gradients); one pipeline per thread is safe.
    """

    def __init__(self, model: nn.Module, card: Mapping[str, Any], *, task: str | None = None,
                 device: torch.device | str | None = None) -> None:
        task = task or card.get("task")
        if not task:
            raise OptionError("the model card names no task; pass task=")
        first = next(iter(model.parameters()), None)
        if device is None:
            device = first.device if first is not None else torch.device("cpu")
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model, self.card, self.task = model, card, str(task)
        self.restorer = restorer_class(self.task)(model, card, torch.device(device))

    @property
    def options_type(self) -> type[Options]:
        return self.restorer.options_type

    def options(self, options: Options | None = None, **values: Any) -> Options:
        """Checked options of this task: ``options`` (or the defaults) with ``values`` replaced."""
        if options is not None and not isinstance(options, self.options_type):
            raise OptionError(f"{self.task}: expected {self.options_type.__name__}, got {type(options).__name__}")
        if options is not None:  # checked when it was built (frozen): rebuilt only to change values
            return options.replace(**values) if values else options
        return self.options_type.create(**values)

    def _warn_about_pose(self, opts: Options) -> None:
        if getattr(opts, "ensemble", "none") != "none" and self.card.get("dataset") in CANONICAL_POSE_DATASETS:
            # there the ensemble averages in worse estimates (denoise-fmnist: -0.2 dB with flip, -1.5 dB with x8)
            warnings.warn(f"ensemble {opts.ensemble}: {self.card.get('name') or 'this model'} was trained on "
                          f"{self.card['dataset']}, whose images share one pose; mirrored/rotated copies are outside "
                          "what it learnt and usually lower the accuracy", stacklevel=3)

    @property
    def keeps_integers(self) -> bool:
        """True when this task restores uint8/uint16 images in place (`Restorer.integer_inplace`, on the
        CPU): the command line then reads files as stored (`restore.io.read_image` with ``integers=True``)."""
        return self.restorer.integer_inplace and self.restorer.device.type == "cpu"

    def run(self, x: Tensor, mask: Tensor | None = None, options: Options | None = None, *, inplace: bool = False,
            integers: bool = False, **values: Any) -> Restored:
        """Restore NCHW ``x`` (float in [0, 1], C = 1 or 3, any device); ``mask`` N1HW, nonzero = hole.

        ``inplace=True`` lets the pipeline overwrite ``x`` (when it is a contiguous float32 CPU tensor)
        with the result, which then is ``x`` itself wherever the output has its shape: a huge image is
        not copied. Without it ``x`` is left as it was. uint8/uint16 ``x`` is scaled to [0, 1] (a float
        copy), except with ``inplace`` and ``integers`` for a task that `keeps_integers` (inpaint): then
        the result is ``x`` itself, its samples rounded as `restore.io.write_image` rounds (a quarter of
        the float image's memory; known pixels untouched).
        """
        opts = self.options(options, **values)
        self._warn_about_pose(opts)
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"{self.task}: expected an NCHW image tensor, got {getattr(x, 'shape', type(x).__name__)}")
        n, c, h, w = x.shape
        if c not in (1, 3):
            raise ValueError(f"{self.task}: images must have 1 (gray) or 3 (RGB) channels, got {c}")
        if n == 0 or h == 0 or w == 0:
            raise ValueError(f"{self.task}: empty image batch of shape {tuple(x.shape)}")
        if not x.is_floating_point() and x.dtype not in (torch.uint8, torch.uint16):
            raise ValueError(f"{self.task}: expected a float, uint8 or uint16 image, got {x.dtype}")
        keep = (integers and inplace and self.keeps_integers and not x.is_floating_point()
                and x.device.type == "cpu" and x.is_contiguous())
        # a converted copy is the pipeline's own, free to overwrite
        own = keep or x.dtype != torch.float32 or (inplace and x.device.type == "cpu" and x.is_contiguous())
        if not keep:
            x = x.float() if x.is_floating_point() else x.float().div_(sample_max(x.dtype))
            if not _all_finite(x):
                raise ValueError(f"{self.task}: the image contains NaN or infinite values")
        hole = self._check_mask(mask, x)
        # refused before any work when it cannot fit (memory.MemoryLimitError, a ValueError)
        memory.check(self.task, self.memory_estimate(x.shape, opts, inplace=own, sample_bytes=x.element_size()),
                     h, w, n)
        with torch.no_grad():
            work = self.restorer.prepare(x, hole, opts)
            work.inplace, work.integers = own, keep
            if work.net_input is None:  # nothing to compute (an empty mask, --sigma 0): the input unchanged
                out = x if own else x.clone()
            else:
                out = self.restorer.finish(self.restorer.network(work, opts), x, work, opts)
        extras: dict[str, Tensor] = {}
        if isinstance(out, tuple):
            out, extras = out
        who = type(self.restorer).__name__
        channels = 3 if self.restorer.colour_output else c
        image = self._checked(out, (n, channels, h, w), who, x.dtype if keep else None)
        return Restored(image, {k: self._checked(v, (n, None, h, w), f"{who} [{k}]") for k, v in extras.items()})

    def memory_estimate(self, shape: Sequence[int], options: Options | None = None, *,
                        inplace: bool = True, sample_bytes: int = 4) -> memory.Estimate:
        """Memory restoring an N x C x H x W batch needs (`restore.memory.estimate`) with these options;
        ``sample_bytes`` 1 or 2: an integer image restored in place (`keeps_integers`)."""
        n, c, h, w = shape
        tile = int(getattr(options or self.options_type.create(), "tile", 0) or 0)
        return memory.estimate(self.task, n, c, h, w, tile, inplace=inplace, sample_bytes=sample_bytes,
                               colour_output=self.restorer.colour_output,
                               model_channels=getattr(self.restorer, "model_channels", None))

    def _check_mask(self, mask: Tensor | None, x: Tensor) -> Tensor | None:
        if mask is None:
            if self.restorer.needs_mask:
                raise ValueError(f"{self.task}: a mask is needed (nonzero = hole), of the image's size")
            return None
        if not self.restorer.needs_mask:
            raise ValueError(f"{self.task}: this task takes no mask")
        if not isinstance(mask, Tensor) or mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"{self.task}: the mask must be an N1HW tensor (nonzero = hole), "
                             f"got {getattr(mask, 'shape', type(mask).__name__)}")
        if mask.shape[0] != x.shape[0] or mask.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"{self.task}: the mask is {mask.shape[-1]}x{mask.shape[-2]} (batch {mask.shape[0]}), "
                             f"the image {x.shape[-1]}x{x.shape[-2]} (batch {x.shape[0]}); they must match")
        if mask.dtype == torch.bool:
            return mask  # as given: no copy of a full-size mask
        return mask > 0.5 if mask.is_floating_point() else mask != 0

    @staticmethod
    def _checked(out: Any, shape: tuple[int | None, ...], who: str, integer: torch.dtype | None = None) -> Tensor:
        """``out`` on the CPU as float32 clamped to [0, 1], or (``integer``) as that integer dtype, unchanged."""
        if not isinstance(out, Tensor) or out.dim() != 4:
            raise RuntimeError(f"{who} returned {type(out).__name__} {getattr(out, 'shape', '')}, expected NCHW")
        if any(want is not None and got != want for got, want in zip(out.shape, shape)):
            raise RuntimeError(f"{who} returned shape {tuple(out.shape)}, expected {shape}")
        if integer is not None:
            if out.dtype != integer:
                raise RuntimeError(f"{who} returned {out.dtype} for a {integer} image restored in place")
            out = out.detach().cpu()
            return out if out.is_contiguous() else out.contiguous()
        if not _all_finite(out):
            raise RuntimeError(f"{who} produced NaN or infinite values")
        out = out.detach().to("cpu", torch.float32)
        return (out if out.is_contiguous() else out.contiguous()).clamp_(0.0, 1.0)  # in place: no second copy

    def run_images(self, images: Sequence[LoadedImage], masks: Sequence[Tensor | None] | None = None,
                   options: Options | None = None, *, inplace: bool = True,
                   **values: Any) -> list[tuple[LoadedImage, dict[str, Tensor]]]:
        """Restore decoded images of one size as one batch, keeping each one's alpha and bit depth.

        The output keeps the input's channel count and colour profile, except for colorize, whose
        output is RGB (an input's gray profile would mislabel it). With ``inplace`` (the default: the
        folder driver decodes each file for this call only) a lone image's tensor is overwritten with
        its result, so a huge photo exists once in memory; ``inplace=False`` leaves it as it was.
        Images read as stored (uint8/uint16, `keeps_integers`) come back so, restored in place.
        """
        if not images:
            return []
        # one image: a view, not a stacked copy (a stacked batch is the pipeline's own anyway)
        batch = images[0].image[None] if len(images) == 1 else torch.stack([im.image for im in images])
        inplace = inplace or len(images) > 1
        mask = None
        if masks is not None and any(m is not None for m in masks):
            batch_masks = [m if m.dim() == 3 else m[None] for m in masks]  # type: ignore[union-attr]
            mask = batch_masks[0][None] if len(batch_masks) == 1 else torch.stack(batch_masks)  # one: a view
        restored = self.run(batch, mask, options, inplace=inplace, integers=True, **values)
        results = []
        for i, im in enumerate(images):  # `run` gave each image its own channel count (colorize: RGB)
            icc = None if self.restorer.colour_output else im.icc_profile
            out = LoadedImage(image=restored.image[i], alpha=im.alpha, bit_depth=im.bit_depth, path=im.path,
                              icc_profile=icc)
            results.append((out, {k: v[i] for k, v in restored.extras.items()}))
        return results

    def demo(self, photo: Tensor, seed: int, **values: Any) -> list[tuple[str, Tensor]]:
        """``restore demo`` panels of this model on one bundled photo (1CHW in [0, 1])."""
        opts = self.options(None, **values)

        def run(x: Tensor, mask: Tensor | None = None, *, full: bool = False, **changed: Any) -> Any:
            restored = self.run(x, mask, opts.replace(**changed) if changed else opts)
            return restored if full else restored.image

        return self.restorer.demo(photo, seed, opts, run)
