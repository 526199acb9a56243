"""Train the gated-convolution inpainter (issue 8) on a folder of photos.

    python train/inpaint.py --data eval/data/photos-train --out runs/inpaint \
        --config train/configs/inpaint.yaml [--resume] [--export weights/inpaint]
    torchrun --nproc_per_node=K train/inpaint.py ...      # several GPUs

Configs: ``inpaint.yaml`` (full recipe: L1 hole/valid + hinge + perceptual +
style + TV), ``inpaint-deepfill.yaml`` (DeepFill v2: L1 + hinge only),
``inpaint-cpu.yaml`` (a small L1-only model that a shared CPU can train in
half an hour; its measured figures, below the mean-fill floor, are in the file).
Every option is listed in `restore.tasks.inpaint.InpaintTask.defaults`;
override any with ``--set task.lambda_adv=0.05``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restore.engine.cli import run_script  # noqa: E402
from restore.tasks.inpaint import InpaintTask  # noqa: E402

if __name__ == "__main__":
    run_script(InpaintTask)
