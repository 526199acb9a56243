"""restore.data: IDX reading/validation, Fashion-MNIST, image-folder patches, paired corruption."""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from restore import data as D
from restore.corrupt import CorruptionSpecError

# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_idx_round_trip(tmp_path: Path, gz: bool, dtype: str) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.normal(0, 60, (5, 7, 3)) + (128 if dtype == "uint8" else 0)).clip(-128, 255).astype(dtype)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    D.write_idx(path, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    back = D.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.shape == (5, 7, 3) and back.flags.writeable
    np.testing.assert_array_equal(back, arr)


def test_idx_header_layout_is_big_endian(tmp_path: Path) -> None:
    p = D.write_idx(tmp_path / "x", np.array([[1, 2, 3]], dtype=np.int16))
    assert p.read_bytes() == bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0, 1, 0, 2, 0, 3])


def test_idx_gzip_detected_by_magic_not_suffix(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    gz_named_raw = D.write_idx(tmp_path / "data.gz", arr)
    misnamed = tmp_path / "data-idx3-ubyte"  # gzip content, no .gz suffix
    misnamed.write_bytes(gz_named_raw.read_bytes())
    np.testing.assert_array_equal(D.read_idx(misnamed), arr)
    raw = D.write_idx(tmp_path / "plain", arr)
    fake_gz = tmp_path / "plain-but-named.gz"  # raw content, .gz suffix
    fake_gz.write_bytes(raw.read_bytes())
    np.testing.assert_array_equal(D.read_idx(fake_gz), arr)


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


GOOD = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
CORRUPT_CASES = {
    "truncated-payload": (_idx_bytes(GOOD)[:-5], "truncated"),
    "truncated-header": (_idx_bytes(GOOD)[:9], "truncated header"),
    "too-short": (b"\x00\x00", "too short"),
    "empty": (b"", "too short"),
    "extra-bytes": (_idx_bytes(GOOD) + b"\x00\x01\x02", "3 unexpected extra bytes"),
    "bad-magic": (b"\x12\x34" + _idx_bytes(GOOD)[2:], "not an IDX file"),
    "bad-type": (b"\x00\x00\x0a" + _idx_bytes(GOOD)[3:], "unknown IDX type code 0x0A"),
    "zero-dims": (b"\x00\x00\x08\x00", "0 dimensions"),
    "truncated-gzip": (gzip.compress(_idx_bytes(GOOD))[:-12], "gzip"),
    "gzip-of-truncated": (gzip.compress(_idx_bytes(GOOD)[:-1]), "truncated"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_CASES))
def test_idx_corrupt_files_raise_idx_error(tmp_path: Path, case: str) -> None:
    content, reason = CORRUPT_CASES[case]
    path = tmp_path / f"{case}-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(D.IdxError) as ei:
        D.read_idx(path)
    assert str(path) in str(ei.value) and reason in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_idx_missing_and_unwritable_dtype(tmp_path: Path) -> None:
    with pytest.raises(D.IdxError, match="no such IDX file"):
        D.read_idx(tmp_path / "nope")
    with pytest.raises(D.IdxError, match="is a directory"):
        D.read_idx(tmp_path)
    with pytest.raises(D.IdxError, match="int64"):
        D.write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(D.IdxError, match="dimensions"):
        D.write_idx(tmp_path / "x", np.array(3, dtype=np.uint8))


def _write_split(root: Path, prefix: str, n: int, gz_images: bool, gz_labels: bool, n_labels: int | None = None):
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 6, 5), dtype=np.uint8)
    labels = rng.integers(0, 10, n_labels if n_labels is not None else n, dtype=np.uint8)
    D.write_idx(root / f"{prefix}-images-idx3-ubyte{'.gz' if gz_images else ''}", images)
    D.write_idx(root / f"{prefix}-labels-idx1-ubyte{'.gz' if gz_labels else ''}", labels)
    return images, labels


def test_load_idx_split_from_folder(tmp_path: Path) -> None:
    imgs, lbls = _write_split(tmp_path, "train", 9, gz_images=True, gz_labels=False)
    timgs, tlbls = _write_split(tmp_path, "t10k", 4, gz_images=False, gz_labels=True)
    x, y = D.load_idx_split(tmp_path, "train")
    np.testing.assert_array_equal(x, imgs)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, lbls)
    x, y = D.load_idx_split(tmp_path, "test")
    np.testing.assert_array_equal(x, timgs)
    np.testing.assert_array_equal(y, tlbls)
    # the tensor form the evaluation scripts use
    xt, yt = D.load_idx_tensors(tmp_path, "test", limit=3)
    assert xt.shape == (3, 1, *timgs.shape[1:]) and xt.dtype == torch.float32 and yt.dtype == torch.int64
    torch.testing.assert_close(xt[:, 0], torch.from_numpy(timgs[:3]).float() / 255.0)
    np.testing.assert_array_equal(yt.numpy(), tlbls[:3])


def test_load_idx_split_errors(tmp_path: Path) -> None:
    with pytest.raises(D.IdxError) as ei:
        D.load_idx_split(tmp_path, "train")
    msg = str(ei.value)
    assert str(tmp_path) in msg and "train-images-idx3-ubyte[.gz]" in msg and "train-labels-idx1-ubyte[.gz]" in msg
    _write_split(tmp_path, "train", 5, gz_images=False, gz_labels=False, n_labels=4)
    with pytest.raises(D.IdxError, match="5 images but .* 4 labels"):
        D.load_idx_split(tmp_path, "train")
    with pytest.raises(D.IdxError, match="unknown split 'val'"):
        D.load_idx_split(tmp_path, "val")
    with pytest.raises(D.IdxError, match="t10k-images"):
        D.load_idx_split(tmp_path, "test")


def test_idx_dataset_and_env_override(tmp_path: Path, monkeypatch) -> None:
    imgs, lbls = _write_split(tmp_path, "train", 7, gz_images=True, gz_labels=True)
    monkeypatch.setenv(D.IDX_ROOT_ENV, str(tmp_path))
    ds = D.IdxDataset(split="train", limit=5)
    assert len(ds) == 5 and ds.root == tmp_path
    item = ds[3]
    assert item["target"].shape == (1, 6, 5) and item["target"].dtype == torch.float32
    torch.testing.assert_close(item["target"][0], torch.from_numpy(imgs[3]).float() / 255)
    assert item["label"].dtype == torch.int64 and item["label"].item() == lbls[3]
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["target"].shape == (5, 1, 6, 5) and batch["label"].shape == (5,)


FMNIST = D.DEFAULT_IDX_ROOT


@pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").exists(),
    reason=f"Fashion-MNIST not installed at {FMNIST} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist(monkeypatch) -> None:
    monkeypatch.delenv(D.IDX_ROOT_ENV, raising=False)
    x, y = D.load_idx_split(split="train")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.int64
    assert np.array_equal(np.bincount(y), np.full(10, 6000))  # balanced classes, labels 0-9
    assert 0 < x.mean() < 255 and x.max() == 255 and x.min() == 0
    x, y = D.load_idx_split(split="test")
    assert x.shape == (10000, 28, 28) and np.array_equal(np.bincount(y), np.full(10, 1000))
    ds = D.IdxDataset(split="test", limit=16)
    item = ds[0]
    assert item["target"].shape == (1, 28, 28) and 0.0 <= item["target"].min() <= item["target"].max() <= 1.0
    assert item["label"].item() == 9 and D.FASHION_MNIST_CLASSES[9] == "Ankle boot"  # first test item
    assert len(D.FASHION_MNIST_CLASSES) == 10


# ----------------------------------------------------------------------------- image folders


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """A folder mixing good images of every kind with three bad files."""
    rng = np.random.default_rng(5)
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (30, 33), dtype=np.uint8), mode="L").save(root / "sub" / "gray.png")
    Image.fromarray(rng.integers(0, 256, (48, 64, 4), dtype=np.uint8), mode="RGBA").save(root / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (36, 20, 3), dtype=np.uint8)).save(root / "photo.jpg", quality=90)
    Image.fromarray(np.array([[[200, 10, 30]]], dtype=np.uint8)).save(root / "tiny.png")  # 1x1
    Image.fromarray(rng.integers(0, 65536, (24, 24), dtype=np.uint16)).save(root / "deep16.png")
    # Bad files: truncated JPEG, empty file, text pretending to be a PNG.
    full = root / "photo.jpg"
    (root / "truncated.jpg").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 3])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.png").write_text("this is not an image\n")
    return root


def test_patches_shapes_bad_files_reported_once(photo_dir: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="restore.data")
    ds = D.ImageFolderPatches(photo_dir, patch_size=16, patches_per_image=3, seed=0)
    assert len(ds) == 9 * 3
    for epoch in range(2):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            t = ds[i]["target"]
            assert t.shape == (3, 16, 16) and t.dtype == torch.float32
            assert 0.0 <= t.min() and t.max() <= 1.0
    bad = {p.name for p in ds.bad_files}
    assert bad == {"truncated.jpg", "empty.png", "notes.png"}
    warnings = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warnings) == 3 and all(any(b in w for w in warnings) for b in bad)


def test_patches_cache_preloads_and_excludes(photo_dir: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="restore.data")
    ds = D.ImageFolderPatches(photo_dir, patch_size=16, cache=True, seed=1)
    assert {p.name for p in ds.bad_files} == {"truncated.jpg", "empty.png", "notes.png"}
    uncached = D.ImageFolderPatches(photo_dir, patch_size=16, cache=False, seed=1)
    for i in range(len(ds)):
        torch.testing.assert_close(ds[i]["target"], uncached[i]["target"])


def test_patches_grayscale_and_skip_small(photo_dir: Path) -> None:
    ds = D.ImageFolderPatches(photo_dir, patch_size=24, grayscale=True, small="skip", cache=True, seed=0)
    assert {"tiny.png", "photo.jpg"} <= {p.name for p in ds.bad_files}  # 1x1 and 36x20 < 24
    assert all(ds[i]["target"].shape == (1, 24, 24) for i in range(len(ds)))


def test_patches_resampled_shares_cache(photo_dir: Path, monkeypatch) -> None:
    """A validation view of a cached dataset decodes nothing and crops exactly as a fresh one would."""
    import restore.io as io_mod  # restore.data calls rio.read_image on the package: patch it there

    fresh = D.ImageFolderPatches(photo_dir, patch_size=16, patches_per_image=3, augment=False, seed=4)
    expected = [fresh[i]["target"] for i in range(len(fresh))]
    train = D.ImageFolderPatches(photo_dir, patch_size=8, patches_per_image=2, cache=True)
    reads = []
    real = io_mod.read_image
    monkeypatch.setattr(io_mod, "read_image", lambda *a, **k: reads.append(a) or real(*a, **k))
    val = train.resampled(16, 3, augment=False, seed=4)
    assert len(val) == len(expected) == 9 * 3 and val._cache is train._cache
    for i in range(len(val)):
        torch.testing.assert_close(val[i]["target"], expected[i])
    assert reads == []
    fresh[0]  # uncached: decodes, so the spy is known to see reads (an empty list above means something)
    assert len(reads) == 1
    assert train.patch_size == 8 and train[0]["target"].shape == (3, 8, 8)  # the original is untouched
    with pytest.raises(ValueError, match="patch_size"):
        train.resampled(0, 3, augment=False, seed=0)
    skip = D.ImageFolderPatches(photo_dir, patch_size=8, small="skip", cache=True)
    with pytest.raises(ValueError, match="small='skip'"):
        skip.resampled(16, 1, augment=False, seed=0)


def _single_image_ds(tmp_path: Path, array: np.ndarray, patch: int, **kw) -> D.ImageFolderPatches:
    root = tmp_path / "one"
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(root / "img.png")
    return D.ImageFolderPatches(root, patch_size=patch, **kw)


def test_patches_reflect_pad_small_images(tmp_path: Path) -> None:
    arr = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3) * 7
    ds = _single_image_ds(tmp_path, arr, patch=6, augment=False, seed=0)
    got = (ds[0]["target"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    expected = np.pad(arr, ((1, 2), (1, 1), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(got, expected)
    # A 1x1 image becomes a constant patch of its colour.
    tiny = _single_image_ds(tmp_path / "t", np.array([[[200, 10, 30]]], dtype=np.uint8), patch=8, seed=0)
    t = tiny[0]["target"]
    assert t.shape == (3, 8, 8)
    torch.testing.assert_close(t, torch.tensor([200, 10, 30]).view(3, 1, 1).expand(3, 8, 8) / 255.0)


def test_patches_keep_16_bit_precision(tmp_path: Path) -> None:
    arr = np.random.default_rng(4).integers(0, 65536, (10, 10), dtype=np.uint16)
    ds = _single_image_ds(tmp_path, arr, patch=10, augment=False, grayscale=True, cache=True)
    t = ds[0]["target"]
    assert t.shape == (1, 10, 10)
    np.testing.assert_array_equal((t[0].double() * 65535).round().numpy().astype(np.uint16), arr)
    # Without grayscale=True the gray source is repeated to three identical channels.
    rgb = _single_image_ds(tmp_path / "rgb", arr, patch=10, augment=False)[0]["target"]
    assert rgb.shape == (3, 10, 10) and torch.equal(rgb[0], t[0]) and torch.equal(rgb[2], t[0])


def test_patches_augment_covers_the_dihedral_group(tmp_path: Path) -> None:
    arr = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    ref = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    variants = {}
    for k in range(4):
        for flip in (False, True):
            v = torch.rot90(ref, k, dims=(1, 2))
            variants[(k, flip)] = v.flip(2) if flip else v
    plain = _single_image_ds(tmp_path, arr, patch=8, augment=False, length=5)
    assert all(torch.equal(plain[i]["target"], ref) for i in range(5))
    aug = _single_image_ds(tmp_path / "a", arr, patch=8, augment=True, length=200, seed=3)
    seen = set()
    for i in range(len(aug)):
        t = aug[i]["target"]
        match = [key for key, v in variants.items() if torch.equal(t, v)]
        assert match, "augmented patch is not a flip/rotation of the image"
        seen.add(match[0])
    assert len(seen) == 8


def test_patches_seeded_determinism_and_epochs(photo_dir: Path) -> None:
    a = D.ImageFolderPatches(photo_dir, patch_size=12, patches_per_image=2, seed=42)
    b = D.ImageFolderPatches(photo_dir, patch_size=12, patches_per_image=2, seed=42)
    assert all(torch.equal(a[i]["target"], b[i]["target"]) for i in range(len(a)))
    first = [a[i]["target"] for i in range(len(a))]
    a.set_epoch(1)
    changed = sum(not torch.equal(first[i], a[i]["target"]) for i in range(len(a)))
    assert changed > len(a) // 2
    a.set_epoch(0)
    assert all(torch.equal(first[i], a[i]["target"]) for i in range(len(a)))


def test_patches_dataloader_two_workers(photo_dir: Path) -> None:
    seeded = D.ImageFolderPatches(photo_dir, patch_size=16, length=24, seed=7)
    loader = DataLoader(seeded, batch_size=4, num_workers=2, worker_init_fn=D.seed_worker)
    from_workers = torch.cat([b["target"] for b in loader])
    assert from_workers.shape == (24, 3, 16, 16)
    sequential = torch.stack([seeded[i]["target"] for i in range(24)])
    assert torch.equal(from_workers, sequential)  # same patches whatever the worker count
    # Unseeded: workers must not replay each other's random stream.
    one = D.ImageFolderPatches(photo_dir / "sub", patch_size=8, length=16)
    batches = [b["target"] for b in DataLoader(one, batch_size=4, num_workers=2, worker_init_fn=D.seed_worker)]
    flat = torch.cat(batches).flatten(1)
    assert torch.unique(flat, dim=0).shape[0] >= 12  # 16 random crops of a 30x33 image


def test_patches_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="no images found"):
        D.ImageFolderPatches(tmp_path / "empty", patch_size=8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.ImageFolderPatches(tmp_path / "missing", patch_size=8)
    with pytest.raises(ValueError, match="patch_size"):
        D.ImageFolderPatches(tmp_path / "empty", patch_size=0)
    with pytest.raises(ValueError, match="small"):
        D.ImageFolderPatches(tmp_path / "empty", patch_size=8, small="crop")
    bad_only = tmp_path / "bad"
    bad_only.mkdir()
    (bad_only / "x.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="none of the 1 images"):
        D.ImageFolderPatches(bad_only, patch_size=8, cache=True)
    lazy = D.ImageFolderPatches(bad_only, patch_size=8)
    with pytest.raises(RuntimeError, match="none of the 1 images"):
        lazy[0]


# ----------------------------------------------------------------------------- paired


@dataclass
class _Degraded:  # same fields as restore.corrupt.Degraded
    input: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor | None = None
    sigma: torch.Tensor | None = None


def _standin_noise_and_box(clean: torch.Tensor, generator: torch.Generator | None = None) -> _Degraded:
    """Local stand-in corruption: blind Gaussian noise plus a random box hole."""
    n, _, h, w = clean.shape
    sigma = torch.rand(n, generator=generator) * 45 + 5
    noisy = clean + torch.randn(clean.shape, generator=generator) * (sigma / 255).view(n, 1, 1, 1)
    mask = torch.zeros(n, 1, h, w)
    top = int(torch.randint(0, h // 2, (1,), generator=generator))
    left = int(torch.randint(0, w // 2, (1,), generator=generator))
    mask[:, :, top : top + h // 2, left : left + w // 2] = 1
    return _Degraded(input=(noisy.clamp(0, 1) * (1 - mask)), target=clean, mask=mask, sigma=sigma)


class _Fixed(torch.utils.data.Dataset):
    def __init__(self, n: int = 10) -> None:
        self.images = torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"target": self.images[i], "label": torch.tensor(i)}


def _inputs(ds, n=None) -> list[torch.Tensor]:
    return [ds[i]["input"] for i in range(n or len(ds))]


def test_paired_dataset_deterministic_per_seed_index_epoch() -> None:
    base = _Fixed()
    a = D.PairedDataset(base, _standin_noise_and_box, seed=1)
    b = D.PairedDataset(base, _standin_noise_and_box, seed=1)
    item = a[3]
    assert set(item) == {"target", "label", "input", "mask", "sigma"}
    assert item["input"].shape == (1, 16, 16) and item["mask"].shape == (1, 16, 16)
    assert item["sigma"].shape == () and 5 <= item["sigma"].item() <= 50
    assert torch.equal(item["target"], base[3]["target"]) and item["label"].item() == 3
    assert all(torch.equal(x, y) for x, y in zip(_inputs(a), _inputs(b)))
    assert all(torch.equal(x, y) for x, y in zip(_inputs(a), _inputs(a)))  # re-reading is stable
    # Items differ from each other, from another seed, and from another epoch.
    assert not torch.equal(a[0]["input"], a[1]["input"])
    other_seed = D.PairedDataset(base, _standin_noise_and_box, seed=2)
    assert all(not torch.equal(x, y) for x, y in zip(_inputs(a), _inputs(other_seed)))
    epoch0 = _inputs(a)
    a.set_epoch(1)
    assert all(not torch.equal(x, y) for x, y in zip(epoch0, _inputs(a)))
    a.set_epoch(0)
    assert all(torch.equal(x, y) for x, y in zip(epoch0, _inputs(a)))


def test_paired_dataset_with_workers_matches_sequential(photo_dir: Path) -> None:
    patches = D.ImageFolderPatches(photo_dir, patch_size=16, length=12, seed=5)
    paired = D.PairedDataset(patches, _standin_noise_and_box, seed=9)
    paired.set_epoch(2)  # forwarded to the patches too
    assert patches.epoch == 2
    batches = list(DataLoader(paired, batch_size=4, num_workers=2, worker_init_fn=D.seed_worker))
    assert batches[0]["input"].shape == (4, 3, 16, 16) and batches[0]["sigma"].shape == (4,)
    workers = torch.cat([b["input"] for b in batches])
    sequential = torch.stack(_inputs(paired))
    assert torch.equal(workers, sequential)


def test_paired_dataset_bad_arguments() -> None:
    with pytest.raises(TypeError, match="spec"):
        D.PairedDataset(_Fixed(), 42)  # type: ignore[arg-type]

    class NoTarget(_Fixed):
        def __getitem__(self, i):
            return {"image": self.images[i]}

    with pytest.raises(TypeError, match="'target'"):
        D.PairedDataset(NoTarget(), _standin_noise_and_box)[0]


def test_paired_dataset_with_real_spec() -> None:
    base = _Fixed(4)
    ds = D.PairedDataset(base, "gaussian:sigma=25", seed=0)
    item = ds[0]
    noise = item["input"] - item["target"]
    assert 15 / 255 < noise.std().item() < 30 / 255  # clipping at 0/1 shrinks it a little
    assert torch.equal(item["input"], D.PairedDataset(base, "gaussian:sigma=25", seed=0)[0]["input"])
    masked = D.PairedDataset(base, "mask:box", seed=0)[1]
    assert masked["mask"].shape == (1, 16, 16) and masked["mask"].sum() > 0
    with pytest.raises(CorruptionSpecError):
        D.PairedDataset(base, "nonsense:foo=1")
