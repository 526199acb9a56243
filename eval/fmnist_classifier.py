"""A small Fashion-MNIST CNN that judges generated images (``eval/vae.py``).

Why it exists: "the conditional VAE draws the class you ask for" should be a
number. A classifier trained on the real training split looks at each sample
and says which class it sees; the share of samples recognised as their
intended class is the score. The network is deliberately small (two conv
layers, ~0.21M parameters) so a few epochs on a laptop CPU reach ~90% test
accuracy. It is trained with random Gaussian blur on part of each batch:
without it, a classifier of sharp photos calls a mildly blurred real coat a
pullover (sigma 1 px: 13% of test coats right), so any decoder output, which
is smoother than the data, would be judged on its sharpness and not on its
class. Its weights are cached as safetensors (never pickled) together
with the settings and a fingerprint of the training data, so a report re-run
reuses it and a change of data or settings retrains it.

    python eval/fmnist_classifier.py [--data DIR] [--epochs 2] [--cache FILE]
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors import SafetensorError, safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import Tensor  # noqa: E402

from eval.common import eval_parser  # noqa: E402
from restore.data import IdxError, load_idx_tensors  # noqa: E402
from restore.io.atomic import atomic_output  # noqa: E402

__all__ = [
    "CACHE_FORMAT",
    "ClassifierError",
    "ClassifierSettings",
    "FashionCNN",
    "accuracy",
    "data_fingerprint",
    "gaussian_blur",
    "load_cached",
    "load_or_train",
    "predict",
    "save_cached",
    "train_classifier",
]

#: Bumped whenever the architecture or the training recipe changes: old caches are then retrained.
CACHE_FORMAT = 3


class ClassifierError(RuntimeError):
    """Bad classifier input (shapes, labels, settings) or an unusable cache file; the message says which."""


@dataclass(frozen=True)
class ClassifierSettings:
    """Training recipe; part of the cache key (a different recipe never reuses old weights)."""

    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    max_steps: int = 0  # 0 = all epochs; > 0 stops early (tests, quick looks)
    blur_prob: float = 0.5  # share of each batch blurred (0 = sharp images only)
    blur_sigma_min: float = 0.3  # blur sigma drawn per batch, uniform in [min, max] pixels
    blur_sigma_max: float = 1.5

    def check(self) -> None:
        if self.epochs < 1:
            raise ClassifierError(f"classifier epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ClassifierError(f"classifier batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ClassifierError(f"classifier lr must be > 0, got {self.lr}")
        if self.max_steps < 0:
            raise ClassifierError(f"classifier max_steps must be >= 0, got {self.max_steps}")
        if not 0.0 <= self.blur_prob <= 1.0:
            raise ClassifierError(f"classifier blur_prob must lie in [0, 1], got {self.blur_prob}")
        if not 0.0 < self.blur_sigma_min <= self.blur_sigma_max:
            raise ClassifierError("classifier blur sigmas need 0 < min <= max, got "
                                  f"[{self.blur_sigma_min}, {self.blur_sigma_max}]")


class FashionCNN(nn.Module):
    """conv16-pool-conv32-pool-fc128-fc``num_classes`` on 1x28x28 images in [0, 1] (BatchNorm, dropout 0.25)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        if num_classes < 2:
            raise ClassifierError(f"FashionCNN: num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(inplace=True), nn.Dropout(0.25),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ClassifierError(f"FashionCNN: expected (N, 1, 28, 28) images, got {tuple(x.shape)}")
        # centred input: the same normalisation at training and at scoring time
        return self.head(self.features(x.float() * 2.0 - 1.0))


def _check_xy(x: Tensor, y: Tensor, who: str) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ClassifierError(f"{who}: images must be (N, 1, 28, 28), got {tuple(x.shape)}")
    if y.dim() != 1 or len(y) != len(x):
        raise ClassifierError(f"{who}: need one label per image, got {tuple(y.shape)} labels for {len(x)} images")
    if len(x) == 0:
        raise ClassifierError(f"{who}: no images")


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, 1, H, W) images with reflected borders (kernel radius ceil(3 sigma))."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))


def data_fingerprint(x: Tensor, y: Tensor) -> str:
    """SHA-256 of the training images (as 8-bit) and labels: the cache is only valid for the same data."""
    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(x.detach().cpu().float().clamp(0, 1).mul(255).round().to(torch.uint8).numpy().tobytes())
    h.update(y.detach().cpu().long().numpy().tobytes())
    return h.hexdigest()


def train_classifier(
    x: Tensor,
    y: Tensor,
    settings: ClassifierSettings = ClassifierSettings(),
    *,
    num_classes: int = 10,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
) -> FashionCNN:
    """Train a fresh `FashionCNN` on clean images ``x`` (N,1,28,28) with labels ``y``; returns it in eval mode.

    Adam with a cosine-decayed learning rate, seeded shuffling; random
    1-pixel shifts (generated garments are not always centred) and, on a
    ``blur_prob`` share of each batch, a Gaussian blur (see the module note).
    """
    settings.check()
    _check_xy(x, y, "train_classifier")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ClassifierError(f"train_classifier: labels must lie in [0, {num_classes}), got "
                              f"[{int(y.min())}, {int(y.max())}]")
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    model = FashionCNN(num_classes).to(device)
    gen = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = max(1, len(x) // settings.batch_size)
    total = settings.epochs * steps_per_epoch
    if settings.max_steps:
        total = min(total, settings.max_steps)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    step, t0 = 0, time.perf_counter()
    while step < total:
        order = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[i * settings.batch_size : (i + 1) * settings.batch_size]
            xb = x[idx].float()
            shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(shift[0], shift[1]), dims=(2, 3))
            if settings.blur_prob > 0:
                sigma = settings.blur_sigma_min + (settings.blur_sigma_max - settings.blur_sigma_min) * float(
                    torch.rand((), generator=gen))
                pick = torch.rand(len(xb), generator=gen) < settings.blur_prob
                if pick.any():
                    xb[pick] = gaussian_blur(xb[pick], sigma)
            xb = xb.to(device)
            loss = F.cross_entropy(model(xb), y[idx].long().to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress and (step % 200 == 0 or step == total):
                progress(f"classifier step {step}/{total}, loss {loss.item():.3f}, {time.perf_counter() - t0:.0f} s")
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1000, device: str | torch.device = "cpu") -> Tensor:
    """Predicted class (N,) int64 of images ``x`` (N,1,28,28) in [0, 1]; the model is put in eval mode."""
    if x.dim() != 4:
        raise ClassifierError(f"predict: images must be (N, 1, 28, 28), got {tuple(x.shape)}")
    model.eval()
    out = [model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000,
             device: str | torch.device = "cpu") -> float:
    """Share of images whose predicted class equals ``y``."""
    _check_xy(x, y, "accuracy")
    return float((predict(model, x, batch_size, device) == y.long().cpu()).float().mean())


def save_cached(path: str | Path, model: FashionCNN, info: dict) -> Path:
    """Write the weights as safetensors with ``info`` (JSON) in the file's metadata, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata={"info": json.dumps(info, sort_keys=True)})
    return path


def load_cached(path: str | Path, device: str | torch.device = "cpu") -> tuple[FashionCNN, dict]:
    """Load cached weights and their ``info``; `ClassifierError` naming the file if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"{path}: no cached classifier")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        info = json.loads(meta.get("info", "{}"))
        state = load_file(str(path))
        model = FashionCNN(int(info.get("num_classes", 10)))
        model.load_state_dict(state)
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as e:
        raise ClassifierError(f"{path}: unusable classifier cache ({e})") from e
    return model.to(device).eval(), info


def load_or_train(
    cache: str | Path | None,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    settings: ClassifierSettings = ClassifierSettings(),
    *,
    num_classes: int = 10,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
) -> tuple[FashionCNN, dict]:
    """The classifier for this (data, settings): from ``cache`` when it matches, else trained and cached.

    ``info`` holds the settings, the data fingerprint, ``test_accuracy``
    (on ``test``), ``train_images``, ``seconds`` and ``cached`` (True when
    loaded). A stale or unreadable cache is retrained and overwritten.
    """
    settings.check()
    x_train, y_train = train
    x_test, y_test = test
    _check_xy(x_train, y_train, "classifier training set")
    _check_xy(x_test, y_test, "classifier test set")
    key = {"format": CACHE_FORMAT, "settings": asdict(settings), "num_classes": int(num_classes),
           "train_data": data_fingerprint(x_train, y_train)}
    if cache is not None and Path(cache).is_file():
        try:
            model, info = load_cached(cache, device)
        except ClassifierError as e:
            if progress:
                progress(f"{e}; retraining")
        else:
            if all(info.get(k) == v for k, v in key.items()):
                acc = accuracy(model, x_test, y_test, device=device)
                return model, {**info, "test_accuracy": acc, "cached": True, "cache": str(cache)}
            if progress:
                progress(f"{cache}: cached classifier was trained on other data or settings; retraining")
    t0 = time.perf_counter()
    model = train_classifier(x_train, y_train, settings, num_classes=num_classes, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    acc = accuracy(model, x_test, y_test, device=device)
    info = {**key, "test_accuracy": acc, "train_images": int(len(x_train)), "test_images": int(len(x_test)),
            "seconds": round(seconds, 1)}
    if cache is not None:
        save_cached(cache, model, info)
    return model, {**info, "cached": False, "cache": str(cache) if cache is not None else None}


def main(argv: list[str] | None = None) -> int:
    p = eval_parser(__doc__, "fmnist_classifier", data=True, seed=True, device=True)
    p.add_argument("--epochs", type=int, default=ClassifierSettings.epochs)
    p.add_argument("--batch-size", type=int, default=ClassifierSettings.batch_size)
    p.add_argument("--lr", type=float, default=ClassifierSettings.lr)
    p.add_argument("--blur-prob", type=float, default=ClassifierSettings.blur_prob,
                   help="share of each batch blurred in training (0: sharp images only; default %(default)s)")
    p.add_argument("--cache", default="eval/results/vae/fmnist_cnn.safetensors",
                   help="safetensors file to reuse or write (default: %(default)s)")
    args = p.parse_args(argv)

    try:
        train, test = load_idx_tensors(args.data, "train"), load_idx_tensors(args.data, "test")
        settings = ClassifierSettings(args.epochs, args.batch_size, args.lr, args.seed, blur_prob=args.blur_prob)
        _, info = load_or_train(args.cache, train, test, settings, device=args.device,
                                progress=lambda s: print(s, file=sys.stderr))
    except (IdxError, ClassifierError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"test accuracy {info['test_accuracy']:.4f} ({'cached' if info['cached'] else 'trained'}: {args.cache})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
