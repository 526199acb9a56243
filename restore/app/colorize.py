"""The Colorize page: a gray photo (or a colour one, made gray first) in, colours predicted for it."""

from __future__ import annotations

from typing import Any

import numpy as np

from restore.app.common import AppContext, UserError, read_upload, sample_photo, save_png, to_array

__all__ = ["build", "colorize"]

SAMPLE_SIDE = 384


def colorize(ctx: AppContext, image: str | None, weights: str, saturation: float = 1.0,
             progress: Any = None) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray | None, str, str]:
    """((gray input, colorized), the colour original or None, a line about the run, the PNG's path).

    The model only sees lightness; a colour upload is shown beside the result so the two can be compared.
    """
    from restore.pipeline import match_channels

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
    import torch
    from PIL import Image

    from restore.pipeline import match_channels

    photo = sample_photo(name)
    s = SAMPLE_SIDE / max(photo.shape[-2:])
    small = torch.nn.functional.interpolate(photo, scale_factor=s, mode="area") if s < 1 else photo
    folder = ctx.workdir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-gray.png"
    Image.fromarray(to_array(match_channels(small, 1))[:, :, 0]).save(path)
    return str(path)


def build(ctx: AppContext) -> None:
    import gradio as gr

    from restore.app.ui import image_input, result_image, shows_errors

    names = ctx.names("colorize")
    gr.Markdown("## Colorize\nUpload a gray photo, or a colour one: it is made gray first and the original is "
                "shown beside the result. The model predicts colours (CIELAB a/b); the lightness of every pixel is "
                "the input's own.")
    if not names:
        gr.Markdown("**No colorization weights are installed** (`restore weights` lists what is there).")
        return
    with gr.Row():
        with gr.Column():
            image = image_input("Photo (gray or colour)", elem_id="colorize-input")
            with gr.Row():
                samples = [gr.Button(s, size="sm", elem_id=f"colorize-sample-{s}")
                           for s in ("astronaut", "coffee", "chelsea")]
            weights = gr.Dropdown(names, value=names[0], label="Weights", elem_id="colorize-weights")
            saturation = gr.Slider(0, 2, value=1.0, step=0.05, label="Saturation",
                                   info="multiplies the predicted colours (0 = gray, 1 = as predicted)")
            run = gr.Button("Colorize", variant="primary", elem_id="colorize-run")
        with gr.Column():
            compare = gr.ImageSlider(label="gray | colorized (drag the handle)", type="numpy", format="png",
                                     buttons=["download", "fullscreen"],
                                     elem_id="colorize-result")
            info = gr.Markdown(elem_id="colorize-info")
            download = gr.DownloadButton("Download PNG", elem_id="colorize-download")
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
