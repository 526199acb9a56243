"""Evaluate inpainting on seeded free-form masks: a model (``--weights``) beside OpenCV Telea and Navier-Stokes.

Examples::

    python eval/inpaint.py --baselines-only                      # small (10-20 %) and large (30-45 %) holes
    python eval/inpaint.py --baselines-only --masks large --mask-kind box
    python eval/inpaint.py --weights inpaint-gated

Each mask size is a group in ``summary.md``: whole-image PSNR/SSIM, PSNR/SSIM
inside the holes, the largest change to known pixels (must be 0 for a method
that keeps them) and seconds per image. Masks and holed inputs are cached under
``eval/data/cache/<spec-slug>/`` from seeds derived from the image names.

With ``--weights``, the model is also checked against the issue-8 targets
(``targets.json`` and a line per band in ``summary.md``): PSNR inside the holes
at least Telea's + 1 dB on large masks and at least Telea's on small masks
(SSIM inside the holes reported beside it), and every known pixel of every
model output bit-identical to the input (a violation makes the exit status 1).
``meanfill`` (holes filled with the mean colour of the known pixels) is the
trivial floor a model must clear to be worth shipping; ``pushpull`` (the
pull-push membrane fill a ``prefill: pushpull`` generator starts from) shows
what such a network adds to its classical start: with a model, the issue-22
check (``prefill`` in ``targets.json``) asks for +0.5 dB hole PSNR over it on
large holes, or equal PSNR and a clearly lower SqueezeNet distance inside the
holes. The grid shows masked input, Telea, pull-push, the model and the target.
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

#: Mask coverage bands scored by default (fraction of the image that is hole).
COVERAGE: dict[str, str] = {"small": "0.1-0.2", "large": "0.3-0.45"}

#: Issue-8 targets: model PSNR inside the holes minus Telea's, per band (dB).
TARGETS: dict[str, float] = {"small": 0.0, "large": 1.0}

#: Columns of grid.png when a model is scored: the classical peer, the pull-push prefill the network starts
#: from, the network, the target (other methods stay in the tables).
GRID_COLUMNS: tuple[str, ...] = ("input", "telea", "pushpull", "target")

#: Issue-22 target against the pull-push prefill, large holes: the network adds >= this much hole PSNR ...
PREFILL_GAIN_DB = 0.5
#: ... or, at equal hole PSNR (not more than this far below the prefill's) ...
EQUAL_PSNR_DB = 0.1
#: ... a clearly lower SqueezeNet distance inside the holes: mean at most this fraction of the prefill's,
#: and lower on at least `PREFILL_WIN_SHARE` of the images (paired).
CLEARLY_LOWER = 0.9
PREFILL_WIN_SHARE = 0.75


def mean_fill(x: torch.Tensor, info: dict) -> torch.Tensor:
    """Trivial floor: every hole pixel takes the mean colour of the image's known pixels."""
    mask = info.get("mask")
    if mask is None:
        raise runner.EvalError("meanfill: the sample has no mask")
    hole = mask.to(x.device).bool().expand_as(x)
    known = (~hole).float()
    mean = (x * known).sum(dim=(1, 2), keepdim=True) / known.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)
    return torch.where(hole, mean.expand_as(x), x)


def check_targets(rows: list[dict], model: str, groups: dict[str, str], baseline: str = "telea") -> dict:
    """Score ``model`` against the issue-8 targets per mask band (means over the set's images).

    ``groups`` maps band name (``small`` / ``large``) to the row group label
    used for that band. Known pixels must be untouched in every output
    (``known_max_diff`` is aggregated as a max, so one changed pixel fails).
    """
    summary = report.summarize(rows, ["psnr_hole", "ssim_hole", "known_max_diff"])
    by = {(s["group"], s["method"]): s for s in summary}
    bands: dict[str, dict] = {}
    for band, group in groups.items():
        if (group, model) not in by or (group, baseline) not in by:
            raise runner.EvalError(f"targets: need {band} rows for {model!r} and the {baseline!r} baseline")
        m, b = by[(group, model)], by[(group, baseline)]
        margin = TARGETS.get(band)
        entry = {
            "images": m["n"],
            "psnr_hole": {"model": m["psnr_hole"], "baseline": b["psnr_hole"],
                          "delta_db": m["psnr_hole"] - b["psnr_hole"]},
            "ssim_hole": {"model": m["ssim_hole"], "baseline": b["ssim_hole"],
                          "delta": m["ssim_hole"] - b["ssim_hole"]},
            "known_max_diff": m["known_max_diff"],
        }
        if margin is not None:
            entry["target"] = f"psnr_hole >= {baseline} + {margin:g} dB"
            entry["pass"] = bool(m["psnr_hole"] >= b["psnr_hole"] + margin)
        bands[band] = entry
    known_ok = all(e["known_max_diff"] == 0 for e in bands.values())
    scored = [e["pass"] for e in bands.values() if "pass" in e]
    return {"model": model, "baseline": baseline, "bands": bands, "known_pixels_identical": known_ok,
            "all_pass": bool(scored) and all(scored) and known_ok}


def check_prefill(rows: list[dict], model: str, groups: dict[str, str], prefill: str = "pushpull") -> dict:
    """What the network adds over the classical fill it starts from (issue 22), per band; judged on large holes.

    Passes when the hole PSNR gain is >= `PREFILL_GAIN_DB`, or when the hole PSNR is equal (within
    `EQUAL_PSNR_DB`) and the SqueezeNet distance inside the holes is clearly lower (`CLEARLY_LOWER`,
    `PREFILL_WIN_SHARE`): texture a smooth fill lacks, without paying for it in PSNR.
    """
    bands: dict[str, dict] = {}
    for band, group in groups.items():
        mine = {r["image"]: r for r in rows if r["group"] == group and r["method"] == model}
        base = {r["image"]: r for r in rows if r["group"] == group and r["method"] == prefill}
        images = sorted(set(mine) & set(base))
        if not images:
            raise runner.EvalError(f"prefill check: need {band} rows for {model!r} and {prefill!r}")

        def mean(rs: dict, key: str) -> float:
            return sum(float(rs[i][key]) for i in images) / len(images)

        gain = mean(mine, "psnr_hole") - mean(base, "psnr_hole")
        ratio = mean(mine, "sq_dist_hole") / max(mean(base, "sq_dist_hole"), 1e-12)
        wins = sum(float(mine[i]["sq_dist_hole"]) < float(base[i]["sq_dist_hole"]) for i in images) / len(images)
        by_psnr = gain >= PREFILL_GAIN_DB
        by_texture = gain >= -EQUAL_PSNR_DB and ratio <= CLEARLY_LOWER and wins >= PREFILL_WIN_SHARE
        bands[band] = {"images": len(images), "over_prefill_db": round(gain, 4),
                       "sq_dist_hole_ratio": round(ratio, 4), "sq_dist_hole_wins": round(wins, 4),
                       "pass": bool(by_psnr or by_texture)}
    judged = bands.get("large")
    return {"model": model, "prefill": prefill, "bands": bands,
            "target": (f"large holes: psnr_hole >= {prefill} + {PREFILL_GAIN_DB:g} dB, or psnr_hole >= {prefill} - "
                       f"{EQUAL_PSNR_DB:g} dB with hole SqueezeNet distance <= {CLEARLY_LOWER:g} x {prefill}'s "
                       f"and lower on >= {PREFILL_WIN_SHARE:.0%} of images"),
            "pass": None if judged is None else judged["pass"]}


def prefill_notes(result: dict) -> list[str]:
    notes = []
    for band, e in result["bands"].items():
        notes.append(f"issue-22 check, {band} holes, `{result['model']}` over the `{result['prefill']}` prefill: "
                     f"{e['over_prefill_db']:+.2f} dB hole PSNR; hole SqueezeNet distance {e['sq_dist_hole_ratio']:.3f} "
                     f"x the prefill's, lower on {e['sq_dist_hole_wins']:.0%} of images")
    if result["pass"] is not None:
        notes.append(f"issue-22 target ({result['target']}): {'met' if result['pass'] else 'NOT met'}")
    return notes


def target_notes(result: dict) -> list[str]:
    yes = {True: "met", False: "NOT met"}
    notes = []
    for band, e in result["bands"].items():
        line = (f"issue-8 target, {band} holes, `{result['model']}`: PSNR hole {e['psnr_hole']['model']:.2f} dB vs "
                f"{result['baseline']} {e['psnr_hole']['baseline']:.2f} dB ({e['psnr_hole']['delta_db']:+.2f} dB); "
                f"SSIM hole {e['ssim_hole']['model']:.4f} vs {e['ssim_hole']['baseline']:.4f}")
        if "pass" in e:
            line += f"; target {e['target']}: {yes[e['pass']]}"
        notes.append(line)
    notes.append(f"known pixels of every `{result['model']}` output bit-identical to the input: "
                 f"{'yes' if result['known_pixels_identical'] else 'NO'}")
    return notes


def hole_metrics(out: torch.Tensor, s: sets.Sample) -> dict:
    """PSNR/SSIM inside the holes, the largest change to known pixels, the mask coverage, SqueezeNet feature distance."""
    return {
        "sq_dist": report.feature_distance(out, s.target),
        "sq_dist_hole": report.feature_distance(out, s.target, s.mask),
        "psnr_hole": report.masked_psnr(out, s.target, s.mask),
        "ssim_hole": report.masked_ssim(out, s.target, s.mask),
        "known_max_diff": report.known_max_diff(out, s.input, s.mask),
        "coverage": float(s.mask.mean()),
    }


def inpaint_scorer(lpips: report.LpipsScorer) -> runner.Scorer:
    """Whole-image and in-hole PSNR/SSIM, known-pixel check, mask coverage (+ LPIPS when available)."""
    return runner.image_scorer(lpips, hole_metrics)


def build_parser() -> argparse.ArgumentParser:
    p = runner.script_parser(__doc__, "inpaint", "photos-eval", "")
    p.add_argument("--masks", default="small,large",
                   help=f"comma-separated coverage bands: {', '.join(f'{k}={v}' for k, v in COVERAGE.items())} "
                        "(default small,large)")
    p.add_argument("--mask-kind", choices=("freeform", "box"), default="freeform",
                   help="mask generator (default freeform: DeepFill v2 strokes)")
    p.add_argument("--update-card", action="store_true",
                   help="record the model's and the baselines' figures per band (and this command) in the "
                        "shipped model card given by --weights")
    return p


def card_entries(rows: list[dict], model: str, specs: dict[str, str], groups: dict[str, str],
                 args: argparse.Namespace, out: Path, targets: dict | None,
                 prefill: dict | None = None) -> dict[str, dict]:
    """The card's ``metrics`` entries: one per scored band (``<set>/<spec>``), plus the target check.

    Beside the issue-8 targets, each band records what the network adds over
    the pull-push fill it may start from (``over_pushpull_db``), so a card
    cannot present a classical fill's figures as learned ones.
    """
    keys = [k for k in ("psnr", "ssim", "psnr_hole", "ssim_hole", "sq_dist", "sq_dist_hole") if any(k in r for r in rows)]
    by = {(s["group"], s["method"]): s for s in report.summarize(rows, keys)}
    command, commit = args.command, report.git_commit()
    entries: dict[str, dict] = {}
    for band, spec in specs.items():
        g = groups[band]
        figures = {name: {k: round(float(s[k]), 4) for k in keys} | {"images": s["n"]}
                   for (grp, name), s in by.items() if grp == g}
        mine = figures.pop(model)
        entries[f"{args.set}/{spec}"] = {**mine, "seed": args.seed, "baselines": figures, "report": str(out),
                                         "command": command, "commit": commit}
    if targets is not None:
        summary: dict[str, dict] = {}
        for band, e in targets["bands"].items():
            pp = by.get((groups[band], "pushpull"))
            summary[band] = {"target": e.get("target"), "pass": e.get("pass"),
                             "delta_vs_telea_db": round(e["psnr_hole"]["delta_db"], 4),
                             "over_pushpull_db": (round(e["psnr_hole"]["model"] - pp["psnr_hole"], 4)
                                                  if pp else None)}
        entries["issue8_targets"] = {"bands": summary, "known_pixels_identical": targets["known_pixels_identical"],
                                     "all_pass": targets["all_pass"]}
    if prefill is not None:
        entries["issue22_prefill"] = {"bands": prefill["bands"], "target": prefill["target"], "pass": prefill["pass"]}
    return entries


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.baselines_only and not args.weights:
        p.error("give --weights NAME|FILE, or --baselines-only to score the classical baselines alone")
    runner.check_update_card(p, args)
    args.command = report.command_line(argv, script=__file__)
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
        names = args.baselines.split(",") if args.baselines else ["telea", "ns", "pushpull", "meanfill"]
        methods = runner.baseline_methods([b for b in names if b != "meanfill"])
        if "meanfill" in names:
            methods.append(runner.Method("meanfill", "mean colour fill (trivial floor)", mean_fill))
        if args.weights and not args.baselines_only:
            methods.append(runner.model_method("inpaint", args.weights, args.device, args.ensemble))
        out = args.out or Path("eval/results/inpaint") / f"{args.set}-{args.mask_kind}"
        lp = report.LpipsScorer(enabled=not args.no_lpips, device=args.device)
        rows, grid = [], []
        groups: dict[str, str] = {}
        for band, spec in specs.items():
            n, samples = runner.photo_samples(args, spec)
            groups[band] = f"{band} holes (`{spec}`)"
            r, g = runner.evaluate(samples, methods, inpaint_scorer(lp), group=groups[band],
                                   total=n, grid_images=args.grid_images, progress=not args.quiet,
                                   desc=f"inpaint {band}")
            rows += r
            grid += [(f"{name} ({band})", cols) for name, cols in g]
    except runner.USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    notes = [f"set `{args.set}` ({n} images), base seed {args.seed}; holes are filled with 0 in the input",
             "PSNR/SSIM hole: over hole pixels only (SSIM map with the 5-px border excluded); "
             "known px max diff: largest change to known pixels in 8-bit levels (0 = untouched)",
             f"OpenCV inpaint radius {B.INPAINT_RADIUS}",
             "SqueezeNet feature dist.: restore.metrics.perceptual_distance over the whole image, and inside the "
             "holes only (sq_dist_hole) (LPIPS's lin=False form on ImageNet SqueezeNet 1.1; uncalibrated, not "
             "LPIPS; lower = closer)"]
    if not lp.available:
        notes.append(f"LPIPS not reported: {lp.reason}")
    model_names = [m.name for m in methods if m.kind == "model"]
    status = 0
    result = prefill = None
    if model_names:
        known = {m: max((r["known_max_diff"] for r in rows if r["method"] == m), default=0.0) for m in model_names}
        changed = [m for m, d in known.items() if d != 0]
        if changed:
            print(f"error: {', '.join(changed)} changed known pixels (max {max(known.values()):g} levels)",
                  file=sys.stderr)
            status = 1
        if "telea" in {m.name for m in methods}:
            result = check_targets(rows, model_names[0], {b: g for b, g in groups.items() if b in COVERAGE})
            if not result["known_pixels_identical"]:
                status = 1
            notes += target_notes(result)
            out.mkdir(parents=True, exist_ok=True)
            if "pushpull" in {m.name for m in methods}:
                prefill = check_prefill(rows, model_names[0], {b: g for b, g in groups.items() if b in COVERAGE})
                notes += prefill_notes(prefill)
                result["prefill"] = prefill
            (out / "targets.json").write_text(json.dumps(result, indent=2) + "\n")
        # the figure: masked input / Telea / model / target
        keep = set(GRID_COLUMNS) | set(model_names)
        grid = [(name, [c for c in cols if c[0] in keep]) for name, cols in grid]
    report.write_metrics_csv(out / "metrics.csv", rows)
    report.write_summary_md(out / "summary.md", rows, title=f"Inpainting: {args.set}",
                            metrics=["psnr", "ssim", "lpips", "sq_dist", "sq_dist_hole", "psnr_hole", "ssim_hole", "known_max_diff",
                                     "coverage"],
                            labels={m.name: m.label for m in methods}, notes=notes, command=args.command)
    if grid:
        report.save_grid(out / "grid.png", grid)
    print((out / "summary.md").read_text())
    if args.update_card and status == 0:
        try:
            entries = card_entries(rows, model_names[0], specs, groups, args, out, result, prefill)
            runner.record_in_card(args.weights, entries, args.command)
        except runner.USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
