"""The VAE page: samples from the prior, interpolation between two test garments, class samples of the
conditional VAEs, and denoising a noisy garment with its per-pixel uncertainty."""

from __future__ import annotations

import gradio as gr
import numpy as np
import torch
from torch import Tensor

from restore import corrupt
from restore.app.common import AppContext, UserError, psnr_db, save_png, to_array
from restore.app.denoise import garment
from restore.app.ui import result_image, shows_errors

__all__ = ["build", "class_samples", "grid", "interpolate", "prior_samples", "vae_denoise"]

#: 28x28 images are shown this many times larger (nearest neighbour: each pixel stays a sharp square).
SCALE = 4


def grid(images: Tensor, cols: int, scale: int = SCALE, gap: int = 2) -> np.ndarray:
    """N1HW (or N3HW) images in [0, 1] -> one HxWx3 uint8 picture, ``cols`` per row, white gaps."""
    x = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    rows = (n + cols - 1) // cols
    H, W = h * scale, w * scale
    canvas = np.full((rows * (H + gap) - gap, cols * (W + gap) - gap, 3), 255, np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        canvas[r * (H + gap): r * (H + gap) + H, k * (W + gap): k * (W + gap) + W] = to_array(x[i], scale)
    return canvas


def _network(ctx: AppContext, weights: str, conditional: bool) -> torch.nn.Module:
    net = ctx.model(weights).pipeline.model
    if conditional != hasattr(net, "num_classes"):
        raise UserError(f"{weights} is {'not ' if conditional else ''}a conditional VAE; pick "
                        f"{'one of the cvae weights' if conditional else 'an unconditional VAE'}")
    return net


@torch.no_grad()
def prior_samples(ctx: AppContext, weights: str, n: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` images decoded from z ~ N(0, I) of an unconditional VAE, as a grid."""
    if not 1 <= int(n) <= 64:
        raise UserError(f"number of samples must be 1-64, got {n}")
    net = _network(ctx, weights, conditional=False)
    images = net.sample(int(n), torch.Generator(device=net.fc_mean.weight.device).manual_seed(int(seed)))
    return grid(images, cols=min(8, int(n)))


@torch.no_grad()
def interpolate(ctx: AppContext, weights: str, first: int, second: int, steps: int = 8) -> np.ndarray:
    """Decoded points on the straight line between the latent means of test garments ``first`` and ``second``,
    the two garments themselves at the ends."""
    if not 2 <= int(steps) <= 16:
        raise UserError(f"steps must be 2-16, got {steps}")
    net = _network(ctx, weights, conditional=False)
    device = net.fc_mean.weight.device
    dataset = str(ctx.card(weights).get("dataset") or "fashion-mnist")
    a, b = garment(int(first), dataset), garment(int(second), dataset)
    za, _ = net.encode(a.to(device))
    zb, _ = net.encode(b.to(device))
    t = torch.linspace(0, 1, int(steps), device=device)[:, None]
    decoded = net.decode(za * (1 - t) + zb * t).cpu()
    return grid(torch.cat([a, decoded, b]), cols=int(steps) + 2)


@torch.no_grad()
def class_samples(ctx: AppContext, weights: str, per_class: int = 6, seed: int = 0) -> tuple[np.ndarray, str]:
    """One row of prior samples per class of a conditional VAE, and the classes' names row by row."""
    if not 1 <= int(per_class) <= 12:
        raise UserError(f"samples per class must be 1-12, got {per_class}")
    net = _network(ctx, weights, conditional=True)
    k = int(net.num_classes)
    labels = torch.arange(k, device=net.fc_mean.weight.device).repeat_interleave(int(per_class))
    images = net.sample(labels, torch.Generator(device=labels.device).manual_seed(int(seed)))
    names = ctx.model(weights).card.get("class_names") or [str(i) for i in range(k)]
    return grid(images, cols=int(per_class)), "Rows, top to bottom: " + ", ".join(map(str, names[:k]))


def vae_denoise(ctx: AppContext, weights: str, index: int = 0, seed: int = 0,
                samples: int = 16) -> tuple[np.ndarray, str, str]:
    """Test garment ``index`` with the card's noise -> a strip noisy | restored | uncertainty | clean, a line, PNG.

    The uncertainty is the per-pixel std of ``samples`` decodings of z ~ q(z|x), stretched to its maximum.
    """
    model = ctx.model(weights)
    _network(ctx, weights, conditional=False)
    clean = garment(int(index), str(model.card.get("dataset") or "fashion-mnist"))
    noisy = corrupt.apply(clean, str(model.card.get("corruption") or "gaussian:sigma=114.75"), int(seed)).input
    restored = model.restore(noisy, samples=int(samples), uncertainty=True, seed=int(seed))
    std = restored.extras["std"]
    peak = float(std.max())
    line = (f"**{weights}**, test garment {int(index)}: PSNR noisy {psnr_db(noisy, clean):.2f} dB → restored "
            f"{psnr_db(restored.image, clean):.2f} dB (mean of {int(samples)} decodings); the uncertainty map is "
            f"their per-pixel std, shown stretched (its maximum {peak:.3f} is white)")
    strip = grid(torch.cat([noisy, restored.image, std / max(peak, 1e-6), clean]), cols=4, scale=2 * SCALE)
    return strip, line, save_png(to_array(restored.image)[:, :, 0], ctx, f"garment{int(index)}-restored")


def build(ctx: AppContext) -> None:
    plain = [n for n in ctx.names("vae") if ctx.card(n).get("arch") == "vae"]
    conditional = [n for n in ctx.names("vae") if ctx.card(n).get("arch") != "vae"]
    gr.Markdown("## Variational autoencoders\nSmall VAEs trained on 28x28 Fashion-MNIST (and MNIST) images. "
                "Garments come from the Fashion-MNIST test split (Debian package `dataset-fashion-mnist`).")
    if not plain and not conditional:
        gr.Markdown("**No VAE weights are installed** (`restore weights` lists what is there).")
        return
    if plain:
        vae = gr.Dropdown(plain, value="vae-fashion" if "vae-fashion" in plain else plain[0], label="VAE",
                          elem_id="vae-weights")
        with gr.Tab("Samples from the prior"):
            with gr.Row():
                n = gr.Slider(1, 64, value=16, step=1, label="samples")
                seed = gr.Number(0, precision=0, label="seed")
                go = gr.Button("Sample", variant="primary", elem_id="vae-prior-run")
            prior = result_image("z ~ N(0, I), decoded", elem_id="vae-prior")
            go.click(shows_errors(lambda w, k, s: prior_samples(ctx, w, k, s)), [vae, n, seed], prior,
                     api_name="vae_prior")
        with gr.Tab("Interpolate two garments"):
            with gr.Row():
                first = gr.Number(0, precision=0, label="first test garment (0-9999)")
                second = gr.Number(1, precision=0, label="second test garment (0-9999)")
                steps = gr.Slider(2, 16, value=8, step=1, label="steps")
                go = gr.Button("Interpolate", variant="primary", elem_id="vae-interp-run")
            line = result_image("first | decoded along the line between their latent means | second",
                                elem_id="vae-interp")
            go.click(shows_errors(lambda w, a, b, k: interpolate(ctx, w, a, b, k)), [vae, first, second, steps],
                     line, api_name="vae_interpolate")
        with gr.Tab("Denoise a garment, with its uncertainty"):
            with gr.Row():
                index = gr.Number(0, precision=0, label="test garment (0-9999)")
                noise_seed = gr.Number(0, precision=0, label="noise seed")
                go = gr.Button("Denoise", variant="primary", elem_id="vae-denoise-run")
            strip = result_image("noisy | restored | uncertainty (std) | clean", elem_id="vae-denoise")
            info = gr.Markdown(elem_id="vae-denoise-info")
            download = gr.DownloadButton("Download PNG (restored, 28x28)")
            go.click(shows_errors(lambda w, i, s: vae_denoise(ctx, w, i, s)), [vae, index, noise_seed],
                     [strip, info, download], api_name="vae_denoise")
    if conditional:
        with gr.Tab("Conditional VAEs: samples per class"):
            with gr.Row():
                cvae = gr.Dropdown(conditional, value=conditional[0], label="conditional VAE", elem_id="cvae-weights")
                per = gr.Slider(1, 12, value=6, step=1, label="samples per class")
                cseed = gr.Number(0, precision=0, label="seed")
                go = gr.Button("Sample", variant="primary", elem_id="vae-classes-run")
            classes = result_image("one row per class", elem_id="vae-classes")
            names = gr.Markdown()
            go.click(shows_errors(lambda w, k, s: class_samples(ctx, w, k, s)), [cvae, per, cseed],
                     [classes, names], api_name="vae_classes")
