"""``restore export`` and ``--backend onnxruntime`` (issue 23): each shipped photo model, against PyTorch.

The exported graphs must restore what the PyTorch models restore, through the same pipeline: whole
images whose size is not a multiple of the network's stride, tiles (dynamic H and W), batches, and
carry the model card.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import restore
from restore import export as E
from restore import graphs as G
from restore.backends import ExportedModel
from restore.cli import main

onnx = pytest.importorskip("onnx")  # the optional 'onnx' extra (in 'dev', so CI runs these)
pytest.importorskip("onnxruntime")

PHOTO_MODELS = ("denoise-gaussian", "colorize", "inpaint")
#: |torch - onnxruntime| allowed on the restored images in [0, 1] (measured: below 2e-5).
TOL = 1e-4


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, torch.Tensor]]:
    return E.sample_photos(side=72)[:2]


@pytest.mark.parametrize("name", PHOTO_MODELS)
def test_onnx_export_matches_torch_and_carries_the_card(name: str, photos, tmp_path: Path) -> None:
    report = E.export(name, "onnx", tmp_path / f"{name}.onnx", photos=photos)
    assert report.path.is_file() and report.size_bytes == report.path.stat().st_size
    assert report.graph_diff < TOL
    assert set(report.photo_diffs) == {n for n, _ in photos}
    assert all(d < TOL for d in report.photo_diffs.values()), report.photo_diffs
    model = onnx.load(str(report.path))
    meta = {p.key: p.value for p in model.metadata_props}
    _, card = restore.weights.load(name)
    assert json.loads(meta["restore.card"]) == json.loads(json.dumps(card))
    assert meta["restore.task"] == card["task"] and int(meta["restore.multiple"]) >= 1
    # H and W are dynamic in the graph itself
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["height", "width"]


def test_torchscript_export_matches_torch(photos, tmp_path: Path) -> None:
    report = E.export("denoise-gaussian", "torchscript", tmp_path / "d.pt", photos=photos)
    assert report.graph_diff < TOL and max(report.photo_diffs.values()) < TOL
    extra = {"restore.json": ""}
    torch.jit.load(str(report.path), _extra_files=extra)
    assert json.loads(extra["restore.json"])["restore.name"] == "denoise-gaussian"
    assert ExportedModel.from_file(report.path).backend == "torchscript"


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", PHOTO_MODELS + ("denoise-saltpepper",))
def test_onnxruntime_backend_restores_as_torch_whole_and_tiled(name: str) -> None:
    """Through the API: float images (no rounding) of a size off the stride grid, whole and in 64-pixel tiles.

    With salt and pepper pixels, along the border too: the salt-and-pepper model's impulse switch must act on
    the unpadded image, as the PyTorch model's does.
    """
    image = _image(70, 101).astype(np.float32) / 255
    rng = np.random.default_rng(2)
    for value in (0.0, 1.0):
        ys, xs = rng.integers(0, 70, 150), rng.integers(0, 101, 150)
        image[ys, xs] = value
        image[0, rng.integers(0, 101, 10)] = value
        image[rng.integers(0, 70, 10), -1] = value
    mask = np.zeros((70, 101), bool)
    mask[20:45, 30:70] = True
    kwargs = {"mask": mask} if name == "inpaint" else {}
    reference = restore.load(name, device="cpu")
    ours = restore.load(name, backend="onnxruntime")
    assert isinstance(ours.pipeline.model, ExportedModel)
    for tile in (0, 64):
        a = reference(image, tile=tile, **kwargs)
        b = ours(image, tile=tile, **kwargs)
        assert a.shape == b.shape and float(np.abs(a - b).max()) < TOL, (tile, float(np.abs(a - b).max()))


def test_cli_backend_onnxruntime_and_an_exported_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_image(40, 56, seed=1)).save("in.png")
    assert main(["export", "denoise-gaussian", "d.onnx"]) == 0
    printed = capsys.readouterr().out
    assert "wrote d.onnx" in printed and "max |torch - onnx|" in printed
    assert main(["denoise", "in.png", "torch/"]) == 0
    assert main(["denoise", "in.png", "ort/", "--backend", "onnxruntime"]) == 0
    assert main(["denoise", "in.png", "file/", "--weights", "d.onnx", "--backend", "onnxruntime"]) == 0
    ref = np.asarray(Image.open("torch/in.png")).astype(int)
    for out in ("ort/in.png", "file/in.png"):
        got = np.asarray(Image.open(out)).astype(int)
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1  # a float difference of ~1e-6 may round over


def test_clear_errors(tmp_path: Path, capsys) -> None:
    assert main(["export", "vae-fashion", str(tmp_path / "v.onnx")]) == 2
    assert "photo models only" in capsys.readouterr().err
    assert not (tmp_path / "v.onnx").exists()
    Image.fromarray(_image(20, 20)).save(tmp_path / "in.png")
    assert main(["denoise", str(tmp_path / "in.png"), str(tmp_path / "o"), "--weights", "x.onnx"]) == 2
    assert "backend onnxruntime" in capsys.readouterr().err
    with pytest.raises(ValueError, match="backend must be one of"):
        restore.load("denoise-gaussian", backend="tensorrt")


def test_noise_conditioned_denoiser_exports_with_its_sigma_input(tmp_path: Path) -> None:
    from restore.models.cond_unet import CondUNet
    from restore.pipeline import Pipeline

    torch.manual_seed(0)
    model = CondUNet(3, base_channels=4, depth=2, convs_per_level=0).eval()
    torch.nn.init.normal_(model.unet._last_conv().weight, std=0.05)
    card = {"task": "denoise", "name": "tiny-cond", "corruption": "gaussian:sigma=25"}
    graph = G.graph_of(model, card)
    assert graph.inputs == ("image", "sigma")
    path = G.save_graph(graph, "onnx", tmp_path / "c.onnx", G.metadata(card, graph, model))
    exported = ExportedModel.from_file(path)
    assert exported.noise_conditioned and exported.multiple == model.multiple
    reference, ours = Pipeline(model, card), Pipeline(exported, card)
    x = torch.from_numpy(_image(37, 53)).permute(2, 0, 1)[None].float() / 255
    outputs = []
    for sigma in ("5", 50, "auto"):
        for tile in (0, 32):
            a, b = reference.run(x, sigma=sigma, tile=tile).image, ours.run(x, sigma=sigma, tile=tile).image
            assert float((a - b).abs().max()) < TOL
            outputs.append(b)
    assert not torch.allclose(outputs[0], outputs[2], atol=1e-4)  # sigma is an input of the exported graph
