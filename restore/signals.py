"""How a ``restore`` command ends when it is told to stop or its reader goes away.

SIGTERM (``kill``, a scheduler's timeout) and SIGHUP (the terminal closed)
end a command the way Ctrl-C does: a `KeyboardInterrupt` is raised where the
program is, so ``restore.io.atomic_output`` removes its temporary file, the
folder driver prints what was done, and the command exits with 128 + the
signal number (SIGINT 130, SIGTERM 143, SIGHUP 129), as a shell reports a
process killed by that signal. A second signal of the same kind while
cleaning up kills at once; a signal ignored when the command starts (``nohup``)
stays ignored. The training loop has its own handling (it
finishes the step and writes a checkpoint), in ``restore.engine.trainer``.

A closed standard output (``restore weights --json | head -1``) is not an
error of the command: it ends quietly with 141 (128 + SIGPIPE), the status
``yes | head -1`` gives its first command.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Interrupted", "exit_status", "raising_on_signals", "reader_gone", "signal_name"]

#: Signals that stop a command like Ctrl-C (those the platform has).
STOP_SIGNALS: tuple[int, ...] = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; a KeyboardInterrupt so every Ctrl-C cleanup path applies to it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"


def _signum(e: BaseException) -> int:
    return int(getattr(e, "signum", signal.SIGINT))


def signal_name(e: BaseException) -> str:
    """SIGINT for a plain KeyboardInterrupt, else the name of the signal that raised ``e``."""
    return signal.Signals(_signum(e)).name


def exit_status(e: BaseException) -> int:
    """128 + the signal number, the status a shell reports for a command that signal ended."""
    return 128 + _signum(e)


def _raise(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second one while cleaning up ends the process at once
    raise Interrupted(signum)


@contextmanager
def raising_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """While inside, ``signals`` raise `Interrupted` (main thread only; elsewhere nothing changes)."""
    previous = {}
    for s in signals:
        try:
            if signal.getsignal(s) == signal.SIG_IGN:  # nohup, or a parent that wants it ignored: keep it so
                continue
            previous[s] = signal.signal(s, _raise)
        except ValueError:  # not the main thread: signals cannot be handled here
            break
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def reader_gone() -> int:
    """Standard output's reader has gone: send what is still buffered nowhere; return 128 + SIGPIPE.

    Without this, Python's final flush of ``sys.stdout`` at exit fails again and prints
    "Exception ignored ... BrokenPipeError".
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a descriptor
        pass
    return 128 + int(getattr(signal, "SIGPIPE", 13))
