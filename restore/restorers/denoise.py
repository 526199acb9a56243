"""Denoising: a residual UNet (photos, Fashion-MNIST) restores each image in overlap-blended tiles.

A colour model sees a gray image as three equal channels (the output is
averaged back to one); a gray model (Fashion-MNIST) denoises each colour
channel on its own. The whole image is padded by the UNet itself (centred,
as in training: a model trained on one size depends on that layout); tiles
sit on the same stride grid (`restore.tiling.tiled_on_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from restore.options import PhotoOptions
from restore.pipeline import Restorer, Work
from restore.tasks.common import from_model_channels, to_model_channels

__all__ = ["DEFAULT_WEIGHTS", "DenoiseOptions", "DenoiseRestorer"]

#: Shipped weights used by ``restore denoise`` when ``--weights`` is not given.
DEFAULT_WEIGHTS = "denoise-gaussian"


@dataclass(frozen=True)
class DenoiseOptions(PhotoOptions):
    """``restore denoise`` / ``restore.load("denoise-...")(image, ...)`` options."""

    task: ClassVar[str] = "denoise"


class DenoiseRestorer(Restorer):
    task = "denoise"
    options_type = DenoiseOptions
    commands = ("denoise",)

    def __init__(self, model: Any, card: Any, device: Any) -> None:
        super().__init__(model, card, device)
        c = getattr(model, "in_channels", None)
        self.model_channels = int(c if c is not None else (card.get("config") or {}).get("in_channels", 3))

    def prepare(self, x: Tensor, mask: Tensor | None, opts: DenoiseOptions) -> Work:
        return Work(to_model_channels(x, self.model_channels, ValueError, "model"))

    def finish(self, y: Tensor | None, x: Tensor, work: Work, opts: DenoiseOptions) -> Tensor:
        assert y is not None
        return from_model_channels(y, x.shape[1], self.model_channels).clamp_(0.0, 1.0)

    def demo(self, photo: Tensor, seed: int, opts: DenoiseOptions, run: Any) -> list[tuple[str, Tensor]]:
        """Photo models denoise the bundled photo; Fashion-MNIST models 8 of their test images.

        A model trained on 28x28 clothing says little on a 512 px photo, so a
        ``fashion-mnist`` card shows its test images (x4 nearest upscale, one
        column each for noisy / restored / clean) when the IDX files are
        installed, and falls back to the photo otherwise.
        """
        import torch

        from restore import corrupt
        from restore.data import load_idx_split

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
