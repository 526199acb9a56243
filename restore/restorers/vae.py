"""VAE denoising of 28x28 gray images (``restore denoise --weights vae-fashion``).

By default the output is decoded from z_mean (deterministic, and the best
single estimate); ``samples=K`` averages K decoder outputs from z ~ q(z|x),
and ``uncertainty`` adds their per-pixel standard deviation as a side image
``std`` (``NAME.std.png`` on the command line). A conditional VAE takes the
class as ``label`` (name or index), else per image the class whose
conditioning gives the lowest negative ELBO. Inputs must be 28x28 (the shape
the weights were trained on): other sizes are refused instead of resized,
because a photo squeezed into 28x28 and blown up again is not a restoration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restore import corrupt
from restore.data import IdxError, default_idx_root, load_idx_split
from restore.losses import kl_divergence
from restore.options import Options, OptionError, option
from restore.pipeline import Restorer, Work
from restore.tasks.vae import VAEInputError, _is_conditional, _run_model

__all__ = ["VAEOptions", "VAERestorer", "infer_labels", "posterior_samples"]


@dataclass(frozen=True)
class VAEOptions(Options):
    """Options of VAE weights (``restore denoise --weights vae-fashion``); ``tile`` is moot at 28x28."""

    task: ClassVar[str] = "vae"

    samples: int = option(0, "average K decoder outputs from z ~ q(z|x) (0: decode z_mean, deterministic)",
                          minimum=0, metavar="K")
    uncertainty: bool = option(False, "also return the per-pixel std of the samples (on the command line "
                                      "NAME.std.png, 16-bit, std in [0,1] units); implies samples=16 unless given",
                               flag=True)
    label: str | None = option(None, "conditional VAE weights: class name or index of every input (unset: per "
                                     "image, the class whose conditioning gives the lowest negative ELBO)",
                               kind=str, metavar="CLASS")
    seed: int = option(0, "seed of the posterior samples")

    def check(self) -> None:
        if self.uncertainty and self.samples == 1:
            raise OptionError("--uncertainty needs --samples >= 2 (a std of 1 sample is meaningless)")


def to_gray28(x: Tensor, card: Any) -> Tensor:
    size = card.get("input", {}) if isinstance(card.get("input"), dict) else {}
    h, w = int(size.get("height", 28)), int(size.get("width", 28))
    if tuple(x.shape[-2:]) != (h, w):
        raise VAEInputError(
            f"the VAE weights {card.get('name', '')!r} take {w}x{h} gray images (the size of "
            f"{card.get('dataset', 'its training set')}); this image is {x.shape[-1]}x{x.shape[-2]}. "
            "Resize it first (restoring photos is the job of the UNet denoiser)"
        )
    if x.shape[1] == 3:
        wts = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
        x = (x * wts[None, :, None, None]).sum(1, keepdim=True)
    return x.float()


def resolve_label(label: Any, names: Sequence[str], n: int, device: torch.device) -> Tensor:
    text = str(label).strip()
    lowered = [s.lower() for s in names]
    if text.lower() in lowered:
        idx = lowered.index(text.lower())
    elif text.isdigit() and int(text) < len(names):
        idx = int(text)
    else:
        raise VAEInputError(f"--label {label!r}: not a class of these weights; use an index 0-{len(names) - 1} "
                            f"or one of: {', '.join(names)}")
    return torch.full((n,), idx, dtype=torch.long, device=device)


@torch.no_grad()
def infer_labels(model: nn.Module, x: Tensor) -> Tensor:
    """Per image, the class whose conditioning gives the lowest negative ELBO (BCE + KL, z = z_mean)."""
    n = x.shape[0]
    scores = []
    for c in range(int(model.num_classes)):
        y = torch.full((n,), c, dtype=torch.long, device=x.device)
        out = model(x, y, sample=False)
        bce = F.binary_cross_entropy_with_logits(out["logits"], x, reduction="none").flatten(1).sum(1)
        scores.append(bce + kl_divergence(out["z_mean"], out["z_log_var"], reduction="none"))
    return torch.stack(scores, 1).argmin(1)


@torch.no_grad()
def posterior_samples(
    model: nn.Module, x: Tensor, y: Tensor | None, k: int, generator: torch.Generator | None = None
) -> Tensor:
    """(K, N, C, H, W) decoder outputs for K draws of z ~ q(z|x) (one encoder pass)."""
    if k < 1:
        raise VAEInputError(f"--samples must be >= 1, got {k}")
    z_mean, z_log_var = model.encode(x, y) if y is not None else model.encode(x)
    outs = []
    for _ in range(k):
        z = model.reparameterize(z_mean, z_log_var, generator)
        outs.append(model.decode(z, y) if y is not None else model.decode(z))
    return torch.stack(outs)


class VAERestorer(Restorer):
    task = "vae"
    options_type = VAEOptions
    commands = ("denoise",)

    def prepare(self, x: Tensor, mask: Tensor | None, opts: VAEOptions) -> Work:
        return Work(to_gray28(x, self.card).to(self.device))

    def network(self, work: Work, opts: VAEOptions) -> Tensor:
        """The whole 28x28 batch at once: no tiles, no ensemble (the model learnt one pose)."""
        x = work.net_input
        assert x is not None
        k = 16 if opts.uncertainty and opts.samples == 0 else opts.samples
        y = None
        if _is_conditional(self.model):
            names = self.card.get("class_names") or [str(i) for i in range(int(self.model.num_classes))]
            y = resolve_label(opts.label, names, x.shape[0], self.device) if opts.label is not None \
                else infer_labels(self.model, x)
        if k == 0:
            return _run_model(self.model, x, y, sample=False)["recon"]
        gen = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu")
        gen.manual_seed(int(opts.seed))
        samples = posterior_samples(self.model, x, y, k, gen)
        if opts.uncertainty:
            work.state["std"] = samples.std(0, unbiased=True)
        return samples.mean(0)

    def finish(self, y: Tensor, x: Tensor, work: Work, opts: VAEOptions) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        out = y if x.shape[1] == 1 else y.expand(-1, x.shape[1], -1, -1)
        return (out, {"std": work.state["std"]}) if "std" in work.state else out

    def demo(self, photo: Tensor, seed: int, opts: VAEOptions, run: Any) -> list[tuple[str, Tensor]]:
        """Fashion-MNIST test images, not the bundled photos (28x28).

        Denoising VAE: noisy / z_mean reconstruction / 16-sample posterior std /
        clean, 8 test images each (x4 nearest upscale; the std column stretched to
        its maximum). Conditional VAE: one column of prior samples per class,
        labelled by the class name's slug. When the IDX test files are missing, the
        photo, gray and area-resized to 28x28, stands in ("input-photo").
        """
        model, card = self.model, self.card
        gen = torch.Generator().manual_seed(int(seed))
        if _is_conditional(model):
            names = card.get("class_names") or [str(i) for i in range(int(model.num_classes))]
            panels = []
            for c, name in enumerate(names[: int(model.num_classes)]):
                z = torch.randn(6, int(model.latent_dim), generator=gen).to(self.device)
                y = torch.full((6,), c, dtype=torch.long, device=self.device)
                with torch.no_grad():
                    strip = torch.cat([model.decode(z[i : i + 1], y[i : i + 1]) for i in range(6)], 0)
                panels.append((_slug(str(name)), _column(strip)))
            return panels
        found = _demo_images(card, 8, seed)
        if found is not None:
            clean, where = found[0], "test"
        else:
            clean = to_gray28(F.interpolate(photo.float(), size=(28, 28), mode="area"), card)
            clean, where = clean.expand(8, -1, -1, -1).contiguous(), "photo"
        noisy = corrupt.apply(clean, str(card["corruption"]), seed).input
        sampled = run(noisy, samples=16, uncertainty=True, seed=seed, full=True)
        std = sampled.extras["std"]
        std = std / std.max().clamp_min(1e-6)  # shown stretched to the full range
        return [
            ("input" if where == "test" else "input-photo", _column(noisy)),
            ("restored", _column(run(noisy))),
            ("std", _column(std)),
            ("target", _column(clean)),
        ]


def _demo_images(card: Any, n: int, seed: int) -> tuple[Tensor, Tensor] | None:
    for root in filter(None, [card.get("data"), str(default_idx_root())]):
        try:
            images, labels = load_idx_split(root, "test")
        except (IdxError, OSError):
            continue
        idx = np.random.default_rng(seed).choice(len(images), size=n, replace=False)
        return torch.from_numpy(images[idx].copy()).float().div_(255.0).unsqueeze(1), torch.from_numpy(labels[idx].copy())
    return None


def _slug(name: str) -> str:
    """A class name usable as a panel label and file name: "T-shirt/top" -> "t-shirt-top"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "class"


def _column(x: Tensor, factor: int = 4) -> Tensor:
    """(N,C,H,W) -> (1,C,N*(factor*H+2)-2,factor*W): the images upscaled and stacked top to bottom."""
    x = F.interpolate(x.detach().float().cpu().clamp(0, 1), scale_factor=factor, mode="nearest")
    n, c, h, w = x.shape
    gap = torch.ones(c, 2, w)
    parts: list[Tensor] = []
    for i in range(n):
        parts += [x[i], gap] if i < n - 1 else [x[i]]
    return torch.cat(parts, dim=1)[None]
