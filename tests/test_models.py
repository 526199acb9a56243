"""Tests for restore.models: blocks, UNet, PatchGAN, inpainting generator and SN-PatchGAN.

All models are built tiny (a few channels) so the file runs in seconds on CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from restore.models import build
from restore.models.blocks import (
    ConvNormAct,
    GatedConv2d,
    GatedUpConv2d,
    ModelConfigError,
    ModelInputError,
    SelfAttention,
    count_parameters,
    crop_padding,
    init_weights,
    make_activation,
    make_norm,
    pad_to_multiple,
    receptive_field,
    spectral_norm_conv,
)
from restore.models.inpaint import InpaintGenerator, SNPatchGAN
from restore.models.patchgan import PatchGAN
from restore.models.unet import UNet

ODD_SIZES = [(1, 1), (37, 61), (64, 64)]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # Tensors here are tiny: intra-op threads only add barrier overhead, which
    # becomes seconds per backward on a loaded shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_unet(**kw) -> UNet:
    cfg = dict(base_channels=4, depth=3, convs_per_level=1)
    cfg.update(kw)
    return UNet(**cfg)


def tiny_inpaint(**kw) -> InpaintGenerator:
    cfg = dict(base_channels=4)
    cfg.update(kw)
    return InpaintGenerator(**cfg)


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (37, 61), (64, 64), (2, 17)])
@pytest.mark.parametrize("multiple", [4, 16, 64])
def test_pad_to_multiple_roundtrip(size, multiple):
    x = torch.rand(2, 3, *size)
    padded, pads = pad_to_multiple(x, multiple)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert padded.shape[-2] - size[0] < multiple and padded.shape[-1] - size[1] < multiple
    top, bottom, left, right = pads
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1
    assert torch.equal(crop_padding(padded, pads), x)


def test_reflect_padding_matches_numpy_even_when_pad_exceeds_size():
    # numpy's "reflect" mirrors repeatedly when the pad is larger than the
    # array; ours must agree instead of failing like F.pad does.
    x = torch.arange(5 * 3, dtype=torch.float32).reshape(1, 1, 5, 3)
    padded, (t, b, l, r) = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (16, 16)
    expected = np.pad(x[0, 0].numpy(), ((t, b), (l, r)), mode="reflect")
    np.testing.assert_array_equal(padded[0, 0].numpy(), expected)


def test_one_pixel_image_falls_back_to_replicate():
    x = torch.tensor([[[[0.25]]]])
    padded, pads = pad_to_multiple(x, 8)
    assert padded.shape[-2:] == (8, 8)
    assert torch.all(padded == 0.25)
    assert torch.equal(crop_padding(padded, pads), x)


def test_pad_to_multiple_3d_and_constant_mode():
    x = torch.rand(3, 5, 7)
    padded, pads = pad_to_multiple(x, 4, mode="constant", value=-1.0)
    assert padded.shape == (3, 8, 8)
    assert torch.equal(crop_padding(padded, pads), x)
    assert (padded == -1).sum() == 3 * (64 - 35)


def test_padding_errors_are_specific():
    with pytest.raises(ModelConfigError, match="mode"):
        pad_to_multiple(torch.rand(1, 1, 4, 4), 4, mode="wrap")
    with pytest.raises(ModelConfigError, match="multiple"):
        pad_to_multiple(torch.rand(1, 1, 4, 4), 0)
    with pytest.raises(ModelInputError, match="at least 3 dims"):
        pad_to_multiple(torch.rand(4, 4), 4)
    with pytest.raises(ModelInputError, match="cannot crop"):
        crop_padding(torch.rand(1, 1, 4, 4), (3, 3, 0, 0))


# --------------------------------------------------------------------------- blocks


def test_norm_and_activation_factories():
    assert isinstance(make_norm("batch", 8), nn.BatchNorm2d)
    assert isinstance(make_norm("instance", 8), nn.InstanceNorm2d)
    gn = make_norm("group", 24)
    assert isinstance(gn, nn.GroupNorm) and 24 % gn.num_groups == 0
    assert isinstance(make_norm("none", 8), nn.Identity)
    assert isinstance(make_activation("leaky"), nn.LeakyReLU)
    assert make_activation("leaky").negative_slope == 0.2
    with pytest.raises(ModelConfigError, match="keep_input='impulse' needs in_channels == out_channels"):
        UNet(in_channels=1, out_channels=2, residual=False, keep_input="impulse")
    with pytest.raises(ModelConfigError, match="keep_input"):
        UNet(keep_input="mask")
    with pytest.raises(ModelConfigError, match="norm='layer'"):
        make_norm("layer", 8)
    with pytest.raises(ModelConfigError, match="act='swish'"):
        ConvNormAct(3, 8, act="swish")


def test_conv_norm_act_bias_follows_norm():
    assert ConvNormAct(3, 8, norm="batch")[0].bias is None
    assert ConvNormAct(3, 8, norm="none")[0].bias is not None
    y = ConvNormAct(3, 8, 4, stride=2, padding=1, norm="instance", act="gelu")(torch.rand(2, 3, 10, 6))
    assert y.shape == (2, 8, 5, 3)


def test_spectral_norm_conv_has_unit_spectral_norm():
    conv = spectral_norm_conv(4, 6, 3)
    conv.train()
    x = torch.rand(1, 4, 8, 8)
    for _ in range(30):  # power iterations run once per training forward
        conv(x)
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=1e-3)
    assert isinstance(conv, nn.Conv2d)


def test_init_weights_keeps_spectral_norm_calibrated():
    # Re-initialising the raw weight must refresh the power-iteration vectors,
    # or an eval()-mode model divides by the old weight's sigma.
    d = PatchGAN(3, base_channels=4, n_layers=2, norm="none", spectral_norm=True, init="normal").eval()
    for conv in (m for m in d.modules() if isinstance(m, nn.Conv2d)):
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)


def test_gated_conv_shapes_and_definition():
    gc = GatedConv2d(3, 5, 3, stride=2, dilation=2, act="elu")
    x = torch.randn(2, 3, 9, 12, requires_grad=True)
    y = gc(x)
    assert y.shape == (2, 5, 5, 6)
    # act(features) * sigmoid(gate) from the single conv's two halves.
    f, g = gc.conv(x).split(5, dim=1)
    torch.testing.assert_close(y, torch.nn.functional.elu(f) * torch.sigmoid(g))
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert gc.conv.weight.grad is not None and gc.conv.weight.grad.abs().sum() > 0


def test_gated_conv_spectral_norm_and_up_conv():
    gc = GatedConv2d(4, 3, 3, spectral_norm=True, norm="instance")
    assert hasattr(gc.conv, "parametrizations")
    assert gc(torch.randn(1, 4, 6, 6)).shape == (1, 3, 6, 6)
    for mode in ("nearest", "bilinear"):
        up = GatedUpConv2d(4, 2, mode=mode)
        x = torch.randn(2, 4, 5, 7, requires_grad=True)
        y = up(x)
        assert y.shape == (2, 2, 10, 14)
        y.sum().backward()
        assert x.grad.abs().sum() > 0
    with pytest.raises(ModelConfigError, match="mode"):
        GatedUpConv2d(4, 2, mode="bicubic")
    with pytest.raises(ModelConfigError, match="dilation"):
        GatedConv2d(4, 2, dilation=0)


def test_self_attention_is_identity_at_init_but_learns():
    att = SelfAttention(16)
    assert att.query.out_channels == 2 and att.key.out_channels == 2  # C / 8
    x = torch.randn(2, 16, 5, 7, requires_grad=True)
    y = att(x)
    assert y.shape == x.shape
    assert torch.equal(y, x)  # gamma == 0
    y.square().sum().backward()
    assert att.gamma.grad is not None and att.gamma.grad.abs() > 0
    with torch.no_grad():
        att.gamma.fill_(1.0)
    assert not torch.allclose(att(x), x)


def test_self_attention_gradients_reach_projections():
    att = SelfAttention(8, reduction=4, kv_pool=2)
    with torch.no_grad():
        att.gamma.fill_(0.5)
    x = torch.randn(1, 8, 6, 5)
    att(x).square().mean().backward()
    for p in (att.query.weight, att.key.weight, att.value.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("kv_pool", [1, 2])
def test_self_attention_ignores_holes_as_keys(kv_pool):
    att = SelfAttention(8, kv_pool=kv_pool)
    with torch.no_grad():
        att.gamma.fill_(1.0)
    hole = torch.zeros(1, 1, 8, 8)
    hole[..., 2:6, 2:6] = 1
    x = torch.randn(1, 8, 8, 8)
    x2 = x.clone()
    x2[..., 2:6, 2:6] = torch.randn(1, 8, 4, 4) * 10
    known = hole[0, 0] == 0
    y, y2 = att(x, hole), att(x2, hole)
    # Known positions only attend to known keys, which did not change.
    torch.testing.assert_close(y[..., known], y2[..., known])
    # Without the mask they would see the changed pixels.
    assert not torch.allclose(att(x)[..., known], att(x2)[..., known])


def test_self_attention_all_hole_falls_back_without_nan():
    att = SelfAttention(8)
    with torch.no_grad():
        att.gamma.fill_(1.0)
    y = att(torch.randn(2, 8, 4, 4), torch.ones(2, 1, 16, 16))
    assert torch.isfinite(y).all()
    with pytest.raises(ModelInputError, match="expected an N8HW"):
        att(torch.randn(1, 4, 4, 4))


def test_receptive_field_and_init_helpers():
    chain = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, dilation=2))
    assert receptive_field(chain) == 1 + 2 + 2 + 2 * 2 * 2
    net = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), spectral_norm_conv(64, 64, 3))
    init_weights(net, "normal", 0.02)
    assert net[0].weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(net[0].bias == 0)
    assert net[1].weight.mean().item() == pytest.approx(1.0, abs=0.02)
    assert count_parameters(net) == 3 * 64 * 9 + 64 + 2 * 64 + 64 * 64 * 9 + 64
    with pytest.raises(ModelConfigError, match="scheme"):
        init_weights(net, "uniform")


# --------------------------------------------------------------------------- UNet


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
@pytest.mark.parametrize("size", ODD_SIZES)
def test_unet_odd_sizes(norm, size):
    model = tiny_unet(norm=norm).train()
    x = torch.rand(2, 3, *size)
    y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("upsample", ["bilinear", "nearest", "transpose"])
@pytest.mark.parametrize("fuse_input", [True, False])
def test_unet_variants_shape_and_gradients(upsample, fuse_input):
    model = tiny_unet(
        in_channels=1, out_channels=2, residual=False, upsample=upsample, fuse_input=fuse_input,
        out_activation="tanh", convs_per_level=0,
    )
    x = torch.rand(2, 1, 37, 61, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 2, 37, 61)
    assert y.abs().max() <= 1
    y.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_unet_residual_starts_as_identity():
    model = tiny_unet(residual=True).eval()
    x = torch.rand(1, 3, 37, 61)
    with torch.no_grad():
        assert torch.equal(model(x), x)


def test_unet_residual_adds_prediction_to_input():
    res = tiny_unet(residual=True, norm="none")
    plain = tiny_unet(residual=False, norm="none")
    init_weights(res, "kaiming")  # non-zero last conv, so the residual is non-trivial
    plain.load_state_dict(res.state_dict(), strict=True)
    x = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        r = plain(x)
        assert r.abs().max() > 1e-3
        torch.testing.assert_close(res(x), x + r)


def test_unet_fuse_input_sees_the_exact_input():
    model = tiny_unet(residual=False, fuse_input=True, norm="none")
    assert model.fuse[0].in_channels == model.widths[0] + 3


def test_unet_impulse_switch_keeps_unhit_pixels_and_fills_hits():
    from restore.corrupt import apply
    from restore.models.fill import fill_impulses, impulse_mask

    clean = torch.rand(2, 3, 33, 45) * 0.8 + 0.1  # no genuine 0/1 pixels
    noisy = apply(clean, "saltpepper:amount=0.2", seed=3).input
    hit = impulse_mask(noisy)
    assert 0.15 < hit.float().mean() < 0.25
    assert torch.equal(hit, ((noisy == 0) | (noisy == 1)).all(1, keepdim=True))
    model = tiny_unet(residual=True, norm="none", keep_input="impulse")
    init_weights(model, "kaiming")
    out = model(noisy)
    keep = ~hit.expand_as(noisy)
    assert torch.equal(out[keep], noisy[keep])  # bit-exact outside the hits
    assert (out - noisy)[~keep].abs().min() > 0  # hits take the network's value
    out.sum().backward()  # gradients reach the network through the hits
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    # untrained residual model = the switching mean filter, far better than the noisy input
    fresh = tiny_unet(residual=True, keep_input="impulse").eval()
    with torch.no_grad():
        filled = fresh(noisy)
    torch.testing.assert_close(filled, fill_impulses(noisy, hit))
    assert (filled - clean).abs().mean() < 0.5 * (noisy - clean).abs().mean()
    # a hit with no unhit neighbour in the largest window keeps its value (inside a black area)
    dark = torch.full((1, 3, 20, 20), 0.5)
    dark[..., 2:18, 2:18] = 0.0
    kept = fill_impulses(dark, impulse_mask(dark))
    assert kept[0, 0, 10, 10] == 0.0 and kept[0, 0, 2, 2] > 0.0


def test_push_pull_fill_keeps_known_pixels_and_interpolates():
    from restore.models.fill import push_pull_fill

    # a linear ramp with a hole: the fill stays within the ramp's range and close to it
    ramp = torch.linspace(0, 1, 37).view(1, 1, 1, 37).expand(2, 3, 29, 37).contiguous()
    hole = torch.zeros(2, 1, 29, 37, dtype=torch.bool)
    hole[:, :, 8:20, 10:25] = True
    out = push_pull_fill(ramp, hole)
    assert torch.equal(out[~hole.expand_as(out)], ramp[~hole.expand_as(ramp)])
    assert (out - ramp)[hole.expand_as(out)].abs().max() < 0.15
    const = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(push_pull_fill(const, hole[:1, :, :16, :16]), const)
    everything = torch.ones(1, 1, 5, 7, dtype=torch.bool)
    torch.testing.assert_close(push_pull_fill(torch.rand(1, 3, 5, 7), everything), torch.full((1, 3, 5, 7), 0.5))


def test_inpaint_pushpull_prefill_starts_as_the_fill_and_learns():
    from restore.models.fill import push_pull_fill

    torch.manual_seed(0)
    g = InpaintGenerator(base_channels=8, dilations=(2,), prefill="pushpull")
    img = torch.rand(2, 3, 30, 34)
    mask = torch.zeros(2, 1, 30, 34)
    mask[:, :, 5:20, 8:22] = 1
    out = g(img, mask)
    expected = push_pull_fill(img, mask.bool())
    torch.testing.assert_close(out["output"], expected)
    torch.testing.assert_close(out["coarse"], expected)
    assert torch.equal(out["output"][mask.expand_as(img) == 0], img[mask.expand_as(img) == 0])
    (out["output"] - img).abs().mean().backward()
    assert g.refine.out.weight.grad.abs().sum() > 0  # the residual output convs receive gradients
    assert g.config["prefill"] == "pushpull"
    with pytest.raises(ModelConfigError, match="prefill"):
        InpaintGenerator(prefill="telea")


def test_unet_config_errors():
    with pytest.raises(ModelConfigError, match="residual=True needs in_channels == out_channels"):
        UNet(in_channels=1, out_channels=2, residual=True)
    with pytest.raises(ModelConfigError, match="sigmoid"):
        UNet(residual=True, out_activation="sigmoid")
    with pytest.raises(ModelConfigError, match="channel_mult"):
        UNet(depth=3, channel_mult=(1, 2))
    with pytest.raises(ModelConfigError, match="norm='layer'"):
        UNet(norm="layer")
    with pytest.raises(ModelConfigError, match="dropout"):
        UNet(dropout=1.5)
    with pytest.raises(ModelInputError, match="N x 3 x H x W"):
        UNet()(torch.rand(1, 1, 8, 8))


def test_unet_pix2pix_unet256_configuration():
    # pix2pix "unet_256": 8 downsamplings, 64 -> 512 channels, dropout 0.5 in
    # the three innermost decoder stages; pix2pix reports 54.414 M parameters
    # (3 -> 3 channels).
    cfg = dict(
        in_channels=3, out_channels=3, base_channels=64, depth=8, max_channels=512, norm="batch",
        dropout=0.5, residual=False, fuse_input=False, upsample="transpose", convs_per_level=0,
        out_activation="tanh", init="normal",
    )
    model = UNet(**cfg)
    assert model.widths == (64, 128, 256, 512, 512, 512, 512, 512)
    # (pix2pix drops the bias on its norm-free outermost/innermost down convs;
    # we keep those 576 biases, well inside the tolerance.)
    assert count_parameters(model) / 1e6 == pytest.approx(54.414, abs=0.001)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3 and all(d.p == 0.5 for d in dropouts)
    # As in pix2pix: not on the innermost up-conv, then on the next three.
    has_dropout = [isinstance(up.drop, nn.Dropout) for up in model.ups]
    assert has_dropout == [False, True, True, True, False, False, False]
    # A narrow copy runs an odd size (padded to 256 px, bottleneck 1x1) in
    # training mode, where batch norm at 1x1 would fail if it were there.
    small = UNet(**{**cfg, "base_channels": 2, "max_channels": 8}).train()
    assert small(torch.rand(2, 3, 37, 61)).shape == (2, 3, 37, 61)


def test_unet_default_is_cpu_sized():
    assert 1e6 <= count_parameters(UNet()) <= 5e6


# --------------------------------------------------------------------------- PatchGAN


def test_patchgan_receptive_field_is_70_and_output_30x30():
    d = PatchGAN(3, base_channels=4, n_layers=3)
    assert d.receptive_field() == 70
    assert d(torch.rand(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert PatchGAN(3, base_channels=4, n_layers=1).receptive_field() == 16
    assert PatchGAN(3, base_channels=4, n_layers=5).receptive_field() == 286


def test_patchgan_matches_pix2pix_parameter_count():
    # pix2pix's conditional D (input_nc + output_nc = 6, ndf 64, basic,
    # batch norm) reports 2.769 M parameters.
    assert count_parameters(PatchGAN(6)) / 1e6 == pytest.approx(2.769, abs=0.0005)


def test_patchgan_receptive_field_matches_gradient_support():
    # The computed field must equal the input window that actually influences
    # one output logit (norm off, so batch statistics do not couple pixels).
    d = PatchGAN(1, base_channels=2, n_layers=3, norm="none", init="kaiming")
    x = torch.rand(1, 1, 160, 160, requires_grad=True)
    out = d(x)
    i, j = out.shape[-2] // 2, out.shape[-1] // 2
    out[0, 0, i, j].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    assert rows.max() - rows.min() + 1 <= 70 and cols.max() - cols.min() + 1 <= 70
    assert rows.max() - rows.min() + 1 >= 66  # corner taps can be exactly zero only by chance


def test_patchgan_structure_and_errors():
    d = PatchGAN(6, base_channels=4, n_layers=3, norm="instance", spectral_norm=True)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) for c in convs)
    assert all(hasattr(c, "parametrizations") for c in convs)
    assert not isinstance(d.model[0][1], nn.InstanceNorm2d)  # no norm on the first layer
    assert isinstance(d.model[1][1], nn.InstanceNorm2d)
    assert isinstance(d.model[0][2], nn.LeakyReLU)
    y = d.train()(torch.rand(2, 6, 24, 30))
    assert y.shape == (2, 1, 1, 1) and torch.isfinite(y).all()
    with pytest.raises(ModelInputError, match="too small"):
        d(torch.rand(1, 6, 23, 64))
    with pytest.raises(ModelInputError, match="N x 6 x H x W"):
        d(torch.rand(1, 3, 64, 64))


# --------------------------------------------------------------------------- inpainting


def random_mask(n: int, h: int, w: int, p: float = 0.4) -> torch.Tensor:
    return (torch.rand(n, 1, h, w) < p).float()


@pytest.mark.parametrize("size", ODD_SIZES)
def test_inpaint_keeps_known_pixels_bit_exact(size):
    g = tiny_inpaint().train()
    image = torch.rand(2, 3, *size)
    mask = random_mask(2, *size)
    mask[0, 0, 0, 0] = 0  # at least one known pixel
    out = g(image, mask)
    for key in ("coarse", "refined", "output"):
        assert out[key].shape == image.shape
        assert torch.isfinite(out[key]).all()
        assert out[key].min() >= 0 and out[key].max() <= 1
    known = (mask == 0).expand_as(image)
    assert torch.equal(out["output"][known], image[known])
    hole = ~known
    assert torch.equal(out["output"][hole], out["refined"][hole])


def test_inpaint_never_sees_pixels_under_the_hole():
    g = tiny_inpaint().eval()
    image = torch.rand(1, 3, 24, 20)
    mask = torch.zeros(1, 1, 24, 20)
    mask[..., 5:15, 4:12] = 1
    other = torch.where(mask.bool(), torch.rand_like(image), image)
    with torch.no_grad():
        a, b = g(image, mask), g(other, mask)
    for key in ("coarse", "refined"):
        assert torch.equal(a[key], b[key])


def test_inpaint_gradients_reach_both_stages_and_attention():
    g = tiny_inpaint()
    with torch.no_grad():
        g.refine.attention.gamma.fill_(0.5)
    image, mask = torch.rand(2, 3, 16, 16), random_mask(2, 16, 16)
    out = g(image, mask)
    (out["coarse"].mean() + out["output"].mean()).backward()
    for stage in (g.coarse, g.refine):
        grads = [p.grad for p in stage.parameters()]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert g.refine.attention.gamma.grad.abs() > 0


def test_inpaint_architecture_follows_deepfill_v2():
    g = InpaintGenerator(base_channels=48)
    dil = [m.conv.dilation[0] for m in g.coarse.encoder if isinstance(m, GatedConv2d) and m.conv.dilation[0] > 1]
    assert dil == [2, 4, 8, 16]
    n_coarse = sum(isinstance(m, (GatedConv2d, GatedUpConv2d)) for m in g.coarse.encoder.children())
    n_coarse += sum(isinstance(m, (GatedConv2d, GatedUpConv2d)) for m in g.coarse.decoder.children()) + 1
    assert n_coarse == 17
    assert g.coarse.attention is None and isinstance(g.refine.attention, SelfAttention)
    assert g.coarse.encoder[0].conv.out_channels == 48  # cnum, gates included
    assert g.coarse.encoder[0].conv.in_channels == 5  # RGB + ones + mask


def test_inpaint_gray_full_and_empty_masks_and_errors():
    g = tiny_inpaint(in_channels=2, attend_to_known=True)
    image = torch.rand(1, 1, 9, 13)
    full = g(image, torch.ones(1, 1, 9, 13))
    assert torch.isfinite(full["output"]).all() and torch.equal(full["output"], full["refined"])
    empty = g(image, torch.zeros(1, 1, 9, 13))
    assert torch.equal(empty["output"], image)
    with pytest.raises(ModelInputError, match="mask must be N x 1 x H x W"):
        g(image, torch.ones(1, 1, 9, 12))
    with pytest.raises(ModelInputError, match="image must be N x 1 x H x W"):
        g(torch.rand(1, 3, 9, 13), torch.ones(1, 1, 9, 13))
    with pytest.raises(ModelConfigError, match="even"):
        InpaintGenerator(base_channels=5)
    with pytest.raises(ModelConfigError, match="dilations"):
        InpaintGenerator(dilations=(2, 0))


def test_sn_patchgan():
    d = SNPatchGAN(4, base_channels=4, n_layers=6)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 7 and all(hasattr(c, "parametrizations") for c in convs)
    assert [c.kernel_size[0] for c in convs[:6]] == [5] * 6 and all(c.stride[0] == 2 for c in convs[:6])
    image, mask = torch.rand(2, 3, 64, 64), random_mask(2, 64, 64)
    d.eval()
    y = d(image, mask)
    assert y.shape == (2, 1, 1, 1)
    assert torch.equal(y, d(torch.cat([image, mask], 1)))
    assert d(torch.rand(1, 4, 1, 1)).shape == (1, 1, 1, 1)
    assert d.train()(torch.rand(2, 4, 37, 61)).shape == (2, 1, 1, 1)
    assert d.receptive_field() > 256
    with pytest.raises(ModelInputError, match="image \\+ mask"):
        d(image)


# --------------------------------------------------------------------------- registry round trip


BUILD_CASES = [
    ("unet", dict(in_channels=1, out_channels=2, base_channels=4, depth=3, channel_mult=(1, 2, 2),
                  norm="instance", dropout=0.5, dropout_layers=1, residual=False, out_activation="tanh",
                  upsample="nearest", convs_per_level=2)),
    ("unet", dict(base_channels=4, depth=2)),
    ("patchgan", dict(in_channels=3, base_channels=4, n_layers=2, norm="none", spectral_norm=True)),
    ("inpaint", dict(in_channels=4, base_channels=6, dilations=(2, 4), kv_pool=1, fill_value=0.0)),
    ("sn-patchgan", dict(in_channels=4, base_channels=4, n_layers=4)),
]


@pytest.mark.parametrize("name,kwargs", BUILD_CASES, ids=[c[0] for c in BUILD_CASES])
def test_build_from_config_rebuilds_identical_model(name, kwargs):
    model = build(name, **kwargs)
    card = json.loads(json.dumps(model.config))  # must survive a JSON model card
    clone = build(name, **card)
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    clone.eval()
    c_in = card["in_channels"]
    with torch.no_grad():
        if name == "inpaint":
            image, mask = torch.rand(1, c_in - 1, 19, 23), random_mask(1, 19, 23)
            torch.testing.assert_close(model(image, mask)["output"], clone(image, mask)["output"], rtol=0, atol=0)
        else:
            x = torch.rand(1, c_in, 40, 40)
            torch.testing.assert_close(model(x), clone(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["unet", "patchgan", "inpaint", "sn-patchgan"])
def test_default_configs_are_json_serialisable(name):
    model = build(name)
    assert json.loads(json.dumps(model.config)) == model.config


def test_tiny_inputs_have_no_nans_in_forward_and_backward():
    for size in [(1, 1), (2, 3)]:
        unet = tiny_unet(norm="batch").train()
        x = torch.rand(2, 3, *size, requires_grad=True)
        unet(x).mean().backward()
        assert torch.isfinite(x.grad).all()
        g = tiny_inpaint().train()
        out = g(torch.rand(2, 3, *size), random_mask(2, *size, p=0.5))
        out["refined"].mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in g.parameters() if p.grad is not None)
