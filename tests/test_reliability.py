"""Issue 19: the folder driver under hostile trees and signals; the weights loader under inflated cards."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restore import cli, io
from restore.io import atomic as io_atomic
from restore.folder import OUTPUTS_RECORD, UsageError, process_folder


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 5, 3), value, np.uint8)).save(path)
    return path


def _copy_job(src: Path, dst: Path) -> None:
    io.write_image(dst, io.read_image(src).image)


# --------------------------------------------------------------------------- 1. OUT inside IN


def test_out_inside_in_never_replaces_an_image_that_was_there(tmp_path, capsys):
    d = tmp_path / "d"
    _png(d / "a.png", 10)
    mine = _png(d / "sub" / "a.png", 200).read_bytes()
    for overwrite in (False, True):
        with pytest.raises(UsageError, match="output path is an input file.*not in OUT's record"):
            process_folder(d, d / "sub", _copy_job, overwrite=overwrite)
    args = ["corrupt", str(d), str(d / "sub"), "--spec", "gray", "--overwrite"]
    assert cli.main(args) == 2
    assert (d / "sub" / "a.png").read_bytes() == mine
    assert sorted(p.name for p in (d / "sub").iterdir()) == ["a.png"]


def test_out_inside_in_restores_the_users_images_there_and_skips_its_own(tmp_path):
    inp = tmp_path / "in"
    _png(inp / "a.png", 10)
    out = inp / "restored"
    theirs = _png(out / "b.png", 99).read_bytes()  # the user's photo, already in OUT: an input like the others
    s = process_folder(inp, out, _copy_job)
    assert (s.done, s.skipped, s.failed) == (2, 0, [])
    assert (out / "b.png").read_bytes() == theirs and (out / "restored" / "b.png").is_file()
    assert (out / OUTPUTS_RECORD).read_bytes().split(b"\0") == [b"a.png", b"restored/b.png", b""]
    s = process_folder(inp, out, _copy_job)  # its own outputs are not new inputs
    assert (s.done, s.skipped, s.failed) == (0, 2, []) and not (out / "restored" / "restored").exists()
    (out / "a.png").write_bytes(b"stale")
    s = process_folder(inp, out, _copy_job, overwrite=True)  # and --overwrite replaces them, only them
    assert (s.done, s.skipped, s.failed) == (2, 0, [])
    assert io.read_image(out / "a.png").image.mul(255).round().eq(10).all()
    assert (out / "b.png").read_bytes() == theirs


def test_files_a_job_writes_beside_its_output_are_its_own(tmp_path):
    inp = tmp_path / "in"
    _png(inp / "x.png", 10)

    def job(src: Path, dst: Path) -> None:  # a side map, as restore denoise --uncertainty writes
        io.write_image(dst.with_name(dst.stem + ".std.png"), torch.zeros(1, 6, 5), bit_depth=16)
        _copy_job(src, dst)

    assert process_folder(inp, inp / "out", job).done == 1
    s = process_folder(inp, inp / "out", job)
    assert (s.done, s.skipped, s.failed) == (0, 1, [])  # x.std.png was not taken for an input


def test_no_file_a_job_writes_lands_on_an_input(tmp_path):
    """The plan checks the planned outputs; a side map named like the user's image is checked at the write."""
    inp = tmp_path / "in"
    _png(inp / "x.png", 10)
    out = inp / "out"
    theirs = _png(out / "x.std.png", 99).read_bytes()  # the user's, in OUT before the run: an input

    def job(src: Path, dst: Path) -> None:
        io.write_image(dst.with_name(dst.stem + ".std.png"), torch.zeros(1, 6, 5), bit_depth=16)
        _copy_job(src, dst)

    s = process_folder(inp, out, job)
    assert s.done == 1 and s.failed == [(inp / "x.png", f"{out / 'x.std.png'} is an input of this run and is never "
                                                         "replaced; rename it or choose another OUT")]
    assert (out / "x.std.png").read_bytes() == theirs and not list(out.glob(".*.tmp.png"))


# --------------------------------------------------------------------------- 2. entries that cannot be read


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs symlinks and FIFOs")
def test_links_and_fifos_named_like_images_are_failures(tmp_path, capsys):
    inp = tmp_path / "in"
    _png(inp / "good.png", 10)
    (inp / "dangling.png").symlink_to(inp / "gone.png")
    (inp / "loop.png").symlink_to("loop.png")
    (inp / "sub").mkdir()
    os.mkfifo(inp / "sub" / "pipe.png")
    s = process_folder(inp, tmp_path / "out", _copy_job)
    assert s.done == 1
    reasons = dict(s.failed)
    assert sorted(reasons) == [inp / "dangling.png", inp / "loop.png", inp / "sub" / "pipe.png"]
    assert "dangling symlink" in reasons[inp / "dangling.png"] and "gone.png" in reasons[inp / "dangling.png"]
    assert "symlink loop" in reasons[inp / "loop.png"]
    assert "FIFO" in reasons[inp / "sub" / "pipe.png"]
    err = capsys.readouterr().err
    assert all(f"failed: {p}: " in err for p in reasons) and "1 done, 0 skipped (output exists), 3 failed" in err
    assert cli.main(["corrupt", str(inp), str(tmp_path / "out2"), "--spec", "gray"]) == 1
    # the only entries are unreadable: still named, still exit 1 (not "no images found")
    only = tmp_path / "only"
    only.mkdir()
    (only / "dangling.png").symlink_to(only / "gone.png")
    assert cli.main(["corrupt", str(only), str(tmp_path / "out3"), "--spec", "gray"]) == 1
    assert f"failed: {only / 'dangling.png'}: dangling symlink" in capsys.readouterr().err


def test_a_fifo_given_as_in_is_a_failed_file(tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert cli.main(["corrupt", str(fifo), str(tmp_path / "out"), "--spec", "gray"]) == 1
    assert "is not a regular file" in capsys.readouterr().err


def _unlistable(monkeypatch, folder: Path) -> None:
    """Make ``folder`` fail to list as a chmod 000 folder does (chmod does not stop root)."""
    real = os.scandir

    def scandir(path=".", *a, **k):
        if Path(os.fsdecode(path)) == folder:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_folder_that_cannot_be_listed_is_a_failure(tmp_path, monkeypatch, capsys):
    inp = tmp_path / "in"
    _png(inp / "good.png", 10)
    _png(inp / "locked" / "hidden_from_us.png", 10)
    _unlistable(monkeypatch, inp / "locked")
    s = process_folder(inp, tmp_path / "out", _copy_job)
    assert s.done == 1 and s.failed == [(inp / "locked", "folder cannot be listed (Permission denied)")]
    assert "1 failed" in capsys.readouterr().err
    assert cli.main(["corrupt", str(inp), str(tmp_path / "out2"), "--spec", "gray"]) == 1
    with pytest.warns(UserWarning, match="locked: skipped, folder cannot be listed"):  # training sets: a warning
        assert io.list_images(inp) == [inp / "good.png"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root lists any folder")
def test_a_chmod_000_folder_is_a_failure(tmp_path):
    inp = tmp_path / "in"
    _png(inp / "good.png", 10)
    _png(inp / "locked" / "x.png", 10)
    (inp / "locked").chmod(0)
    try:
        s = process_folder(inp, tmp_path / "out", _copy_job)
    finally:
        (inp / "locked").chmod(0o755)
    assert s.done == 1 and [p for p, _ in s.failed] == [inp / "locked"]


# --------------------------------------------------------------------------- 3. SIGTERM, SIGHUP, SIGINT

# The child stops inside restore.io.atomic.atomic_output, after the temporary file is written (at its fsync),
# says so, and waits for the test's signal.
_SLOW_WRITER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
from restore import cli

def stuck_fsync(fd):
    print("WRITING", flush=True)
    time.sleep(120)

os.fsync = stuck_fsync
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])  # SIGINT: the same path, from Python itself
def test_a_signal_while_writing_removes_the_temporary_file_and_reports(tmp_path, signame):
    signum = getattr(signal, signame)
    inp, out = tmp_path / "in", tmp_path / "out"
    _png(inp / "a.png", 10)
    _png(inp / "b.png", 20)
    child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, "corrupt", str(inp), str(out), "--spec", "gray"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert child.stdout.readline().strip() == "WRITING"
        assert [p.name for p in out.iterdir() if p.name.endswith(".tmp.png")]  # the temporary file exists
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 128 + signum, err
    assert sorted(p.name for p in out.iterdir()) == [OUTPUTS_RECORD]  # no temporary file, no output
    assert f"0 done, 0 skipped (output exists), 0 failed, 2 not done (interrupted by {signame})" in err
    assert f"restore corrupt: error: interrupted by {signame}" in err and "Traceback" not in err


def test_a_rerun_removes_the_temporary_files_a_killed_run_left(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    _png(inp / "a.png", 10)
    _png(inp / "sub" / "b.png", 20)
    (out / "sub").mkdir(parents=True)
    prefix, suffix = io_atomic._temp_name_parts(out / "sub" / "b.png")  # what a SIGKILL during its write leaves
    stale = out / "sub" / f"{prefix}x1y2z3_4{suffix}"
    stale.write_bytes(b"half")
    others = [out / ".c.x1y2z3_4.tmp.png", out / ".a.X1Y2Z3_4.tmp.png", out / ".a.x1y2z3_4.tmp.jpg", out / "a.tmp.png"]
    for p in others:  # not atomic_output's name for a planned output: never touched
        p.write_bytes(b"theirs")
    s = process_folder(inp, out, _copy_job)
    assert (s.done, s.skipped, s.failed) == (2, 0, [])
    assert not stale.exists() and all(p.read_bytes() == b"theirs" for p in others)
    assert f"removed {stale}: a temporary file left by an interrupted run" in capsys.readouterr().err



def test_a_rerun_also_removes_the_temporaries_of_recorded_side_files(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    _png(inp / "x.png", 10)

    def job(src: Path, dst: Path) -> None:
        io.write_image(dst.with_name(dst.stem + ".std.png"), torch.zeros(1, 6, 5), bit_depth=16)
        _copy_job(src, dst)

    assert process_folder(inp, out, job).done == 1
    prefix, suffix = io_atomic._temp_name_parts(out / "x.std.png")  # killed while rewriting the side map
    stale = out / f"{prefix}abcd1234{suffix}"
    stale.write_bytes(b"half")
    assert process_folder(inp, out, job).skipped == 1
    assert not stale.exists() and f"removed {stale}" in capsys.readouterr().err

# --------------------------------------------------------------------------- a reader that goes away


@pytest.mark.skipif(os.name != "posix", reason="POSIX pipes")
@pytest.mark.parametrize("json_flag", [["--json"], []])
def test_weights_listing_into_a_closed_pipe_ends_quietly(tmp_path, json_flag):
    """`restore weights --json | head -1`: the reader is gone before the first write."""
    wdir = tmp_path / "weights"
    wdir.mkdir()
    for k in range(3):
        card = {"name": f"w{k}", "task": "denoise", "arch": "unet", "config": {}, "sha256": "0" * 64,
                "size_bytes": 1, "metrics": {"note": "x" * 4000}}
        (wdir / f"w{k}.json").write_text(json.dumps(card))
    read, write = os.pipe()
    os.close(read)  # no reader at all: every write fails with EPIPE
    try:
        child = subprocess.run([sys.executable, "-m", "restore.cli", "weights", *json_flag], stdout=write,
                               stderr=subprocess.PIPE, text=True, timeout=120,
                               env={**os.environ, "RESTORE_WEIGHTS_DIR": str(wdir), "OMP_NUM_THREADS": "1"})
    finally:
        os.close(write)
    assert child.returncode == 128 + signal.SIGPIPE
    assert child.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored" at exit


# --------------------------------------------------------------------------- 5. lossy masks


def _stroke_mask(path: Path, **save) -> np.ndarray:
    """A white freeform-like stroke region on black, saved with ``save`` options; returns the drawn array."""
    drawn = np.zeros((64, 80), np.uint8)
    drawn[10:30, 12:50] = 255
    drawn[25:55, 40:52] = 255
    Image.fromarray(drawn).save(path, **save)
    return drawn


def test_a_jpeg_mask_with_ringing_is_warned_with_how_to_threshold_it(tmp_path):
    jpeg = tmp_path / "mask.jpg"
    drawn = _stroke_mask(jpeg, quality=90)
    with pytest.warns(io.LossyMaskWarning, match=r"lossy JPEG mask .* are faint .* threshold this one at 50%") as got:
        mask = io.read_mask(jpeg)
    assert int(mask.sum()) > int((drawn > 0).sum())  # the ringing really became holes
    fix = str(got[0].message).rsplit(": ", 1)[1]
    assert fix.startswith("python -c ")
    subprocess.run([sys.executable, *shlex.split(fix)[1:]], check=True, timeout=120)  # the advice works as given
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = io.read_mask(tmp_path / "mask.png")  # lossless now: no warning
    assert torch.equal(fixed[0], torch.from_numpy(drawn > 0).float())


def test_lossless_and_clean_masks_are_not_warned_about(tmp_path):
    _stroke_mask(tmp_path / "m.png")
    _stroke_mask(tmp_path / "lossless.webp", lossless=True)
    clean = tmp_path / "flat.jpg"  # a JPEG that marks nothing: no ringing to speak of
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(clean, quality=90)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("m.png", "lossless.webp", "flat.jpg"):
            io.read_mask(tmp_path / name)
    _stroke_mask(tmp_path / "lossy.webp", quality=60)
    with pytest.warns(io.LossyMaskWarning, match="lossy WebP mask"):
        io.read_mask(tmp_path / "lossy.webp")


def test_the_folder_driver_names_the_file_a_warning_is_about(tmp_path, capsys):
    inp = tmp_path / "in"
    for name in ("a.png", "b.png"):
        _png(inp / name, 10)
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("a.jpg", "b.jpg"):
        _stroke_mask(masks / name, quality=90)

    def job(src: Path, dst: Path) -> None:
        io.read_mask(masks / (src.stem + ".jpg"))
        _copy_job(src, dst)

    assert process_folder(inp, tmp_path / "out", job).done == 2
    err = capsys.readouterr().err
    for name in ("a", "b"):  # every file's warning, not only the first one's
        assert f"warning: {inp / (name + '.png')}: {masks / (name + '.jpg')} is a lossy JPEG mask" in err
