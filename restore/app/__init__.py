"""``restore app``: a local web app over the Python API, one page per task (``pip install -e ".[app]"``).

    from restore.app import build_app, serve
    serve(host="127.0.0.1", port=7860)           # what `restore app` runs; blocks until Ctrl-C
    demo = build_app(workdir=tmp)                 # the gradio Blocks, e.g. for tests

Pages: the main page, Denoise, Colorize, Inpaint and VAE (`restore.app.home`,
`.denoise`, `.colorize`, `.inpaint`, `.vae`); each page's run is also an
HTTP endpoint (``/denoise``, ``/colorize``, ``/inpaint``, ``/vae_*``) that
``gradio_client`` calls. Nothing is fetched from outside (system fonts, no
analytics) and nothing is written outside one temporary folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["build_app", "launch", "serve"]

#: Gradio's own switches for an app that never calls out: no usage analytics, no server-side rendering (node).
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SSR_MODE": "False", "HF_HUB_OFFLINE": "1"}


def _offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


def build_app(device: str = "auto", workdir: str | Path | None = None, tile: int = 512,
              max_pixels: int | None = None) -> Any:
    """The app's gradio Blocks: main page plus one route per page.

    ``workdir`` receives uploads, samples and results (gradio's temp folder is
    pointed there too); the caller removes it (`serve` does).
    """
    _offline()
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix="restore-app-")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")  # uploads and served results

    # imported here, not at the top: gradio fixes its upload folder when first imported, so the environment
    # above must be set first (and `import restore.app` stays cheap without the extra)
    import gradio as gr

    import restore
    from restore.api import resolve_device
    from restore.app import colorize, denoise, home, inpaint, vae
    from restore.app.common import MAX_PIXELS, AppContext

    ctx = AppContext(device=resolve_device(device), workdir=workdir, tile=int(tile),
                     max_pixels=int(max_pixels or MAX_PIXELS), weights=restore.list_weights())
    with gr.Blocks(title="restore", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        home.build(ctx)
    for page, name in ((denoise, "Denoise"), (colorize, "Colorize"), (inpaint, "Inpaint"), (vae, "VAE")):
        with demo.route(name, "/" + name.lower()):
            page.build(ctx)
    demo.restore_context = ctx  # for tests and scripts: the settings and the loaded models
    return demo


def launch(demo: Any, host: str, port: int, **kwargs: Any) -> Any:
    """Start the server without blocking; the arguments that keep it local and offline in one place."""
    from restore.app.ui import theme

    return demo.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False, theme=theme(),
        footer_links=["api"], max_file_size="64mb", allowed_paths=[str(demo.restore_context.workdir)],
        quiet=True, show_error=True, **kwargs)


def serve(host: str = "127.0.0.1", port: int = 7860, device: str = "auto", tile: int = 512) -> None:
    """Build the app, print its address and serve until interrupted; the temp folder is removed at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="restore-app-"))
    # every temporary file of the process (gradio's uploads, torch's caches) goes under it, and so away with it
    tempfile.tempdir = os.environ["TMPDIR"] = str(workdir)
    try:
        demo = build_app(device=device, workdir=workdir, tile=tile)
        launch(demo, host, port, prevent_thread_lock=True)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        print(f"restore app: serving on http://{shown}:{port}/ (device {demo.restore_context.device}; "
              "Ctrl-C stops it)", flush=True)
        demo.block_thread()
    finally:
        try:
            if "demo" in locals():
                demo.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
