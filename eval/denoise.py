"""Evaluate photo denoising: a model (``--weights``) beside CBM3D, NL-means, TV and wavelet baselines.

Examples::

    python eval/sets.py build --set photos-eval
    python eval/denoise.py --baselines-only --spec gaussian:sigma=25
    python eval/denoise.py --baselines-only --protocol published --spec gaussian:sigma=25
    python eval/denoise.py --weights denoise-unet-gan --spec gaussian:sigma=25

Writes ``metrics.csv`` (per image and method), ``summary.md`` (mean PSNR / SSIM /
LPIPS when its weights exist, seconds per image, command, commit) and
``grid.png`` into ``--out`` (default ``eval/results/denoise/<set>-<spec>-<protocol>``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval import baselines as B  # noqa: E402
from eval import report, runner, sets  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python eval/denoise.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.common_arguments(p, "denoise", "photos-eval", "gaussian:sigma=25")
    p.add_argument("--protocol", choices=sets.PROTOCOLS, default="default",
                   help="default: clipped + 8-bit input, per-image seeds; published: unclipped float "
                        "Gaussian noise with seed 0 (as DnCNN/DRUNet/SwinIR tables)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.baselines_only and not args.weights:
        p.error("give --weights NAME|FILE, or --baselines-only to score the classical baselines alone")
    try:
        if args.set not in sets.PHOTO_SETS:
            raise sets.SetError(f"--set {args.set}: not a photo set (choose from {', '.join(sets.PHOTO_SETS)})")
        if args.protocol == "published":
            sets.published_spec(args.spec)  # validate early
        names = args.baselines.split(",") if args.baselines else B.default_baselines(args.spec)
        methods = runner.baseline_methods(names)
        if args.weights and not args.baselines_only:
            methods.append(runner.model_method("denoise", args.weights, args.device))
        manifest = sets.load_manifest(args.set)
        n = min(len(manifest["images"]), args.limit or len(manifest["images"]))
        photos = sets.iter_photos(args.set, limit=args.limit)
        # fail on a missing set before any work (iter_photos checks on first next())
        first = next(photos)
        out = args.out or Path("eval/results/denoise") / f"{args.set}-{sets.spec_slug(args.spec)}-{args.protocol}"

        def samples():
            for ph in _chain(first, photos):
                yield sets.degrade(ph.name, ph.image, args.spec, args.seed, args.protocol,
                                   cache=not args.no_cache, set_name=args.set)

        lp = report.LpipsScorer(enabled=not args.no_lpips, device=args.device)
        labels = {m.name: m.label for m in methods}
        notes = _notes(args, n, lp)

        def partial(rows: list[dict]) -> None:
            done = len({r["image"] for r in rows})
            if done < n:
                _write(out, rows, args, labels, notes + [f"PARTIAL: {done} of {n} images scored so far"])

        rows, grid = runner.evaluate(samples(), methods, runner.denoise_scorer(lp), total=n,
                                     grid_images=args.grid_images, progress=not args.quiet, desc="denoise",
                                     on_image=partial)
    except (sets.SetError, runner.EvalError, B.BaselineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _write(out, rows, args, labels, notes)
    if grid:
        report.save_grid(out / "grid.png", grid)
    print((out / "summary.md").read_text())
    print(f"wrote {out}/metrics.csv, summary.md" + (", grid.png" if grid else ""), file=sys.stderr)
    return 0


def _notes(args: argparse.Namespace, n: int, lp: report.LpipsScorer) -> list[str]:
    notes = [f"set `{args.set}` ({n} images, manifest `eval/manifests/{args.set}.json`), spec `{args.spec}`, "
             f"base seed {args.seed}"]
    notes.append("NLM h / TV weight tables: " + ", ".join(
        f"sigma {s:g}: h={B.NLM_H[s]:g}, w={B.TV_WEIGHT[s]:g}" for s in sorted(B.NLM_H))
        + " (tuned on training photos, interpolated in sigma)")
    if not lp.available:
        notes.append(f"LPIPS not reported: {lp.reason}")
    return notes


def _write(out: Path, rows: list[dict], args: argparse.Namespace, labels: dict[str, str], notes: list[str]) -> None:
    report.write_metrics_csv(out / "metrics.csv", rows)
    report.write_summary_md(out / "summary.md", rows, title=f"Denoising: {args.set}, `{args.spec}`",
                            metrics=["psnr", "ssim", "lpips"], labels=labels, protocol=args.protocol, notes=notes)


def _chain(first, rest):
    yield first
    yield from rest


if __name__ == "__main__":
    sys.exit(main())
