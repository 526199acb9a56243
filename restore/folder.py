"""The folder driver behind the ``restore`` subcommands (docs/design.md, section 5).

Mirrored relative paths, skip-existing, per-file error isolation, a progress
bar and a summary, and the guarantee that no input file is ever written: an
image that was there before the run is an input wherever it lies, OUT inside
IN included (`plan_outputs` says how earlier outputs are told apart). It
belongs to the command line: the Python API and the app restore in-memory
images through `restore.pipeline` and never walk folders.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from tqdm import tqdm

from restore.io.atomic import on_commit, stale_temporaries
from restore.io.common import IMAGE_EXTENSIONS
from restore.io.folders import scan_images
from restore.signals import signal_name
from restore.tiling import TILE_PROGRESS

__all__ = ["OUTPUTS_RECORD", "BatchJob", "InputProtected", "Summary", "UsageError", "is_inside", "plan_outputs",
           "process_folder"]


class UsageError(ValueError):
    """The command as a whole cannot run (bad IN/OUT, empty folder...): exit status 2."""


@dataclass
class Summary:
    """What ``process_folder`` did: counts, and each failed input with its reason."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self, desc: str = "") -> str:
        head = f"{desc}: " if desc else ""
        return f"{head}{self.done} done, {self.skipped} skipped (output exists), {len(self.failed)} failed"


T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchJob(Generic[T, R]):
    """A job split in three so the driver can batch inputs that share a ``key``.

    ``load(src)`` reads and prepares one input (per-file errors belong here);
    ``key(item)`` says which items may be stacked together (e.g. their shape);
    ``run(items)`` processes a list of same-key items and returns one result
    each; ``save(item, result, dst)`` writes one output. A batch whose ``run``
    fails is retried one item at a time so the error lands on the right file.
    """

    load: Callable[[Path], T]
    run: Callable[[list[T]], Sequence[R]]
    save: Callable[[T, R, Path], None]
    key: Callable[[T], Hashable] = lambda item: id(item)
    batch_size: int = 1


def _reason(e: BaseException, src: Path | None = None) -> str:
    """The failure's reason, naming the file at fault when it is not ``src`` (a bad mask, not a bad photo)."""
    reason = getattr(e, "reason", None)
    path = getattr(e, "path", None)
    if isinstance(reason, str) and reason:
        if path is not None and src is not None and Path(path) != Path(src):
            return f"{path}: {reason}"
        return reason
    text = str(e) or type(e).__name__
    return text if type(e).__name__ in text else f"{type(e).__name__}: {text}"


def is_inside(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies under it (both already resolved)."""
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def plan_outputs(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    suffix: str = ".png",
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> list[tuple[Path, Path]]:
    """Pair each input image with its output path, refusing plans that would write an input.

    IN may be a file (OUT is then an output file when it has an image suffix
    and is not a folder, otherwise a folder) or a folder walked recursively;
    OUT mirrors relative paths with ``suffix``. The ``exclude`` paths
    (``restore inpaint``'s ``--masks``, which ``restore corrupt`` writes into
    ``OUT/masks``) are inputs too: OUT may not be or lie inside one, and the
    images under them are not restored. Raises ``UsageError`` for a missing IN,
    OUT == IN, an OUT that is a file where a folder is needed or cannot be
    written, an empty folder, or any output that would land on an input.
    Paths are compared resolved and, where both exist, by device and inode, so
    case-insensitive file systems and links are caught.

    OUT inside IN (or reached from IN through a link) is allowed. An image
    under OUT is an earlier output, and not an input, only when OUT's record
    (``OUTPUTS_RECORD``, written by `process_folder`) lists it; any other image
    there existed before and is the user's: it is an input like the rest of IN
    and is never replaced, even with ``--overwrite`` (a plan whose output
    would land on it is refused).
    """
    return _plan(inp, out, suffix=suffix, exclude=exclude)[0]


#: Hidden file in OUT listing (NUL-terminated, relative to OUT) every file a run wrote or was about to write
#: there, so a later run whose IN walk reaches OUT tells its own outputs from the user's images.
OUTPUTS_RECORD = ".restore-outputs"


def _plan(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    suffix: str,
    exclude: Sequence[str | os.PathLike[str]],
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """`plan_outputs`, plus the entries of IN that look like images but cannot be read (with reasons)."""

    inp, out = Path(inp), Path(out)
    if not inp.exists():
        raise UsageError(f"{inp}: input does not exist")
    if not suffix.startswith("."):
        raise UsageError(f"suffix must start with '.', got {suffix!r}")
    in_abs, out_abs = inp.resolve(), out.resolve()
    if _same_file(inp, out):  # IN exists, so this covers equal resolved paths too
        raise UsageError(f"{out}: OUT is the same as IN; choose another output folder (inputs are never overwritten)")
    excluded = [(Path(e), Path(e).resolve()) for e in exclude]
    for e, e_abs in excluded:
        if out_abs == e_abs or _same_file(out, e) or (e.is_dir() and is_inside(out_abs, e_abs)):
            raise UsageError(f"{out}: OUT is {e} or lies inside it, and this command reads that as input; "
                             "choose another output folder")

    problems: list[tuple[Path, str]] = []
    if not inp.is_dir():  # a file (or a FIFO...: the reader names what is wrong with it)
        if out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir():
            pairs = [(inp, out)]
        else:
            pairs = [(inp, out / (inp.stem + suffix))]
        files = [inp]
    else:
        files, problems = scan_images(inp)
        # the excluded folders are never input; when IN itself lies in one, only what a link leads out of IN to is
        for skip in (e_abs for _, e_abs in excluded):
            keep_in = is_inside(in_abs, skip)
            files = [f for f in files
                     if not is_inside(r := f.resolve(), skip) or (keep_in and is_inside(r, in_abs))]
            problems = [(f, why) for f, why in problems
                        if not is_inside(r := f.parent.resolve(), skip) or (keep_in and is_inside(r, in_abs))]
        # OUT's tree (also reached through a link inside IN): only the files an earlier run recorded are outputs,
        # and when IN lies in OUT's tree, what lies in IN is what the user asked for
        recorded, keep_in = _read_record(out), is_inside(in_abs, out_abs)
        files = [f for f in files if _relative_key(r := f.resolve(), out_abs) not in recorded
                 or (keep_in and is_inside(r, in_abs))]
        if not files and not problems:
            raise UsageError(f"{inp}: no images found (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        pairs = [(f, out / f.relative_to(inp).with_suffix(suffix)) for f in files]
    _check_writable(pairs[0][1].parent if pairs else out, out)

    # by device and inode: an output that is an input under any spelling (link, case) exists, so this is enough
    input_ids = {_file_id(f) for f in files} | {_file_id(e) for e, _ in excluded if e.is_file()}
    for src, dst in pairs:
        if dst.exists() and _file_id(dst) in input_ids:
            why = ""
            if is_inside(dst.resolve(), out_abs) and is_inside(dst.resolve(), in_abs):
                why = (f"; it was in OUT before this run and is not in OUT's record of restore's outputs "
                       f"({out / OUTPUTS_RECORD}), so it is taken as one of your images")
            raise UsageError(f"{dst}: output path is an input file ({src} would overwrite it{why}); "
                             "choose another OUT")
    return pairs, problems


def _relative_key(path: Path, folder: Path) -> bytes | None:
    """``path`` (resolved) relative to ``folder`` (resolved), as an OUTPUTS_RECORD entry; None when outside."""
    try:
        return os.fsencode(path.relative_to(folder).as_posix())
    except ValueError:
        return None


def _read_record(out: Path) -> set[bytes]:
    """The entries of OUT's record of written files (empty when there is none)."""
    try:
        data = (out / OUTPUTS_RECORD).read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # no record yet (OUT a file is refused later)
        return set()
    except OSError as e:
        raise UsageError(f"{out / OUTPUTS_RECORD}: cannot read OUT's record of earlier outputs "
                         f"({e.strerror or e})") from e
    return {entry for entry in data.split(b"\0") if entry}


class InputProtected(RuntimeError):
    """A job tried to write onto one of the run's inputs (a side map named like the user's image...)."""

    def __init__(self, path: Path) -> None:
        self.path = None  # the input at fault is named in the reason
        self.reason = f"{path} is an input of this run and is never replaced; rename it or choose another OUT"
        super().__init__(self.reason)


class _Writes:
    """Every file the job writes through atomic_output passes here before its temporary exists (io.on_commit).

    It may not land on an input (the plan checks the planned outputs; this also covers side maps and
    masks), and when OUT is a folder it is appended to OUTPUTS_RECORD before it is written.
    """

    def __init__(self, out: Path | None, inputs: set[tuple[int, int]]) -> None:
        self.out, self.inputs = out, inputs
        self.out_abs = out.resolve() if out is not None else None
        self.known = _read_record(out) if out is not None else set()
        self.handle: Any = None

    def __call__(self, path: Path) -> None:
        try:
            if _file_id(path) in self.inputs:
                raise InputProtected(path)
        except OSError:  # nothing there yet
            pass
        if self.out is None or self.out_abs is None:
            return
        key = _relative_key(path.parent.resolve() / path.name, self.out_abs)
        if key is None or key in self.known:
            return
        if self.handle is None:
            self.out.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.out / OUTPUTS_RECORD, "ab")
        self.handle.write(key + b"\0")
        self.handle.flush()
        self.known.add(key)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def _file_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _same_file(a: Path, b: Path) -> bool:
    """Both exist and are one file or folder (another spelling on a case-insensitive disk, a link...)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_writable(folder: Path, out: Path) -> None:
    """Fail before any image is restored when the outputs' folder cannot exist or be written."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"{out}: {probe} is a file, not a folder; choose another OUT")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: cannot write in {probe} (permission denied); choose another OUT")


def process_folder(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    job: Callable[[Path, Path], None] | BatchJob[Any, Any],
    *,
    overwrite: bool = False,
    suffix: str = ".png",
    desc: str = "",
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> Summary:
    """Run ``job(src, dst)`` (or a ``BatchJob``) for every input image of ``inp``.

    Existing outputs are skipped unless ``overwrite``; any exception from one
    file (``ImageReadError``, a model error...) is reported on stderr with the
    file and reason and the rest continue. Two inputs that map to the same
    output (``a.jpg`` and ``a.png``) are not both written: the later one fails
    with a reason naming the first. Entries of IN that cannot be read (a
    dangling link, a FIFO, a folder that cannot be listed) are failures too.
    A final summary line goes to stderr; warnings raised for one file go there
    as "warning: SRC: MESSAGE". Temporary files a killed run left next to the
    planned outputs are removed first, and named. On Ctrl-C (or SIGTERM and
    SIGHUP, which `restore.signals` turns into KeyboardInterrupt) the summary
    says how many were not done, then the interrupt propagates.
    """

    pairs, problems = _plan(inp, out, suffix=suffix, exclude=exclude)
    summary = Summary()
    for src, reason in problems:  # named like any failed file, so the exit status says something was not restored
        summary.failed.append((src, reason))
        print(f"failed: {src}: {reason}", file=sys.stderr)
    # no write lands on an input; OUT a folder: every file written under it is recorded there first (plan_outputs)
    inputs = {_file_id(src) for src, _ in pairs if src.is_file()}
    inputs |= {_file_id(Path(e)) for e in exclude if Path(e).is_file()}
    writes = _Writes(None if [dst for _, dst in pairs] == [Path(out)] else Path(out), inputs)
    recorded = [Path(out) / os.fsdecode(key) for key in writes.known]  # side maps, masks of earlier runs
    for tmp in stale_temporaries([dst for _, dst in pairs] + recorded):
        try:
            tmp.unlink()
            print(f"removed {tmp}: a temporary file left by an interrupted run", file=sys.stderr)
        except OSError as e:
            print(f"warning: cannot remove {tmp}, left by an interrupted run ({e.strerror or e})", file=sys.stderr)
    claimed: dict[Path, Path] = {}
    todo: list[tuple[Path, Path]] = []
    for src, dst in pairs:
        first = claimed.setdefault(dst.resolve(), src)
        if first != src:
            reason = f"output {dst} is also the output of {first}; rename one of them"
            summary.failed.append((src, reason))
            print(f"failed: {src}: {reason}", file=sys.stderr)
        elif dst.exists() and not overwrite:
            summary.skipped += 1
        else:
            todo.append((src, dst))
    failed_before = len(summary.failed)

    bar = tqdm(total=len(todo), desc=desc or None, unit="img", file=sys.stderr, disable=None, dynamic_ncols=True)

    def fail(src: Path, e: BaseException) -> None:
        reason = _reason(e, src)
        summary.failed.append((src, reason))
        bar.write(f"failed: {src}: {reason}", file=sys.stderr)

    def prepare(dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        writes(dst)

    def tile_done(done: int, total: int) -> None:  # a large image: its tiles in the bar's text
        bar.set_postfix_str(f"tile {done}/{total}" if done < total else "", refresh=True)

    interrupted: KeyboardInterrupt | None = None
    progress = TILE_PROGRESS.set(tile_done if not bar.disable else None)
    try:
        with on_commit(writes):
            if isinstance(job, BatchJob):
                _run_batched(job, todo, summary, bar, fail, prepare)
            else:
                for src, dst in todo:
                    try:
                        prepare(dst)
                        with _warnings_named(src, bar):
                            job(src, dst)
                        summary.done += 1
                    except Exception as e:  # noqa: BLE001 - one bad file must not stop the folder
                        fail(src, e)
                    bar.update(1)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP (restore.signals): say what was done, then stop
        interrupted = e
    finally:
        TILE_PROGRESS.reset(progress)
        bar.close()
        writes.close()
    if interrupted is not None:
        left = len(todo) - summary.done - (len(summary.failed) - failed_before)
        print(f"{summary.line(desc)}, {left} not done (interrupted by {signal_name(interrupted)})", file=sys.stderr)
        raise interrupted
    print(summary.line(desc), file=sys.stderr)
    return summary


@contextmanager
def _warnings_named(src: Path, bar: Any) -> Iterator[None]:
    """Warnings while one file is read or written (a lossy mask...) go to stderr as "warning: SRC: MESSAGE".

    The filters in force still apply; each file's warnings are shown, not only the first file's.
    """
    with warnings.catch_warnings(record=True) as caught:
        try:
            yield
        finally:
            for w in caught:
                bar.write(f"warning: {src}: {w.message}", file=sys.stderr)


def _run_batched(job: BatchJob[Any, Any], todo, summary: Summary, bar, fail, prepare) -> None:
    """Read inputs in order, stack same-key items up to ``batch_size``; bounded pending items."""
    if job.batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {job.batch_size}")
    pending: dict[Hashable, list[tuple[Path, Path, Any]]] = {}

    def run_group(group: list[tuple[Path, Path, Any]]) -> None:
        try:
            results = list(job.run([item for _, _, item in group]))
            if len(results) != len(group):
                raise RuntimeError(f"batch job returned {len(results)} results for {len(group)} inputs")
        except Exception as e:  # noqa: BLE001 - retry one by one so the failure lands on its file
            if len(group) > 1:
                for entry in group:
                    run_group([entry])
            else:
                fail(group[0][0], e)
                bar.update(1)
            return
        for (src, dst, item), result in zip(group, results):
            try:
                prepare(dst)
                with _warnings_named(src, bar):
                    job.save(item, result, dst)
                summary.done += 1
            except Exception as e:  # noqa: BLE001
                fail(src, e)
            bar.update(1)

    def flush(key: Hashable) -> None:
        run_group(pending.pop(key))

    for src, dst in todo:
        try:
            with _warnings_named(src, bar):
                item = job.load(src)
            key = job.key(item)
        except Exception as e:  # noqa: BLE001
            fail(src, e)
            bar.update(1)
            continue
        pending.setdefault(key, []).append((src, dst, item))
        if len(pending[key]) >= job.batch_size:
            flush(key)
        elif sum(len(g) for g in pending.values()) >= 2 * job.batch_size:
            # many distinct sizes: do not hold an unbounded number of images in memory
            for k in list(pending):
                flush(k)
    for k in list(pending):
        flush(k)
