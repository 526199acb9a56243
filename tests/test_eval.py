"""Tests for the evaluation suite (eval/): sets, baselines, report writers, one tiny end-to-end run.

Everything runs on tiny images (<= 48x48) so the file stays fast on a shared CPU.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eval import baselines as B  # noqa: E402
from eval import report, runner, sets  # noqa: E402


def _photo(h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    """A smooth colour image with an edge: structure a denoiser can recover."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * torch.sin(6 * xx * yy)])
    img[:, h // 3 : 2 * h // 3, w // 4 : w // 2] = 0.9
    return (img + 0.01 * torch.rand(img.shape, generator=g)).clamp(0, 1)


def _noisy(clean: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return sets.quantize8(clean + sigma / 255 * torch.randn(clean.shape, generator=g))


# --------------------------------------------------------------------------- report metrics


def test_colorfulness_of_gray_is_zero_and_of_colour_positive():
    gray = torch.rand(1, 16, 16).expand(3, -1, -1)
    assert report.colorfulness(gray) == pytest.approx(0.0, abs=1e-9)
    assert report.colorfulness(torch.rand(1, 16, 16)) == 0.0
    red = torch.zeros(3, 8, 8)
    red[0] = 1.0
    # pure red: rg = 255, yb = 127.5, no spread -> 0.3 * sqrt(255^2 + 127.5^2)
    assert report.colorfulness(red) == pytest.approx(0.3 * math.hypot(255, 127.5), rel=1e-6)


def test_masked_metrics_only_look_inside_holes():
    target = _photo()
    mask = torch.zeros(1, 32, 40)
    mask[:, 8:24, 10:30] = 1
    out = target.clone()
    out[:, mask[0] > 0] = 0.5 * out[:, mask[0] > 0]  # damage inside the hole only
    hole_mse = ((out - target) ** 2)[:, mask[0] > 0].mean().item()
    assert report.masked_psnr(out, target, mask) == pytest.approx(10 * math.log10(1 / hole_mse), rel=1e-6)
    # damage outside the hole does not change the in-hole PSNR
    out2 = out.clone()
    out2[:, 0:4, :] = 0
    assert report.masked_psnr(out2, target, mask) == pytest.approx(report.masked_psnr(out, target, mask))
    assert report.masked_ssim(out, target, mask) < 0.99
    assert report.masked_psnr(target, target, mask) == math.inf


def test_masked_ssim_with_full_mask_equals_whole_image_ssim():
    target = _photo(40, 44)
    out = _noisy(target, 20)
    full = torch.ones(1, 40, 44)
    assert report.masked_ssim(out, target, full) == pytest.approx(report.psnr_ssim(out, target)["ssim"], abs=1e-5)


def test_known_pixels_check_detects_changes():
    x = _photo()
    mask = torch.zeros(1, 32, 40)
    mask[:, 10:20, 10:20] = 1
    filled = x.clone()
    filled[:, 10:20, 10:20] = 0.3  # changes only inside the hole
    assert report.known_max_diff(filled, x, mask) == 0.0
    filled[0, 0, 0] = (filled[0, 0, 0] * 255 + 7).clamp(max=255) / 255 if filled[0, 0, 0] < 0.9 else 0
    assert report.known_max_diff(filled, x, mask) >= 7.0


def test_ab_mae_zero_for_identical_and_positive_for_gray():
    x = _photo()
    assert report.ab_mae(x, x) == pytest.approx(0.0, abs=1e-9)
    assert report.ab_mae(B.grayscale(x, {}), x) > 1.0


# --------------------------------------------------------------------------- report writers


def _rows():
    return [
        {"image": "a", "method": "noisy", "psnr": 20.0, "ssim": 0.5, "lpips": float("nan"), "runtime_s": 0.01},
        {"image": "b", "method": "noisy", "psnr": 22.0, "ssim": 0.7, "lpips": float("nan"), "runtime_s": 0.03},
        {"image": "a", "method": "cbm3d", "psnr": 30.0, "ssim": 0.9, "lpips": float("nan"), "runtime_s": 2.0},
        {"image": "b", "method": "cbm3d", "psnr": 31.0, "ssim": 0.8, "lpips": float("nan"), "runtime_s": 4.0},
    ]


def test_metrics_csv_has_the_right_columns_and_rows(tmp_path):
    path = report.write_metrics_csv(tmp_path / "r" / "metrics.csv", _rows())
    with path.open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["image", "method", "psnr", "ssim", "lpips", "runtime_s"]
    assert len(rows) == 4 and rows[2]["method"] == "cbm3d" and float(rows[2]["psnr"]) == 30.0
    assert rows[0]["lpips"] == ""  # NaN written as empty, not "nan"
    with pytest.raises(report.ReportError):
        report.write_metrics_csv(tmp_path / "empty.csv", [])


def test_summary_md_means_runtime_command_commit_and_drops_empty_columns(tmp_path):
    path = report.write_summary_md(tmp_path / "summary.md", _rows(), title="T", metrics=["psnr", "ssim", "lpips"],
                                   labels={"cbm3d": "CBM3D"}, protocol="published", notes=["LPIPS missing"],
                                   command="python eval/denoise.py --x", commit="abc123")
    text = path.read_text()
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert table[0] == "| method | images | PSNR (dB) | SSIM | s / image |"  # LPIPS all-NaN: dropped
    assert table[2] == "| noisy | 2 | 21.00 | 0.6000 | 0.020 |"
    assert table[3] == "| CBM3D | 2 | 30.50 | 0.8500 | 3.000 |"
    assert "python eval/denoise.py --x" in text and "`abc123`" in text
    assert "unclipped float" in text and "- LPIPS missing" in text


def test_summary_groups_and_max_aggregation(tmp_path):
    rows = [{"group": g, "image": i, "method": "telea", "psnr": p, "known_max_diff": d, "runtime_s": 0.1}
            for g, i, p, d in [("small", "a", 30, 0), ("small", "b", 28, 3), ("large", "a", 20, 0)]]
    s = report.summarize(rows)
    assert [(x["group"], x["n"]) for x in s] == [("small", 2), ("large", 1)]
    assert s[0]["known_max_diff"] == 3 and s[0]["psnr"] == 29
    text = report.write_summary_md(tmp_path / "s.md", rows, title="I", metrics=["psnr", "known_max_diff"],
                                   command="c", commit="x").read_text()
    assert "## small" in text and "## large" in text


def test_grid_png_layout_and_mismatch_errors(tmp_path):
    x = _photo()
    cols = [("input", _noisy(x, 25)), ("cbm3d", x * 0.9), ("target", x)]
    path = report.save_grid(tmp_path / "grid.png", [("a", cols), ("b", cols)], cell=64, crop=16)
    with Image.open(path) as im:
        w, h = im.size
    assert w == 6 + 3 * (64 + 6)
    assert h > 2 * (64 * 32 // 40 + 64)  # two rows of full image + zoom
    with pytest.raises(report.ReportError):
        report.save_grid(tmp_path / "bad.png", [("a", cols), ("b", cols[:2])])
    t, l, ch, cw = report.detail_crop(x, 8)
    assert (ch, cw) == (8, 8) and 0 <= t <= 24 and 0 <= l <= 32


# --------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("name", ["noisy", "nlm", "tv", "wavelet", "median3", "median5", "switch", "grayscale", "blur"])
def test_baselines_return_same_shape_in_range(name):
    # cbm3d is covered (once: bm3d has a fixed cost of seconds) by test_denoisers_beat_the_noisy_input
    clean = _photo()
    noisy = _noisy(clean, 25)
    out = B.run(name, noisy, {"sigma": 25.0, "spec": "gaussian:sigma=25"})
    assert out.shape == noisy.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    gray = noisy[:1]
    if name != "grayscale":
        assert B.run(name, gray, {"sigma": 25.0}).shape == gray.shape
    # numpy HxWxC uint8 input is accepted too
    u8 = (noisy.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert B.run(name, u8, {"sigma": 25.0}).shape == noisy.shape


def test_denoisers_beat_the_noisy_input():
    clean = _photo(32, 32)
    noisy = _noisy(clean, 25)
    base = report.psnr_ssim(noisy, clean)["psnr"]
    for name in ("cbm3d", "nlm", "tv", "wavelet"):
        out = B.run(name, noisy, {"sigma": 25.0})
        assert out.shape == noisy.shape and 0 <= float(out.min()) and float(out.max()) <= 1, name
        assert report.psnr_ssim(out, clean)["psnr"] > base + 2, name


def test_switching_mean_only_touches_impulses_and_beats_the_median():
    from restore.corrupt import apply

    clean = sets.quantize8(_photo(48, 64).clamp(0.02, 0.98))
    noisy = apply(clean[None], "saltpepper:amount=0.1", seed=0).input[0]
    hit = ((noisy == 0) | (noisy == 1)).all(0, keepdim=True).expand_as(noisy)
    out = B.run("switch", noisy, {})
    assert torch.equal(out[~hit], noisy[~hit])
    med = report.psnr_ssim(B.run("median3", noisy, {}), clean)["psnr"]
    assert report.psnr_ssim(out, clean)["psnr"] > med + 2


@pytest.mark.parametrize("name", ["telea", "ns", "pushpull"])
def test_inpainting_baselines_keep_known_pixels_and_fill_holes(name):
    clean = _photo()
    mask = torch.zeros(1, 32, 40)
    mask[:, 12:18, 14:22] = 1
    holed = sets.quantize8(clean) * (1 - mask)
    out = B.run(name, holed, {"mask": mask})
    assert out.shape == clean.shape
    assert report.known_max_diff(out, holed, mask) == 0.0
    assert report.masked_psnr(out, clean, mask) > report.masked_psnr(holed, clean, mask) + 5


def test_baseline_errors_are_specific():
    x = _photo()
    with pytest.raises(B.BaselineError, match="unknown baseline"):
        B.get("nope")
    with pytest.raises(B.BaselineError, match="mask"):
        B.run("telea", x, {})
    with pytest.raises(B.BaselineError, match="sigma"):
        B.run("cbm3d", x, {"sigma": -1})


def test_speckle_equivalent_sigma_and_tables():
    img = np.full((8, 8, 3), 0.5, np.float32)
    # E[y^2] = 0.25 (1 + std^2)  ->  sigma_eq = std * 0.5 * 255
    y2 = img * np.sqrt(1 + 0.2**2)
    assert B.denoise_sigma(y2, {"spec": "speckle:std=0.2"}) == pytest.approx(0.2 * 0.5 * 255, rel=1e-5)
    assert B.interp_table({10: 1.0, 20: 3.0}, 15) == pytest.approx(2.0)
    assert B.interp_table({10: 1.0, 20: 3.0}, 40) == pytest.approx(6.0)
    assert B.default_baselines("mask:freeform") == ["telea", "ns", "pushpull"]
    assert B.default_baselines("saltpepper:amount=0.1")[1:] == ["median3", "median5", "switch"]
    assert "cbm3d" in B.default_baselines("speckle:std=0.2")


# --------------------------------------------------------------------------- sets


def _fake_set(tmp_path, monkeypatch):
    """A one-image 'deb' photo set pointing at a temporary file, with its manifest."""
    src = tmp_path / "src.png"
    Image.fromarray((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)).save(src)
    monkeypatch.setattr(sets, "MANIFEST_DIR", tmp_path / "manifests")
    monkeypatch.setattr(sets, "DATA_DIR", tmp_path / "data")
    monkeypatch.setitem(sets.PHOTO_SETS, "photos-eval", (sets.Source("tiny", "deb", str(src), "fake-pkg"),))
    (tmp_path / "manifests").mkdir()
    m = sets.make_manifest("photos-eval")
    sets.manifest_path("photos-eval").write_text(json.dumps(m))
    return src, m


def test_manifest_checksum_catches_a_modified_file(tmp_path, monkeypatch):
    src, m = _fake_set(tmp_path, monkeypatch)
    assert m["images"][0]["size"] == src.stat().st_size and len(m["images"][0]["sha256"]) == 64
    assert sets.verify_sources(m) == [src]
    data = bytearray(src.read_bytes())
    data[-20] ^= 0xFF  # same size, different bytes
    src.write_bytes(bytes(data))
    with pytest.raises(sets.SetError, match="SHA-256"):
        sets.verify_sources(m)
    src.unlink()
    with pytest.raises(sets.SetError, match="apt-get install -y fake-pkg"):
        sets.verify_sources(m)


def test_build_then_load_and_missing_set_message(tmp_path, monkeypatch):
    _fake_set(tmp_path, monkeypatch)
    with pytest.raises(sets.SetError, match="python eval/sets.py build"):
        next(sets.iter_photos("photos-eval"))
    sets.build("photos-eval", verbose=False)
    (photo,) = list(sets.iter_photos("photos-eval"))
    assert photo.image.shape == (3, 40, 60)
    with pytest.raises(sets.SetError, match="unknown set"):
        sets.load_manifest("no-such-set")


def test_fit_working_size_never_upscales_and_crops_centre():
    small = np.zeros((100, 150, 3), np.uint8)
    assert sets.fit_working_size(small).shape == (100, 150, 3)
    big = np.zeros((1000, 2000, 3), np.uint8)
    assert sets.fit_working_size(big).shape == (512, 768, 3)
    assert sets.fit_working_size(np.zeros((2000, 1000, 3), np.uint8)).shape == (768, 512, 3)


def test_seeds_slugs_and_published_spec():
    assert sets.image_seed("a", 0) == sets.image_seed("a", 0) != sets.image_seed("b", 0)
    assert sets.image_seed("a", 0) != sets.image_seed("a", 1)
    assert sets.spec_slug("gaussian:sigma=25") == "gaussian-sigma25"
    assert sets.spec_slug("blur:scale=2+gaussian:sigma=5-50") == "blur-scale2__gaussian-sigma5-50"
    assert sets.published_spec("gaussian:sigma=25") == "gaussian:sigma=25,clip=0"
    with pytest.raises(sets.SetError):
        sets.published_spec("saltpepper:amount=0.1")


def test_degrade_protocols_and_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(sets, "DATA_DIR", tmp_path)
    clean = _photo()
    s1 = sets.degrade("img", clean, "gaussian:sigma=25", base_seed=3)
    # default protocol: clipped, on the 8-bit grid, cached and reproducible
    assert float(s1.input.min()) >= 0 and float(s1.input.max()) <= 1
    assert torch.equal(s1.input, s1.input.mul(255).round().div(255))
    assert s1.info["sigma"] == pytest.approx(25.0)
    cached = list(tmp_path.rglob("img.png"))
    assert len(cached) == 1
    assert torch.equal(sets.degrade("img", clean, "gaussian:sigma=25", base_seed=3).input, s1.input)
    assert not torch.equal(sets.degrade("img", clean, "gaussian:sigma=25", base_seed=4).input, s1.input)
    # published: unclipped float noise, seed 0, not cached
    n_cached = len(list(tmp_path.rglob("*.png")))
    p = sets.degrade("img", clean, "gaussian:sigma=25", protocol="published")
    assert float(p.input.min()) < 0 or float(p.input.max()) > 1
    assert p.info["seed"] == 0 and len(list(tmp_path.rglob("*.png"))) == n_cached
    # masks come back with the holed input
    m = sets.degrade("img", clean, "mask:freeform,coverage=0.1-0.2", base_seed=0)
    assert m.mask is not None and m.mask.shape == (1, 32, 40)
    assert float(m.input[:, m.mask[0] > 0].abs().max()) == 0.0
    again = sets.degrade("img", clean, "mask:freeform,coverage=0.1-0.2", base_seed=0)
    assert torch.equal(again.mask, m.mask)


def test_evaluate_runs_baselines_through_one_path():
    clean = _photo()
    samples = [sets.Sample(f"i{k}", _noisy(clean, 25, seed=k), clean, None, {"sigma": 25.0, "mask": None})
               for k in range(2)]
    methods = runner.baseline_methods(["noisy", "median3"])
    rows, grid = runner.evaluate(samples, methods, runner.denoise_scorer(report.LpipsScorer(enabled=False)),
                                 grid_images=1, progress=False)
    assert [(r["image"], r["method"]) for r in rows] == [("i0", "noisy"), ("i0", "median3"),
                                                         ("i1", "noisy"), ("i1", "median3")]
    assert all({"psnr", "ssim", "detail", "runtime_s"} <= set(r) for r in rows)
    by = {r["method"]: r["detail"] for r in rows if r["image"] == "i0"}
    assert by["noisy"] > 1.5 and by["median3"] < by["noisy"]  # noise adds neighbour differences, a median removes them
    assert [lbl for lbl, _ in grid[0][1]] == ["input", "median3", "target"]

    def bad(x, info):
        return x[:, :4]

    with pytest.raises(runner.EvalError, match="returned"):
        runner.evaluate(samples, [runner.Method("bad", "bad", bad)], lambda o, s: {}, progress=False)


def test_detail_ratio_hand_values():
    ramp = torch.arange(8.0).repeat(8, 1)[None] / 10  # horizontal steps of 0.1, no vertical change
    assert report.detail_ratio(ramp, ramp) == pytest.approx(1.0)
    assert report.detail_ratio(ramp * 0.5, ramp) == pytest.approx(0.5)
    assert report.detail_ratio(torch.zeros_like(ramp), ramp) == 0.0
    assert math.isnan(report.detail_ratio(ramp, torch.zeros_like(ramp)))  # a flat target has no detail to match
    with pytest.raises(report.ReportError):
        report.detail_ratio(ramp, ramp[..., :4])


def test_fashion_mnist_test_split_matches_manifest():
    from restore.data import default_idx_root

    manifest = sets.load_manifest(sets.FASHION_SET)
    if not all((default_idx_root() / f["file"]).is_file() for f in manifest["files"]):
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
    x, y = sets.load_fashion_mnist_test(limit=5)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (5,)
    assert 0 <= float(x.min()) and float(x.max()) <= 1


def test_training_sets_never_hold_an_evaluation_photo() -> None:
    """Every photo set has its manifest; no training set shares a source file with the held-out set."""
    held_out = {s.file for s in sets.PHOTO_SETS["photos-eval"]}
    for name, sources in sets.PHOTO_SETS.items():
        manifest = sets.load_manifest(name)
        assert [e["name"] for e in manifest["images"]] == [s.name for s in sources]
        if name != "photos-eval":
            assert not held_out & {s.file for s in sources}, name
    plus = {s.name for s in sets.PHOTO_SETS["photos-train-plus"]}
    assert {s.name for s in sets.PHOTO_SETS["photos-train"]} < plus
    assert "photos-train-plus" not in sets._selected("all")  # needs one more package: built when named


def test_eval_parser_shares_flags_and_refuses_unknown_ones():
    from eval.common import eval_parser

    p = eval_parser("Title.\n\nExamples.", "x", seed=True, device={"default": "cuda"}, out=True, update_card=True)
    a = p.parse_args([])
    assert (a.seed, a.device, a.out, a.update_card) == (0, "cuda", None, False)
    b = p.parse_args(["--out", "o", "--seed", "3", "--update-card"])
    assert (b.out, b.seed, b.update_card) == (Path("o"), 3, True)
    assert (p.prog, p.description, p.epilog) == ("python eval/x.py", "Title.", "Examples.")
    with pytest.raises(SystemExit):
        p.parse_args(["--weights", "w"])  # only the flags asked for
    with pytest.raises(TypeError, match="unknown shared flag 'sed'"):
        eval_parser(None, "x", sed=True)
    photo = runner.script_parser("T.\n\nE.", "denoise", "photos-eval", "gray").parse_args([])
    assert (photo.seed, photo.device, photo.weights, photo.out, photo.limit, photo.quiet) == (0, "cpu", None, None,
                                                                                               None, False)
