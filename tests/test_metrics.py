"""restore.metrics against scikit-image on real photos, batching, errors, and offline LPIPS."""

from __future__ import annotations

import io
import os
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from skimage import metrics as skm

from restore import metrics as M


def _chw(a: np.ndarray) -> torch.Tensor:
    """HxW or HxWxC float array -> 1xCxHxW float32 tensor."""
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().unsqueeze(0)


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.round(a * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue()))).astype(np.float64) / 255


def _degrade(clean: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Realistic degradations: sensor-like Gaussian, shot (Poisson) noise, JPEG artefacts."""
    if kind == "gaussian":
        out = clean + rng.normal(0.0, 25 / 255, clean.shape)
    elif kind == "poisson":
        out = rng.poisson(clean * 30.0) / 30.0
    elif kind == "jpeg":
        out = _jpeg(clean, 15)
    else:
        raise AssertionError(kind)
    # Quantise like a saved image so both sides see exactly the same float32 values.
    return np.round(np.clip(out, 0.0, 1.0) * 255) / 255


PHOTOS = {
    "astronaut": lambda: skdata.astronaut(),  # 512x512x3
    "coffee": lambda: skdata.coffee(),  # 400x600x3, non-square
    "camera": lambda: skdata.camera(),  # 512x512 gray
}


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1234)
    out = []
    for name, load in PHOTOS.items():
        clean = load().astype(np.float64) / 255
        for kind in ("gaussian", "poisson", "jpeg"):
            out.append((f"{name}-{kind}", clean, _degrade(clean, kind, rng)))
    return out


def test_psnr_mse_ssim_match_skimage_on_real_photos(pairs) -> None:
    for name, clean, noisy in pairs:
        x, y = _chw(noisy), _chw(clean)
        channel_axis = 2 if clean.ndim == 3 else None
        # skimage on the very float32 values we feed torch.
        c32, n32 = clean.astype(np.float32).astype(np.float64), noisy.astype(np.float32).astype(np.float64)
        ref_ssim = skm.structural_similarity(
            c32, n32, data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, channel_axis=channel_axis,
        )
        ref_psnr = skm.peak_signal_noise_ratio(c32, n32, data_range=1.0)
        ref_mse = skm.mean_squared_error(c32, n32)
        got_ssim = M.ssim(x, y).item()
        got_psnr = M.psnr(x, y).item()
        got_mse = M.mse(x, y).item()
        assert abs(got_ssim - ref_ssim) < 1e-3, (name, got_ssim, ref_ssim)
        assert abs(got_psnr - ref_psnr) < 1e-3, (name, got_psnr, ref_psnr)
        assert got_mse == pytest.approx(ref_mse, rel=1e-5), name
        # The degradations are real: SSIM well below 1 and PSNR in a sane band.
        assert 0.1 < got_ssim < 0.98 and 15 < got_psnr < 40, (name, got_ssim, got_psnr)


def test_ssim_data_range_255_matches_skimage_uint8_scale() -> None:
    rng = np.random.default_rng(7)
    clean = skdata.camera()[100:228, 150:310].astype(np.float64)  # 128x160, 0-255 scale
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).round()
    ref = skm.structural_similarity(clean, noisy, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    got = M.ssim(_chw(noisy), _chw(clean), data_range=255).item()
    assert abs(got - ref) < 1e-3
    # Same images on the [0, 1] scale give the same SSIM and PSNR.
    assert M.ssim(_chw(noisy / 255), _chw(clean / 255)).item() == pytest.approx(got, abs=1e-6)
    assert M.psnr(_chw(noisy / 255), _chw(clean / 255)).item() == pytest.approx(
        M.psnr(_chw(noisy), _chw(clean), data_range=255).item(), abs=1e-4
    )


def test_ssim_map_is_skimage_full_map_without_its_border() -> None:
    """`ssim_map` is what region scores (inpainting holes) average; `ssim` is its mean."""
    rng = np.random.default_rng(3)
    clean = skdata.astronaut()[:64, :80].astype(np.float64) / 255
    noisy = np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1)
    _, full = skm.structural_similarity(noisy, clean, data_range=1.0, channel_axis=2, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, full=True)
    x = torch.from_numpy(noisy).permute(2, 0, 1)[None]
    y = torch.from_numpy(clean).permute(2, 0, 1)[None]
    got = M.ssim_map(x, y)
    assert got.shape == (1, 3, 54, 70)
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), full[5:-5, 5:-5], rtol=0, atol=1e-12)
    assert got.mean().item() == pytest.approx(M.ssim(x, y).item(), abs=1e-12)


def test_batched_equals_per_image(pairs) -> None:
    rgb = [(c, n) for name, c, n in pairs if c.ndim == 3 and c.shape[:2] == (512, 512)]
    xs = torch.cat([_chw(n[:96, :128]) for _, n in rgb])
    ys = torch.cat([_chw(c[:96, :128]) for c, _ in rgb])
    assert xs.shape == (3, 3, 96, 128)
    for fn in (M.mse, M.psnr, M.ssim):
        batched = fn(xs, ys)
        assert batched.shape == (3,)
        single = torch.stack([fn(xs[i : i + 1], ys[i : i + 1])[0] for i in range(3)])
        torch.testing.assert_close(batched, single, rtol=1e-6, atol=1e-7)
        # Per-image values really differ (no accidental batch mean).
        assert batched.unique().numel() == 3
    # A single CHW image is accepted as a batch of one.
    assert M.ssim(xs[0], ys[0]).shape == (1,)


def test_identical_images_and_symmetry() -> None:
    x = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert torch.isinf(M.psnr(x, x)).all() and (M.psnr(x, x) > 0).all()
    assert torch.equal(M.mse(x, x), torch.zeros(2))
    torch.testing.assert_close(M.ssim(x, x), torch.ones(2))
    torch.testing.assert_close(M.ssim(x, y), M.ssim(y, x))
    assert (M.ssim(x, y) < 1).all()
    # MSE -> PSNR relation.
    torch.testing.assert_close(M.psnr(x, y), 10 * torch.log10(1 / M.mse(x, y)), rtol=1e-5, atol=1e-5)


def test_ssim_is_differentiable() -> None:
    y = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    loss = (1 - M.ssim(x, y)).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_inputs_raise_value_error() -> None:
    a = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="shape mismatch"):
        M.psnr(a, torch.rand(1, 3, 16, 17))
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        M.ssim(torch.rand(2, 1, 10, 64), torch.rand(2, 1, 10, 64))
    with pytest.raises(ValueError, match="NCHW"):
        M.mse(torch.rand(16, 16), torch.rand(16, 16))
    with pytest.raises(ValueError, match="data_range"):
        M.psnr(a, a, data_range=0)
    with pytest.raises(ValueError, match="data_range"):
        M.ssim(a, a, data_range=-1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu() -> None:  # pragma: no cover - exercised on GPU machines
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    y = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    for fn in (M.mse, M.psnr, M.ssim):
        torch.testing.assert_close(fn(x.cuda(), y.cuda()).cpu(), fn(x, y), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- LPIPS


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Empty hub cache, no env override, and every download path fails the test."""
    import torch.hub
    import torchvision.models._api as tv_api

    def fail(*args, **kwargs):
        pytest.fail(f"a download was attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.delenv(M.LPIPS_BACKBONE_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fail)
    monkeypatch.setattr(socket.socket, "connect", fail)
    return tmp_path / "hub" / "checkpoints"


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_missing_backbone_names_file_and_folder(no_network, net) -> None:
    fname = M.LPIPS_BACKBONE_FILES[net]
    with pytest.raises(M.LPIPSWeightsMissing) as ei:
        M.LPIPS(net=net)
    msg = str(ei.value)
    assert fname in msg and str(no_network) in msg
    assert isinstance(ei.value, FileNotFoundError)


def test_lpips_explicit_or_env_path_missing(no_network, tmp_path, monkeypatch) -> None:
    with pytest.raises(M.LPIPSWeightsMissing, match="nope.pth"):
        M.LPIPS(weights_path=tmp_path / "nope.pth")
    monkeypatch.setenv(M.LPIPS_BACKBONE_ENV, str(tmp_path / "env-nope.pth"))
    with pytest.raises(M.LPIPSWeightsMissing, match="env-nope.pth"):
        M.LPIPS()


def test_lpips_bad_net_name() -> None:
    with pytest.raises(ValueError, match="net must be one of"):
        M.LPIPS(net="resnet", pretrained=False)


@pytest.fixture(scope="module")
def random_lpips() -> M.LPIPS:
    torch.manual_seed(0)
    return M.LPIPS(net="alex", pretrained=False)


def test_lpips_random_backbone_forward(random_lpips) -> None:
    import lpips

    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 64, 64, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    d = random_lpips(x, y)
    assert d.shape == (3,) and (d > 0).all() and torch.isfinite(d).all()
    assert torch.allclose(random_lpips(x, x), torch.zeros(3), atol=1e-6)
    # Same as the lpips package fed [-1, 1] inputs: the [0, 1] conversion is right.
    ref = random_lpips.model(2 * x - 1, 2 * y - 1).flatten()
    torch.testing.assert_close(d, ref)
    # More noise -> larger distance, image by image.
    y2 = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (random_lpips(x, y2) > d).all()
    # The shipped linear heads were loaded (not random): compare with the package file.
    shipped = torch.load(
        os.path.join(lpips.__path__[0], "weights", "v0.1", "alex.pth"), map_location="cpu"
    )
    torch.testing.assert_close(random_lpips.model.lin0.model[1].weight, shipped["lin0.model.1.weight"])


def test_lpips_gray_stays_eval_and_passes_gradients(random_lpips) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 1, 48, 48, generator=g)
    y = torch.rand(2, 1, 48, 48, generator=g)
    torch.testing.assert_close(random_lpips(x, y), random_lpips(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)))
    random_lpips.train()
    assert not random_lpips.model.training and not random_lpips.model.lin0.training
    a, b = random_lpips(x, y), random_lpips(x, y)
    torch.testing.assert_close(a, b)  # no dropout
    xg = x.clone().requires_grad_(True)
    random_lpips(xg, y).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in random_lpips.parameters())
    with pytest.raises(ValueError, match="1 or 3 channels"):
        random_lpips(torch.rand(1, 2, 32, 32), torch.rand(1, 2, 32, 32))


@pytest.fixture(scope="module")
def alex_features_ckpt(tmp_path_factory):
    """A torchvision-format AlexNet checkpoint (features only, 10 MB) with known values."""
    import torchvision

    torch.manual_seed(11)
    features = torchvision.models.alexnet(weights=None).features
    state = {f"features.{k}": v.clone() for k, v in features.state_dict().items()}
    path = tmp_path_factory.mktemp("ckpt") / M.LPIPS_BACKBONE_FILES["alex"]
    torch.save(state, path)
    return path, state


def _assert_backbone_equals(model: M.LPIPS, state: dict) -> None:
    for key, value in model.model.net.state_dict().items():
        torch.testing.assert_close(value, state["features." + key.split(".", 1)[1]])


@pytest.mark.parametrize("source", ["hub", "weights_path", "env"])
def test_lpips_loads_backbone_from_each_source(no_network, alex_features_ckpt, monkeypatch, source) -> None:
    path, state = alex_features_ckpt
    kwargs = {}
    if source == "hub":
        no_network.mkdir(parents=True)
        (no_network / path.name).write_bytes(path.read_bytes())
    elif source == "weights_path":
        kwargs["weights_path"] = path
    else:
        monkeypatch.setenv(M.LPIPS_BACKBONE_ENV, str(path))
    model = M.LPIPS(net="alex", **kwargs)
    _assert_backbone_equals(model, state)
    assert model.weights_file is not None and model.weights_file.name == path.name
    x = torch.rand(1, 3, 32, 32)
    assert model(x, 1 - x).item() > 0


def test_lpips_rejects_wrong_or_corrupt_checkpoint(no_network, tmp_path) -> None:
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        M.LPIPS(weights_path=bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth.*features.0.weight"):
        M.LPIPS(weights_path=wrong)
