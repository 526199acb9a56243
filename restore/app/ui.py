"""Gradio pieces every page uses: the image upload that reports bad files, error display, the offline theme."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import gradio as gr

from restore.app.common import UserError

__all__ = ["comparison", "image_input", "page_header", "result_image", "sample_buttons", "shows_errors", "theme"]

log = logging.getLogger("restore.app")


def image_input(label: str, **kwargs: Any) -> gr.Image:
    """An image upload handed to the page as the file itself, whose unreadable files are named in a message.

    ``image_mode=None`` keeps the file as uploaded (gray stays gray, 16-bit stays 16-bit; gr.Image would
    convert it to 8-bit RGB first); the page decodes it with `restore.io` (`common.read_upload`), which names
    every reason a file cannot be used. gr.Image itself opens the upload with Pillow before the page's
    function runs, and a file Pillow cannot open (a text file named .png) would fail with a bare "Error", so
    this one component's ``preprocess`` is wrapped to say what is wrong. (Not a subclass: gradio writes a
    .pyi stub next to the module of every component subclass, and the app writes nothing outside its temp
    folder.)
    """
    kwargs.setdefault("sources", ["upload", "clipboard"])
    component = gr.Image(label=label, type="filepath", format="png", image_mode=None, **kwargs)
    preprocess = component.preprocess

    def checked(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except Exception as e:  # noqa: BLE001 - Pillow raises several types for a non-image
            name = getattr(payload, "orig_name", None) or "the upload"
            raise gr.Error(f"{label}: {name} is not an image Pillow can open ({type(e).__name__}); "
                           "upload a PNG, JPEG, TIFF, BMP or WebP file") from None

    component.preprocess = checked  # type: ignore[method-assign]
    return component


def result_image(label: str, **kwargs: Any) -> gr.Image:
    """A picture the page shows, as a PNG, with download and full-screen buttons only (gradio's "share"
    button would upload to an outside service)."""
    return gr.Image(label=label, type="numpy", format="png", interactive=False, buttons=["download", "fullscreen"],
                    **kwargs)


def comparison(page: str, label: str) -> tuple[gr.ImageSlider, gr.Markdown, gr.DownloadButton]:
    """Before/after slider, a line about the run and the PNG download: the result column of a task page."""
    compare = gr.ImageSlider(label=label, type="numpy", format="png", buttons=["download", "fullscreen"],
                             elem_id=f"{page}-result")
    return compare, gr.Markdown(elem_id=f"{page}-info"), gr.DownloadButton("Download PNG", elem_id=f"{page}-download")


def page_header(text: str, names: list[str], what: str) -> bool:
    """A page's heading and explanation; False (after saying so) when no weights for it are installed."""
    gr.Markdown(text)
    if not names:
        gr.Markdown(f"**No {what} weights are installed** (`restore weights` lists what is there).")
    return bool(names)


def sample_buttons(page: str, samples: tuple[str, ...]) -> list[gr.Button]:
    """One small button per sample, in a row (the button's value is the sample's name)."""
    with gr.Row():
        return [gr.Button(s, size="sm", elem_id=f"{page}-sample-{s}") for s in samples]


def shows_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a page's function; a `UserError` or a bad input or option (ValueError) becomes a message on the page."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (UserError, ValueError) as e:  # OptionError, VAEInputError, InpaintInputError are ValueErrors
            raise gr.Error(str(e)) from None
        except Exception as e:  # noqa: BLE001 - a failure of one request must not look like a hang
            log.exception("restore app: %s failed", fn.__name__)
            raise gr.Error(f"{fn.__name__} failed: {type(e).__name__}: {e}") from None

    return wrapper


def theme() -> gr.themes.Base:
    """The default look with system fonts only: nothing is fetched from outside (works offline)."""
    return gr.themes.Default(
        font=[gr.themes.Font("system-ui"), "sans-serif"],
        font_mono=[gr.themes.Font("ui-monospace"), "monospace"],
    )
