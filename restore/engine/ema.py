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
