"""Start a bins-head colorizer (Zhang et al. 2016) from a trained regression colorizer (issue 22).

Usage::

    python train/colorize_head.py colorize-squeezenet --out runs/init/colorize-squeezenet-bins
    python train/colorize.py ... --set task.generator.head=bins --init-weights runs/init/colorize-squeezenet-bins.safetensors
    python train/colorize_head.py runs/export/colorize-squeezenet-bins.safetensors --anneal-t 0.6 --out runs/export/bins-t0.6

Given a bins model, it writes a copy decoded at another annealed-mean temperature
(the same weights; T only changes the decoding), to measure a/b error against
colourfulness along T.

Every layer but the last is copied; the last is set so the annealed mean starts
at about the regression output (`restore.models.colorizer.bins_from_regression`),
so a bins run and a regression run fine-tuned from the same weights start from
the same colorizer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restore import weights as W  # noqa: E402
from restore.models.colorizer import ANNEAL_T, SqueezeColorizer, bins_from_regression  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python train/colorize_head.py", description=__doc__.split("\n\n")[0])
    p.add_argument("weights", help="SqueezeColorizer (regression, or bins to re-set T): shipped name or .safetensors file")
    p.add_argument("--out", required=True, help="output stem (writes STEM.safetensors + STEM.json)")
    p.add_argument("--anneal-t", type=float, default=ANNEAL_T, help="annealed-mean temperature (default %(default)s)")
    args = p.parse_args(argv)
    try:
        model, card = W.load(args.weights)
        if not isinstance(model, SqueezeColorizer):
            raise ValueError(f"{args.weights}: not a SqueezeColorizer (arch {card.get('arch')!r})")
        if model.head == "bins":
            new = SqueezeColorizer(**{**model.config, "anneal_t": args.anneal_t})
            new.load_state_dict(model.state_dict(), strict=True)
            what = f"{card.get('name')} decoded at T = {args.anneal_t} (same weights)"
        else:
            new = bins_from_regression(model.eval(), anneal_t=args.anneal_t)
            what = (f"converted from {card.get('name')}: its regression head turned into bins logits whose "
                    "annealed mean is about the regression output; not trained as bins yet")
    except (W.WeightsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = {k: card[k] for k in ("task", "corruption", "color", "work_size", "max_work_side") if k in card}
    out["notes"] = [f"{what} (source sha256 {card.get('sha256')})"]
    path = W.save(args.out, new, out)
    print(f"wrote {path} ({new.n_outputs} bins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
