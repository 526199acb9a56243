"""Bounded memory for huge images (issue 19, item 4): no whole-image pad or full-size accumulator in the
tiling, in-place restoring, streamed PNG writing, and the enforced limit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restore import io as rio
from restore import memory, tiling
from restore.io import write as io_write
from restore.models.inpaint import InpaintGenerator
from restore.models.unet import UNet
from restore.pipeline import Pipeline
from restore.tiling import _starts, _window, aligned_size, reflect_pad, tiled, tiled_on_grid


def _reference_tiled_on_grid(fn, image, tile, overlap, multiple):
    """The previous implementation: pad the whole image, blend into a full-size accumulator."""
    h, w = image.shape[-2:]
    t = max(multiple, tile // multiple * multiple)
    ov = min(overlap, t // 2)
    top, left = ((-h) % multiple) // 2, ((-w) % multiple) // 2
    hp, wp = aligned_size(h + top, t, ov, multiple), aligned_size(w + left, t, ov, multiple)
    x = reflect_pad(image, top, hp - h - top, left, wp - w - left)
    ys, xs = _starts(hp, t, ov), _starts(wp, t, ov)
    th, tw = min(t, hp), min(t, wp)
    wy, wx = torch.zeros(hp), torch.zeros(wp)
    for i, y0 in enumerate(ys):
        wy[y0 : y0 + th] += _window(ys, i, th)
    for j, x0 in enumerate(xs):
        wx[x0 : x0 + tw] += _window(xs, j, tw)
    out = None
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            y = fn(x[..., y0 : y0 + th, x0 : x0 + tw])
            if out is None:
                out = torch.zeros(x.shape[0], y.shape[1], hp, wp)
            out[..., y0 : y0 + th, x0 : x0 + tw].addcmul_(y, _window(ys, i, th)[:, None] * _window(xs, j, tw)[None, :])
    out.div_(wy[:, None]).div_(wx[None, :])
    return out[..., top : top + h, left : left + w]


def _net(t: torch.Tensor) -> torch.Tensor:
    """Position-dependent and nonlinear, with a 3x3 receptive field: tile borders show if mis-blended."""
    k = torch.ones(t.shape[1], 1, 3, 3) / 9
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(t, (1, 1, 1, 1), mode="replicate"), k, groups=t.shape[1])
    return torch.tanh(3 * blurred + t)


@pytest.mark.parametrize("shape,tile,overlap,multiple", [
    ((1, 3, 37, 301), 64, 8, 1), ((2, 1, 129, 70), 32, 8, 8), ((1, 3, 300, 200), 64, 16, 16),
    ((1, 3, 5, 700), 64, 16, 16), ((1, 2, 1, 333), 32, 8, 8), ((1, 3, 600, 17), 128, 32, 16)])
def test_tiled_on_grid_equals_the_whole_image_pad_implementation(shape, tile, overlap, multiple):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    expected = _reference_tiled_on_grid(_net, x, tile, overlap, multiple)
    assert torch.equal(tiled_on_grid(_net, x, tile, overlap, multiple), expected)
    into = x.clone()  # the input itself as the output: rows are written only once no tile reads them
    assert tiled_on_grid(_net, into, tile, overlap, multiple, out=into).data_ptr() == into.data_ptr()
    assert torch.equal(into, expected)


def test_a_tile_step_off_the_stride_grid_widens_the_overlap_instead_of_hanging():
    """aligned_size found no size for tiles stepping 44 px on a stride of 16 and looped for ever."""
    x = torch.rand(1, 3, 1000, 300, generator=torch.Generator().manual_seed(8))
    seen: list[tuple[int, int]] = []
    out = tiled_on_grid(lambda t: seen.append(tuple(t.shape[-2:])) or t * 1.0, x, tile=64, overlap=20, multiple=16)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    assert len(seen) > 1 and max(max(s) for s in seen) <= 64


def test_no_whole_image_pad_and_no_full_size_accumulator(monkeypatch):
    x = torch.rand(1, 3, 700, 900)
    padded: list[tuple[int, ...]] = []
    real_pad = tiling.reflect_pad
    monkeypatch.setattr(tiling, "reflect_pad", lambda t, *a: padded.append(tuple(t.shape)) or real_pad(t, *a))
    allocated: list[tuple[int, ...]] = []
    real_zeros, real_empty = torch.zeros, torch.empty

    def counting(real):
        def alloc(*size, **kw):
            shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
            allocated.append(shape)
            return real(*size, **kw)
        return alloc

    monkeypatch.setattr(tiling.torch, "zeros", counting(real_zeros))
    monkeypatch.setattr(tiling.torch, "empty", counting(real_empty))
    out = tiled_on_grid(_net, x, tile=128, overlap=16, multiple=16, out=x)
    assert out is x
    # only the 1-D row/column index maps and single tiles (padded to the stride) are ever padded
    assert all(s[-1] == 1 or s[-2] * s[-1] <= 128 * 128 for s in padded), padded
    big = [s for s in allocated if len(s) == 4 and s[-2] * s[-1] > 128 * 960]
    assert not big, big  # no accumulator or output larger than one row of tiles (the padded width is 912 here)


def test_in_place_tiling_uses_no_second_image(tmp_path):
    """A fresh process restoring a 3000x4000 image in place: RSS grows by a small part of the image."""
    script = textwrap.dedent(
        """
        import json, resource, torch
        from restore.tiling import tiled_on_grid
        torch.set_num_threads(1)
        img = torch.rand(1, 3, 3000, 4000, generator=torch.Generator().manual_seed(0))
        small = img[..., :600, :600].clone()
        tiled_on_grid(lambda x: x * 0.5, small, 512, 32, 16, out=small)  # warm up allocator/kernels
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tiled_on_grid(lambda x: x * 0.5, img, 512, 32, 16, out=img)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"growth_kb": after - before, "image_kb": img.numel() * 4 // 1024}))
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    # two tile rows (0.35 of this image: the accumulator and the next row's) and a few tiles; before: two images
    assert info["growth_kb"] < 0.6 * info["image_kb"], info


def _tiny_unet(channels: int) -> UNet:
    torch.manual_seed(0)
    m = UNet(channels, channels, base_channels=4, depth=2, convs_per_level=0, norm="none")
    torch.nn.init.normal_(m._last_conv().weight, std=0.05)
    return m.eval()


@pytest.mark.parametrize("image_channels,model_channels", [(3, 3), (1, 3), (3, 1), (1, 1)])
def test_denoise_in_place_equals_a_copy(image_channels, model_channels):
    pipe = Pipeline(_tiny_unet(model_channels), {"name": "t"}, task="denoise")
    x = torch.rand(1, image_channels, 90, 130, generator=torch.Generator().manual_seed(1))
    kept = x.clone()
    copy = pipe.run(x, tile=32, tile_overlap=8).image
    assert torch.equal(x, kept)  # without inplace the caller's tensor is left alone
    same = pipe.run(x, tile=32, tile_overlap=8, inplace=True).image
    assert same.data_ptr() == x.data_ptr()  # the result is the input itself
    torch.testing.assert_close(same, copy, atol=1e-6, rtol=0)


def test_colorize_in_place_equals_a_copy():
    from restore.tasks.colorize import ColorizeTask

    torch.manual_seed(5)
    task = ColorizeTask({"crop_size": 32, "load_size": [32, 48], "work_size": 24, "max_work_side": 64,
                         "val_images": 1, "generator": {"base_channels": 4, "depth": 2},
                         "discriminator": {"base_channels": 4, "n_layers": 2}})
    model = task.build_models()["G"].eval()
    pipe = Pipeline(model, {**task.model_card(), "name": "t"}, task="colorize")
    x = torch.rand(1, 3, 150, 110, generator=torch.Generator().manual_seed(2))  # upscaled a/b: banded
    copy = pipe.run(x).image
    same = pipe.run(x, inplace=True).image
    assert same.data_ptr() == x.data_ptr() and torch.equal(same, copy)


def test_inpaint_in_place_equals_a_copy():
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(0)
    inpainter = InpaintGenerator(in_channels=4, base_channels=8, dilations=(2,), prefill="pushpull").eval()
    with torch.no_grad():
        inpainter.refine.out.bias.fill_(0.05)
    pipe = Pipeline(inpainter, {"name": "t"}, task="inpaint")
    x = torch.rand(1, 3, 300, 170, generator=g)
    mask = (torch.rand(1, 1, 300, 170, generator=g) > 0.8).float()
    copy = pipe.run(x, mask, work_size=40, tile=0).image
    same = pipe.run(x, mask, work_size=40, tile=0, inplace=True).image
    assert same.data_ptr() == x.data_ptr() and torch.equal(same, copy)


def _write_in_bands_of_7(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make `restore.io.write` quantize 7 rows at a time; returns the rows of each band it quantizes, so a
    test sees that the setting took effect (patching a module the writer does not read would change nothing)."""
    monkeypatch.setattr(io_write, "WRITE_BAND_ROWS", 7)
    rows: list[int] = []
    real = io_write._quantize_band

    def spy(image: torch.Tensor, bit_depth: int) -> np.ndarray:
        rows.append(image.shape[1])
        return real(image, bit_depth)

    monkeypatch.setattr(io_write, "_quantize_band", spy)
    return rows


def test_png_is_streamed_with_the_same_pixels(tmp_path: Path, monkeypatch):
    bands = _write_in_bands_of_7(monkeypatch)  # many bands, the last one short
    g = torch.Generator().manual_seed(4)
    for channels, depth, alpha in ((3, 8, None), (1, 8, None), (3, 16, None), (1, 16, "a"), (3, 8, "a")):
        image = torch.rand(channels, 50, 33, generator=g)
        a = None
        if alpha:
            a = np.random.default_rng(0).integers(0, 2**depth, (50, 33)).astype(np.uint8 if depth == 8 else np.uint16)
        path = tmp_path / f"x{channels}{depth}{alpha}.png"
        bands.clear()
        rio.write_image(path, image, alpha=a, bit_depth=depth)
        assert bands == [7] * 7 + [1]
        back = rio.read_image(path)
        assert back.bit_depth == depth
        expected = rio.quantize(image, depth)
        got = np.round(back.image.permute(1, 2, 0).numpy() * (2**depth - 1)).astype(expected.dtype)
        np.testing.assert_array_equal(got, expected)
        if a is not None:
            np.testing.assert_array_equal(back.alpha, a)
        with Image.open(path) as im:  # a decoder other than ours agrees (8-bit)
            if depth == 8 and alpha is None:
                np.testing.assert_array_equal(np.asarray(im).reshape(expected.shape), expected)


def test_the_limit_refuses_with_a_clear_error(monkeypatch):
    pipe = Pipeline(_tiny_unet(3), {"name": "t"}, task="denoise")
    x = torch.rand(1, 3, 64, 80)
    monkeypatch.setenv(memory.ENV, "0.5")  # below the program and model's own share
    with pytest.raises(memory.MemoryLimitError) as err:
        pipe.run(x)
    text = str(err.value)
    assert "80x64" in text and "GB" in text and memory.ENV in text and "--tile" in text and "never the image" in text
    monkeypatch.setenv(memory.ENV, "64")
    pipe.run(x)  # fits
    monkeypatch.setenv(memory.ENV, "lots")
    with pytest.raises(memory.MemoryLimitError, match="number of GB"):
        pipe.run(x)


def test_the_estimate_grows_with_the_image_not_beyond_it():
    big = memory.estimate("denoise", 1, 3, 12000, 12000, 512)
    assert big.image == 12000 * 12000 * 3 * 4  # in place: the decoded image only
    assert big.working < 0.1 * big.image  # a tile row
    assert memory.estimate("denoise", 1, 3, 12000, 12000, 512, inplace=False).image == 2 * big.image
    gray = memory.estimate("colorize", 1, 1, 1000, 1000, 512, colour_output=True)
    assert gray.image == 1000 * 1000 * 4 * (1 + 3)


def test_gamut_bisection_in_chunks_equals_one_pass(monkeypatch):
    """Out-of-gamut pixels are bisected a chunk at a time as the bands come (memory): the same values."""
    from restore.tasks import colorize as C

    g = torch.Generator().manual_seed(9)
    L = torch.rand(2, 1, 60, 64, generator=g) * 100
    ab = (torch.rand(2, 2, 60, 64, generator=g) * 2 - 1) * 120  # mostly out of gamut
    whole = C.lab_to_rgb_keep_l(L, ab)
    monkeypatch.setattr(C, "BAND_PIXELS", 64 * 5)  # bands of 5 rows
    monkeypatch.setattr(C, "BISECT_PIXELS", 128)  # a chunk ends inside most bands
    assert torch.equal(C.lab_to_rgb_keep_l(L, ab), whole)


def _inpainter(model_channels: int = 3) -> InpaintGenerator:
    torch.manual_seed(0)
    m = InpaintGenerator(in_channels=model_channels + 1, base_channels=8, dilations=(2,), prefill="pushpull").eval()
    with torch.no_grad():  # a visible correction of the fill
        m.refine.out.bias.fill_(0.05)
    return m


@pytest.mark.parametrize("channels,depth,model_channels,work", [
    (3, 8, 3, 24), (1, 8, 3, 24), (3, 8, 1, 24), (3, 8, 3, 0), (3, 16, 3, 24), (1, 16, 3, 0)])
def test_inpaint_of_stored_samples_writes_the_same_file(tmp_path, monkeypatch, channels, depth, model_channels, work):
    """The command line inpaints the uint8/uint16 samples as read, in place: the file written is byte for byte
    the one the float32 path writes (tiny bands everywhere, the last ones short), the known samples untouched."""
    from restore.restorers import inpaint as inpaint_restorer

    monkeypatch.setattr(inpaint_restorer, "BAND_ROWS", 6)
    bands = _write_in_bands_of_7(monkeypatch)
    rng = np.random.default_rng(channels * depth + work)
    top = 2**depth - 1
    samples = rng.integers(0, top + 1, (61, 83, channels)).astype(np.uint8 if depth == 8 else np.uint16)
    src = tmp_path / "in.png"
    rio.write_image(src, torch.from_numpy(samples.transpose(2, 0, 1).astype(np.float32) / top), bit_depth=depth)
    hole = torch.from_numpy(rng.random((61, 83)) > 0.7)[None]
    pipe = Pipeline(_inpainter(model_channels), {"name": "t"}, task="inpaint")
    assert pipe.keeps_integers

    old = rio.read_image(src)  # the float32 path: restore, then quantize when writing
    rio.write_image(tmp_path / "old.png", pipe.run(old.image[None], hole[None], work_size=work, tile=0).image[0],
                    bit_depth=depth)
    stored = rio.read_image(src, integers=True)
    assert stored.image.dtype == (torch.uint8 if depth == 8 else torch.uint16)
    (new, _), = pipe.run_images([stored], [hole], pipe.options(work_size=work, tile=0))
    assert new.image.dtype == stored.image.dtype and new.image.data_ptr() == stored.image.data_ptr()  # in place
    bands.clear()
    rio.write_image(tmp_path / "new.png", new.image, bit_depth=new.bit_depth)
    assert bands == [7] * 8 + [5]  # 61 rows
    assert (tmp_path / "new.png").read_bytes() == (tmp_path / "old.png").read_bytes()
    known = ~hole.expand(channels, -1, -1).numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(new.image.numpy().transpose(1, 2, 0)[known], samples[known])
    assert not np.array_equal(new.image.numpy().transpose(1, 2, 0)[~known], samples[~known])  # holes filled


def test_only_a_task_that_keeps_integers_restores_them_in_place():
    """Denoise converts uint8 to its own float copy as before; inpaint keeps it only when asked (the API's run)."""
    x = torch.randint(0, 256, (1, 3, 40, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    hole = torch.zeros(1, 1, 40, 50, dtype=torch.bool)
    hole[..., 10:20, 5:30] = True
    denoise = Pipeline(_tiny_unet(3), {"name": "t"}, task="denoise")
    assert not denoise.keeps_integers
    assert denoise.run(x.clone(), inplace=True, integers=True).image.dtype == torch.float32
    pipe = Pipeline(_inpainter(), {"name": "t"}, task="inpaint")
    as_float = pipe.run(x, hole, work_size=16, tile=0, inplace=True).image  # not asked: float32, x untouched
    assert as_float.dtype == torch.float32
    kept = x.clone()
    out = pipe.run(kept, hole, work_size=16, tile=0, inplace=True, integers=True).image
    assert out.dtype == torch.uint8 and out.data_ptr() == kept.data_ptr()
    assert torch.equal(out, as_float.mul(255).round().to(torch.uint8))
    empty = pipe.run(x.clone(), torch.zeros_like(hole), inplace=True, integers=True).image  # nothing to fill
    assert torch.equal(empty, x)
    with pytest.raises(ValueError, match="float, uint8 or uint16"):
        pipe.run(x.to(torch.int32), hole)


def test_read_mask_as_bool_and_integer_samples_match_the_float_read(tmp_path):
    rng = np.random.default_rng(3)
    for name, array in (("m8.png", (rng.random((20, 30)) > 0.5).astype(np.uint8) * 255),
                        ("m16.png", (rng.random((20, 30)) > 0.5).astype(np.uint16) * 65535)):
        Image.fromarray(array).save(tmp_path / name)
        as_float = rio.read_mask(tmp_path / name)
        as_bool = rio.read_mask(tmp_path / name, torch.bool)
        assert as_bool.dtype == torch.bool and torch.equal(as_bool, as_float > 0.5)
        stored = rio.read_image(tmp_path / name, integers=True)
        assert torch.equal(stored.image.to(torch.int32), torch.from_numpy(array.astype(np.int32))[None])


def test_the_inpaint_estimate_counts_the_stored_samples():
    """12000x12000 RGB inpaint on the command line (uint8 in place) fits the issue's 3 GB; as float32 it did not."""
    stored = memory.estimate("inpaint", 1, 3, 12000, 12000, 512, sample_bytes=1)
    as_float = memory.estimate("inpaint", 1, 3, 12000, 12000, 512)
    assert as_float.image - stored.image == 12000 * 12000 * 3 * 3
    assert stored.total < 3e9 < as_float.total
    with pytest.raises(ValueError, match="sample_bytes"):
        memory.estimate("inpaint", 1, 3, 10, 10, 0, sample_bytes=3)


def test_half_level_rows_pooled_again_equal_the_whole_level():
    """push_pull_rows holds no half-resolution level: each band's rows are pooled again from the image and
    relaxed with a halo, which gives the whole level's values bit for bit (its upscale too)."""
    from restore.models import fill
    from restore.tiling import bilinear_rows, bilinear_source_rows

    g = torch.Generator().manual_seed(6)
    for shape in ((1, 3, 61, 83), (2, 1, 40, 9), (1, 3, 6, 130)):
        x = torch.rand(shape, generator=g)
        hole = torch.rand(shape[0], 1, *shape[2:], generator=g) > 0.6
        h, w = shape[-2:]
        hole[..., h // 10 : h - h // 10, w // 8 : w - w // 8] = True  # a wide hole: a short halo would show
        hh, hw = (h + 1) // 2, (w + 1) // 2
        quarter = fill._quarter_level(x, hole, 16, 0.5, 8)
        sums, weights = fill._pool_rows(x, hole, 0, h)
        free = weights <= 0
        whole = fill._relax(torch.where(free, bilinear_rows(quarter, (hh, hw), 0, hh), sums / weights.clamp_min(1e-12)),
                            free, 16)
        # the one-pass fill's half level (its upscale's weights are computed another way: up to rounding)
        torch.testing.assert_close(fill._half_level(x, hole, 16, 0.5, 4), whole, atol=1e-6, rtol=0)
        for lo, hi in ((0, hh), (0, 3), (2, 7), (hh - 4, hh), (hh // 2, hh // 2 + 1)):
            assert torch.equal(fill._half_rows(x, hole, quarter, lo, hi, 16), whole[..., lo:hi, :]), (shape, lo, hi)
        for a, b in ((0, h), (3, 20), (h - 5, h)):
            lo, hi = bilinear_source_rows(hh, h, a, b)
            part = bilinear_rows(whole[..., lo:hi, :], (h, w), a, b, top=lo, small_height=hh)
            assert torch.equal(part, bilinear_rows(whole, (h, w), a, b))
