"""restore.tiling (exactness, seams, memory) and restore.folder (the folder driver's guarantees)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from restore.folder import BatchJob, Summary, UsageError, process_folder
from restore.tiling import _starts, self_ensemble, tiled


def _u8_image(h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, c, h, w), generator=g, dtype=torch.uint8)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- tiling


@pytest.mark.parametrize(
    "h,w,tile,overlap,multiple",
    [(1, 1, 512, 32, 8), (1, 1, 4, 2, 1), (37, 1001, 64, 8, 1), (129, 70, 32, 8, 8), (50, 90, 7, 3, 4), (64, 64, 16, 15, 1)],
)
def test_identity_is_exact_in_8bit_and_tiles_stay_small(h, w, tile, overlap, multiple):
    img = _u8_image(h, w)
    seen = []

    def ident(x):
        seen.append(tuple(x.shape[-2:]))
        assert x.shape[-2] % multiple == 0 and x.shape[-1] % multiple == 0
        return x.clone()

    out = tiled(ident, img.float() / 255, tile=tile, overlap=overlap, multiple=multiple)
    assert out.shape == img.shape and out.dtype == torch.float32
    assert torch.equal(_to_u8(out), img)
    assert (out - img.float() / 255).abs().max() < 1e-5
    padded_tile = -(-tile // multiple) * multiple
    assert max(max(s) for s in seen) <= max(padded_tile, multiple)
    if h > tile or w > tile:
        assert len(seen) > 1  # the whole image was never passed at once


def test_interior_pixels_are_bit_exact():
    """Outside overlaps the weight is exactly 1: fn's output is copied, not approximated."""
    img = torch.rand(1, 2, 40, 100)
    out = tiled(lambda x: x * 1.0, img, tile=32, overlap=4)
    starts = _starts(100, 32, 4)
    # columns covered by a single tile only
    single = [c for c in range(100) if sum(s <= c < s + 32 for s in starts) == 1]
    assert single and torch.equal(out[..., single][..., :8, :], img[..., single][..., :8, :])


def test_chw_input_channel_change_and_batch():
    img = torch.rand(3, 45, 77)
    out = tiled(lambda x: x.mean(1, keepdim=True), img, tile=16, overlap=4)
    assert out.shape == (1, 45, 77)
    assert torch.allclose(out, img.mean(0, keepdim=True), atol=1e-6)
    batch = torch.rand(4, 3, 33, 20)
    assert torch.allclose(tiled(lambda x: 1 - x, batch, tile=8, overlap=2), 1 - batch, atol=1e-6)


def test_blur_is_seamless_with_overlap():
    """A 3x3 blur sees wrong neighbours at tile borders; blending must hide that."""
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, 200, 260, generator=g)  # strong pixel-to-pixel contrast: worst case for seams
    kernel = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    weight = kernel.expand(3, 1, 3, 3).contiguous()

    def blur(x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=3)

    full = blur(img)
    blended = tiled(blur, img, tile=64, overlap=16)
    # the seam baseline: disjoint 64x64 tiles pasted side by side, no blending
    pasted = torch.cat(
        [torch.cat([blur(img[..., y : y + 64, x : x + 64]) for x in range(0, 260, 64)], dim=-1) for y in range(0, 200, 64)],
        dim=-2,
    )
    err_blend, err_hard = (blended - full).abs(), (pasted - full).abs()
    assert err_hard.max() > 0.05  # the test can see a seam
    assert err_blend.max() < err_hard.max() / 8
    assert err_blend.mean() < 1e-3
    # away from tile borders tiling changes nothing
    assert torch.equal(blended[..., 10:30, 10:30], full[..., 10:30, 10:30])


def test_tile_starts_cover_with_overlap():
    for size in (1, 63, 64, 65, 300, 1001):
        for tile, overlap in ((64, 8), (64, 0), (10, 9)):
            starts = _starts(size, tile, overlap)
            assert starts[0] == 0 and min(size, starts[-1] + tile) == size
            for a, b in zip(starts, starts[1:]):
                assert 0 < b - a <= tile - overlap


def test_tiled_rejects_bad_arguments():
    img = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="overlap"):
        tiled(lambda x: x, img, tile=4, overlap=4)
    with pytest.raises(ValueError, match="tile"):
        tiled(lambda x: x, img, tile=0, overlap=0)
    with pytest.raises(ValueError, match="multiple"):
        tiled(lambda x: x, img, multiple=0)
    with pytest.raises(ValueError, match="CHW or NCHW"):
        tiled(lambda x: x, torch.rand(8, 8))
    with pytest.raises(ValueError, match="spatial size"):
        tiled(lambda x: x[..., :-1, :], img, tile=4, overlap=1)


def test_identity_4000x3000_exact_and_memory_bounded(tmp_path):
    """The issue-2 acceptance check, in a fresh process so ru_maxrss measures only this."""
    script = textwrap.dedent(
        """
        import json, resource, torch
        from restore.tiling import tiled
        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(0)
        u8 = torch.randint(0, 256, (1, 3, 3000, 4000), generator=g, dtype=torch.uint8)
        img = u8.float().div_(255)
        tiled(lambda x: x, img[..., :600, :600], tile=512, overlap=32)  # warm up allocator/kernels
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = tiled(lambda x: x, img, tile=512, overlap=32)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        exact = torch.equal(out.mul(255).round_().to(torch.uint8), u8)
        print(json.dumps({"growth_kb": after - before, "image_kb": img.numel() * 4 // 1024, "exact": exact,
                          "maxerr": float((out - img).abs().max())}))
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["exact"], info
    # growth = the output accumulator (one image) + one tile; never a second full image
    assert info["growth_kb"] < 1.25 * info["image_kb"] + 32 * 1024, info


# --------------------------------------------------------------------------- self-ensemble


def _oriented(x: torch.Tensor) -> torch.Tensor:
    """A map that is not equivariant to any flip or rotation: adds a ramp that grows down and to the right,
    and mixes in a horizontally shifted copy, so ``flip``/``rot90`` of the input change more than the output's pose."""
    h, w = x.shape[-2:]
    ramp = torch.arange(h, dtype=torch.float32)[:, None] * 0.01 + torch.arange(w, dtype=torch.float32)[None, :] * 0.003
    return 0.7 * x + 0.3 * torch.roll(x, 1, dims=-1) + ramp


_DIHEDRAL = [
    lambda t: t,
    lambda t: t.flip(-1),
    lambda t: t.flip(-2),
    lambda t: torch.rot90(t, 1, dims=(-2, -1)),
    lambda t: torch.rot90(t, 2, dims=(-2, -1)),
    lambda t: torch.rot90(t, 3, dims=(-2, -1)),
    lambda t: t.transpose(-2, -1),
    lambda t: torch.rot90(t, 1, dims=(-2, -1)).flip(-1),
]


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 1, 6, 6)])
def test_x8_ensemble_is_exactly_equivariant(shape):
    """Whatever the network, its x8 mean commutes with every symmetry of the square (flip mode: with mirrors)."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    base = self_ensemble(_oriented, x, "x8")
    assert base.shape == x.shape
    for t in _DIHEDRAL:
        torch.testing.assert_close(self_ensemble(_oriented, t(x), "x8"), t(base), atol=1e-5, rtol=0)
    flip = self_ensemble(_oriented, x, "flip")
    torch.testing.assert_close(self_ensemble(_oriented, x.flip(-1), "flip"), flip.flip(-1), atol=1e-6, rtol=0)
    # and it is not equivariant to rotations, which it does not average over
    assert not torch.allclose(self_ensemble(_oriented, x.flip(-2), "flip"), flip.flip(-2), atol=1e-3)


def test_ensemble_of_an_equivariant_map_is_the_map_and_none_is_one_pass():
    x = torch.rand(1, 2, 4, 9)
    calls = []

    def pointwise(t):
        calls.append(tuple(t.shape))
        return 2 * t + 1

    for mode, passes in (("none", 1), ("flip", 2), ("x8", 8)):
        calls.clear()
        torch.testing.assert_close(self_ensemble(pointwise, x, mode), 2 * x + 1, atol=1e-6, rtol=0)
        assert len(calls) == passes
    # the x8 rotations hand the network both orientations of a non-square image
    calls.clear()
    self_ensemble(pointwise, x, "x8")
    assert set(calls) == {(1, 2, 4, 9), (1, 2, 9, 4)}


def test_ensemble_never_writes_into_the_caller_s_tensor_and_rejects_bad_modes():
    x = torch.rand(1, 1, 3, 3)
    keep = x.clone()
    out = self_ensemble(lambda t: t, x, "flip")  # an identity network hands its input back
    torch.testing.assert_close(out, keep)
    assert torch.equal(x, keep)
    with pytest.raises(ValueError, match="none, flip, x8"):
        self_ensemble(lambda t: t, x, "x4")


def test_ensemble_runs_inside_non_square_tiles():
    """Tiles of 12x16 are rotated to 16x12 inside the ensemble and come back in place: for an equivariant
    local map (3x3 box filter) the tiled ensemble equals the tiled map."""
    img = torch.rand(1, 3, 12, 57, generator=torch.Generator().manual_seed(2))

    def box(t):
        return F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, stride=1)

    plain = tiled(box, img, tile=16, overlap=6)
    ensembled = tiled(lambda t: self_ensemble(box, t, "x8"), img, tile=16, overlap=6)
    torch.testing.assert_close(ensembled, plain, atol=1e-5, rtol=0)
    assert not torch.allclose(plain, img, atol=1e-3)


# --------------------------------------------------------------------------- folder driver


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _copy_job(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    if data.startswith(b"BAD"):
        raise ValueError("bad content")
    dst.write_bytes(data)


def test_process_folder_mirrors_skips_and_reports(tmp_path, capsys):
    inp = tmp_path / "in"
    _touch(inp / "a.png", b"A")
    _touch(inp / "sub" / "deep" / "b.JPG", b"B")
    _touch(inp / "bad.png", b"BAD")
    _touch(inp / "notes.txt", b"ignored")
    _touch(inp / ".hidden.png", b"ignored")
    out = tmp_path / "out"

    s = process_folder(inp, out, _copy_job, desc="copy")
    assert (s.done, s.skipped) == (2, 0)
    assert s.failed == [(inp / "bad.png", "ValueError: bad content")]
    assert (out / "a.png").read_bytes() == b"A" and (out / "sub" / "deep" / "b.png").read_bytes() == b"B"
    assert not (out / "bad.png").exists() and not (out / "notes.png").exists()
    err = capsys.readouterr().err
    assert f"failed: {inp / 'bad.png'}: ValueError: bad content" in err
    assert "copy: 2 done, 0 skipped (output exists), 1 failed" in err

    (out / "a.png").write_bytes(b"stale")
    s = process_folder(inp, out, _copy_job)
    assert (s.done, s.skipped, len(s.failed)) == (0, 2, 1)
    assert (out / "a.png").read_bytes() == b"stale"
    s = process_folder(inp, out, _copy_job, overwrite=True)
    assert (s.done, s.skipped) == (2, 0) and (out / "a.png").read_bytes() == b"A"


def test_process_folder_image_read_error_reason(tmp_path):
    from restore.io import ImageReadError

    inp = _touch(tmp_path / "in" / "x.png")

    def job(src, dst):
        raise ImageReadError(src, "truncated file")

    s = process_folder(inp.parent, tmp_path / "out", job)
    assert s.failed == [(inp, "truncated file")]


def test_usage_errors(tmp_path):
    inp = tmp_path / "in"
    _touch(inp / "a.png")
    with pytest.raises(UsageError, match="same as IN"):
        process_folder(inp, inp, _copy_job)
    with pytest.raises(UsageError, match="same as IN"):
        process_folder(inp, tmp_path / "in" / "." , _copy_job)
    with pytest.raises(UsageError, match="does not exist"):
        process_folder(tmp_path / "missing", tmp_path / "out", _copy_job)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UsageError, match="no images found"):
        process_folder(tmp_path / "empty", tmp_path / "out", _copy_job)
    # IN = data/in holding in/x.png, OUT = data: in/x.png would be written onto data/in/x.png, an input
    data = tmp_path / "data"
    _touch(data / "in" / "x.png", b"keep")
    _touch(data / "in" / "in" / "x.png", b"other")
    with pytest.raises(UsageError, match="output path is an input file"):
        process_folder(data / "in", data, _copy_job)
    assert (data / "in" / "x.png").read_bytes() == b"keep"


def test_out_inside_in_is_not_reprocessed(tmp_path):
    inp = tmp_path / "in"
    _touch(inp / "a.png", b"A")
    out = inp / "restored"
    assert process_folder(inp, out, _copy_job).done == 1
    s = process_folder(inp, out, _copy_job)  # restored/a.png is not a new input
    assert (s.done, s.skipped) == (0, 1) and not (out / "restored").exists()


def test_single_file_and_colliding_outputs(tmp_path, capsys):
    inp = tmp_path / "in"
    _touch(inp / "a.jpg", b"J")
    _touch(inp / "a.png", b"P")
    assert process_folder(inp / "a.jpg", tmp_path / "one.png", _copy_job).done == 1
    assert (tmp_path / "one.png").read_bytes() == b"J"
    assert process_folder(inp / "a.jpg", tmp_path / "dir", _copy_job).done == 1
    assert (tmp_path / "dir" / "a.png").read_bytes() == b"J"
    s = process_folder(inp, tmp_path / "out", _copy_job)
    assert s.done == 1 and len(s.failed) == 1
    assert s.failed[0][0] == inp / "a.png" and "also the output of" in s.failed[0][1]
    assert (tmp_path / "out" / "a.png").read_bytes() == b"J"


def test_batch_job_groups_by_key_and_isolates_failures(tmp_path):
    inp = tmp_path / "in"
    sizes = {"a": 2, "b": 3, "c": 2, "d": 2, "e": 3, "f": 2}
    for name, size in sizes.items():
        _touch(inp / f"{name}.png", (b"BAD" if name == "d" else b"ok") + bytes([size]))
    _touch(inp / "z.png", b"")  # load() fails on this one
    batches: list[list[str]] = []

    def load(src: Path):
        data = src.read_bytes()
        if not data:
            raise ValueError("empty")
        return (src.stem, data[-1], data.startswith(b"BAD"))

    def run(items):
        batches.append([i[0] for i in items])
        if any(bad for _, _, bad in items):
            raise RuntimeError("model failed")
        return [f"{name}:{size}" for name, size, _ in items]

    def save(item, result, dst):
        dst.write_text(result)

    job = BatchJob(load=load, run=run, save=save, key=lambda item: item[1], batch_size=2)
    s = process_folder(inp, tmp_path / "out", job)
    assert s.done == 5
    assert sorted(p.name for p, _ in s.failed) == ["d.png", "z.png"]
    assert dict((p.name, r) for p, r in s.failed) == {"d.png": "RuntimeError: model failed", "z.png": "ValueError: empty"}
    assert (tmp_path / "out" / "e.png").read_text() == "e:3"
    assert ["a", "c"] in batches and ["b", "e"] in batches and ["d"] in batches  # d retried alone
    assert all(len(b) <= 2 for b in batches)


def test_summary_line():
    s = Summary(done=3, skipped=1, failed=[(Path("x"), "r")])
    assert s.line("denoise") == "denoise: 3 done, 1 skipped (output exists), 1 failed" and not s.ok


def test_tile_progress_reports_each_tile_to_its_context() -> None:
    """The CLI's bar counts the tiles of a large image through restore.tiling.TILE_PROGRESS."""
    from restore.tiling import TILE_PROGRESS

    calls: list[tuple[int, int]] = []
    token = TILE_PROGRESS.set(lambda done, total: calls.append((done, total)))
    try:
        tiled(lambda t: t * 2, torch.rand(1, 3, 70, 90), tile=32, overlap=8)
    finally:
        TILE_PROGRESS.reset(token)
    total = calls[-1][1]
    assert total > 1 and calls == [(k, total) for k in range(1, total + 1)]
    tiled(lambda t: t, torch.rand(1, 1, 40, 40), tile=16, overlap=4)  # reset: no one listens any more
    assert len(calls) == total
