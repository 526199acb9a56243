"""Train the UNet (+ PatchGAN) photo denoiser through the shared engine.

Examples (full-size GPU recipes; each config documents its CPU-size override)::

    python train/denoise.py --config train/configs/denoise-gaussian.yaml \
        --data eval/data/photos-train --out runs/denoise-gaussian --export weights/denoise-gaussian
    python train/denoise.py --config train/configs/denoise-gaussian-l1.yaml \
        --data eval/data/photos-train --out runs/denoise-gaussian-l1
    python train/denoise.py --config train/configs/denoise-fmnist.yaml \
        --data /usr/share/datasets/fashion-mnist --out runs/denoise-fmnist --export weights/denoise-fmnist

Every task option (``task.*`` in the YAML) can be overridden with
``--set task.lambda_adv=0.01``; ``--resume`` continues a run folder.
Never train on the evaluation photos (eval/data/photos-eval): ``python
eval/sets.py build`` makes the disjoint training folder eval/data/photos-train.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restore.engine.cli import run_script  # noqa: E402
from restore.tasks.denoise import DenoiseTask  # noqa: E402

if __name__ == "__main__":
    run_script(DenoiseTask)
