"""Image files in: decode every common format completely, or say why not.

* :func:`read_image` decodes PNG, JPEG, BMP, TIFF and WebP (8- and 16-bit;
  gray, gray+alpha, RGB, RGBA, palette, CMYK), applies the EXIF orientation and
  keeps the alpha channel and the embedded ICC profile aside, untouched, so they
  can be written back exactly (`restore.io.write`). A file that cannot be decoded *completely*
  (empty, truncated, corrupt, not an image, unsupported, several frames or
  pages, more than :data:`MAX_PIXELS`) raises :class:`ImageReadError` naming the file and the reason; a
  half-decoded image (or the first frame of an animation) is never returned.

Decoding uses Pillow (format detection, validation, EXIF, palettes, CMYK);
16-bit colour and 16-bit gray+alpha images, which Pillow can only represent in
8 bits, are decoded again with OpenCV so they keep their full precision.
"""

from __future__ import annotations

import io as _io
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from restore.io.common import IMAGE_EXTENSIONS, icc_matches

__all__ = ["MAX_PIXELS", "ImageReadError", "LoadedImage", "apply_orientation", "pil_to_array", "read_image"]


#: Largest image (width * height) :func:`read_image` accepts: 2**28 pixels, e.g.
#: 16384 x 16384 or 20000 x 13400 (a float32 RGB tensor of 3.2 GB). Pillow's
#: default (~89 Mpx warning, ~179 Mpx error) is meant for untrusted web uploads;
#: restoration of large scans and panoramas needs more, but a finite bound still
#: stops a 50-byte "decompression bomb" from asking for hundreds of gigabytes.
MAX_PIXELS: int = 2**28

# Pillow refuses images above 2 * MAX_IMAGE_PIXELS on its own; raise its bound to
# ours (never lower it, and leave it disabled if the user disabled it) so that
# our explicit check below is the one that decides, with our error message.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Formats Pillow may decode for us. Anything else (GIF, ICO, PSD, ...) is refused
# even when it carries an accepted extension. MPO is how older Pillow names the
# JPEGs written by many cameras (a JPEG with extra preview frames); newer Pillow
# folds it into JPEG, hence the filtering against what is registered.
_WANTED_PIL_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "DIB", "TIFF", "WEBP")
_pil_formats: tuple[str, ...] | None = None


def _allowed_pil_formats() -> tuple[str, ...]:
    global _pil_formats
    if _pil_formats is None:
        Image.init()  # registers every plugin so the membership test is meaningful
        _pil_formats = tuple(f for f in _WANTED_PIL_FORMATS if f in Image.OPEN)
    return _pil_formats


class ImageReadError(Exception):
    """A file that cannot be read as an image; ``str(e) == f"{path}: {reason}"``.

    One exception type for every reason (missing, empty, truncated, corrupt, not
    an image, unsupported) so batch drivers can report the file and go on.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(path, reason)  # args kept so the error pickles (DataLoader workers)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class LoadedImage:
    """A decoded image plus what is needed to write it back faithfully."""

    image: torch.Tensor  # CHW float32 in [0, 1], C = 1 (gray) or 3 (RGB)
    alpha: np.ndarray | None  # HxW, original dtype (uint8 / uint16), or None
    bit_depth: int  # 8 or 16: bits per sample of the source file
    path: Path | None = None  # None for an image that came from memory (the Python API)
    # The embedded ICC profile, verbatim, when it describes ``image`` (a GRAY
    # profile for C=1, an RGB one for C=3; e.g. a CMYK JPEG's is dropped, since
    # its samples are converted without it). Pass it to write_image so
    # colour-managed viewers show the output in the source's colours.
    icc_profile: bytes | None = None


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Return ``array`` (HxW or HxWxC) as displayed under EXIF ``orientation`` (1-8).

    Done on the array rather than with ``ImageOps.exif_transpose`` so the same
    code serves images decoded by Pillow and by OpenCV (which ignores the tag
    with ``IMREAD_UNCHANGED``). Unknown values are treated as 1, as viewers do.
    """
    if orientation == 2:  # mirrored horizontally
        return array[:, ::-1]
    if orientation == 3:  # rotated 180
        return array[::-1, ::-1]
    if orientation == 4:  # mirrored vertically
        return array[::-1]
    if orientation == 5:  # transposed (mirror along the main diagonal)
        return np.swapaxes(array, 0, 1)
    if orientation == 6:  # stored rotated 90 CCW: rotate 90 CW to display
        return np.rot90(array, k=-1)
    if orientation == 7:  # transversed (mirror along the anti-diagonal)
        return np.swapaxes(array[::-1, ::-1], 0, 1)
    if orientation == 8:  # stored rotated 90 CW: rotate 90 CCW to display
        return np.rot90(array, k=1)
    return array


def _check_file(path: Path) -> None:
    """Turn the filesystem reasons a file cannot be read into ImageReadError."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ImageReadError(
            path,
            f"unsupported extension {path.suffix or '(none)'!r}; "
            f"expected one of {', '.join(sorted(IMAGE_EXTENSIONS))}",
        )
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot access file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageReadError(path, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(path, "is not a regular file")
    if st.st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")


# Formats recognised by their magic number only to name them in the error (no
# decoder is tried): a GIF saved under a .png name is "GIF", not "unrecognised".
_FOREIGN_MAGIC = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"))


def _sniff(data: bytes) -> str | None:
    """Name the format a file's magic number claims, to tell corrupt from foreign."""
    for magic, name in _FOREIGN_MAGIC:
        if data.startswith(magic):
            return name
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    if data.startswith(b"BM"):
        return "BMP"
    return None


_READABLE_KINDS = ("PNG", "JPEG", "TIFF", "WebP", "BMP")

_FLOAT_TIFF = "floating-point TIFF samples are not supported; convert to 8- or 16-bit integers"


def _tiff_is_float(data: bytes) -> bool:
    """Whether a classic TIFF's first IFD says SampleFormat = IEEE float (3).

    Parsed by hand because Pillow cannot open float RGB TIFFs at all, which it
    reports like a corrupt header. Float samples are refused rather than
    converted: their range is not [0, 1] in general (HDR, linear light), so any
    conversion would silently clip or rescale. Malformed data answers False and
    is left to the decoder to report.
    """
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None:
        return False
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        for k in range(count):
            tag, kind, n = struct.unpack_from(order + "HHI", data, ifd + 2 + 12 * k)
            if tag != 339 or kind != 3 or not 0 < n <= 64:  # SampleFormat, SHORT values
                continue
            at = ifd + 10 + 12 * k
            if n > 2:  # values that do not fit the entry are stored elsewhere
                (at,) = struct.unpack_from(order + "I", data, at)
            return 3 in struct.unpack_from(f"{order}{n}H", data, at)
    except struct.error:
        return False
    return False


def _frame_count(img: Image.Image) -> int:
    """How many images a file holds, not counting MPO previews or TIFF thumbnails.

    Camera JPEGs (MPO) append preview frames to the photo, and some TIFFs
    follow the image with reduced-resolution copies or transparency masks
    (NewSubfileType bits 0 and 2); both are one image, read from frame 0.
    """
    frames = int(getattr(img, "n_frames", 1) or 1)
    if frames <= 1 or img.format in ("JPEG", "MPO"):
        return 1
    if img.format == "TIFF":
        subtypes = []
        for index in range(frames):
            img.seek(index)
            subtypes.append(int(img.tag_v2.get(254, 0) or 0))
        img.seek(0)
        if not subtypes[0] & 0b101 and all(kind & 0b101 for kind in subtypes[1:]):
            return 1
    return frames


def _png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, which Pillow does not expose."""
    if len(data) >= 26 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return data[24], data[25]
    return None


def _decode_16bit_opencv(path: Path, data: bytes, gray_source: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a 16-bit PNG/TIFF at full precision: (HxW or HxWx3 uint16, alpha or None)."""
    import cv2  # imported lazily: only 16-bit colour files need it

    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageReadError(path, "OpenCV could not decode this 16-bit image")
    if array.dtype != np.uint16:
        raise ImageReadError(path, f"expected 16-bit samples, OpenCV decoded {array.dtype}")
    if array.ndim == 2:
        return array, None
    channels = array.shape[2]
    if channels == 1:
        return array[:, :, 0], None
    if channels == 2:  # gray + alpha
        return array[:, :, 0], array[:, :, 1]
    if channels == 3:
        rgb = array[:, :, ::-1]
        return (rgb[:, :, 0] if gray_source else rgb), None
    if channels == 4:  # OpenCV expands gray+alpha PNGs to BGRA
        rgb = array[:, :, 2::-1]
        return (rgb[:, :, 0] if gray_source else rgb), array[:, :, 3]
    raise ImageReadError(path, f"unsupported number of channels ({channels})")


def pil_to_array(path: Path, img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Pillow image of any supported mode -> (HxW or HxWx3 array, alpha or None)."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("L", "RGB") and "transparency" in img.info:
        # A tRNS colour key: one transparent gray level / colour.
        img = img.convert("LA" if mode == "L" else "RGBA")
    elif mode == "1":
        img = img.convert("L")
    elif mode == "La":
        img = img.convert("LA")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    elif mode in ("RGBX", "YCbCr", "CMYK"):
        # CMYK uses Pillow's device-independent formula; an embedded ICC
        # profile is not applied (colour management is out of scope here).
        img = img.convert("RGB")
    elif mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16, copy=False), None
    elif mode in ("L", "LA", "RGB", "RGBA"):
        pass
    else:
        raise ImageReadError(
            path, f"unsupported pixel mode {mode!r} (expected 8/16-bit gray, RGB(A), palette or CMYK)"
        )
    array = np.asarray(img)
    if img.mode in ("LA", "RGBA"):
        colour = array[:, :, 0] if img.mode == "LA" else array[:, :, :3]
        return colour, array[:, :, -1]
    return array, None


def read_image(path: str | os.PathLike, *, integers: bool = False) -> LoadedImage:
    """Decode an image file completely, or raise :class:`ImageReadError`.

    ``integers=True`` keeps the samples as the file stores them, a CHW uint8 or uint16 tensor (a
    quarter or half of the float32 image's memory), for a restorer that writes into them in place
    (`restore.pipeline.Restorer.integer_inplace`: inpainting changes only its hole pixels).

    Returns gray images as C=1 and everything else as RGB (C=3); palette images
    become RGB, or RGB + alpha when the palette has transparency. 16-bit files
    keep their precision (value / 65535). The EXIF orientation is applied, so
    the tensor is the image as a viewer shows it. Files holding several images
    (multi-page TIFF, animated PNG/WebP) are refused rather than cut to their
    first frame; camera JPEGs with preview frames (MPO) are read as one photo.
    """
    path = Path(path)
    _check_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")

    if _sniff(data) == "TIFF" and _tiff_is_float(data):
        raise ImageReadError(path, _FLOAT_TIFF)

    try:
        with warnings.catch_warnings():
            # Pillow warns above its own bound (raised to MAX_PIXELS above); our
            # check below decides, with its own message, so the raw warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # verify() checks chunk CRCs and the end of a PNG, which load() does not
            # (a PNG missing its last IDAT bytes would otherwise load "fine").
            with Image.open(_io.BytesIO(data), formats=_allowed_pil_formats()) as probe:
                width, height = probe.size
                if width * height > MAX_PIXELS:
                    raise ImageReadError(
                        path,
                        f"image is {width}x{height} = {width * height} pixels, above the "
                        f"limit restore.io.read.MAX_PIXELS = {MAX_PIXELS}",
                    )
                probe.verify()
            with Image.open(_io.BytesIO(data), formats=_allowed_pil_formats()) as img:
                frames = _frame_count(img)
                if frames > 1:
                    unit = "pages" if img.format == "TIFF" else "frames"
                    raise ImageReadError(
                        path,
                        f"has {frames} {unit}; only single-frame images are supported "
                        "(extract the frames first)",
                    )
                img.load()  # decodes everything; raises on truncated data
                orientation = int(img.getexif().get(0x0112, 1) or 1)
                icc_profile = img.info.get("icc_profile") or None
                key = img.info.get("transparency")
                png = _png_header(data)
                if png is not None:
                    bits, gray_source = png[0], png[1] in (0, 4)
                elif img.format == "TIFF":
                    samples = img.tag_v2.get(258, (8,))
                    bits = max(samples) if isinstance(samples, tuple) else int(samples)
                    gray_source = img.mode.startswith(("I;16", "L", "1"))
                else:
                    bits, gray_source = 8, False
                if bits > 8 and img.mode.startswith("I;16"):
                    colour, alpha = pil_to_array(path, img)
                elif bits == 16:
                    # Pillow holds 16-bit colour only as 8-bit: decode again at full depth.
                    colour, alpha = _decode_16bit_opencv(path, data, gray_source)
                    if colour.shape[:2] != (img.height, img.width):
                        raise ImageReadError(path, "OpenCV and Pillow disagree on the image size")
                elif bits > 8:
                    raise ImageReadError(path, f"unsupported sample depth ({bits} bits; expected 8 or 16)")
                else:
                    colour, alpha = pil_to_array(path, img)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        kind = _sniff(data)
        if kind in _READABLE_KINDS:
            raise ImageReadError(path, f"corrupt {kind} file (its header cannot be parsed)") from None
        if kind is not None:
            raise ImageReadError(
                path,
                f"the content is {kind} data despite the {path.suffix} name; {kind} is not "
                "supported (convert it to PNG, JPEG, BMP, TIFF or WebP)",
            ) from None
        raise ImageReadError(
            path, "not a recognised image file (expected PNG, JPEG, BMP, TIFF or WebP content)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError) as exc:
        # Pillow signals truncated/corrupt data with OSError ("image file is
        # truncated"), SyntaxError ("broken PNG file") and friends.
        reason = str(exc) or type(exc).__name__
        raise ImageReadError(path, f"corrupt or truncated image data ({reason})") from None
    del data, probe, img  # the encoded file, before the float32 image is made (hundreds of MB at 100 MP)

    if alpha is None and colour.dtype == np.uint16 and colour.ndim == 2 and isinstance(key, int):
        # A 16-bit gray tRNS key (one fully transparent level): neither Pillow's
        # I;16 mode nor OpenCV turns it into alpha, so do it as for 8-bit gray.
        alpha = np.where(colour == key, 0, 65535).astype(np.uint16)
    bit_depth = 16 if colour.dtype == np.uint16 else 8
    colour = apply_orientation(colour, orientation)
    if alpha is not None:
        # A private, writable copy: the caller may edit it before writing back.
        alpha = np.array(apply_orientation(alpha, orientation), order="C", copy=True)
    if colour.ndim == 2:
        colour = colour[:, :, None]
    scale = 65535.0 if bit_depth == 16 else 255.0
    if integers:  # a fresh, writable, contiguous copy of the samples as stored
        image = torch.from_numpy(colour.transpose(2, 0, 1).copy(order="C"))
    else:
        # astype copies into a fresh, writable, contiguous float32 array (exact for
        # every uint8/uint16 value; torch's own uint16 support is limited).
        chw = colour.transpose(2, 0, 1).astype(np.float32, order="C")
        image = torch.from_numpy(chw).div_(scale)
    if icc_profile is not None and not icc_matches(icc_profile, image.shape[0]):
        icc_profile = None  # e.g. a CMYK profile: the samples were converted without it
    return LoadedImage(image=image, alpha=alpha, bit_depth=bit_depth, path=path, icc_profile=icc_profile)
