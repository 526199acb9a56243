"""LAB colorization (issue 7): colour conversions, the conditional GAN task, full-resolution restoring.

Everything runs on CPU with tiny models and images (a few seconds in total).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2lab

from restore import cli
from restore import weights as W
from restore.corrupt import RandomStreams
from restore.engine.config import ConfigError, TrainConfig, apply_dict
from restore.engine.task import StepContext
from restore.pipeline import Pipeline
from restore.restorers.colorize import working_size
from restore.tasks import colorize as C

TINY_G = {"base_channels": 4, "depth": 3, "max_channels": 8, "dropout": 0.0}
TINY_D = {"base_channels": 4, "n_layers": 2}


def tiny_task(**options) -> C.ColorizeTask:
    opts = {"crop_size": 32, "load_size": [32, 48], "work_size": 24, "max_work_side": 64,
            "val_images": 1, "generator": TINY_G, "discriminator": TINY_D}
    opts.update(options)
    return C.ColorizeTask(opts)


def ctx(noise: float = 0.0, training: bool = True) -> StepContext:
    return StepContext(step=0, epoch=0, device=torch.device("cpu"), streams=RandomStreams(0),
                       training=training, d_noise_std=noise)


def l_of_8bit(array: np.ndarray) -> np.ndarray:
    """CIELAB L (skimage, D65) of an 8/16-bit gray or RGB(A) array as written on disk."""
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    a = array.astype(np.float64) / scale
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return rgb2lab(a[..., :3])[..., 0]


# ----------------------------------------------------------------------------- colour home


def test_lab_normalisation_round_trip_and_ranges():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, 3, 19, 23, generator=g)
    rgb[0, :, :2] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # extreme sRGB primaries
    rgb[0, :, 2:4] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    l_norm, ab_norm = C.rgb_to_model(rgb)
    assert l_norm.shape == (3, 1, 19, 23) and ab_norm.shape == (3, 2, 19, 23)
    assert l_norm.min() >= -1.0 - 1e-5 and l_norm.max() <= 1.0 + 1e-5
    assert ab_norm.abs().max() <= 1.0  # the generator's tanh range covers all of sRGB
    back = C.model_to_rgb(l_norm, ab_norm)
    assert (back - rgb).abs().max() < 1e-4
    back_keep = C.model_to_rgb(l_norm, ab_norm, keep_l=True)  # in-gamut colours are untouched
    assert (back_keep - rgb).abs().max() < 1e-4
    # the scaling is the documented one, and the L/ab agree with scikit-image (what eval/ measures with)
    lab = C.rgb_to_lab(rgb)
    assert torch.allclose(C.denormalize_l(l_norm), lab[:, :1]) and torch.allclose(C.denormalize_ab(ab_norm), lab[:, 1:])
    assert torch.allclose(C.normalize_l(torch.tensor([0.0, 50.0, 100.0])), torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(C.normalize_ab(torch.tensor([110.0])), torch.tensor([1.0]))
    ref = rgb2lab(rgb[1].permute(1, 2, 0).double().numpy())
    assert np.abs(lab[1].permute(1, 2, 0).double().numpy() - ref).max() < 0.05


def test_lightness_of_gray_rgb_and_alpha_inputs():
    g = torch.Generator().manual_seed(1)
    gray = torch.rand(2, 1, 5, 7, generator=g)
    L = C.lightness(gray)
    assert L.shape == (2, 1, 5, 7)
    assert torch.allclose(L, C.rgb_to_lab(gray.expand(-1, 3, -1, -1))[:, :1])
    rgba = torch.rand(2, 4, 5, 7, generator=g)
    assert torch.allclose(C.lightness(rgba), C.rgb_to_lab(rgba[:, :3])[:, :1])
    with pytest.raises(C.ColorizeError, match="channels"):
        C.lightness(torch.rand(1, 5, 4, 4))


def test_keep_l_gamut_mapping_on_saturated_predictions():
    g = torch.Generator().manual_seed(2)
    L = torch.rand(2, 1, 32, 32, generator=g) * 100
    L[0, 0, 0, :4] = torch.tensor([0.0, 0.5, 99.5, 100.0])
    ab = (torch.rand(2, 2, 32, 32, generator=g) * 2 - 1) * 127  # mostly far outside sRGB
    clipped = C.lab_to_rgb(torch.cat([L, ab], 1))
    assert (C.rgb_to_lab(clipped)[:, :1] - L).abs().max() > 10  # naive clipping does shift L
    rgb = C.lab_to_rgb_keep_l(L, ab)
    assert rgb.shape == (2, 3, 32, 32) and rgb.min() >= 0 and rgb.max() <= 1
    lab = C.rgb_to_lab(rgb)
    assert (lab[:, :1] - L).abs().max() < 0.05
    # hue kept: where chroma is left, the (a, b) direction is the predicted one
    chroma = lab[:, 1:].norm(dim=1)
    cos = (lab[:, 1:] * ab).sum(1) / (chroma * ab.norm(dim=1)).clamp_min(1e-6)
    assert cos[chroma > 5].min() > 0.98
    # and the chroma reduction is minimal: 2% more chroma would leave the gamut
    scale = (chroma / ab.norm(dim=1)).clamp(max=1)[:, None]
    more = C.lab_to_rgb(torch.cat([L, ab * (scale * 1.02).clamp(max=1)], 1), clip=False)
    reduced = (scale < 0.95).squeeze(1) & (chroma > 5)
    outside = ((more < -1e-3) | (more > 1 + 1e-3)).any(1)
    assert outside[reduced].float().mean() > 0.95
    # written as 8 bits, L stays within 1 unit (0-100)
    q = (rgb * 255).round() / 255
    assert (C.rgb_to_lab(q)[:, :1] - L).abs().max() < 1.0


def test_conversions_in_row_bands_equal_whole_image_ones(monkeypatch):
    """Full-resolution LAB conversions run in row bands (memory): tiny bands give the same values."""
    g = torch.Generator().manual_seed(11)
    rgb = torch.rand(2, 3, 40, 48, generator=g)  # 40 x 48 = 30 x 64 pixels: bit-identical (see _bands)
    L = torch.rand(2, 1, 40, 48, generator=g) * 100
    L[0, 0, 0, :2] = torch.tensor([-3.0, 104.0])  # clamped to 0-100
    ab = (torch.rand(2, 2, 40, 48, generator=g) * 2 - 1) * 127  # mostly out of gamut: bisected
    assert C._bands(40, 48) == [(0, 40)]  # one band: the whole image at once
    whole_L, whole_rgb = C.lightness(rgb), C.lab_to_rgb_keep_l(L, ab)
    assert torch.equal(whole_L, C.rgb_to_lab(rgb)[:, :1])
    with monkeypatch.context() as m:
        m.setattr(C, "BAND_PIXELS", 1)
        assert C._bands(40, 48) == [(r, r + 4) for r in range(0, 40, 4)]  # 4 x 48 px = 3 x 64
        assert torch.equal(C.lightness(rgb), whole_L)
        assert torch.equal(C.lab_to_rgb_keep_l(L, ab), whole_rgb)
        assert torch.equal(C.lightness(rgb[:, :1]), C.rgb_to_lab(rgb[:, :1].expand(-1, 3, -1, -1))[:, :1])
    # other sizes: bands of 64 rows (29 px wide), the last one shorter; one pass may round a pow()
    # differently in the last bit, which the chroma bisection can grow to about 2^-16
    L, ab = L[:1, :, :, :29].repeat(1, 1, 4, 1), ab[:1, :, :, :29].repeat(1, 1, 4, 1)  # 160 x 29
    one_pass = C.lab_to_rgb_keep_l(L, ab)
    with monkeypatch.context() as m:
        m.setattr(C, "BAND_PIXELS", 1)
        assert C._bands(160, 29) == [(0, 64), (64, 128), (128, 160)]
        torch.testing.assert_close(C.lab_to_rgb_keep_l(L, ab), one_pass, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- the task


def test_options_are_validated():
    with pytest.raises(ConfigError, match="unknown colorize option"):
        C.ColorizeTask({"lamda_l1": 10})
    with pytest.raises(ConfigError, match="generator"):
        C.ColorizeTask({"generator": {"base_chanels": 8}})
    with pytest.raises(ConfigError, match="generator"):
        C.ColorizeTask({"generator": {"out_channels": 3}})  # fixed by the task
    with pytest.raises(ConfigError, match="load_size"):
        C.ColorizeTask({"load_size": [300, 200]})
    with pytest.raises(ConfigError, match="label_smoothing"):
        C.ColorizeTask({"gan_mode": "hinge", "label_smoothing": 0.9})
    task = C.ColorizeTask({"generator": {"base_channels": 8}})  # partial override keeps the other defaults
    assert task.options["generator"]["depth"] == 8 and task.options["generator"]["base_channels"] == 8
    # the defaults are the pix2pix recipe and merge into a valid TrainConfig
    cfg = TrainConfig()
    apply_dict(cfg, C.ColorizeTask.defaults(), "defaults")
    cfg.validate()
    assert cfg.task["lambda_l1"] == 100.0 and cfg.optim["G"].lr == 2e-4 and cfg.optim["G"].betas == (0.5, 0.999)
    assert (cfg.optim["D"].schedule, cfg.optim["D"].step_size, cfg.optim["D"].gamma) == ("step", 30, 0.1)


def test_models_follow_the_recipe():
    models = C.ColorizeTask().build_models()  # full pix2pix unet_256 + 70x70 PatchGAN
    G, D = models["G"], models["D"]
    assert G.config["in_channels"] == 1 and G.config["out_channels"] == 2 and G.depth == 8
    assert G.config["out_activation"] == "tanh" and not G.config["residual"]
    assert D.in_channels == 3 and D.receptive_field() == 70


def test_conditional_discriminator_judges_the_pair():
    task = tiny_task(label_smoothing=None)
    models = task.build_models()
    G, D = models["G"], models["D"].eval()
    seen: list[torch.Tensor] = []
    D.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    rgb = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    batch = task.prepare_batch({"target": rgb}, ctx())
    out = task.forward(G, batch, ctx())
    terms = task.discriminator_losses(batch, {"output": out["output"].detach()}, D, ctx())
    assert set(terms) == {"real", "fake"}
    real_in, fake_in = seen
    assert real_in.shape[1] == 3
    assert torch.equal(real_in[:, :1], batch["L"]) and torch.equal(fake_in[:, :1], batch["L"])
    assert torch.equal(real_in[:, 1:], batch["ab"]) and torch.allclose(fake_in[:, 1:], out["output"])
    # D's verdict depends on the condition: same colours, different L -> different output
    ab = batch["ab"]
    a = D(task.pair(batch["L"], ab))
    b = D(task.pair(batch["L"].flip(-1), ab))
    assert (a - b).abs().max() > 1e-4
    # instance noise reaches D's input in training only
    seen.clear()
    task.discriminator_losses(batch, {"output": out["output"].detach()}, D, ctx(noise=0.5))
    assert (seen[0][:, :1] - batch["L"]).abs().mean() > 0.1
    g_terms = task.generator_losses(batch, out, D, ctx())
    assert set(g_terms) == {"adv", "l1"}
    assert torch.isclose(g_terms["l1"], 100 * (out["output"] - batch["ab"]).abs().mean())


def test_visuals_are_gray_colorized_target_rgb():
    task = tiny_task()
    G = task.build_models()["G"]
    rgb = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    batch = task.prepare_batch({"target": rgb}, ctx())
    vis = task.visuals(batch, task.forward(G, batch, ctx()))
    assert set(vis) == {"input", "output", "target"}
    assert all(v.shape == (2, 3, 32, 32) for v in vis.values())
    gray = vis["input"]
    assert (gray.max(1).values - gray.min(1).values).max() < 2e-3  # neutral
    assert (C.rgb_to_lab(gray)[:, :1] - C.rgb_to_lab(rgb)[:, :1]).abs().max() < 0.05


# ----------------------------------------------------------------------------- data


def _photo_folder(root: Path, n: int = 4, size: tuple[int, int] = (40, 56)) -> Path:
    """Colour 'photos' whose hue is a function of brightness (learnable from L alone)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = size
    for i in range(n):
        y, x = np.mgrid[0:h, 0:w]
        t = (np.sin(x / (3 + i) + rng.uniform(0, 6)) * np.cos(y / 5) + 1) / 2  # brightness pattern
        rgb = np.stack([0.15 + 0.8 * t, 0.2 + 0.5 * t, 0.8 - 0.7 * t], -1)  # dark = blue, bright = orange
        Image.fromarray((rgb * 255).round().astype(np.uint8)).save(root / f"photo{i}.png")
    return root


def test_photo_crops_scale_flip_gray_skipped_and_split(tmp_path, caplog):
    root = _photo_folder(tmp_path / "photos", n=3)
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(root / "gray.png")
    paths = sorted(root.glob("*.png"))
    train, val = C.split_photos(paths, 1)
    assert len(val) == 1 and set(train) | set(val) == set(paths) and not set(train) & set(val)
    assert C.split_photos(paths, 1) == (train, val)
    with pytest.raises(ConfigError, match="val_images"):
        C.split_photos(paths, 4)
    ds = C.PhotoCrops(paths, 32, [32, 48], crops_per_image=2)
    assert len(ds.images) == 3 and root / "gray.png" in ds.skipped and len(ds) == 6
    torch.manual_seed(0)
    items = [ds[i]["target"] for i in range(6)]
    assert all(t.shape == (3, 32, 32) and 0 <= t.min() and t.max() <= 1 for t in items)
    fixed = C.PhotoCrops(paths, 32, 40, random=False)
    assert torch.equal(fixed[0]["target"], fixed[0]["target"])
    with pytest.raises(ConfigError, match="load_size"):
        C.PhotoCrops(paths, 32, 24)
    with pytest.raises(ConfigError, match="none of"):
        C.PhotoCrops([root / "gray.png"], 32, 40)


# ----------------------------------------------------------------------------- training


def test_tiny_model_loss_falls_through_the_trainer(tmp_path):
    from restore.engine.trainer import Trainer

    root = _photo_folder(tmp_path / "photos", n=4)
    task = tiny_task(crops_per_image=4, lambda_adv=0.1)
    cfg = TrainConfig()
    apply_dict(cfg, C.ColorizeTask.defaults(), "defaults")
    apply_dict(cfg, {
        "data": str(root), "out": str(tmp_path / "run"), "steps": 40, "batch_size": 4, "num_workers": 0,
        "device": "cpu", "progress": False, "val_every": 0, "ckpt_every": 0, "image_every": 0, "log_every": 0,
        "ema_decay": 0.9, "d_noise_std": 0.05, "d_noise_anneal_steps": 20,
        "optim": {"G": {"lr": 3e-3, "schedule": "constant"}, "D": {"lr": 1e-3, "schedule": "constant"}},
    }, "test")
    train, val = task.build_datasets(str(root))
    trainer = Trainer(task, cfg, train, val)
    l1: list[float] = []
    while len(l1) < 40:
        for raw in trainer.loader:
            host = trainer.train_step(raw)
            l1.append(host["loss/G/l1"])
            assert math.isfinite(host["loss/D/total"]) and 0 <= host["D/real_mean"] <= 1
    first, last = np.mean(l1[:5]), np.mean(l1[-5:])
    assert last < 0.6 * first, (first, last)
    val_metrics = trainer.validate()
    assert set(val_metrics) == {"val/psnr", "val/ssim"}
    stem = trainer.export(tmp_path / "w" / "colorize")
    model, card = W.load(stem)
    assert card["task"] == "colorize" and card["corruption"] == "gray" and card["work_size"] == 24
    assert card["color"]["ab_scale"] == 110.0 and card["discriminator"]["config"]["in_channels"] == 3
    # the learned mapping colorizes a held-out image better than gray does
    model.eval()
    rgb = val[0]["target"][None]
    out = Pipeline(model, card, task="colorize").run(C.lightness(rgb).div(100).clamp(0, 1)).image
    gray_err = C.rgb_to_lab(rgb)[:, 1:].abs().mean()
    model_err = (C.rgb_to_lab(out)[:, 1:] - C.rgb_to_lab(rgb)[:, 1:]).abs().mean()
    assert out.shape == (1, 3, 32, 32) and model_err < gray_err


def test_train_script_rejects_bad_options(tmp_path, capsys):
    from restore.engine.cli import main

    root = _photo_folder(tmp_path / "photos", n=2)
    rc = main(C.ColorizeTask, ["--data", str(root), "--out", str(tmp_path / "r"), "--set", "task.lambda_ll=1"])
    assert rc == 2 and "lambda_ll" in capsys.readouterr().err
    rc = main(C.ColorizeTask, ["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "no such folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- restoring


@pytest.fixture()
def tiny_model():
    torch.manual_seed(5)
    task = tiny_task()
    G = task.build_models()["G"]
    # a stronger final layer so predictions are saturated (exercises the gamut mapping)
    with torch.no_grad():
        for p in G.out_conv.parameters():
            p.mul_(20)
    G.eval()
    card = {**task.model_card(), "name": "tiny"}
    return G, card


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(17, 29), (5, 3), (70, 41)])
def test_pipeline_any_size_keeps_l(tiny_model, channels, size):
    G, card = tiny_model
    x = torch.rand(2, channels, *size, generator=torch.Generator().manual_seed(6))
    out = Pipeline(G, card, task="colorize").run(x, tile=0).image
    assert out.shape == (2, 3, *size) and out.min() >= 0 and out.max() <= 1
    L_in = C.lightness(x)
    q = (out * 255).round() / 255
    assert (C.rgb_to_lab(q)[:, :1] - L_in).abs().max() < 1.0
    assert (out.max(1).values - out.min(1).values).max() > 0.05  # it did add colour


def test_pipeline_in_row_bands_equals_one_pass(tiny_model, monkeypatch):
    """The restorer converts its LAB buffer to RGB in place, band by band: the same result as one pass."""
    G, card = tiny_model
    opts = {"saturation": 10.0}
    restorer = Pipeline(G, card, task="colorize").restorer
    for x in (torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(12)),
              torch.rand(1, 1, 64, 72, generator=torch.Generator().manual_seed(13))):
        L = C.lightness(x)
        work = restorer.prepare(x, None, restorer.options_type())
        y = restorer.network(work, restorer.options_type())
        ab = torch.cat([band for _, _, band in restorer.ab_rows(y, L.shape[-2:])], dim=2)  # upscaled in row bands
        torch.testing.assert_close(ab, restorer.full_size_ab(y, L.shape[-2:]), atol=1e-3, rtol=0)  # = one pass
        lab = torch.cat([L, ab * 10.0], 1)
        assert C._out_of_gamut(C.lab_to_rgb(lab, clip=False), C.KEEP_L_TOL).float().mean() > 0.1  # bisected
        whole = Pipeline(G, card, task="colorize").run(x, **opts).image
        assert torch.equal(whole, C.lab_to_rgb_keep_l(lab[:, :1], lab[:, 1:]))  # in place = into a new tensor
        assert len(C._bands(*x.shape[-2:])) == 1
        with monkeypatch.context() as m:
            m.setattr(C, "BAND_PIXELS", 1)
            assert len(C._bands(*x.shape[-2:])) == x.shape[-2] // 8  # 8 rows of 40 / 72 px: multiples of 64
            assert torch.equal(Pipeline(G, card, task="colorize").run(x, **opts).image, whole)


def test_pipeline_colour_input_is_made_gray_first(tiny_model):
    G, card = tiny_model
    rgb = torch.rand(1, 3, 20, 30, generator=torch.Generator().manual_seed(7))
    L = C.lightness(rgb)
    gray = C.lab_to_rgb(torch.cat([L, torch.zeros(1, 2, 20, 30)], 1))  # same L, no colour
    a = Pipeline(G, card, task="colorize").run(rgb).image
    b = Pipeline(G, card, task="colorize").run(gray).image
    assert (a - b).abs().max() < 2e-3


def test_pipeline_tiles_and_options(tiny_model):
    G, card = tiny_model
    x = torch.rand(1, 1, 50, 90, generator=torch.Generator().manual_seed(8))
    whole = Pipeline(G, card, task="colorize").run(x, tile=0).image
    tiled = Pipeline(G, card, task="colorize").run(x, tile=16).image  # working size 24x43 -> several tiles
    assert tiled.shape == whole.shape
    assert (C.rgb_to_lab(tiled)[:, :1] - C.lightness(x)).abs().max() < 0.05
    no_colour = Pipeline(G, card, task="colorize").run(x, saturation=0.0).image
    assert (no_colour.max(1).values - no_colour.min(1).values).max() < 2e-3
    bigger = Pipeline(G, card, task="colorize").run(x, work_size=48).image
    assert bigger.shape == whole.shape and not torch.allclose(bigger, whole)
    assert working_size(50, 90, 24, 64) == (24, 43) and working_size(10, 1000, 24, 64) == (1, 64)
    with pytest.raises(ValueError, match="channels"):
        Pipeline(G, card, task="colorize").run(torch.rand(1, 5, 8, 8)).image
    # --ensemble: the a/b of mirrored copies averaged, at every tile; L is still the input's
    for tile in (0, 16):
        ens = Pipeline(G, card, task="colorize").run(x, tile=tile, ensemble="flip").image
        assert ens.shape == whole.shape and not torch.allclose(ens, whole, atol=1e-3)
        assert (C.rgb_to_lab(ens)[:, :1] - C.lightness(x)).abs().max() < 0.05
    mirrored = Pipeline(G, card, task="colorize").run(x.flip(-1), ensemble="flip").image
    torch.testing.assert_close(mirrored.flip(-1), Pipeline(G, card, task="colorize").run(x, ensemble="flip").image, atol=1e-4, rtol=0)


def test_restore_colorize_command_on_files(tiny_model, tmp_path, monkeypatch, capsys):
    G, card = tiny_model
    wdir = tmp_path / "weights"
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(wdir))
    W.save(wdir / cli.DEFAULT_WEIGHTS["colorize"], G, {k: v for k, v in card.items() if k != "name"})
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    rng = np.random.default_rng(9)
    Image.fromarray(rng.integers(0, 256, (21, 33), dtype=np.uint8)).save(inp / "gray8.png")
    Image.fromarray(rng.integers(0, 256, (24, 31, 3), dtype=np.uint8)).save(inp / "rgb8.png")
    Image.fromarray(rng.integers(0, 256, (16, 19, 4), dtype=np.uint8), "RGBA").save(inp / "rgba.png")
    cv2.imwrite(str(inp / "gray16.png"), rng.integers(0, 65536, (15, 13), dtype=np.uint16))
    cv2.imwrite(str(inp / "rgb16.png"), rng.integers(0, 65536, (17, 23, 3), dtype=np.uint16))
    rc = cli.main(["colorize", str(inp), str(out), "--device", "cpu"])  # the default weights: colorize-squeezenet
    assert rc == 0, capsys.readouterr().err
    for name, channels, dtype in [("gray8", 3, np.uint8), ("rgb8", 3, np.uint8), ("rgba", 4, np.uint8),
                                  ("gray16", 3, np.uint16), ("rgb16", 3, np.uint16)]:
        src = cv2.imread(str(inp / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        got = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert got.shape[:2] == src.shape[:2] and got.dtype == dtype, name
        assert got.shape[2] == channels, name
        src_rgb = src if src.ndim == 2 else cv2.cvtColor(src, cv2.COLOR_BGRA2RGBA if src.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        got_rgb = cv2.cvtColor(got, cv2.COLOR_BGRA2RGBA if channels == 4 else cv2.COLOR_BGR2RGB)
        assert np.abs(l_of_8bit(got_rgb) - l_of_8bit(src_rgb)).max() < 1.0, name
        if channels == 4:
            assert np.array_equal(got_rgb[..., 3], src_rgb[..., 3])
    # task flags reach the restorer: saturation 0 writes neutral gray
    rc = cli.main(["colorize", str(inp / "rgb8.png"), str(tmp_path / "g.png"), "--device", "cpu", "--saturation", "0"])
    assert rc == 0
    g = np.asarray(Image.open(tmp_path / "g.png")).astype(int)
    assert (g.max(2) - g.min(2)).max() <= 1


# ----------------------------------------------------------------------------- evaluation targets


def test_eval_checks_issue_targets():
    from eval.colorize import check_targets, target_notes

    def rows(method, psnr, ab, cf):
        return [{"image": f"im{i}", "method": method, "psnr": psnr + d, "ab_mae": ab + d, "colorfulness": cf + d,
                 "colorfulness_gt": 50.0 + d} for i, d in enumerate((-1.0, 1.0))]

    base = rows("grayscale", 17.0, 24.0, 0.0)
    good = check_targets(base + rows("m", 17.5, 21.0, 31.0), "m")
    assert good["all_pass"] and good["images"] == 2
    assert good["checks"]["ab_mae"]["reduction"] == pytest.approx(0.125)
    assert good["checks"]["colorfulness"]["fraction"] == pytest.approx(0.62)
    bad = check_targets(base + rows("m", 16.9, 22.0, 29.0), "m")
    assert not any(c["pass"] for c in bad["checks"].values())
    assert "NOT met" in target_notes(bad)[0]


def test_eval_card_entry_records_model_beside_gray():
    import argparse

    from eval.colorize import card_entry, check_targets

    rows = [{"image": f"im{i}", "method": m, "psnr": p, "ssim": 0.8, "ab_mae": ab, "colorfulness": cf,
             "colorfulness_gt": 50.0, "colorfulness_ratio": cf / 50.0}
            for i in range(2) for m, p, ab, cf in (("grayscale", 17.0, 24.0, 0.0), ("m", 17.4, 21.0, 35.0))]
    args = argparse.Namespace(spec="gray", command="python eval/colorize.py --weights m --update-card")
    entry = card_entry(rows, "m", check_targets(rows, "m"), args, Path("out"))
    assert entry["images"] == 2 and entry["model"]["psnr"] == 17.4 and entry["grayscale_baseline"]["ab_mae"] == 24.0
    assert entry["ab_mae_reduction_vs_gray"] == pytest.approx(0.125)
    assert entry["colorfulness_fraction_of_gt"] == pytest.approx(0.7)
    assert entry["targets_issue7"] == {"psnr": True, "ab_mae": True, "colorfulness": True}
    assert entry["command"] == args.command


# ----------------------------------------------------------------------------- shipped weights


def test_shipped_colorize_weights_calibration():
    """The shipped CPU model on scikit-image's coffee photo: recorded a/b MAE (kornia CIELAB) 14.71,
    the grayscale floor 29.74; L of the input kept."""
    try:
        model, card = W.load(Path(__file__).resolve().parents[1] / "weights" / "colorize.json")
    except W.WeightsError as e:
        pytest.skip(f"weights/colorize not shipped in this checkout: {e}")
    from skimage import data

    assert card["task"] == "colorize" and card["metrics_command"].startswith("python eval/colorize.py")
    model.eval()
    x = torch.from_numpy(data.coffee().copy()).permute(2, 0, 1)[None].float() / 255
    gray = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
    with torch.no_grad():
        out = Pipeline(model, card, task="colorize").run(gray).image
    lab_out, lab_gt = C.rgb_to_lab(out), C.rgb_to_lab(x)
    assert (lab_out[:, 1:] - lab_gt[:, 1:]).abs().mean().item() == pytest.approx(14.71, abs=0.1)
    assert lab_gt[:, 1:].abs().mean().item() == pytest.approx(29.74, abs=0.01)
    assert (lab_out[:, :1] - C.lightness(gray)).abs().max() < 0.05
