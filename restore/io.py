"""Image files in and out: every common format, clear errors, atomic writes.

Everything that touches image files goes through here, so the rest of the
library only ever sees ``float32`` CHW tensors in ``[0, 1]``:

* :func:`read_image` decodes PNG, JPEG, BMP, TIFF and WebP (8- and 16-bit;
  gray, gray+alpha, RGB, RGBA, palette, CMYK), applies the EXIF orientation and
  keeps the alpha channel and the embedded ICC profile aside, untouched, so they
  can be written back exactly. A file that cannot be decoded *completely*
  (empty, truncated, corrupt, not an image, unsupported, several frames or
  pages) raises :class:`ImageReadError` naming the file and the reason; a
  half-decoded image (or the first frame of an animation) is never returned.
* :func:`write_image` quantises with rounding (not truncation) and writes
  atomically through :func:`atomic_output`: a crash or an encoder error never
  leaves a half-written file under the final name, nor clobbers an old one.
* :func:`list_images` walks folders the same way for every command.

Decoding uses Pillow (format detection, validation, EXIF, palettes, CMYK);
16-bit colour and 16-bit gray+alpha images, which Pillow can only represent in
8 bits, are decoded again with OpenCV so they keep their full precision.
"""

from __future__ import annotations

import errno
import io as _io
import os
import re
import shlex
import stat
import struct
import tempfile
import warnings
import zlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageReadError",
    "LossyMaskWarning",
    "LoadedImage",
    "pil_to_array",
    "quantize",
    "read_image",
    "read_mask",
    "write_image",
    "atomic_output",
    "on_commit",
    "stale_temporaries",
    "list_images",
    "scan_images",
    "to_uint8",
    "apply_orientation",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)

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

# The file mode an atomically written file ends up with: what open() would have
# given (0o666 minus the umask). Read once, because reading the umask means
# setting it, which is not thread-safe.
_UMASK = os.umask(0)
os.umask(_UMASK)
_NEW_FILE_MODE = 0o666 & ~_UMASK


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


# --------------------------------------------------------------------------- reading


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


def _icc_matches(profile: bytes, channels: int) -> bool:
    """Whether an ICC profile describes samples with ``channels`` colour channels.

    Bytes 16-19 of the profile header name its colour space. PNG forbids (and
    viewers misrender) an RGB profile on gray data and vice versa, e.g. after
    colorization or when WebP stores gray as RGB.
    """
    space = profile[16:20] if len(profile) >= 128 else b""
    return space == (b"GRAY" if channels == 1 else b"RGB ")


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
                        f"limit restore.io.MAX_PIXELS = {MAX_PIXELS}",
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
    if icc_profile is not None and not _icc_matches(icc_profile, image.shape[0]):
        icc_profile = None  # e.g. a CMYK profile: the samples were converted without it
    return LoadedImage(image=image, alpha=alpha, bit_depth=bit_depth, path=path, icc_profile=icc_profile)


class LossyMaskWarning(UserWarning):
    """A lossy (JPEG, lossy WebP) mask has many faint pixels: compression ringing that would become holes."""


#: Warn about a lossy mask when at least this share of the pixels it marks are faint (nonzero, under 50%):
#: JPEG at quality 50-95 gives ~10% around freeform strokes, quality 100 about 0.7%.
RINGING_SHARE: float = 0.005


def _lossy_kind(path: Path) -> str | None:
    """"JPEG" or "WebP" when the file is lossily compressed (its magic number and WebP chunks), else None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if head.startswith(b"\xff\xd8\xff"):
                return "JPEG"
            if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
                return None
            for _ in range(64):  # VP8 (lossy) or VP8L (lossless), maybe after VP8X, ICCP, ANIM, ALPH chunks
                chunk = handle.read(8)
                if len(chunk) < 8 or chunk[:4] == b"VP8L":
                    return None
                if chunk[:4] == b"VP8 ":
                    return "WebP"
                size = int.from_bytes(chunk[4:], "little")
                handle.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None
    return None


def _warn_if_ringing(path: Path, loaded: LoadedImage, holes: torch.Tensor) -> None:
    """LossyMaskWarning, with the command that thresholds the mask, when a lossy mask's holes are often faint."""
    kind = _lossy_kind(path)
    if kind is None:
        return
    marked = int(holes.sum())
    # under 50%: below (top + 1) / 2 as stored (v / top < 0.5 for integer v); 0.5 for a float image
    image = loaded.image if loaded.image.dtype != torch.uint16 else loaded.image.to(torch.int32)  # no uint16 amax
    half = 0.5 if image.is_floating_point() else (2 ** loaded.bit_depth) // 2
    faint = int((holes[0] & (image.amax(dim=0) < half)).sum())
    if faint < 10 or faint < RINGING_SHARE * marked:
        return
    png = path.with_suffix(".png")
    fix = ("python -c \"import sys, numpy as np; from PIL import Image; "
           "a = np.asarray(Image.open(sys.argv[1]).convert('RGB')).max(2); "
           "Image.fromarray(np.uint8(255 * (a >= 128))).save(sys.argv[2])\" "
           f"{shlex.quote(str(path))} {shlex.quote(str(png))}")
    warnings.warn(LossyMaskWarning(
        f"{path} is a lossy {kind} mask and {faint} of the {marked} pixels it marks as holes "
        f"({100 * faint / max(marked, 1):.1f}%) are faint (nonzero but under 50%): compression ringing around "
        "the drawn region, and every nonzero pixel is a hole. Save masks as PNG, or threshold this one at 50% "
        f"(a pixel is a hole when its brightest channel is at least 128) and pass the PNG: {fix}"), stacklevel=3)


def read_mask(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Read an inpainting mask as a 1HW float tensor, 1 = hole (``dtype=torch.bool``: True = hole, a
    quarter of the float mask's memory).

    On disk a mask is an image of the same size where any nonzero pixel (in any
    colour channel) marks a hole. A fully opaque alpha channel changes nothing.
    Editors also export masks as strokes on a transparent layer, where the
    alpha, not the colour, says what was painted; so when the alpha is not
    fully opaque, a pixel is a hole iff its alpha > 0 and its colour is
    nonzero, except when the colour is the same at every pixel with alpha > 0
    (black or white strokes, an alpha-only layer): then alpha > 0 alone marks
    the holes. A lossy (JPEG, lossy WebP) mask whose holes are often faint
    (compression ringing) gets a :class:`LossyMaskWarning` saying how to
    threshold it; the mask is returned as read.
    """
    loaded = read_image(path, integers=True)  # the samples as stored: no float32 copy of a huge mask
    painted = (loaded.image != 0).any(dim=0, keepdim=True)  # != : torch compares uint16 for equality only
    alpha = loaded.alpha
    if alpha is None or bool((alpha == np.iinfo(alpha.dtype).max).all()):
        _warn_if_ringing(Path(path), loaded, painted)
        return painted.to(dtype)
    visible = torch.from_numpy(alpha > 0)[None]
    colours = loaded.image[:, visible[0]]  # C x (pixels with alpha > 0)
    if colours.shape[1] == 0 or bool((colours == colours[:, :1]).all()):
        return visible.to(dtype)
    _warn_if_ringing(Path(path), loaded, visible & painted)
    return (visible & painted).to(dtype)


# --------------------------------------------------------------------------- writing


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary file lives in the destination folder (so ``os.replace`` is an
    atomic rename on the same filesystem), is hidden (leading dot, skipped by
    :func:`list_images`) and keeps the target's suffix (so writers that infer
    the format from the name work); its name is never longer than the
    filesystem allows, even when ``path``'s own name is near the limit. On success it is fsynced and renamed onto
    ``path``; on any exception it is removed and an existing ``path`` is left
    untouched. Parent folders are created.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; cannot write a file there")
    path.parent.mkdir(parents=True, exist_ok=True)
    hook = _COMMIT_HOOK.get()
    if hook is not None:
        hook(path)
    prefix, suffix = _temp_name_parts(path)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: temporary file for {path} vanished before it was committed")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # mkstemp creates 0600 files; give the result the permissions a plain
        # open() would have, or keep the existing target's permissions.
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = _NEW_FILE_MODE
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


# mkstemp puts this many random characters between prefix and suffix.
_TEMP_RANDOM_CHARS = 8


def _temp_name_parts(path: Path) -> tuple[str, str]:
    """(prefix, suffix) for ``mkstemp``: ``.{stem}.XXXXXXXX.tmp{suffix}``, within NAME_MAX.

    The decoration adds ~14 bytes to the name, so a legal long file name (e.g.
    240 characters) would give a temporary name the filesystem refuses; the
    stem is cut (on a character boundary) to fit the folder's name limit.
    """
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not POSIX, or not reported
        limit = 255
    if limit <= 0:
        limit = 255
    suffix = f".tmp{path.suffix}"
    if len(os.fsencode(suffix)) + 2 + _TEMP_RANDOM_CHARS > limit:
        suffix = ".tmp"  # an absurdly long extension: the name cannot keep it
    room = limit - len(os.fsencode(suffix)) - 2 - _TEMP_RANDOM_CHARS  # 2: the two dots
    stem = path.stem
    while len(os.fsencode(stem)) > room:
        stem = stem[: max(0, min(len(stem) - 1, room))]
    return f".{stem}.", suffix


_COMMIT_HOOK: ContextVar[Callable[[Path], None] | None] = ContextVar("restore_io_commit_hook", default=None)


@contextmanager
def on_commit(hook: Callable[[Path], None]) -> Iterator[None]:
    """Call ``hook(path)`` each time :func:`atomic_output` starts writing ``path``, before its temporary exists.

    The folder driver records the files it writes (side maps, masks) this way,
    so a later run can tell its own outputs from the user's images and find the
    temporaries a killed run left, and refuses writes onto an input. A hook
    that raises aborts that write before anything is written.
    """
    token = _COMMIT_HOOK.set(hook)
    try:
        yield
    finally:
        _COMMIT_HOOK.reset(token)


# mkstemp draws its random characters from this alphabet
_TEMP_NAME = re.compile(r"\.(?P<stem>.*)\.[a-z0-9_]{%d}(?P<suffix>\.tmp(?:\.[^.]*)?)" % _TEMP_RANDOM_CHARS, re.DOTALL)


def stale_temporaries(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Temporary files :func:`atomic_output` left next to ``paths`` (a killed process), sorted.

    Only names of the exact form ``atomic_output`` gives a temporary for one
    of ``paths`` (``.{stem}.XXXXXXXX.tmp{suffix}``, the stem cut as it cuts
    it) are returned, so nothing else in those folders is ever taken. Each
    folder is listed once.
    """
    wanted: dict[Path, set[tuple[str, str]]] = {}
    for path in map(Path, paths):
        wanted.setdefault(path.parent, set()).add(_temp_name_parts(path))
    stale = []
    for folder, parts in wanted.items():
        try:
            names = os.listdir(folder)
        except OSError:  # not created yet, or unreadable: nothing of ours can be there
            continue
        for name in names:
            match = _TEMP_NAME.fullmatch(name)
            if match and (f".{match['stem']}.", match["suffix"]) in parts and (folder / name).is_file():
                stale.append(folder / name)
    return sorted(stale)


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX); harmless where unsupported."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    if not icc_profile or fmt == "BMP" or not _icc_matches(bytes(icc_profile), colour_channels):
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


# --------------------------------------------------------------------------- folders


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root``, sorted; a file is returned as given.

    :func:`scan_images` without its problems list: each entry that looks like
    an image but cannot be one (a dangling link, a FIFO...) and each folder
    that cannot be listed is a warning naming it, so a training set never
    shrinks silently. The folder driver reports them as failures instead.
    """
    found, problems = scan_images(root)
    for path, reason in problems:
        warnings.warn(f"{path}: skipped, {reason}", stacklevel=2)
    return found


def scan_images(root: str | os.PathLike) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``(images, problems)`` under ``root``: sorted image files, and ``(path, reason)`` for what was not read.

    A folder is walked recursively (following symlinked folders, each real
    folder visited once so symlink loops end), keeping files whose extension is
    in :data:`IMAGE_EXTENSIONS` (any case) and skipping hidden files and
    folders (leading dot; this includes :func:`atomic_output` temporaries).
    An entry with an image extension that is not a regular file (a dangling
    or looping symlink, a FIFO, a socket, a device) and a folder that cannot
    be listed are problems, never silently dropped. Returned paths start with
    ``root`` so callers can mirror relative paths; a file is returned as given.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    if not root.is_dir():
        return [root], []

    found: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()

    def unreadable(exc: OSError) -> None:
        problems.append((Path(exc.filename), f"folder cannot be listed ({exc.strerror or exc})"))

    for folder, dirs, files in os.walk(root, followlinks=True, onerror=unreadable):
        try:
            st = os.stat(folder)
        except OSError as exc:
            problems.append((Path(folder), f"folder cannot be read ({exc.strerror or exc})"))
            dirs[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:  # reached again through a symlink: a loop or a duplicate
            dirs[:] = []
            continue
        seen.add(key)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder)
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            candidate = base / name
            reason = _not_an_image_file(candidate)
            if reason is None:
                found.append(candidate)
            else:
                problems.append((candidate, reason))
    return sorted(found), sorted(problems)


_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _not_an_image_file(path: Path) -> str | None:
    """Why a listed entry cannot be read as an image file (None: a regular file, maybe through a link)."""
    try:
        st = path.stat()  # follows links
    except OSError as exc:
        if path.is_symlink() and exc.errno == errno.ELOOP:
            return "symlink loop (the link leads back to itself)"
        if path.is_symlink() and exc.errno == errno.ENOENT:
            return f"dangling symlink (its target {os.readlink(path)} does not exist)"
        return f"cannot access file ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = next((name for test, name in _SPECIAL_FILES if test(st.st_mode)), "a special file")
    return f"is {kind}, not an image file"
