"""The VAE task: beta schedule, losses, training through the real Trainer, restoring API, CLI dispatch."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restore.corrupt import RandomStreams
from restore.data import write_idx
from restore.engine.config import ConfigError, TrainConfig
from restore.engine.task import StepContext
from restore.engine.trainer import Trainer
from restore.pipeline import Pipeline
from restore.restorers.vae import infer_labels
from restore.tasks import vae as V

TINY = {"latent_dim": 2, "channels": [4, 8], "hidden": 16}


# --------------------------------------------------------------------------- fixtures


def _shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 uint8 images of two classes: class 0 a bright square, class 1 a horizontal bar."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), np.uint8)
    y = np.arange(n) % 2
    for i in range(n):
        r, c = rng.integers(4, 12, size=2)
        if y[i] == 0:
            x[i, r : r + 12, c : c + 12] = 220
        else:
            x[i, r + 4 : r + 8, 2:26] = 200
    return x, y.astype(np.uint8)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("idx")
    for prefix, n, seed in (("train", 64, 0), ("t10k", 32, 1)):
        x, y = _shapes(n, seed)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", y)
    return root


def _task(**options) -> V.VAETask:
    return V.VAETask({**TINY, "class_names": ["square", "bar"], "num_classes": 2, **options})


def _config(tmp: Path, data: Path, **extra) -> TrainConfig:
    d = V.VAETask.defaults()
    d.update(
        data=str(data), out=str(tmp / "run"), batch_size=16, epochs=2, device="cpu", progress=False,
        ckpt_every=0, log_every=0, image_every=0, val_batch_size=32,
    )
    d.update(extra)
    d["optim"] = {"G": {"lr": 1e-2, "betas": [0.9, 0.999]}}  # tiny model, few steps
    return TrainConfig.from_dict(d)


def _ctx(step: int = 0, config: TrainConfig | None = None, training: bool = True) -> StepContext:
    return StepContext(step=step, epoch=0, device=torch.device("cpu"), streams=RandomStreams(0),
                       training=training, config=config)


def _training_batch(task: V.VAETask, data: Path, tmp: Path) -> tuple[torch.nn.Module, TrainConfig, StepContext, dict]:
    """(G in train mode, config, step context, a prepared batch of 8 noisy/clean images with labels)."""
    task.build_datasets(str(data))
    G = task.build_models()["G"].train()
    cfg = _config(tmp, data)
    x, y = _shapes(8, 3)
    batch = {"target": torch.from_numpy(x).float().div(255).unsqueeze(1), "label": torch.from_numpy(y).long()}
    ctx = _ctx(0, cfg)
    return G, cfg, ctx, task.prepare_batch(batch, ctx)


# --------------------------------------------------------------------------- beta schedule


def test_beta_schedule_linear_warmup_then_held() -> None:
    assert V.beta_at(0, 1.0, 8) == 0.0
    assert V.beta_at(2, 1.0, 8) == pytest.approx(0.25)
    assert V.beta_at(4, 0.5, 8) == pytest.approx(0.25)
    assert V.beta_at(8, 1.0, 8) == 1.0
    assert V.beta_at(30, 1.0, 8) == 1.0
    assert V.beta_at(0, 0.7, 0) == 0.7  # no warm-up: beta_max from the first step
    with pytest.raises(ValueError, match="warmup_epochs"):
        V.beta_at(1, 1.0, -1)


def test_task_beta_advances_per_step(idx_dir: Path, tmp_path: Path) -> None:
    task = _task(warmup_epochs=2, beta_max=1.0)
    task.build_datasets(str(idx_dir))
    cfg = _config(tmp_path, idx_dir)  # 64 images / batch 16 = 4 steps per epoch
    assert task.beta(_ctx(0, cfg)) == 0.0
    assert task.beta(_ctx(2, cfg)) == pytest.approx(0.25)  # half an epoch of a 2-epoch ramp
    assert task.beta(_ctx(4, cfg)) == pytest.approx(0.5)
    assert task.beta(_ctx(100, cfg)) == 1.0


# --------------------------------------------------------------------------- losses


def test_losses_match_hand_computation(idx_dir: Path, tmp_path: Path) -> None:
    from restore.losses import SupConLoss

    task = _task(warmup_epochs=0, beta_max=0.5, gamma=2.0)
    G, cfg, ctx, batch = _training_batch(task, idx_dir, tmp_path)
    assert batch["input"].shape == batch["target"].shape and not torch.equal(batch["input"], batch["target"])
    out = task.forward(G, batch, ctx)
    terms = task.generator_losses(batch, out, None, ctx)
    assert set(terms) == set(task.loss_names_G)
    terms = {k: v.detach() for k, v in terms.items()}
    out = {k: v.detach() for k, v in out.items()}
    t = batch["target"]
    bce = -(t * F.logsigmoid(out["logits"]) + (1 - t) * F.logsigmoid(-out["logits"])).sum() / 8
    mu, lv = out["z_mean"], out["z_log_var"]
    kl = (-0.5 * (1 + lv - mu**2 - lv.exp()).sum(1)).mean()
    sc = SupConLoss(0.1)(mu, batch["label"])
    assert float(terms["recon"]) == pytest.approx(float(bce), rel=1e-5)
    assert float(terms["kl"]) == pytest.approx(0.5 * float(kl), rel=1e-5)
    assert float(terms["supcon"]) == pytest.approx(2.0 * float(sc), rel=1e-5)
    assert ctx.scalars["kl/beta"] == 0.5 and "vae/kl" in ctx.scalars and "vae/supcon" in ctx.scalars

    mse_task = _task(recon="mse", gamma=0.0)
    terms = mse_task.generator_losses(batch, out, None, _ctx(0, cfg))
    assert float(terms["recon"]) == pytest.approx(float((out["output"] - t).pow(2).sum() / 8), rel=1e-5)
    assert float(terms["supcon"]) == 0.0


def test_supcon_clean_view_is_a_second_view(idx_dir: Path, tmp_path: Path) -> None:
    from restore.losses import SupConLoss

    task = _task(warmup_epochs=0, beta_max=0.5, gamma=2.0, supcon_clean_view=True)
    G, cfg, ctx, batch = _training_batch(task, idx_dir, tmp_path)
    out = task.forward(G, batch, ctx)
    # the recon / KL terms see the noisy half only; the clean half adds its z_mean as a view
    assert out["output"].shape == (8, 1, 28, 28) and out["z_mean"].shape == out["z_mean_clean"].shape == (8, 2)
    with torch.no_grad():
        zc, _ = G.encode(batch["target"])
    assert torch.allclose(out["z_mean_clean"].detach(), zc, atol=1e-5)
    terms = task.generator_losses(batch, out, None, ctx)
    views = torch.stack([out["z_mean"], out["z_mean_clean"]], dim=1).detach()
    assert float(terms["supcon"]) == pytest.approx(2.0 * float(SupConLoss(0.1)(views, batch["label"])), rel=1e-5)
    assert out["z_mean_clean"].requires_grad  # the encoder learns from the clean view
    # validation decodes the noisy input only
    assert "z_mean_clean" not in task.forward(G, batch, _ctx(0, cfg, training=False))


BAD_OPTIONS = [
    ({"conditioning": "film"}, "conditioning"),
    ({"recon": "l1"}, "recon"),
    ({"recon": "l2"}, "recon"),
    ({"corruption": "gausian:sigma=3"}, "corruption"),
    ({"corruption": "foo"}, "corruption"),
    ({"class_names": ["a", "b"]}, "class_names"),  # 2 names, num_classes 10
    ({"supcon_clean_view": True, "conditioning": "onehot"}, "supcon_clean_view"),
    ({"supcon_clean_view": True, "gamma": 0.0}, "supcon_clean_view"),
    ({"latent_dim": 0}, "latent_dim"),
    ({"latent_dim": 2.5}, "latent_dim"),
    ({"channels": 5}, "channels"),
    ({"channels": [8, 8, 8]}, "channels"),  # 28 is not divisible by 2**3
    ({"channels": [8, 0]}, "channels"),
    ({"hidden": True}, "hidden"),
    ({"gamma": -1}, "gamma"),
    ({"beta_max": "abc"}, "beta_max"),
    ({"temperature": 0}, "temperature"),
    ({"warmup_epochs": float("nan")}, "warmup_epochs"),
    ({"embed_dim": 0, "conditioning": "embedding"}, "embed_dim"),
    ({"conditioning": "onehot", "num_classes": 1, "class_names": ["a"]}, "num_classes"),
    ({"val_limit": -1}, "val_limit"),
    ({"history": "yes"}, "history"),
]


@pytest.mark.parametrize("options, key", BAD_OPTIONS, ids=[f"{k}{i}" for i, (_, k) in enumerate(BAD_OPTIONS)])
def test_bad_options_are_config_errors(options: dict, key: str) -> None:
    """A bad option is a ConfigError naming it (train/vae.py: one line, exit 2), not a ValueError/TypeError
    traceback from the model or from float()."""
    with pytest.raises(ConfigError, match=f"task {key}"):
        V.VAETask(options)


def test_bad_option_on_the_command_line_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from restore.engine.cli import main

    code = main(V.VAETask, ["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--set", "task.recon=l2"])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: task recon: must be bce or mse, got 'l2'\n"
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- training through the Trainer


def _fixed_batch_loss(task: V.VAETask, G: torch.nn.Module, data: Path) -> float:
    """Deterministic BCE of the z_mean reconstruction on the first 32 test images (fixed noise)."""
    from restore import corrupt

    x, y = V._dataset_tensors(task.val_set)
    noisy = corrupt.apply(x, task.options["corruption"], 0).input
    with torch.no_grad():
        out = V._run_model(G, noisy, y, sample=False)
    return float(F.binary_cross_entropy_with_logits(out["logits"], x, reduction="sum") / len(x))


@pytest.mark.parametrize("conditioning", ["none", "onehot"])
def test_tiny_vae_loss_falls_through_trainer(idx_dir: Path, tmp_path: Path, conditioning: str) -> None:
    torch.manual_seed(0)
    task = _task(conditioning=conditioning, warmup_epochs=1, train_eval_limit=16, snapshot_latents=8)
    train, val = task.build_datasets(str(idx_dir))
    cfg = _config(tmp_path, idx_dir, epochs=3)
    trainer = Trainer(task, cfg, train, val)
    before = _fixed_batch_loss(task, trainer.models["G"], idx_dir)
    summary = trainer.fit()
    after = _fixed_batch_loss(task, trainer.models["G"], idx_dir)
    assert summary["steps"] == 12 and math.isfinite(summary["val/psnr"])
    assert after < 0.9 * before, (before, after)

    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["beta"]) for r in rows] == pytest.approx([0.75, 1.0, 1.0])  # last step of each epoch
    for key in ("loss_recon", "loss_kl", "loss_supcon", "train_psnr", "test_psnr", "test_ssim", "train_mse"):
        assert all(math.isfinite(float(r[key])) for r in rows), key
    assert float(rows[-1]["loss_recon"]) < float(rows[0]["loss_recon"])
    snap = np.load(tmp_path / "run" / "epochs" / "epoch_0003.npz")
    assert snap["z_mean"].shape == (8, 2) and snap["recon"].shape == (8, 1, 28, 28)  # min(16, snapshot)

    path = trainer.export(tmp_path / "w" / "tiny")
    import json

    card = json.loads(path.with_suffix(".json").read_text())
    assert card["task"] == "vae" and card["latent_dim"] == 2 and card["conditioning"] == conditioning
    assert card["corruption"] == "gaussian:sigma=114.75" and card["class_names"] == ["square", "bar"]
    assert card["arch"] == ("vae" if conditioning == "none" else "cvae")


def test_history_rows_of_a_resumed_epoch_are_replaced(tmp_path: Path) -> None:
    p = tmp_path / "history.csv"
    for epoch, value in ((1, 1.0), (2, 2.0), (3, 3.0), (2, 20.0)):
        V.write_history_row(p, {"epoch": epoch, "step": epoch * 10, "test_psnr": value})
    rows = list(csv.DictReader(p.open()))
    assert [(r["epoch"], r["test_psnr"]) for r in rows] == [("1", "1"), ("2", "20")]


def test_knn_accuracy_by_hand() -> None:
    train = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    ty = torch.tensor([0, 0, 0, 1, 1, 1])
    test = torch.tensor([[0.05], [5.05], [2.4], [2.7]])
    assert V.knn_accuracy(train, ty, test, torch.tensor([0, 1, 0, 1]), k=3) == 1.0
    assert V.knn_accuracy(train, ty, test, torch.tensor([1, 1, 1, 1]), k=3) == 0.5
    # k=2 with one neighbour of each class: the nearer one wins
    tie_train = torch.tensor([[0.0], [1.0]])
    assert V.knn_accuracy(tie_train, torch.tensor([0, 1]), torch.tensor([[0.4]]), torch.tensor([0]), k=2) == 1.0
    assert V.knn_accuracy(tie_train, torch.tensor([0, 1]), torch.tensor([[0.6]]), torch.tensor([1]), k=2) == 1.0


# --------------------------------------------------------------------------- restoring API


def _model(conditional: bool = False) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    task = _task(conditioning="onehot" if conditional else "none")
    G = task.build_models()["G"].eval()
    card = {**task.model_card(), "name": "tiny"}
    return G, card


def _opts(**kw) -> dict:
    return {"samples": 0, "uncertainty": False, "label": None, "seed": 0, **kw}


def test_pipeline_samples_and_uncertainty() -> None:
    G, card = _model()
    x = torch.rand(3, 1, 28, 28)
    det = Pipeline(G, card, task="vae").run(x, tile=0).image
    assert det.shape == (3, 1, 28, 28)
    assert torch.equal(det, Pipeline(G, card, task="vae").run(x, tile=0, **_opts()).image)
    avg = Pipeline(G, card, task="vae").run(x, tile=0, **_opts(samples=5)).image
    assert avg.shape == (3, 1, 28, 28) and not torch.equal(avg, det)
    again = Pipeline(G, card, task="vae").run(x, tile=0, **_opts(samples=5)).image
    assert torch.equal(avg, again)  # seeded
    restored = Pipeline(G, card, task="vae").run(x, tile=0, **_opts(uncertainty=True))
    mean, extras = restored.image, restored.extras
    assert mean.shape == (3, 1, 28, 28) and extras["std"].shape == (3, 1, 28, 28)
    assert float(extras["std"].min()) >= 0 and float(extras["std"].max()) > 0
    rgb = x.expand(-1, 3, -1, -1)
    assert torch.allclose(Pipeline(G, card, task="vae").run(rgb).image, det, atol=1e-5)
    with pytest.raises(V.VAEInputError, match="28x28"):
        Pipeline(G, card, task="vae").run(torch.rand(1, 1, 32, 28)).image
    with pytest.raises(ValueError, match="samples >= 2"):
        Pipeline(G, card, task="vae").run(x, **_opts(samples=1, uncertainty=True)).image


def test_pipeline_conditional_labels() -> None:
    G, card = _model(conditional=True)
    x = torch.rand(2, 1, 28, 28)
    by_name = Pipeline(G, card, task="vae").run(x, **_opts(label="Bar")).image
    by_index = Pipeline(G, card, task="vae").run(x, **_opts(label="1")).image
    assert torch.equal(by_name, by_index)
    inferred = infer_labels(G, x)
    auto = Pipeline(G, card, task="vae").run(x, **_opts()).image
    assert torch.allclose(auto, G(x, inferred, sample=False)["recon"])
    with pytest.raises(V.VAEInputError, match="not a class"):
        Pipeline(G, card, task="vae").run(x, **_opts(label="shoe")).image


def test_demo_panels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from restore.data import IDX_ROOT_ENV

    monkeypatch.setenv(IDX_ROOT_ENV, str(tmp_path / "no-idx-here"))
    G, card = _model(conditional=True)
    panels = Pipeline(G, card, task="vae").demo(torch.rand(1, 3, 40, 40), 0)
    assert [p[0] for p in panels] == ["square", "bar"] and panels[0][1].shape[-1] == 112
    G, card = _model()
    card["data"] = "/nonexistent"
    panels = Pipeline(G, card, task="vae").demo(torch.rand(1, 3, 40, 40), 0)
    assert [p[0] for p in panels] == ["input-photo", "restored", "std", "target"]
    assert all(p[1].dim() == 4 and p[1].shape[-1] == 112 for p in panels)


# --------------------------------------------------------------------------- CLI dispatch


def test_cli_denoise_dispatches_on_card_task(tmp_path: Path) -> None:
    from restore import cli, io
    from restore import weights as W

    G, card = _model()
    W.save(tmp_path / "w" / "tiny-vae", G, card)
    inp = tmp_path / "in"
    x, _ = _shapes(2, 5)
    for i in range(2):
        io.write_image(inp / f"img{i}.png", torch.from_numpy(x[i]).float().div(255)[None])
    io.write_image(inp / "big.png", torch.rand(1, 40, 40))
    out = tmp_path / "out"
    stem = str(tmp_path / "w" / "tiny-vae")
    code = cli.main(["denoise", str(inp), str(out), "--weights", stem, "--samples", "4", "--uncertainty",
                     "--device", "cpu"])
    assert code == 1  # big.png is refused (not 28x28); the others are restored
    for i in range(2):
        assert io.read_image(out / f"img{i}.png").image.shape == (1, 28, 28)
        std = io.read_image(out / f"img{i}.std.png")
        assert std.bit_depth == 16 and std.image.shape == (1, 28, 28)
    assert not (out / "big.png").exists()

    out2 = tmp_path / "out2"
    assert cli.main(["denoise", str(inp / "img0.png"), str(out2 / "a.png"), "--weights", stem, "--device", "cpu"]) == 0
    det = io.read_image(out2 / "a.png").image
    expected = Pipeline(G, card, task="vae").run(io.read_image(inp / "img0.png").image[None]).image[0]
    assert torch.allclose(det, expected, atol=1 / 255 + 1e-6)
    assert not (out2 / "a.std.png").exists()

    # a VAE card cannot serve `restore colorize` (the vae module lists only "denoise")
    assert cli.main(["colorize", str(inp), str(tmp_path / "o3"), "--weights", stem]) == 2


# --------------------------------------------------------------------------- eval/vae_metrics.py


@pytest.mark.parametrize("conditional", [False, True])
def test_vae_metrics_on_tiny_split(idx_dir: Path, tmp_path: Path, conditional: bool) -> None:
    import sys

    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from eval import vae_metrics
    from restore import weights as W

    G, card = _model(conditional)
    if conditional:
        card["corruption"] = "gaussian:sigma=0"
    W.save(tmp_path / "tiny", G, card)
    m = vae_metrics.measure(str(tmp_path / "tiny"), data=str(idx_dir), per_class=4)
    assert m["test_images"] == 32 and m["knn_train_images"] == 64
    assert math.isfinite(m["psnr"]) and 0 <= m["ssim"] <= 1 and 0 <= m["knn5_accuracy"] <= 1
    if conditional:  # identity corruption: no noisy baseline; samples scored by the pixel k-NN
        assert "noisy_psnr" not in m and 0 <= m["sample_pixel_knn5_accuracy"] <= 1
    else:
        assert m["noisy_psnr"] < 12 and m["psnr_gain"] == pytest.approx(m["psnr"] - m["noisy_psnr"])
        assert 0 <= m["knn5_accuracy_clean_input"] <= 1
