"""Evaluate photo denoising: models (``--weights``) beside CBM3D, NL-means, TV and wavelet baselines.

Examples::

    python eval/sets.py build --set photos-eval
    python eval/denoise.py --baselines-only --spec gaussian:sigma=25
    python eval/denoise.py --baselines-only --protocol published --spec gaussian:sigma=25
    python eval/denoise.py --weights denoise-gaussian --sigmas 15,25,50 --update-card
    python eval/denoise.py --weights denoise-gaussian,denoise-gaussian-l1 --spec gaussian:sigma=25
    python eval/denoise.py --weights denoise-fmnist --set fashion-mnist-test --spec gaussian:sigma=114.75
    python eval/denoise.py --weights denoise-gaussian-cond-l1 --fit-strength --set photos-train --update-card

Writes ``metrics.csv`` (per image and method), ``summary.md`` (mean PSNR / SSIM /
LPIPS when its weights exist, seconds per image, command, commit) and
``grid.png`` into ``--out`` (default ``eval/results/denoise/<set>-<spec>-<protocol>``;
with ``--sigmas`` one such folder per sigma). ``--weights`` takes several
comma-separated models (e.g. the GAN and the L1-only denoiser side by side in
one grid). ``--update-card`` writes each model's means (and the baselines' on
the same inputs) with this command into its model card. ``--set
fashion-mnist-test`` scores all 10,000 test images with the protocol of
``eval/vae_metrics.py`` (the whole split corrupted once by
``restore.corrupt.apply(images, spec, seed)``, float inputs and outputs), so
the figures compare directly with the denoising VAE's.

``--fit-strength`` (a noise-conditioned model, TRAINING photos only) measures the
strength gate of `restore.restorers.denoise.StrengthGate`: for each sigma of
``--sigmas`` (default 1-60), the gain g of the network's change
``f(x, sigma) - x`` that maximises the mean PSNR over the photos (inputs as
the default protocol makes them, base seed 1234), made non-decreasing in sigma,
with g(0) = 0 and at most 1 (the gate only lightens; where g is 1 the figures
are the network's own). ``--update-card`` writes the table into the card's
``denoise_strength``, where every restore (CLI, API, app, this script) reads it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval import baselines as B  # noqa: E402
from eval import report, runner, sets  # noqa: E402
from restore import corrupt  # noqa: E402
from restore import weights as W  # noqa: E402
from restore.io.atomic import atomic_output  # noqa: E402
from restore.metrics import psnr, ssim  # noqa: E402
from restore.noise import estimate_sigma  # noqa: E402
from restore.pipeline import Pipeline  # noqa: E402
from restore.restorers.denoise import STRENGTH_KEY, StrengthGate  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = runner.script_parser(__doc__, "denoise", "photos-eval", "gaussian:sigma=25")
    p.add_argument("--protocol", choices=sets.PROTOCOLS, default="default",
                   help="default: clipped + 8-bit input, per-image seeds; published: unclipped float "
                        "Gaussian noise with seed 0 (as DnCNN/DRUNet/SwinIR tables)")
    p.add_argument("--sigmas", metavar="S1,S2,...",
                   help="score gaussian:sigma=S for each S (one output folder each), e.g. 15,25,50; replaces --spec")
    p.add_argument("--update-card", action="store_true",
                   help="write each model's figures (and the baselines' on the same inputs) into its model card")
    p.add_argument("--batch-size", type=int, default=500, help="fashion-mnist-test: images per model call")
    p.add_argument("--noise-level", choices=("true", "auto"), default="true",
                   help="what a noise-conditioned model is given: the true sigma (non-blind, as CBM3D and FFDNet; "
                        "default) or restore.noise.estimate_sigma's estimate of each image (blind, '--sigma auto'; "
                        "the method is named MODEL@auto and its card entry SET/SPEC/sigma=auto)")
    p.add_argument("--fit-strength", action="store_true",
                   help="measure a noise-conditioned model's strength gate g(sigma) on TRAINING photos (--set "
                        "photos-train); with --update-card write it into the card (key denoise_strength)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    # the command recorded in reports and cards (also when main() is called with an explicit argv)
    args.command = report.command_line(argv, script=__file__)
    # taken once: with several sigmas, the card written for the first would make the rest "+dirty"
    args.commit = report.git_commit()
    if not args.baselines_only and not args.weights:
        p.error("give --weights NAME|FILE[,NAME...], or --baselines-only to score the classical baselines alone")
    runner.check_update_card(p, args)
    if args.fit_strength:
        try:
            return fit_strength(args)
        except runner.USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    try:
        specs = _specs(args)
        weights = [w.strip() for w in args.weights.split(",") if w.strip()] if args.weights else []
        models = [] if args.baselines_only else [_model_method(args, w) for w in weights]
        if args.set == sets.FASHION_SET:
            for spec in specs:
                _fashion(args, spec, models, weights)
            return 0
        if args.set not in sets.PHOTO_SETS:
            raise sets.SetError(f"--set {args.set}: not a photo set or {sets.FASHION_SET} "
                                f"(choose from {', '.join(sets.KNOWN_SETS)})")
        for spec in specs:
            _photos(args, spec, models, weights)
    except runner.USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _model_method(args: argparse.Namespace, weights: str) -> runner.Method:
    """A model as an evaluation method; a noise-conditioned one is given the true or the estimated sigma."""
    try:
        card = json.loads(W.card_path(weights).read_text(encoding="utf-8"))
    except (W.WeightsError, OSError, ValueError):
        card = {}
    if not card.get("noise_conditioned"):
        return runner.model_method("denoise", weights, args.device, args.ensemble)
    return _conditioned_method(weights, args.noise_level, args.device, args.ensemble)


def _conditioned_method(weights: str, level: str, device: str, ensemble: str) -> runner.Method:
    """The whole photo through the restore pipeline (``tile=0``) with ``sigma`` = the true one
    (``info['sigma']``) or ``auto``: the restorer's sigma, noise floor and strength gate, as every
    restore gets them (one place: `restore.restorers.denoise.DenoiseRestorer.noise_levels`)."""
    try:
        model, card = W.load(weights, device=device)
        pipeline = Pipeline(model, card, device=device)
        options = pipeline.options(tile=0, ensemble=ensemble)
    except (W.WeightsError, FileNotFoundError, ValueError) as e:
        raise runner.EvalError(f"--weights {weights}: {e}") from e

    def run(x: torch.Tensor, info: dict) -> torch.Tensor:
        if level == "true":
            if info.get("sigma") is None:
                raise runner.EvalError(f"{weights}: --noise-level true needs a Gaussian spec (the true sigma)")
            opts = options.replace(sigma=repr(float(info["sigma"])))
        else:
            opts = options.replace(sigma="auto")
        return pipeline.run(x[None], options=opts).image[0]

    name = (card.get("name") or Path(weights).stem) + ("" if level == "true" else "@auto")
    name += "" if ensemble == "none" else f"+{ensemble}"
    given = "true sigma" if level == "true" else "estimated sigma"
    return runner.Method(name, f"{name} (model, {given})", run, kind="model")


#: sigmas (0-255) the strength gate is measured at; g(0) = 0 by definition
FIT_SIGMAS = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0)
#: base seed of the training photos' noisy inputs (as eval/noise_estimate.py --fit: never the eval seed)
FIT_SEED = 1234
#: gains searched (the PSNR of each image is a closed form in g, so a fine grid costs nothing)
FIT_GAINS = torch.linspace(0.0, 1.5, 301, dtype=torch.float64)


def best_gain(stats: list[tuple[float, float, float, int]]) -> tuple[float, float, float, float]:
    """The gain g maximising the mean PSNR of ``x + g * r`` over images with per-image sums
    (||x - t||^2, <r, t - x>, ||r||^2, pixels); returns (g, mean PSNR of x, of g = 1, of g)."""
    if not stats:
        raise runner.EvalError("--fit-strength: no images")
    a, b, c, n = (torch.tensor([s[i] for s in stats], dtype=torch.float64) for i in range(4))

    def mean_psnr(g: torch.Tensor) -> torch.Tensor:  # g (G,) -> (G,)
        mse = (a[None] - 2 * g[:, None] * b[None] + g[:, None] ** 2 * c[None]).clamp_min(1e-20) / n[None]
        return (-10 * torch.log10(mse)).mean(dim=1)

    scores = mean_psnr(FIT_GAINS)
    k = int(scores.argmax())
    ref = mean_psnr(torch.tensor([0.0, 1.0], dtype=torch.float64))
    return float(FIT_GAINS[k]), float(ref[0]), float(ref[1]), float(scores[k])


def fit_strength(args: argparse.Namespace) -> int:
    """Measure (and with --update-card record) the strength gate of one noise-conditioned model."""
    if args.set not in sets.PHOTO_SETS or not args.set.startswith("photos-train"):
        raise sets.SetError(f"--fit-strength calibrates on training photos only (--set photos-train or "
                            f"photos-train-plus), not {args.set!r}: held-out photos must stay unseen")
    names = [w.strip() for w in (args.weights or "").split(",") if w.strip()]
    if len(names) != 1:
        raise runner.EvalError("--fit-strength takes one --weights model")
    try:
        model, card = W.load(names[0], device=args.device)
    except (W.WeightsError, FileNotFoundError) as e:
        raise runner.EvalError(f"--weights {names[0]}: {e}") from e
    if not getattr(model, "noise_conditioned", False):
        raise runner.EvalError(f"--weights {names[0]}: not a noise-conditioned model (no sigma input to gate)")
    model.eval()
    sigmas = [float(spec.split("=", 1)[1]) for spec in _specs(args)] if args.sigmas else list(FIT_SIGMAS)
    if any(v <= 0 for v in sigmas):
        raise sets.SetError("--fit-strength: sigmas must be > 0 (g(0) = 0 by definition)")
    photos = list(sets.iter_photos(args.set, limit=args.limit))
    rows = []
    for s in sorted(sigmas):
        stats = []
        for ph in photos:
            sample = sets.degrade(ph.name, ph.image, f"gaussian:sigma={s:g}", FIT_SEED, cache=False,
                                  set_name=args.set)
            x, t = sample.input[None].to(args.device), ph.image[None].to(args.device)
            with torch.no_grad():
                r = model(x, torch.tensor([s / 255.0], device=args.device)).float() - x
            e = (t - x).double()
            stats.append((float((e * e).sum()), float((r.double() * e).sum()), float((r.double() ** 2).sum()),
                          x.numel()))
        g, p_in, p_one, p_best = best_gain(stats)
        rows.append({"sigma": s, "best": g, "psnr_input": p_in, "psnr_g1": p_one, "psnr_best": p_best})
        if not args.quiet:
            print(f"sigma {s:g}: best g {g:.3f} (PSNR input {p_in:.2f}, g=1 {p_one:.2f}, best {p_best:.2f})",
                  file=sys.stderr)
    gains, top = [], 0.0
    for row in rows:  # non-decreasing (a lower sigma never denoises more) and at most 1 (the network's own
        top = min(1.0, max(top, row["best"]))  # output): past the first sigma whose best g reaches 1, g = 1
        gains.append(round(top, 3))
    table = {"sigma": [0.0] + [r["sigma"] for r in rows], "gain": [0.0] + gains,
             "best_gain": [0.0] + [round(r["best"], 3) for r in rows],
             "train_psnr": {"input": [round(r["psnr_input"], 3) for r in rows],
                            "gain_1": [round(r["psnr_g1"], 3) for r in rows],
                            "best": [round(r["psnr_best"], 3) for r in rows]},
             "data": args.set, "images": len(photos), "seed": FIT_SEED,
             "command": args.command, "commit": args.commit}
    StrengthGate(tuple(table["sigma"]), tuple(table["gain"]))  # the table the restorer will accept
    lines = ["| sigma | gain g | best g | train PSNR input | g = 1 | best g |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['sigma']:g} | {g:.3f} | {r['best']:.3f} | {r['psnr_input']:.2f} | {r['psnr_g1']:.2f} | "
              f"{r['psnr_best']:.2f} |" for r, g in zip(rows, gains)]
    print("\n".join(lines))
    if args.update_card:
        path = W.card_path(names[0])
        card = json.loads(path.read_text(encoding="utf-8"))
        card[STRENGTH_KEY] = table
        with atomic_output(path) as tmp:
            Path(tmp).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"updated {path}: {STRENGTH_KEY}", file=sys.stderr)
    return 0


def _specs(args: argparse.Namespace) -> list[str]:
    if not args.sigmas:
        return [args.spec]
    try:
        sigmas = [float(s) for s in args.sigmas.split(",") if s.strip()]
    except ValueError:
        raise sets.SetError(f"--sigmas {args.sigmas!r}: expected comma-separated numbers, e.g. 15,25,50") from None
    if not sigmas or any(not math.isfinite(s) or s < 0 for s in sigmas):
        raise sets.SetError(f"--sigmas {args.sigmas!r}: expected non-negative numbers, e.g. 15,25,50")
    return [f"gaussian:sigma={s:g}" for s in sigmas]


def _photos(args: argparse.Namespace, spec: str, models: list[runner.Method], weights: list[str]) -> None:
    """Score the baselines and ``models`` on one photo set with one spec; write the report (and cards)."""
    if args.protocol == "published":
        sets.published_spec(spec)  # validate early
    names = args.baselines.split(",") if args.baselines else B.default_baselines(spec)
    methods = runner.baseline_methods(names) + list(models)
    n, samples = runner.photo_samples(args, spec, args.protocol)
    out = _out_dir(args, spec)
    lp = report.LpipsScorer(enabled=not args.no_lpips, device=args.device)
    labels = {m.name: m.label for m in methods}
    notes = _notes(args, n, lp, spec)

    def partial(rows: list[dict]) -> None:
        done = len({r["image"] for r in rows})
        if done < n:
            _write(out, rows, args, labels, notes + [f"PARTIAL: {done} of {n} images scored so far"], spec)

    rows, grid = runner.evaluate(samples, methods, runner.denoise_scorer(lp), total=n,
                                 grid_images=args.grid_images, progress=not args.quiet, desc="denoise",
                                 on_image=partial)
    _write(out, rows, args, labels, notes, spec)
    if grid:
        report.save_grid(out / "grid.png", grid)
    print((out / "summary.md").read_text())
    print(f"wrote {out}/metrics.csv, summary.md" + (", grid.png" if grid else ""), file=sys.stderr)
    if args.update_card:
        _update_cards(args, spec, rows, models, weights, out, images=n)


def _out_dir(args: argparse.Namespace, spec: str) -> Path:
    auto = "-auto" if getattr(args, "noise_level", "true") == "auto" else ""  # never over the true-sigma report
    base = Path("eval/results/denoise") / f"{args.set}-{sets.spec_slug(spec)}-{args.protocol}{auto}"
    if args.out is None:
        return base
    return args.out / base.name if args.sigmas else args.out


def _fashion(args: argparse.Namespace, spec: str, models: list[runner.Method], weights: list[str]) -> None:
    """All Fashion-MNIST test images, corrupted at once as eval/vae_metrics.py does; float in, float out."""
    x, _ = sets.load_fashion_mnist_test(limit=args.limit)
    noisy = corrupt.apply(x, spec, args.seed).input
    n = len(x)
    methods = [runner.Method("noisy", "noisy input (no restoration)", lambda t, info: t)] + list(models)
    # whole batches through the task's restore function (runner.Method restores one image per call)
    batch_fns = {}
    for m, w in zip(models, weights):
        model, card = W.load(w, device=args.device)
        pipeline = Pipeline(model, card, device=args.device)
        options = {"ensemble": args.ensemble} if getattr(args, "ensemble", None) else {}
        batch_fns[m.name] = (lambda xb, pipeline=pipeline, options=options: pipeline.run(
            xb, tile=0, **options).image)
    rows: list[dict] = []
    grid: list[tuple[str, list[tuple[str, torch.Tensor]]]] = []
    shown = min(args.grid_images * 4, n)
    outputs: dict[str, torch.Tensor] = {}
    for m in methods:
        t0 = time.perf_counter()
        res = []
        for i in range(0, n, args.batch_size):
            xb = noisy[i : i + args.batch_size]
            with torch.no_grad():
                res.append(batch_fns[m.name](xb) if m.name in batch_fns else xb)
        out = torch.cat(res).float().clamp(0, 1)
        dt = (time.perf_counter() - t0) / n
        if out.shape != x.shape:
            raise runner.EvalError(f"{m.name}: returned {tuple(out.shape)}, expected {tuple(x.shape)}")
        p_all = torch.cat([psnr(out[i : i + 1000], x[i : i + 1000]) for i in range(0, n, 1000)])
        s_all = torch.cat([ssim(out[i : i + 1000], x[i : i + 1000]) for i in range(0, n, 1000)])
        rows += [{"image": f"t10k-{i:05d}", "method": m.name, "psnr": float(p_all[i]), "ssim": float(s_all[i]),
                  "runtime_s": dt} for i in range(n)]
        outputs[m.name] = out[:shown]
        if not args.quiet:
            print(f"{m.name}: PSNR {float(p_all.mean()):.2f} dB, SSIM {float(s_all.mean()):.4f}", file=sys.stderr)
    for i in range(shown):
        cols = [(name, o[i]) for name, o in outputs.items()] + [("target", x[i])]
        grid.append((f"t10k-{i:05d}", cols))
    out_dir = _out_dir(args, spec)
    labels = {m.name: m.label for m in methods}
    notes = [f"set `{sets.FASHION_SET}` ({n} test images, manifest `eval/manifests/{sets.FASHION_SET}.json`), "
             f"spec `{spec}`, the whole split corrupted by `restore.corrupt.apply(images, spec, seed={args.seed})` "
             "as in eval/vae_metrics.py; float inputs and outputs (no 8-bit rounding), means of per-image values",
             "runtime_s: seconds per image, batches of %d" % args.batch_size]
    notes += _vae_reference(spec, args.seed)
    report.write_metrics_csv(out_dir / "metrics.csv", rows)
    report.write_summary_md(out_dir / "summary.md", rows, title=f"Denoising: {sets.FASHION_SET}, `{spec}`",
                            metrics=["psnr", "ssim"], labels=labels, notes=notes, command=args.command,
                            commit=args.commit)
    report.save_grid(out_dir / "grid.png", grid)
    print((out_dir / "summary.md").read_text())
    print(f"wrote {out_dir}/metrics.csv, summary.md, grid.png", file=sys.stderr)
    if args.update_card:
        _update_cards(args, spec, rows, models, weights, out_dir, images=n, set_name=sets.FASHION_SET)


def _vae_reference(spec: str, seed: int) -> list[str]:
    """Figures of shipped denoising VAE cards measured on the same inputs (same spec and seed), if any."""
    try:
        cards = W.available()
    except Exception:  # noqa: BLE001 - a note is optional; never fail the evaluation over it
        return []
    notes = []
    wanted = str(spec).split(",clip")[0]
    for card in cards:
        m = card.get("metrics") or {}
        m = m.get("test", m) if isinstance(m.get("test"), dict) else m  # eval/vae_metrics.py --update-card layout
        if card.get("task") != "vae" or str(card.get("corruption", "")).split(",clip")[0] != wanted:
            continue
        if "psnr" in m and m.get("seed", seed) == seed:
            notes.append(f"reference: VAE `{card.get('name')}` on the same inputs: PSNR {m['psnr']:.2f} dB, "
                         f"SSIM {m.get('ssim', float('nan')):.4f} ({m.get('test_images', '?')} images; its model card, "
                         f"measured by {card.get('metrics_command') or m.get('command') or 'eval/vae_metrics.py'})")
    return notes


def _update_cards(args: argparse.Namespace, spec: str, rows: list[dict], models: list[runner.Method],
                  weights: list[str], out: Path, *, images: int, set_name: str | None = None) -> None:
    """Record the means of every model (and of the baselines on the same inputs) in the model cards."""
    summary = {s["method"]: s for s in report.summarize(rows, ["psnr", "ssim", "lpips", "runtime_s"])}
    command, commit = args.command, args.commit

    def figures(s: dict) -> dict:
        return {k: round(float(s[k]), 4) for k in ("psnr", "ssim", "lpips", "runtime_s")
                if k in s and not math.isnan(float(s[k]))}

    key = f"{set_name or args.set}/{spec}" + ("" if args.protocol == "default" else f"/{args.protocol}")
    if getattr(args, "noise_level", "true") == "auto":
        key += "/sigma=auto"
    for m, w in zip(models, weights):
        card = json.loads(W.card_path(w).read_text(encoding="utf-8"))
        entry = {**figures(summary[m.name]), "images": images, "seed": args.seed,
                 "baselines": {name: figures(s) for name, s in summary.items() if name != m.name},
                 "report": str(out), "command": command, "commit": commit}
        exact = [r["psnr"] for r in rows if r["method"] == m.name and math.isinf(float(r["psnr"]))]
        if exact:  # outputs equal to the clean photo (a clean input returned unchanged): the mean is inf
            finite = [float(r["psnr"]) for r in rows if r["method"] == m.name and math.isfinite(float(r["psnr"]))]
            entry["images_exact"] = len(exact)
            entry["psnr_others"] = round(sum(finite) / len(finite), 4) if finite else None
        old = (card.get("metrics") or {}).get(key)
        if isinstance(old, dict) and old.get("images") == images and old.get("seed") == args.seed:
            # same inputs (set, spec, seed, images): keep baselines scored by an earlier run, e.g. CBM3D
            entry["baselines"] = {**old.get("baselines", {}), **entry["baselines"]}
        runner.record_in_card(w, {key: entry}, command)


def _notes(args: argparse.Namespace, n: int, lp: report.LpipsScorer, spec: str) -> list[str]:
    notes = [f"set `{args.set}` ({n} images, manifest `eval/manifests/{args.set}.json`), spec `{spec}`, "
             f"base seed {args.seed}"]
    notes.append("NLM h / TV weight tables: " + ", ".join(
        f"sigma {s:g}: h={B.NLM_H[s]:g}, w={B.TV_WEIGHT[s]:g}" for s in sorted(B.NLM_H))
        + " (tuned on training photos, interpolated in sigma)")
    if not lp.available:
        notes.append(f"LPIPS not reported: {lp.reason}")
    notes.append("detail: mean absolute neighbour difference of the output / of the clean photo (1 = as much "
                 "fine structure; below 1 smoothed, above 1 noise left or texture invented)")
    return notes


def _write(out: Path, rows: list[dict], args: argparse.Namespace, labels: dict[str, str], notes: list[str],
           spec: str) -> None:
    report.write_metrics_csv(out / "metrics.csv", rows)
    report.write_summary_md(out / "summary.md", rows, title=f"Denoising: {args.set}, `{spec}`",
                            metrics=["psnr", "ssim", "lpips", "detail"], labels=labels, protocol=args.protocol,
                            notes=notes, command=args.command, commit=args.commit)


if __name__ == "__main__":
    sys.exit(main())
