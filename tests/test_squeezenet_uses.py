"""What the offline ImageNet SqueezeNet is used for (issue 22): feature losses, the feature distance, the colorizer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restore import weights as W
from restore.corrupt import RandomStreams
from restore.engine.task import StepContext
from restore.losses import PerceptualLoss, SqueezeFeatures, StyleLoss
from restore.metrics import PERCEPTUAL_LAYERS, SqueezeDistance, perceptual_distance
from restore.models.colorizer import SqueezeColorizer, gray_of_lightness
from restore.tasks import colorize as C


def _chelsea(size: tuple[int, int] = (96, 128)) -> torch.Tensor:
    import skimage
    from PIL import Image

    rgb = np.asarray(Image.open(Path(skimage.__file__).parent / "data" / "chelsea.png").convert("RGB"))
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


# ----------------------------------------------------------------------------- losses


def test_squeezenet_perceptual_and_style_losses():
    feats = SqueezeFeatures()
    perc, style = PerceptualLoss(features=feats), StyleLoss(features=feats)
    assert perc.backbone == style.backbone == "squeezenet"
    x = _chelsea()
    assert float(perc(x, x)) == 0.0 and float(style(x, x)) == 0.0
    blurred = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    y = x.clone().requires_grad_(True)
    loss = perc(y, blurred)
    loss.backward()
    assert float(loss.detach()) > 0 and y.grad is not None and float(y.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in feats.parameters())
    # stronger blur, larger loss: the weights make the layers comparable, not the loss meaningless
    more = F.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False)
    assert float(perc(more, x)) > float(perc(blurred, x))


def test_squeezenet_loss_layers_are_checked():
    with pytest.raises(ValueError, match="unknown squeezenet layer"):
        PerceptualLoss(layers={"relu1_2": 1.0}, backbone="squeezenet", pretrained=False)
    with pytest.raises(ValueError, match="does not compute"):
        PerceptualLoss(layers={"fire9": 1.0}, features=SqueezeFeatures(["conv1"], pretrained=False))
    with pytest.raises(ValueError, match="backbone must be"):
        PerceptualLoss(backbone="alexnet", pretrained=False)


# ----------------------------------------------------------------------------- distance


def test_feature_distance_identity_symmetry_and_order():
    x = _chelsea()
    d0 = perceptual_distance(x, x)
    assert d0.shape == (1,) and float(d0) == 0.0
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    noisier = (x + 0.15 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    a, b = float(perceptual_distance(noisy, x)), float(perceptual_distance(x, noisy))
    assert math.isclose(a, b, rel_tol=1e-5) and 0 < a < float(perceptual_distance(noisier, x))
    # unit-normalised channels: each layer adds at most 4 (opposite unit vectors), uniform weights
    assert float(perceptual_distance(x, 1 - x)) <= 4 * len(PERCEPTUAL_LAYERS)


def test_feature_distance_inside_a_mask():
    """The masked form (an inpainted hole's distance) sees a change inside the region and ignores one far outside."""
    x = _chelsea()
    h, w = x.shape[-2:]
    left = torch.zeros(1, 1, h, w)
    left[..., : w // 3] = 1.0
    changed_right = x.clone()
    changed_right[..., 2 * w // 3:] = (changed_right[..., 2 * w // 3:] + 0.2).clamp(0, 1)
    whole = torch.ones(1, 1, h, w)
    assert math.isclose(float(perceptual_distance(changed_right, x, whole)),
                        float(perceptual_distance(changed_right, x)), rel_tol=1e-5)
    inside = float(perceptual_distance(changed_right, x, 1 - left))
    outside = float(perceptual_distance(changed_right, x, left))
    assert outside < 0.05 * inside
    with pytest.raises(ValueError, match="mask"):
        perceptual_distance(x, x, torch.ones(1, 1, 8, 8))


def test_feature_distance_is_not_called_lpips():
    assert "not LPIPS" in (SqueezeDistance.__doc__ or "")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        SqueezeDistance(pretrained=False)(torch.rand(1, 2, 32, 32), torch.rand(1, 2, 32, 32))


# ----------------------------------------------------------------------------- colorizer


def test_gray_of_lightness_matches_lab():
    gray = torch.linspace(0, 1, 11).view(1, 1, 1, 11).expand(1, 3, 1, 11).contiguous()
    l_norm, _ = C.rgb_to_model(gray)
    torch.testing.assert_close(gray_of_lightness(l_norm), gray[:, :1], atol=2e-4, rtol=0)


@pytest.mark.parametrize("size", [(16, 16), (37, 51), (70, 23)])
def test_colorizer_any_size_and_range(size):
    torch.manual_seed(0)
    G = SqueezeColorizer(widths=(8, 8, 8, 8)).eval()
    with torch.no_grad():
        out = G(torch.rand(2, 1, *size) * 2 - 1)
    assert out.shape == (2, 2, *size) and float(out.abs().max()) <= 1.0


def test_colorizer_trains_only_its_decoder_and_round_trips_a_card(tmp_path):
    G = SqueezeColorizer(widths=(8, 8, 8, 8)).load_backbone()
    frozen = {k: v.clone() for k, v in G.backbone.state_dict().items()}
    trainable = [p for p in G.parameters() if p.requires_grad]
    assert trainable and all(not p.requires_grad for p in G.backbone.parameters())
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    l_norm, ab = C.rgb_to_model(_chelsea((32, 48)))
    first = None
    for _ in range(5):
        loss = (G(l_norm) - ab).abs().mean()
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first
    for k, v in G.backbone.state_dict().items():
        torch.testing.assert_close(v, frozen[k])
    W.save(tmp_path / "c", G, {"task": "colorize", "corruption": "gray"})
    loaded, card = W.load(tmp_path / "c")
    assert card["arch"] == "squeeze-colorizer"
    torch.testing.assert_close(loaded.eval()(l_norm), G.eval()(l_norm))


def test_colorize_task_with_squeezenet_generator_and_perceptual_term():
    task = C.ColorizeTask({"arch": "squeeze-colorizer", "crop_size": 32, "load_size": 32, "work_size": 32,
                           "max_work_side": 64, "lambda_perceptual": 1.0,
                           "generator": {"widths": [8, 8, 8, 8]}, "discriminator": {"base_channels": 4, "n_layers": 2}})
    assert task.objective("G") == ("adv", "l1", "perceptual")
    models = task.build_models()
    assert isinstance(models["G"], SqueezeColorizer)
    ctx = StepContext(step=0, epoch=0, device=torch.device("cpu"), streams=RandomStreams(0), training=True)
    batch = task.prepare_batch({"target": _chelsea((32, 32))}, ctx)
    out = task.forward(models["G"], batch, ctx)
    terms = task.generator_losses(batch, out, models["D"], ctx)
    assert set(terms) == {"adv", "l1", "perceptual"} and float(terms["perceptual"]) > 0
    with pytest.raises(C.ColorizeConfigError, match="task.arch"):
        C.ColorizeTask({"arch": "resnet"})
    with pytest.raises(C.ColorizeConfigError, match="SqueezeColorizer"):
        C.ColorizeTask({"arch": "squeeze-colorizer", "generator": {"base_channels": 8}})
