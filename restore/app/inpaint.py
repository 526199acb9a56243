"""The Inpaint page: paint the holes on a photo with a brush (or upload a mask); the filled photo comes back."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import torch

from restore.app.common import SAMPLE_SIDE, SAMPLES, AppContext, UserError, outline, read_upload, sample_photo, \
    save_png, to_array, to_tensor
from restore.app.ui import image_input, page_header, result_image, sample_buttons, shows_errors
from restore.io.masks import read_mask
from restore.io.read import ImageReadError

__all__ = ["build", "inpaint", "painted_mask"]

def painted_mask(layers: list[Any] | None, size: tuple[int, int]) -> np.ndarray | None:
    """HxW bool of what the brush painted on the editor's layers (alpha > 0), or None when nothing was."""
    hole = None
    for layer in layers or []:
        if layer is None:
            continue
        a = np.asarray(layer)
        if a.shape[:2] != size:
            raise UserError(f"a painted layer is {a.shape[1]}x{a.shape[0]}, the photo {size[1]}x{size[0]}; "
                            "paint on the photo itself")
        painted = a[:, :, 3] > 0 if a.ndim == 3 and a.shape[2] == 4 else (a.reshape(*size, -1) != 0).any(-1)
        hole = painted if hole is None else hole | painted
    return hole if hole is not None and hole.any() else None


def uploaded_mask(path: str | None, size: tuple[int, int], ctx: AppContext) -> np.ndarray | None:
    """HxW bool of an uploaded mask file (nonzero = hole, as on the command line), checked against the photo."""
    if not path:
        return None
    read_upload(path, ctx, "mask")  # the same size and decoding checks as a photo
    try:
        mask = read_mask(path)
    except ImageReadError as e:
        raise UserError(f"mask: {e.reason}") from None
    if tuple(mask.shape[-2:]) != size:
        raise UserError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]}, the photo {size[1]}x{size[0]}: "
                        "a mask must have the photo's size")
    return mask[0].numpy() > 0


def inpaint(ctx: AppContext, editor: dict[str, Any] | None, mask_file: str | None, weights: str,
            progress: Any = None) -> tuple[np.ndarray, str, str]:
    """(the filled photo with the holes outlined, a line about the run, the PNG of the filled photo)."""
    step = progress or (lambda *a, **k: None)
    background = (editor or {}).get("background")
    if background is None:
        raise UserError("no photo: upload one in the editor (or pick a sample), then paint the holes")
    bg = np.asarray(background)
    size = (int(bg.shape[0]), int(bg.shape[1]))
    if size[0] * size[1] > ctx.max_pixels:
        raise UserError(f"the photo is {size[1]}x{size[0]}, too large for this app "
                        f"(at most {ctx.max_pixels / 1e6:.0f} megapixels)")
    x = to_tensor(bg)
    hole = painted_mask((editor or {}).get("layers"), size)
    extra = uploaded_mask(mask_file, size, ctx)
    if extra is not None:
        hole = extra if hole is None else hole | extra
    if hole is None:
        raise UserError("no holes: paint over what should be filled (the brush), or upload a mask")
    step(0.1, desc=f"loading {weights}")
    model = ctx.model(weights)
    step(0.3, desc=f"inpainting {size[1]}x{size[0]} ({100 * hole.mean():.1f}% of it)")
    out = model.restore(x, torch.from_numpy(hole)[None, None], tile=ctx.tile).image
    result = to_array(out)
    line = (f"**{weights}** on {size[1]}x{size[0]} ({model.device}): {100 * hole.mean():.1f}% filled, "
            "outlined in magenta; every other pixel is the photo's own. The download has no outline.")
    return outline(result, hole), line, save_png(result if out.shape[1] == 3 else result[:, :, 0], ctx, "inpainted")


def sample_value(name: str) -> dict[str, Any]:
    """Editor value with a bundled photo as the background and nothing painted."""
    small = sample_photo(name, SAMPLE_SIDE)
    return {"background": to_array(small), "layers": [], "composite": to_array(small)}


def build(ctx: AppContext) -> None:
    names = ctx.names("inpaint")
    if not page_header("## Inpaint\nUpload a photo in the editor, paint over what should be filled with the brush "
                       "(or upload a mask: nonzero = hole, the photo's size) and run. Known pixels are kept exactly.",
                       names, "inpainting"):
        return
    with gr.Row():
        with gr.Column():
            editor = gr.ImageEditor(label="Photo: paint the holes", type="numpy", format="png",
                                    sources=["upload", "clipboard"], transforms=(), layers=False,
                                    brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=24),
                                    elem_id="inpaint-editor")
            samples = sample_buttons("inpaint", SAMPLES)
            with gr.Accordion("Or upload a mask", open=False):
                mask = image_input("Mask (nonzero = hole)", elem_id="inpaint-mask")
            weights = gr.Dropdown(names, value=names[0], label="Weights", elem_id="inpaint-weights")
            run = gr.Button("Inpaint", variant="primary", elem_id="inpaint-run")
        with gr.Column():
            result = result_image("Filled (holes outlined)", elem_id="inpaint-result")
            info = gr.Markdown(elem_id="inpaint-info")
            download = gr.DownloadButton("Download PNG", elem_id="inpaint-download")

    for button in samples:
        def pick(sample: str = str(button.value)) -> dict[str, Any]:
            return sample_value(sample)

        button.click(shows_errors(pick), None, editor, api_visibility="private")

    @shows_errors
    def run_inpaint(value: dict[str, Any] | None, mask_path: str | None, name: str,
                    progress: gr.Progress = gr.Progress()) -> tuple[np.ndarray, str, str]:
        """Fill the painted (or masked) holes of a photo."""
        return inpaint(ctx, value, mask_path, name, progress)

    run.click(run_inpaint, [editor, mask, weights], [result, info, download], api_name="inpaint")
