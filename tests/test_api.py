"""The Python API (issue 18): restore.load(NAME)(image, **options) on numpy, PIL and torch, with the shipped weights.

Each check runs the real pipeline on small images, so a change of the restore path that alters what users get
(type, size, channels, dtype, alpha, pixels) fails here; the CLI comparison pins "the API and the CLI are one path".
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import restore
from restore import cli
from restore.options import OptionError

REPO = Path(__file__).resolve().parents[1]


def _photo(h: int = 40, w: int = 52, seed: int = 0) -> np.ndarray:
    """A smooth RGB photo-like uint8 image with an edge (denoisable, unlike white noise)."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([np.sin(xx / (5 + 3 * c) + r.uniform(0, 6)) * np.cos(yy / (7 + 2 * c)) for c in range(3)], -1)
    img = 0.5 + 0.35 * img
    img[h // 3 :, : w // 2] += 0.15
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _noisy(clean: np.ndarray, sigma: float = 25, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, clean.shape)
    return np.clip(clean + noise, 0, 255).round().astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def denoiser() -> restore.Model:
    return restore.load("denoise-gaussian", device="cpu")


# --------------------------------------------------------------------------- the package surface


def test_import_is_cheap_and_exposes_only_the_api() -> None:
    code = ("import sys, restore; print(sorted(m for m in ('torch', 'restore.api', 'restore.pipeline') "
            "if m in sys.modules)); print(dir(restore))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    loaded, names = out.splitlines()
    assert loaded == "[]"  # no torch, no model code at import
    assert names == "['Model', '__version__', 'list_weights', 'load']"


def test_python_dash_m_restore_is_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "restore", "--version"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == f"restore {restore.__version__}"
    done = subprocess.run([sys.executable, "-m", "restore", "denoise", "--help"], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0 and "--ensemble" in done.stdout and "--tile-overlap" in done.stdout


def test_list_weights_has_summaries() -> None:
    rows = {r["name"]: r for r in restore.list_weights()}
    assert {"denoise-gaussian", "colorize", "inpaint", "vae-fashion"} <= set(rows)
    assert rows["denoise-gaussian"]["task"] == "denoise" and "metrics" in rows["denoise-gaussian"]


def test_unknown_weights_and_bad_options_are_clear_errors(denoiser: restore.Model) -> None:
    with pytest.raises(Exception, match="no-such-weights"):
        restore.load("no-such-weights", device="cpu")
    img = _photo()
    with pytest.raises(ValueError, match="--ensemble"):
        denoiser(img, ensemble="x4")
    with pytest.raises(ValueError, match="--tile: must be >= 0"):
        denoiser(img, tile=-1)
    with pytest.raises(OptionError, match="unknown option 'strength'"):
        denoiser(img, strength=2)
    with pytest.raises(ValueError, match="channels-first"):
        denoiser(np.zeros((3, 20, 20), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        denoiser(np.full((8, 8), 2.0, np.float32))
    with pytest.raises(TypeError, match="numpy array, PIL image or torch tensor"):
        denoiser([[0, 1]])
    with pytest.raises(ValueError, match="device"):
        restore.load("denoise-gaussian", device="tpu")


# --------------------------------------------------------------------------- denoise: every input type


def test_numpy_uint8_rgb_denoises_and_keeps_type(denoiser: restore.Model) -> None:
    clean = _photo()
    noisy = _noisy(clean)
    out = denoiser(noisy)
    assert out.dtype == np.uint8 and out.shape == noisy.shape
    assert _psnr(out, clean) > _psnr(noisy, clean) + 3


@pytest.mark.parametrize("layout", ["HW", "HW1", "HW2", "HW4", "u16", "f32", "f64"])
def test_numpy_layouts_and_dtypes_round_trip(denoiser: restore.Model, layout: str) -> None:
    rgb = _noisy(_photo(33, 29))
    gray = rgb[..., 0]
    alpha = np.random.default_rng(3).integers(0, 256, gray.shape, dtype=np.uint8)
    arrays = {
        "HW": gray, "HW1": gray[..., None], "HW2": np.dstack([gray, alpha]), "HW4": np.dstack([rgb, alpha]),
        "u16": rgb.astype(np.uint16) * 257, "f32": rgb.astype(np.float32) / 255, "f64": gray.astype(np.float64) / 255,
    }
    x = arrays[layout]
    out = denoiser(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    if layout in ("HW2", "HW4"):
        assert np.array_equal(out[..., -1], alpha)  # alpha carried through untouched
    if layout == "u16":  # 16-bit precision is kept: not a uint8 result scaled up
        assert np.any(out % 257 != 0)


def test_pil_modes_round_trip(denoiser: restore.Model) -> None:
    rgb = _noisy(_photo(30, 30))
    for mode, img in [("RGB", Image.fromarray(rgb)), ("L", Image.fromarray(rgb[..., 0])),
                      ("RGBA", Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]))),
                      ("I;16", Image.fromarray(rgb[..., 0].astype(np.uint16) * 257))]:
        out = denoiser(img)
        assert isinstance(out, Image.Image) and out.size == img.size and out.mode == mode
    palette = Image.fromarray(rgb).convert("P")
    assert denoiser(palette).mode == "RGB"


def test_torch_tensors_keep_batch_device_and_dtype(denoiser: restore.Model) -> None:
    x = torch.from_numpy(_noisy(_photo())).permute(2, 0, 1).float().div(255)
    batch = torch.stack([x, x.flip(-1)])
    out = denoiser(batch)
    assert out.shape == batch.shape and out.dtype == torch.float32 and not out.requires_grad
    single = denoiser(x)
    assert single.shape == x.shape
    torch.testing.assert_close(single, out[0])  # a batch restores each image as alone
    half = denoiser(x.double())
    assert half.dtype == torch.float64
    rgba = torch.cat([x, torch.full_like(x[:1], 0.5)])
    assert torch.equal(denoiser(rgba)[3], rgba[3])
    with pytest.raises(ValueError, match="float"):
        denoiser((x * 255).to(torch.uint8))


def test_tiled_equals_untiled_within_tolerance(denoiser: restore.Model) -> None:
    """2 x 2 tiles of 256 px: the shipped UNet's context is wide, so tiles differ slightly where a border cuts it
    (measured: mean 0.11, 99th percentile 1 grey level; 64 px tiles: mean 2.4, which is why the default is 512)."""
    noisy = _noisy(_photo(300, 340))
    whole = denoiser(noisy, tile=0).astype(np.int16)
    tiles = denoiser(noisy, tile=256).astype(np.int16)
    diff = np.abs(whole - tiles)
    assert diff.mean() < 0.25 and np.percentile(diff, 99) <= 2, (diff.mean(), diff.max())


def test_options_object_and_ensemble(denoiser: restore.Model) -> None:
    opts = denoiser.options(ensemble="flip", tile=0)
    assert type(opts).__name__ == "DenoiseOptions" and opts.ensemble == "flip"
    noisy = _noisy(_photo())
    assert not np.array_equal(denoiser(noisy, ensemble="flip"), denoiser(noisy))


def test_api_output_is_byte_identical_to_the_cli(denoiser: restore.Model, tmp_path: Path) -> None:
    src = tmp_path / "in" / "photo.png"
    src.parent.mkdir()
    Image.fromarray(_noisy(_photo(70, 90))).save(src)
    assert cli.main(["denoise", str(src), str(tmp_path / "out.png"), "--device", "cpu", "--tile", "48"]) == 0
    from_cli = np.asarray(Image.open(tmp_path / "out.png"))
    from_api = denoiser(np.asarray(Image.open(src)), tile=48)
    assert np.array_equal(from_cli, from_api)


def test_one_model_per_thread_is_safe(denoiser: restore.Model) -> None:
    images = [_noisy(_photo(40, 40, seed=s), seed=s) for s in range(4)]
    expected = [denoiser(im) for im in images]
    other = restore.load("denoise-gaussian", device="cpu")
    results: dict[int, np.ndarray] = {}

    def work(model: restore.Model, indices: list[int]) -> None:
        for i in indices:
            results[i] = model(images[i])

    threads = [threading.Thread(target=work, args=(denoiser, [0, 1])), threading.Thread(target=work, args=(other, [2, 3]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(results[i], expected[i]) for i in range(4))
    assert torch.is_grad_enabled()  # no global state changed


# --------------------------------------------------------------------------- the other tasks


def test_colorize_gray_pil_gives_rgb_with_the_same_lightness() -> None:
    model = restore.load("colorize", device="cpu")
    gray = Image.fromarray(_photo()[..., 1])
    out = model(gray)
    assert out.mode == "RGB" and out.size == gray.size
    luma = np.asarray(out.convert("L"), dtype=np.float64)
    assert np.abs(luma - np.asarray(gray, dtype=np.float64)).mean() < 3.0
    assert np.asarray(model(gray, saturation=0.0)).std(axis=2).max() < 2.0  # no colour at saturation 0


def test_inpaint_fills_holes_and_keeps_known_pixels() -> None:
    model = restore.load("inpaint", device="cpu")
    photo = _photo(64, 80)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[20:40, 30:50] = 255
    out = model(photo, mask=mask)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    assert not np.array_equal(out[mask > 0], photo[mask > 0])
    pil = model(Image.fromarray(photo), mask=Image.fromarray(mask))
    assert np.array_equal(np.asarray(pil), out)
    with pytest.raises(ValueError, match="mask is needed"):
        model(photo)
    with pytest.raises(ValueError, match="must match"):
        model(photo, mask=mask[:10])


def test_vae_denoises_a_28x28_garment_with_its_uncertainty() -> None:
    model = restore.load("vae-fashion", device="cpu")
    assert model.task == "vae"
    garment = np.zeros((28, 28), np.uint8)
    garment[6:22, 8:20] = 200
    noisy = _noisy(garment, sigma=60)
    out = model(noisy)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    restored = model.restore(torch.from_numpy(noisy).float().div(255)[None, None], uncertainty=True)
    assert restored.extras["std"].shape == (1, 1, 28, 28) and float(restored.extras["std"].max()) > 0
    with pytest.raises(ValueError, match="28x28"):
        model(np.zeros((32, 32), np.uint8))


# --------------------------------------------------------------------------- noise level (--sigma)


def test_sigma_reaches_a_noise_conditioned_model_and_is_checked(denoiser: restore.Model) -> None:
    from restore.models.cond_unet import CondUNet
    from restore.noise import estimate_sigma
    from restore.pipeline import Pipeline

    torch.manual_seed(0)
    model = CondUNet(3, base_channels=4, depth=2, convs_per_level=0).eval()
    torch.nn.init.normal_(model.unet._last_conv().weight, std=0.05)
    pipeline = Pipeline(model, {"task": "denoise", "name": "tiny-cond"})
    x = torch.from_numpy(_noisy(_photo(32, 40))).permute(2, 0, 1)[None].float() / 255
    low, high = pipeline.run(x, sigma="0").image, pipeline.run(x, sigma=50).image
    assert not torch.allclose(low, high, atol=1e-4)  # the level is an input of the network
    estimated = float(estimate_sigma(x)[0]) * 255
    torch.testing.assert_close(pipeline.run(x).image, pipeline.run(x, sigma=f"{estimated!r}").image, atol=1e-5, rtol=0)
    gray = pipeline.run(x[:, :1], sigma=25).image  # a gray image through a colour model: one sigma per image
    assert gray.shape == (1, 1, 32, 40)
    with pytest.raises(ValueError, match="--sigma: must be auto or within 0-255"):
        pipeline.run(x, sigma=-1)
    with pytest.raises(ValueError, match="--sigma: expected auto or a number"):
        pipeline.run(x, sigma="loud")
    with pytest.warns(UserWarning, match="blind denoiser: --sigma is ignored"):
        denoiser(_noisy(_photo(16, 16)), sigma=25)
