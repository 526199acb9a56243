"""Atomic file writes: a file appears complete under its name, or not at all.

:func:`atomic_output` writes through a hidden temporary file in the destination folder, fsynced and
renamed onto the target; :func:`on_commit` lets the folder driver see (and veto) each write before it
starts; :func:`stale_temporaries` finds what a killed process left. Used for images
(`restore.io.write`) and for every other file the project writes (checkpoints, weights, reports).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterable, Iterator

__all__ = ["atomic_output", "on_commit", "stale_temporaries"]

# The file mode an atomically written file ends up with: what open() would have
# given (0o666 minus the umask). Read once, because reading the umask means
# setting it, which is not thread-safe.
_UMASK = os.umask(0)
os.umask(_UMASK)
_NEW_FILE_MODE = 0o666 & ~_UMASK


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary file lives in the destination folder (so ``os.replace`` is an
    atomic rename on the same filesystem), is hidden (leading dot, skipped by
    :func:`restore.io.folders.list_images`) and keeps the target's suffix (so writers that infer
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
