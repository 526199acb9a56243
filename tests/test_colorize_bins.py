"""The colorizer's bins head (issue 22: Zhang et al. 2016's annealed mean vs plain regression).

Tiny models and hand-made distributions; a few seconds on CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from restore import weights as W
from restore.corrupt import RandomStreams
from restore.engine.task import StepContext
from restore.models.blocks import ModelInputError
from restore.models.colorizer import (
    BIN_STEP,
    SqueezeColorizer,
    annealed_mean,
    bins_from_regression,
    gamut_bins,
)
from restore.tasks import colorize as C

TINY = [8, 8, 8, 8]


def test_gamut_bins_are_the_grid_cells_with_an_srgb_colour():
    bins = gamut_bins()
    grid = torch.arange(-11, 12, dtype=torch.float32) * BIN_STEP
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    L = torch.arange(0.5, 100.0, 0.5)
    # kornia's Lab -> sRGB, independent of the numpy conversion in gamut_bins
    lab = torch.stack([L[:, None].expand(-1, a.numel()), a.reshape(1, -1).expand(len(L), -1),
                       b.reshape(1, -1).expand(len(L), -1)])[None]            # 1 x 3 x nL x 529
    rgb = C.lab_to_rgb(lab, clip=False, dtype=torch.float64)[0]
    inside = ((rgb >= -1e-9) & (rgb <= 1 + 1e-9)).all(dim=0).any(dim=0)   # 529
    expected = torch.stack([a.reshape(-1)[inside], b.reshape(-1)[inside]], dim=1)
    assert bins.shape == expected.shape and 150 < bins.shape[0] < 313
    torch.testing.assert_close(bins, expected)
    assert [0.0, 0.0] in bins.tolist() and [110.0, 110.0] not in bins.tolist()


def test_annealed_mean_on_a_hand_case():
    bins = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logits = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)
    # T = 1: probabilities 3:1 -> the plain mean
    torch.testing.assert_close(annealed_mean(logits, bins, 1.0).flatten(), torch.tensor([0.75, 0.5]))
    # T = 0.5: probabilities 9:1 (sharper, towards the mode)
    torch.testing.assert_close(annealed_mean(logits, bins, 0.5).flatten(), torch.tensor([0.9, 0.2]))
    torch.testing.assert_close(annealed_mean(logits, bins, 1e-3).flatten(), torch.tensor([1.0, 0.0]))
    with pytest.raises(ModelInputError, match="temperature"):
        annealed_mean(logits, bins, 0.0)
    with pytest.raises(ModelInputError, match="Q x 2"):
        annealed_mean(logits, bins[:1])


def test_soft_encode_gaussian_weights_on_the_nearest_bins():
    bins = gamut_bins() / C.AB_SCALE
    ab = torch.tensor([20.0, -30.0]).view(1, 2, 1, 1) / C.AB_SCALE   # exactly a bin centre
    t = C.soft_encode(ab, bins)
    assert t.shape == (1, bins.shape[0], 1, 1)
    w = t.flatten()
    assert float(w.sum()) == pytest.approx(1.0) and int((w > 0).sum()) == 5
    centre = int(((bins * C.AB_SCALE - torch.tensor([20.0, -30.0])).abs().sum(1) < 1e-4).nonzero())
    # the 4 neighbours are one step (10) away: weight ratio exp(-10^2 / (2 * 5^2)) = e^-2
    assert float(w[centre]) == pytest.approx(1.0 / (1.0 + 4.0 * math.exp(-2.0)), rel=1e-5)
    assert float(w.max()) == float(w[centre])
    with pytest.raises(C.ColorizeError, match="N2HW"):
        C.soft_encode(ab[:, :1], bins)


def test_bins_cross_entropy_is_finite_and_lowest_at_the_target():
    bins = gamut_bins() / C.AB_SCALE
    g = torch.Generator().manual_seed(0)
    ab = (torch.rand(2, 2, 8, 8, generator=g) - 0.5) * 0.6
    target = C.soft_encode(torch.nn.functional.interpolate(ab, size=(4, 4), mode="area"), bins)
    good = torch.log(target.clamp_min(1e-8))
    uniform = torch.zeros_like(good)
    ce_good, ce_uniform = C.bins_cross_entropy(good, ab, bins), C.bins_cross_entropy(uniform, ab, bins)
    assert torch.isfinite(ce_good) and ce_good < ce_uniform
    assert float(ce_uniform) == pytest.approx(math.log(bins.shape[0]), rel=1e-5)


def test_bins_head_shapes_and_errors():
    G = SqueezeColorizer(TINY, head="bins").eval()
    q = gamut_bins().shape[0]
    assert G.n_outputs == q and G.config["head"] == "bins"
    for h, w in ((32, 48), (37, 41)):
        x = torch.rand(2, 1, h, w) * 2 - 1
        with torch.no_grad():
            ab = G(x)
            ab2, logits = G(x, return_logits=True)
        assert ab.shape == (2, 2, h, w) and torch.equal(ab, ab2)
        assert logits.shape[:2] == (2, q) and abs(logits.shape[2] - h / 2) <= 1 and abs(logits.shape[3] - w / 2) <= 1
        assert float(ab.abs().max()) <= float(G.ab_bins.abs().max()) + 1e-6   # a convex mix of bin centres
    with pytest.raises(ModelInputError, match="head='bins'"):
        SqueezeColorizer(TINY)(torch.zeros(1, 1, 32, 32), return_logits=True)
    with pytest.raises(ValueError, match="head"):
        SqueezeColorizer(TINY, head="laplace")
    with pytest.raises(ValueError, match="anneal_t"):
        SqueezeColorizer(TINY, head="bins", anneal_t=0)
    assert "head" not in SqueezeColorizer(TINY).config   # regression cards stay as they were


def test_bins_from_regression_starts_at_the_regression_output(tmp_path):
    torch.manual_seed(0)
    reg = SqueezeColorizer(TINY).eval()
    with torch.no_grad():
        reg.out.weight.mul_(0.3)   # outputs within the gamut, where tanh is near linear
    x = torch.rand(1, 1, 48, 64) * 2 - 1
    bins = bins_from_regression(reg).eval()
    with torch.no_grad():
        y_reg, y_bins = reg(x), bins(x)
    diff = (y_reg - y_bins).abs() * C.AB_SCALE                      # CIELAB units
    assert float(y_reg.abs().max()) > 0.1                           # not a trivial all-gray case
    assert float(diff.mean()) < 0.5 and float(diff.max()) < 3.0     # tanh's bend and the grid: a unit or two
    W.save(tmp_path / "b", bins, {"task": "colorize", "corruption": "gray"})
    loaded, card = W.load(tmp_path / "b")
    assert card["config"]["head"] == "bins"
    torch.testing.assert_close(loaded.eval()(x), y_bins)
    with pytest.raises(ValueError, match="regression"):
        bins_from_regression(bins)


def test_colorize_task_with_the_bins_head_trains_through_the_cross_entropy():
    task = C.ColorizeTask({"arch": "squeeze-colorizer", "crop_size": 32, "load_size": 32, "work_size": 32,
                           "max_work_side": 64, "lambda_l1": 0.0, "lambda_ce": 1.0,
                           "generator": {"widths": TINY, "head": "bins"},
                           "discriminator": {"base_channels": 4, "n_layers": 2}})
    assert task.objective("G") == ("adv", "l1", "ce")
    G, D = task.build_models()["G"], task.build_models()["D"]
    ctx = StepContext(step=0, epoch=0, device=torch.device("cpu"), streams=RandomStreams(0), training=True)
    g = torch.Generator().manual_seed(1)
    batch = task.prepare_batch({"target": torch.rand(2, 3, 32, 32, generator=g)}, ctx)
    out = task.forward(G, batch, ctx)
    terms = task.generator_losses(batch, out, D, ctx)
    assert set(terms) == {"adv", "l1", "ce"} and all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert G.out.weight.grad is not None and float(G.out.weight.grad.abs().sum()) > 0
    val = task.forward(G, batch, StepContext(step=0, epoch=0, device=torch.device("cpu"), streams=RandomStreams(0),
                                             training=False))
    assert set(val) == {"output"} and val["output"].shape == (2, 2, 32, 32)
    with pytest.raises(C.ColorizeConfigError, match="lambda_ce"):
        C.ColorizeTask({"arch": "squeeze-colorizer", "lambda_ce": -1})


def test_eval_worst_images_ranks_by_psnr_gain_over_gray():
    from eval.colorize import worst_images

    rows = []
    for name, m, g in (("a", 20.0, 18.0), ("b", 15.0, 17.0), ("c", 16.0, 16.5), ("d", 30.0, 20.0)):
        rows.append({"image": name, "method": "model", "psnr": m, "ab_mae": 1.0})
        rows.append({"image": name, "method": "grayscale", "psnr": g, "ab_mae": 2.0})
    worst = worst_images(rows, "model", k=2)
    assert [e["image"] for e in worst] == ["b", "c"] and worst[0]["gain_db"] == pytest.approx(-2.0)
    assert len(worst_images(rows, "model")) == 4


def test_eval_saturation_option_is_checked(capsys):
    from eval.colorize import main

    with pytest.raises(SystemExit):
        main(["--weights", "colorize-squeezenet", "--saturation", "0.9", "--update-card"])
    assert "leave --saturation at 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--weights", "colorize-squeezenet", "--saturation", "-1"])
    assert "--saturation: must be >= 0" in capsys.readouterr().err
