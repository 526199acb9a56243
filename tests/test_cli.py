"""The `restore` command: corrupt (issue-2 acceptance folder), task wiring, weights, demo."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from restore import cli, models, pipeline
from restore import weights as W
from restore.options import Options, option
from restore.pipeline import Restorer, Work
from restore.tiling import tiled

# --------------------------------------------------------------------------- fixtures: a mixed folder


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _good_images(root: Path) -> dict[str, dict]:
    """Write the good files; return rel path -> expected (size, mode/dtype, channels)."""
    r = _rng()
    root.mkdir(parents=True, exist_ok=True)
    (root / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(r.integers(0, 256, (24, 31, 3), dtype=np.uint8)).save(root / "rgb8.png")
    Image.fromarray(r.integers(0, 256, (20, 18), dtype=np.uint8)).save(root / "gray8.png")
    Image.fromarray(r.integers(0, 256, (16, 21, 4), dtype=np.uint8), "RGBA").save(root / "nested" / "rgba.png")
    cv2.imwrite(str(root / "rgb16.png"), r.integers(0, 65536, (17, 23, 3), dtype=np.uint16))
    cv2.imwrite(str(root / "nested" / "deeper" / "gray16.png"), r.integers(0, 65536, (15, 12), dtype=np.uint16))
    Image.fromarray(r.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "photo.jpg", quality=90)
    Image.fromarray(np.array([[[200, 10, 30]]], dtype=np.uint8)).save(root / "tiny1x1.png")
    Image.fromarray(r.integers(0, 256, (1001, 37), dtype=np.uint8)).save(root / "tall37x1001.png")
    return {
        "rgb8.png": dict(size=(31, 24), channels=3, depth=8),
        "gray8.png": dict(size=(18, 20), channels=1, depth=8),
        "nested/rgba.png": dict(size=(21, 16), channels=4, depth=8),
        "rgb16.png": dict(size=(23, 17), channels=3, depth=16),
        "nested/deeper/gray16.png": dict(size=(12, 15), channels=1, depth=16),
        "photo.png": dict(size=(40, 30), channels=3, depth=8),
        "tiny1x1.png": dict(size=(1, 1), channels=3, depth=8),
        "tall37x1001.png": dict(size=(37, 1001), channels=1, depth=8),
    }


def _bad_files(root: Path) -> list[Path]:
    full = root / "photo.jpg"
    truncated = root / "nested" / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    empty = root / "empty.png"
    empty.write_bytes(b"")
    text = root / "nested" / "notes.png"
    text.write_text("this is not an image\n")
    return [truncated, empty, text]


def _read_raw(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _check_output(path: Path, expect: dict) -> np.ndarray:
    arr = _read_raw(path)
    assert arr is not None, path
    w, h = expect["size"]
    assert arr.shape[:2] == (h, w), path
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    assert channels == expect["channels"], path
    assert arr.dtype == (np.uint16 if expect["depth"] == 16 else np.uint8), path
    return arr


# --------------------------------------------------------------------------- corrupt


def test_corrupt_acceptance_folder(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_images(inp)
    bad = _bad_files(inp)

    rc = cli.main(["corrupt", str(inp), str(out), "--spec", "gaussian:sigma=25", "--seed", "3"])
    captured = capsys.readouterr()
    assert rc == 1, captured.err
    for rel, expect in good.items():
        arr = _check_output(out / rel, expect)
        if expect["channels"] == 4:  # alpha written back unchanged
            src = np.array(Image.open(inp / rel))
            assert np.array_equal(arr[..., 3], src[..., 3])
    # noise really applied to the 8-bit RGB image
    src = np.array(Image.open(inp / "rgb8.png")).astype(float)
    noisy = np.array(Image.open(out / "rgb8.png")).astype(float)
    assert 10 < np.std(noisy - src) < 30
    for path in bad:
        assert f"failed: {path}: " in captured.err
        assert not (out / path.relative_to(inp)).with_suffix(".png").exists()
    reasons = {p.name: line for line in captured.err.splitlines() for p in bad if f"failed: {p}: " in line}
    assert all(len(line.split(": ", 2)[-1]) > 3 for line in reasons.values())
    assert f"{len(good)} done, 0 skipped (output exists), 3 failed" in captured.err

    stamps = {rel: (out / rel).stat().st_mtime_ns for rel in good}
    assert cli.main(["corrupt", str(inp), str(out), "--spec", "gaussian:sigma=25", "--seed", "3"]) == 1
    assert f"0 done, {len(good)} skipped (output exists), 3 failed" in capsys.readouterr().err
    assert stamps == {rel: (out / rel).stat().st_mtime_ns for rel in good}

    before = (out / "rgb8.png").read_bytes()
    (out / "rgb8.png").write_bytes(b"stale")
    assert cli.main(["corrupt", str(inp), str(out), "--spec", "gaussian:sigma=25", "--seed", "3", "--overwrite"]) == 1
    assert f"{len(good)} done, 0 skipped" in capsys.readouterr().err
    assert (out / "rgb8.png").read_bytes() == before  # same seed, same bytes


def test_corrupt_seed_depends_on_relative_path_not_folder_content(tmp_path, capsys):
    inp = tmp_path / "in"
    _good_images(inp)
    assert cli.main(["corrupt", str(inp), str(tmp_path / "all"), "--spec", "gaussian:sigma=10", "--seed", "7"]) == 0
    solo = tmp_path / "solo"
    (solo / "nested").mkdir(parents=True)
    (solo / "nested" / "rgba.png").write_bytes((inp / "nested" / "rgba.png").read_bytes())
    assert cli.main(["corrupt", str(solo), str(tmp_path / "solo_out"), "--spec", "gaussian:sigma=10", "--seed", "7"]) == 0
    assert (tmp_path / "solo_out" / "nested" / "rgba.png").read_bytes() == (tmp_path / "all" / "nested" / "rgba.png").read_bytes()
    assert cli.main(["corrupt", str(inp), str(tmp_path / "other"), "--spec", "gaussian:sigma=10", "--seed", "8"]) == 0
    assert (tmp_path / "other" / "rgb8.png").read_bytes() != (tmp_path / "all" / "rgb8.png").read_bytes()
    assert cli.file_seed(7, "a/b.png") == cli.file_seed(7, Path("a") / "b.png") != cli.file_seed(7, "a/c.png")


def test_corrupt_writes_masks(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "sub").mkdir(parents=True)
    r = _rng(1)
    Image.fromarray(r.integers(1, 256, (40, 48, 3), dtype=np.uint8)).save(inp / "a.png")
    Image.fromarray(r.integers(1, 256, (33, 29), dtype=np.uint8)).save(inp / "sub" / "b.jpg")
    assert cli.main(["corrupt", str(inp), str(out), "--spec", "mask:box", "--seed", "1"]) == 0
    for rel in ("a.png", "sub/b.png"):
        mask = np.array(Image.open(out / "masks" / rel))
        img = np.array(Image.open(out / rel))
        assert mask.dtype == np.uint8 and mask.shape == img.shape[:2]
        assert set(np.unique(mask)) == {0, 255}
        assert 0.05 < (mask == 255).mean() < 0.6
        holes = mask == 255
        assert (img[holes] == 0).all()
        if rel == "a.png":  # lossless source with no zeros: only the holes became 0
            assert (img[~holes] > 0).all()


def test_corrupt_usage_errors(tmp_path, capsys):
    inp = tmp_path / "in"
    _good_images(inp)
    assert cli.main(["corrupt", str(inp), str(inp), "--spec", "gray"]) == 2
    assert "same as IN" in capsys.readouterr().err
    assert cli.main(["corrupt", str(inp), str(tmp_path / "o"), "--spec", "nosuch:x=1"]) == 2
    assert "--spec 'nosuch:x=1'" in capsys.readouterr().err
    assert cli.main(["corrupt", str(tmp_path / "missing"), str(tmp_path / "o"), "--spec", "gray"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["corrupt", str(tmp_path / "empty"), str(tmp_path / "o"), "--spec", "gray"]) == 2
    assert "no images found" in capsys.readouterr().err
    assert cli.main(["corrupt", str(inp), str(tmp_path / "o")]) == 2  # --spec missing: argparse usage error
    assert not (tmp_path / "o").exists()


def test_corrupt_single_file(tmp_path, capsys):
    inp = tmp_path / "in"
    _good_images(inp)
    assert cli.main(["corrupt", str(inp / "gray8.png"), str(tmp_path / "g.png"), "--spec", "blur:scale=2"]) == 0
    assert np.array(Image.open(tmp_path / "g.png")).shape == (20, 18)


# --------------------------------------------------------------------------- a fake task


class Scale(nn.Module):
    """Stand-in restorer: y = clamp(x * gain + shift), per channel."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.config = {"channels": channels}
        self.gain = nn.Parameter(torch.full((channels,), 0.5))
        self.shift = nn.Parameter(torch.full((channels,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.gain[:, None, None] + self.shift[:, None, None]).clamp(0, 1)


CALLS: list[dict] = []


@dataclass(frozen=True)
class FakeOptions(Options):
    task: ClassVar[str] = "fake"

    strength: float = option(1.0, "a task flag that reaches the restorer")
    side: bool = option(False, "also return a constant 'std' side map", flag=True)


def _fake_restorer(name: str) -> type[Restorer]:
    class Fake(Restorer):
        task = name
        options_type = FakeOptions
        commands = (name,)
        needs_mask = name == "inpaint"
        colour_output = name == "colorize"

        def prepare(self, x, mask, opts):
            CALLS.append({"shape": tuple(x.shape), "tile": opts.tile, "mask": mask is not None,
                          "strength": opts.strength})
            return Work(x.expand(-1, 3, -1, -1), {"mask": mask})

        def network(self, work, opts):
            fn = lambda t: self.model(t.to(self.device))  # noqa: E731
            return tiled(fn, work.net_input, tile=opts.tile, overlap=4) if opts.tile else fn(work.net_input)

        def finish(self, y, x, work, opts):
            if work.state["mask"] is not None:
                y = torch.where(work.state["mask"], torch.ones_like(y), x.expand_as(y))
            y = y.mean(1, keepdim=True) if x.shape[1] == 1 and name != "colorize" else y
            return (y, {"std": torch.full_like(y[:, :1], 0.5)}) if opts.side else y

    return Fake


@pytest.fixture()
def fake_tasks(monkeypatch, tmp_path):
    CALLS.clear()
    monkeypatch.setitem(models.ARCHITECTURES, "scale-test", f"{__name__}:Scale")
    wdir = tmp_path / "weights"
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(wdir))
    for task in ("denoise", "inpaint", "colorize"):
        modname = f"fake_restore_task_{task}"
        mod = types.ModuleType(modname)
        mod.Fake = _fake_restorer(task)
        monkeypatch.setitem(sys.modules, modname, mod)
        monkeypatch.setitem(pipeline.RESTORERS, task, f"{modname}:Fake")
        monkeypatch.setitem(cli.DEFAULT_WEIGHTS, task, f"fake-{task}")
    corruption = {"denoise": "gaussian:sigma=25", "inpaint": "mask:box", "colorize": "gray"}
    for task in ("denoise", "inpaint"):  # colorize ships nothing
        W.save(wdir / f"fake-{task}", Scale(), {"task": task, "corruption": corruption[task],
                                                "metrics": {"psnr": 31.25, "ssim": 0.9}})
    return wdir


def test_denoise_keeps_channels_alpha_depth(fake_tasks, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _good_images(inp)
    bad = _bad_files(inp)
    rc = cli.main(["denoise", str(inp), str(out), "--tile", "16", "--device", "cpu", "--strength", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    for rel, expect in good.items():
        _check_output(out / rel, expect)
    for path in bad:
        assert f"failed: {path}" in err
    assert all(c["strength"] == 2.0 and c["tile"] == 16 for c in CALLS)
    # the model really ran: y = 0.5 x + 0.25 on 8-bit RGB
    src = np.array(Image.open(inp / "rgb8.png")).astype(float) / 255
    got = np.array(Image.open(out / "rgb8.png")).astype(float) / 255
    assert np.abs(got - (0.5 * src + 0.25)).max() <= 0.5 / 255 + 1e-9
    src16 = _read_raw(inp / "rgb16.png").astype(float) / 65535
    got16 = _read_raw(out / "rgb16.png").astype(float) / 65535
    assert np.abs(got16 - (0.5 * src16 + 0.25)).max() <= 1.0 / 65535
    rgba_in, rgba_out = np.array(Image.open(inp / "nested" / "rgba.png")), np.array(Image.open(out / "nested" / "rgba.png"))
    assert np.array_equal(rgba_in[..., 3], rgba_out[..., 3])


def test_batches_images_of_equal_size(fake_tasks, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    r = _rng(2)
    for i, size in enumerate([(8, 8), (8, 8), (9, 8), (8, 8), (9, 8)]):
        Image.fromarray(r.integers(0, 256, (*size, 3), dtype=np.uint8)).save(inp / f"{i}.png")
    assert cli.main(["denoise", str(inp), str(tmp_path / "out"), "--batch-size", "2", "--device", "cpu"]) == 0
    shapes = sorted(c["shape"] for c in CALLS)
    assert shapes == [(1, 3, 8, 8), (1, 3, 9, 8), (2, 3, 8, 8)] or shapes == [(1, 3, 8, 8), (2, 3, 8, 8), (2, 3, 9, 8)]
    assert len(list((tmp_path / "out").glob("*.png"))) == 5


def test_inpaint_uses_masks_by_relative_path(fake_tasks, tmp_path, capsys):
    inp, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    (inp / "sub").mkdir(parents=True)
    (masks / "sub").mkdir(parents=True)
    r = _rng(3)
    Image.fromarray(r.integers(0, 200, (12, 10, 3), dtype=np.uint8)).save(inp / "sub" / "a.jpg")
    Image.fromarray(r.integers(0, 200, (12, 10, 3), dtype=np.uint8)).save(inp / "b.png")  # no mask for b
    hole = np.zeros((12, 10), np.uint8)
    hole[3:7, 2:5] = 255
    Image.fromarray(hole).save(masks / "sub" / "a.png")
    rc = cli.main(["inpaint", str(inp), str(out), "--masks", str(masks), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and f"failed: {inp / 'b.png'}: " in err and "no mask" in err
    got = np.array(Image.open(out / "sub" / "a.png"))
    assert (got[3:7, 2:5] == 255).all() and CALLS[0]["mask"]
    assert cli.main(["inpaint", str(inp), str(out)]) == 2  # --masks is required
    assert "--masks" in capsys.readouterr().err


def test_corrupt_then_inpaint_round_trip(fake_tasks, tmp_path, capsys):
    """`restore corrupt IN D --spec mask:...` writes D/masks; `restore inpaint D R --masks D/masks` must not
    take those masks for images to inpaint (they would each fail with "no mask")."""
    inp, damaged, out = tmp_path / "in", tmp_path / "damaged", tmp_path / "out"
    (inp / "sub").mkdir(parents=True)
    r = _rng(5)
    Image.fromarray(r.integers(1, 256, (20, 24, 3), dtype=np.uint8)).save(inp / "a.png")
    Image.fromarray(r.integers(1, 256, (18, 16, 3), dtype=np.uint8)).save(inp / "sub" / "b.png")
    assert cli.main(["corrupt", str(inp), str(damaged), "--spec", "mask:box"]) == 0
    rc = cli.main(["inpaint", str(damaged), str(out), "--masks", str(damaged / "masks"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a.png", "sub/b.png"]
    assert len(CALLS) == 2 and all(c["mask"] for c in CALLS)


def test_corrupt_never_writes_a_mask_over_an_input(tmp_path, capsys):
    """IN = X/masks, OUT = X: the masks would go to X/masks/<name>.png, i.e. onto the inputs themselves."""
    x = tmp_path / "x"
    (x / "masks").mkdir(parents=True)
    Image.fromarray(_rng(6).integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(x / "masks" / "a.png")
    before = (x / "masks" / "a.png").read_bytes()
    assert cli.main(["corrupt", str(x / "masks"), str(x), "--spec", "mask:box"]) == 2
    assert cli.main(["corrupt", str(x / "masks" / "a.png"), str(x), "--spec", "mask:box"]) == 2
    assert "inputs are never overwritten" in capsys.readouterr().err
    assert (x / "masks" / "a.png").read_bytes() == before and not (x / "a.png").exists()
    # a spec without masks writes no mask, so the same layout is fine
    assert cli.main(["corrupt", str(x / "masks"), str(x), "--spec", "gaussian:sigma=5"]) == 0
    assert (x / "masks" / "a.png").read_bytes() == before and (x / "a.png").is_file()


def _masked_pair(tmp_path: Path) -> tuple[Path, Path]:
    inp, masks = tmp_path / "in", tmp_path / "masks"
    inp.mkdir()
    masks.mkdir()
    r = _rng(7)
    for name in ("a", "b"):
        Image.fromarray(r.integers(0, 200, (12, 10, 3), dtype=np.uint8)).save(inp / f"{name}.png")
        hole = np.zeros((12, 10), np.uint8)
        hole[2:5, 3:6] = 255
        Image.fromarray(hole).save(masks / f"{name}.png")
    return inp, masks


def test_out_may_not_be_the_masks_folder(fake_tasks, tmp_path, capsys):
    """The masks are inputs: writing the inpainted images into their folder would replace them."""
    inp, masks = _masked_pair(tmp_path)
    before = {p.name: p.read_bytes() for p in masks.iterdir()}
    for out in (masks, masks / "sub"):
        for extra in ([], ["--overwrite"]):
            assert cli.main(["inpaint", str(inp), str(out), "--masks", str(masks), "--device", "cpu", *extra]) == 2
            assert "OUT is" in capsys.readouterr().err
    # a single mask file given as --masks is protected the same way
    assert cli.main(["inpaint", str(inp / "a.png"), str(masks / "a.png"), "--masks", str(masks / "a.png"),
                     "--device", "cpu", "--overwrite"]) == 2
    assert {p.name: p.read_bytes() for p in masks.iterdir()} == before


def test_a_bad_mask_is_named_in_the_error(fake_tasks, tmp_path, capsys):
    inp, masks = _masked_pair(tmp_path)
    (masks / "b.png").write_bytes(b"")
    rc = cli.main(["inpaint", str(inp), str(tmp_path / "out"), "--masks", str(masks), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"failed: {inp / 'b.png'}: {masks / 'b.png'}: " in err  # the mask, not the photo, is at fault


def test_an_empty_mask_is_noted(fake_tasks, tmp_path, capsys):
    inp, masks = _masked_pair(tmp_path)
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(masks / "b.png")
    assert cli.main(["inpaint", str(inp), str(tmp_path / "out"), "--masks", str(masks), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"{masks / 'b.png'} marks no hole" in err and f"{masks / 'a.png'}" not in err


def test_unusable_out_is_a_usage_error_before_any_work(fake_tasks, tmp_path, monkeypatch, capsys):
    inp = tmp_path / "in"
    _good_images(inp)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert cli.main(["denoise", str(inp), str(a_file), "--device", "cpu"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert cli.main(["denoise", str(inp), str(a_file / "below"), "--device", "cpu"]) == 2
    assert "is a file" in capsys.readouterr().err
    import restore.folder as infer

    real = infer.os.access
    monkeypatch.setattr(infer.os, "access", lambda p, m: False if Path(p) == tmp_path else real(p, m))
    assert cli.main(["denoise", str(inp), str(tmp_path / "new_out"), "--device", "cpu"]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert not CALLS  # nothing was restored before the refusal


def test_side_maps_never_collide_with_another_inputs_output(fake_tasks, tmp_path, capsys):
    """x.png's side map out/x.std.png is also the output of input x.std.png: neither may replace the other."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    r = _rng(8)
    for name in ("x", "x.std", "y"):
        Image.fromarray(r.integers(0, 256, (8, 9, 3), dtype=np.uint8)).save(inp / f"{name}.png")
    rc = cli.main(["denoise", str(inp), str(out), "--side", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and f"failed: {inp / 'x.png'}: " in err and "its std map" in err
    assert not (out / "x.png").exists()
    assert np.array(Image.open(out / "x.std.png")).ndim == 3  # the restored RGB image, not a 1-channel map
    assert (out / "y.png").is_file() and (out / "y.std.png").is_file()


def test_a_link_to_a_parent_folder_does_not_make_outputs_inputs(fake_tasks, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "sub").mkdir(parents=True)
    Image.fromarray(_rng(9).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(inp / "a.png")
    (inp / "sub" / "up").symlink_to(Path("..") / "..")
    assert cli.main(["denoise", str(inp), str(out), "--device", "cpu"]) in (0, 1)
    capsys.readouterr()
    # the re-run reaches out/ through in/sub/up/out: those are outputs, not inputs to plan over
    assert cli.main(["denoise", str(inp), str(out), "--device", "cpu"]) in (0, 1)
    assert "output path is an input file" not in capsys.readouterr().err


def test_restored_images_keep_the_icc_profile(fake_tasks, tmp_path, capsys):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(_rng(10).integers(0, 256, (8, 9, 3), dtype=np.uint8)).save(inp / "a.png", icc_profile=profile)
    for command in (["denoise"], ["corrupt", "--spec", "gaussian:sigma=5"]):
        out = tmp_path / f"out-{command[0]}"
        assert cli.main([command[0], str(inp), str(out), *command[1:], *(["--device", "cpu"] if command[0] != "corrupt" else [])]) == 0
        assert Image.open(out / "a.png").info.get("icc_profile") == profile


def test_file_seed_accepts_names_that_are_not_utf8():
    bad = Path(b"caf\xe9.png".decode("utf-8", "surrogateescape"))
    assert cli.file_seed(0, bad) != cli.file_seed(0, "cafe.png")
    assert cli.file_seed(0, "a/b.png") == cli.file_seed(0, Path("a") / "b.png")


def test_demo_into_a_file_is_a_usage_error(fake_tasks, tmp_path, one_small_photo, capsys):
    target = tmp_path / "f"
    target.write_text("x")
    assert cli.main(["demo", str(target), "--device", "cpu"]) == 2
    assert "wrote" not in capsys.readouterr().out


def test_task_errors_exit_2(fake_tasks, tmp_path, monkeypatch, capsys):
    inp = tmp_path / "in"
    _good_images(inp)
    # colorize ships no weights: clear error listing what does ship
    assert cli.main(["colorize", str(inp), str(tmp_path / "o"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown weights 'fake-colorize'" in err and "fake-denoise, fake-inpaint" in err
    # weights of another task
    assert cli.main(["denoise", str(inp), str(tmp_path / "o"), "--weights", "fake-inpaint", "--device", "cpu"]) == 2
    assert "for task 'inpaint', not 'denoise'" in capsys.readouterr().err
    # a task module that does not exist yet
    monkeypatch.setitem(pipeline.RESTORERS, "denoise", "restore.restorers.no_such_module_yet:Fake")
    assert cli.main(["denoise", str(inp), str(tmp_path / "o")]) == 2
    assert "task 'denoise' is not available" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_weights_by_path(fake_tasks, tmp_path, capsys):
    inp = tmp_path / "in"
    _good_images(inp)
    st = fake_tasks / "fake-denoise.safetensors"
    assert cli.main(["denoise", str(inp / "rgb8.png"), str(tmp_path / "x.png"), "--weights", str(st), "--device", "cpu"]) == 0
    assert (tmp_path / "x.png").is_file()


# --------------------------------------------------------------------------- weights / demo


def test_weights_listing(fake_tasks, capsys):
    assert cli.main(["weights"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "task", "arch", "size", "corruption", "metrics"]
    row = next(line for line in lines if line.startswith("fake-denoise"))
    assert "denoise" in row and "scale-test" in row and "gaussian:sigma=25" in row and "psnr=31.25" in row and "MB" in row
    assert cli.main(["weights", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in cards] == ["fake-denoise", "fake-inpaint"] and all(len(c["sha256"]) == 64 for c in cards)


def test_weights_listing_empty(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path / "none"))
    assert cli.main(["weights"]) == 0
    assert "no weights ship yet" in capsys.readouterr().out


@pytest.fixture()
def one_small_photo(monkeypatch):
    """Demo on one downsized bundled photo keeps the test fast on 2 shared cores."""
    real = cli._demo_photos

    def photos():
        name, photo = real()[0]
        return [(name, torch.nn.functional.interpolate(photo, size=(64, 64), mode="area"))]

    monkeypatch.setattr(cli, "_demo_photos", photos)


def test_demo_runs_shipped_tasks(fake_tasks, tmp_path, one_small_photo, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", str(out), "--device", "cpu"]) == 0
    for name in ("fake-denoise", "fake-inpaint"):
        grid = np.array(Image.open(out / name / "astronaut-grid.png"))
        assert grid.shape[0] > 64 and grid.shape[1] >= 3 * 64  # input | restored | target, labelled
        assert (out / name / "astronaut-restored.png").is_file() and (out / name / "astronaut-input.png").is_file()
    restored = np.array(Image.open(out / "fake-denoise" / "astronaut-restored.png")).astype(float) / 255
    assert restored.min() >= 0.25 - 1 / 255  # the fake model's output range: 0.5 x + 0.25
    assert {c["mask"] for c in CALLS} == {True, False}


def test_demo_without_weights_writes_degraded_inputs(monkeypatch, tmp_path, one_small_photo, capsys):
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path / "none"))
    out = tmp_path / "demo"
    assert cli.main(["demo", str(out)]) == 0
    assert "no weights ship yet" in capsys.readouterr().out
    written = sorted(p.name for p in (out / "degraded").iterdir())
    assert written == [f"astronaut-{t}.png" for t in sorted(cli.DEMO_SPECS)]


def test_grid_labels_and_sizes():
    g = cli.grid([("a", torch.zeros(1, 1, 10, 12)), ("b", torch.ones(3, 20, 5))], gap=2, bar=16)
    assert g.shape == (3, 36, 12 + 2 + 5)
    assert g[:, :16].min() < 1  # label text drawn in the bar


def test_help_and_bad_command(capsys):
    assert cli.main(["--help"]) == 0
    assert "corrupt" in capsys.readouterr().out
    assert cli.main(["nosuch"]) == 2


def test_missing_default_weights_say_how_to_get_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    (tmp_path / "no-weights").mkdir()
    inp = tmp_path / "in"
    inp.mkdir()
    cv2.imwrite(str(inp / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert cli.main(["denoise", str(inp), str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "default 'denoise-gaussian' weights are not installed" in err and "train/denoise.py" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
