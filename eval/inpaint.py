"""Evaluate inpainting on seeded free-form masks: a model (``--weights``) beside OpenCV Telea and Navier-Stokes.

Examples::

    python eval/inpaint.py --baselines-only                      # small (10-20 %) and large (30-45 %) holes
    python eval/inpaint.py --baselines-only --masks large --mask-kind box
    python eval/inpaint.py --weights inpaint-gated

Each mask size is a group in ``summary.md``: whole-image PSNR/SSIM, PSNR/SSIM
inside the holes, the largest change to known pixels (must be 0 for a method
that keeps them) and seconds per image. Masks and holed inputs are cached under
``eval/data/cache/<spec-slug>/`` from seeds derived from the image names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from eval import baselines as B  # noqa: E402
from eval import report, runner, sets  # noqa: E402

#: Mask coverage bands scored by default (fraction of the image that is hole).
COVERAGE: dict[str, str] = {"small": "0.1-0.2", "large": "0.3-0.45"}


def inpaint_scorer(lpips: report.LpipsScorer) -> runner.Scorer:
    """Whole-image and in-hole PSNR/SSIM, known-pixel check, mask coverage (+ LPIPS when available)."""

    def score(out: torch.Tensor, s: sets.Sample) -> dict:
        r = report.psnr_ssim(out, s.target)
        r["psnr_hole"] = report.masked_psnr(out, s.target, s.mask)
        r["ssim_hole"] = report.masked_ssim(out, s.target, s.mask)
        r["known_max_diff"] = report.known_max_diff(out, s.input, s.mask)
        r["coverage"] = float(s.mask.mean())
        if lpips.available:
            r["lpips"] = lpips(out, s.target)
        return r

    return score


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python eval/inpaint.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.common_arguments(p, "inpaint", "photos-eval", "")
    p.add_argument("--masks", default="small,large",
                   help=f"comma-separated coverage bands: {', '.join(f'{k}={v}' for k, v in COVERAGE.items())} "
                        "(default small,large)")
    p.add_argument("--mask-kind", choices=("freeform", "box"), default="freeform",
                   help="mask generator (default freeform: DeepFill v2 strokes)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.baselines_only and not args.weights:
        p.error("give --weights NAME|FILE, or --baselines-only to score the classical baselines alone")
    bands = [b.strip() for b in args.masks.split(",") if b.strip()]
    unknown = [b for b in bands if b not in COVERAGE]
    if unknown or not bands:
        p.error(f"--masks: unknown band(s) {unknown}; choose from {', '.join(COVERAGE)}")
    specs = {b: f"mask:{args.mask_kind},coverage={COVERAGE[b]}" for b in bands}
    if args.spec:
        specs = {"custom": args.spec}
    try:
        if args.set not in sets.PHOTO_SETS:
            raise sets.SetError(f"--set {args.set}: not a photo set (choose from {', '.join(sets.PHOTO_SETS)})")
        names = args.baselines.split(",") if args.baselines else ["telea", "ns"]
        methods = runner.baseline_methods(names)
        if args.weights and not args.baselines_only:
            methods.append(runner.model_method("inpaint", args.weights, args.device))
        n = len(sets.load_manifest(args.set)["images"][: args.limit or None])
        next(sets.iter_photos(args.set, limit=1))  # fail early when the set is not built
        out = args.out or Path("eval/results/inpaint") / f"{args.set}-{args.mask_kind}"
        lp = report.LpipsScorer(enabled=not args.no_lpips, device=args.device)
        rows, grid = [], []
        for band, spec in specs.items():
            samples = (sets.degrade(ph.name, ph.image, spec, args.seed, "default", cache=not args.no_cache,
                                    set_name=args.set) for ph in sets.iter_photos(args.set, limit=args.limit))
            r, g = runner.evaluate(samples, methods, inpaint_scorer(lp), group=f"{band} holes (`{spec}`)",
                                   total=n, grid_images=args.grid_images, progress=not args.quiet,
                                   desc=f"inpaint {band}")
            rows += r
            grid += [(f"{name} ({band})", cols) for name, cols in g]
    except (sets.SetError, runner.EvalError, B.BaselineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    notes = [f"set `{args.set}` ({n} images), base seed {args.seed}; holes are filled with 0 in the input",
             "PSNR/SSIM hole: over hole pixels only (SSIM map with the 5-px border excluded); "
             "known px max diff: largest change to known pixels in 8-bit levels (0 = untouched)",
             f"OpenCV inpaint radius {B.INPAINT_RADIUS}"]
    if not lp.available:
        notes.append(f"LPIPS not reported: {lp.reason}")
    report.write_metrics_csv(out / "metrics.csv", rows)
    report.write_summary_md(out / "summary.md", rows, title=f"Inpainting: {args.set}",
                            metrics=["psnr", "ssim", "lpips", "psnr_hole", "ssim_hole", "known_max_diff",
                                     "coverage"],
                            labels={m.name: m.label for m in methods}, notes=notes)
    if grid:
        report.save_grid(out / "grid.png", grid)
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
