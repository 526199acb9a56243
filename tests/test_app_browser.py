"""``restore app`` end to end in a real browser (issue 20): Debian's headless ``chromium`` driven by Playwright
against ``restore app`` started as a user starts it (a child process on 127.0.0.1, a random free port).

Each page is opened, a photo uploaded, a mask stroke painted with the mouse, the page run and the returned
image fetched and checked; a text file gives a message and the app keeps serving; every request the browser
made went to the app's own address; and when the app stops, its temp folder is gone and it wrote nothing in
its working directory. Run alone with ``pytest -m browser``. With ``RESTORE_APP_SCREENSHOTS=DIR`` the pages
are also saved as DIR/app-*.png (docs/images/ holds the ones the README shows).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

IN_CI = os.environ.get("CI") == "true"
CHROMIUM = os.environ.get("RESTORE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
#: Seconds a page gets to answer a run (CPU, 2 cores shared; the images are small).
RUN_TIMEOUT_MS = 90_000


def _need(ok: bool, why: str) -> None:
    """Skip on a developer's machine without the browser; fail loudly in CI, which must have installed it."""
    if not ok:
        if IN_CI:
            pytest.fail(f"browser tests cannot run in CI: {why} (.ci/run installs chromium and the dev extra)")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from restore import corrupt
    from restore.app.common import sample_photo, to_array

    d = tmp_path_factory.mktemp("browser-files")
    clean = sample_photo("chelsea", 160)
    noisy = corrupt.apply(clean, "gaussian:sigma=25", 0).input
    out = {"clean": to_array(clean), "noisy": to_array(noisy)}
    out["clean_path"] = _png(d / "clean.png", out["clean"])
    out["noisy_path"] = _png(d / "noisy.png", out["noisy"])
    out["photo_path"] = _png(d / "photo.png", to_array(sample_photo("astronaut", 200)))
    (d / "readme.txt").write_text("this is not an image\n")
    out["text_path"] = str(d / "readme.txt")
    (d / "fake.png").write_text("a text file named like an image\n")  # passes the browser's file-type check
    out["fake_path"] = str(d / "fake.png")
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``restore app`` in a child process, in an empty working directory with its own TMPDIR."""
    try:
        import gradio  # noqa: F401
    except ImportError as e:
        _need(False, f"gradio is not installed ({e})")
    root = tmp_path_factory.mktemp("browser-app")
    cwd, tmp = root / "cwd", root / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "restore", "app", "--port", str(port), "--device", "cpu"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if "serving on" in line:
            break
    if not any(url in line for line in lines):
        proc.kill()
        pytest.fail("restore app did not print its address:\n" + "".join(lines))
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
        try:
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        assert proc.returncode == 0, "".join(lines) + rest
        assert not any(tmp.iterdir()), f"left in TMPDIR: {sorted(p.name for p in tmp.iterdir())}"
        assert not any(cwd.iterdir()), f"written in its working directory: {sorted(p.name for p in cwd.iterdir())}"


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    _need(CHROMIUM is not None, "Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        _need(False, f"playwright is not installed ({e})")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any, server: str) -> Iterator[Any]:
    """A fresh page whose every request is logged; after the test none may have left the app's address."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    yield pg
    context.close()
    outside = [u for u in requests if not u.startswith(server) and not u.startswith(("data:", "blob:"))]
    assert requests and not outside, f"requests that left {server}: {outside}"


def _open(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")


def _fetch(page: Any, selector: str, index: int = 0) -> np.ndarray:
    """The image a component shows, fetched from the app as the browser got it."""
    img = page.locator(f"{selector} img").nth(index)
    img.wait_for(timeout=RUN_TIMEOUT_MS)
    data = page.request.get(img.get_attribute("src")).body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _screenshot(page: Any, name: str) -> None:
    """With RESTORE_APP_SCREENSHOTS=DIR: the page as DIR/app-NAME.png, 3/4 size in 128 colours (docs-sized)."""
    folder = os.environ.get("RESTORE_APP_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        shot = shot.resize((shot.width * 3 // 4, shot.height * 3 // 4), Image.Resampling.LANCZOS)
        shot.quantize(128, dither=Image.Dither.NONE).save(Path(folder) / f"app-{name}.png", optimize=True)


def test_main_page_links_every_page(page: Any, server: str) -> None:
    _open(page, server)
    assert page.get_by_text("Installed weights").is_visible()
    for title in ("Denoise", "Colorize", "Inpaint", "VAE"):
        assert page.get_by_role("link", name=title).first.is_visible()
    assert page.locator("#home-denoise img").count() == 1
    _screenshot(page, "home")
    page.get_by_role("link", name="Inpaint").first.click()
    page.wait_for_url(re.compile(r".*/inpaint$"))


def test_denoise_upload_run_and_psnr(page: Any, server: str, files: dict[str, Any]) -> None:
    _open(page, server + "denoise")
    page.locator("#denoise-noisy input[type=file]").set_input_files(files["noisy_path"])
    page.locator("#denoise-clean input[type=file]").set_input_files(files["clean_path"])
    page.locator("#denoise-run").click()
    page.locator("#denoise-info").get_by_text("PSNR noisy").wait_for(timeout=RUN_TIMEOUT_MS)
    after = _fetch(page, "#denoise-result", 1)
    assert after.shape == files["clean"].shape
    assert _psnr(after, files["clean"]) > _psnr(files["noisy"], files["clean"]) + 3
    _screenshot(page, "denoise")


def test_text_upload_is_a_message_and_the_app_keeps_serving(page: Any, server: str, files: dict[str, Any]) -> None:
    _open(page, server + "denoise")
    page.locator("#denoise-noisy input[type=file]").set_input_files(files["text_path"])
    page.get_by_text("Invalid file type: readme.txt").first.wait_for(timeout=RUN_TIMEOUT_MS)  # the page refuses it
    page.locator("#denoise-noisy input[type=file]").set_input_files(files["fake_path"])
    page.locator("#denoise-run").click()
    page.get_by_text("fake.png is not an image").first.wait_for(timeout=RUN_TIMEOUT_MS)  # the server's message
    _open(page, server + "denoise")  # the same server goes on
    page.locator("#denoise-noisy input[type=file]").set_input_files(files["noisy_path"])
    page.locator("#denoise-run").click()
    page.locator("#denoise-info").get_by_text("denoise-gaussian").wait_for(timeout=RUN_TIMEOUT_MS)


def test_colorize_upload_and_run(page: Any, server: str, files: dict[str, Any]) -> None:
    _open(page, server + "colorize")
    page.locator("#colorize-input input[type=file]").set_input_files(files["photo_path"])
    page.locator("#colorize-run").click()
    page.locator("#colorize-info").get_by_text("made gray first").wait_for(timeout=RUN_TIMEOUT_MS)
    result = _fetch(page, "#colorize-result", 1)
    photo = np.asarray(Image.open(files["photo_path"]))
    assert result.shape == photo.shape and np.abs(result[..., 0].astype(int) - result[..., 2]).mean() > 1
    _screenshot(page, "colorize")


def test_inpaint_brush_stroke_fills_only_the_stroke(page: Any, server: str, files: dict[str, Any]) -> None:
    _open(page, server + "inpaint")
    page.locator("#inpaint-editor input[type=file]").first.set_input_files(files["photo_path"])
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Brush", exact=True).click()
    box = page.locator("#inpaint-editor canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 60, cy)
    page.mouse.down()
    page.mouse.move(cx + 60, cy, steps=4)  # few events: each one repaints the editor (software WebGL)
    page.mouse.up()
    page.locator("#inpaint-run").click()
    page.locator("#inpaint-info").get_by_text("filled").wait_for(timeout=RUN_TIMEOUT_MS)
    result = _fetch(page, "#inpaint-result")
    photo = np.asarray(Image.open(files["photo_path"]))
    assert result.shape == photo.shape
    changed = (result != photo).any(-1)
    rows = np.nonzero(changed.any(1))[0]
    h = photo.shape[0]
    assert 0 < changed.mean() < 0.35, changed.mean()
    assert rows.min() > h * 0.2 and rows.max() < h * 0.8, (rows.min(), rows.max())  # only around the stroke
    assert np.array_equal(result[: int(h * 0.2)], photo[: int(h * 0.2)])  # known pixels, bit-exact
    assert np.array_equal(result[int(h * 0.8):], photo[int(h * 0.8):])
    _screenshot(page, "inpaint")


def test_vae_page_samples_and_denoises_a_garment(page: Any, server: str) -> None:
    from restore.app.common import UserError
    from restore.app.denoise import garment

    _open(page, server + "vae")
    page.locator("#vae-prior-run").click()
    grid = _fetch(page, "#vae-prior")
    assert grid.shape[0] == 2 * 28 * 4 + 2
    _screenshot(page, "vae")
    try:
        garment(0)
    except UserError as e:
        _need(False, str(e))
    page.get_by_role("tab", name="Denoise a garment, with its uncertainty").click()
    page.locator("#vae-denoise-run").click()
    page.locator("#vae-denoise-info").get_by_text("PSNR noisy").wait_for(timeout=RUN_TIMEOUT_MS)
    strip = _fetch(page, "#vae-denoise")
    assert strip.shape[:2] == (28 * 8, 4 * 28 * 8 + 3 * 2)
