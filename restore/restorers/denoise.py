"""Denoising: a residual UNet (photos, Fashion-MNIST) restores each image in overlap-blended tiles.

A colour model sees a gray image as three equal channels (the output is
averaged back to one); a gray model (Fashion-MNIST) denoises each colour
channel on its own. The whole image is padded by the UNet itself (centred,
as in training: a model trained on one size depends on that layout); tiles
sit on the same stride grid (`restore.tiling.tiled_on_grid`).

A noise-conditioned model is given sigma (``--sigma N``, or ``auto``: the
per-image estimate of `restore.noise.estimate_sigma`) and its change to the
image is scaled by a strength gate, ``y = x + g(sigma) * (f(x, sigma) - x)``
(`StrengthGate`, the card's ``denoise_strength`` table). Why: a network
trained over sigma 0-60 still smooths a near-clean photo (it barely reads a
small sigma), so it lowered the PSNR of photos at sigma 0 and 2; g is measured
on training photos per sigma to maximise PSNR, with g(0) = 0 exactly (a clean
photo comes back unchanged, without running the network), so a lower
``--sigma`` always means lighter denoising. With ``auto``, an estimate below
the estimator's noise floor (`restore.noise.NOISE_FLOOR`, the largest estimate
of a clean training photo) counts as clean.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from restore import corrupt
from restore.data import load_idx_split
from restore.noise import NOISE_FLOOR, estimate_sigma
from restore.options import OptionError, PhotoOptions, option
from restore.pipeline import Restorer, Work
from restore.tasks.common import from_model_channels, to_model_channels

__all__ = ["DEFAULT_WEIGHTS", "STRENGTH_KEY", "DenoiseOptions", "DenoiseRestorer", "StrengthError",
           "StrengthGate"]

#: Shipped weights used by ``restore denoise`` when ``--weights`` is not given.
DEFAULT_WEIGHTS = "denoise-gaussian"
#: Card key of a noise-conditioned denoiser's strength gate (`StrengthGate`).
STRENGTH_KEY = "denoise_strength"


class StrengthError(ValueError):
    """A card's ``denoise_strength`` table is malformed (the card names it; nothing is restored)."""


@dataclass(frozen=True)
class StrengthGate:
    """g(sigma): how much of a noise-conditioned network's change ``f(x, sigma) - x`` is kept.

    Piecewise linear through ``(sigmas[i], gains[i])`` (0-255 scale), constant beyond the last
    point; g(0) = 0 exactly (nothing to remove: the input comes back unchanged), gains within 0-1
    and non-decreasing (a lower sigma never denoises more, and where g reaches 1 the output is the
    network's own). Without a table in the card (`from_card` on an older card) g is 1 for sigma > 0.
    """

    sigmas: tuple[float, ...] = (0.0,)
    gains: tuple[float, ...] = (0.0,)
    #: default gain above the table's last sigma when the table is only the (0, 0) point
    default: float = 1.0

    def __post_init__(self) -> None:
        s, g = self.sigmas, self.gains
        if len(s) != len(g) or not s:
            raise StrengthError("strength gate: 'sigma' and 'gain' need the same, non-zero number of entries")
        if not all(math.isfinite(v) for v in (*s, *g)):
            raise StrengthError("strength gate: sigmas and gains must be finite numbers")
        if s[0] != 0.0 or g[0] != 0.0:
            raise StrengthError(f"strength gate: the table must start at sigma 0 with gain 0, got ({s[0]}, {g[0]})")
        if any(b <= a for a, b in zip(s, s[1:])):
            raise StrengthError(f"strength gate: sigmas must increase, got {list(s)}")
        if any(v < 0.0 or v > 1.0 for v in g):  # a gate only lightens: g = 1 is the network as trained
            raise StrengthError(f"strength gate: gains must lie within 0-1, got {list(g)}")
        if any(b < a for a, b in zip(g, g[1:])):
            raise StrengthError(f"strength gate: gains must not decrease with sigma (a lower --sigma must never "
                                f"denoise more), got {list(g)}")

    @classmethod
    def from_card(cls, card: Any) -> StrengthGate:
        """The card's ``denoise_strength`` table ({"sigma": [...], "gain": [...]}), else g = 1 for sigma > 0."""
        table = (card or {}).get(STRENGTH_KEY)
        if table is None:
            return cls()
        name = (card or {}).get("name") or "this model"
        try:
            return cls(tuple(float(v) for v in table["sigma"]), tuple(float(v) for v in table["gain"]))
        except StrengthError as e:
            raise StrengthError(f"{name}: card key {STRENGTH_KEY!r}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise StrengthError(f"{name}: card key {STRENGTH_KEY!r} must be {{'sigma': [...], 'gain': [...]}} "
                                f"of numbers ({e})") from None

    def gain(self, sigma: Tensor) -> Tensor:
        """g of each (N,) sigma in [0, 1] units (as the network gets it), float32 on sigma's device."""
        s = sigma.detach().double().cpu() * 255.0
        if len(self.sigmas) == 1:
            g = torch.where(s > 0, torch.full_like(s, self.default), torch.zeros_like(s))
        else:
            xs, ys = torch.tensor(self.sigmas, dtype=torch.float64), torch.tensor(self.gains, dtype=torch.float64)
            i = torch.searchsorted(xs, s.clamp(0, xs[-1]), right=True).clamp(1, len(xs) - 1)
            w = ((s - xs[i - 1]) / (xs[i] - xs[i - 1])).clamp(0, 1)
            g = ys[i - 1] + w * (ys[i] - ys[i - 1])  # beyond the last sigma: clamped to it, its gain
        g = torch.where(s <= 0, torch.zeros_like(g), g)  # exactly 0: the network is not even run
        return g.float().to(sigma.device)


@dataclass(frozen=True)
class DenoiseOptions(PhotoOptions):
    """``restore denoise`` / ``restore.load("denoise-...")(image, ...)`` options."""

    task: ClassVar[str] = "denoise"

    sigma: str = option("auto", "noise level on the 0-255 scale for a noise-conditioned model, or auto: "
                                "estimated per image (restore.noise.estimate_sigma; below the estimator's "
                                "noise floor the photo counts as clean). A lower value denoises more lightly "
                                "(the card's strength gate); 0 returns the image unchanged; blind models "
                                "ignore it", kind=str, metavar="auto|N")

    def check(self) -> None:
        if self.sigma != "auto":
            try:
                level = float(self.sigma)
            except ValueError:
                raise OptionError(f"--sigma: expected auto or a number 0-255, got {self.sigma!r}") from None
            if not (math.isfinite(level) and 0.0 <= level <= 255.0):
                raise OptionError(f"--sigma: must be auto or within 0-255, got {self.sigma!r}")

    def level(self) -> float | None:
        """The given noise level in [0, 1] units, or None for ``auto``."""
        return None if self.sigma == "auto" else float(self.sigma) / 255.0


class DenoiseRestorer(Restorer):
    task = "denoise"
    options_type = DenoiseOptions
    commands = ("denoise",)

    def __init__(self, model: Any, card: Any, device: Any) -> None:
        super().__init__(model, card, device)
        c = getattr(model, "in_channels", None)
        self.model_channels = int(c if c is not None else (card.get("config") or {}).get("in_channels", 3))
        self.conditioned = bool(getattr(model, "noise_conditioned", False))
        self.gate = StrengthGate.from_card(card) if self.conditioned else None

    def noise_levels(self, x: Tensor, opts: DenoiseOptions) -> tuple[Tensor, Tensor]:
        """(sigma the network is given, gain g of its change), each (N,): the one place that decides them.

        ``auto``: `estimate_sigma` per image, and 0 (clean: g = 0) below `restore.noise.NOISE_FLOOR`.
        """
        assert self.gate is not None
        given = opts.level()
        if given is None:
            sigma = estimate_sigma(x).cpu()
            sigma = torch.where(sigma * 255.0 < NOISE_FLOOR, torch.zeros_like(sigma), sigma)
        else:
            sigma = torch.full((x.shape[0],), given)
        sigma = sigma.float()
        return sigma, self.gate.gain(sigma)

    def prepare(self, x: Tensor, mask: Tensor | None, opts: DenoiseOptions) -> Work:
        net_input = to_model_channels(x, self.model_channels, ValueError, "model")
        if not self.conditioned:
            if opts.level() is not None:
                warnings.warn(f"{self.card.get('name') or 'this model'} is a blind denoiser: --sigma is ignored",
                              stacklevel=2)
            return Work(net_input, {"x": x})
        sigma, gain = self.noise_levels(x, opts)
        if not bool((gain != 0).any()):  # every image clean (or --sigma 0): nothing to compute
            return Work(None)  # the pipeline returns the input unchanged
        if net_input.shape[0] != x.shape[0]:  # a gray model denoises each colour channel as an image
            k = net_input.shape[0] // x.shape[0]
            sigma, gain = sigma.repeat_interleave(k), gain.repeat_interleave(k)
        return Work(net_input, {"x": x, "sigma": sigma, "gain": gain})

    def network(self, work: Work, opts: DenoiseOptions) -> Tensor:
        assert work.net_input is not None
        x, net_input = work.state.pop("x"), work.net_input
        if "sigma" in work.state:
            sigma = work.state["sigma"].to(self.device, self.dtype)
            gain = work.state["gain"].to(self.device).view(-1, 1, 1, 1)
            full = bool((gain == 1).all())

            def forward(t: Tensor) -> Tensor:  # the gate per tile: it is linear, so it commutes with blending
                t = t.to(self.device, self.dtype)
                y = self.model(t, sigma).float()
                return y if full else torch.lerp(t.float(), y, gain)
        else:
            forward = lambda t: self.forward(t, opts)  # noqa: E731
        post, out = None, None
        if net_input.shape[1] != x.shape[1] and net_input.shape[0] == x.shape[0]:
            # a gray image through a colour model: each tile goes back to gray before blending, so
            # no full-size 3-channel output exists (the mean commutes with the blend up to rounding)
            def post(y: Tensor) -> Tensor:
                return from_model_channels(y, x.shape[1], self.model_channels)
            out = x if work.inplace else None
        elif work.inplace:
            out = net_input  # x itself, or (a gray model on colour) a view of its channels as images
        return self.tiled_passes(net_input, opts, forward, post=post, out=out)

    def finish(self, y: Tensor, x: Tensor, work: Work, opts: DenoiseOptions) -> Tensor:
        if y.shape != x.shape:
            y = from_model_channels(y, x.shape[1], self.model_channels)
        return y.clamp_(0.0, 1.0)

    def demo(self, photo: Tensor, seed: int, opts: DenoiseOptions, run: Any) -> list[tuple[str, Tensor]]:
        """Photo models denoise the bundled photo; Fashion-MNIST models 8 of their test images.

        A model trained on 28x28 clothing says little on a 512 px photo, so a
        ``fashion-mnist`` card shows its test images (x4 nearest upscale, one
        column each for noisy / restored / clean) when the IDX files are
        installed, and falls back to the photo otherwise.
        """
        clean = photo.float()
        if self.card.get("dataset") == "fashion-mnist":
            try:
                images, _ = load_idx_split(None, "test")
                pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(int(seed)))[:8]
                clean = torch.from_numpy(images[pick.numpy()].copy()).float().div_(255.0).unsqueeze(1)
            except (OSError, ValueError):
                pass  # no Fashion-MNIST here: the photo stands in
        noisy = corrupt.apply(clean, str(self.card["corruption"]), seed).input
        out = run(noisy)
        if clean.shape[0] == 1:
            return [("input", noisy), ("restored", out), ("target", clean)]

        def column(x: Tensor) -> Tensor:  # N1HW -> 1 x 1 x (N*4H) x 4W
            x = F.interpolate(x, scale_factor=4, mode="nearest")
            return torch.cat(list(x), dim=1)[None]

        return [("input", column(noisy)), ("restored", column(out)), ("target", column(clean))]
