"""The photo denoiser (issue 6): restoring API, CLI with gray/RGBA files, tiling, training through the Trainer.

Everything uses tiny models and images so the file runs in seconds on a shared CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from restore import cli
from restore import weights as W
from restore.corrupt import RandomStreams
from restore.data import write_idx
from restore.engine.config import TrainConfig, apply_dict
from restore.engine.trainer import Trainer
from restore.models.unet import UNet
from restore.pipeline import Pipeline
from restore.tasks.denoise import DenoiseConfigError, DenoiseTask

TINY_UNET = {"base_channels": 4, "depth": 2, "convs_per_level": 0}
TINY_D = {"base_channels": 4, "n_layers": 2}


def _tiny_unet(channels: int = 3, seed: int = 0) -> UNet:
    """A tiny residual UNet whose output is NOT the identity (the zero-initialised last conv is randomised)."""
    torch.manual_seed(seed)
    m = UNet(channels, channels, **TINY_UNET)
    last = m._last_conv()
    torch.nn.init.normal_(last.weight, std=0.05)
    # give BatchNorm non-trivial running statistics, so eval mode is a real affine map
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(2, channels, 32, 32))
    return m.eval()


def _card(model: UNet) -> dict:
    return {"task": "denoise", "corruption": "gaussian:sigma=25", "config": model.config}


def _smooth_photo(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like RGB image: smooth gradients + a few edges (denoisable, unlike white noise)."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([np.sin(xx / (6 + 4 * c) + r.uniform(0, 6)) * np.cos(yy / (9 + 3 * c)) for c in range(3)], -1)
    img = 0.5 + 0.35 * img
    img[h // 3 : h // 2, w // 4 : w // 2] += 0.2 * r.uniform(-1, 1, 3)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


# --------------------------------------------------------------------------- the restore pipeline


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(1, 1), (17, 5), (33, 70)])
def test_pipeline_keeps_size_and_channels(channels: int, size: tuple[int, int]) -> None:
    model = _tiny_unet(3)
    x = torch.rand(2, channels, *size)
    with torch.no_grad():
        out = Pipeline(model, _card(model), task="denoise").run(x, tile=16).image
    assert out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.isfinite(out).all()


def test_gray_input_through_colour_model_equals_repeated_rgb() -> None:
    model = _tiny_unet(3)
    gray = torch.rand(1, 1, 20, 24)  # a multiple of the UNet's stride: no padding on either path
    with torch.no_grad():
        out_gray = Pipeline(model, _card(model), task="denoise").run(gray, tile=0).image
        expected = model(gray.expand(1, 3, 20, 24).clone()).mean(1, keepdim=True).clamp(0, 1)
    torch.testing.assert_close(out_gray, expected, atol=1e-6, rtol=0)


def test_gray_model_denoises_colour_channels_independently() -> None:
    model = _tiny_unet(1)
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        out = Pipeline(model, _card(model), task="denoise").run(x, tile=0).image
        per_channel = torch.cat([model(x[:, c : c + 1]).clamp(0, 1) for c in range(3)], dim=1)
    torch.testing.assert_close(out, per_channel, atol=1e-6, rtol=0)


def test_tiled_equals_untiled_on_a_small_model() -> None:
    model = _tiny_unet(3)
    photo = torch.from_numpy(_smooth_photo(75, 101, 3)).permute(2, 0, 1)[None].float() / 255
    noisy = (photo + 0.1 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        whole = Pipeline(model, _card(model), task="denoise").run(noisy, tile=0).image
        tiles = Pipeline(model, _card(model), task="denoise").run(noisy, tile=40).image
    diff = (whole - tiles).abs()
    assert float(diff.mean()) < 2e-3, float(diff.mean())
    # Tiles sit on the UNet's stride grid, so inside the image the outputs differ only where a tile
    # border cuts the receptive field, and the overlap ramps blend that away. The last rows/columns
    # are excluded from the strict bound: there the whole image is padded to the stride (75 -> 76)
    # and the tiled one further (to align its tiles), so their padded context legitimately differs.
    inner = diff[..., : 75 - 8, : 101 - 8]
    assert float(inner.max()) < 2e-2, float(inner.max())
    assert float(diff.max()) < 0.15, float(diff.max())
    # the residual model changes the image (so the comparison above is not identity vs identity)
    assert float((whole - noisy).abs().mean()) > 1e-3


def test_self_ensemble_option_makes_the_restorer_equivariant() -> None:
    """``ensemble="x8"`` through the pipeline: a different estimate than one pass, and one that commutes
    with rotations and mirrors (16x24 is a multiple of the UNet's stride, so no padding breaks symmetry)."""
    model = _tiny_unet(3)
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(4))
    x8 = {"ensemble": "x8"}
    with torch.no_grad():
        one = Pipeline(model, _card(model), task="denoise").run(x, tile=0).image
        avg = Pipeline(model, _card(model), task="denoise").run(x, tile=0, **x8).image
        rot = Pipeline(model, _card(model), task="denoise").run(torch.rot90(x, 1, dims=(-2, -1)), tile=0, **x8).image
        tiles = Pipeline(model, _card(model), task="denoise").run(x, tile=8, **x8).image
    assert avg.shape == x.shape and float((avg - one).abs().max()) > 1e-4
    torch.testing.assert_close(rot, torch.rot90(avg, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    assert float((tiles - avg).abs().mean()) < 5e-3  # tiled like the plain model (see the tiling test)
    with pytest.raises(ValueError, match="--ensemble"):
        Pipeline(model, _card(model), task="denoise").run(x, tile=0, ensemble="x4").image
    # a model that learnt one pose (Fashion-MNIST) gets a warning: its mirrored/rotated estimates are worse
    fashion = {**_card(model), "dataset": "fashion-mnist", "name": "fm"}
    with pytest.warns(UserWarning, match="share one pose"):
        Pipeline(model, fashion, task="denoise").run(x, tile=0, **x8).image


def test_pipeline_rejects_bad_input() -> None:
    model = _tiny_unet(3)
    with pytest.raises(ValueError, match=r"1 \(gray\) or 3 \(RGB\) channels"):
        Pipeline(model, _card(model), task="denoise").run(torch.rand(1, 2, 8, 8), tile=0).image
    with pytest.raises(ValueError, match="NCHW"):
        Pipeline(model, _card(model), task="denoise").run(torch.rand(3, 8, 8), tile=0).image


# --------------------------------------------------------------------------- the `restore denoise` command


def test_cli_denoise_gray_and_rgba_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wdir = tmp_path / "weights"
    model = _tiny_unet(3)
    W.save(wdir / "tiny-denoise", model, {"task": "denoise", "corruption": "gaussian:sigma=25"})
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(wdir))
    src = tmp_path / "in"
    src.mkdir()
    r = np.random.default_rng(0)
    gray = r.integers(0, 256, (23, 37), dtype=np.uint8)
    rgba = np.concatenate([_smooth_photo(19, 45, 1), r.integers(0, 256, (19, 45, 1), dtype=np.uint8)], -1)
    Image.fromarray(gray).save(src / "gray.png")
    Image.fromarray(rgba, "RGBA").save(src / "rgba.png")

    code = cli.main(["denoise", str(src), str(tmp_path / "out"), "--weights", "tiny-denoise", "--device", "cpu",
                     "--tile", "16"])
    assert code == 0
    g = Image.open(tmp_path / "out" / "gray.png")
    assert g.mode == "L" and g.size == (37, 23)
    a = Image.open(tmp_path / "out" / "rgba.png")
    assert a.mode == "RGBA" and a.size == (45, 19)
    out_rgba = np.asarray(a)
    np.testing.assert_array_equal(out_rgba[..., 3], rgba[..., 3])  # alpha passes through untouched
    assert np.abs(out_rgba[..., :3].astype(int) - rgba[..., :3]).max() > 0  # and the colour was processed

    # --ensemble flip: same files, same sizes, a (slightly) different estimate
    code = cli.main(["denoise", str(src), str(tmp_path / "flip"), "--weights", "tiny-denoise", "--device", "cpu",
                     "--tile", "16", "--ensemble", "flip"])
    assert code == 0
    flip = np.asarray(Image.open(tmp_path / "flip" / "rgba.png"))
    assert flip.shape == out_rgba.shape and np.abs(flip.astype(int) - out_rgba).max() > 0
    assert cli.main(["denoise", str(src), str(tmp_path / "bad"), "--weights", "tiny-denoise", "--ensemble", "x4"]) == 2
    assert not (tmp_path / "bad").exists()


def test_default_weights_name() -> None:
    assert cli.DEFAULT_WEIGHTS["denoise"] == "denoise-gaussian"


# --------------------------------------------------------------------------- task options


def test_l1_only_builds_no_discriminator() -> None:
    task = DenoiseTask({"lambda_adv": 0.0, "unet": TINY_UNET, "patch_size": 32})
    models = task.build_models()
    assert set(models) == {"G"}
    assert task.objective("G") == ("l1",) and task.objective("D") == ()
    gan = DenoiseTask({"unet": TINY_UNET, "patchgan": TINY_D, "patch_size": 32})
    assert set(gan.build_models()) == {"G", "D"}
    assert gan.objective("G") == ("l1", "adv")


def test_mse_term_replaces_or_joins_l1() -> None:
    """lambda_mse trains towards the posterior mean (PSNR-optimal); a zero weight drops its term."""
    mse = DenoiseTask({"lambda_adv": 0.0, "lambda_l1": 0.0, "lambda_mse": 1.0, "unet": TINY_UNET, "patch_size": 32})
    assert mse.objective("G") == ("mse",)
    both = DenoiseTask({"lambda_adv": 0.0, "lambda_mse": 0.5, "unet": TINY_UNET, "patch_size": 32})
    assert both.objective("G") == ("l1", "mse")
    target = torch.zeros(1, 3, 4, 4)
    output = torch.full_like(target, 0.5)
    terms = both.generator_losses({"target": target}, {"output": output}, None, None)
    assert terms["l1"].item() == pytest.approx(0.5) and terms["mse"].item() == pytest.approx(0.5 * 0.25)
    assert mse.model_card()["losses"]["lambda_mse"] == 1.0
    only_psnr = DenoiseTask({"lambda_adv": 0.0, "lambda_l1": 0.0, "lambda_psnr": 0.5, "unet": TINY_UNET,
                             "patch_size": 32})
    assert only_psnr.objective("G") == ("psnr",)
    terms = only_psnr.generator_losses({"target": target}, {"output": torch.full_like(target, 0.1)}, None, None)
    assert terms["psnr"].item() == pytest.approx(0.5 * -20.0, abs=1e-4)
    assert only_psnr.model_card()["losses"]["lambda_psnr"] == 0.5
    with pytest.raises(DenoiseConfigError, match="lambda_l1.*lambda_psnr are all 0"):
        DenoiseTask({"lambda_l1": 0.0, "lambda_mse": 0.0})


def test_bad_options_raise_config_errors() -> None:
    with pytest.raises(DenoiseConfigError, match="task.spec"):
        DenoiseTask({"spec": "gausian:sigma=25"})
    with pytest.raises(DenoiseConfigError, match="instance"):
        DenoiseTask({"unet": {"norm": "instance"}})
    with pytest.raises(DenoiseConfigError, match="lambda_adv"):
        DenoiseTask({"lambda_adv": -1})
    with pytest.raises(DenoiseConfigError, match="patch_size"):
        DenoiseTask({"patch_size": 16, "unet": TINY_UNET}).build_models()  # 70x70 PatchGAN needs >= 24 px
    for bad in ([0.5, 2], [3, 2], [1], "2"):
        with pytest.raises(DenoiseConfigError, match="task.scale_range"):
            DenoiseTask({"scale_range": bad})
    with pytest.raises(DenoiseConfigError, match="task.scale_range.*Fashion-MNIST"):
        DenoiseTask({"dataset": "fashion-mnist", "scale_range": [1, 2]})


def test_perceptual_switches_off_without_vgg_weights(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="restore.engine"):
        task = DenoiseTask({"lambda_perc": 0.1, "vgg_weights": str(tmp_path / "vgg16-397923af.pth"), "unet": TINY_UNET})
    assert not task.perc_enabled and "perc" not in task.objective("G")
    assert "perceptual term switched off" in caplog.text and "vgg16-397923af.pth" in caplog.text
    assert task.model_card()["losses"]["lambda_perc"] == 0.0


# --------------------------------------------------------------------------- training through the real Trainer


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(4):
        Image.fromarray(_smooth_photo(48, 56, i)).save(root / f"p{i}.png")
    return root


def test_scale_range_downscales_training_crops_only(photo_dir: Path) -> None:
    import torch.nn.functional as F

    from restore.engine.task import StepContext

    task = DenoiseTask({"scale_range": [2, 3], "patch_size": 12, "val_patch_size": 16, "val_images": 1,
                        "lambda_adv": 0.0, "unet": TINY_UNET})
    train, val = task.build_datasets(str(photo_dir))
    assert train[0]["target"].shape == (3, 36, 36)  # loaded at patch x the largest scale
    crops = torch.stack([train[i]["target"] for i in range(4)])
    ctx = StepContext(step=0, epoch=0, device=torch.device("cpu"), streams=RandomStreams(3))
    batch = task.prepare_batch({"target": crops.clone()}, ctx)
    assert batch["target"].shape == batch["input"].shape == (4, 3, 12, 12)
    # one scale for the batch, a square crop of side 24-36 px, bicubic (antialiased) down to 12 px
    g = torch.Generator().manual_seed(3)
    u = torch.rand(3, generator=g).tolist()
    side = round(12 * (2 + u[0]))
    y, x = int(u[1] * (36 - side + 1)), int(u[2] * (36 - side + 1))
    want = F.interpolate(crops[..., y:y + side, x:x + side], size=(12, 12), mode="bicubic", antialias=True,
                         align_corners=False).clamp(0, 1)
    torch.testing.assert_close(batch["target"], want)
    # validation crops keep their native scale; the default range is the identity
    vctx = StepContext(step=0, epoch=0, device=torch.device("cpu"), streams=RandomStreams(3),
                       training=False)
    vcrops = torch.stack([val[i]["target"] for i in range(2)])
    torch.testing.assert_close(task.prepare_batch({"target": vcrops.clone()}, vctx)["target"], vcrops)
    plain = DenoiseTask({"patch_size": 12, "lambda_adv": 0.0, "unet": TINY_UNET})
    torch.testing.assert_close(plain.rescale(crops[..., :12, :12], torch.Generator()), crops[..., :12, :12])


def _trainer(task: DenoiseTask, data: str, out: Path, steps: int, workers: int = 0) -> Trainer:
    cfg = TrainConfig()
    apply_dict(cfg, DenoiseTask.defaults(), "defaults")
    apply_dict(cfg, {
        "out": str(out), "data": data, "steps": steps, "batch_size": 4, "num_workers": workers, "device": "cpu",
        "progress": False, "ema": False, "val_every": 0, "image_every": 0, "ckpt_every": 0, "log_every": 0,
        "d_noise_std": 0.05, "d_noise_anneal_steps": steps,
        "optim": {"G": {"lr": 4e-3, "warmup": 0, "schedule": "constant", "grad_clip": 0.0},
                  "D": {"lr": 1e-3, "schedule": "constant"}},
    }, "test")
    train, val = task.build_datasets(data)
    return Trainer(task, cfg, train, val)


@pytest.mark.parametrize("lambda_adv", [0.01, 0.0], ids=["gan", "l1-only"])
def test_tiny_model_learns_through_the_trainer(photo_dir: Path, tmp_path: Path, lambda_adv: float) -> None:
    task = DenoiseTask({
        "spec": "gaussian:sigma=50", "patch_size": 32, "patches_per_image": 4, "val_images": 1,
        "val_patch_size": 32, "val_patches_per_image": 2, "unet": {**TINY_UNET, "base_channels": 8, "norm": "none"},
        "patchgan": TINY_D, "lambda_adv": lambda_adv,
    })
    trainer = _trainer(task, str(photo_dir), tmp_path / "run", steps=24)
    assert trainer.has_d == (lambda_adv > 0)
    before = trainer.validate()["val/psnr"]  # the residual UNet starts as the identity: PSNR of the noisy input
    losses: list[float] = []
    scalars: list[dict] = []
    step = trainer.train_step

    def recording(raw):
        host = step(raw)
        losses.append(host["loss/G/l1"])
        scalars.append(host)
        return host

    trainer.train_step = recording  # type: ignore[method-assign]
    trainer.fit()
    trainer.logger.close()
    after = trainer.last_val["val/psnr"]
    assert len(losses) == 24
    assert np.mean(losses[-6:]) < 0.85 * np.mean(losses[:6]), losses
    assert after > before + 1.0, (before, after)
    if lambda_adv > 0:
        assert {"D/real_mean", "D/fake_mean", "loss/D/real", "loss/D/fake", "loss/G/adv"} <= set(scalars[-1])
        assert 0.0 < scalars[-1]["D/real_mean"] < 1.0
    else:
        assert not any(k.startswith(("loss/D", "D/", "loss/G/adv")) for k in scalars[-1])


def test_resume_with_loader_workers_is_exact(photo_dir: Path, tmp_path: Path) -> None:
    """Random crops are seeded per (run seed, epoch, item), not by worker RNGs that restart on resume."""
    def task() -> DenoiseTask:
        return DenoiseTask({"spec": "gaussian:sigma=25", "patch_size": 16, "patches_per_image": 8, "val_images": 1,
                            "val_patch_size": 16, "val_patches_per_image": 1, "unet": TINY_UNET, "lambda_adv": 0.0})

    straight = _trainer(task(), str(photo_dir), tmp_path / "a", steps=5, workers=2)
    straight.fit()
    _trainer(task(), str(photo_dir), tmp_path / "b", steps=2, workers=2).fit()  # stops mid-epoch (24 crops, 6 steps per epoch)
    resumed = _trainer(task(), str(photo_dir), tmp_path / "b", steps=5, workers=2)
    resumed.fit(resume=True)
    for (name, a), (_, b) in zip(straight.models["G"].named_parameters(), resumed.models["G"].named_parameters()):
        assert torch.equal(a, b), name


def test_validation_split_holds_back_photos(photo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import restore.io as io_mod  # restore.data and restore.tasks.common call rio.read_image on the package

    reads: list[str] = []
    real = io_mod.read_image
    monkeypatch.setattr(io_mod, "read_image", lambda path, *a, **k: reads.append(Path(path).name) or real(path, *a, **k))
    task = DenoiseTask({"patch_size": 32, "patches_per_image": 3, "val_images": 1, "val_patches_per_image": 2,
                        "val_patch_size": 32, "unet": TINY_UNET})
    train, val = task.build_datasets(str(photo_dir))
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 4  # cache: each photo decoded once, validation too
    assert len(train) == 3 * 3 and len(val) == 2
    info = task.model_card()["data_split"]
    assert len(info["train_images"]) == 3 and len(info["val_images"]) == 1
    assert not set(info["train_images"]) & set(info["val_images"])
    assert train[0]["target"].shape == (3, 32, 32)


@pytest.mark.parametrize("cache", [True, False])
def test_unreadable_training_photos_are_skipped(tmp_path: Path, cache: bool, caplog: pytest.LogCaptureFixture) -> None:
    """One bad file among the photos must not stop training (each photo is its own dataset, with no fallback)."""
    from restore.engine.config import ConfigError

    for i in range(3):
        Image.fromarray(_smooth_photo(40, 40, i)).save(tmp_path / f"p{i}.png")
    (tmp_path / "empty.png").write_bytes(b"")
    full = (tmp_path / "p0.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(full[: len(full) // 2])
    task = DenoiseTask({"patch_size": 32, "patches_per_image": 2, "val_images": 1, "val_patches_per_image": 1,
                        "val_patch_size": 32, "unet": TINY_UNET, "cache": cache})
    with caplog.at_level("WARNING"):
        train, val = task.build_datasets(str(tmp_path))
    assert len(train) == 2 * 2 and len(val) == 1
    assert [train[i]["target"].shape for i in range(len(train))] == [(3, 32, 32)] * 4
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert "empty.png" in skipped and "trunc.png" in skipped
    names = task.model_card()["data_split"]
    assert "empty.png" not in names["train_images"] + names["val_images"]
    for good in tmp_path.glob("p*.png"):
        good.unlink()
    with pytest.raises(ConfigError, match="none of the 2 image"):
        task.build_datasets(str(tmp_path))


def test_fashion_mnist_mode(tmp_path: Path) -> None:
    r = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", r.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", r.integers(0, 10, (40,), dtype=np.uint8))
    task = DenoiseTask({"dataset": "fashion-mnist", "spec": "gaussian:sigma=114.75", "val_size": 8,
                        "lambda_adv": 0.0, "unet": TINY_UNET})
    train, val = task.build_datasets(str(tmp_path))
    assert len(train) == 32 and len(val) == 8
    G = task.build_models()["G"]
    assert G.in_channels == 1
    from restore.engine.task import StepContext

    ctx = StepContext(step=0, epoch=0, device=torch.device("cpu"), streams=RandomStreams(0))
    batch = task.prepare_batch({"target": torch.stack([train[i]["target"] for i in range(4)])}, ctx)
    assert batch["input"].shape == (4, 1, 28, 28)
    # 8-bit quantised, clipped noisy input with the requested sigma recorded per image
    torch.testing.assert_close(batch["input"] * 255, (batch["input"] * 255).round())
    torch.testing.assert_close(batch["sigma"], torch.full((4,), 114.75))
    assert task.model_card()["corruption"].startswith("gaussian:sigma=114.75")


# --------------------------------------------------------------------------- demo and evaluation


def test_demo_panels_for_a_fashion_card() -> None:
    model = _tiny_unet(1)
    card = {**_card(model), "dataset": "fashion-mnist", "corruption": "gaussian:sigma=114.75"}
    panels = Pipeline(model, card).demo(torch.rand(1, 3, 40, 52), seed=3)
    assert [name for name, _ in panels] == ["input", "restored", "target"]
    shapes = {tuple(t.shape) for _, t in panels}
    assert len(shapes) == 1
    try:
        from restore.data import load_idx_split

        load_idx_split(None, "test")
    except (OSError, ValueError):  # no Fashion-MNIST here: the photo stands in, per channel
        assert shapes == {(1, 3, 40, 52)}
    else:  # 8 test images, x4 nearest, stacked in one column
        assert shapes == {(1, 1, 8 * 28 * 4, 28 * 4)}


def test_demo_honours_the_tile_flag() -> None:
    """``restore demo --tile N`` reaches the task's demo: a photo card restores the photo in N-pixel tiles."""
    model = _tiny_unet(3)
    photo = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(9))
    whole = dict(Pipeline(model, _card(model)).demo(photo, seed=3))["restored"]
    tiles = dict(Pipeline(model, _card(model)).demo(photo, seed=3, tile=16))["restored"]
    assert tiles.shape == whole.shape and not torch.equal(tiles, whole)
    assert float((tiles - whole).abs().mean()) < 0.02


def test_eval_fashion_scores_and_updates_the_card(tmp_path: Path) -> None:
    """eval/denoise.py on the first Fashion-MNIST test images: a model is scored beside the noisy input, into its card."""
    import json

    from eval import denoise as eval_denoise
    from eval import sets

    try:
        sets.load_fashion_mnist_test(limit=1)
    except sets.SetError as e:
        pytest.skip(f"Fashion-MNIST test split not installed: {e}")
    torch.manual_seed(0)
    model = UNet(1, 1, **TINY_UNET, norm="none")
    stem = tmp_path / "w" / "fm"
    W.save(stem, model, {"task": "denoise", "corruption": "gaussian:sigma=114.75", "dataset": "fashion-mnist"})
    code = eval_denoise.main(["--weights", str(stem) + ".safetensors", "--set", "fashion-mnist-test",
                              "--spec", "gaussian:sigma=114.75", "--limit", "64", "--out", str(tmp_path / "out"),
                              "--quiet", "--update-card"])
    assert code == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| noisy input (no restoration) | 64 |" in summary and "fm (model)" in summary
    card = json.loads((tmp_path / "w" / "fm.json").read_text())
    entry = card["metrics"]["fashion-mnist-test/gaussian:sigma=114.75"]
    assert entry["images"] == 64 and "noisy" in entry["baselines"]
    # an untrained residual UNet is the identity (zero-initialised last conv): same PSNR as the noisy input
    assert entry["psnr"] == pytest.approx(entry["baselines"]["noisy"]["psnr"], abs=0.05)
    assert "--update-card" in entry["command"]

    # one commit for the whole run: with several sigmas, the card written first made the others "+dirty"
    commits = iter(["c0", "c0+dirty", "c0+dirty"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(eval_denoise.report, "git_commit", lambda *a, **k: next(commits))
        assert eval_denoise.main(["--weights", str(stem) + ".safetensors", "--set", "fashion-mnist-test",
                                  "--sigmas", "100,114.75", "--limit", "16", "--out", str(tmp_path / "s"),
                                  "--quiet", "--update-card"]) == 0
    card = json.loads((tmp_path / "w" / "fm.json").read_text())
    assert [card["metrics"][f"fashion-mnist-test/gaussian:sigma={s}"]["commit"] for s in ("100", "114.75")] == ["c0", "c0"]

    # a self-ensemble is scored under its own name, and never written into the card
    code = eval_denoise.main(["--weights", str(stem) + ".safetensors", "--set", "fashion-mnist-test",
                              "--spec", "gaussian:sigma=114.75", "--limit", "16", "--out", str(tmp_path / "x8"),
                              "--quiet", "--ensemble", "x8"])
    assert code == 0 and "fm (model, x8 self-ensemble)" in (tmp_path / "x8" / "summary.md").read_text()
    with pytest.raises(SystemExit):
        eval_denoise.main(["--weights", str(stem) + ".safetensors", "--set", "fashion-mnist-test", "--limit", "16",
                           "--out", str(tmp_path / "x8"), "--quiet", "--ensemble", "x8", "--update-card"])


def test_recalibrate_batchnorm_averages_the_statistics_and_restores_the_model() -> None:
    from restore.engine.ema import recalibrate_batchnorm

    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, momentum=0.3)).eval()
    bn = model[1]
    bn.running_mean.fill_(5.0)
    with pytest.raises(ValueError, match="no inputs"):
        recalibrate_batchnorm(model, [])
    assert torch.all(bn.running_mean == 5.0)  # an empty pass leaves the statistics alone
    batches = [torch.randn(4, 3, 6, 6) * (i + 1) + i for i in range(5)]
    assert recalibrate_batchnorm(model, batches) == 1
    with torch.no_grad():
        feats = [model[0](b) for b in batches]
    torch.testing.assert_close(bn.running_mean, torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0))
    torch.testing.assert_close(bn.running_var,
                               torch.stack([f.transpose(0, 1).flatten(1).var(1) for f in feats]).mean(0))
    assert not model.training and bn.momentum == 0.3
    assert recalibrate_batchnorm(nn.Conv2d(1, 1, 1), batches) == 0


def test_recalibrate_bn_script_keeps_the_card_and_records_the_pass(tmp_path: Path, photo_dir: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("recal", Path(__file__).resolve().parents[1] / "train" / "recalibrate_bn.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model = UNet(**{**TINY_UNET, "norm": "batch"})
    W.save(tmp_path / "tiny", model, {**_card(model), "options": {"dataset": "photos", "spec": "gaussian:sigma=25", "quantize": True}})
    out = tmp_path / "tiny-bn"
    assert script.main([str(tmp_path / "tiny.safetensors"), "--data", str(photo_dir), "--out", str(out),
                        "--batches", "3", "--batch-size", "2", "--patch-size", "16"]) == 0
    recal, card = W.load(str(out) + ".safetensors")
    assert card["bn_recalibration"]["batches"] == 3 and card["corruption"] == "gaussian:sigma=25"
    bn = next(m for m in recal.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.num_batches_tracked == 3 and not torch.all(bn.running_var == 1.0)
    # a Fashion-MNIST card draws from its task's training split of an IDX folder (never the validation tail)
    fm_model = UNet(**{**TINY_UNET, "norm": "batch", "in_channels": 1, "out_channels": 1})
    W.save(tmp_path / "fm", fm_model, {**_card(fm_model), "options": {
        "dataset": "fashion-mnist", "spec": "gaussian:sigma=1", "quantize": True, "val_size": 8}})
    idx = tmp_path / "idx"
    idx.mkdir()
    flat = np.repeat(np.arange(12, dtype=np.uint8) * 20, 28 * 28).reshape(12, 28, 28)  # image i is all 20 * i
    write_idx(idx / "train-images-idx3-ubyte", flat)
    write_idx(idx / "train-labels-idx1-ubyte", np.zeros(12, dtype=np.uint8))
    card = W.load(str(tmp_path / "fm.safetensors"))[1]
    seen = torch.cat(list(script.noisy_batches(card, str(idx), batches=3, batch_size=2, patch_size=16, seed=0)))
    assert seen.shape == (6, 1, 28, 28)
    assert seen.mean(dim=(1, 2, 3)).max() * 255 < 3 * 20 + 2  # images 0-3 only: 4-11 are the validation tail
    assert script.main([str(tmp_path / "fm.safetensors"), "--data", str(idx), "--out", str(tmp_path / "fm-bn"),
                        "--batches", "2", "--batch-size", "4"]) == 0
    assert W.load(str(tmp_path / "fm-bn.safetensors"))[1]["bn_recalibration"]["batches"] == 2
    # no IDX files in a photo folder, a missing folder, a task that is not denoise: exit 2
    assert script.main([str(tmp_path / "fm.safetensors"), "--data", str(photo_dir), "--out", str(out)]) == 2
    assert script.main([str(tmp_path / "tiny.safetensors"), "--data", str(tmp_path / "none"), "--out", str(out)]) == 2
    W.save(tmp_path / "other", model, {**_card(model), "task": "colorize"})
    assert script.main([str(tmp_path / "other.safetensors"), "--data", str(photo_dir), "--out", str(out)]) == 2
