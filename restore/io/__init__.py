"""Image files in and out: every common format, clear errors, atomic writes.

Everything that touches image files goes through this package, so the rest of the
library only ever sees ``float32`` CHW tensors in ``[0, 1]``. One module per concept:

* `restore.io.read`: :func:`read_image` (decode completely into a :class:`LoadedImage` or raise
  :class:`ImageReadError`; 16-bit, alpha, ICC profile, EXIF orientation, tRNS keys).
* `restore.io.masks`: :func:`read_mask` (1 = hole; painted alpha layers; :class:`LossyMaskWarning`).
* `restore.io.write`: :func:`write_image` (rounded, 8/16-bit, ICC profile and alpha kept,
  PNG streamed in row bands), :func:`quantize`, :func:`to_uint8`.
* `restore.io.atomic`: :func:`atomic_output`, :func:`on_commit`, :func:`stale_temporaries`.
* `restore.io.folders`: :func:`list_images` and :func:`scan_images`, one walk for every command.
* `restore.io.common`: :data:`IMAGE_EXTENSIONS` and the ICC check the others share.

The public names are importable from ``restore.io`` itself, as before the split. Settings a
function reads at call time live in its module, so set (or monkeypatch) them there:
``restore.io.read.MAX_PIXELS``, ``restore.io.masks.RINGING_SHARE``, ``restore.io.write.WRITE_BAND_ROWS``.
"""

from __future__ import annotations

from restore.io.atomic import atomic_output, on_commit, stale_temporaries
from restore.io.common import IMAGE_EXTENSIONS
from restore.io.folders import list_images, scan_images
from restore.io.masks import LossyMaskWarning, read_mask
from restore.io.read import MAX_PIXELS, ImageReadError, LoadedImage, apply_orientation, pil_to_array, read_image
from restore.io.write import quantize, to_uint8, write_image

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
