"""How much class information survives the VAE's input noise? A classifier trained for it says.

Why it exists: issue 5 asks for k-NN accuracy of the denoising VAE's z_mean;
on the noisy inputs (x + 0.45 N(0, 1), clipped) that figure is bounded by what
the noisy image still says about the class. This script trains a CNN
classifier directly on fresh noisy copies of the training split (new noise
every batch) and scores it on the test split corrupted exactly as
``eval/vae_metrics.py`` corrupts it (same spec, same seed), so the VAE's
latent k-NN can be read against a model trained for the job.

    python eval/fmnist_noisy_ceiling.py [--arch small|wide] [--epochs 6] [--data DIR]

``small`` is the judge's architecture (``eval/fmnist_classifier.FashionCNN``,
two conv layers); ``wide`` has four conv layers (32-32-64-32); ``resnet`` is a
ten-layer pre-activation ResNet (32 channels at 28 px, 64 at 14, 128 at 7,
global average pooling, 0.7 M parameters), the strongest of the three. Adam with a
one-cycle LR (peak 2e-3), batch 128, seeded. CPU: ~1 min per epoch (small),
~7 min per epoch (wide), ~9 min per epoch (resnet) on one core.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from eval import fmnist_classifier as FC  # noqa: E402
from eval.common import eval_parser  # noqa: E402
from restore import corrupt  # noqa: E402
from restore.data import IdxError, load_idx_tensors  # noqa: E402

SIGMA = 114.75  # the issue-5 setup: x + 0.45 N(0, 1) on a 0-255 scale, clipped
SPEC = f"gaussian:sigma={SIGMA}"


class _PreActBlock(nn.Module):
    """BN-ReLU-conv twice with an identity (or strided 1x1) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class ResNetClassifier(nn.Module):
    """Pre-activation ResNet for 1x28x28 inputs in [0, 1]: 32@28 -> 64@14 -> 128@7, pooled, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, 1, 1, bias=False), _PreActBlock(32, 32, 1),
            _PreActBlock(32, 64, 2), _PreActBlock(64, 64, 1),
            _PreActBlock(64, 128, 2), _PreActBlock(128, 128, 1),
            nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float() * 2.0 - 1.0)


def build(arch: str) -> nn.Module:
    """The judge's CNN, the same head on four conv layers (``wide``), or a small ResNet (``resnet``)."""
    if arch == "resnet":
        return ResNetClassifier()
    model = FC.FashionCNN()
    if arch == "wide":
        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        model.features = nn.Sequential(*conv(1, 32), *conv(32, 32), nn.MaxPool2d(2),
                                       *conv(32, 64), *conv(64, 32), nn.MaxPool2d(2))
    return model


def train_on_noise(x: torch.Tensor, y: torch.Tensor, x_test_noisy: torch.Tensor, y_test: torch.Tensor, *,
                   arch: str = "small", epochs: int = 6, batch_size: int = 128, std: float = 0.45,
                   seed: int = 0, log=print) -> float:
    """Train on ``x`` plus fresh Gaussian noise of ``std`` each batch; accuracy on ``x_test_noisy`` after each epoch."""
    torch.manual_seed(seed)
    model = build(arch)
    per_epoch = len(x) // batch_size
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * per_epoch)
    acc = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb = (x[idx] + std * torch.randn(len(idx), *x.shape[1:])).clamp(0, 1)
            loss = F.cross_entropy(model(xb), y[idx].long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = FC.accuracy(model, x_test_noisy, y_test)
        log(f"epoch {epoch + 1}/{epochs}: accuracy on the noisy test split {acc:.4f}")
    return acc


def main(argv: list[str] | None = None) -> int:
    p = eval_parser(__doc__, "fmnist_noisy_ceiling",
                    seed={"help": "training seed; the test split is corrupted with seed 0"}, data=True)
    p.add_argument("--arch", choices=("small", "wide", "resnet"), default="small")
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")

    try:
        x_train, y_train = load_idx_tensors(args.data, "train")
        x_test, y_test = load_idx_tensors(args.data, "test")
    except IdxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    noisy_test = corrupt.apply(x_test, SPEC, 0).input  # as eval/vae_metrics.py does
    acc = train_on_noise(x_train, y_train, noisy_test, y_test, arch=args.arch, epochs=args.epochs,
                         std=SIGMA / 255.0, seed=args.seed)
    print(f"{args.arch} CNN trained on noisy images ({SPEC}): {acc:.4f} on the noisy test split")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
