"""The main page: what each task does (before/after on the bundled photos), links, installed weights, device."""

from __future__ import annotations

import gradio as gr
import numpy as np

from restore import __version__
from restore.app.common import AppContext, sample_photo, to_array

__all__ = ["build", "example", "weights_table"]

#: (page, title, default weights, bundled photo, what it does)
TASKS = (
    ("denoise", "Denoise", "denoise-gaussian", "astronaut",
     "removes Gaussian, salt-and-pepper or speckle noise from photos (and noise from 28x28 garments); "
     "the PSNR is shown when you also give the clean image"),
    ("colorize", "Colorize", "colorize", "coffee",
     "predicts colours for a gray photo; each pixel keeps its lightness"),
    ("inpaint", "Inpaint", "inpaint", "chelsea",
     "fills the holes you paint on a photo; every other pixel is kept exactly"),
)
#: Longer side of the photos in the examples (small: they are computed when the app starts).
EXAMPLE_SIZE = 200


def example(ctx: AppContext, weights: str, photo: str, seed: int = 0) -> np.ndarray:
    """before | after of ``weights`` on a bundled photo degraded by the weights' own corruption."""
    panels = ctx.model(weights).pipeline.demo(sample_photo(photo, EXAMPLE_SIZE), seed, tile=ctx.tile)
    before, after = to_array(panels[0][1]), to_array(panels[1][1])  # the degraded input, then the restored
    gap = np.full((before.shape[0], 6, 3), 255, np.uint8)
    return np.concatenate([before, gap, after], axis=1)


def weights_table(ctx: AppContext) -> str:
    """Markdown table of the installed weights."""
    if not ctx.weights:
        return "No weights are installed (`restore weights` says where they are looked for)."
    rows = ["| weights | task | trained on | corruption | size |", "|---|---|---|---|---|"]
    for w in ctx.weights:
        size = w.get("size_bytes")
        rows.append(f"| {w.get('name')} | {w.get('task', '?')} | {w.get('dataset', '?')} | "
                    f"`{w.get('corruption', '?')}` | {size / 1e6:.1f} MB |" if isinstance(size, (int, float)) else
                    f"| {w.get('name')} | {w.get('task', '?')} | {w.get('dataset', '?')} | "
                    f"`{w.get('corruption', '?')}` | ? |")
    return "\n".join(rows)


def build(ctx: AppContext) -> None:
    gr.Markdown(f"# restore {__version__}\nGAN-augmented image restoration. Running on **{ctx.device}**; "
                f"images larger than {ctx.tile} px are restored in overlapping tiles. Uploads and results stay "
                "in a temporary folder that is removed when the app stops.")
    with gr.Row():
        for page, title, weights, photo, what in TASKS:
            with gr.Column():
                gr.Markdown(f"### [{title}]({page})\n{what}.")
                if weights in ctx.names(page):
                    gr.Image(example(ctx, weights, photo), label=f"{photo}: before | after ({weights})",
                             type="numpy", format="png", interactive=False, buttons=[],
                             elem_id=f"home-{page}")
                else:
                    gr.Markdown(f"(weights `{weights}` are not installed)")
    gr.Markdown("### [VAE](vae)\nsamples from the prior of a VAE trained on Fashion-MNIST, interpolation between "
                "two test garments, the conditional VAEs' samples per class, and denoising a garment with a "
                "per-pixel uncertainty map.")
    gr.Markdown("### Installed weights\n" + weights_table(ctx))
