"""Exponential moving average of the generator's weights.

The EMA copy is what validation and export use: averaged GAN generators are
smoother and score better than the raw iterate (BasicSR keeps it next to the
weights as ``params_ema``). Early in training the average is dominated by the
random initialisation, so the decay is warmed up:
``d = min(decay, (1 + n) / (10 + n))`` with ``n`` the number of updates so far.
Buffers (BatchNorm statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn


def effective_decay(decay: float, num_updates: int, warmup: bool = True) -> float:
    """The decay used for update number ``num_updates`` (0-based)."""
    if not warmup:
        return decay
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates))


class EMA:
    """Shadow copy of a model: ``shadow = d * shadow + (1 - d) * param``."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Fold the current weights of ``model`` into the average; returns the decay used."""
        d = effective_decay(self.decay, self.num_updates, self.warmup)
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("EMA.update: model has a different parameter list than the EMA copy")
        for e, p in zip(ema_params, params):
            # e = d * e + (1 - d) * p, computed in the shadow's dtype
            e.mul_(d).add_(p.to(e.dtype), alpha=1.0 - d)
        for eb, b in zip(self.module.buffers(), model.buffers()):
            eb.copy_(b)
        self.num_updates += 1
        return d

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm's running statistics by their plain average over ``inputs``; returns the layer count.

    Why: the EMA (and any exported) generator carries the live model's running
    statistics, a momentum-0.1 average of the last few training batches. With
    small batches of patches whose corruption strength varies (blind sigma
    5-50) they are noisy, and they do not belong to the averaged weights. One
    pass over a few thousand training-like inputs in train mode (SWA's
    ``update_bn``) measured +0.1 to +0.7 dB on the blind Gaussian denoiser.
    The model's train/eval mode and the layers' momentum are restored.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    stream = iter(inputs)
    first = next(stream, None)
    if first is None:  # checked before the statistics are reset
        raise ValueError("recalibrate_batchnorm: no inputs")
    was_training = model.training
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    model.train()
    try:
        model(first)
        for x in stream:
            model(x)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(layers)
