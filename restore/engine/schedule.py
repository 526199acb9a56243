"""Learning-rate schedules and annealing helpers (KL beta, instance noise).

Schedules are pure functions ``step -> multiplier of the base lr`` wrapped in
`torch.optim.lr_scheduler.LambdaLR`, so their state (``last_epoch``,
``base_lrs``) checkpoints as plain numbers and a resumed run continues the
same curve. The trainer steps schedulers once per optimisation step; "epochs"
units are converted with the loader's length.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from restore.engine.config import ANNEALS, SCHEDULES, ConfigError


class ScheduleError(ConfigError):
    """A schedule parameter is out of range (the message names it); a `ConfigError`, so the CLI exits with 2."""


def lr_multiplier(
    kind: str,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    step_size: int = 0,
    gamma: float = 0.1,
    decay_start: int = 0,
    min_factor: float = 0.0,
) -> Callable[[int], float]:
    """Return ``f(step) -> lr factor``.

    - ``constant``: 1.
    - ``step``: multiply by ``gamma`` every ``step_size`` steps (``gamma=0.1`` is
      the classic "/10 every 30 epochs", with ``step_size`` = 30 epochs in steps).
    - ``cosine``: half cosine from 1 down to ``min_factor`` at ``total_steps``.
    - ``linear``: 1 until ``decay_start``, then linear to ``min_factor`` at
      ``total_steps`` (pix2pix's ``n_epochs`` + ``n_epochs_decay``).

    Any kind can be preceded by a linear warm-up over ``warmup_steps``
    (factor ``(step + 1) / warmup_steps``).
    """
    if kind not in SCHEDULES:
        raise ScheduleError(f"schedule: unknown kind {kind!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup_steps < 0:
        raise ScheduleError(f"schedule: warmup_steps must be >= 0, got {warmup_steps}")
    if kind == "step" and step_size <= 0:
        raise ScheduleError(f"schedule 'step': step_size must be > 0, got {step_size}")
    if kind in ("cosine", "linear") and total_steps <= 0:
        raise ScheduleError(f"schedule {kind!r}: needs the total number of steps, got {total_steps}")
    if kind == "linear" and not 0 <= decay_start < total_steps:
        raise ScheduleError(f"schedule 'linear': decay_start must be in [0, {total_steps}), got {decay_start}")

    def main(step: int) -> float:
        if kind == "constant":
            return 1.0
        if kind == "step":
            return gamma ** (step // step_size)
        if kind == "cosine":
            span = max(1, total_steps - warmup_steps)
            t = min(1.0, max(0.0, (step - warmup_steps) / span))
            return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
        # linear
        if step < decay_start:
            return 1.0
        t = min(1.0, (step - decay_start) / max(1, total_steps - decay_start))
        return 1.0 - (1.0 - min_factor) * t

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps * (1.0 if kind == "cosine" else main(step))
        return main(step)

    return factor


def continued(
    before: Callable[[int], float], kind: str, from_step: int, total_steps: int, min_factor: float,
    warmup_steps: int = 0, decay_start: int = 0,
) -> Callable[[int], float] | None:
    """The LR factor of a run resumed at ``from_step`` with a new length ``total_steps``.

    ``before`` is the schedule the run was trained with. Up to ``from_step``
    it is kept; from there the factor goes from the value reached to
    ``min_factor`` at ``total_steps`` with the same shape (cosine or linear),
    so extending a finished cosine run fine-tunes at its low LR instead of
    jumping back to a high one. Returns None where re-drawing the curve for the
    new length is already right: constant and step schedules (they do not
    depend on the length), a resume inside the warm-up, or a linear schedule
    whose decay had not begun.
    """
    if kind not in ("cosine", "linear") or from_step < warmup_steps:
        return None
    if kind == "linear" and from_step <= decay_start:
        return None
    start = float(before(from_step))
    end = min(float(min_factor), start)
    span = max(1, total_steps - from_step)

    def factor(step: int) -> float:
        if step < from_step:
            return before(step)
        return anneal(kind, start, end, span, step - from_step)

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, factor: Callable[[int], float]) -> LambdaLR:
    return LambdaLR(optimizer, lr_lambda=factor)


def anneal(kind: str, start: float, end: float, steps: int, step: int) -> float:
    """Value at ``step`` going from ``start`` to ``end`` over ``steps`` steps, then held.

    ``linear``: start + (end - start) * t; ``cosine``: end + (start - end) * (1 + cos(pi t)) / 2;
    with t = min(step / steps, 1). ``steps <= 0`` means no annealing (``start`` forever),
    ``constant`` likewise.
    """
    if kind not in ANNEALS:
        raise ScheduleError(f"anneal: unknown kind {kind!r}; choose one of {', '.join(ANNEALS)}")
    if kind == "constant" or steps <= 0:
        return float(start)
    t = min(1.0, max(0.0, step / steps))
    if kind == "linear":
        return float(start + (end - start) * t)
    return float(end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t)))


def cyclical(start: float, end: float, period: int, ramp: float, step: int) -> float:
    """Cyclical annealing (Fu et al. 2019) for the VAE's KL beta: within each
    ``period`` steps, rise linearly from ``start`` to ``end`` over the first
    ``ramp`` fraction, then hold ``end``."""
    if period <= 0 or not 0.0 < ramp <= 1.0:
        raise ScheduleError(f"cyclical: need period > 0 and 0 < ramp <= 1, got period={period}, ramp={ramp}")
    t = (step % period) / (period * ramp)
    return float(start + (end - start) * min(1.0, t))
