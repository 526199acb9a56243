"""eval/vae.py (the VAE analysis report) and eval/fmnist_classifier.py on a tiny synthetic run.

Everything is tiny: 28x28 synthetic "garments" of 10 classes (a few hundred
images), a random-weight VAE and conditional VAE saved through
``restore.weights.save`` into a temporary ``RESTORE_WEIGHTS_DIR``, a run folder
with the task's ``history.csv`` and per-epoch snapshots, and a run with only
TensorBoard scalars (the fallback reader).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval import fmnist_classifier as FC
from eval import vae as R
from restore import models
from restore import weights as W
from restore.data import FASHION_MNIST_CLASSES, load_idx_tensors, write_idx
from restore.tasks.vae import HISTORY_COLUMNS, write_history_row

NUM_CLASSES = 10


def _garments(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 uint8 images; class c = a bright horizontal bar at row 2c+3 plus a class-sized block."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 30, size=(n, 28, 28)).astype(np.uint8)
    y = np.arange(n) % NUM_CLASSES
    for i, c in enumerate(y):
        x[i, 2 * c + 3 : 2 * c + 6, 3:25] = 230
        x[i, 20:26, 4 : 6 + 2 * c] = 180
    return x, y.astype(np.uint8)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fmnist-tiny")
    for prefix, n, seed in (("train", 300, 0), ("t10k", 120, 1)):
        x, y = _garments(n, seed)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    small = dict(in_channels=1, image_size=28, channels=[4, 8], hidden=16)
    card = {"task": "vae", "corruption": "gaussian:sigma=114.75", "class_names": list(FASHION_MNIST_CLASSES)}
    W.save(root / "vae-tiny", models.build("vae", latent_dim=4, **small), dict(card))
    W.save(root / "cvae-tiny", models.build("cvae", latent_dim=2, num_classes=10, conditioning="onehot", **small),
           {**card, "corruption": "gaussian:sigma=0", "conditioning": "onehot"})
    return root


def _history(run: Path, epochs: int, dim: int, snapshots: bool) -> Path:
    rng = np.random.default_rng(dim)
    for e in range(1, epochs + 1):
        row = {k: float(rng.random()) for k in HISTORY_COLUMNS}
        row.update(epoch=e, step=10 * e, beta=min(1.0, e / 2), test_psnr=12.0 + e + dim / 10,
                   train_psnr=12.5 + e, loss_total=300.0 - 10 * e)
        write_history_row(run / "history.csv", row)
        if snapshots:
            (run / "epochs").mkdir(parents=True, exist_ok=True)
            clean = rng.random((16, 1, 28, 28)).astype(np.float32)
            np.savez_compressed(run / "epochs" / f"epoch_{e:04d}.npz",
                                z_mean=rng.normal(size=(50, dim)).astype(np.float32),
                                labels=np.arange(50) % NUM_CLASSES, recon=clean * 0.9, noisy=clean, clean=clean)
    (run / "config.yaml").write_text(f"task:\n  latent_dim: {dim}\n")
    return run


def _tb_only_run(run: Path, epochs: int) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(run / "tb"))
    for e in range(1, epochs + 1):
        for key, v in (("loss_total", 200.0 / e), ("loss_kl", 5.0 * e), ("beta", e / epochs),
                       ("test_psnr", 14.0 + e), ("test_ssim", 0.4 + 0.05 * e), ("test_mse", 0.03 / e)):
            w.add_scalar(f"epoch/{key}", v, 7 * e)
        w.add_scalar("kl/beta", e / epochs, 7 * e)
    w.close()
    return run


# --------------------------------------------------------------------------- the whole report


@pytest.mark.slow  # trains a tiny run and writes the whole report: over 2 minutes on a shared CPU
def test_report_writes_every_file(tmp_path: Path, idx_dir: Path, weights_dir: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(weights_dir))
    run = _history(tmp_path / "runs" / "vae-tiny", 3, 4, snapshots=False)
    s2 = _history(tmp_path / "runs" / "vae-latent-2", 3, 2, snapshots=True)
    s4 = _history(tmp_path / "runs" / "vae-latent-4", 2, 4, snapshots=False)
    s16 = _tb_only_run(tmp_path / "runs" / "vae-latent-16", 2)
    out = tmp_path / "report"
    rc = R.main(["--weights", "vae-tiny", "--cvae", "cvae-tiny", "--run", str(run), "--study", str(s2), str(s4),
                 str(s16), "--out", str(out), "--data", str(idx_dir), "--limit", "100", "--train-limit", "200",
                 "--embed-subset", "40", "--uncertainty-images", "30", "--samples", "4", "--cond-samples", "5",
                 "--cond-cols", "3", "--classifier-steps", "1", "--quiet"])
    assert rc == 0
    expected = ["history.csv", "loss_curves.png", "metrics.csv", "metrics.txt", "denoise_grid.png",
                "latent_pca.png", "latent_umap.png", "latent_tsne.png", "prior_samples.png", "interpolation.png",
                "uncertainty.png", "uncertainty_per_image.csv", "cond_cvae-tiny.png", "fmnist_cnn.safetensors",
                "study_history.csv", "study_curves.png", "study_vae-latent-2_recon.gif",
                "study_vae-latent-2_latent.gif", "report.json"]
    for name in expected:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # runs without snapshots get no GIFs, and the report says what the task would need to save
    assert not list(out.glob("study_vae-latent-4_*.gif"))
    text = (out / "metrics.txt").read_text()
    assert "vae-latent-4" in text and "snapshot_latents" in text
    # one GIF frame per snapshot epoch
    with Image.open(out / "study_vae-latent-2_latent.gif") as gif:
        assert gif.n_frames == 3
    # the conditional grid has one row per class: 10 rows of 28 px + gaps
    assert Image.open(out / "cond_cvae-tiny.png").size[1] > 10 * 28

    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    got = {(r["section"], r["model"], r["metric"]): float(r["value"]) for r in rows if r["value"]}
    for key in [("denoising", "noisy", "psnr"), ("denoising", "vae-tiny", "psnr"), ("denoising", "blur", "ssim"),
                ("denoising", "median3", "mse"), ("denoising", "vae-tiny", "psnr_gain"),
                ("latent", "vae-tiny", "knn5_accuracy"), ("latent", "vae-tiny", "linear_probe_accuracy"),
                ("latent", "vae-tiny", "explained_variance_pc1"), ("uncertainty", "vae-tiny", "spearman_overall"),
                ("classifier", "fmnist-cnn", "test_accuracy"), ("classifier", "fmnist-cnn", "accuracy_blurred"),
                ("conditional", "cvae-tiny", "intended_class_accuracy"),
                ("study", "vae-latent-2", "final_test_psnr")]:
        assert key in got, key
    assert got[("denoising", "vae-tiny", "psnr_gain")] == pytest.approx(
        got[("denoising", "vae-tiny", "psnr")] - got[("denoising", "noisy", "psnr")], abs=1e-3)
    # noise of std 0.45 on images in [0, 1], clipped: the noisy input sits near 10 dB
    assert 8.0 < got[("denoising", "noisy", "psnr")] < 13.0
    assert 0.0 <= got[("latent", "vae-tiny", "explained_variance_2d")] <= 1.0 + 1e-6
    assert -1.0 <= got[("uncertainty", "vae-tiny", "spearman_overall")] <= 1.0
    assert all(0.0 <= got[k] <= 1.0 for k in got if k[2].endswith("accuracy") or "accuracy/" in k[2])
    assert [r["n"] for r in rows if r["section"] == "denoising"][0] == "100"

    with (out / "history.csv").open() as f:
        hist = list(csv.DictReader(f))
    assert [h["epoch"] for h in hist] == ["1", "2", "3"] and hist[0]["run"] == "vae-tiny"
    with (out / "study_history.csv").open() as f:
        study = list(csv.DictReader(f))
    assert {h["run"] for h in study} == {"latent 2", "latent 4", "latent 16"}
    # the TensorBoard-only run was read through EventAccumulator
    assert [float(h["test_psnr"]) for h in study if h["run"] == "latent 16"] == [15.0, 16.0]
    with (out / "uncertainty_per_image.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 30
    assert "--limit 100" in text and "not comparable" in text


# --------------------------------------------------------------------------- pieces


def test_spearman_matches_scipy_and_edge_cases() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a + 0.3 * rng.random(200)
    b[:20] = 0.5  # ties
    assert R.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    rows = R.spearman_rows(np.stack([a, a, np.ones(200)]), np.stack([a ** 3, -a, a]))
    assert rows[0] == pytest.approx(1.0) and rows[1] == pytest.approx(-1.0) and math.isnan(rows[2])


def test_mosaic_and_pca_embedding() -> None:
    imgs = np.zeros((2, 3, 4, 5), np.float32)
    imgs[1, 2] = 0.5
    m = R.mosaic(imgs, gap=2)
    assert m.shape == (2 * 4 + 2, 3 * 5 + 4)
    assert m[6, 14] == 0.5 and m[4, 0] == 1.0  # last cell and a gap row
    z = np.zeros((30, 3))
    z[:, 0] = np.linspace(-1, 1, 30)  # all variance on one axis
    xy, ev = R.embed_2d(z, "pca")
    assert xy.shape == (30, 2) and ev["explained_variance_pc1"] == pytest.approx(1.0)
    with pytest.raises(R.VAEReportError, match="unknown embedding"):
        R.embed_2d(z, "isomap")


def test_clear_errors(tmp_path: Path, idx_dir: Path, weights_dir: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(weights_dir))
    base = ["--out", str(tmp_path / "r"), "--data", str(idx_dir), "--quiet"]
    assert R.main(["--weights", "cvae-tiny", *base]) == 2
    assert "conditional VAE" in capsys.readouterr().err
    assert R.main(["--weights", "vae-tiny", "--cvae", "vae-tiny", *base]) == 2
    assert "unconditional" in capsys.readouterr().err
    assert R.main(["--weights", "no-such-vae", *base]) == 2
    assert "no-such-vae" in capsys.readouterr().err
    assert R.main(["--weights", "vae-tiny", "--run", str(tmp_path / "missing-run"), *base]) == 2
    assert "missing-run" in capsys.readouterr().err
    assert R.main(["--weights", "vae-tiny", "--samples", "1", *base]) == 2
    assert "--samples" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert R.main(["--weights", "vae-tiny", "--out", str(tmp_path / "r"), "--data", str(empty), "--quiet"]) == 2
    assert str(empty) in capsys.readouterr().err
    with pytest.raises(R.VAEReportError, match="no history.csv"):
        R.read_history(empty)


def test_classifier_learns_and_cache_is_keyed(tmp_path: Path, idx_dir: Path) -> None:
    x, y = load_idx_tensors(str(idx_dir), "train")
    xt, yt = load_idx_tensors(str(idx_dir), "test")
    cache = tmp_path / "clf.safetensors"
    settings = FC.ClassifierSettings(epochs=1, batch_size=32, max_steps=20)
    model, info = FC.load_or_train(cache, (x, y), (xt, yt), settings)
    assert not info["cached"] and cache.is_file()
    # the synthetic classes differ by a bar's position: 20 steps are plenty
    assert info["test_accuracy"] > 0.5
    again, info2 = FC.load_or_train(cache, (x, y), (xt, yt), settings)
    assert info2["cached"] and info2["test_accuracy"] == pytest.approx(info["test_accuracy"])
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    # other data -> the cache is not reused
    _, info3 = FC.load_or_train(cache, (x[:100], y[:100]), (xt, yt), FC.ClassifierSettings(epochs=1, max_steps=1))
    assert not info3["cached"]
    cache.write_bytes(b"not safetensors")
    with pytest.raises(FC.ClassifierError, match="unusable"):
        FC.load_cached(cache)
    with pytest.raises(FC.ClassifierError, match=r"\(N, 1, 28, 28\)"):
        FC.predict(model, torch.zeros(2, 28, 28))


def test_judge_blur_keeps_mass_and_flat_images() -> None:
    flat = torch.full((2, 1, 28, 28), 0.3)
    assert torch.allclose(FC.gaussian_blur(flat, 1.2), flat, atol=1e-6)
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 14, 14] = 1.0
    out = FC.gaussian_blur(dot, 1.0)
    assert out.shape == dot.shape
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)  # away from the border nothing leaks
    assert float(out[0, 0, 14, 14]) < 0.2 and float(out[0, 0, 14, 15]) == pytest.approx(float(out[0, 0, 15, 14]))
    # the judge's blur augmentation is part of its cache key and is checked
    assert "blur_prob" in FC.ClassifierSettings().__dataclass_fields__
    for bad in (dict(blur_prob=1.5), dict(blur_sigma_min=0.0), dict(blur_sigma_min=2.0, blur_sigma_max=1.0)):
        with pytest.raises(FC.ClassifierError, match="blur"):
            FC.ClassifierSettings(**bad).check()


def test_classifier_cache_not_reused_across_blur_settings(tmp_path: Path, idx_dir: Path) -> None:
    x, y = load_idx_tensors(str(idx_dir), "train")
    cache = tmp_path / "clf.safetensors"
    FC.load_or_train(cache, (x, y), (x, y), FC.ClassifierSettings(epochs=1, max_steps=2, blur_prob=0.0))
    _, info = FC.load_or_train(cache, (x, y), (x, y), FC.ClassifierSettings(epochs=1, max_steps=2, blur_prob=0.5))
    assert not info["cached"]


def test_noisy_ceiling_classifier_learns_on_a_tiny_split(idx_dir: Path) -> None:
    from eval import fmnist_noisy_ceiling as NC

    x, y = load_idx_tensors(str(idx_dir), "train")
    xt, yt = load_idx_tensors(str(idx_dir), "test")
    for arch in ("small", "wide", "resnet"):
        assert NC.build(arch)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    logs: list[str] = []
    acc = NC.train_on_noise(x, y, xt, yt, arch="small", epochs=2, batch_size=16, std=0.1, log=logs.append)
    assert len(logs) == 2 and 0.0 <= acc <= 1.0
    assert acc > 0.5  # the synthetic classes survive mild noise
