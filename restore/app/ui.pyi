"""Gradio pieces every page uses: the image upload that reports bad files, error display, the offline theme."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import gradio as gr

from restore.app.common import UserError

__all__ = ["ImageInput", "shows_errors", "theme"]

log = logging.getLogger("restore.app")

from gradio.events import Dependency

class ImageInput(gr.Image):
    """`gr.Image` upload that hands the page the file as uploaded (``type="filepath"``).

    gr.Image opens the upload with Pillow before the page's function runs, and
    a file Pillow cannot open (a text file) then fails with a bare "Error".
    This subclass turns that into a message naming the file; the page itself
    decodes the file with `restore.io` (`common.read_upload`), which names
    every other reason (truncated, too large, unsupported).
    """

    is_template = True  # rendered by the frontend's "image" component
    # (no __init__ of its own: gradio sends the frontend the arguments named in the constructor's signature)

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except Exception as e:  # noqa: BLE001 - Pillow raises several types for a non-image
            name = getattr(payload, "orig_name", None) or "the upload"
            raise gr.Error(f"{self.label}: {name} is not an image Pillow can open "
                           f"({type(e).__name__}); upload a PNG, JPEG, TIFF, BMP or WebP file") from None
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


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