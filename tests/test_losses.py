"""Tests for restore.losses: each loss against a value computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from restore import losses as L
from restore.losses import (
    AdversarialLoss,
    PerceptualLoss,
    StyleLoss,
    SupConLoss,
    VGGFeatures,
    VGGWeightsMissing,
    gram_matrix,
    kl_divergence,
    l1_loss,
    psnr_loss,
    tv_loss,
)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _bce(logit: float, t: float) -> float:
    p = _sig(logit)
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


# --------------------------------------------------------------------------- #
# Adversarial
# --------------------------------------------------------------------------- #
PRED = torch.tensor([[2.0, -1.0], [0.5, 0.0]])


def test_vanilla_matches_hand_bce() -> None:
    loss = AdversarialLoss("vanilla")
    vals = PRED.flatten().tolist()
    want_real = sum(_bce(v, 1.0) for v in vals) / 4
    want_fake = sum(_bce(v, 0.0) for v in vals) / 4
    assert loss(PRED, True).item() == pytest.approx(want_real, rel=1e-6)
    assert loss(PRED, False).item() == pytest.approx(want_fake, rel=1e-6)
    # Generator: non-saturating, plain real targets.
    assert loss(PRED, True, for_discriminator=False).item() == pytest.approx(want_real, rel=1e-6)


def test_lsgan_matches_hand_mse() -> None:
    loss = AdversarialLoss("lsgan", real_label=1.0, fake_label=0.0)
    vals = PRED.flatten().tolist()
    assert loss(PRED, True).item() == pytest.approx(sum((v - 1) ** 2 for v in vals) / 4)
    assert loss(PRED, False).item() == pytest.approx(sum(v**2 for v in vals) / 4)


def test_hinge_discriminator_and_generator() -> None:
    loss = AdversarialLoss("hinge")
    vals = PRED.flatten().tolist()  # 2, -1, 0.5, 0
    # D real: relu(1 - x) -> 0, 2, 0.5, 1 ; D fake: relu(1 + x) -> 3, 0, 1.5, 1
    assert loss(PRED, True).item() == pytest.approx((0 + 2 + 0.5 + 1) / 4)
    assert loss(PRED, False).item() == pytest.approx((3 + 0 + 1.5 + 1) / 4)
    assert loss(PRED, True, for_discriminator=False).item() == pytest.approx(-sum(vals) / 4)
    with pytest.raises(ValueError, match="target_is_real=True"):
        loss(PRED, False, for_discriminator=False)
    with pytest.raises(ValueError, match="hinge"):
        AdversarialLoss("hinge", smoothing=0.9)


def test_fixed_smoothing_is_one_sided_and_discriminator_only() -> None:
    loss = AdversarialLoss("vanilla", smoothing=0.9)
    assert torch.all(loss.targets(PRED, True, for_discriminator=True) == 0.9)
    assert torch.all(loss.targets(PRED, False, for_discriminator=True) == 0.0)
    assert torch.all(loss.targets(PRED, True, for_discriminator=False) == 1.0)
    want = sum(_bce(v, 0.9) for v in PRED.flatten().tolist()) / 4
    assert loss(PRED, True).item() == pytest.approx(want, rel=1e-6)


def test_random_smoothing_range_statistics_and_reproducibility() -> None:
    loss = AdversarialLoss("lsgan", smoothing=(0.7, 1.0))
    pred = torch.zeros(200, 100)
    t = loss.targets(pred, True, generator=torch.Generator().manual_seed(3))
    assert t.min() >= 0.7 and t.max() <= 1.0
    assert t.mean().item() == pytest.approx(0.85, abs=0.005)  # uniform mean
    assert t.var().item() == pytest.approx(0.3**2 / 12, rel=0.05)  # uniform variance
    t2 = loss.targets(pred, True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t, t2)
    # The loss consumes the same draws: lsgan on zero logits = mean(t^2).
    val = loss(pred, True, generator=torch.Generator().manual_seed(3))
    assert val.item() == pytest.approx(t.pow(2).mean().item(), rel=1e-6)
    # Fake targets stay exactly fake_label.
    assert torch.all(loss.targets(pred, False, generator=torch.Generator().manual_seed(3)) == 0.0)


def test_label_flipping_statistics() -> None:
    loss = AdversarialLoss("vanilla", smoothing=0.9, flip_prob=0.2)
    pred = torch.zeros(100, 100)
    t_real = loss.targets(pred, True, generator=torch.Generator().manual_seed(0))
    t_fake = loss.targets(pred, False, generator=torch.Generator().manual_seed(1))
    assert t_real.unique().tolist() == pytest.approx([0.0, 0.9])
    assert (t_real == 0.0).float().mean().item() == pytest.approx(0.2, abs=0.015)
    # A flipped fake element becomes a *smoothed* real target.
    assert (t_fake > 0.5).float().mean().item() == pytest.approx(0.2, abs=0.015)
    assert torch.allclose(t_fake[t_fake > 0.5], torch.tensor(0.9))
    # Never for the generator.
    assert torch.all(loss.targets(pred, True, for_discriminator=False) == 1.0)


def test_hinge_flipping_uses_the_other_term() -> None:
    loss = AdversarialLoss("hinge", flip_prob=1.0)
    # Everything flipped: "real" call must equal the unflipped "fake" value.
    assert loss(PRED, True).item() == pytest.approx(AdversarialLoss("hinge")(PRED, False).item())


def test_multiscale_list_is_mean_of_scales() -> None:
    loss = AdversarialLoss("lsgan")
    a = torch.tensor([0.0, 1.0])  # mse to 1: 0.5
    b = torch.full((2, 3), 3.0)  # mse to 1: 4
    assert loss([a, b], True).item() == pytest.approx((0.5 + 4.0) / 2)
    # pix2pixHD-style nested lists: the last entry is the output.
    assert loss([[torch.zeros(5), a], [b]], True).item() == pytest.approx(2.25)
    ts = loss.targets([a, b], True)
    assert isinstance(ts, list) and [t.shape for t in ts] == [a.shape, b.shape]


def test_adversarial_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        AdversarialLoss("wgan")
    with pytest.raises(ValueError, match="flip_prob"):
        AdversarialLoss(flip_prob=1.5)
    with pytest.raises(ValueError, match="smoothing"):
        AdversarialLoss(smoothing=(1.0, 0.5))
    with pytest.raises(TypeError, match="pred"):
        AdversarialLoss()([], True)


def test_adversarial_half_precision_logits_are_computed_in_float32() -> None:
    pred = torch.tensor([20.0, -20.0], dtype=torch.bfloat16, requires_grad=True)
    out = AdversarialLoss("vanilla")(pred, True)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad.float()).all()


# --------------------------------------------------------------------------- #
# L1
# --------------------------------------------------------------------------- #
def test_l1_plain_and_masked() -> None:
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.zeros_like(pred)
    assert l1_loss(pred, target).item() == pytest.approx(2.5)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # one hole pixel
    # hole mean = 1, valid mean = (2 + 3 + 4) / 3 = 3
    assert l1_loss(pred, target, mask, hole_weight=6.0, valid_weight=1.0).item() == pytest.approx(6 * 1 + 3)
    # Per-image normalisation and mask broadcast over channels.
    pred2 = torch.cat([pred, 2 * pred], dim=0).repeat(1, 3, 1, 1)
    mask2 = torch.cat([mask, torch.zeros_like(mask)], dim=0)  # second image: no hole
    per = l1_loss(pred2, torch.zeros_like(pred2), mask2, hole_weight=6.0, reduction="none")
    assert per.tolist() == pytest.approx([9.0, 5.0])
    assert l1_loss(pred2, torch.zeros_like(pred2), mask2, hole_weight=6.0).item() == pytest.approx(7.0)


def test_l1_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        l1_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
    with pytest.raises(ValueError, match="mask"):
        l1_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="reduction"):
        l1_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), reduction="avg")


def test_psnr_loss_is_minus_mean_per_image_psnr() -> None:
    from restore.metrics import psnr

    target = torch.zeros(2, 3, 4, 4)
    pred = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.01)])
    # per image: 10 log10(0.01) = -20 dB and 10 log10(1e-4) = -40 dB
    per = psnr_loss(pred, target, eps=1e-12, reduction="none")
    assert per.tolist() == pytest.approx([-20.0, -40.0], abs=1e-4)
    assert psnr_loss(pred, target, eps=1e-12).item() == pytest.approx(-30.0, abs=1e-4)
    assert psnr_loss(pred, target, eps=1e-12).item() == pytest.approx(-psnr(pred, target).mean().item(), abs=1e-4)
    # a perfect image is capped by eps instead of giving -inf
    assert psnr_loss(target, target).item() == pytest.approx(-80.0)


def test_psnr_loss_gives_each_image_equal_say() -> None:
    """Halving any image's error moves the loss by the same 3.01 dB / N, whatever its size:
    the gradient is each image's MSE gradient scaled by 1 / MSE (unlike MSE, which the big errors rule)."""
    target = torch.zeros(2, 1, 8, 8)
    pred = torch.stack([torch.full((1, 8, 8), 0.2), torch.full((1, 8, 8), 0.002)]).requires_grad_(True)
    psnr_loss(pred, target, eps=1e-12).backward()
    g = pred.grad.reshape(2, -1).sum(1)
    # d/dx of 10 log10(x^2) / 2 at x = a is 10 / (ln 10 * a): the small error gets 100x the gradient
    assert g.tolist() == pytest.approx([10 / math.log(10) / 0.2, 10 / math.log(10) / 0.002], rel=1e-4)
    with pytest.raises(ValueError, match="shape"):
        psnr_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
    with pytest.raises(ValueError, match="eps"):
        psnr_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), eps=0.0)


# --------------------------------------------------------------------------- #
# Total variation
# --------------------------------------------------------------------------- #
def test_tv_plain_hand_value() -> None:
    x = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])
    # horizontal |diffs|: 1, 2, 0, 0 -> mean 0.75 ; vertical: 2, 1, 1 -> mean 4/3
    assert tv_loss(x).item() == pytest.approx(0.75 + 4 / 3)


def test_tv_masked_region_with_dilation() -> None:
    x = torch.arange(25.0).reshape(1, 1, 5, 5) ** 2 / 10
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., 2, 2] = 1
    # dilation 0: a single pixel has no neighbour pair -> 0
    assert tv_loss(x, mask, dilation=0).item() == 0.0
    # dilation 1: the 3x3 block rows 1-3, cols 1-3
    blk = x[0, 0, 1:4, 1:4]
    want = (blk[:, 1:] - blk[:, :-1]).abs().mean() + (blk[1:] - blk[:-1]).abs().mean()
    assert tv_loss(x, mask, dilation=1).item() == pytest.approx(want.item(), rel=1e-6)
    # Changing pixels outside the dilated region changes nothing.
    y = x.clone()
    y[..., 0, :] = 100.0
    assert tv_loss(y, mask, dilation=1).item() == pytest.approx(want.item(), rel=1e-6)


# --------------------------------------------------------------------------- #
# KL
# --------------------------------------------------------------------------- #
def test_kl_closed_form() -> None:
    mu = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [-1.0, 0.0]])
    # per dim: 0.5 * (mu^2 + var - 1 - log var)
    s0 = 0.0 + 0.5 * (1 + 2 - 1 - math.log(2))
    s1 = 0.5 * (4 + math.exp(-1) - 1 + 1) + 0.5 * 1
    assert kl_divergence(mu, logvar, reduction="none").tolist() == pytest.approx([s0, s1])
    assert kl_divergence(mu, logvar).item() == pytest.approx((s0 + s1) / 2)
    assert kl_divergence(mu, logvar, reduction="sum").item() == pytest.approx(s0 + s1)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    want = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(kl_divergence(mu, logvar, reduction="none"), want, atol=1e-5)


def test_kl_free_bits() -> None:
    # dim 0: KL 0.5*mu^2 = 2.0 per sample (above the budget); dim 1: 0 (below)
    mu = torch.tensor([[2.0, 0.0], [2.0, 0.0]], requires_grad=True)
    logvar = torch.zeros(2, 2, requires_grad=True)
    out = kl_divergence(mu, logvar, free_bits=0.5)
    assert out.item() == pytest.approx(2.0 + 0.5)
    out.backward()
    assert torch.all(mu.grad[:, 1] == 0) and torch.all(mu.grad[:, 0] != 0)
    per = kl_divergence(mu, logvar, free_bits=0.5, reduction="none")
    assert per.mean().item() == pytest.approx(out.item())
    with pytest.raises(ValueError, match="free_bits"):
        kl_divergence(mu, logvar, free_bits=-1)
    with pytest.raises(ValueError, match="shape"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))


# --------------------------------------------------------------------------- #
# SupCon
# --------------------------------------------------------------------------- #
def _supcon_numpy(feats: np.ndarray, labels: np.ndarray, tau: float, base: float) -> float:
    z = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sim = z @ z.T / tau
    n = len(z)
    per_anchor = []
    for i in range(n):
        others = [a for a in range(n) if a != i]
        pos = [p for p in others if labels[p] == labels[i]]
        if not pos:
            continue
        log_den = math.log(sum(math.exp(sim[i, a]) for a in others))
        per_anchor.append(-np.mean([sim[i, p] - log_den for p in pos]))
    return (tau / base) * float(np.mean(per_anchor))


def test_supcon_matches_manual_computation() -> None:
    feats = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.2]])
    labels = np.array([0, 0, 1, 1])
    got = SupConLoss(temperature=0.5)(torch.tensor(feats, dtype=torch.float32), torch.tensor(labels))
    assert got.item() == pytest.approx(_supcon_numpy(feats, labels, 0.5, 0.5), rel=1e-5)
    got = SupConLoss(temperature=0.1, base_temperature=0.07)(torch.tensor(feats, dtype=torch.float32), torch.tensor(labels))
    assert got.item() == pytest.approx(_supcon_numpy(feats, labels, 0.1, 0.07), rel=1e-5)


def test_supcon_excludes_anchors_without_positives_and_is_stable() -> None:
    feats = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, -0.3]])
    labels = np.array([0, 0, 1, 2])  # samples 2 and 3 have no positive
    got = SupConLoss(0.3)(torch.tensor(feats, dtype=torch.float32), torch.tensor(labels))
    assert got.item() == pytest.approx(_supcon_numpy(feats, labels, 0.3, 0.3), rel=1e-5)
    # Tiny temperature: logits of 1e4 must not overflow.
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = SupConLoss(1e-4)(x, torch.tensor([0, 0, 1, 1, 2, 2]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    # Nobody has a positive: zero, but still differentiable.
    y = torch.randn(3, 4, requires_grad=True)
    z = SupConLoss()(y, torch.tensor([0, 1, 2]))
    z.backward()
    assert z.item() == 0.0 and y.grad is not None


def test_supcon_pulls_same_class_together() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    good = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [-1.0, 0.1]])
    bad = torch.tensor([[1.0, 0.0], [-1.0, 0.1], [1.0, 0.1], [-1.0, 0.0]])
    loss = SupConLoss(0.1)
    assert loss(good, labels) < loss(bad, labels)


def test_supcon_multiview_equals_flattened_views() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.randn(3, 2, 5, generator=g)
    labels = torch.tensor([0, 1, 0])
    flat = torch.cat([f[:, 0], f[:, 1]])
    assert SupConLoss(0.2)(f, labels).item() == pytest.approx(SupConLoss(0.2)(flat, labels.repeat(2)).item(), rel=1e-6)
    with pytest.raises(ValueError, match="labels"):
        SupConLoss()(torch.randn(4, 3), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- #
# VGG perceptual / style
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    torch.manual_seed(0)
    return VGGFeatures(("relu1_2", "relu2_2", "conv3_1"), pretrained=False)


def test_vgg_features_shapes_and_truncation(vgg: VGGFeatures) -> None:
    x = torch.rand(2, 3, 16, 16)
    out = vgg(x)
    assert list(out) == ["relu1_2", "relu2_2", "conv3_1"]
    assert out["relu1_2"].shape == (2, 64, 16, 16)
    assert out["relu2_2"].shape == (2, 128, 8, 8)
    assert out["conv3_1"].shape == (2, 256, 4, 4)
    assert len(vgg.body) == L.VGG16_LAYERS["conv3_1"] + 1  # nothing deeper is built
    # A captured conv output is not clobbered by an in-place ReLU.
    assert (out["conv3_1"] < 0).any()
    # Gray input == the same image repeated to RGB.
    g = torch.rand(1, 1, 8, 8)
    assert torch.allclose(vgg(g)["relu1_2"], vgg(g.repeat(1, 3, 1, 1))["relu1_2"])
    with pytest.raises(ValueError, match="N1HW or N3HW"):
        vgg(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="unknown layer"):
        VGGFeatures(("relu9_9",), pretrained=False)


def test_vgg_layout_matches_torchvision_vgg16() -> None:
    """Indices and shapes must match torchvision's, or real weights would mis-load."""
    from torchvision.models import vgg as vgg_mod

    ref = vgg_mod.make_layers(vgg_mod.cfgs["D"])  # == vgg16().features, without the classifier
    ours = L._vgg16_features(len(ref) - 1)
    assert [type(m) for m in ours] == [type(m) for m in ref]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert isinstance(ref[L.VGG16_LAYERS["relu4_3"]], nn.ReLU) and isinstance(ref[L.VGG16_LAYERS["conv4_3"]], nn.Conv2d)
    assert isinstance(ref[L.VGG16_LAYERS["pool5"]], nn.MaxPool2d) and L.VGG16_LAYERS["pool5"] == len(ref) - 1


def test_vgg_stays_frozen_and_in_eval_mode(vgg: VGGFeatures) -> None:
    parent = nn.Module()
    parent.loss = PerceptualLoss({"relu1_2": 1.0}, features=vgg)
    parent.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    assert not any(p.requires_grad for p in vgg.parameters())


def test_perceptual_zero_for_identical_and_gradients(vgg: VGGFeatures) -> None:
    loss = PerceptualLoss({"relu1_2": 1.0, "relu2_2": 0.5}, criterion="l2", features=vgg)
    y = torch.rand(2, 1, 16, 16)
    assert loss(y, y.clone()).item() == 0.0
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    out = loss(x, y)
    assert out.item() > 0
    out.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())
    # Hand formula from the features.
    fx, fy = vgg(x.detach()), vgg(y)
    want = ((fx["relu1_2"] - fy["relu1_2"]) ** 2).mean() + 0.5 * ((fx["relu2_2"] - fy["relu2_2"]) ** 2).mean()
    assert out.item() == pytest.approx(want.item(), rel=1e-5)


def test_gram_matrix_hand_value() -> None:
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # N=1, C=2, H=1, W=2
    want = torch.tensor([[[5.0, 3.0], [3.0, 9.0]]]) / (2 * 1 * 2)
    assert torch.allclose(gram_matrix(f), want)


def test_style_loss_shares_features(vgg: VGGFeatures) -> None:
    style = StyleLoss({"relu1_2": 2.0}, features=vgg)
    perc = PerceptualLoss({"relu2_2": 1.0}, features=vgg)
    assert style.features is perc.features
    y = torch.rand(1, 3, 16, 16)
    assert style(y, y.clone()).item() == 0.0
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    fx, fy = vgg(x), vgg(y)
    s = style.from_features(fx, fy)
    want = 2.0 * (gram_matrix(fx["relu1_2"]) - gram_matrix(fy["relu1_2"])).abs().mean()
    assert s.item() == pytest.approx(want.item(), rel=1e-5)
    assert s.item() == pytest.approx(style(x, y).item(), rel=1e-5)
    (s + perc.from_features(fx, fy)).backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="does not compute"):
        StyleLoss({"relu4_3": 1.0}, features=vgg)
    with pytest.raises(ValueError, match="criterion"):
        PerceptualLoss({"relu1_2": 1.0}, criterion="l3", features=vgg)


def _forbid_downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fail(*args, **kwargs):
        calls.append(str(args[:1]))
        raise AssertionError("a download was attempted")

    for name in ("load_state_dict_from_url", "download_url_to_file"):
        monkeypatch.setattr(torch.hub, name, fail)
    return calls


def test_missing_vgg_weights_error_without_download(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    calls = _forbid_downloads(monkeypatch)
    monkeypatch.delenv(L.VGG16_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(VGGWeightsMissing) as e:
        PerceptualLoss()
    msg = str(e.value)
    assert L.VGG16_WEIGHTS_FILE in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert isinstance(e.value, FileNotFoundError)
    # Explicit path and environment variable name their file.
    with pytest.raises(VGGWeightsMissing, match="nope.pth"):
        VGGFeatures(weights_path=tmp_path / "nope.pth")
    monkeypatch.setenv(L.VGG16_WEIGHTS_ENV, str(tmp_path / "env.pth"))
    with pytest.raises(VGGWeightsMissing, match=r"env\.pth.*RESTORE_VGG16_WEIGHTS"):
        VGGFeatures()
    assert calls == []


def test_vgg_weights_loaded_from_hub_cache_and_path(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _forbid_downloads(monkeypatch)
    monkeypatch.delenv(L.VGG16_WEIGHTS_ENV, raising=False)
    torch.manual_seed(1)
    src = VGGFeatures(("relu1_2",), pretrained=False)
    # A torchvision-style file (features.N.*) in the hub cache.
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in src.body.state_dict().items()}, ckpt / L.VGG16_WEIGHTS_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    loaded = VGGFeatures(("relu1_2",))
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(x)["relu1_2"], src(x)["relu1_2"])
    # Explicit path wins; a file without VGG tensors is a clear error.
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        VGGFeatures(("relu1_2",), weights_path=bad)
