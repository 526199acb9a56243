"""Tests for restore.corrupt: statistics, masks, real degradation, determinism, specs, devices."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import skimage.data as skdata
import torch

from restore.corrupt import (
    CORRUPTIONS,
    Chain,
    CorruptionSpecError,
    Degraded,
    GaussianNoise,
    RandomStreams,
    apply,
    box_mask,
    freeform_mask,
    make_generator,
    parse_spec,
)


def grey(n: int = 2, c: int = 3, h: int = 64, w: int = 64, level: float = 0.5) -> torch.Tensor:
    return torch.full((n, c, h, w), level)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A real 96x96 RGB crop (textures and edges), so JPEG/blur have something to destroy."""
    img = skdata.astronaut()[40:136, 180:276]  # face and hair: edges, texture, colour
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float(((x - y) ** 2).mean()))


def band(h: int, w: int, cov: tuple[float, float]) -> tuple[int, int]:
    return math.ceil(cov[0] * h * w - 1e-9), math.floor(cov[1] * h * w + 1e-9)


# ----------------------------------------------------------------------------- noise statistics


def test_gaussian_std_matches_sigma_before_clipping():
    d = apply(grey(4, 3, 64, 64), "gaussian:sigma=25,clip=0", seed=0)
    resid = d.input - d.target
    assert abs(float(resid.std()) / (25 / 255) - 1) < 0.03
    assert abs(float(resid.mean())) < 0.003
    assert torch.equal(d.sigma, torch.full((4,), 25.0))
    assert float(d.input.max()) > 0.5 + 3 * 25 / 255  # unclipped float noise kept as is


def test_gaussian_clip_keeps_unit_range():
    d = apply(grey(2, 3, 32, 32, level=0.95), "gaussian:sigma=50", seed=1)
    assert float(d.input.min()) >= 0 and float(d.input.max()) <= 1
    assert float((d.input == 1).float().mean()) > 0.1  # clipping really happened


def test_blind_gaussian_sigma_in_range_and_actually_used():
    d = apply(grey(32, 3, 48, 48), "gaussian:sigma=5-50,clip=0", seed=3)
    assert d.sigma.shape == (32,)
    assert float(d.sigma.min()) >= 5 and float(d.sigma.max()) <= 50
    assert float(d.sigma.max() - d.sigma.min()) > 20  # spread across the range, not one value
    per_image = (d.input - d.target).flatten(1).std(dim=1) * 255
    assert torch.allclose(per_image, d.sigma, rtol=0.04)


def test_saltpepper_fraction_ratio_and_whole_pixels():
    d = apply(grey(2, 3, 128, 128), "saltpepper:amount=0.1", seed=0)
    changed = (d.input != 0.5).any(dim=1)
    assert abs(float(changed.float().mean()) - 0.1) < 0.01
    # per pixel across channels: a replaced pixel is white or black in every channel
    assert torch.all(d.input.amax(dim=1)[changed] == d.input.amin(dim=1)[changed])
    salt = (d.input[:, 0][changed] == 1).float().mean()
    assert abs(float(salt) - 0.5) < 0.03
    d2 = apply(grey(2, 3, 128, 128), "saltpepper:amount=0.2,salt=0.2", seed=0)
    changed2 = (d2.input != 0.5).any(dim=1)
    assert abs(float(changed2.float().mean()) - 0.2) < 0.01
    assert abs(float((d2.input[:, 0][changed2] == 1).float().mean()) - 0.2) < 0.03


def test_speckle_relative_std():
    d = apply(grey(2, 3, 96, 96), "speckle:std=0.2", seed=0)
    rel = (d.input - d.target) / d.target
    assert abs(float(rel.std()) / 0.2 - 1) < 0.03
    dark = apply(grey(1, 1, 32, 32, level=0.0), "speckle:std=0.5", seed=0)
    assert torch.equal(dark.input, dark.target)  # multiplicative: black stays black


@pytest.mark.parametrize("level", [0.1, 0.3, 0.5])  # where clipping at 1 is negligible
def test_poisson_variance_is_signal_over_peak(level):
    d = apply(grey(2, 3, 96, 96, level=level), "poisson:peak=30", seed=0)
    assert abs(float(d.input.mean()) - level) < 0.01
    assert abs(float(d.input.var()) / (level / 30) - 1) < 0.06
    counts = d.input * 30
    assert torch.allclose(counts, counts.round(), atol=1e-4)  # photon counts are integers


# ----------------------------------------------------------------------------- masks


SIZES = [(28, 28), (37, 61), (61, 37), (7, 5), (128, 96)]


@pytest.mark.parametrize("make_mask", [freeform_mask, box_mask], ids=["freeform", "box"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("coverage", [(0.1, 0.45), (0.3, 0.33), (0.6, 0.9)])
def test_mask_coverage_lands_in_range(make_mask, size, coverage):
    h, w = size
    lo, hi = band(h, w, coverage)
    counts = []
    for seed in range(12):
        m = make_mask(h, w, coverage, make_generator(seed))
        assert m.shape == (1, h, w) and m.dtype == torch.float32
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        count = int(m.sum())
        assert lo <= count <= hi, f"seed {seed}: {count} holes not in [{lo}, {hi}]"
        counts.append(count)
    if hi - lo >= 12:
        assert len(set(counts)) > 3  # the target is drawn across the range, not pinned to an end


def test_freeform_masks_are_strokes_not_noise():
    # A stroke mask is made of thick connected blobs: few components, hole pixels mostly have hole neighbours.
    for seed in range(5):
        m = freeform_mask(128, 128, generator=make_generator(seed))[0].numpy().astype(np.uint8)
        n_components = cv2.connectedComponents(m)[0] - 1
        assert n_components <= 12
        inner = cv2.erode(m, np.ones((3, 3), np.uint8))
        assert inner.sum() > 0.5 * m.sum()


def test_box_masks_are_rectangles():
    for seed in range(5):
        m = box_mask(96, 96, (0.1, 0.2), make_generator(seed))[0].numpy().astype(np.uint8)
        # every component fills most of its bounding box (a partial last row is allowed)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m)
        assert 2 <= n <= 8
        for k in range(1, n):
            x, y, bw, bh, area = stats[k]
            assert area >= 0.5 * bw * bh


def test_mask_generators_reject_impossible_requests():
    with pytest.raises(ValueError, match="1x1"):
        freeform_mask(1, 1)
    with pytest.raises(ValueError, match="coverage"):
        box_mask(32, 32, (0.5, 0.2))
    with pytest.raises(ValueError, match="coverage"):
        box_mask(32, 32, (0.0, 0.5))
    with pytest.raises(ValueError, match="height and width"):
        freeform_mask(0, 10)


def test_mask_spec_sets_mask_and_zero_holes():
    x = torch.rand(3, 3, 37, 61) * 0.5 + 0.5  # no zeros in the clean image
    for spec in ("mask:freeform", "mask:box,coverage=0.2-0.3"):
        d = apply(x, spec, seed=4)
        assert d.mask.shape == (3, 1, 37, 61)
        hole = d.mask.bool().expand_as(x)
        assert torch.all(d.input[hole] == 0)
        assert torch.equal(d.input[~hole], x[~hole])
        assert d.sigma is None and d.target is x
        cov = parse_spec(spec).values["coverage"]
        lo, hi = band(37, 61, cov)
        assert all(lo <= int(s) <= hi for s in d.mask.sum(dim=(1, 2, 3)))
        assert not torch.equal(d.mask[0], d.mask[1])  # one mask per image


def test_same_seed_gives_same_mask_from_function_and_spec_family():
    a = freeform_mask(40, 40, generator=make_generator(9))
    b = freeform_mask(40, 40, generator=make_generator(9))
    c = freeform_mask(40, 40, generator=make_generator(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------- real degradations


def test_jpeg_degrades_monotonically_in_quality(photo):
    scores = [psnr(apply(photo, f"jpeg:quality={q}", 0).input, photo) for q in (5, 20, 50, 95)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] < 60  # even q=95 is lossy: a real round trip, not a copy
    assert scores[0] < 30


def test_jpeg_keeps_colour_order_and_gray_layout():
    red = torch.zeros(1, 3, 16, 16)
    red[:, 0] = 1.0
    out = apply(red, "jpeg:quality=90", 0).input
    assert float(out[:, 0].mean()) > 0.9 and float(out[:, 2].mean()) < 0.1
    g = apply(torch.rand(2, 1, 33, 17), "jpeg:quality=30", 0).input
    assert g.shape == (2, 1, 33, 17)


def test_jpeg_quality_range_per_image(photo):
    batch = photo.expand(8, -1, -1, -1)
    d = apply(batch, "jpeg:quality=5-95", seed=0)
    per_image = {round(psnr(d.input[i : i + 1], photo), 3) for i in range(8)}
    assert len(per_image) > 3


def test_blur_degrades_monotonically_in_scale(photo):
    assert torch.equal(apply(photo, "blur:scale=1", 0).input, photo)
    scores = [psnr(apply(photo, f"blur:scale={s}", 0).input, photo) for s in (1.5, 2, 3, 4)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] < 40


@pytest.mark.parametrize("size", [(37, 61), (1, 1), (5, 3)])
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_blur_odd_sizes_keep_shape(size, mode):
    x = torch.rand(2, 3, *size)
    y = apply(x, f"blur:scale=2-4,mode={mode}", seed=0).input
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1


def test_gray_is_bt601_luma_with_channel_count_kept():
    x = torch.rand(2, 3, 9, 11)
    y = apply(x, "gray", 0).input
    assert y.shape == x.shape
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(y[:, 0], expected, atol=1e-6)
    one = torch.rand(2, 1, 9, 11)
    out = apply(one, "gray", 0).input
    assert torch.equal(out, one) and out is not one  # identity, but never an alias of the target


# ----------------------------------------------------------------------------- determinism


RANDOM_SPECS = [
    "gaussian:sigma=25",
    "gaussian:sigma=5-50",
    "saltpepper:amount=0.05-0.2",
    "speckle:std=0.1-0.3",
    "poisson:peak=10-60",
    "blur:scale=1-4",
    "jpeg:quality=10-90",
    "mask:freeform",
    "mask:box",
    "blur:scale=2+gaussian:sigma=10+mask:freeform",
]


@pytest.mark.parametrize("spec", RANDOM_SPECS)
def test_same_seed_same_output_different_seed_differs(spec):
    x = torch.rand(4, 3, 24, 20)
    a, b, c = apply(x, spec, 11), apply(x, spec, 11), apply(x, spec, 12)
    assert torch.equal(a.input, b.input)
    assert not torch.equal(a.input, c.input)
    if a.mask is not None:
        assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    if a.sigma is not None:
        assert torch.equal(a.sigma, b.sigma)


@pytest.mark.parametrize("spec", ["gaussian:sigma=15", "mask:box", "saltpepper:amount=0.1+mask:freeform"])
def test_one_generator_advances_and_reseeding_reproduces(spec):
    x = torch.rand(2, 3, 24, 24)
    corruption = parse_spec(spec)
    g = make_generator(5)
    first, second = corruption(x, g), corruption(x, g)
    assert not torch.equal(first.input, second.input)  # a training loop gets fresh noise/masks
    g.manual_seed(5)
    again = corruption(x, g)
    assert torch.equal(first.input, again.input)
    fresh = corruption(x, make_generator(5))
    assert torch.equal(first.input, fresh.input)


def test_unseeded_calls_follow_torch_manual_seed():
    x = torch.rand(1, 3, 16, 16)
    c = parse_spec("gaussian:sigma=20+mask:box")
    torch.manual_seed(123)
    a = c(x)
    torch.manual_seed(123)
    b = c(x)
    assert torch.equal(a.input, b.input) and torch.equal(a.mask, b.mask)


def test_input_is_not_modified_and_dtype_kept():
    x = torch.rand(2, 3, 16, 16)
    before = x.clone()
    for spec in RANDOM_SPECS + ["gray"]:
        apply(x, spec, 0)
    assert torch.equal(x, before)
    half = apply(x.half(), "blur:scale=2+gaussian:sigma=10+mask:box", 0)
    assert half.input.dtype == torch.float16 and half.mask.dtype == torch.float16
    dbl = apply(x.double(), "gaussian:sigma=10", 0)
    assert dbl.input.dtype == torch.float64


# ----------------------------------------------------------------------------- chains


def test_chain_applies_left_to_right_and_keeps_target():
    x = torch.rand(2, 3, 32, 32)
    d = apply(x, "gray+jpeg:quality=30", 0)
    manual = apply(apply(x, "gray", 0).input, "jpeg:quality=30", 0).input
    assert torch.equal(d.input, manual)
    assert d.target is x and d.mask is None and d.sigma is None


def test_chain_mask_holes_stay_zero_and_sigma_recorded():
    x = torch.rand(2, 3, 32, 32) * 0.5 + 0.25
    d = apply(x, "mask:box+blur:scale=2+gaussian:sigma=10+jpeg:quality=40", 0)
    assert torch.all(d.input[d.mask.bool().expand_as(x)] == 0)
    assert torch.equal(d.sigma, torch.full((2,), 10.0))
    assert d.input[~d.mask.bool().expand_as(x)].std() > 0  # known region still degraded, not zeroed


def test_chain_keeps_first_mask_and_combines_gaussian_sigma():
    x = torch.rand(2, 3, 32, 32)
    first = apply(x, "mask:box", 7).mask
    d = apply(x, "mask:box+mask:freeform", 7)
    assert torch.equal(d.mask, first)
    s = apply(x, "gaussian:sigma=5+gaussian:sigma=12", 0).sigma
    assert torch.allclose(s, torch.full((2,), 13.0))


def test_corruptions_compose_with_plus():
    c = parse_spec("blur:scale=2") + GaussianNoise(sigma=10)
    assert isinstance(c, Chain)
    assert c == parse_spec("blur:scale=2+gaussian:sigma=10")


# ----------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "spec",
    [
        "gaussian:sigma=25",
        "gaussian:sigma=5-50,clip=0",
        "gaussian:sigma=0.5",
        "saltpepper:amount=0.1,salt=0.3",
        "speckle:std=0.2",
        "poisson:peak=30",
        "poisson:peak=0.25-4",
        "blur:scale=2",
        "blur:scale=1.5-3,mode=bilinear",
        "jpeg:quality=20",
        "jpeg:quality=10-90",
        "gray",
        "mask:freeform",
        "mask:box,coverage=0.05-0.25",
        "blur:scale=2+gaussian:sigma=10+mask:freeform,coverage=0.1-0.2",
        "gaussian:sigma=0.00001",
    ],
)
def test_spec_round_trip(spec):
    c = parse_spec(spec)
    again = parse_spec(str(c))
    assert again == c and str(again) == str(c) == c.spec
    assert repr(c) == f"parse_spec({c.spec!r})"


def test_canonical_spec_spells_out_defaults_and_normalises_spelling():
    assert str(parse_spec("gaussian:sigma=25")) == "gaussian:sigma=25,clip=1"
    assert str(parse_spec("mask:box")) == "mask:box,coverage=0.1-0.45"
    assert str(parse_spec("gray")) == "gray"
    assert parse_spec(" Gaussian : Sigma = 5 - 50 + JPEG:quality=30 ") == parse_spec("gaussian:sigma=5-50+jpeg:quality=30")
    assert parse_spec("gaussian:sigma=25.0") == parse_spec("gaussian:sigma=25")
    assert GaussianNoise(sigma=(5, 50), clip=False) == parse_spec("gaussian:sigma=5-50,clip=0")
    assert set(CORRUPTIONS) == {
        "gaussian", "saltpepper", "speckle", "poisson", "blur", "jpeg", "gray", "mask:freeform", "mask:box"
    }


@pytest.mark.parametrize(
    "spec, fragments",
    [
        ("gausian:sigma=25", ["'gausian'", "gaussian, saltpepper"]),
        ("mask", ["mask:freeform", "mask:box"]),
        ("mask:circle", ["'mask'", "mask:freeform"]),
        ("gaussian", ["missing", "sigma"]),
        ("gaussian:sigma=25,amount=3", ["'amount'", "sigma", "clip"]),
        ("gaussian:sigma=abc", ["'abc'", "sigma"]),
        ("gaussian:sigma=-3", ["'-3'", ">= 0"]),
        ("gaussian:sigma=50-5", ["'50-5'", "low-high"]),
        ("gaussian:sigma=25,clip=2", ["'2'", "clip", "0 or 1"]),
        ("gaussian:sigma", ["'sigma'", "key=value"]),
        ("gaussian:sigma=5,sigma=6", ["twice"]),
        ("saltpepper:amount=1.5", ["'1.5'", "amount", "[0, 1]"]),
        ("saltpepper:amount=0.1,salt=0.2-0.4", ["salt", "single value"]),
        ("poisson:peak=0", ["peak", "> 0"]),
        ("blur:scale=0.5", ["scale", ">= 1"]),
        ("blur:scale=2,mode=nearest", ["'nearest'", "bicubic"]),
        ("jpeg:quality=0", ["quality", "[1, 100]"]),
        ("jpeg:quality=101", ["quality", "[1, 100]"]),
        ("jpeg:quality=20.5", ["'20.5'", "integer"]),
        ("mask:box,coverage=0-0.5", ["coverage", "(0, 1)"]),
        ("mask:box,coverage=0.2-1", ["coverage", "(0, 1)"]),
        ("mask:freeform,coverage=0.3", ["coverage", "A-B"]),
        ("gray:amount=1", ["'amount'", "gray"]),
        ("blur:scale=2++gray", ["empty step"]),
        ("", ["empty"]),
        ("gaussian:sigma=10+jpg:quality=30", ["'jpg'", "jpeg"]),
    ],
)
def test_spec_errors_name_the_token_and_the_choices(spec, fragments):
    with pytest.raises(CorruptionSpecError) as err:
        parse_spec(spec)
    for fragment in fragments:
        assert fragment in str(err.value), (fragment, str(err.value))
    assert isinstance(err.value, ValueError)


def test_bad_inputs_raise_clear_errors():
    c = parse_spec("gaussian:sigma=10")
    with pytest.raises(ValueError, match="NCHW"):
        c(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="float"):
        c(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels"):
        apply(torch.rand(1, 4, 8, 8), "jpeg:quality=50", 0)
    with pytest.raises(ValueError, match="channels"):
        apply(torch.rand(1, 2, 8, 8), "gray", 0)
    with pytest.raises(ValueError, match="cannot have a hole fraction"):
        apply(torch.rand(1, 1, 2, 2), "mask:freeform,coverage=0.3-0.45", 0)
    with pytest.raises(TypeError, match="seed"):
        make_generator("0")  # type: ignore[arg-type]
    with pytest.raises(CorruptionSpecError, match="unknown parameter 'sgma'"):
        GaussianNoise(sgma=3)


def test_apply_equals_parse_plus_seeded_generator():
    x = torch.rand(2, 3, 20, 20)
    spec = "speckle:std=0.1+mask:freeform"
    a = apply(x, spec, 42)
    b = parse_spec(spec)(x, make_generator(42, x.device))
    assert isinstance(a, Degraded)
    assert torch.equal(a.input, b.input) and torch.equal(a.mask, b.mask)


# ----------------------------------------------------------------------------- CPU / GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CPU/GPU equivalence needs a CUDA device")
def test_cpu_and_gpu_agree():
    x = torch.rand(4, 3, 37, 61)
    xg = x.cuda()
    for spec in ("mask:freeform", "mask:box,coverage=0.2-0.3", "gaussian:sigma=25+mask:freeform"):
        cpu, gpu = apply(x, spec, 3), apply(xg, spec, 3)
        assert gpu.mask.device.type == "cuda"
        assert torch.equal(cpu.mask, gpu.mask.cpu()), spec
    for spec in ("blur:scale=2", "blur:scale=3,mode=bilinear", "gray", "jpeg:quality=30"):
        cpu, gpu = apply(x, spec, 3), apply(xg, spec, 3)
        assert gpu.input.device.type == "cuda"
        # JPEG runs on the CPU for both, so it must match exactly; interpolation kernels may differ in ulps.
        tol = 0.0 if spec.startswith("jpeg") else 1e-5
        assert torch.allclose(cpu.input, gpu.input.cpu(), rtol=0, atol=tol), spec
    flat = grey(4, 3, 64, 64)
    for spec, expected in (("gaussian:sigma=25,clip=0", 25 / 255), ("speckle:std=0.2", 0.1)):
        gpu = apply(flat.cuda(), spec, 0)
        assert gpu.input.device.type == "cuda"
        std = float((gpu.input - gpu.target).std())
        assert abs(std / expected - 1) < 0.03, spec
    gpu = apply(flat.cuda(), "poisson:peak=30", 0)
    assert abs(float(gpu.input.var()) / (0.5 / 30) - 1) < 0.06
    gen = make_generator(0, "cuda")
    with pytest.raises(ValueError, match="make_generator"):
        parse_spec("gaussian:sigma=5")(x, gen)


def test_checkpointed_rng_state_carries_the_mask_stream() -> None:
    """Masks come from the CPU stream of the task's RandomStreams; a resume must continue it, not restart it."""
    from restore.engine import checkpoint as ckpt

    corruption = parse_spec("mask:freeform")
    x = torch.rand(1, 3, 32, 32)
    streams = RandomStreams(5)
    corruption(x, streams)  # the run has drawn masks before the checkpoint
    state = ckpt.rng_state(streams)
    expected = corruption(x, streams).mask
    again = RandomStreams(5)  # a new process: fresh streams, then the checkpoint's states
    ckpt.set_rng_state(state, again)
    assert torch.equal(corruption(x, again).mask, expected)


def test_random_streams_continue_across_calls_and_match_a_fresh_generator() -> None:
    spec = parse_spec("saltpepper:amount=0.1+mask:box")
    x = torch.rand(2, 3, 24, 24)
    streams = RandomStreams(7)
    first, second = spec(x, streams), spec(x, streams)
    assert not torch.equal(first.mask, second.mask)  # one stream, new masks each call
    fresh = spec(x, make_generator(7))  # a just-seeded generator draws its seed's masks and noise
    assert torch.equal(first.input, fresh.input) and torch.equal(first.mask, fresh.mask)
    streams.manual_seed(7)
    assert torch.equal(spec(x, streams).input, first.input)
    assert torch.equal(freeform_mask(30, 30, generator=RandomStreams(3)), freeform_mask(30, 30, generator=make_generator(3)))


def test_random_streams_load_a_checkpoint_written_before_any_mask() -> None:
    """Format-1 checkpoints have mask_stream None until a mask is drawn: the stream then starts at the seed."""
    spec = parse_spec("mask:freeform")
    x = torch.rand(1, 3, 32, 32)
    streams = RandomStreams(11)
    torch.rand(4, generator=streams.generator)  # noise drawn, no mask yet
    state = {"task": streams.generator.get_state(), "mask_stream": None}
    expected = spec(x, streams).mask
    other = RandomStreams(99)  # the generator's state carries its seed 11
    other.load_state_dict(state)
    assert torch.equal(spec(x, other).mask, expected)
