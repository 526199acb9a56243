"""restore.engine on CPU with the tiny GAN task of tests/test_engine_tinytask.py.

Covers: bitwise-exact resume (shuffled loader, D noise, random label smoothing,
mid-epoch), EMA / schedule / annealing formulas, the NaN guard, the collapse
watch and rollback, checkpoint keep-last-K and truncated fallback, config
precedence, AMP on CPU, export, TensorBoard tags (EventAccumulator and a real
tensorboard server), 2-process gloo DDP and SIGTERM.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from restore import losses
from restore.corrupt import RandomStreams
from restore.engine import checkpoint as ckpt
from restore.engine.cli import build_parser, main, resolve_config
from restore.engine.config import ConfigError, TrainConfig, apply_dict
from restore.engine.ema import EMA, effective_decay
from restore.engine.schedule import ScheduleError, anneal, continued, cyclical, lr_multiplier
from restore.engine.task import StepContext
from restore.engine.trainer import ResumableSampler, Trainer, TrainingDiverged, resolve_device
from restore.engine.watch import CollapseWatch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_engine_tinytask import TinyGAN  # noqa: E402

TINY_SCRIPT = Path(__file__).resolve().parent / "test_engine_tinytask.py"
REPO = Path(__file__).resolve().parent.parent


def make_trainer(out: Path, **over) -> Trainer:
    cfg = TrainConfig()
    apply_dict(cfg, TinyGAN.defaults(), "TinyGAN.defaults()")
    apply_dict(cfg, {"data": "synthetic", "out": str(out), **over}, "test")
    cfg.validate()
    task = TinyGAN(cfg.task)
    return Trainer(task, cfg, *task.build_datasets(cfg.data))


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"{k}.{n}": p.detach().clone() for k, m in trainer.models.items() for n, p in m.named_parameters()}
    out.update({f"ema.{n}": p.detach().clone() for n, p in trainer.ema.module.named_parameters()})
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


# ---------------------------------------------------------------------------- resume
def test_resume_is_bitwise_exact(tmp_path: Path) -> None:
    """2N steps == N steps + resume + N steps, across an epoch boundary (6 batches/epoch)."""
    full = make_trainer(tmp_path / "full", steps=8)
    full.fit()
    first = make_trainer(tmp_path / "split", steps=4)
    first.fit()
    assert first.batch_in_epoch == 4 and first.epoch == 0  # stopped mid-epoch
    second = make_trainer(tmp_path / "split", steps=8)
    second.fit(resume=True)
    assert second.step == 8 and second.epoch == 1 and second.batch_in_epoch == 2
    a, b = params(full), params(second)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    for name in ("G", "D"):
        assert full.optimizers[name].param_groups[0]["lr"] == second.optimizers[name].param_groups[0]["lr"]
    # the run really trained, with the G step schedule (x0.5 every 3 steps): 1e-2 * 0.5**2 at step 8
    assert second.optimizers["G"].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25)
    assert not torch.equal(a["G.conv1.weight"], TinyGAN().build_models()["G"].conv1.weight)
    # validation (EMA generator, fixed corruption seed) agrees too
    assert full.summary()["val/psnr"] == pytest.approx(second.summary()["val/psnr"])


def test_resume_with_a_longer_run_continues_the_cosine(tmp_path: Path) -> None:
    """Extending a finished cosine run keeps its low LR (no warm restart); 'redraw' restores the old behaviour."""
    cos = {"optim": {"G": {"lr": 1e-2, "schedule": "cosine", "min_lr_factor": 0.1}}}
    first = make_trainer(tmp_path / "run", steps=4, **cos)
    first.fit()
    assert first.optimizers["G"].param_groups[0]["lr"] == pytest.approx(1e-3)  # cosine ended at x0.1
    longer = make_trainer(tmp_path / "run", steps=8, **cos)
    longer.fit(resume=True)
    assert longer.step == 8
    assert longer.optimizers["G"].param_groups[0]["lr"] == pytest.approx(1e-3)
    redraw = make_trainer(tmp_path / "run2", steps=4, **cos)
    redraw.fit()
    again = make_trainer(tmp_path / "run2", steps=8, resume_schedule="redraw", **cos)
    again.fit(resume=True)
    # the old behaviour: the curve for 8 steps, whose value at step 8 is its end, but which
    # went back up to x0.55 at step 4 on the way
    assert again.schedulers["G"].lr_lambdas[0](4) == pytest.approx(0.55)
    assert longer.schedulers["G"].lr_lambdas[0](4) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="resume_schedule"):
        make_trainer(tmp_path / "bad", steps=4, resume_schedule="restart")


def test_resume_applies_a_changed_learning_rate_and_betas(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Optimiser state carries its own lr/betas; a resume with new values in the config must train with them."""
    cos = {"lr": 1e-2, "schedule": "cosine", "min_lr_factor": 0.1}
    make_trainer(tmp_path / "run", steps=4, optim={"G": cos}).fit()
    with caplog.at_level("INFO", logger="restore.engine"):
        again = make_trainer(tmp_path / "run", steps=8, resume_schedule="redraw",
                             optim={"G": {**cos, "lr": 1e-3, "betas": [0.8, 0.99]}})
        again.resume()
    assert any("optim.G.lr" in r.getMessage() and "using the config" in r.getMessage() for r in caplog.records)
    g = again.optimizers["G"].param_groups[0]
    assert g["initial_lr"] == pytest.approx(1e-3) and g["betas"] == (0.8, 0.99)
    f = again.schedulers["G"].lr_lambdas[0]
    assert g["lr"] == pytest.approx(1e-3 * f(4))  # already on the new curve before the first step
    again.fit(resume=True)  # reloads the same checkpoint: applying the config twice changes nothing
    assert again.step == 8
    assert again.optimizers["G"].param_groups[0]["lr"] == pytest.approx(1e-3 * f(8)) == pytest.approx(1e-4)


def test_an_extended_run_interrupted_again_keeps_its_continued_curve(tmp_path: Path) -> None:
    cos = {"optim": {"G": {"lr": 1e-2, "schedule": "cosine", "min_lr_factor": 0.1}}}
    make_trainer(tmp_path / "run", steps=4, **cos).fit()
    make_trainer(tmp_path / "run", steps=8, ckpt_every=2, keep_last=5, **cos).fit(resume=True)
    (tmp_path / "run" / "checkpoints" / "step_00000008.pt").unlink()  # as if stopped at step 6
    again = make_trainer(tmp_path / "run", steps=8, **cos)
    again.resume()
    assert again.step == 6 and again.lr_segments == [(0, 4), (4, 8)]
    # still the continued curve (x0.1 from step 4 on), not the plain 8-step cosine (x0.55 at step 4)
    assert again.schedulers["G"].lr_lambdas[0](4) == pytest.approx(0.1)
    assert again.schedulers["G"].lr_lambdas[0](7) == pytest.approx(0.1)


def test_continuing_a_schedule_that_reached_zero_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cos = {"optim": {"G": {"lr": 1e-2, "schedule": "cosine", "min_lr_factor": 0.0}}}
    make_trainer(tmp_path / "run", steps=4, **cos).fit()
    with caplog.at_level("WARNING", logger="restore.engine"):
        make_trainer(tmp_path / "run", steps=6, **cos).fit(resume=True)
    assert any("resume_schedule=redraw" in r.getMessage() for r in caplog.records)


def test_resume_with_fewer_steps_than_done_is_refused_before_config_yaml(tmp_path: Path) -> None:
    """A resume to a length below the checkpoint's step trained nothing and rewrote config.yaml with it."""
    make_trainer(tmp_path / "run", steps=4).fit()
    before = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"run is at step 4; --steps 2 must be >= 4"):
        make_trainer(tmp_path / "run", steps=2).fit(resume=True)
    assert (tmp_path / "run" / "config.yaml").read_text() == before
    same = make_trainer(tmp_path / "run", steps=4)  # the same length is a legal no-op
    same.fit(resume=True)
    assert same.step == 4


def _record_indices(trainer: Trainer) -> list[int]:
    """The training-set indices ``trainer`` trains on, in order, from now on."""
    seen: list[int] = []
    original = trainer.task.prepare_batch

    def recording(batch: dict, ctx: StepContext) -> dict:
        if ctx.training:
            seen.extend(batch["index"].tolist())
        return original(batch, ctx)

    trainer.task.prepare_batch = recording  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("old_checkpoint", [False, True])
def test_resume_with_another_batch_size_continues_the_epoch(tmp_path: Path, old_checkpoint: bool) -> None:
    """Skipping batch_in_epoch x the *new* batch size re-trained or skipped samples; the checkpoint now
    records the samples consumed (older checkpoints: batches x the batch size they were written with)."""
    first = make_trainer(tmp_path / "run", steps=2, batch_size=4, val_every=0, image_every=0)
    first.fit()  # 8 of the 24 samples of epoch 0
    if old_checkpoint:
        path = ckpt.checkpoint_path(tmp_path / "run", 2)
        state = ckpt.load(path)
        del state["samples_in_epoch"]
        ckpt.save_atomic(state, path)
    sampler = ResumableSampler(first.loader.dataset, 1, 0, 0, True)
    sampler.set_epoch(0)
    order = list(sampler)
    second = make_trainer(tmp_path / "run", steps=10, batch_size=2, val_every=0, image_every=0)
    seen = _record_indices(second)
    second.fit(resume=True)
    assert seen == order[8:]  # the rest of epoch 0, each sample once
    assert second.epoch == 1 and second.samples_in_epoch == 0  # and the epoch is complete


def test_continued_schedule_formula() -> None:
    before = lr_multiplier("cosine", 1000, min_factor=0.1)
    f = continued(before, "cosine", 500, 2000, 0.1)
    assert f(499) == before(499) and f(500) == pytest.approx(before(500)) == pytest.approx(0.55)
    assert f(2000) == pytest.approx(0.1) and f(1250) == pytest.approx(0.1 + 0.45 * 0.5)  # half-way: mid value
    assert all(f(s) >= f(s + 1) - 1e-12 for s in range(500, 2000))  # no jump back up
    # nothing to continue: constant / step schedules, a resume inside the warm-up, a linear decay not begun
    assert continued(before, "step", 500, 2000, 0.1) is None
    assert continued(lr_multiplier("cosine", 1000, warmup_steps=100), "cosine", 50, 2000, 0.0, warmup_steps=100) is None
    lin = lr_multiplier("linear", 1000, decay_start=500)
    assert continued(lin, "linear", 400, 2000, 0.0, decay_start=500) is None
    g = continued(lin, "linear", 750, 2000, 0.0, decay_start=500)
    assert g(750) == pytest.approx(0.5) and g(2000) == pytest.approx(0.0) and g(1375) == pytest.approx(0.25)
    # shortening works too: it still ends at the end value, at the new last step
    h = continued(before, "cosine", 500, 600, 0.1)
    assert h(600) == pytest.approx(0.1)


# ---------------------------------------------------------------------------- formulas
def test_ema_formula_with_warmup_and_buffers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.99, warmup=True)
    expected = [p.detach().clone() for p in model.parameters()]
    for n in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(4, 3))  # moves BN running stats
        d = ema.update(model)
        assert d == pytest.approx(min(0.99, (1 + n) / (10 + n)))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
    for e, p in zip(expected, ema.module.parameters()):
        torch.testing.assert_close(p, e, rtol=1e-6, atol=1e-7)
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)
    assert effective_decay(0.999, 10_000) == 0.999
    assert effective_decay(0.5, 0, warmup=False) == 0.5


def test_lr_schedules_and_annealing_formulas() -> None:
    f = lr_multiplier("step", 100, step_size=30, gamma=0.1)  # "/10 every 30 (epochs, in steps)"
    assert [f(s) for s in (0, 29, 30, 59, 60)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    f = lr_multiplier("cosine", 110, warmup_steps=10, min_factor=0.0)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    f = lr_multiplier("linear", 100, decay_start=50)
    assert f(49) == 1.0 and f(75) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert lr_multiplier("constant", 0)(12345) == 1.0
    # noise / beta annealing
    assert anneal("linear", 0.1, 0.0, 100, 25) == pytest.approx(0.075)
    assert anneal("cosine", 0.1, 0.0, 100, 50) == pytest.approx(0.05)
    assert anneal("cosine", 0.1, 0.0, 100, 25) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert anneal("linear", 0.1, 0.0, 100, 500) == 0.0
    assert anneal("linear", 0.1, 0.0, 0, 500) == 0.1  # no annealing
    assert cyclical(0.0, 1.0, period=100, ramp=0.5, step=125) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="step_size"):
        lr_multiplier("step", 10, step_size=0)


def test_instance_noise_is_annealed_and_reaches_d_inputs(tmp_path: Path) -> None:
    tr = make_trainer(tmp_path, d_noise_std=0.2, d_noise_anneal_steps=10, d_noise_anneal="linear")
    assert [tr.d_noise_std(s) for s in (0, 5, 10, 20)] == pytest.approx([0.2, 0.1, 0.0, 0.0])
    ctx = StepContext(step=5, epoch=0, device=torch.device("cpu"), streams=RandomStreams(0), d_noise_std=tr.d_noise_std(5))
    x = torch.zeros(64, 1, 32, 32)
    assert ctx.d_noise(x).std().item() == pytest.approx(0.1, rel=0.03)
    ctx.training = False
    assert torch.equal(ctx.d_noise(x), x)  # never at validation


def test_label_smoothing_targets() -> None:
    pred = torch.zeros(2, 1, 4, 4)
    fixed = losses.AdversarialLoss("vanilla", smoothing=0.9)
    assert torch.all(fixed.targets(pred, True, for_discriminator=True) == 0.9)
    assert torch.all(fixed.targets(pred, True, for_discriminator=False) == 1.0)  # G never smoothed
    assert torch.all(fixed.targets(pred, False, for_discriminator=True) == 0.0)  # one-sided
    rand = losses.AdversarialLoss("vanilla", smoothing=(0.7, 1.0))
    t = rand.targets(torch.zeros(4096), True, True, generator=torch.Generator().manual_seed(0))
    assert 0.7 <= t.min() and t.max() <= 1.0 and t.mean().item() == pytest.approx(0.85, abs=0.01)
    # BCE with logits 0 against 0.9: -(0.9 log .5 + 0.1 log .5) = log 2
    assert fixed(pred, True).item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------------------- NaN guard
def test_nan_step_is_skipped_and_counted(tmp_path: Path) -> None:
    tr = make_trainer(tmp_path, steps=5, task={"nan_steps": [2]})
    tr.fit()
    assert tr.bad_steps == 1 and tr.step == 5
    assert all(torch.isfinite(p).all() for p in params(tr).values())
    # the skipped step did not move G: replaying steps 0..2 by hand shows no change at step 2
    tr2 = make_trainer(tmp_path / "replay", steps=5, task={"nan_steps": [2]})
    it = iter(tr2.loader)
    tr2.sampler.set_epoch(0)
    tr2.train_step(next(it)), tr2.train_step(next(it))
    before = {n: p.clone() for n, p in tr2.models["G"].named_parameters()}
    host = tr2.train_step(next(it))
    assert math.isnan(host["loss/G/l1"]) and tr2.bad_steps == 1
    for n, p in tr2.models["G"].named_parameters():
        assert torch.equal(p, before[n])


def test_too_many_bad_steps_stop_with_clear_message(tmp_path: Path) -> None:
    tr = make_trainer(tmp_path, steps=20, max_bad_steps=3, task={"nan_steps": list(range(20))})
    with pytest.raises(TrainingDiverged, match=r"3 consecutive steps had non-finite .*loss/G/l1=nan"):
        tr.fit()
    assert tr.bad_steps == 3


# ---------------------------------------------------------------------------- collapse watch
def test_collapse_watch_on_synthetic_sequences() -> None:
    w = CollapseWatch(window=50, d_loss_threshold=0.05)
    # healthy: D loss ~0.6, G adversarial loss flat with noise -> never fires
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(300, generator=g).tolist()
    assert not any(w.update(0.6, 0.2, 1.0 + 0.01 * n) for n in noise)
    # saturated D but G flat -> no collapse
    w.reset()
    assert not any(w.update(0.01, 0.99, 2.0 + 0.01 * n) for n in noise[:100])
    # saturated D and G climbing -> fires once the window is full
    w.reset()
    fired_at = None
    for i in range(60):
        if w.update(0.01, None, 2.0 + 0.05 * i + 0.01 * noise[i]):
            fired_at, state = i, w.last
            break
    assert fired_at == 49 and state.fired and state.g_slope == pytest.approx(0.05, rel=0.1)
    assert not w.update(0.01, None, 5.0)  # the window restarts after firing
    # D saturated by the gap criterion alone
    w.reset()
    assert any(w.update(0.5, 0.95, 2.0 + 0.05 * i) for i in range(50))


def test_collapse_rollback_restores_healthy_checkpoint_and_lowers_d_lr(tmp_path: Path) -> None:
    tr = make_trainer(tmp_path, steps=4, collapse_rollback=True, collapse_d_lr_factor=0.5)
    tr.fit()  # checkpoints at 2 and 4
    state = ckpt.load(ckpt.checkpoint_path(tmp_path, 4))
    state["trainer"]["healthy"] = False  # pretend D had already collapsed at step 4
    ckpt.save_atomic(state, ckpt.checkpoint_path(tmp_path, 4))
    d_lr = tr.optimizers["D"].param_groups[0]["lr"]
    path = tr.rollback("test collapse")
    assert path is not None and path.name == "step_00000002.pt" and tr.step == 2
    assert tr.optimizers["D"].param_groups[0]["lr"] == pytest.approx(d_lr * 0.5)
    assert tr.schedulers["D"].base_lrs[0] == pytest.approx(1e-2 * 0.5)
    assert tr.rollbacks == 1 and tr.d_lr_scale == 0.5


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_keep_last_k_and_truncated_newest_fallback(tmp_path: Path) -> None:
    for step in range(1, 6):
        ckpt.save_atomic({"step": step, "models": {}, "x": torch.arange(1000)}, ckpt.checkpoint_path(tmp_path, step))
        ckpt.prune(tmp_path, 3)
    names = [p.name for _, p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step_00000003.pt", "step_00000004.pt", "step_00000005.pt"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files left
    newest = ckpt.checkpoint_path(tmp_path, 5)
    newest.write_bytes(newest.read_bytes()[:200])  # truncated
    with pytest.warns(RuntimeWarning, match="step_00000005.pt"):
        path, state = ckpt.find_latest(tmp_path)
    assert path.name == "step_00000004.pt" and state["step"] == 4
    with pytest.raises(ckpt.CheckpointError, match="no step_"):
        ckpt.find_latest(tmp_path / "empty")


def test_rng_state_roundtrips_through_weights_only(tmp_path: Path) -> None:
    import random

    import numpy as np

    streams = RandomStreams(3)
    ckpt.save_atomic({"step": 0, "models": {}, "rng": [ckpt.rng_state(streams)]}, tmp_path / "r.pt")

    def draws() -> tuple[float, ...]:
        return (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=streams.generator).item(),
                torch.rand(1, generator=streams.masks).item())

    expect = draws()
    ckpt.set_rng_state(ckpt.load(tmp_path / "r.pt")["rng"][0], streams)
    assert draws() == expect


# ---------------------------------------------------------------------------- config / CLI
def test_config_precedence_and_errors(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("batch_size: 2\nsteps: 7\noptim:\n  G:\n    lr: 1.0e-3\ntask:\n  noise: 0.3\n")
    argv = ["--data", "d", "--out", str(tmp_path / "r"), "--config", str(y), "--batch-size", "3",
            "--set", "optim.D.betas=[0.0, 0.99]", "--set", "task.noise=0.4"]
    cfg = resolve_config(TinyGAN, build_parser(TinyGAN).parse_args(argv))
    assert cfg.batch_size == 3 and cfg.steps == 7 and cfg.optim["G"].lr == 1e-3  # CLI > YAML > task defaults
    assert cfg.optim["D"].betas == (0.0, 0.99) and cfg.task["noise"] == 0.4
    assert cfg.optim["G"].schedule == "step" and cfg.d_noise_std == 0.1  # from TinyGAN.defaults()
    assert cfg.init_weights == ""
    assert resolve_config(TinyGAN, build_parser(TinyGAN).parse_args(argv + ["--init-weights", "w"])).init_weights == "w"
    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg  # YAML round trip
    y.write_text("bach_size: 2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'bach_size'"):
        resolve_config(TinyGAN, build_parser(TinyGAN).parse_args(argv))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) nois"):
        resolve_config(TinyGAN, build_parser(TinyGAN).parse_args(["--data", "d", "--out", "o", "--set", "task.nois=1"]))
    with pytest.raises(ConfigError, match="amp"):
        TrainConfig.from_dict({"amp": "fp8"})
    # a YAML without `out:` does not send the run to a shared default folder
    y.write_text("batch_size: 2\n")
    parse = build_parser(TinyGAN).parse_args
    with pytest.raises(ConfigError, match="--out is required"):
        resolve_config(TinyGAN, parse(["--data", "d", "--config", str(y)]))
    assert resolve_config(TinyGAN, parse(["--data", "d", "--config", str(y), "--set", "out=r2"])).out == "r2"
    y.write_text("out: r3\n")
    assert resolve_config(TinyGAN, parse(["--data", "d", "--config", str(y)])).out == "r3"


def test_optim_keys_must_name_a_model(tmp_path: Path) -> None:
    """``--set optim.g.lr=...`` (a typo of G) was accepted, trained with the old LR and added optim.g."""
    parse = build_parser(TinyGAN).parse_args
    with pytest.raises(ConfigError, match=r"optim\.g.*G, D"):
        resolve_config(TinyGAN, parse(["--data", "d", "--out", "o", "--set", "optim.g.lr=1e-2"]))
    with pytest.raises(ConfigError, match="optim.E"):
        TrainConfig.from_dict({"optim": {"E": {"lr": 1e-3}}})
    # the standard D stays legal for a task that builds no D (an L1-only run)
    tr = make_trainer(tmp_path, task={"gan": False}, optim={"D": {"lr": 1e-3}})
    assert set(tr.optimizers) == {"G"}


BAD_VALUES = [
    ({"optim": {"G": {"schedule": "cosin"}}}, "optim.G.schedule"),
    ({"optim": {"G": {"warmup": -1}}}, "optim.G.warmup"),
    ({"optim": {"D": {"schedule": "step", "step_size": 0}}}, "optim.D.step_size"),
    ({"optim": {"G": {"step_size": -3}}}, "optim.G.step_size"),
    ({"optim": {"G": {"betas": [0.5, 1.0]}}}, "optim.G.betas"),
    ({"optim": {"G": {"betas": [-0.1, 0.9]}}}, "optim.G.betas"),
    ({"optim": {"G": {"eps": 0.0}}}, "optim.G.eps"),
    ({"optim": {"G": {"weight_decay": -1e-4}}}, "optim.G.weight_decay"),
    ({"optim": {"G": {"lr": float("nan")}}}, "optim.G.lr"),
    ({"optim": {"G": {"lr": float("inf")}}}, "optim.G.lr"),
    ({"optim": {"G": {"lr": 0.0}}}, "optim.G.lr"),
    ({"optim": {"G": {"gamma": 0.0}}}, "optim.G.gamma"),
    ({"optim": {"G": {"min_lr_factor": 1.5}}}, "optim.G.min_lr_factor"),
    ({"optim": {"G": {"min_lr_factor": -0.1}}}, "optim.G.min_lr_factor"),
    ({"optim": {"G": {"decay_start": -2}}}, "optim.G.decay_start"),
    ({"optim": {"G": {"grad_clip": float("nan")}}}, "optim.G.grad_clip"),
    ({"log_every": -1}, "log_every"),
    ({"ckpt_every": -1}, "ckpt_every"),
    ({"image_every": -1}, "image_every"),
    ({"val_every": -1}, "val_every"),
    ({"num_workers": -1}, "num_workers"),
    ({"val_batch_size": -1}, "val_batch_size"),
    ({"collapse_window": 0}, "collapse_window"),
    ({"collapse_window": 3}, "collapse_window"),  # the watch needs >= 4 steps
    ({"device": "mps"}, "device: 'mps' is not supported"),
    ({"d_noise_std": float("nan")}, "d_noise_std"),
]


@pytest.mark.parametrize("values, key", BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_bad_trainer_values_are_config_errors(values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TrainConfig.from_dict(values)


def test_value_checks_keep_the_legal_edges(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 0 = off (or: the default) stays legal
    TrainConfig.from_dict({"log_every": 0, "ckpt_every": 0, "image_every": 0, "val_every": 0, "num_workers": 0,
                           "val_batch_size": 0, "optim": {"G": {"betas": [0.0, 0.0], "min_lr_factor": 1.0}}})
    # schedule errors are config errors (exit 2), and the trainer names the model's key
    assert issubclass(ScheduleError, ConfigError)
    with pytest.raises(ConfigError, match="unknown kind"):
        lr_multiplier("cosin", 10)
    with pytest.raises(ConfigError, match=r"optim\.G\.decay_start"):
        make_trainer(tmp_path / "a", steps=4, optim={"G": {"schedule": "linear", "decay_start": 4}})
    with pytest.raises(ConfigError, match="mps"):
        resolve_device("mps")
    # a warm-up as long as the run is legal but worth a warning
    with caplog.at_level("WARNING", logger="restore.engine"):
        make_trainer(tmp_path / "b", steps=4, optim={"G": {"warmup": 4}})
    assert any("optim.G.warmup" in r.getMessage() for r in caplog.records)


class _BadModelTask(TinyGAN):
    def build_models(self) -> dict[str, nn.Module]:
        from restore.models.blocks import ModelConfigError

        raise ModelConfigError("UNet: depth must be a positive integer, got 0")


def test_model_config_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(_BadModelTask, ["--data", "synthetic", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: task model options: UNet: depth must be a positive integer, got 0"
    code = main(TinyGAN, ["--data", "synthetic", "--out", str(tmp_path / "r"), "--set", "optim.G.schedule=cosin"])
    assert code == 2 and capsys.readouterr().err.strip().startswith("error: config optim.G.schedule")


def test_yaml_reads_exponents_without_a_dot_as_floats(tmp_path: Path) -> None:
    """PyYAML (YAML 1.1) read 5e-3 as the string '5e-3': task options arrived as strings."""
    y = tmp_path / "c.yaml"
    y.write_text("task:\n  noise: 5e-3\n  adv_weight: 1.0e38\noptim:\n  G:\n    lr: 1e-4\n")
    parse = build_parser(TinyGAN).parse_args
    cfg = resolve_config(TinyGAN, parse(["--data", "d", "--out", "o", "--config", str(y)]))
    assert cfg.task["noise"] == 5e-3 and isinstance(cfg.task["noise"], float)
    assert cfg.task["adv_weight"] == 1e38 and cfg.optim["G"].lr == 1e-4
    cfg = resolve_config(TinyGAN, parse(["--data", "d", "--out", "o", "--set", "task.noise=5e-3",
                                         "--set", "task.marker=abc", "--set", "steps=1e3"]))
    assert cfg.task["noise"] == 5e-3 and isinstance(cfg.task["noise"], float)
    assert cfg.task["marker"] == "abc" and cfg.steps == 1000


def test_resume_of_a_missing_run_folder_says_so(tmp_path: Path) -> None:
    parse = build_parser(TinyGAN).parse_args
    with pytest.raises(ConfigError, match="no such run folder"):
        resolve_config(TinyGAN, parse(["--resume", str(tmp_path / "nope")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"config\.yaml does not exist"):
        resolve_config(TinyGAN, parse(["--resume", str(tmp_path / "empty")]))


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path: Path) -> None:
    """Starting over in a used run folder would interleave two runs' checkpoints (pruning keeps the old,
    higher steps) and logs: it is refused, the old checkpoints stay, and --resume still works."""
    make_trainer(tmp_path / "r", steps=3, ckpt_every=3).fit()
    before = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match="--resume"):
        make_trainer(tmp_path / "r", steps=2).fit()
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == before
    resumed = make_trainer(tmp_path / "r", steps=4)
    resumed.fit(resume=True)
    assert resumed.step == 4


def test_nested_task_options_deep_merge(tmp_path: Path) -> None:
    """``--set task.unet.X`` changes one UNet argument; the YAML's other ``task.unet`` keys stay.

    The bug this guards: a one-level merge replaced the YAML's whole
    ``task.unet`` by ``{base_channels: 16}``, so a depth-2 recipe trained at
    the task's default depth 4 without a word.
    """
    from restore.tasks.denoise import DenoiseTask

    y = tmp_path / "fmnist.yaml"
    y.write_text("task:\n  dataset: fashion-mnist\n  lambda_adv: 0.0\n"
                 "  unet: {base_channels: 48, depth: 2, convs_per_level: 2}\n")
    parser = build_parser(DenoiseTask)

    def resolve(*sets: str) -> TrainConfig:
        argv = ["--data", "d", "--out", str(tmp_path / "r"), "--config", str(y)]
        for s in sets:
            argv += ["--set", s]
        return resolve_config(DenoiseTask, parser.parse_args(argv))

    cfg = resolve("task.unet.base_channels=16")
    unet = cfg.task["unet"]
    assert unet["base_channels"] == 16 and unet["depth"] == 2 and unet["convs_per_level"] == 2  # --set > YAML
    assert unet["upsample"] == DenoiseTask.defaults()["task"]["unet"]["upsample"]  # untouched: task default
    assert cfg.task["patchgan"] == DenoiseTask.defaults()["task"]["patchgan"]  # sibling mapping intact
    G = DenoiseTask(cfg.task).build_models()["G"]
    assert G.config["depth"] == 2 and G.config["base_channels"] == 16
    assert resolve().task["unet"]["base_channels"] == 48  # without --set: the YAML's value (default 64)
    # unknown keys are still refused: at the top level by the config, nested ones by the task's model builder
    with pytest.raises(ConfigError, match=r"unknown option\(s\) unett"):
        resolve("task.unett.depth=3")
    with pytest.raises(ConfigError, match="bogus"):
        DenoiseTask(resolve("task.unet.bogus=1").task).build_models()
    # a scalar where a mapping belongs replaces it, and the task says what it expected
    with pytest.raises(ConfigError, match="task.unet: expected a mapping"):
        DenoiseTask(resolve("task.unet=3").task)


# ---------------------------------------------------------------------------- AMP / export
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cpu_trains(tmp_path: Path, amp: str) -> None:
    tr = make_trainer(tmp_path, steps=2, amp=amp, channels_last=True, val_every=0, ckpt_every=0)
    before = tr.models["G"].conv1.weight.detach().clone()
    tr.fit()
    assert tr.bad_steps == 0 and not torch.equal(before, tr.models["G"].conv1.weight)
    assert tr.scalers["G"].is_enabled() == (amp == "fp16")


def _trained_and_exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Trainer, Path]:
    """A 3-step tiny run exported to tmp_path/w/tiny (its architecture registered for restore.weights)."""
    from restore import models

    monkeypatch.setitem(models.ARCHITECTURES, "tiny-g", "test_engine_tinytask:TinyG")
    tr = make_trainer(tmp_path / "run", steps=3)
    tr.fit()
    tr.export(tmp_path / "w" / "tiny")
    return tr, tmp_path / "w" / "tiny"


def test_export_writes_ema_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from restore import weights

    tr, stem = _trained_and_exported(tmp_path, monkeypatch)
    model, card = weights.load(stem)
    for (n, p), (_, e) in zip(model.named_parameters(), tr.ema.module.named_parameters()):
        assert torch.equal(p, e), n
    assert not torch.equal(model.conv1.weight, tr.models["G"].conv1.weight)  # EMA, not raw G
    assert card["steps"] == 3 and card["task"] == "tiny" and card["arch"] == "tiny-g"
    assert "val_psnr" in card["metrics"] and card["hardware"]


def test_init_weights_start_a_fresh_run_from_exported_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--init-weights: G and its EMA start from a card's weights; the card of the new run says so, resumes too."""
    from restore import weights

    _, stem = _trained_and_exported(tmp_path, monkeypatch)
    sha = weights.verify(stem)["sha256"]
    source = str(stem) + ".safetensors"
    loaded, _ = weights.load(source)

    fresh = make_trainer(tmp_path / "b", steps=2, init_weights=source)
    at_first_step: list[dict[str, torch.Tensor]] = []
    step = fresh.train_step

    def recording(raw):
        if not at_first_step:
            at_first_step.append(params(fresh))
        return step(raw)

    fresh.train_step = recording  # type: ignore[method-assign]
    fresh.fit()
    for n, p in loaded.named_parameters():  # G and the EMA started from the file, not the random init
        assert torch.equal(at_first_step[0][f"G.{n}"], p) and torch.equal(at_first_step[0][f"ema.{n}"], p), n
    assert fresh.training_settings()["init_from"] == {"weights": source, "sha256": sha}

    resumed = make_trainer(tmp_path / "b", steps=3, init_weights=source)
    resumed.fit(resume=True)
    assert resumed.init_from == {"weights": source, "sha256": sha}  # carried by the checkpoint
    resumed.export(tmp_path / "w" / "tuned")
    assert weights.verify(tmp_path / "w" / "tuned")["training"]["init_from"]["sha256"] == sha

    wide = tmp_path / "w" / "wide"
    wtr = make_trainer(tmp_path / "c", steps=1)
    wtr.models["G"] = type(wtr.models["G"])(width=6)
    wtr.ema = None
    wtr.export(wide)
    with pytest.raises(ConfigError, match="init_weights.*width.*6"):
        make_trainer(tmp_path / "d", steps=1, init_weights=str(wide) + ".safetensors").fit()
    with pytest.raises(ConfigError, match="init_weights.*no-such"):
        make_trainer(tmp_path / "e", steps=1, init_weights="no-such-weights").fit()


def test_resumes_keep_the_command_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resume replaced run_info.argv and the card's train_command, so the command with --data/--set was lost."""
    from eval.vae import default_run
    from restore import models

    monkeypatch.setitem(models.ARCHITECTURES, "tiny-g", "test_engine_tinytask:TinyG")
    run = tmp_path / "run"
    first = ["train/tiny.py", "--data", "synthetic", "--out", str(run), "--steps", "2", "--set", "task.noise=0.2"]
    monkeypatch.setattr(sys, "argv", first)
    make_trainer(run, steps=2).fit()
    monkeypatch.setattr(sys, "argv", ["train/tiny.py", "--resume", str(run), "--steps", "4"])
    tr = make_trainer(run, steps=4)
    tr.fit(resume=True)
    info = yaml.safe_load((run / "config.yaml").read_text())["run_info"]
    assert [c["argv"] for c in info["commands"]] == [first, sys.argv]
    assert [c["start_step"] for c in info["commands"]] == [0, 2] and info["argv"] == sys.argv  # argv: the latest
    tr.export(tmp_path / "w" / "tiny")
    card = json.loads((tmp_path / "w" / "tiny.json").read_text())
    assert [c["command"] for c in card["train_commands"]] == [" ".join(first), " ".join(sys.argv)]
    assert [c["start_step"] for c in card["train_commands"]] == [0, 2]
    assert card["train_command"] == " && ".join(c["command"] for c in card["train_commands"])
    assert default_run(card) == run  # the card's reader still finds the run folder
    t = card["training"]
    assert t["lr_segments"] == [[0, 2], [2, 4]] and t["seed"] == 0 and t["amp"] == "fp32"
    assert t["ema"] == {"enabled": True, "decay": 0.9, "warmup": True}
    assert t["optim"]["G"]["schedule"] == "step" and t["optim"]["G"]["lr"] == 1e-2 and set(t["optim"]) == {"G", "D"}
    # a config.yaml written before the history existed: its argv becomes the first entry
    doc = yaml.safe_load((run / "config.yaml").read_text())
    del doc["run_info"]["commands"]
    (run / "config.yaml").write_text(yaml.safe_dump(doc))
    make_trainer(run, steps=4).fit(resume=True)
    info = yaml.safe_load((run / "config.yaml").read_text())["run_info"]
    assert [c["start_step"] for c in info["commands"]] == [None, 4]


# ---------------------------------------------------------------------------- TensorBoard
EXPECTED_SCALARS = {
    "loss/G/adv", "loss/G/l1", "loss/G/total", "loss/D/real", "loss/D/fake", "loss/D/total",
    "lr/G", "lr/D", "D/real_mean", "D/fake_mean", "D/noise_std", "grad_norm/G", "grad_norm/D",
    "perf/images_per_s", "val/psnr", "val/ssim", "train/bad_steps", "watch/collapse",
}


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tbrun")
    make_trainer(out, steps=4).fit()
    return out


def test_tensorboard_event_files_hold_the_tags(tb_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tb_run / "tb"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    assert EXPECTED_SCALARS <= set(tags["scalars"]), EXPECTED_SCALARS - set(tags["scalars"])
    assert {"images/input", "images/output", "images/target"} <= set(tags["images"])
    from tensorboard.plugins.hparams import plugin_data_pb2

    hp = ea.PluginTagToContent("hparams")
    exp = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in exp.metric_infos} >= {"final/psnr", "final/ssim", "final/bad_steps"}
    start = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optim.G.lr"].number_value == pytest.approx(1e-2) and start.hparams["amp"].string_value == "fp32"
    assert ea.Scalars("final/psnr")[0].value == pytest.approx(ea.Scalars("val/psnr")[-1].value)
    assert [e.step for e in ea.Scalars("loss/G/total")] == [1, 2, 3, 4]
    assert [e.value for e in ea.Scalars("D/noise_std")] == pytest.approx([0.1 * (1 - s / 6) for s in range(4)])
    config = yaml.safe_load((tb_run / "config.yaml").read_text())
    assert config["run_info"]["torch"] == str(torch.__version__) and "argv" in config["run_info"]
    assert TrainConfig.from_dict(config).steps == 4  # config.yaml is itself a usable --config


def test_tensorboard_logs_each_step_once(tb_run: Path) -> None:
    """The last step's scalars were written twice (periodic logging, then again at the end of training);
    EventAccumulator hides the duplicate, so count the raw events."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    written: dict[str, list[int]] = {}
    for path in sorted((tb_run / "tb").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                written.setdefault(v.tag, []).append(event.step)
    for tag in ("loss/G/total", "lr/G", "lr/D", "perf/images_per_s", "train/bad_steps", "watch/collapse"):
        assert written[tag] == [1, 2, 3, 4], tag


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_server_serves_scalar_tags(tb_run: Path) -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(tb_run / "tb"), "--host", "127.0.0.1",
           "--port", str(port), "--load_fast=false", "--reload_interval", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    try:
        deadline, tags, err = time.monotonic() + 60, {}, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=2) as r:
                    tags = json.loads(r.read())
                if tags.get(".", {}).get("loss/G/total") is not None:
                    break
            except OSError as e:
                err = e
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert "." in tags, f"no run served (last error: {err}); got {tags}"
        assert EXPECTED_SCALARS <= set(tags["."])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- DDP / signals
@pytest.mark.slow
def test_ddp_two_process_gloo_keeps_ranks_identical(tmp_path: Path) -> None:
    env = {**_env(), "TINY_DUMP_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
           str(TINY_SCRIPT), "--data", "synthetic", "--out", str(tmp_path / "run"), "--steps", "3",
           "--set", "val_every=0", "--set", "image_every=0"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    seen0, seen1 = set(r0.pop("seen").tolist()), set(r1.pop("seen").tolist())
    assert not seen0 & seen1 and len(seen0) == len(seen1) == 12  # DistributedSampler: disjoint shards
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between ranks"
    init = TinyGAN().build_models()
    assert not torch.equal(r0["G.conv1.weight"], init["G"].conv1.weight)
    state = ckpt.find_latest(tmp_path / "run")[1]  # rank 0 wrote the checkpoint, with both ranks' RNG
    assert state["step"] == 3 and len(state["rng"]) == 2 and state["world_size"] == 2
    assert torch.equal(state["models"]["G"]["conv1.weight"], r0["G.conv1.weight"])


@pytest.mark.slow
def test_ddp_sigint_on_one_rank_stops_every_rank_with_130(tmp_path: Path) -> None:
    """Only rank 0 gets the SIGINT here: rank 1 printed "SIGTERM received: checkpoint written to None" and
    exited 143. Every rank must report the signal that stopped the run, and only rank 0 a checkpoint."""
    marker, out, port = tmp_path / "started", tmp_path / "run", _free_port()
    cmd = [sys.executable, str(TINY_SCRIPT), "--data", "synthetic", "--out", str(out), "--steps", "100000",
           "--set", "task.sleep=0.05", "--set", f"task.marker={marker}", "--set", "ckpt_every=0",
           "--set", "val_every=0", "--set", "image_every=0", "--set", "log_every=10"]
    procs = []
    try:
        for rank in (0, 1):
            env = {**_env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.1)
        assert marker.exists(), "training never started"
        procs[0].send_signal(signal.SIGINT)
        errs = [p.communicate(timeout=90)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [130, 130], errs[1][-2000:]
    assert "interrupted: SIGINT received: checkpoint written to" in errs[0]
    assert "interrupted: SIGINT received\n" in errs[1] and "None" not in errs[1] and "SIGTERM" not in errs[1]
    assert ckpt.find_latest(out)[1]["world_size"] == 2


def test_sigterm_writes_checkpoint_that_resumes(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    out = tmp_path / "run"
    cmd = [sys.executable, str(TINY_SCRIPT), "--data", "synthetic", "--out", str(out), "--steps", "100000",
           "--set", "task.sleep=0.05", "--set", f"task.marker={marker}", "--set", "ckpt_every=0",
           "--set", "val_every=0", "--set", "image_every=0", "--set", "log_every=10"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "training never started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM received: checkpoint written" in err
    path, state = ckpt.find_latest(out)
    assert state["step"] >= 2
    tr = make_trainer(out, steps=state["step"] + 2)
    tr.fit(resume=True)
    assert tr.step == state["step"] + 2
