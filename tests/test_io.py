"""Tests for restore.io (read, write, atomic, folders): every format / depth / mode, bad files, atomic writes, walking.

All images are generated in tmp_path; they are tiny so the file runs in seconds.
"""

from __future__ import annotations

import io
import os
import pickle
import stat
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from restore import io as rio
from restore.io import atomic as io_atomic
from restore.io import read as io_read
from restore.io import write as io_write
from restore.io import ImageReadError, LoadedImage, list_images, read_image, write_image

RNG = np.random.default_rng(1234)


def _rand(shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)


def _as_ints(loaded: LoadedImage) -> np.ndarray:
    """Tensor back to the integer samples it came from (HxWxC)."""
    top = 65535 if loaded.bit_depth == 16 else 255
    arr = np.rint(loaded.image.permute(1, 2, 0).numpy().astype(np.float64) * top)
    return arr.astype(np.uint16 if loaded.bit_depth == 16 else np.uint8)


def _png_with_exif(png: bytes, orientation: int) -> bytes:
    """Insert an eXIf chunk (after IHDR) into PNG bytes."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    if payload.startswith(b"Exif\x00\x00"):
        payload = payload[6:]  # the PNG chunk holds the bare TIFF structure
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]


# --------------------------------------------------------------------------- 8-bit formats


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff", ".webp", ".PNG"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_lossless_8bit_round_trip_is_exact(tmp_path: Path, suffix: str, mode: str) -> None:
    channels = 1 if mode == "L" else 3
    pixels = _rand((7, 11, channels))
    path = tmp_path / f"img{suffix}"
    lossless = {"lossless": True} if suffix == ".webp" else {}
    Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels).save(path, **lossless)
    loaded = read_image(path)
    assert loaded.image.dtype == torch.float32 and loaded.bit_depth == 8 and loaded.alpha is None
    assert loaded.path == path
    expected_c = 3 if (suffix == ".webp") else channels  # WebP has no grayscale
    assert loaded.image.shape == (expected_c, 7, 11)
    np.testing.assert_array_equal(_as_ints(loaded), np.broadcast_to(pixels, (7, 11, expected_c)))

    # ...and write_image -> read_image reproduces the same samples.
    out = tmp_path / f"out{suffix}"
    write_image(out, loaded.image)
    np.testing.assert_array_equal(_as_ints(read_image(out)), _as_ints(loaded))


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".JPG"])
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trip_close(tmp_path: Path, suffix: str, channels: int) -> None:
    # A smooth image: JPEG at quality 95 with 4:4:4 chroma is then near-lossless.
    yy, xx = np.mgrid[0:32, 0:48]
    base = (yy * 4 + xx * 2) / (31 * 4 + 47 * 2)
    image = torch.from_numpy(np.stack([base, base[::-1], 1 - base][:channels])).float()
    path = tmp_path / f"a{suffix}"
    write_image(path, image)
    loaded = read_image(path)
    assert loaded.image.shape == image.shape and loaded.bit_depth == 8
    assert float((loaded.image - image).abs().mean()) < 2 / 255


def test_jpeg_quality_changes_size(tmp_path: Path) -> None:
    image = torch.from_numpy(_rand((3, 64, 64)).astype(np.float32) / 255)
    write_image(tmp_path / "hi.jpg", image, quality=95)
    write_image(tmp_path / "lo.jpg", image, quality=20)
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size
    with pytest.raises(ValueError, match="quality"):
        write_image(tmp_path / "bad.jpg", image, quality=0)


# --------------------------------------------------------------------------- alpha


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_kept_aside_and_written_back_bit_exact(tmp_path: Path, suffix: str, mode: str) -> None:
    pixels = _rand((9, 5, len(mode)))
    pixels[0, 0, -1] = 0  # fully transparent pixel: colour must still survive (PNG/TIFF)
    src = tmp_path / f"src{suffix}"
    Image.fromarray(pixels).save(src, **({"lossless": True} if suffix == ".webp" else {}))
    loaded = read_image(src)
    assert loaded.alpha is not None and loaded.alpha.dtype == np.uint8 and loaded.alpha.shape == (9, 5)
    np.testing.assert_array_equal(loaded.alpha, pixels[:, :, -1])
    expected_c = 1 if (mode == "LA" and suffix != ".webp") else 3
    assert loaded.image.shape == (expected_c, 9, 5)
    if suffix != ".webp":  # WebP may alter colour under alpha 0
        np.testing.assert_array_equal(_as_ints(loaded), pixels[:, :, : len(mode) - 1])

    dst = tmp_path / f"dst{suffix}"
    write_image(dst, loaded.image, alpha=loaded.alpha)
    again = read_image(dst)
    np.testing.assert_array_equal(again.alpha, pixels[:, :, -1])
    assert again.alpha.dtype == np.uint8


def test_alpha_depth_conversion_is_exact(tmp_path: Path) -> None:
    image = torch.rand(3, 4, 6)
    alpha8 = _rand((4, 6))
    alpha8[0, :2] = (0, 255)
    write_image(tmp_path / "a16.png", image, alpha=alpha8, bit_depth=16)
    loaded16 = read_image(tmp_path / "a16.png")
    assert loaded16.alpha.dtype == np.uint16
    np.testing.assert_array_equal(loaded16.alpha, alpha8.astype(np.uint16) * 257)
    # 16 -> 8 scales back exactly to the original 8-bit alpha.
    write_image(tmp_path / "a8.png", loaded16.image, alpha=loaded16.alpha, bit_depth=8)
    np.testing.assert_array_equal(read_image(tmp_path / "a8.png").alpha, alpha8)


def test_alpha_validation(tmp_path: Path) -> None:
    image = torch.rand(3, 4, 6)
    with pytest.raises(ValueError, match="alpha has shape"):
        write_image(tmp_path / "x.png", image, alpha=np.zeros((6, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        write_image(tmp_path / "x.png", image, alpha=np.zeros((4, 6), np.float32))
    with pytest.raises(TypeError, match="numpy"):
        write_image(tmp_path / "x.png", image, alpha=torch.zeros(4, 6))
    with pytest.raises(ValueError, match="JPEG cannot store an alpha"):
        write_image(tmp_path / "x.jpg", image, alpha=np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError, match="BMP cannot store an alpha"):
        write_image(tmp_path / "x.bmp", image, alpha=np.zeros((4, 6), np.uint8))
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- 16-bit


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_files_keep_full_precision(tmp_path: Path, suffix: str, channels: int) -> None:
    pixels = _rand((6, 10, channels), np.uint16)
    pixels[0, 0, 0] = 1  # a value that 8 bits cannot hold
    path = tmp_path / f"deep{suffix}"
    bgr = pixels[:, :, [2, 1, 0, 3][:channels]] if channels > 1 else pixels[:, :, 0]
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr))
    loaded = read_image(path)
    assert loaded.bit_depth == 16
    assert loaded.image.shape == (1 if channels == 1 else 3, 6, 10)
    np.testing.assert_array_equal(_as_ints(loaded), pixels[:, :, : min(channels, 3)])
    assert float(loaded.image[0, 0, 0]) == pytest.approx(1 / 65535, rel=1e-6)
    if channels == 4:
        assert loaded.alpha.dtype == np.uint16
        np.testing.assert_array_equal(loaded.alpha, pixels[:, :, 3])
    else:
        assert loaded.alpha is None


def test_16bit_gray_pillow_mode_and_gray_alpha_png(tmp_path: Path) -> None:
    gray = _rand((5, 3), np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")  # Pillow mode I;16
    np.testing.assert_array_equal(_as_ints(read_image(tmp_path / "g.png"))[:, :, 0], gray)

    # 16-bit gray + alpha (PNG colour type 4), which neither Pillow nor OpenCV writes.
    image = torch.from_numpy(gray[None].astype(np.float32) / 65535)
    alpha = _rand((5, 3), np.uint16)
    write_image(tmp_path / "ga.png", image, alpha=alpha, bit_depth=16)
    with Image.open(tmp_path / "ga.png") as check:  # an independent decoder accepts the file
        check.load()
    loaded = read_image(tmp_path / "ga.png")
    assert loaded.image.shape == (1, 5, 3) and loaded.bit_depth == 16
    np.testing.assert_array_equal(_as_ints(loaded)[:, :, 0], gray)
    np.testing.assert_array_equal(loaded.alpha, alpha)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_write_round_trip(tmp_path: Path, suffix: str, channels: int) -> None:
    pixels = _rand((channels, 13, 7), np.uint16)
    image = torch.from_numpy(pixels.astype(np.float64) / 65535).float()
    path = tmp_path / f"w{suffix}"
    write_image(path, image, bit_depth=16)
    loaded = read_image(path)
    assert loaded.bit_depth == 16 and loaded.image.shape == image.shape
    np.testing.assert_array_equal(_as_ints(loaded), pixels.transpose(1, 2, 0))


def test_16bit_output_restrictions(tmp_path: Path) -> None:
    image = torch.rand(3, 4, 4)
    with pytest.raises(ValueError, match="16-bit output needs"):
        write_image(tmp_path / "x.jpg", image, bit_depth=16)
    with pytest.raises(ValueError, match="16-bit TIFF with alpha"):
        write_image(tmp_path / "x.tif", image, alpha=np.zeros((4, 4), np.uint16), bit_depth=16)
    with pytest.raises(ValueError, match="bit_depth must be 8 or 16"):
        write_image(tmp_path / "x.png", image, bit_depth=12)


# --------------------------------------------------------------------------- palette, 1-bit, CMYK


def test_palette_without_and_with_transparency(tmp_path: Path) -> None:
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 12)
    indices = np.array([[0, 1, 2], [3, 2, 1]], dtype=np.uint8)
    img = Image.frombytes("P", (3, 2), indices.tobytes())
    img.putpalette(palette)
    img.save(tmp_path / "p.png")
    img.save(tmp_path / "p.bmp")
    expected = np.array(palette[:12], np.uint8).reshape(4, 3)[indices]
    for name in ("p.png", "p.bmp"):
        loaded = read_image(tmp_path / name)
        assert loaded.alpha is None and loaded.image.shape == (3, 2, 3)
        np.testing.assert_array_equal(_as_ints(loaded), expected)

    img.save(tmp_path / "pt.png", transparency=2)
    loaded = read_image(tmp_path / "pt.png")
    np.testing.assert_array_equal(_as_ints(loaded), expected)
    np.testing.assert_array_equal(loaded.alpha, np.where(indices == 2, 0, 255).astype(np.uint8))


def test_bilevel_and_cmyk(tmp_path: Path) -> None:
    bits = _rand((4, 9)) > 127
    Image.fromarray(bits).save(tmp_path / "b.png")
    loaded = read_image(tmp_path / "b.png")
    assert loaded.image.shape == (1, 4, 9)
    np.testing.assert_array_equal(loaded.image[0].numpy(), bits.astype(np.float32))

    cmyk = Image.new("CMYK", (16, 16), (255, 0, 0, 0))  # pure cyan ink
    cmyk.paste((0, 0, 0, 255), (0, 8, 16, 16))  # bottom half black ink
    cmyk.save(tmp_path / "c.jpg", quality=100)
    loaded = read_image(tmp_path / "c.jpg")
    assert loaded.image.shape == (3, 16, 16)
    top, bottom = loaded.image[:, 2, 8], loaded.image[:, 13, 8]
    assert torch.allclose(top, torch.tensor([0.0, 1.0, 1.0]), atol=0.05)
    assert torch.allclose(bottom, torch.zeros(3), atol=0.05)


# --------------------------------------------------------------------------- EXIF orientation

# Stored 2x3 block layout (letters = distinct colours) and what a viewer shows.
_STORED = [["a", "b", "c"], ["d", "e", "f"]]
_DISPLAYED = {
    1: ["abc", "def"],
    2: ["cba", "fed"],
    3: ["fed", "cba"],
    4: ["def", "abc"],
    5: ["ad", "be", "cf"],
    6: ["da", "eb", "fc"],
    7: ["fc", "eb", "da"],
    8: ["cf", "be", "ad"],
}
_COLOURS = {k: v for k, v in zip("abcdef", [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)])}
_BLOCK = 8


def _block_image() -> np.ndarray:
    rows = [np.concatenate([np.full((_BLOCK, _BLOCK, 3), _COLOURS[c], np.uint8) for c in row], axis=1) for row in _STORED]
    return np.concatenate(rows, axis=0)


def _assert_layout(loaded: LoadedImage, orientation: int) -> None:
    layout = _DISPLAYED[orientation]
    assert loaded.image.shape[1:] == (len(layout) * _BLOCK, len(layout[0]) * _BLOCK)
    for r, row in enumerate(layout):
        for c, letter in enumerate(row):
            centre = loaded.image[:, r * _BLOCK + _BLOCK // 2, c * _BLOCK + _BLOCK // 2]
            assert torch.allclose(centre, torch.tensor(_COLOURS[letter], dtype=torch.float32) / 255, atol=0.08), (
                orientation, r, c, letter, centre)


@pytest.mark.parametrize("orientation", [3, 6])
def test_jpeg_exif_orientation(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(_block_image()).save(path, exif=exif, quality=95, subsampling=0)
    _assert_layout(read_image(path), orientation)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_pillow_and_the_spec(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(_block_image()).save(path, exif=exif)
    loaded = read_image(path)
    _assert_layout(loaded, orientation)
    with Image.open(path) as img:
        reference = np.asarray(ImageOps.exif_transpose(img))
    np.testing.assert_array_equal(_as_ints(loaded), reference)

    tif = tmp_path / f"o{orientation}.tif"
    Image.fromarray(_block_image()).save(tif, exif=exif)
    _assert_layout(read_image(tif), orientation)


def test_orientation_applied_to_16bit_colour_and_alpha(tmp_path: Path) -> None:
    # 16-bit RGBA goes through OpenCV, which ignores EXIF: check we still rotate.
    pixels = _rand((2, 3, 4), np.uint16)
    png = io_write._encode_png16(pixels)
    path = tmp_path / "rot.png"
    path.write_bytes(_png_with_exif(png, 6))
    loaded = read_image(path)
    assert loaded.bit_depth == 16 and loaded.image.shape == (3, 3, 2)
    np.testing.assert_array_equal(_as_ints(loaded), np.rot90(pixels[:, :, :3], k=-1))
    np.testing.assert_array_equal(loaded.alpha, np.rot90(pixels[:, :, 3], k=-1))


# --------------------------------------------------------------------------- odd sizes


@pytest.mark.parametrize("size", [(1, 1), (37, 1001), (1001, 37)])
@pytest.mark.parametrize("channels", [1, 3])
def test_odd_sizes_round_trip(tmp_path: Path, size: tuple[int, int], channels: int) -> None:
    pixels = _rand((channels, *size))
    image = torch.from_numpy(pixels.astype(np.float32) / 255)
    write_image(tmp_path / "odd.png", image)
    loaded = read_image(tmp_path / "odd.png")
    assert loaded.image.shape == (channels, *size)
    assert torch.equal(loaded.image, image)


# --------------------------------------------------------------------------- bad files


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rand((64, 64, 3))).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rand((32, 32, 3))).save(buffer, format="PNG")
    return buffer.getvalue()


def _gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (4, 4)).save(buffer, format="GIF")
    return buffer.getvalue()


_BAD_FILES = {
    "truncated_jpeg": ("cut.jpg", lambda: _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "truncated"),
    "jpeg_missing_end": ("end.jpg", lambda: _jpeg_bytes()[:-40], "truncated"),
    "truncated_png": ("cut.png", lambda: _png_bytes()[: len(_png_bytes()) // 2], "truncated"),
    "png_missing_idat_tail": ("tail.png", lambda: _png_bytes()[:-13], "corrupt"),
    "empty": ("empty.png", lambda: b"", "empty"),
    "text_named_png": ("notes.png", lambda: b"this is not an image\n" * 5, "not a recognised image"),
    "gif_named_png": ("anim.png", _gif_bytes, "content is gif data"),
    "garbage_after_signature": ("sig.png", lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "corrupt png"),
    "jpeg_header_only": ("head.jpg", lambda: _jpeg_bytes()[:3], "corrupt jpeg"),
}


@pytest.mark.parametrize("case", sorted(_BAD_FILES))
def test_bad_files_raise_image_read_error_naming_the_file(tmp_path: Path, case: str) -> None:
    name, make, reason = _BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    assert reason in info.value.reason.lower()


def test_filesystem_problems_raise_image_read_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    cases = {
        folder: "directory",
        tmp_path / "missing.png": "no such file",
        tmp_path / "image.gif": "unsupported extension",
        tmp_path / "noext": "unsupported extension",
    }
    (tmp_path / "image.gif").write_bytes(_gif_bytes())
    (tmp_path / "noext").write_bytes(_png_bytes())
    for path, reason in cases.items():
        with pytest.raises(ImageReadError, match=reason) as info:
            read_image(path)
        assert info.value.path == path and str(path) in str(info.value)

    # Unreadable file (simulated: the tests may run as root, who can read anything).
    locked = tmp_path / "locked.png"
    locked.write_bytes(_png_bytes())

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(ImageReadError, match="Permission denied") as info:
        read_image(locked)
    assert info.value.path == locked


def test_pixel_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert io_read.MAX_PIXELS >= 6000 * 4000 * 4  # large photos and scans must load
    assert Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS >= io_read.MAX_PIXELS
    path = tmp_path / "big.png"
    Image.new("L", (40, 30)).save(path)
    monkeypatch.setattr(io_read, "MAX_PIXELS", 40 * 30 - 1)
    with pytest.raises(ImageReadError, match="MAX_PIXELS"):
        read_image(path)
    monkeypatch.setattr(io_read, "MAX_PIXELS", 40 * 30)
    assert read_image(path).image.shape == (1, 30, 40)


def test_image_read_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(ImageReadError("a/b.png", "file is empty (0 bytes)")))
    assert isinstance(err, ImageReadError)
    assert err.path == Path("a/b.png") and err.reason == "file is empty (0 bytes)"
    assert str(err) == "a/b.png: file is empty (0 bytes)"


def test_read_mask(tmp_path: Path) -> None:
    mask = np.zeros((5, 6), np.uint8)
    mask[1:3, 2:5] = 255
    mask[4, 0] = 1  # any nonzero value is a hole
    Image.fromarray(mask).save(tmp_path / "m.png")
    loaded = rio.read_mask(tmp_path / "m.png")
    assert loaded.shape == (1, 5, 6) and loaded.dtype == torch.float32
    np.testing.assert_array_equal(loaded[0].numpy(), (mask > 0).astype(np.float32))


# --------------------------------------------------------------------------- writing


def test_write_rounds_clamps_and_accepts_batch_of_one(tmp_path: Path) -> None:
    values = torch.tensor([[[0.4 / 255, 0.6 / 255, 254.6 / 255, 1.7, -0.3, 0.5]]])
    original = values.clone()
    write_image(tmp_path / "q.png", values[None])  # 1CHW
    assert torch.equal(values, original)  # the caller's tensor is not modified
    with Image.open(tmp_path / "q.png") as img:
        stored = np.asarray(img)
    np.testing.assert_array_equal(stored[0], [0, 1, 255, 255, 0, 128])
    np.testing.assert_array_equal(rio.to_uint8(values), stored)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (torch.rand(2, 4, 4), ValueError, "1 or 3 channels"),
        (torch.rand(2, 3, 4, 4), ValueError, "CHW or 1CHW"),
        (torch.zeros(3, 4, 4, dtype=torch.int32), ValueError, "float"),
        (torch.full((1, 2, 2), float("nan")), ValueError, "NaN"),
        (np.zeros((3, 4, 4), np.float32), TypeError, "torch.Tensor"),
    ],
)
def test_write_rejects_bad_images(tmp_path: Path, image, error, match: str) -> None:
    with pytest.raises(error, match=match):
        write_image(tmp_path / "bad.png", image)
    assert not any(tmp_path.iterdir())


def test_write_unknown_suffix_and_creates_parents(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.gif"):
        write_image(tmp_path / "x.gif", torch.rand(3, 2, 2))
    target = tmp_path / "new" / "deep" / "x.png"
    write_image(target, torch.rand(3, 2, 2))
    assert read_image(target).image.shape == (3, 2, 2)
    assert stat.S_IMODE(target.stat().st_mode) == io_atomic._NEW_FILE_MODE


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_failed_encode_leaves_target_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.png"
    write_image(target, torch.zeros(1, 3, 3))
    before = target.read_bytes()

    def broken_encoder(*args, **kwargs):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(io_write, "_write_png", broken_encoder)  # PNG is encoded while it is written
    with pytest.raises(RuntimeError, match="encoder exploded"):
        write_image(target, torch.ones(1, 3, 3))
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == ["keep.png"]


def test_failure_while_committing_removes_temp_and_keeps_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.png"
    write_image(target, torch.zeros(3, 3, 3))
    before = target.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(io_atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        write_image(target, torch.ones(3, 3, 3))
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == ["keep.png"]


def test_atomic_output_contract(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.txt"
    with rio.atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".") and tmp.suffix == ".txt"
        tmp.write_text("first")
        assert not target.exists()  # nothing visible before the commit
    assert target.read_text() == "first"
    os.chmod(target, 0o640)

    with pytest.raises(KeyError):
        with rio.atomic_output(target) as tmp:
            tmp.write_text("half-written")
            raise KeyError("boom")
    assert target.read_text() == "first"
    assert _leftovers(target.parent) == ["report.txt"]

    with rio.atomic_output(target) as tmp:
        tmp.write_text("second")
    assert target.read_text() == "second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # existing permissions kept

    with pytest.raises(IsADirectoryError):
        with rio.atomic_output(tmp_path / "sub"):
            pass


# --------------------------------------------------------------------------- list_images


def test_list_images_walks_sorted_case_insensitive_skipping_hidden(tmp_path: Path) -> None:
    files = ["b.png", "a/z.JPG", "a/y.jpeg", "a/deep/x.TiFF", "c.webp", "d.bmp", "e.tif"]
    ignored = ["notes.txt", "f.gif", ".hidden.png", ".cache/in_hidden.png", "a/.x.tmp.png", "noext"]
    for name in files + ignored:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = list_images(tmp_path)
    assert found == sorted(tmp_path / f for f in files)
    assert found[:3] == [tmp_path / "a" / "deep" / "x.TiFF", tmp_path / "a" / "y.jpeg", tmp_path / "a" / "z.JPG"]
    assert all(p.is_relative_to(tmp_path) for p in found)


def test_list_images_single_file_and_missing(tmp_path: Path) -> None:
    odd = tmp_path / "photo.raw"
    odd.write_bytes(b"x")
    assert list_images(odd) == [odd]  # a file is returned as given; the reader decides
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(tmp_path / "nope")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_list_images_survives_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.png").write_bytes(b"x")
    (tmp_path / "a" / "b" / "two.png").write_bytes(b"x")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "a" / "self").symlink_to(".", target_is_directory=True)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    outside = tmp_path.parent / f"{tmp_path.name}_outside"
    outside.mkdir()
    (outside / "three.png").write_bytes(b"x")
    (tmp_path / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.warns(UserWarning, match="dangling.png: skipped, dangling symlink"):  # named, not dropped silently
        found = list_images(tmp_path)
    assert found == [tmp_path / "a" / "b" / "two.png", tmp_path / "a" / "one.png", tmp_path / "linked" / "three.png"]


# --------------------------------------------------------------------------- audit fixes


@pytest.mark.parametrize("name", ["a" * 240 + ".png", "b" * 251 + ".png", "é" * 125 + ".png", "c" * 255])
def test_atomic_output_temp_names_fit_long_file_names(tmp_path: Path, name: str) -> None:
    # Legal names up to 255 bytes; the temporary name used to be ~18 bytes longer.
    target = tmp_path / name
    assert len(os.fsencode(target.name)) <= 255
    with rio.atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".")
        assert len(os.fsencode(tmp.name)) <= 255
        assert tmp.suffix == target.suffix or not target.suffix
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x" and _leftovers(tmp_path) == [name]
    if target.suffix == ".png":
        write_image(target, torch.rand(3, 4, 5))
        assert read_image(target).image.shape == (3, 4, 5) and _leftovers(tmp_path) == [name]


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk (written here, independently of restore.io's helpers)."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_insert_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """Insert a chunk right after IHDR."""
    return png[:33] + _chunk(kind, payload) + png[33:]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_icc_profile_kept_8bit(tmp_path: Path, suffix: str) -> None:
    profile = _srgb_profile()
    pixels = _rand((6, 7, 3))
    src = tmp_path / f"src{suffix}"
    Image.fromarray(pixels).save(src, icc_profile=profile, **({"lossless": True} if suffix == ".webp" else {}))
    loaded = read_image(src)
    assert loaded.icc_profile == profile
    dst = tmp_path / f"dst{suffix}"
    write_image(dst, loaded.image, icc_profile=loaded.icc_profile)
    with Image.open(dst) as check:  # an independent reader sees the exact bytes
        assert check.info.get("icc_profile") == profile
    assert read_image(dst).icc_profile == profile
    # No profile in, none out.
    write_image(tmp_path / f"plain{suffix}", loaded.image)
    assert read_image(tmp_path / f"plain{suffix}").icc_profile is None


@pytest.mark.parametrize("channels", [3, 4])
def test_icc_profile_kept_16bit_png(tmp_path: Path, channels: int) -> None:
    profile = _srgb_profile()
    pixels = _rand((5, 8, channels), np.uint16)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels[:, :, [2, 1, 0, 3][:channels]]))
    assert ok
    src = tmp_path / "src.png"
    src.write_bytes(_png_insert_chunk(encoded.tobytes(), b"iCCP", b"wide\x00\x00" + zlib.compress(profile)))
    loaded = read_image(src)
    assert loaded.bit_depth == 16 and loaded.icc_profile == profile
    dst = tmp_path / "dst.png"
    write_image(dst, loaded.image, alpha=loaded.alpha, bit_depth=16, icc_profile=loaded.icc_profile)
    with Image.open(dst) as check:
        check.load()
        assert check.info.get("icc_profile") == profile
    again = read_image(dst)
    assert again.icc_profile == profile and again.bit_depth == 16
    np.testing.assert_array_equal(_as_ints(again), pixels[:, :, :3])
    if channels == 4:
        np.testing.assert_array_equal(again.alpha, pixels[:, :, 3])


def test_icc_profile_16bit_gray_alpha_png_and_tiff(tmp_path: Path) -> None:
    gray_profile = bytearray(_srgb_profile())
    gray_profile[16:20] = b"GRAY"  # header only: nothing here interprets the profile
    gray_profile = bytes(gray_profile)
    pixels = _rand((4, 6), np.uint16)
    image = torch.from_numpy(pixels[None].astype(np.float32) / 65535)
    write_image(tmp_path / "ga.png", image, alpha=_rand((4, 6), np.uint16), bit_depth=16, icc_profile=gray_profile)
    assert read_image(tmp_path / "ga.png").icc_profile == gray_profile

    profile = _srgb_profile()
    for channels, icc in ((1, gray_profile), (3, profile)):
        deep = _rand((channels, 5, 9), np.uint16)
        path = tmp_path / f"deep{channels}.tif"
        write_image(path, torch.from_numpy(deep.astype(np.float64) / 65535).float(), bit_depth=16, icc_profile=icc)
        with Image.open(path) as check:
            assert check.info.get("icc_profile") == icc
        loaded = read_image(path)
        assert loaded.icc_profile == icc and loaded.bit_depth == 16
        np.testing.assert_array_equal(_as_ints(loaded), deep.transpose(1, 2, 0))
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None


def test_icc_profile_dropped_where_it_does_not_describe_the_samples(tmp_path: Path) -> None:
    profile = _srgb_profile()  # an RGB profile
    Image.fromarray(_rand((4, 4))).save(tmp_path / "gray.png", icc_profile=profile)
    assert read_image(tmp_path / "gray.png").icc_profile is None  # RGB profile on gray data
    # An RGB profile is not written onto gray output (PNG forbids it) ...
    write_image(tmp_path / "g.png", torch.rand(1, 4, 4), icc_profile=profile)
    with Image.open(tmp_path / "g.png") as check:
        assert "icc_profile" not in check.info
    # ... but WebP stores gray as RGB, so there it fits; BMP has nowhere to put it.
    write_image(tmp_path / "g.webp", torch.rand(1, 4, 4), icc_profile=profile)
    assert read_image(tmp_path / "g.webp").icc_profile == profile
    write_image(tmp_path / "c.bmp", torch.rand(3, 4, 4), icc_profile=profile)
    assert read_image(tmp_path / "c.bmp").icc_profile is None
    with pytest.raises(TypeError, match="icc_profile"):
        write_image(tmp_path / "x.png", torch.rand(3, 4, 4), icc_profile="sRGB")


def _multi_frame_files(tmp_path: Path) -> dict[str, str]:
    a, b = Image.fromarray(_rand((8, 8, 3))), Image.fromarray(_rand((8, 8, 3)))
    a.save(tmp_path / "pages.tif", save_all=True, append_images=[b])
    a.save(tmp_path / "anim.png", save_all=True, append_images=[b, a], format="PNG")
    a.save(tmp_path / "anim.webp", save_all=True, append_images=[b], lossless=True)
    return {"pages.tif": "has 2 pages", "anim.png": "has 3 frames", "anim.webp": "has 2 frames"}


def test_multi_frame_files_are_refused(tmp_path: Path) -> None:
    for name, reason in _multi_frame_files(tmp_path).items():
        with pytest.raises(ImageReadError, match=reason) as info:
            read_image(tmp_path / name)
        assert "only single-frame images are supported" in info.value.reason
        assert info.value.path == tmp_path / name

    # An animated GIF is not cut to its first frame either: it is refused as GIF.
    frames = [Image.fromarray(_rand((8, 8, 3))).convert("P") for _ in range(3)]
    frames[0].save(tmp_path / "gif.png", format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match="GIF") as info:
        read_image(tmp_path / "gif.png")
    assert "not a recognised" not in info.value.reason


def test_single_frame_variants_still_load(tmp_path: Path) -> None:
    # Camera JPEGs (MPO: a photo plus preview frames) are one photo.
    a, b = Image.fromarray(_rand((16, 16, 3))), Image.fromarray(_rand((8, 8, 3)))
    a.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[b])
    with Image.open(tmp_path / "camera.jpg") as check:
        assert check.n_frames == 2
    assert read_image(tmp_path / "camera.jpg").image.shape == (3, 16, 16)
    # A single-frame TIFF, PNG and WebP load as before.
    for name in ("one.tif", "one.png", "one.webp"):
        a.save(tmp_path / name)
        assert read_image(tmp_path / name).image.shape == (3, 16, 16)


def test_tiff_with_reduced_resolution_pages_is_one_image(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    full, thumb = _rand((16, 12, 3)), _rand((4, 3, 3))
    path = tmp_path / "thumbs.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(full, photometric="rgb")
        tif.write(thumb, photometric="rgb", subfiletype=1)  # reduced-resolution copy
    np.testing.assert_array_equal(_as_ints(read_image(path)), full)


def _png16(pixels: np.ndarray, colour_type: int, extra: bytes = b"") -> bytes:
    """A 16-bit PNG (no filtering), written by hand so any chunk can be added."""
    height, width = pixels.shape[:2]
    raw = pixels.astype(">u2").reshape(height, -1).view(np.uint8)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), raw], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    idat = zlib.compress(rows.tobytes())
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_16bit_gray_trns_becomes_gray_alpha(tmp_path: Path) -> None:
    gray = _rand((6, 9), np.uint16)
    gray[gray == 1234] = 1235
    gray[1:3, 2:5] = 1234  # the transparent level
    (tmp_path / "g.png").write_bytes(_png16(gray, 0, _chunk(b"tRNS", struct.pack(">H", 1234))))
    loaded = read_image(tmp_path / "g.png")
    assert loaded.bit_depth == 16 and loaded.image.shape == (1, 6, 9)
    np.testing.assert_array_equal(_as_ints(loaded)[:, :, 0], gray)
    assert loaded.alpha is not None and loaded.alpha.dtype == np.uint16
    np.testing.assert_array_equal(loaded.alpha, np.where(gray == 1234, 0, 65535))
    write_image(tmp_path / "out.png", loaded.image, alpha=loaded.alpha, bit_depth=16)
    np.testing.assert_array_equal(read_image(tmp_path / "out.png").alpha, loaded.alpha)


def _strokes() -> np.ndarray:
    strokes = np.zeros((6, 8), bool)
    strokes[1:4, 2:6] = True
    strokes[5, 0] = True
    return strokes


@pytest.mark.parametrize(
    ("colour", "background"),
    [
        ((0, 0, 0), (0, 0, 0)),  # black strokes on transparent black (read as empty before)
        ((255, 255, 255), (255, 255, 255)),  # white strokes on transparent white (inverted before)
        ((255, 255, 255), (0, 0, 0)),  # white strokes on transparent black
        ((200, 30, 60), (255, 255, 255)),  # a colour layer: alpha carries the strokes
    ],
)
def test_read_mask_strokes_on_transparent(tmp_path: Path, colour, background) -> None:
    strokes = _strokes()
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[:, :, :3] = background
    rgba[strokes, :3] = colour
    rgba[strokes, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "m.png")
    np.testing.assert_array_equal(rio.read_mask(tmp_path / "m.png")[0].numpy(), strokes.astype(np.float32))


def test_read_mask_alpha_only_and_partial_alpha(tmp_path: Path) -> None:
    strokes = _strokes()
    # Gray+alpha whose gray is all zero: the alpha alone is the mask (soft edges count).
    alpha = np.where(strokes, 255, 0).astype(np.uint8)
    alpha[0, 0] = 40
    la = np.stack([np.zeros((6, 8), np.uint8), alpha], axis=2)
    Image.fromarray(la).save(tmp_path / "la.png")
    np.testing.assert_array_equal(rio.read_mask(tmp_path / "la.png")[0].numpy(), (alpha > 0).astype(np.float32))

    # Visible pixels of different colours: hole iff visible and nonzero.
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[:, :, 3] = 255
    rgba[strokes, :3] = 255  # opaque white: holes
    rgba[0, :, 3] = 0  # a transparent row ...
    rgba[0, :, :3] = 255  # ... whose hidden colour is white: not a hole
    expected = strokes.copy()
    expected[0] = False
    Image.fromarray(rgba).save(tmp_path / "mixed.png")
    np.testing.assert_array_equal(rio.read_mask(tmp_path / "mixed.png")[0].numpy(), expected.astype(np.float32))

    # Fully transparent: no hole.
    Image.fromarray(np.zeros((6, 8, 4), np.uint8)).save(tmp_path / "clear.png")
    assert float(rio.read_mask(tmp_path / "clear.png").sum()) == 0


def test_read_mask_opaque_alpha_behaves_as_before(tmp_path: Path) -> None:
    mask = np.zeros((6, 8), np.uint8)
    mask[2:5, 1:4] = 255
    mask[0, 7] = 3  # any nonzero value is a hole
    rgba = np.stack([mask, np.zeros_like(mask), np.zeros_like(mask), np.full_like(mask, 255)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(rio.read_mask(tmp_path / "rgba.png")[0].numpy(), (mask > 0).astype(np.float32))
    # Opaque and constant (all black or all white): the colour decides, not the alpha.
    for value in (0, 255):
        flat = np.full((6, 8, 4), value, np.uint8)
        flat[:, :, 3] = 255
        Image.fromarray(flat).save(tmp_path / "flat.png")
        assert float(rio.read_mask(tmp_path / "flat.png").mean()) == (1.0 if value else 0.0)


def test_pixel_limit_without_pillow_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (40, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns from 1001 pixels
    monkeypatch.setattr(io_read, "MAX_PIXELS", 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageReadError, match="MAX_PIXELS"):
            read_image(path)
        monkeypatch.setattr(io_read, "MAX_PIXELS", 40 * 30)
        assert read_image(path).image.shape == (1, 30, 40)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_float_tiff_and_foreign_content_messages(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    Image.fromarray(ramp).save(tmp_path / "gray_float.tif")  # Pillow mode F
    assert cv2.imwrite(str(tmp_path / "rgb_float.tiff"), np.stack([ramp] * 3, axis=2))
    for name in ("gray_float.tif", "rgb_float.tiff"):
        with pytest.raises(ImageReadError, match="floating-point TIFF samples are not supported") as info:
            read_image(tmp_path / name)
        assert "corrupt" not in info.value.reason and "8- or 16-bit" in info.value.reason

    (tmp_path / "pic.png").write_bytes(_gif_bytes())
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "pic.png")
    assert "GIF" in info.value.reason and ".png" in info.value.reason


# --------------------------------------------------------------------------- the package


def test_public_names_come_from_one_submodule_each() -> None:
    """`restore.io` re-exports its submodules' public names, each owned (in ``__all__``) by exactly one of them."""
    from restore.io import common, folders, masks

    modules = (io_atomic, common, folders, masks, io_read, io_write)
    for name in rio.__all__:
        owners = [module for module in modules if name in module.__all__]
        assert len(owners) == 1, (name, [module.__name__ for module in owners])
        assert getattr(rio, name) is getattr(owners[0], name), name
    for module in modules:  # and each submodule's names are its own, not another's re-exported
        for name in module.__all__:
            value = getattr(module, name)
            assert getattr(value, "__module__", module.__name__) == module.__name__, (module.__name__, name)
