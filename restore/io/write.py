"""Image files out: every common format at 8 or 16 bits, rounded, atomic, PNG streamed in row bands.

:func:`write_image` quantises with rounding (not truncation) and writes
atomically through :func:`restore.io.atomic.atomic_output`: a crash or an encoder error never
leaves a half-written file under the final name, nor clobbers an old one. PNG,
the format of every output, is encoded band by band (:data:`WRITE_BAND_ROWS` rows), so a huge
image is never copied whole, quantized or encoded.
"""

from __future__ import annotations

import io as _io
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from restore.io.atomic import atomic_output
from restore.io.common import icc_matches

__all__ = ["WRITE_BAND_ROWS", "quantize", "to_uint8", "write_image"]

#: Rows quantized (and, for PNG, filtered and compressed) at a time when writing: their float32
#: temporaries stay a band's, not the image's (gigabytes at 100 megapixels).
WRITE_BAND_ROWS = 256


def quantize(image: torch.Tensor, bit_depth: int) -> np.ndarray:
    """CHW float [0,1] -> HxWxC uint8/uint16, clamped and rounded to nearest (in row bands: no float copy)."""
    c, h, w = image.shape
    out = np.empty((h, w, c), dtype=np.uint8 if bit_depth == 8 else np.uint16)
    for r0 in range(0, h, WRITE_BAND_ROWS):
        out[r0 : r0 + WRITE_BAND_ROWS] = _quantize_band(image[:, r0 : r0 + WRITE_BAND_ROWS], bit_depth)
    return out


def _quantize_band(image: torch.Tensor, bit_depth: int) -> np.ndarray:
    top = 255 if bit_depth == 8 else 65535
    if not image.is_floating_point():  # samples as stored (read_image(integers=True)): kept, or rescaled
        stored = 255 if image.dtype == torch.uint8 else 65535
        if stored == top:
            return image.detach().cpu().permute(1, 2, 0).numpy().copy()
        image = image.detach().to("cpu", torch.float32).div_(stored)
    # float32 is enough: x * 65535 carries an error below 0.004, far from the
    # 0.5 that would change the rounding of k / 65535. clamp() copies, so the
    # in-place ops never touch the caller's tensor.
    values = image.detach().to("cpu", torch.float32).clamp(0.0, 1.0).mul_(top).round_()
    return values.permute(1, 2, 0).numpy().astype(np.uint8 if bit_depth == 8 else np.uint16)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """CHW or 1CHW float [0,1] -> HxWxC uint8 (HxW for one channel), rounded.

    For previews, grids and TensorBoard, where a numpy image is wanted.
    """
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3:
        raise ValueError(f"to_uint8: expected a CHW or 1CHW tensor, got shape {tuple(image.shape)}")
    array = quantize(image, 8)
    return array[:, :, 0] if array.shape[2] == 1 else array


def _convert_alpha(path: Path, alpha: object, size: tuple[int, int], bit_depth: int) -> np.ndarray:
    """Validate ``alpha`` and bring it to the written depth (exact when dtypes match)."""
    if isinstance(alpha, torch.Tensor):
        raise TypeError(f"{path}: alpha must be a numpy uint8/uint16 array (as read_image returns), not a tensor")
    if not isinstance(alpha, np.ndarray):
        raise TypeError(f"{path}: alpha must be a numpy uint8/uint16 array, got {type(alpha).__name__}")
    if alpha.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: alpha must be uint8 or uint16, got {alpha.dtype}")
    if alpha.shape != size:
        raise ValueError(f"{path}: alpha has shape {alpha.shape}, the image is {size[0]}x{size[1]} (HxW)")
    if bit_depth == 8:
        if alpha.dtype == np.uint8:
            return alpha
        # 65535 / 255 = 257 exactly, so 8 -> 16 -> 8 round-trips bit-exactly.
        return np.round(alpha.astype(np.float64) / 257.0).astype(np.uint8)
    if alpha.dtype == np.uint16:
        return alpha
    return alpha.astype(np.uint16) * 257


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _encode_png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (any of 1-4 channels) of an HxWxC uint16 array, in memory (see `_write_png`)."""
    buffer = _io.BytesIO()
    _write_png(buffer, array.shape[1], 16, iter([array]))
    return buffer.getvalue()


#: Compressed bytes gathered into one IDAT chunk by `_write_png`.
_IDAT_BYTES = 1 << 20


def _write_png(handle: Any, width: int, bit_depth: int, bands: Iterator[np.ndarray],
               icc_profile: bytes | None = None) -> None:
    """Stream a PNG to ``handle`` from row bands (HxWxC uint8/uint16, C = 1-4: gray, gray+alpha, RGB, RGBA).

    Only a band is ever held, uncompressed or compressed, so a 100-megapixel image is written in
    the memory of a few rows (Pillow and OpenCV need the whole image and its encoded copy). Rows
    use the "Up" filter (good on smooth images) and zlib level 1 (fast; what Pillow got before).
    """
    comp = zlib.compressobj(1)
    previous: np.ndarray | None = None
    pending: list[bytes] = []
    size = 0
    height = 0
    started = False
    for band in bands:
        rows_n, band_width, channels = band.shape
        if band_width != width:
            raise ValueError(f"_write_png: a band is {band_width} wide, the image {width}")
        if not started:
            colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
            handle.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", b"\0" * 13))  # the size is patched below
            if icc_profile is not None:  # iCCP precedes IDAT: name, NUL, method 0, zlib data
                handle.write(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
            started = True
        raw = (band.astype(">u2") if bit_depth == 16 else band).reshape(rows_n, -1).view(np.uint8)
        rows = np.empty((rows_n, raw.shape[1] + 1), dtype=np.uint8)
        rows[:, 0] = 2  # filter type "Up"
        np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG wants
        if previous is None:
            rows[0, 0] = 0  # the first row has nothing above it
            rows[0, 1:] = raw[0]
        else:
            np.subtract(raw[0], previous, out=rows[0, 1:])
        previous = raw[-1].copy()
        height += rows_n
        data = comp.compress(rows.tobytes())
        pending.append(data)
        size += len(data)
        if size >= _IDAT_BYTES:
            handle.write(_png_chunk(b"IDAT", b"".join(pending)))
            pending, size = [], 0
    if not started:
        raise ValueError("_write_png: no rows")
    pending.append(comp.flush())
    handle.write(_png_chunk(b"IDAT", b"".join(pending)) + _png_chunk(b"IEND", b""))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    handle.seek(8)
    handle.write(_png_chunk(b"IHDR", header))
    handle.seek(0, os.SEEK_END)


_WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


def write_image(
    path: str | os.PathLike,
    image: torch.Tensor,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    *,
    quality: int = 95,
    icc_profile: bytes | None = None,
) -> None:
    """Write a CHW or 1CHW float image in [0, 1] atomically; format from the suffix.

    Values are clamped and rounded. A uint8 or uint16 image (`read_image` with ``integers=True``)
    holds the samples themselves: written unchanged at its own depth, rescaled at the other.
    ``alpha`` (HxW uint8/uint16, e.g. from :func:`read_image`) is written unchanged when its dtype matches
    ``bit_depth`` and scaled exactly otherwise. 16-bit output is PNG or TIFF;
    JPEG (``quality``, 4:4:4 chroma) and BMP have no alpha; WebP is written
    lossless and has no grayscale (gray is stored as RGB). 16-bit images with
    alpha are written as PNG only. ``icc_profile`` (e.g.
    :attr:`LoadedImage.icc_profile`) is embedded verbatim in PNG, JPEG, WebP
    and TIFF at either depth, so colour-managed viewers keep the source's
    colours; BMP drops it, and so does any output whose channels the profile
    does not describe (a GRAY profile on RGB, e.g. after colorization).
    """
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: cannot choose a format from suffix {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(_WRITE_FORMATS))}"
        )
    if bit_depth not in (8, 16):
        raise ValueError(f"{path}: bit_depth must be 8 or 16, got {bit_depth!r}")
    if bit_depth == 16 and fmt not in ("PNG", "TIFF"):
        raise ValueError(f"{path}: 16-bit output needs .png or .tif/.tiff, not {path.suffix}")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{path}: image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"{path}: image must be CHW or 1CHW with 1 or 3 channels, got shape {tuple(image.shape)}")
    if not image.is_floating_point() and image.dtype not in (torch.uint8, torch.uint16):
        raise ValueError(f"{path}: image must be a float tensor in [0, 1] (or uint8/uint16 samples), got {image.dtype}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{path}: image is empty, shape {tuple(image.shape)}")
    if image.is_floating_point() and not all(bool(torch.isfinite(image[:, r0 : r0 + WRITE_BAND_ROWS]).all())
               for r0 in range(0, image.shape[1], WRITE_BAND_ROWS)):  # in bands: isfinite copies
        raise ValueError(f"{path}: image contains NaN or infinite values")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"{path}: quality must be in 1..100, got {quality!r}")
    if icc_profile is not None and not isinstance(icc_profile, (bytes, bytearray)):
        raise TypeError(f"{path}: icc_profile must be bytes, got {type(icc_profile).__name__}")

    if alpha is not None:
        if fmt in ("JPEG", "BMP"):
            raise ValueError(f"{path}: {fmt} cannot store an alpha channel; write .png, .tif or .webp")
        alpha = _convert_alpha(path, alpha, tuple(image.shape[1:]), bit_depth)

    colour_channels = image.shape[0]
    if fmt == "WEBP":
        colour_channels = 3  # WebP stores gray as RGB
    if not icc_profile or fmt == "BMP" or not icc_matches(bytes(icc_profile), colour_channels):
        icc_profile = None
    else:
        icc_profile = bytes(icc_profile)

    if fmt == "PNG":  # streamed, band by band: no full-size copy of a huge image, quantized or encoded

        def bands() -> Iterator[np.ndarray]:
            for r0 in range(0, image.shape[1], WRITE_BAND_ROWS):
                band = _quantize_band(image[:, r0 : r0 + WRITE_BAND_ROWS], bit_depth)
                if alpha is not None:
                    band = np.concatenate([band, alpha[r0 : r0 + WRITE_BAND_ROWS, :, None]], axis=2)
                yield band

        with atomic_output(path) as tmp:
            with open(tmp, "wb") as handle:
                _write_png(handle, image.shape[2], bit_depth, bands(), icc_profile)
        return

    array = quantize(image, bit_depth)  # HxWxC
    if alpha is not None:
        array = np.concatenate([array, alpha[:, :, None]], axis=2)
    if bit_depth == 16:
        payload = _encode_16bit(path, fmt, array)
        if icc_profile is not None:
            payload = _tiff_with_icc(path, payload, icc_profile)
    else:
        payload = _encode_8bit(fmt, array, int(quality), icc_profile)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(payload)


def _encode_8bit(fmt: str, array: np.ndarray, quality: int, icc_profile: bytes | None = None) -> bytes:
    """HxWxC uint8 (C = 1..4) -> encoded bytes with Pillow (+ ICC profile, if given)."""
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    img = Image.fromarray(np.ascontiguousarray(array[:, :, 0] if mode == "L" else array))
    options: dict = {}
    if fmt == "PNG":
        # Level 1 (OpenCV's default too): about twice as fast as Pillow's 6 on
        # photos for ~15% larger files, which suits batch restoration outputs.
        options = {"compress_level": 1}
    elif fmt == "JPEG":
        options = {"quality": quality, "subsampling": 0, "optimize": True}
    elif fmt == "WEBP":
        options = {"lossless": True, "quality": 100, "method": 4}
        if mode == "L":
            img = img.convert("RGB")
        elif mode == "LA":
            img = img.convert("RGBA")
    elif fmt == "TIFF":
        options = {"compression": "tiff_adobe_deflate"}
    if icc_profile is not None:
        options["icc_profile"] = icc_profile
    buffer = _io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _tiff_with_icc(path: Path, tiff: bytes, profile: bytes) -> bytes:
    """Add the ICC profile tag (34675) to the first IFD of a classic TIFF from OpenCV.

    Entries cannot be inserted in place, so the profile and a copy of the IFD
    with one more entry are appended and the header is pointed at the copy;
    every other offset stays valid (the old IFD is left as unused bytes).
    """
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(tiff[:4])
    if order is None:
        raise ValueError(f"{path}: cannot embed the ICC profile: the TIFF encoder wrote no classic TIFF header")
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    entries = [tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k] for k in range(count)]
    entries = [e for e in entries if struct.unpack_from(order + "H", e)[0] != 34675]
    next_ifd = tiff[ifd + 2 + 12 * count : ifd + 6 + 12 * count]
    out = bytearray(tiff)
    out += b"\x00" * (len(out) % 2)  # TIFF offsets are word-aligned
    entries.append(struct.pack(order + "HHII", 34675, 7, len(profile), len(out)))  # UNDEFINED bytes
    out += profile + b"\x00" * (len(profile) % 2)
    entries.sort(key=lambda e: struct.unpack_from(order + "H", e)[0])  # IFDs are sorted by tag
    new_ifd = len(out)
    out += struct.pack(order + "H", len(entries)) + b"".join(entries) + next_ifd
    out[4:8] = struct.pack(order + "I", new_ifd)
    return bytes(out)


def _encode_16bit(path: Path, fmt: str, array: np.ndarray) -> bytes:
    """HxWxC uint16 -> TIFF bytes at full depth (PNG is streamed by `_write_png`)."""
    channels = array.shape[2]
    if channels in (2, 4):
        # OpenCV would store the 4th channel as an unspecified extra sample, not
        # as alpha, so other software would not see transparency.
        raise ValueError(f"{path}: 16-bit TIFF with alpha is not supported; write .png instead")
    import cv2

    if channels == 3:
        array = array[:, :, ::-1]  # OpenCV wants BGR
    elif channels == 4:
        array = array[:, :, [2, 1, 0, 3]]
    ok, encoded = cv2.imencode(".tiff", np.ascontiguousarray(array))
    if not ok:
        raise ValueError(f"{path}: OpenCV failed to encode a 16-bit {fmt} image of shape {array.shape}")
    return encoded.tobytes()
