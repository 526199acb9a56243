"""What `restore export` and the onnxruntime backend export of a photo model: the graph, its metadata, the file.

The learnt network of each task, exactly what `restore.pipeline`'s restorers call (`Restorer.forward`);
the module docstring of `restore.export` lists the graphs and their contract. Apart from the command and
its checks (`restore.export`) so that `restore.backends` can export a model on the fly without importing
the command, which itself runs what it wrote through `restore.backends`.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["FORMATS", "METADATA_VERSION", "OPSET", "ExportError", "Graph", "graph_of", "metadata", "save_graph",
           "to_temporary_onnx"]

#: ``--format`` choices.
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
#: ONNX opset of the exported graphs (onnxruntime >= 1.12 runs it).
OPSET = 17
#: Version of the ``restore.*`` metadata layout; bumped on incompatible changes.
METADATA_VERSION = 1


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


def to_temporary_onnx(model: nn.Module, card: dict[str, Any]) -> bytes:
    """The model's ONNX graph as bytes (for `restore.backends` exporting on the fly; nothing is kept on disk)."""
    graph = graph_of(model, card)
    with tempfile.TemporaryDirectory(prefix="restore-onnx-") as tmp:
        path = save_graph(graph, "onnx", Path(tmp) / "model.onnx", metadata(card, graph, model))
        return path.read_bytes()
