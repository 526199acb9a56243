"""The Colorize page: a gray photo (or a colour one, made gray first) in, colours predicted for it."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from restore.app.common import SAMPLE_SIDE, SAMPLES, AppContext, UserError, read_upload, sample_photo, save_png, \
    to_array
from restore.app.ui import comparison, image_input, page_header, result_image, sample_buttons, shows_errors
from restore.cli import DEFAULT_WEIGHTS
from restore.pipeline import match_channels

__all__ = ["build", "colorize"]

def colorize(ctx: AppContext, image: str | None, weights: str, saturation: float = 1.0,
             progress: Any = None) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray | None, str, str]:
    """((gray input, colorized), the colour original or None, a line about the run, the PNG's path).

    The model only sees lightness; a colour upload is shown beside the result so the two can be compared.
    """
    step = progress or (lambda *a, **k: None)
    x = read_upload(image, ctx, "photo")
    original = to_array(x) if x.shape[1] == 3 else None
    gray = match_channels(x, 1)
    step(0.1, desc=f"loading {weights}")
    model = ctx.model(weights)
    step(0.3, desc=f"colorizing {x.shape[-1]}x{x.shape[-2]}")
    out = model.restore(gray, tile=ctx.tile, saturation=float(saturation)).image
    result = to_array(out)
    line = (f"**{weights}** on {x.shape[-1]}x{x.shape[-2]} ({model.device}), saturation {float(saturation):g}"
            + (" · the colour upload was made gray first; its colours are shown below" if original is not None
               else ""))
    return (to_array(gray), result), original, line, save_png(result, ctx, "colorized")


def sample_path(ctx: AppContext, name: str) -> str:
    """A bundled photo, made gray, as a PNG in the app's temp folder."""
    small = sample_photo(name, SAMPLE_SIDE)
    folder = ctx.workdir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-gray.png"
    Image.fromarray(to_array(match_channels(small, 1))[:, :, 0]).save(path)
    return str(path)


def build(ctx: AppContext) -> None:
    names = ctx.names("colorize")
    if not page_header("## Colorize\nUpload a gray photo, or a colour one: it is made gray first and the original "
                       "is shown beside the result. The model predicts colours (CIELAB a/b); the lightness of every "
                       "pixel is the input's own.", names, "colorization"):
        return
    with gr.Row():
        with gr.Column():
            image = image_input("Photo (gray or colour)", elem_id="colorize-input")
            samples = sample_buttons("colorize", SAMPLES)
            default = DEFAULT_WEIGHTS["colorize"] if DEFAULT_WEIGHTS["colorize"] in names else names[0]
            weights = gr.Dropdown(names, value=default, label="Weights", elem_id="colorize-weights")
            saturation = gr.Slider(0, 2, value=1.0, step=0.05, label="Saturation",
                                   info="multiplies the predicted colours (0 = gray, 1 = as predicted)")
            run = gr.Button("Colorize", variant="primary", elem_id="colorize-run")
        with gr.Column():
            compare, info, download = comparison("colorize", "gray | colorized (drag the handle)")
            original = result_image("Original colours (of a colour upload)", elem_id="colorize-original")

    for button in samples:
        def pick(sample: str = str(button.value)) -> str:
            return sample_path(ctx, sample)

        button.click(shows_errors(pick), None, image, api_visibility="private")

    @shows_errors
    def run_colorize(path: str | None, name: str, sat: float,
                     progress: gr.Progress = gr.Progress()) -> tuple[Any, Any, str, str]:
        """Colorize a photo (a colour one is made gray first)."""
        if path is None:
            raise UserError("no photo: upload one (or pick a sample)")
        pair, orig, line, png = colorize(ctx, path, name, sat, progress)
        return pair, orig, line, png

    run.click(run_colorize, [image, weights, saturation], [compare, original, info, download], api_name="colorize")
