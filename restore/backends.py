"""``--backend torch|onnxruntime``: an exported graph that the pipeline calls as it calls the PyTorch model.

`ExportedModel` runs an ONNX file (onnxruntime, CPU) or a TorchScript file behind the PyTorch model's
call signature and the attributes the restorers read (``parameters()``, ``multiple``, ``in_channels``,
``image_channels``, ``prefill``, ``noise_conditioned``), so `restore.pipeline` and its restorers
(tiling, self-ensemble, colour and mask handling) are the same code for every backend. What the graph
cannot do for any size it does here in PyTorch, as the model's own forward does: pad to ``multiple``
(centred) and crop, and for inpainting the hole's prefill and the final composite
(`restore.models.inpaint.inpaint_around`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from restore.graphs import to_temporary_onnx
from restore.options import OptionError

__all__ = ["BACKENDS", "ExportedModel", "load"]

#: ``--backend`` choices: PyTorch eager, or the model exported to ONNX and run by onnxruntime on the CPU.
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime")

_MISSING = "needs onnxruntime (and onnx to export): pip install 'restore[onnx]'"


def _ort_session(model: bytes | str, threads: int | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise OptionError(f"the onnxruntime backend {_MISSING}") from e
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


class ExportedModel(nn.Module):
    """An exported ``restore`` graph (ONNX or TorchScript) that behaves as the model it came from."""

    def __init__(self, run: Callable[..., list[Tensor]], meta: dict[str, str], backend: str) -> None:
        super().__init__()
        if str(meta.get("restore.metadata_version")) != "1":
            raise OptionError("not a restore export (no restore.* metadata, or a newer layout); "
                              "re-export it with `restore export`")
        self._run, self.meta, self.backend = run, meta, backend
        self.card: dict[str, Any] = json.loads(meta["restore.card"])
        self.kind = meta["restore.graph"]
        self.multiple = int(meta["restore.multiple"])
        self.pad_mode = meta["restore.pad_mode"]
        self.noise_conditioned = self.kind == "image+sigma"
        channels = int(meta["restore.channels"])
        self.in_channels = self.image_channels = channels
        self.prefill = meta.get("restore.prefill", "constant")
        self.keep_input = meta.get("restore.keep_input", "none")
        self.fill_value = float(meta.get("restore.fill_value", 0.5))
        # the pipeline reads the compute dtype and device from the first parameter: float32 on the CPU
        self._anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], threads: int | None = None) -> ExportedModel:
        """An ``.onnx`` file (run by onnxruntime) or a TorchScript file written by `restore.export`."""
        path = Path(path)
        if not path.is_file():
            raise OptionError(f"{path}: no such exported model")
        if path.suffix == ".onnx":
            return cls.from_onnx(path.read_bytes(), threads)
        extra = {"restore.json": ""}
        try:
            with warnings.catch_warnings():  # torch's notice that TorchScript is deprecated: the user asked for it
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as e:
            raise OptionError(f"{path}: not an ONNX (.onnx) or TorchScript file ({e})") from e
        module.eval()
        meta = json.loads(extra["restore.json"] or "{}")

        def run(*inputs: Tensor) -> list[Tensor]:
            with torch.no_grad():
                out = module(*inputs)
            return list(out) if isinstance(out, (tuple, list)) else [out]

        return cls(run, meta, "torchscript")

    @classmethod
    def from_onnx(cls, model: bytes, threads: int | None = None) -> ExportedModel:
        """An ONNX graph (bytes of a file `restore.export` wrote) run by onnxruntime on the CPU."""
        session = _ort_session(model, threads)
        meta = dict(session.get_modelmeta().custom_metadata_map)
        names = [i.name for i in session.get_inputs()]

        def run(*inputs: Tensor) -> list[Tensor]:
            feed = {n: np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy()) for n, t in zip(names, inputs)}
            return [torch.from_numpy(o) for o in session.run(None, feed)]

        return cls(run, meta, "onnxruntime")

    @classmethod
    def from_model(cls, model: nn.Module, card: dict[str, Any], threads: int | None = None) -> ExportedModel:
        """``model`` exported to ONNX in memory and run by onnxruntime (``--backend onnxruntime``)."""
        try:
            import onnx  # noqa: F401 - the exporter's dependency, checked here for a clear message
        except ImportError as e:
            raise OptionError(f"the onnxruntime backend {_MISSING}") from e
        return cls.from_onnx(to_temporary_onnx(model, card), threads)

    def __repr__(self) -> str:
        return f"ExportedModel({self.card.get('name')!r}, {self.kind}, backend={self.backend})"

    # ------------------------------------------------------------------ calling

    def run_graph(self, *inputs: Tensor) -> list[Tensor]:
        """The graph itself: inputs with H and W multiples of ``multiple``, outputs in the graph's order."""
        return self._run(*inputs)

    def _padded(self, x: Tensor, run: Callable[[Tensor], Tensor]) -> Tensor:
        from restore.models.blocks import crop_padding, pad_to_multiple

        padded, pads = pad_to_multiple(x, self.multiple, mode=self.pad_mode)
        return crop_padding(run(padded), pads)

    def forward(self, image: Tensor, extra: Any = None) -> Any:
        """As the exported model: ``(image)``, ``(image, sigma)`` or ``(image, mask) -> {"output", ...}``."""
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"{self.card.get('name')}: expected an N x {self.in_channels} x H x W tensor, "
                             f"got shape {tuple(image.shape)}")
        image = image.float()
        if self.kind == "inpaint":
            from restore.models.inpaint import inpaint_around

            def refine(img_p: Tensor, hole_p: Tensor) -> tuple[Tensor, Tensor]:
                coarse, refined = self._run(img_p, hole_p)
                return coarse, refined

            return inpaint_around(image, extra.float(), refine, prefill=self.prefill, fill_value=self.fill_value,
                                  multiple=self.multiple)
        if self.kind == "image+sigma":
            n = image.shape[0]
            sigma = torch.as_tensor(extra, dtype=torch.float32).reshape(-1).expand(n) if extra is not None else None
            if sigma is None:
                raise ValueError(f"{self.card.get('name')}: a noise-conditioned model needs sigma")
            return self._padded(image, lambda x: self._run(x, sigma.contiguous())[0])
        if self.keep_input == "impulse":  # UNet.forward's impulse switch, around the graph (restore.export)
            from restore.models.fill import fill_impulses, impulse_mask

            hit = impulse_mask(image)
            filled = fill_impulses(image, hit)
            return torch.where(hit, self._padded(filled, lambda x: self._run(x)[0]), image)
        return self._padded(image, lambda x: self._run(x)[0])

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return iter([self._anchor])


def load(name_or_path: str | os.PathLike[str], backend: str = "torch",
         device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """``(model, card)`` for the pipeline: shipped weights or a weights file run by ``backend``.

    ``onnxruntime`` exports the verified PyTorch model to ONNX in memory (a few seconds), or reads an
    ``.onnx`` file written by ``restore export``; it runs on the CPU only.
    """
    from restore import weights as W

    if backend not in BACKENDS:
        raise OptionError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        if str(name_or_path).endswith(".onnx"):
            raise OptionError(f"{name_or_path}: an ONNX file runs with backend onnxruntime")
        return W.load(name_or_path, device=device)
    if torch.device(device).type != "cpu":
        raise OptionError(f"the onnxruntime backend runs on the CPU, not {device}; use device cpu (or backend torch)")
    if str(name_or_path).endswith(".onnx"):
        exported = ExportedModel.from_file(name_or_path)
        return exported, exported.card
    model, card = W.load(name_or_path, device="cpu")
    model.eval()
    return ExportedModel.from_model(model, card), card
