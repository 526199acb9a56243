"""Train the VAE family (denoising VAE with SupCon, conditional VAEs) through the shared engine.

Examples (``--data`` is a folder of MNIST-style IDX files, train-* and t10k-*;
Fashion-MNIST from the Debian package, or MNIST's own files)::

    python train/vae.py --config train/configs/vae-fashion.yaml \
        --data /usr/share/datasets/fashion-mnist --out runs/vae-fashion --export weights/vae-fashion
    python train/vae.py --config train/configs/cvae-onehot.yaml \
        --data /usr/share/datasets/fashion-mnist --out runs/cvae-onehot --export weights/cvae-onehot
    python train/vae.py --config train/configs/vae-latent-2.yaml --data DIR --out runs/vae-latent-2
    python train/vae.py --config train/configs/vae-fashion.yaml --data ~/mnist \
        --set task.dataset=mnist --out runs/vae-mnist          # MNIST: digit class names

Each run writes ``runs/NAME/history.csv`` (one row per epoch: losses, KL beta,
train and test MSE/PSNR/SSIM), TensorBoard logs and resumable checkpoints.
Every task option can be overridden with ``--set task.beta_max=0.5``.
``python eval/vae_metrics.py --weights weights/vae-fashion`` measures the
model-card figures on the full test split.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restore.engine.cli import run_script  # noqa: E402
from restore.tasks.vae import VAETask  # noqa: E402

if __name__ == "__main__":
    run_script(VAETask)
