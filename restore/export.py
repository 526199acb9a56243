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

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from restore.backends import ExportedModel
from restore.graphs import FORMATS, ExportError, Graph, graph_of, metadata, save_graph

__all__ = ["FORMATS", "ExportError", "ExportReport", "export", "sample_photos", "verify"]

#: Bundled scikit-image photos the export is checked on (no download).
SAMPLE_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea")


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
