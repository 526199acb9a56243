"""``restore export``: a photo model as an ONNX or TorchScript file, any height and width, card inside.

What is exported is the learnt network of each task, exactly what `restore.pipeline`'s restorers call
(`Restorer.forward`), so an exported file restores through the same pipeline (`restore.backends`):

* denoise: ``output = model(image)``, or ``model(image, sigma)`` for a noise-conditioned model
  (``sigma``: (N,) noise level in [0, 1] units);
* colorize: ``output = model(L_norm)``, normalised a/b from normalised CIELAB lightness (the card's
  ``color`` scales);
* inpaint: ``coarse, refined = model.refine_padded(image, hole)``, the generator's two stages on an
  image whose hole was already prefilled (pull-push or a constant, the card's ``prefill``): that fill's
  pyramid depth depends on the size, so it stays outside the graph (`restore.models.inpaint.inpaint_around`).

Every graph takes N x C x H x W float32 with H and W multiples of the card's ``multiple`` (pad centred,
``pad_mode``; the networks pad themselves in PyTorch, which a traced graph cannot do for every size).
The graph is traced at one size and checked at others, so a network whose graph depends on the size
fails the export instead of restoring wrongly. ONNX files carry the card and these facts in
``metadata_props`` (keys ``restore.*``), TorchScript files in the extra file ``restore.json``.

The check (`verify`) restores sample photos, degraded by the card's own corruption, through the
pipeline twice, with the PyTorch model and with the exported file (whole images and in tiles), and
reports the largest absolute difference of the outputs in [0, 1].
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["FORMATS", "ExportError", "ExportReport", "Graph", "export", "graph_of", "metadata", "sample_photos",
           "save_graph", "to_temporary_onnx", "verify"]

#: ``--format`` choices.
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
#: ONNX opset of the exported graphs (onnxruntime >= 1.12 runs it).
OPSET = 17
#: Version of the ``restore.*`` metadata layout; bumped on incompatible changes.
METADATA_VERSION = 1
#: Bundled scikit-image photos the export is checked on (no download).
SAMPLE_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea")


class ExportError(ValueError):
    """The model cannot be exported (unsupported task or a graph that depends on the image size)."""


class _Call(nn.Module):
    """The model's own forward (image, or image and sigma) as a module to trace."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(*inputs)


class _Refine(nn.Module):
    """An inpainting generator's two stages on a prefilled, padded image (`InpaintGenerator.refine_padded`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, hole: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.refine_padded(image, hole)


@dataclass
class Graph:
    """What is exported of a model: the module to trace, its named inputs and outputs, a traced example."""

    kind: str  # "image", "image+sigma" or "inpaint"
    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    channels: int
    multiple: int

    def example(self, height: int, width: int, n: int = 1) -> tuple[Tensor, ...]:
        """Inputs of this graph at ``height`` x ``width`` (multiples of ``multiple``), fixed random values."""
        gen = torch.Generator().manual_seed(height * 10007 + width)
        image = torch.rand(n, self.channels, height, width, generator=gen)
        if self.kind == "image+sigma":
            return image, torch.full((n,), 25 / 255)
        if self.kind == "inpaint":
            hole = (torch.rand(n, 1, height, width, generator=gen) > 0.7).float()
            return image, hole
        return (image,)


def graph_of(model: nn.Module, card: dict[str, Any]) -> Graph:
    """The exportable part of a photo model (see the module docstring); VAEs and others are refused."""
    task = str(card.get("task"))
    multiple = int(getattr(model, "multiple", 1))
    if task == "inpaint":
        if not hasattr(model, "refine_padded"):
            raise ExportError(f"{card.get('name')}: inpainting model {type(model).__name__} has no refine_padded")
        channels = int(getattr(model, "image_channels"))
        return Graph("inpaint", _Refine(model), ("image", "hole"), ("coarse", "refined"), channels, multiple)
    if task in ("denoise", "colorize"):
        channels = int(getattr(model, "in_channels", (card.get("config") or {}).get("in_channels", 3)))
        if getattr(model, "keep_input", "none") == "impulse":
            # the impulse switch (detect, fill, keep) acts before the UNet pads itself: it stays outside the
            # graph, as the prefill of inpainting does, so a padded input sees the fill of the unpadded image
            model = copy.deepcopy(model)
            model.keep_input = "none"
        if getattr(model, "noise_conditioned", False):
            return Graph("image+sigma", _Call(model), ("image", "sigma"), ("output",), channels, multiple)
        return Graph("image", _Call(model), ("image",), ("output",), channels, multiple)
    raise ExportError(f"{card.get('name')}: task {task!r} cannot be exported; photo models only "
                      "(denoise, colorize, inpaint)")


def _trace_size(multiple: int) -> tuple[int, int]:
    """The size a graph is traced at: a few strides, not square (so H and W cannot be swapped unnoticed)."""
    m = max(multiple, 16)
    return 2 * m, 3 * m


def metadata(card: dict[str, Any], graph: Graph, model: nn.Module) -> dict[str, str]:
    """The ``restore.*`` facts an exported file carries: the whole card and how to feed the graph."""
    meta = {
        "restore.metadata_version": str(METADATA_VERSION),
        "restore.name": str(card.get("name")),
        "restore.task": str(card.get("task")),
        "restore.graph": graph.kind,
        "restore.inputs": ",".join(graph.inputs),
        "restore.outputs": ",".join(graph.outputs),
        "restore.channels": str(graph.channels),
        "restore.multiple": str(graph.multiple),
        "restore.pad_mode": str(getattr(model, "pad_mode", "reflect")),
        "restore.noise_conditioned": str(int(graph.kind == "image+sigma")),
        "restore.keep_input": str(getattr(model, "keep_input", "none")),
        "restore.contract": (f"inputs N x C x H x W float32, H and W multiples of {graph.multiple} (pad centred); "
                             + ("impulses filled first (restore.models.fill), then kept; "
                                if getattr(model, "keep_input", "none") == "impulse" else "")
                             + {"image": "image in [0, 1] (colorize: normalised L)",
                                "image+sigma": "image in [0, 1], sigma (N,) in [0, 1] units",
                                "inpaint": "image in [0, 1] with its hole prefilled, hole 1 = missing"}[graph.kind]),
        "restore.card": json.dumps(card, sort_keys=True),
    }
    if graph.kind == "inpaint":
        meta["restore.prefill"] = str(getattr(model, "prefill", "constant"))
        meta["restore.fill_value"] = repr(float(getattr(model, "fill_value", 0.5)))
    return meta


def save_graph(graph: Graph, fmt: str, out: str | os.PathLike[str], meta: dict[str, str]) -> Path:
    """Trace ``graph`` to ``out`` (``onnx`` with dynamic N/H/W, or ``torchscript``), ``meta`` inside."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    graph.module.eval()
    example = graph.example(*_trace_size(graph.multiple))
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy exporter's deprecation notice and the tracer's notes on the networks' input checks
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            import onnx

            dims = {0: "batch", 2: "height", 3: "width"}
            dynamic = {name: dims for name in graph.inputs + graph.outputs}
            if graph.kind == "image+sigma":
                dynamic["sigma"] = {0: "batch"}
            torch.onnx.export(graph.module, example, str(out), dynamo=False, opset_version=OPSET,
                              input_names=list(graph.inputs), output_names=list(graph.outputs),
                              dynamic_axes=dynamic)
            proto = onnx.load(str(out))
            del proto.metadata_props[:]
            for key, value in meta.items():
                proto.metadata_props.add(key=key, value=value)
            proto.producer_name = "restore"
            onnx.save(proto, str(out))
        else:
            traced = torch.jit.trace(graph.module, example, check_trace=False)
            torch.jit.save(traced, str(out), _extra_files={"restore.json": json.dumps(meta)})
    return out


# --------------------------------------------------------------------------- checking


def sample_photos(side: int = 256) -> list[tuple[str, Tensor]]:
    """The bundled scikit-image photos as 1x3xHxW in [0, 1], the longer side scaled to ``side``."""
    import torch.nn.functional as F
    from skimage import data  # lazily: slow to import

    photos = []
    for name in SAMPLE_PHOTOS:
        array = getattr(data, name)()
        t = torch.from_numpy(array.copy()).float().div_(255.0)
        t = (t[None].expand(3, -1, -1) if t.dim() == 2 else t.permute(2, 0, 1)[:3])[None].contiguous()
        scale = side / max(t.shape[-2:])
        if scale < 1:
            size = (max(1, round(t.shape[-2] * scale)), max(1, round(t.shape[-1] * scale)))
            t = F.interpolate(t, size=size, mode="area")
        photos.append((name, t))
    return photos


def verify(model: nn.Module, card: dict[str, Any], exported: nn.Module,
           photos: list[tuple[str, Tensor]], tile: int = 128, seed: int = 0) -> dict[str, float]:
    """Largest |PyTorch - exported| of the pipeline's outputs per photo (whole image and tiled), in [0, 1].

    Each photo is degraded by the card's corruption (a noisy photo for a denoiser, a free-form mask for
    the inpainter), so the networks see what they see in use.
    """
    from restore import corrupt
    from restore.pipeline import Pipeline

    reference, candidate = Pipeline(model, card), Pipeline(exported, card)
    diffs = {}
    for name, photo in photos:
        degraded = corrupt.apply(photo, str(card["corruption"]), seed)
        worst = 0.0
        for t in (0, tile):
            a = reference.run(degraded.input, degraded.mask, tile=t).image
            b = candidate.run(degraded.input, degraded.mask, tile=t).image
            worst = max(worst, float((a - b).abs().max()))
        diffs[name] = worst
    return diffs


def _check_graph(graph: Graph, exported: nn.Module) -> float:
    """Largest |PyTorch - exported| of the raw graph at sizes other than the traced one (dynamic H and W)."""
    from restore.backends import ExportedModel

    assert isinstance(exported, ExportedModel)
    m = max(graph.multiple, 16)
    worst = 0.0
    for h, w in ((3 * m, 2 * m), (4 * m, 5 * m)):
        inputs = graph.example(h, w, n=2)
        with torch.no_grad():
            ref = graph.module(*inputs)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = exported.run_graph(*inputs)
        for r, g in zip(ref, got):
            if tuple(r.shape) != tuple(g.shape):
                raise ExportError(f"the exported graph gives shape {tuple(g.shape)} for {tuple(r.shape)} at {h}x{w}: "
                                  "the network's graph depends on the image size")
            worst = max(worst, float((r - g).abs().max()))
    return worst


# --------------------------------------------------------------------------- the command


@dataclass
class ExportReport:
    """What ``restore export`` wrote and how close it is to PyTorch."""

    path: Path
    format: str
    size_bytes: int
    seconds: float
    graph_diff: float  # raw network, random inputs at two untraced sizes
    photo_diffs: dict[str, float] = field(default_factory=dict)  # pipeline outputs on sample photos

    def lines(self) -> list[str]:
        out = [f"wrote {self.path} ({self.format}, {self.size_bytes / 1e6:.1f} MB) in {self.seconds:.1f} s",
               f"max |torch - {self.format}|: network {self.graph_diff:.2e} (random inputs, two other sizes)"]
        for name, d in self.photo_diffs.items():
            out.append(f"  {name}: restored image {d:.2e} ({d * 255:.3f} / 255)")
        return out


def export(name_or_path: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str], *,
           photos: list[tuple[str, Tensor]] | None = None, tol: float = 1e-3) -> ExportReport:
    """Export shipped weights (or a weights file) to ``out``, checked against PyTorch (see `verify`).

    ``photos`` default to `sample_photos`; a network difference above ``tol`` is an `ExportError`
    (the file is removed), since the exported graph would then not be the model.
    """
    from restore import weights as W
    from restore.backends import ExportedModel

    start = time.perf_counter()
    model, card = W.load(name_or_path, device="cpu")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    graph = graph_of(model, card)
    path = save_graph(graph, fmt, out, metadata(card, graph, model))
    try:
        exported = ExportedModel.from_file(path)
        graph_diff = _check_graph(graph, exported)
        if not graph_diff <= tol:
            raise ExportError(f"the exported graph differs from PyTorch by {graph_diff:.3g} (> {tol}) on inputs "
                              "of another size: the network's graph depends on the image size")
        diffs = verify(model, card, exported, sample_photos() if photos is None else photos)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return ExportReport(path, fmt, path.stat().st_size, time.perf_counter() - start, graph_diff, diffs)


def to_temporary_onnx(model: nn.Module, card: dict[str, Any]) -> bytes:
    """The model's ONNX graph as bytes (for `restore.backends` exporting on the fly; nothing is kept on disk)."""
    graph = graph_of(model, card)
    with tempfile.TemporaryDirectory(prefix="restore-onnx-") as tmp:
        path = save_graph(graph, "onnx", Path(tmp) / "model.onnx", metadata(card, graph, model))
        return path.read_bytes()
