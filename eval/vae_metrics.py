"""Model-card figures of a VAE's weights on a full MNIST-style test split.

    python eval/vae_metrics.py --weights vae-fashion [--data DIR] [--seed 0] [--k 5]
                               [--json OUT.json] [--update-card]

Measures, on every test image (Fashion-MNIST: all 10,000) corrupted once with
the card's spec and ``--seed`` (``restore.corrupt.apply`` on the whole split):
MSE / PSNR / SSIM of the noisy input and of the VAE's z_mean reconstruction
against the clean image (means of per-image values), the improvement, and the
k-nearest-neighbour (k=5) accuracy of z_mean: a k-NN classifier fit on the
z_mean of the (equally corrupted, seed + 1) training split, scored on the test
split, and the same probe with clean images given to the encoder. For
conditional VAEs (whose z is meant to be class-free, so a low k-NN is good
there) it also scores ``--samples-per-class`` prior samples per class with a
raw-pixel k-NN fit on the clean training images. ``--update-card`` writes the figures and this command into the model
card (the weights are re-saved unchanged, with a fresh hash record).
The functions live in `restore.tasks.vae` so the analysis report reuses them.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from eval.common import eval_parser  # noqa: E402
from restore import corrupt  # noqa: E402
from restore import weights as W  # noqa: E402
from restore.data import IdxError, default_idx_root, load_idx_tensors  # noqa: E402
from restore.tasks.vae import encode, evaluate_denoising, knn_accuracy  # noqa: E402


@torch.no_grad()
def conditional_sample_accuracy(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
                                per_class: int = 100, seed: int = 0, k: int = 5) -> float:
    """Share of prior samples of each class that a k-NN on clean training pixels assigns to that class.

    A classifier-free sanity figure (raw-pixel k-NN is ~85% accurate on real
    test images); eval/vae.py scores the samples with a trained classifier.
    """
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(int(model.num_classes)).repeat_interleave(per_class)
    z = torch.randn(len(labels), int(model.latent_dim), generator=gen)
    ref = next(model.parameters())
    samples = model.decode(z.to(ref.device), labels.to(ref.device)).float().cpu()
    return knn_accuracy(x_train.flatten(1), y_train, samples.flatten(1), labels, k=k)


def measure(weights: str, data: str | None = None, seed: int = 0, k: int = 5, device: str = "cpu",
            train_limit: int | None = None, per_class: int = 100) -> dict[str, Any]:
    """The figures for ``weights`` (a shipped name or a path) as a flat dict."""
    model, card = W.load(weights, device=device)
    model.eval()
    if card.get("task") != "vae":
        raise W.WeightsError(f"weights {weights!r} are for task {card.get('task')!r}, not 'vae'")
    root = data or str(default_idx_root())
    spec = str(card["corruption"])

    t0 = time.perf_counter()
    x_test, y_test = load_idx_tensors(root, "test")
    r = evaluate_denoising(model, x_test, y_test, spec, seed, device=device, return_latents=True)
    x_train, y_train = load_idx_tensors(root, "train", train_limit)
    noisy_train = corrupt.apply(x_train, spec, seed + 1).input
    z_train = encode(model, noisy_train, y_train, device=device)
    knn = knn_accuracy(z_train, y_train, r["z_mean"], y_test, k=k)
    out: dict[str, Any] = {
        "test_images": int(r["n"]),
        "corruption": spec,
        "seed": seed,
        "noisy_mse": r["noisy_mse"], "noisy_psnr": r["noisy_psnr"], "noisy_ssim": r["noisy_ssim"],
        "mse": r["mse"], "psnr": r["psnr"], "ssim": r["ssim"],
        "psnr_gain": r["psnr"] - r["noisy_psnr"], "ssim_gain": r["ssim"] - r["noisy_ssim"],
        f"knn{k}_accuracy": knn,
        "knn_train_images": int(len(x_train)),
    }
    if r["noisy_mse"] > 0.0:
        # the same probe when the encoder sees clean images (train and test): does the latent
        # space separate classes for a clean garment too, not only for the noise it was trained on?
        out[f"knn{k}_accuracy_clean_input"] = knn_accuracy(
            encode(model, x_train, y_train, device=device), y_train,
            encode(model, x_test, y_test, device=device), y_test, k=k)
    else:  # identity corruption (conditional VAEs): no noisy baseline to compare with
        for key in ("noisy_mse", "noisy_psnr", "noisy_ssim", "psnr_gain", "ssim_gain"):
            out.pop(key)
    if getattr(model, "conditioning", None) in ("onehot", "embedding") and per_class > 0:
        out[f"sample_pixel_knn{k}_accuracy"] = conditional_sample_accuracy(model, x_train, y_train, per_class, seed, k)
        out["samples_per_class"] = per_class
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = eval_parser(
        __doc__, "vae_metrics",
        weights={"required": True, "help": "shipped name (vae-fashion) or STEM/.json/.safetensors path"},
        data=True,
        seed={"help": "corruption seed of the test split (train split: seed + 1)"},
        device=True,
        update_card=True,
    )
    p.add_argument("--k", type=int, default=5, help="neighbours of the k-NN probe")
    p.add_argument("--train-limit", type=int, default=0, help="fit the k-NN on the first N training images (0 = all)")
    p.add_argument("--samples-per-class", type=int, default=100,
                   help="conditional VAEs: prior samples per class scored by a raw-pixel k-NN (0 = skip)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    try:
        figures = measure(args.weights, args.data, args.seed, args.k, args.device, args.train_limit or None,
                          args.samples_per_class)
    except (W.WeightsError, IdxError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key.ljust(width)}  {value:.4f}" if isinstance(value, float) else f"{key.ljust(width)}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    if args.update_card:
        model, card = W.load(args.weights)
        json_path = W.card_path(args.weights)
        rounded = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items() if k != "seconds"}
        card["metrics"] = {**(card.get("metrics") or {}), "test": rounded}
        card["metrics_command"] = "python eval/vae_metrics.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        for key in ("sha256", "size_bytes", "created", "card_format"):
            card.pop(key, None)
        W.save(json_path.with_suffix(""), model, card)
        print(f"updated {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
