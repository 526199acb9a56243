"""Small convolutional VAEs for 28x28-class images (Fashion-MNIST, MNIST).

`ConvVAE` is the denoising VAE: strided-conv encoder -> (z_mean, z_log_var),
reparameterised sample, transposed-conv decoder. `ConditionalVAE` gives the
class to both halves (one-hot or a learned embedding). They are deliberately
small (~0.3M parameters at latent 16) so a 20-epoch Fashion-MNIST run fits on a
laptop CPU.

The decoder's pre-sigmoid logits are returned alongside the image so the task
can use ``binary_cross_entropy_with_logits``, which is exact where
``BCE(sigmoid(x))`` saturates. Models never read files and never change their
own train/eval mode (docs/design.md); constructor kwargs are kept in ``self.config``
so `restore.weights` can rebuild them from a model card.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["ConvVAE", "ConditionalVAE"]


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"{name}: expected an int or (height, width), got {size!r}")


class ConvVAE(nn.Module):
    """Convolutional VAE with a Gaussian posterior and sigmoid (Bernoulli) output.

    Encoder: for each entry of ``channels`` a 3x3 stride-2 conv + ReLU, then a
    ``hidden``-unit layer and two linear heads for ``z_mean`` and ``z_log_var``.
    Decoder: the encoder's mirror - linear to the smallest feature map, then 4x4
    stride-2 transposed convs (kernel divisible by stride: no checkerboard)
    back to full size, the last one producing ``in_channels`` logits. ``image_size`` must be divisible by
    ``2 ** len(channels)`` (by 4 with the default two stages).

    ``forward`` samples z in training mode and uses ``z_mean`` in eval mode
    (pass ``sample=`` to choose explicitly); ``generator`` makes the draw
    reproducible.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 28,
        latent_dim: int = 16,
        channels: Sequence[int] = (32, 64),
        hidden: int = 64,
        _cond_dim: int = 0,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"ConvVAE: in_channels must be >= 1, got {in_channels}")
        if latent_dim < 1:
            raise ValueError(f"ConvVAE: latent_dim must be >= 1, got {latent_dim}")
        if hidden < 1:
            raise ValueError(f"ConvVAE: hidden must be >= 1, got {hidden}")
        channels = [int(c) for c in channels]
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"ConvVAE: channels must be a non-empty list of positive ints, got {channels!r}")
        h, w = _pair(image_size, "ConvVAE: image_size")
        factor = 2 ** len(channels)
        if h % factor or w % factor or h < factor or w < factor:
            raise ValueError(
                f"ConvVAE: image_size {h}x{w} must be divisible by 2**len(channels) = {factor} "
                f"(one stride-2 stage per entry of channels={channels})"
            )
        self.config: dict = {
            "in_channels": int(in_channels),
            "image_size": int(image_size) if isinstance(image_size, int) else [h, w],
            "latent_dim": int(latent_dim),
            "channels": channels,
            "hidden": int(hidden),
        }
        self.in_channels = int(in_channels)
        self.image_size = (h, w)
        self.latent_dim = int(latent_dim)
        self._cond_dim = int(_cond_dim)
        self._bottom = (channels[-1], h // factor, w // factor)
        flat = channels[-1] * (h // factor) * (w // factor)

        enc: list[nn.Module] = []
        c_prev = in_channels + self._cond_dim
        for c in channels:
            enc += [nn.Conv2d(c_prev, c, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_prev = c
        enc += [nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*enc)
        self.fc_mean = nn.Linear(hidden, latent_dim)
        self.fc_log_var = nn.Linear(hidden, latent_dim)

        self.fc_decode = nn.Sequential(nn.Linear(latent_dim + self._cond_dim, flat), nn.ReLU(inplace=True))
        # Mirror of the encoder: each stride-2 conv c_in -> c is undone by a
        # stride-2 transposed conv c -> c_in, the last one straight to logits.
        # No wide full-resolution feature map: that layer alone would cost more
        # CPU time than the whole rest of the network.
        dec: list[nn.Module] = []
        widths = [in_channels, *channels]
        for i in range(len(channels), 0, -1):
            dec.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 4, stride=2, padding=1))
            if i > 1:
                dec.append(nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(*dec)

    # -- input checks ------------------------------------------------------------
    def _check_images(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"{type(self).__name__}: x must be (N, {self.in_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}), got {tuple(x.shape)}"
            )

    def _check_latent(self, z: Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{type(self).__name__}: z must be (N, {self.latent_dim}), got {tuple(z.shape)}")

    # -- building blocks -------------------------------------------------------
    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.fc_mean(h), self.fc_log_var(h)

    def _decode_logits(self, z: Tensor) -> Tensor:
        h = self.fc_decode(z).view(z.shape[0], *self._bottom)
        return self.decoder(h)

    @staticmethod
    def reparameterize(z_mean: Tensor, z_log_var: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I) drawn from ``generator``."""
        eps = torch.randn(z_mean.shape, generator=generator, device=z_mean.device, dtype=z_mean.dtype)
        return z_mean + torch.exp(0.5 * z_log_var) * eps

    def _forward(self, x_in: Tensor, cond: Tensor | None, sample: bool | None, generator) -> dict[str, Tensor]:
        z_mean, z_log_var = self._encode(x_in)
        if sample is None:
            sample = self.training
        z = self.reparameterize(z_mean, z_log_var, generator) if sample else z_mean
        logits = self._decode_logits(z if cond is None else torch.cat([z, cond], dim=1))
        return {"recon": torch.sigmoid(logits), "logits": logits, "z_mean": z_mean, "z_log_var": z_log_var, "z": z}

    # -- public API ------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z_mean, z_log_var), each (N, latent_dim), for images in [0, 1]."""
        self._check_images(x)
        return self._encode(x)

    def decode(self, z: Tensor, logits: bool = False) -> Tensor:
        """Images in [0, 1] from latents (pre-sigmoid logits if ``logits=True``)."""
        self._check_latent(z)
        out = self._decode_logits(z)
        return out if logits else torch.sigmoid(out)

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None, sample: bool | None = None
    ) -> dict[str, Tensor]:
        """dict(recon, logits, z_mean, z_log_var, z); samples z iff training unless ``sample`` says."""
        self._check_images(x)
        return self._forward(x, None, sample, generator)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images decoded from z ~ N(0, I) (on the model's device)."""
        if n < 1:
            raise ValueError(f"ConvVAE.sample: n must be >= 1, got {n}")
        ref = self.fc_mean.weight
        z = torch.randn((n, self.latent_dim), generator=generator, device=ref.device, dtype=ref.dtype)
        return torch.sigmoid(self._decode_logits(z))


class ConditionalVAE(ConvVAE):
    """`ConvVAE` conditioned on a class label in both encoder and decoder.

    The class is a one-hot vector (``conditioning="onehot"``, ``num_classes``
    wide) or a learned ``embed_dim``-wide embedding (``"embedding"``, default
    width 8). The encoder sees it as constant extra input channels, the
    decoder as extra entries concatenated to z, so ``sample(labels)`` draws
    images of the requested classes.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 28,
        latent_dim: int = 2,
        channels: Sequence[int] = (32, 64),
        hidden: int = 64,
        num_classes: int = 10,
        conditioning: Literal["onehot", "embedding"] = "onehot",
        embed_dim: int | None = None,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"ConditionalVAE: num_classes must be >= 2, got {num_classes}")
        if conditioning == "onehot":
            if embed_dim is not None and embed_dim != num_classes:
                raise ValueError(
                    f"ConditionalVAE: embed_dim={embed_dim} conflicts with conditioning='onehot' "
                    f"(the one-hot width is num_classes={num_classes})"
                )
            cond_dim = num_classes
        elif conditioning == "embedding":
            cond_dim = 8 if embed_dim is None else int(embed_dim)
            if cond_dim < 1:
                raise ValueError(f"ConditionalVAE: embed_dim must be >= 1, got {embed_dim}")
        else:
            raise ValueError(f"ConditionalVAE: conditioning must be 'onehot' or 'embedding', got {conditioning!r}")
        super().__init__(in_channels, image_size, latent_dim, channels, hidden, _cond_dim=cond_dim)
        self.config.update({"num_classes": int(num_classes), "conditioning": conditioning})
        if conditioning == "embedding":
            self.config["embed_dim"] = cond_dim
        self.num_classes = int(num_classes)
        self.conditioning = conditioning
        self.embedding = nn.Embedding(num_classes, cond_dim) if conditioning == "embedding" else None

    def _condition(self, y: Tensor, n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != n or y.dtype.is_floating_point:
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"ConditionalVAE: y must be an integer tensor of {n} class labels, got {got}")
        y = y.to(device=device, dtype=torch.long)
        if n and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"ConditionalVAE: labels must lie in [0, {self.num_classes}), got range [{int(y.min())}, {int(y.max())}]"
            )
        if self.embedding is not None:
            return self.embedding(y).to(dtype)
        return nn.functional.one_hot(y, self.num_classes).to(dtype)

    def _with_condition(self, x: Tensor, cond: Tensor) -> Tensor:
        maps = cond[:, :, None, None].expand(-1, -1, x.shape[-2], x.shape[-1])
        return torch.cat([x, maps], dim=1)

    def encode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """(z_mean, z_log_var) of images ``x`` with class labels ``y``."""
        self._check_images(x)
        cond = self._condition(y, x.shape[0], x.device, x.dtype)
        return self._encode(self._with_condition(x, cond))

    def decode(self, z: Tensor, y: Tensor, logits: bool = False) -> Tensor:  # type: ignore[override]
        """Images (or logits) of class ``y`` from latents ``z``."""
        self._check_latent(z)
        cond = self._condition(y, z.shape[0], z.device, z.dtype)
        out = self._decode_logits(torch.cat([z, cond], dim=1))
        return out if logits else torch.sigmoid(out)

    def forward(  # type: ignore[override]
        self, x: Tensor, y: Tensor, generator: torch.Generator | None = None, sample: bool | None = None
    ) -> dict[str, Tensor]:
        """dict(recon, logits, z_mean, z_log_var, z) for images ``x`` of classes ``y``."""
        self._check_images(x)
        cond = self._condition(y, x.shape[0], x.device, x.dtype)
        return self._forward(self._with_condition(x, cond), cond, sample, generator)

    @torch.no_grad()
    def sample(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:  # type: ignore[override]
        """One image per entry of ``labels``, decoded from z ~ N(0, I)."""
        ref = self.fc_mean.weight
        if not isinstance(labels, Tensor):
            labels = torch.as_tensor(labels)
        labels = labels.reshape(-1)
        if labels.numel() < 1:
            raise ValueError("ConditionalVAE.sample: labels must hold at least one class label")
        z = torch.randn((labels.numel(), self.latent_dim), generator=generator, device=ref.device, dtype=ref.dtype)
        return self.decode(z, labels)
