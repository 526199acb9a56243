"""Datasets: random patches from photo folders and on-the-fly paired corruption; the digit and
garment datasets (IDX, MNIST-5k) live in `restore.digits` and are re-exported here.

Design notes (why, not what):

* Randomness never comes from a global RNG that forked DataLoader workers would
  share. Each item builds its own generator from ``(seed, epoch, index)`` when a
  seed is given (fully reproducible whatever ``num_workers``), or from torch's
  per-worker RNG otherwise (which DataLoader already seeds differently in every
  worker). :func:`seed_worker` additionally seeds ``numpy``/``random`` for any
  user code that relies on them.
* Optional modules (``restore.io``, ``restore.corrupt``) are imported where they
  are needed, so reading IDX files does not depend on them.
"""

from __future__ import annotations

import copy
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from restore import io as rio  # module attribute: tests count rio.read_image calls
from restore.corrupt import parse_spec
from restore.digits import (
    DEFAULT_IDX_ROOT,
    FASHION_MNIST_CLASSES,
    IDX_ROOT_ENV,
    IdxDataset,
    IdxError,
    MNIST_5K,
    MNIST_5K_FILE,
    MNIST_CLASSES,
    MNIST_TEST_EVERY,
    default_idx_root,
    find_mnist_5k,
    load_idx_split,
    load_idx_tensors,
    mnist_csv_split,
    read_idx,
    read_mnist_csv,
    write_idx,
)

__all__ = [
    "IdxError",
    "read_idx",
    "write_idx",
    "load_idx_split",
    "load_idx_tensors",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "MNIST_5K",
    "MNIST_5K_FILE",
    "MNIST_TEST_EVERY",
    "find_mnist_5k",
    "read_mnist_csv",
    "mnist_csv_split",
    "DEFAULT_IDX_ROOT",
    "IDX_ROOT_ENV",
    "default_idx_root",
    "IdxDataset",
    "ImageFolderPatches",
    "PairedDataset",
    "seed_worker",
    "item_seed",
]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- seeding


def item_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for one item, independent across (seed, epoch, index, stream)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch), int(index), int(stream)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader: seed numpy and ``random`` from torch's worker seed.

    DataLoader seeds torch differently in each worker but leaves numpy's global
    RNG as forked, so every worker would draw the same "random" numbers. The
    datasets here do not rely on global RNGs, but user transforms often do.
    """
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _fresh_seed() -> int:
    """Random seed from torch's RNG (distinct per DataLoader worker by construction)."""
    return int(torch.randint(0, 2**62, (1,)).item())


# ----------------------------------------------------------------------------- image folders


def _to_gray(img: np.ndarray) -> np.ndarray:
    """RGB HxWx3 -> HxWx1 luma (ITU-R BT.601, as PIL's "L"), same dtype family."""
    w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    y = img.astype(np.float32) @ w
    if img.dtype.kind in "ui":
        y = np.clip(np.rint(y), 0, np.iinfo(img.dtype).max).astype(img.dtype)
    return y[..., None]


def _reflect_pad(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad (centered) so both sides are >= size; handles any deficit, even 1x1 images."""
    h, w = img.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return img
    return np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="reflect")


def _check_sampling(patch_size: Any, patches_per_image: int | None, length: int | None) -> None:
    if not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"ImageFolderPatches: patch_size must be a positive int, got {patch_size!r}")
    if patches_per_image is not None and length is not None:
        raise ValueError("ImageFolderPatches: give patches_per_image or length, not both")
    if patches_per_image is not None and patches_per_image < 1:
        raise ValueError(f"ImageFolderPatches: patches_per_image must be >= 1, got {patches_per_image}")
    if length is not None and length < 1:
        raise ValueError(f"ImageFolderPatches: length must be >= 1, got {length}")


class ImageFolderPatches(Dataset):
    """Random square patches from a folder of photos (recursive), for training restorers.

    Args:
        root: folder (or single file) of images, walked by ``restore.io.list_images``.
        patch_size: side of the square patches.
        patches_per_image: dataset length = this x number of images (default 1 if
            ``length`` is not given). Item ``i`` uses image ``i % n_images``.
        length: explicit dataset length instead of ``patches_per_image``.
        augment: random horizontal/vertical flips and 90-degree rotations (the
            crop position is always random).
        grayscale: return 1-channel patches (RGB converted to BT.601 luma);
            otherwise gray images are repeated to 3 channels. Alpha is dropped.
        small: what to do with images smaller than ``patch_size`` on a side:
            ``"pad"`` (reflect-pad them up) or ``"skip"`` (exclude them).
        cache: decode every image once up front and keep it in memory (as
            uint8/uint16, shared copy-on-write with forked workers). This also
            finds unreadable files before training starts.
        seed: if given, patch ``i`` in epoch ``e`` is a pure function of
            ``(seed, e, i)`` (see :meth:`set_epoch`), whatever ``num_workers``.

    Unreadable files are logged once (per process) with the reason and excluded;
    an item that lands on one is served from the next readable image instead.
    Items: ``{"target": C x P x P float32 in [0, 1]}``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        patch_size: int,
        patches_per_image: int | None = None,
        length: int | None = None,
        augment: bool = True,
        grayscale: bool = False,
        small: str = "pad",
        cache: bool = False,
        seed: int | None = None,
    ) -> None:
        self.root = Path(root)
        _check_sampling(patch_size, patches_per_image, length)
        if small not in ("pad", "skip"):
            raise ValueError(f"ImageFolderPatches: small must be 'pad' or 'skip', got {small!r}")
        if not self.root.exists():
            raise FileNotFoundError(f"{self.root}: image folder does not exist")
        self.paths: list[Path] = list(rio.list_images(self.root))
        if not self.paths:
            raise FileNotFoundError(
                f"{self.root}: no images found (looked recursively for .png .jpg .jpeg .bmp .tif .tiff .webp)"
            )
        self.patch_size = patch_size
        self.augment = augment
        self.grayscale = grayscale
        self.small = small
        self.seed = seed
        self.epoch = 0
        self._patches_per_image = patches_per_image
        self._length = length
        self._bad: dict[Path, str] = {}
        self._cache: dict[int, tuple[np.ndarray, float]] | None = None
        self._transform = self._build_transform()
        if cache:
            self._cache = {}
            for i in range(len(self.paths)):
                loaded = self._decode(i)
                if loaded is not None:
                    self._cache[i] = loaded
            if not self._cache:
                raise FileNotFoundError(f"{self.root}: none of the {len(self.paths)} images could be used")

    def resampled(
        self, patch_size: int, patches_per_image: int, *, augment: bool, seed: int | None
    ) -> "ImageFolderPatches":
        """The same images cut another way (validation crops of a photo), sharing the decoded cache.

        A cached multi-megapixel photo is then decoded and held once, however
        many datasets crop it. ``small="skip"`` datasets refuse a larger patch:
        their cache was filtered by the old size.
        """
        _check_sampling(patch_size, patches_per_image, None)
        if self.small == "skip" and patch_size > self.patch_size:
            raise ValueError(f"ImageFolderPatches.resampled: patch_size {patch_size} > {self.patch_size} "
                             "with small='skip' (images skipped for the new size were never excluded)")
        other = copy.copy(self)
        other.patch_size, other.augment, other.seed, other.epoch = patch_size, augment, seed, 0
        other._patches_per_image, other._length = patches_per_image, None
        other._transform = other._build_transform()
        return other

    # -- sizing -----------------------------------------------------------------
    def __len__(self) -> int:
        if self._length is not None:
            return self._length
        return len(self.paths) * (self._patches_per_image or 1)

    @property
    def bad_files(self) -> dict[Path, str]:
        """Files excluded so far in this process, with the reason."""
        return dict(self._bad)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used in per-item seeding (call before each epoch)."""
        self.epoch = int(epoch)

    # -- loading ----------------------------------------------------------------
    def _build_transform(self) -> Any:
        import albumentations as A

        ops: list[Any] = [A.RandomCrop(self.patch_size, self.patch_size)]
        if self.augment:
            ops += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
        return A.Compose(ops)

    def _exclude(self, i: int, reason: str) -> None:
        path = self.paths[i]
        if path not in self._bad:
            self._bad[path] = reason
            log.warning("ImageFolderPatches: skipping %s: %s", path, reason)

    def _decode(self, i: int) -> tuple[np.ndarray, float] | None:
        """Read image i as an HxWxC integer array + its max value, or None if unusable."""
        path = self.paths[i]
        if path in self._bad:
            return None
        try:
            loaded = rio.read_image(path)
        except rio.ImageReadError as e:
            self._exclude(i, getattr(e, "reason", str(e)))
            return None
        except (OSError, ValueError) as e:  # defensive: a decoder error io did not wrap
            self._exclude(i, f"{type(e).__name__}: {e}")
            return None
        img = loaded.image
        if img.dim() != 3 or img.shape[0] not in (1, 3, 4):
            self._exclude(i, f"unexpected decoded shape {tuple(img.shape)}")
            return None
        img = img[:3]  # drop alpha if a reader ever hands it over
        h, w = img.shape[1:]
        if min(h, w) < self.patch_size and self.small == "skip":
            self._exclude(i, f"{h}x{w} is smaller than patch_size {self.patch_size}")
            return None
        # Keep the source precision but not float32's 4x memory.
        maxval = 65535.0 if getattr(loaded, "bit_depth", 8) > 8 else 255.0
        dtype = np.uint16 if maxval > 255 else np.uint8
        arr = (img.permute(1, 2, 0).numpy() * maxval).round().clip(0, maxval).astype(dtype)
        return arr, maxval

    def _load(self, i: int) -> tuple[np.ndarray, float] | None:
        if self._cache is not None:
            return self._cache.get(i)
        return self._decode(i)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        n = len(self.paths)
        start = index % n
        for k in range(n):
            loaded = self._load((start + k) % n)
            if loaded is not None:
                break
        else:
            raise RuntimeError(f"{self.root}: none of the {n} images could be used: {self._bad}")
        arr, maxval = loaded
        if arr.shape[2] == 1 and not self.grayscale:
            arr = np.repeat(arr, 3, axis=2)
        elif arr.shape[2] == 3 and self.grayscale:
            arr = _to_gray(arr)
        arr = _reflect_pad(arr, self.patch_size)
        seed = item_seed(self.seed, self.epoch, index) if self.seed is not None else _fresh_seed()
        # One shared generator pair for the whole pipeline: Compose.set_random_seed
        # would give every child transform the *same* seed, so the horizontal and
        # vertical flips would always fire together (a rotation, never a mirror).
        self._transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        patch = self._transform(image=arr)["image"]
        if patch.ndim == 2:  # albumentations may squeeze a single channel
            patch = patch[..., None]
        target = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1))).float().div_(maxval)
        return {"target": target}


# ----------------------------------------------------------------------------- paired


class PairedDataset(Dataset):
    """Wraps a dataset of ``{"target": CHW}`` items and adds a degraded ``input``.

    ``spec`` is a ``restore.corrupt`` spec string (``"gaussian:sigma=5-50"``) or
    any callable ``(clean NCHW, generator) -> Degraded``. The corruption of item
    ``i`` in epoch ``e`` is drawn from a generator seeded by ``(seed, e, i)``, so
    a validation set is fixed and a training set changes each epoch only when
    :meth:`set_epoch` is called (it is forwarded to the base dataset). Adds
    ``mask`` (1xHxW, 1 = hole) and ``sigma`` (scalar, 0-255 scale) when the
    corruption produces them. Other keys of the base item (``label``) pass through.
    """

    def __init__(self, base: Dataset, spec: str | Callable[..., Any], seed: int = 0) -> None:
        self.base = base
        self.spec = spec if isinstance(spec, str) else getattr(spec, "spec", repr(spec))
        if isinstance(spec, str):
            self.corruption = parse_spec(spec)
        elif callable(spec):
            self.corruption = spec
        else:
            raise TypeError(f"PairedDataset: spec must be a spec string or a callable, got {type(spec).__name__}")
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch for per-item seeding; forwarded to the base dataset if it has one."""
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = self.base[index]
        if not isinstance(item, Mapping) or "target" not in item:
            raise TypeError(f"PairedDataset: base items must be dicts with a 'target' tensor, got {type(item).__name__}")
        item = dict(item)
        clean = item["target"]
        if not isinstance(clean, Tensor) or clean.dim() != 3:
            raise ValueError(f"PairedDataset: base 'target' must be a CHW tensor, got {getattr(clean, 'shape', clean)}")
        gen = torch.Generator(device=clean.device)
        gen.manual_seed(item_seed(self.seed, self.epoch, index, stream=1))
        deg = self.corruption(clean.unsqueeze(0), gen)
        item["input"] = deg.input[0]
        if getattr(deg, "mask", None) is not None:
            item["mask"] = deg.mask[0]
        if getattr(deg, "sigma", None) is not None:
            sigma = torch.as_tensor(deg.sigma, dtype=torch.float32).reshape(-1)
            item["sigma"] = sigma[0]
        return item
