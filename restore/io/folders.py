"""Finding image files: one walk of a folder for every command, training set and eval script."""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path

from restore.io.common import IMAGE_EXTENSIONS

__all__ = ["list_images", "scan_images"]

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
    folders (leading dot; this includes :func:`restore.io.atomic.atomic_output` temporaries).
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
