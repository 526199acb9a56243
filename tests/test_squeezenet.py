"""The converted ImageNet SqueezeNet 1.1 (issue 22): it must recognise what bundled photos show.

A wrong kernel layout (HWIO read as OIHW with H and W swapped, or the input
channels in RGB instead of Caffe's BGR) still gives confident-looking logits;
only checking the classes of real photos catches it. The photos ship with
scikit-image; the class indices are ImageNet-1k's (ILSVRC 2012 synset order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restore.models.squeezenet import (
    LAYERS,
    SqueezeNet,
    SqueezeNetWeightsMissing,
    layer_channels,
    load_squeezenet,
    preprocess,
)

#: ImageNet-1k indices of the accepted classes for each photo.
EXPECTED = {
    "chelsea.png": {281: "tabby", 282: "tiger cat", 283: "Persian cat", 285: "Egyptian cat"},
    "coffee.png": {967: "espresso", 968: "cup", 504: "coffee mug"},
    "motorcycle_left.png": {665: "moped", 670: "motor scooter"},
}


def _photo(name: str, size: int = 227) -> torch.Tensor:
    import skimage
    from PIL import Image

    path = Path(skimage.__file__).parent / "data" / name
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@pytest.fixture(scope="module")
def net() -> SqueezeNet:
    return load_squeezenet()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_imagenet_classes_of_bundled_photos(net: SqueezeNet, name: str) -> None:
    with torch.no_grad():
        probs = net(preprocess(_photo(name))).softmax(1)[0]
    top = int(probs.argmax())
    assert top in EXPECTED[name], f"{name}: top-1 class {top}, expected one of {EXPECTED[name]}"
    assert float(probs[list(EXPECTED[name])].sum()) > 0.8


def test_rgb_order_matters(net: SqueezeNet) -> None:
    """Feeding RGB where BGR is expected must hurt: the preprocessing is not a no-op guess."""
    x = _photo("coffee.png")
    with torch.no_grad():
        right = net(preprocess(x)).softmax(1)[0, 967]
        wrong = net(preprocess(x.flip(1))).softmax(1)[0, 967]
    assert right > wrong


def test_features_shapes_and_truncation(net: SqueezeNet) -> None:
    x = preprocess(torch.rand(2, 3, 64, 80))
    feats = net.features(x)
    assert list(feats) == list(LAYERS)
    for name, f in feats.items():
        assert f.shape[1] == layer_channels(name), name
    assert feats["fire9"].shape[-2:] == (3, 4)  # /16 with valid conv1 and ceil-mode pools
    small = load_squeezenet("fire5")
    assert not hasattr(small, "conv10") and not hasattr(small, "fire6")
    torch.testing.assert_close(small.features(x, ["fire5"])["fire5"], feats["fire5"])
    with pytest.raises(ValueError, match="does not compute"):
        small.features(x, ["fire9"])
    assert not any(p.requires_grad for p in small.parameters())


def test_preprocess_gray_and_bad_input() -> None:
    gray = torch.full((1, 1, 4, 4), 0.5)
    out = preprocess(gray)
    assert out.shape == (1, 3, 4, 4)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([127.5 - 103.939, 127.5 - 116.779, 127.5 - 123.68]))
    with pytest.raises(ValueError, match="N1HW or N3HW"):
        preprocess(torch.rand(1, 2, 4, 4))


def test_missing_weights_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SqueezeNetWeightsMissing, match="convert_squeezenet"):
        load_squeezenet(path=tmp_path / "nope.safetensors")


def test_conversion_layout(tmp_path: Path) -> None:
    """HWIO -> OIHW: a kernel whose taps differ along H and W lands where conv2d expects them."""
    h5py = pytest.importorskip("h5py")
    import io
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from convert_squeezenet import _keras_layers, read_h5

    ref = SqueezeNet()
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for prefix, layer in _keras_layers().items():
            w = ref.get_submodule(prefix)
            f[f"{layer}/{layer}_W:0"] = w.weight.detach().numpy().transpose(2, 3, 1, 0)  # OIHW -> HWIO
            f[f"{layer}/{layer}_b:0"] = w.bias.detach().numpy()
    state = read_h5(buf.getvalue())
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(state[k], v)
