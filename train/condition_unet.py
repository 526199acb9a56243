"""Turn blind denoising UNet weights into noise-conditioned ones (`restore.models.cond_unet.CondUNet`).

Example (the start of the shipped denoise-gaussian-cond-l1 chain)::

    python train/condition_unet.py denoise-gaussian-l1 --out runs/init/denoise-gaussian-l1-cond
    python train/denoise.py --config train/configs/denoise-gaussian-cond-l1.yaml ... \\
        --init-weights runs/init/denoise-gaussian-l1-cond.safetensors

The new model computes exactly what the blind one does (the noise-map input's
weights are zero), so training only has to teach it to read sigma; the card
records the source and its SHA-256 (``converted_from``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restore import weights as W  # noqa: E402
from restore.models.blocks import ModelConfigError  # noqa: E402
from restore.models.cond_unet import from_blind  # noqa: E402
from restore.models.unet import UNet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python train/condition_unet.py", description=__doc__.split("\n\n")[0])
    p.add_argument("weights", help="blind denoiser: shipped name or .safetensors file (a residual UNet)")
    p.add_argument("--out", required=True, help="output stem (writes STEM.safetensors + STEM.json)")
    args = p.parse_args(argv)
    try:
        model, card = W.load(args.weights)
        if not isinstance(model, UNet) or card.get("task") != "denoise":
            raise ModelConfigError(f"{args.weights}: not a denoising UNet (arch {card.get('arch')!r})")
        cond = from_blind(model.eval())
    except (W.WeightsError, FileNotFoundError, ModelConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    new = {"task": "denoise", "corruption": card["corruption"], "dataset": card.get("dataset", "photos"),
           "input": card.get("input"), "noise_conditioned": True,
           "converted_from": {"weights": card.get("name"), "sha256": card.get("sha256")},
           "notes": ["blind weights with a zero-weighted noise-map input: not trained to read sigma yet"]}
    path = W.save(args.out, cond, new)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
