"""Re-estimate the BatchNorm statistics of exported denoiser weights on their training corruption.

Why: an exported generator carries the running statistics of the last few
training batches (momentum 0.1), which are noisy when batches are small and
the corruption strength varies (blind sigma 5-50), and which belong to the
live weights rather than the EMA ones. One pass in train mode over a few
thousand patches of the training photos, corrupted with the card's own spec
and quantised as in training, replaces them by a plain average
(`restore.engine.ema.recalibrate_batchnorm`, SWA's ``update_bn``). Only the
statistics change; the card records the pass and keeps every other field.

    python train/recalibrate_bn.py WEIGHTS --data eval/data/photos-train-plus --out STEM \\
        [--batches 200] [--batch-size 16] [--patch-size 64] [--seed 0]

WEIGHTS is a shipped name or a .safetensors file of the ``denoise`` task.
For a photo denoiser ``--data`` is a folder of training photos (never the
evaluation photos); for a Fashion-MNIST one (``denoise-fmnist``) it is the IDX
folder, and the images come from the task's own training split (the test
split and the validation tail are never seen; ``--patch-size`` is ignored).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def noisy_batches(card: dict, data: str, batches: int, batch_size: int, patch_size: int,
                  seed: int, with_sigma: bool = False) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` batches of training images, degraded by the card's task exactly as in training (seeded):
    random patches of the photos in ``data``, or random images of a Fashion-MNIST training split.
    ``with_sigma``: (input, sigma / 255) pairs, what a noise-conditioned generator is given."""
    from restore.data import ImageFolderPatches
    from restore.tasks.common import crop_load_size
    from restore.tasks.denoise import DenoiseTask

    # the card's task options (its spec and 8-bit rounding); no perceptual loss is needed, nor its warning
    task = DenoiseTask({**(card.get("options") or {}), "lambda_perc": 0.0})
    generator = torch.Generator().manual_seed(seed)
    if task.options["dataset"] == "fashion-mnist":
        images, _ = task.build_datasets(data)  # the training split only, as the card's run saw it
        order = torch.randperm(len(images), generator=generator).tolist()
    else:  # crops as large as the card's scale_range asks, scaled to patch_size as in training
        load = crop_load_size(patch_size, task.options["scale_range"])
        images = ImageFolderPatches(data, load, length=batches * batch_size, augment=True, cache=True, seed=seed)
        order = list(range(len(images)))
    for b in range(batches):
        index = [order[(b * batch_size + i) % len(order)] for i in range(batch_size)]
        clean = task.rescale(torch.stack([images[i]["target"] for i in index]), generator, patch_size)
        noisy, sigma = task.degrade(clean, generator)
        yield (noisy, sigma / 255.0) if with_sigma else noisy


class _GivenSigma(torch.nn.Module):
    """Calls a noise-conditioned generator on (input, sigma) pairs, so the BN pass sees what training did."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.model(*pair)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python train/recalibrate_bn.py", description=__doc__.split("\n\n")[0])
    p.add_argument("weights", help="shipped weights name or .safetensors file (task denoise)")
    p.add_argument("--data", required=True, help="training photos (never the evaluation photos), or the Fashion-MNIST IDX folder")
    p.add_argument("--out", required=True, help="output stem: writes OUT.safetensors and OUT.json")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if min(args.batches, args.batch_size, args.patch_size) < 1:
        p.error("--batches, --batch-size and --patch-size must be >= 1")
    from restore import weights as W
    from restore.engine.config import ConfigError
    from restore.engine.ema import recalibrate_batchnorm

    try:
        model, card = W.load(args.weights)
    except W.WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if card.get("task") != "denoise":
        print(f"error: {args.weights}: only denoisers (task denoise) are supported, this is {card.get('task')!r}",
              file=sys.stderr)
        return 2
    if not Path(args.data).is_dir():
        print(f"error: --data {args.data}: no such folder", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    try:
        conditioned = bool(getattr(model, "noise_conditioned", False))
        layers = recalibrate_batchnorm(_GivenSigma(model) if conditioned else model,
                                       noisy_batches(card, args.data, args.batches, args.batch_size,
                                                     args.patch_size, args.seed, with_sigma=conditioned))
    except (ValueError, FileNotFoundError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not layers:
        print(f"error: {args.weights}: the model has no BatchNorm layer", file=sys.stderr)
        return 2
    card = {k: v for k, v in card.items() if k not in ("sha256", "size_bytes", "created", "name")}
    card["bn_recalibration"] = {
        "layers": layers, "batches": args.batches, "batch_size": args.batch_size, "patch_size": args.patch_size,
        "seed": args.seed, "data": args.data, "corruption": card.get("corruption"),
        "command": " ".join(["python", "train/recalibrate_bn.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    path = W.save(args.out, model, card)
    print(f"re-estimated {layers} BatchNorm layer(s) over {args.batches * args.batch_size} images: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
