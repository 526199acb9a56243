"""Evaluate photo denoising: models (``--weights``) beside CBM3D, NL-means, TV and wavelet baselines.

Examples::

    python eval/sets.py build --set photos-eval
    python eval/denoise.py --baselines-only --spec gaussian:sigma=25
    python eval/denoise.py --baselines-only --protocol published --spec gaussian:sigma=25
    python eval/denoise.py --weights denoise-gaussian --sigmas 15,25,50 --update-card
    python eval/denoise.py --weights denoise-gaussian,denoise-gaussian-l1 --spec gaussian:sigma=25
    python eval/denoise.py --weights denoise-fmnist --set fashion-mnist-test --spec gaussian:sigma=114.75

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
from restore.metrics import psnr, ssim  # noqa: E402
from restore.noise import estimate_sigma  # noqa: E402
from restore.pipeline import Pipeline  # noqa: E402
from restore.tiling import self_ensemble  # noqa: E402


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
    """``model(x, sigma)`` on the whole photo, sigma = the true one (``info['sigma']``) or the estimate."""
    try:
        model, card = W.load(weights, device=device)
    except (W.WeightsError, FileNotFoundError) as e:
        raise runner.EvalError(f"--weights {weights}: {e}") from e
    model.eval()

    @torch.no_grad()
    def run(x: torch.Tensor, info: dict) -> torch.Tensor:
        x = x.to(device)[None]
        if level == "true":
            if info.get("sigma") is None:
                raise runner.EvalError(f"{weights}: --noise-level true needs a Gaussian spec (the true sigma)")
            sigma = torch.tensor([float(info["sigma"]) / 255.0], device=device)
        else:
            sigma = estimate_sigma(x)
        return self_ensemble(lambda u: model(u, sigma), x, ensemble)[0].clamp(0, 1).float().cpu()

    name = (card.get("name") or Path(weights).stem) + ("" if level == "true" else "@auto")
    name += "" if ensemble == "none" else f"+{ensemble}"
    given = "true sigma" if level == "true" else "estimated sigma"
    return runner.Method(name, f"{name} (model, {given})", run, kind="model")


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
    base = Path("eval/results/denoise") / f"{args.set}-{sets.spec_slug(spec)}-{args.protocol}"
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
