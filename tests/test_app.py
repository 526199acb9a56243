"""``restore app`` (issue 20) without a browser: each page's function called directly, then through
``gradio_client`` against a real server on 127.0.0.1 (a random free port), plus the CLI subcommand.

The pages run the shipped weights on small images, so a change that breaks what a user gets (sizes,
PSNR, kept pixels, error messages) fails here. The browser tests are tests/test_app_browser.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restore import corrupt

if os.environ.get("CI") == "true":
    import gradio  # noqa: F401 - CI installs the dev extra: a missing gradio is a failure there, not a skip
else:
    pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e \".[app]\")")

#: The app's temp folder for this module; gradio fixes its upload folder when first imported, so it is set first.
WORK = Path(tempfile.mkdtemp(prefix="restore-test-app-"))
os.environ["GRADIO_TEMP_DIR"] = str(WORK / "gradio")

from restore.app import build_app, colorize, denoise, inpaint, vae  # noqa: E402
from restore.app.common import AppContext, UserError, outline, read_upload, sample_photo, takes_option, \
    to_array  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _save(path: Path, x: torch.Tensor) -> str:
    a = to_array(x)
    Image.fromarray(a if x.shape[1] == 3 else a[:, :, 0]).save(path)
    return str(path)


def _load(path: str) -> np.ndarray:
    return np.asarray(Image.open(path))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / err))


@pytest.fixture(scope="module")
def app():
    """The built app (its main page computes the before/after examples) and its context."""
    demo = build_app(device="cpu", workdir=WORK)
    yield demo, demo.restore_context
    demo.close()
    shutil.rmtree(WORK, ignore_errors=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A clean photo (96 px, from a bundled sample), its noisy copy, a gray one, a text file and a truncated PNG."""
    d = tmp_path_factory.mktemp("app-photos")
    clean = sample_photo("astronaut", 96)
    noisy = corrupt.apply(clean, "gaussian:sigma=25", 0).input
    paths = {"clean": _save(d / "clean.png", clean), "noisy": _save(d / "noisy.png", noisy),
             "gray": _save(d / "gray.png", clean.mean(1, keepdim=True))}
    (d / "notes.txt").write_text("not an image\n")
    paths["text"] = str(d / "notes.txt")
    data = Path(paths["clean"]).read_bytes()
    (d / "cut.png").write_bytes(data[: len(data) // 2])
    paths["truncated"] = str(d / "cut.png")
    return paths


# --------------------------------------------------------------------------- page functions


def test_denoise_raises_psnr_and_returns_the_input_size(app, photos) -> None:
    _, ctx = app
    (before, after), line, png = denoise.denoise(ctx, photos["noisy"], photos["clean"], "denoise-gaussian")
    clean = _load(photos["clean"])
    assert after.shape == before.shape == clean.shape
    assert _psnr(after, clean) > _psnr(_load(photos["noisy"]), clean) + 3
    assert "PSNR noisy" in line and "restored" in line
    assert Path(png).is_relative_to(ctx.workdir) and _load(png).shape == clean.shape
    assert np.array_equal(_load(png), after)


def test_denoise_passes_the_tile_to_the_pipeline(app, photos) -> None:
    """The page tiles as the CLI does: its result is the API's with the same tile (here smaller than the image)."""
    _, ctx = app
    small = AppContext(device=ctx.device, workdir=ctx.workdir, tile=48, weights=ctx.weights, _models=ctx._models)
    (_, after), _, _ = denoise.denoise(small, photos["noisy"], None, "denoise-gaussian")
    x = read_upload(photos["noisy"], ctx)
    direct = ctx.model("denoise-gaussian").restore(x, tile=48).image
    assert np.array_equal(after, to_array(direct))
    whole = to_array(ctx.model("denoise-gaussian").restore(x, tile=0).image)
    assert not np.array_equal(after, whole)  # the tile did reach the pipeline


def test_denoise_controls_follow_the_models_options(app) -> None:
    _, ctx = app
    assert denoise.controls(ctx, "denoise-gaussian") == {"sigma": False, "ensemble": ("none", "flip", "x8")}
    assert denoise.controls(ctx, "vae-fashion")["ensemble"] == ()

    from dataclasses import dataclass

    @dataclass(frozen=True)
    class WithSigma:
        sigma: str = "auto"

    assert takes_option(WithSigma, "sigma") and not takes_option(ctx.model("colorize").options_type, "sigma")
    names = denoise.denoise_weights(ctx)
    assert "denoise-gaussian" in names and "vae-fashion" in names and "cvae-onehot" not in names


def test_noise_level_control_for_a_noise_conditioned_model(app, photos, tmp_path) -> None:
    """A noise-conditioned denoiser (a tiny random FFDNet here) gets the sigma control, and the level reaches it."""
    import restore
    from restore import weights as W
    from restore.models.ffdnet import FFDNet

    _, ctx = app
    torch.manual_seed(0)
    net = FFDNet(width=8, depth=3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    W.save(tmp_path / "tiny-cond", net, {"task": "denoise", "corruption": "gaussian:sigma=0-60"})
    card = {"name": "tiny-cond", "task": "denoise", "arch": "ffdnet", "dataset": "photos"}
    local = AppContext(device=ctx.device, workdir=ctx.workdir, weights=[card],
                       _models={"tiny-cond": restore.load(tmp_path / "tiny-cond.safetensors", device="cpu")})
    assert denoise.controls(local, "tiny-cond")["sigma"] is True
    low = denoise.denoise(local, photos["noisy"], None, "tiny-cond", sigma=5)[0][1]
    high = denoise.denoise(local, photos["noisy"], None, "tiny-cond", sigma=80)[0][1]
    assert not np.array_equal(low, high)
    with pytest.raises(ValueError, match="0-255"):
        denoise.denoise(local, photos["noisy"], None, "tiny-cond", sigma=300)


def test_denoise_samples_use_the_weights_corruption(app) -> None:
    _, ctx = app
    noisy, clean = denoise.make_sample(ctx, "coffee", "denoise-saltpepper")
    a, b = _load(noisy), _load(clean)
    assert a.shape == b.shape and max(a.shape[:2]) == denoise.SAMPLE_SIDE
    assert ((a == 0) | (a == 255)).all(-1).mean() > 0.01  # salt and pepper, not Gaussian noise
    with pytest.raises(UserError, match="28x28"):
        denoise.make_sample(ctx, "coffee", "vae-fashion")


def test_bad_uploads_are_messages(app, photos) -> None:
    _, ctx = app
    with pytest.raises(UserError, match="notes.txt"):
        denoise.denoise(ctx, photos["text"], None, "denoise-gaussian")
    with pytest.raises(UserError, match="cut.png"):
        denoise.denoise(ctx, photos["truncated"], None, "denoise-gaussian")
    tiny = AppContext(device=ctx.device, workdir=ctx.workdir, max_pixels=50 * 50, weights=ctx.weights)
    with pytest.raises(UserError, match="too large"):
        denoise.denoise(tiny, photos["clean"], None, "denoise-gaussian")
    with pytest.raises(UserError, match="no noisy image"):
        denoise.denoise(ctx, None, None, "denoise-gaussian")
    with pytest.raises(UserError, match="not installed"):
        denoise.denoise(ctx, photos["noisy"], None, "no-such-weights")
    with pytest.raises(ValueError, match="28x28"):  # a photo given to the 28x28 VAE: the VAE's own message
        denoise.denoise(ctx, photos["noisy"], None, "vae-fashion")


def test_colorize_makes_colour_uploads_gray_and_shows_the_original(app, photos) -> None:
    _, ctx = app
    (gray, result), original, line, png = colorize.colorize(ctx, photos["clean"], "colorize", 1.0)
    assert np.array_equal(original, _load(photos["clean"]))
    assert (gray[:, :, 0] == gray[:, :, 2]).all() and result.shape == original.shape
    assert np.abs(result[:, :, 0].astype(int) - result[:, :, 2]).mean() > 1  # it has colour
    (_, flat), none, _, _ = colorize.colorize(ctx, photos["gray"], "colorize", 0.0)
    assert none is None and np.abs(flat[:, :, 0].astype(int) - flat[:, :, 2]).max() <= 2  # saturation 0: gray
    assert np.array_equal(_load(png), result)


def _stroke(shape: tuple[int, int]) -> np.ndarray:
    layer = np.zeros((*shape, 4), np.uint8)
    layer[40:52, 20:70] = (255, 0, 255, 255)
    return layer


def test_inpaint_keeps_known_pixels_and_outlines_the_hole(app, photos) -> None:
    _, ctx = app
    photo = _load(photos["clean"])
    hole = _stroke(photo.shape[:2])[:, :, 3] > 0
    shown, line, png = inpaint.inpaint(ctx, {"background": photo, "layers": [_stroke(photo.shape[:2])]}, None,
                                       "inpaint")
    filled = _load(png)
    assert filled.shape == photo.shape
    assert np.array_equal(filled[~hole], photo[~hole])  # every known pixel bit-exact
    assert not np.array_equal(filled[hole], photo[hole])
    assert np.array_equal(shown[~hole], photo[~hole])  # the outline is drawn on hole pixels only
    assert (shown[hole] == (255, 0, 255)).all(-1).sum() > 0 and "filled" in line


def test_inpaint_mask_upload_and_its_errors(app, photos, tmp_path) -> None:
    _, ctx = app
    photo = _load(photos["clean"])
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[10:30, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    _, _, png = inpaint.inpaint(ctx, {"background": photo, "layers": []}, str(tmp_path / "mask.png"), "inpaint")
    assert np.array_equal(_load(png)[mask == 0], photo[mask == 0])
    Image.fromarray(mask[:50]).save(tmp_path / "short.png")
    with pytest.raises(UserError, match="the photo's size"):
        inpaint.inpaint(ctx, {"background": photo, "layers": []}, str(tmp_path / "short.png"), "inpaint")
    with pytest.raises(UserError, match="no holes"):
        inpaint.inpaint(ctx, {"background": photo, "layers": [np.zeros((*photo.shape[:2], 4), np.uint8)]}, None,
                        "inpaint")
    with pytest.raises(UserError, match="no photo"):
        inpaint.inpaint(ctx, None, None, "inpaint")


def test_outline_stays_inside_the_hole() -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    hole = np.zeros((20, 20), bool)
    hole[5:15, 5:15] = True
    out = outline(image, hole)
    drawn = (out != 0).any(-1)
    assert drawn.sum() == 100 - 36 and not drawn[~hole].any()  # a 2-px ring inside the 10x10 hole


def test_vae_page_functions(app) -> None:
    _, ctx = app
    grid = vae.prior_samples(ctx, "vae-fashion", 10, seed=1)
    assert grid.shape == (2 * 28 * vae.SCALE + 2, 8 * 28 * vae.SCALE + 7 * 2, 3)  # 8 a row, white gaps
    assert not np.array_equal(grid, vae.prior_samples(ctx, "vae-fashion", 10, seed=2))
    rows, names = vae.class_samples(ctx, "cvae-onehot", 2)
    assert rows.shape[0] == 10 * 28 * vae.SCALE + 9 * 2 and "Trouser" in names
    with pytest.raises(UserError, match="conditional"):
        vae.prior_samples(ctx, "cvae-onehot")
    with pytest.raises(UserError, match="1-64"):
        vae.prior_samples(ctx, "vae-fashion", 0)


def test_vae_garments(app, monkeypatch, tmp_path) -> None:
    _, ctx = app
    try:
        denoise.garment(0)
    except UserError:
        if os.environ.get("CI") == "true":
            raise  # .ci/run installs dataset-fashion-mnist
        pytest.skip("Fashion-MNIST is not installed")
    line = vae.interpolate(ctx, "vae-fashion", 0, 1, steps=4)
    assert line.shape == (28 * vae.SCALE, 6 * 28 * vae.SCALE + 5 * 2, 3)
    strip, text, png = vae.vae_denoise(ctx, "vae-fashion", 3, seed=0, samples=8)
    assert strip.shape[1] == 4 * 28 * 2 * vae.SCALE + 3 * 2 and _load(png).shape == (28, 28)
    noisy_db, restored_db = [float(s.split(" dB")[0]) for s in text.split("PSNR noisy ")[1].split("restored ")]
    assert restored_db > noisy_db + 3
    monkeypatch.setenv("RESTORE_FASHION_MNIST", str(tmp_path))
    denoise._test_split.cache_clear()
    try:
        with pytest.raises(UserError, match="dataset-fashion-mnist"):
            vae.interpolate(ctx, "vae-fashion", 0, 1)
    finally:
        denoise._test_split.cache_clear()


def test_main_page_examples(app) -> None:
    import restore.app
    from restore.app import home

    demo, ctx = app
    assert not list(Path(restore.app.__file__).parent.glob("*.pyi"))  # gradio stubs a component subclass's module
    before_after = home.example(ctx, "inpaint", "chelsea")
    assert before_after.shape[1] > 2 * before_after.shape[0]  # two panels side by side
    table = home.weights_table(ctx)
    assert all(str(w["name"]) in table for w in ctx.weights)
    assert [p[0] for p in demo.pages][-4:] == ["denoise", "colorize", "inpaint", "vae"]


# --------------------------------------------------------------------------- over HTTP (gradio_client)


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    from restore.app import launch

    demo, ctx = app
    port = _free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(ctx.workdir / "client"))


def test_api_denoise_and_error_then_keeps_serving(client, photos) -> None:
    from gradio_client import handle_file

    with pytest.raises(Exception, match="notes.txt is not an image"):
        client.predict(handle_file(photos["text"]), None, "denoise-gaussian", "none", True, 25, api_name="/denoise")
    with pytest.raises(Exception, match="cut.png"):
        client.predict(handle_file(photos["truncated"]), None, "denoise-gaussian", "none", True, 25,
                       api_name="/denoise")
    pair, line, png = client.predict(handle_file(photos["noisy"]), handle_file(photos["clean"]), "denoise-gaussian",
                                     "flip", True, 25, api_name="/denoise")
    clean = _load(photos["clean"])
    assert _load(png).shape == clean.shape and Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _psnr(_load(pair[1])[:, :, :3], clean) > _psnr(_load(photos["noisy"]), clean) + 3


def test_api_colorize_inpaint_and_vae(client, photos, tmp_path) -> None:
    from gradio_client import handle_file

    pair, original, _, png = client.predict(handle_file(photos["gray"]), "colorize", 1.0, api_name="/colorize")
    assert original is None and _load(png).shape == (96, 96, 3)
    Image.fromarray(_stroke((96, 96))).save(tmp_path / "layer.png")
    editor = {"background": handle_file(photos["clean"]), "layers": [handle_file(str(tmp_path / "layer.png"))],
              "composite": None}
    shown, line, png = client.predict(editor, None, "inpaint", api_name="/inpaint")
    photo, filled = _load(photos["clean"]), _load(png)
    hole = _stroke((96, 96))[:, :, 3] > 0
    assert np.array_equal(filled[~hole], photo[~hole])
    grid = client.predict("vae-fashion", 4, 0, api_name="/vae_prior")
    assert _load(grid).shape[:2] == (28 * vae.SCALE, 4 * 28 * vae.SCALE + 3 * 2)
    rows, names = client.predict("cvae-embedding", 1, 0, api_name="/vae_classes")
    assert "Ankle boot" in names


# --------------------------------------------------------------------------- the subcommand


def test_cli_app_subcommand(monkeypatch, capsys, tmp_path) -> None:
    import restore.app
    from restore import cli

    calls = []
    monkeypatch.setattr(restore.app, "serve", lambda **kw: calls.append(kw))
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", "restored-after-the-test")  # cmd_app sets it for --weights-dir
    monkeypatch.delenv("RESTORE_WEIGHTS_DIR")
    assert cli.main(["app", "--host", "0.0.0.0", "--port", "9999", "--device", "cpu"]) == 0
    assert calls == [{"host": "0.0.0.0", "port": 9999, "device": "cpu"}]
    assert "reachable from the network" in capsys.readouterr().err
    assert cli.main(["app"]) == 0 and calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 7860
    assert "reachable" not in capsys.readouterr().err
    assert cli.main(["app", "--weights-dir", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["app", "--weights-dir", str(tmp_path)]) == 0
    assert os.environ["RESTORE_WEIGHTS_DIR"] == str(tmp_path.resolve())
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the app extra were not installed
    assert cli.main(["app"]) == 2
    assert 'pip install -e ".[app]"' in capsys.readouterr().err
