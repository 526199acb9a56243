"""Discriminator-collapse watch.

The classic GAN failure: D wins outright (its loss near 0, D(real) - D(fake)
saturated) and G's adversarial loss climbs for thousands of steps while the
images degrade. The watch keeps a window of (D loss, D gap, G adversarial loss)
and fires when, over the whole window, D was saturated on at least
``saturated_fraction`` of the steps *and* G's adversarial loss kept rising
(least-squares slope > ``min_slope`` per step and the second half of the window
averaging more than ``min_rise`` x max(|first-half mean|, 0.1) above the
first half, so a flat, noisy G loss never fires). The trainer then warns (log + ``watch/collapse``) and
optionally rolls back to the last healthy checkpoint with a lower D lr.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass
class WatchState:
    saturated_fraction: float
    g_slope: float
    fired: bool


class CollapseWatch:
    def __init__(
        self,
        window: int = 500,
        d_loss_threshold: float = 0.05,
        gap_threshold: float = 0.9,
        saturated_fraction: float = 0.9,
        min_slope: float = 0.0,
        min_rise: float = 0.1,
    ) -> None:
        if window < 4:
            raise ValueError(f"collapse_window must be >= 4 steps, got {window}")
        self.window = window
        self.d_loss_threshold = d_loss_threshold
        self.gap_threshold = gap_threshold
        self.saturated_fraction = saturated_fraction
        self.min_slope = min_slope
        self.min_rise = min_rise
        self._sat: deque[bool] = deque(maxlen=window)
        self._g: deque[float] = deque(maxlen=window)
        self.last = WatchState(0.0, 0.0, False)

    def reset(self) -> None:
        self._sat.clear()
        self._g.clear()
        self.last = WatchState(0.0, 0.0, False)

    def saturated(self, d_loss: float, gap: float | None) -> bool:
        """D is winning outright: loss ~ 0, or D(real) - D(fake) (as probabilities) near 1."""
        return d_loss < self.d_loss_threshold or (gap is not None and gap > self.gap_threshold)

    @property
    def healthy(self) -> bool:
        """False while D is mostly saturated over the current (partial) window."""
        return not self._sat or sum(self._sat) / len(self._sat) < self.saturated_fraction

    def update(self, d_loss: float, gap: float | None, g_adv: float) -> bool:
        """Add one step; returns True when collapse is detected (then the window restarts)."""
        if not (math.isfinite(d_loss) and math.isfinite(g_adv)):
            return False
        self._sat.append(self.saturated(d_loss, gap))
        self._g.append(float(g_adv))
        if len(self._g) < self.window:
            self.last = WatchState(sum(self._sat) / len(self._sat), 0.0, False)
            return False
        frac = sum(self._sat) / len(self._sat)
        slope = _slope(list(self._g))
        half = self.window // 2
        g = list(self._g)
        first, second = sum(g[:half]) / half, sum(g[half:]) / (self.window - half)
        rising = slope > self.min_slope and second - first > self.min_rise * max(abs(first), 0.1)
        fired = frac >= self.saturated_fraction and rising
        self.last = WatchState(frac, slope, fired)
        if fired:
            self._sat.clear()
            self._g.clear()
        return fired


def _slope(y: list[float]) -> float:
    """Least-squares slope of y against 0..n-1."""
    n = len(y)
    mx = (n - 1) / 2.0
    my = sum(y) / n
    num = sum((i - mx) * (v - my) for i, v in enumerate(y))
    den = sum((i - mx) ** 2 for i in range(n))
    return num / den if den else 0.0
