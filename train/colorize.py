"""Train the LAB colorizer (issue 7): UNet L -> ab with a conditional 70x70 PatchGAN.

Usage::

    python train/colorize.py --data PHOTO_FOLDER --out runs/colorize [--config YAML] [--export weights/NAME]
    torchrun --nproc_per_node=K train/colorize.py ...        # several GPUs

The defaults are the full pix2pix colorization recipe (unet_256, 256 px crops
of photos resized to 286, batch 1, Adam 2e-4 / beta1 0.5, lambda_L1 = 100,
LR / 10 every 30 epochs); ``train/configs/colorize.yaml`` spells it out and
``train/configs/colorize-cpu.yaml`` is the small CPU model that ships as
``weights/colorize``. Photos of ``--data`` are walked recursively; a few are
held back for validation (``task.val_images``) unless ``task.val_data`` names
a separate folder. See ``python train/colorize.py --help`` for the flags.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restore.engine.cli import run_script  # noqa: E402
from restore.tasks.colorize import ColorizeTask  # noqa: E402

if __name__ == "__main__":
    run_script(ColorizeTask)
