"""Evaluate colorization: a model (``--weights``) beside the grayscale floor (a = b = 0).

Examples::

    python eval/colorize.py --baselines-only
    python eval/colorize.py --weights colorize

``summary.md`` reports PSNR / SSIM on RGB, the mean absolute CIELAB a/b error,
and Hasler-Suesstrunk colorfulness of the output beside the ground truth's
(a ratio near 1 means neither washed-out nor over-saturated; the grayscale
floor scores 0). With ``--weights``, the model is also checked against the
issue-7 targets (``targets.json`` and a line per target in ``summary.md``):
PSNR not below the grayscale baseline, a/b MAE at least 10% below the
baseline's, and mean colorfulness at least 60% of the ground truth's mean.
``worst.png`` shows the model's five worst images (gray input / output /
truth per row): those where its PSNR falls furthest below the gray input's,
so a reader sees where colorizing hurts, not only the first few photos.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from eval import baselines as B  # noqa: E402
from eval import report, runner, sets  # noqa: E402
from restore import weights as W  # noqa: E402
from restore.options import OptionError  # noqa: E402
from restore.pipeline import Pipeline  # noqa: E402


def colour_metrics(out: torch.Tensor, s: sets.Sample) -> dict:
    """CIELAB a/b MAE, colorfulness of the output, of the ground truth, their ratio; SqueezeNet feature distance."""
    c, cg = report.colorfulness(out), report.colorfulness(s.target)
    return {"ab_mae": report.ab_mae(out, s.target), "colorfulness": c, "colorfulness_gt": cg,
            "colorfulness_ratio": c / cg if cg > 0 else float("nan"),
            "sq_dist": report.feature_distance(out, s.target)}


def colorize_scorer(lpips: report.LpipsScorer) -> runner.Scorer:
    """PSNR, SSIM, CIELAB a/b MAE, colorfulness (output, GT, ratio) and LPIPS when available."""
    return runner.image_scorer(lpips, colour_metrics)


#: issue 7 "done when", relative to the grayscale baseline and the ground truth
TARGETS = {"psnr_vs_gray_db": 0.0, "ab_mae_reduction": 0.10, "colorfulness_fraction_of_gt": 0.60}


def check_targets(rows: list[dict], model: str, baseline: str = "grayscale") -> dict:
    """Score ``model`` against the issue-7 targets from per-image rows (means over the set).

    Colorfulness is compared as mean(output) / mean(ground truth), the
    ground-truth mean being over the same images.
    """
    by = {s["method"]: s for s in report.summarize(rows, ["psnr", "ab_mae", "colorfulness", "colorfulness_gt"])}
    if model not in by or baseline not in by:
        raise runner.EvalError(f"targets: need rows for {model!r} and the {baseline!r} baseline")
    m, b = by[model], by[baseline]
    cf = m["colorfulness"] / m["colorfulness_gt"] if m["colorfulness_gt"] > 0 else float("nan")
    reduction = 1.0 - m["ab_mae"] / b["ab_mae"] if b["ab_mae"] > 0 else float("nan")
    checks = {
        "psnr": {"model": m["psnr"], "baseline": b["psnr"], "target": f">= baseline {b['psnr']:.2f} dB",
                 "pass": bool(m["psnr"] >= b["psnr"] + TARGETS["psnr_vs_gray_db"])},
        "ab_mae": {"model": m["ab_mae"], "baseline": b["ab_mae"], "reduction": reduction,
                   "target": f"<= {1 - TARGETS['ab_mae_reduction']:.0%} of baseline {b['ab_mae']:.2f}",
                   "pass": bool(reduction >= TARGETS["ab_mae_reduction"])},
        "colorfulness": {"model": m["colorfulness"], "ground_truth": m["colorfulness_gt"], "fraction": cf,
                         "target": f">= {TARGETS['colorfulness_fraction_of_gt']:.0%} of ground truth "
                                   f"{m['colorfulness_gt']:.1f}",
                         "pass": bool(cf >= TARGETS["colorfulness_fraction_of_gt"])},
    }
    return {"model": model, "baseline": baseline, "images": m["n"], "checks": checks,
            "all_pass": all(c["pass"] for c in checks.values())}


def target_notes(result: dict) -> list[str]:
    c = result["checks"]
    yes = {True: "met", False: "NOT met"}
    return [
        f"issue-7 targets for `{result['model']}`: PSNR {c['psnr']['model']:.2f} dB vs grayscale "
        f"{c['psnr']['baseline']:.2f} dB ({yes[c['psnr']['pass']]}); a/b MAE {c['ab_mae']['model']:.2f} vs "
        f"{c['ab_mae']['baseline']:.2f}, {c['ab_mae']['reduction']:+.1%} reduction, target >= 10% "
        f"({yes[c['ab_mae']['pass']]}); colorfulness {c['colorfulness']['model']:.1f} = "
        f"{c['colorfulness']['fraction']:.0%} of ground truth {c['colorfulness']['ground_truth']:.1f}, "
        f"target >= 60% ({yes[c['colorfulness']['pass']]})",
    ]


#: rows of worst.png
WORST_IMAGES = 5


def worst_images(rows: list[dict], model: str, baseline: str = "grayscale", k: int = WORST_IMAGES) -> list[dict]:
    """The ``k`` images where ``model``'s PSNR minus the ``baseline``'s is lowest (worst first).

    Each entry: image, model and baseline PSNR, their difference, and both a/b MAEs. Ranking by the PSNR
    gain over gray picks the photos where colorizing did most harm relative to not colorizing at all.
    """
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        by.setdefault(r["image"], {})[r["method"]] = r
    ranked = []
    for image, methods in by.items():
        if model in methods and baseline in methods:
            m, b = methods[model], methods[baseline]
            ranked.append({"image": image, "psnr": m["psnr"], "psnr_gray": b["psnr"], "gain_db": m["psnr"] - b["psnr"],
                           "ab_mae": m["ab_mae"], "ab_mae_gray": b["ab_mae"]})
    if not ranked:
        raise runner.EvalError(f"worst images: no image has rows for both {model!r} and {baseline!r}")
    return sorted(ranked, key=lambda e: e["gain_db"])[:k]


def worst_grid(args: argparse.Namespace, method: runner.Method, worst: list[dict]) -> list:
    """Grid rows (gray input / output / truth) of the ``worst`` images, the model run again on each.

    Keeping every output of the evaluation in memory to pick the worst later would hold the whole set;
    running the model again on five photos costs seconds.
    """
    wanted = {e["image"]: e for e in worst}
    found: dict[str, tuple] = {}
    _, samples = runner.photo_samples(args, args.spec)
    for s in samples:
        if s.name in wanted:
            out = sets.quantize8(method.fn(s.input, dict(s.info)).float())
            e = wanted[s.name]
            label = (f"{s.name}: PSNR {e['psnr']:.2f} dB (gray {e['psnr_gray']:.2f}), "
                     f"a/b MAE {e['ab_mae']:.1f} (gray {e['ab_mae_gray']:.1f})")
            found[s.name] = (label, [("gray input", s.input.clamp(0, 1)), (method.name, out), ("truth", s.target)])
    return [found[e["image"]] for e in worst if e["image"] in found]


def model_method(args: argparse.Namespace) -> runner.Method:
    """The model as `runner.model_method` runs it, or with ``--saturation`` (restore colorize's option) applied.

    Scaling the predicted a/b is how two colorizers are compared at equal colourfulness (issue 22): the
    method is then named ``<model>+sat<F>`` so its rows never mix with the model's own.
    """
    if args.saturation == 1.0:
        return runner.model_method("colorize", args.weights, args.device, args.ensemble)
    try:
        model, card = W.load(args.weights, device=args.device)
        pipeline = Pipeline(model, card, task="colorize", device=args.device)
        opts = pipeline.options(saturation=args.saturation, ensemble=args.ensemble)
    except (W.WeightsError, FileNotFoundError, OptionError) as e:
        raise runner.EvalError(f"--weights {args.weights} --saturation {args.saturation}: {e}") from e

    def run(x: torch.Tensor, info: dict) -> torch.Tensor:
        return pipeline.run(x.unsqueeze(0), None, opts).image[0]

    name = f"{card.get('name') or Path(args.weights).stem}+sat{args.saturation:g}"
    return runner.Method(name, f"{name} (model, a/b x {args.saturation:g})", run, kind="model")


def build_parser() -> argparse.ArgumentParser:
    p = runner.script_parser(__doc__, "colorize", "photos-eval", "gray")
    p.add_argument("--saturation", type=float, default=1.0, metavar="F",
                   help="multiply the model's a/b by F (restore colorize --saturation), to compare colorizers at "
                        "equal colourfulness (default 1: as predicted)")
    p.add_argument("--update-card", action="store_true",
                   help="record the model's and the grayscale baseline's figures (and this command) in the "
                        "shipped model card given by --weights")
    return p


def card_entry(rows: list[dict], model: str, result: dict, args: argparse.Namespace, out: Path) -> dict:
    """The card's ``metrics[<set>]`` entry: model and grayscale means side by side, and the target check."""
    keys = ["psnr", "ssim", "sq_dist", "ab_mae", "colorfulness", "colorfulness_gt", "colorfulness_ratio"]
    keys = [k for k in keys if all(k in r for r in rows)]  # sq_dist: rows scored before it existed lack it
    by = {s["method"]: s for s in report.summarize(rows, keys)}

    def figures(name: str) -> dict:
        return {k: round(float(by[name][k]), 4) for k in keys}

    c = result["checks"]
    return {
        "images": result["images"],
        "input": f"eval spec {args.spec!r} of each photo; outputs rounded to 8 bits before scoring",
        "model": figures(model),
        "grayscale_baseline": figures(result["baseline"]),
        "ab_mae_reduction_vs_gray": round(c["ab_mae"]["reduction"], 4),
        "colorfulness_fraction_of_gt": round(c["colorfulness"]["fraction"], 4),
        "targets_issue7": {k: v["pass"] for k, v in c.items()},
        "report": str(out),
        "command": args.command,
        "commit": report.git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.baselines_only and not args.weights:
        p.error("give --weights NAME|FILE, or --baselines-only to score the grayscale baseline alone")
    runner.check_update_card(p, args)
    if not args.saturation >= 0:
        p.error(f"--saturation: must be >= 0, got {args.saturation}")
    if args.update_card and args.saturation != 1.0:
        p.error("--update-card records the model as it ships: leave --saturation at 1")
    args.command = report.command_line(argv, script=__file__)
    try:
        if args.set not in sets.PHOTO_SETS:
            raise sets.SetError(f"--set {args.set}: not a photo set (choose from {', '.join(sets.PHOTO_SETS)})")
        names = args.baselines.split(",") if args.baselines else B.default_baselines(args.spec)
        methods = runner.baseline_methods(names)
        if args.weights and not args.baselines_only:
            methods.append(model_method(args))
        n, samples = runner.photo_samples(args, args.spec)
        out = args.out or Path("eval/results/colorize") / f"{args.set}-{sets.spec_slug(args.spec)}"
        lp = report.LpipsScorer(enabled=not args.no_lpips, device=args.device)
        rows, grid = runner.evaluate(samples, methods, colorize_scorer(lp), total=n,
                                     grid_images=args.grid_images, progress=not args.quiet, desc="colorize")
    except runner.USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    notes = [f"set `{args.set}` ({n} images), input spec `{args.spec}`",
             "a/b MAE: mean |delta a|, |delta b| in CIELAB (D65, scikit-image); colorfulness: Hasler & "
             "Suesstrunk 2003 on 0-255 RGB, averaged over images (GT column: the targets')",
             "SqueezeNet feature dist.: restore.metrics.perceptual_distance, LPIPS's lin=False form on the "
             "ImageNet SqueezeNet 1.1 (uncalibrated, not LPIPS; lower = closer)"]
    if not lp.available:
        notes.append(f"LPIPS not reported: {lp.reason}")
    model_names = [m.name for m in methods if m.kind == "model"]
    result = None
    worst_rows: list = []
    if model_names and "grayscale" in {m.name for m in methods}:
        result = check_targets(rows, model_names[0])
        notes += target_notes(result)
        out.mkdir(parents=True, exist_ok=True)
        (out / "targets.json").write_text(json.dumps(result, indent=2) + "\n")
        worst = worst_images(rows, model_names[0])
        try:
            worst_rows = worst_grid(args, next(m for m in methods if m.kind == "model"), worst)
        except runner.USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        notes.append(f"worst.png: the {len(worst)} images where `{model_names[0]}`'s PSNR is furthest below the "
                     "gray input's (gray input / output / truth): "
                     + ", ".join(f"{e['image']} ({e['gain_db']:+.2f} dB)" for e in worst))
    report.write_metrics_csv(out / "metrics.csv", rows)
    report.write_summary_md(out / "summary.md", rows, title=f"Colorization: {args.set}",
                            metrics=["psnr", "ssim", "lpips", "sq_dist", "ab_mae", "colorfulness", "colorfulness_gt",
                                     "colorfulness_ratio"],
                            labels={m.name: m.label for m in methods}, notes=notes, command=args.command)
    if grid:
        report.save_grid(out / "grid.png", grid)
    if worst_rows:
        report.save_grid(out / "worst.png", worst_rows)
    print((out / "summary.md").read_text())
    if args.update_card:
        try:
            if result is None:
                raise runner.EvalError("--update-card needs the grayscale baseline beside the model")
            runner.record_in_card(args.weights, {args.set: card_entry(rows, model_names[0], result, args, out)},
                                  args.command)
        except runner.USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
