"""What reading, writing and walking image files share: the accepted extensions, the ICC profile check.

Kept apart so that `restore.io.read`, `restore.io.write` and `restore.io.folders` depend on this
module and never on each other.
"""

from __future__ import annotations

__all__ = ["IMAGE_EXTENSIONS", "icc_matches"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)


def icc_matches(profile: bytes, channels: int) -> bool:
    """Whether an ICC profile describes samples with ``channels`` colour channels.

    Bytes 16-19 of the profile header name its colour space. PNG forbids (and
    viewers misrender) an RGB profile on gray data and vice versa, e.g. after
    colorization or when WebP stores gray as RGB.
    """
    space = profile[16:20] if len(profile) >= 128 else b""
    return space == (b"GRAY" if channels == 1 else b"RGB ")

