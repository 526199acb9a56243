"""The one trainer: every task trains through `Trainer` (docs/design.md, sections 1 and 7).

The loop only calls the task's hooks (`restore.engine.task`); optimisers, AMP,
EMA, LR schedules, the NaN guard, the collapse watch, validation, checkpoints,
TensorBoard and DDP live here, so a fix reaches all four tasks at once.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import random
import shlex
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from restore import weights
from restore.corrupt import RandomStreams
from restore.engine import checkpoint as ckpt
from restore.engine import distributed as dist_utils
from restore.engine.config import DEVICE_RE, ConfigError, TrainConfig, load_yaml, plain
from restore.engine.ema import EMA
from restore.engine.logging import RunLogger, run_info
from restore.engine.schedule import ScheduleError, anneal, build_scheduler, continued, lr_multiplier
from restore.engine.task import EpochContext, StepContext, Task, check_terms
from restore.engine.watch import CollapseWatch
from restore.io.atomic import atomic_output
from restore.metrics import psnr, ssim
from restore.provenance import device_name

log = logging.getLogger("restore.engine")


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with non-finite losses or gradients."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written. ``exit_code`` is 128 + signal number.

    ``checkpoint`` is None on the ranks other than 0: only rank 0 writes, so they say nothing about it.
    """

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        if checkpoint is None:
            super().__init__(f"{name} received")
        else:
            super().__init__(f"{name} received: checkpoint written to {checkpoint}; resume with --resume")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU + CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local GPU when there is one, else CPU; ``cuda`` under torchrun -> cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not DEVICE_RE.match(name):  # e.g. mps / xpu: torch.device accepts them, the trainer does not support them
        raise ConfigError(f"config device: {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"config device: {name!r} requested but CUDA is not available (use --device cpu)")
        if name == "cuda":
            return torch.device("cuda", local_rank)
        count = torch.cuda.device_count()
        if int(name.split(":")[1]) >= count:
            raise ConfigError(f"config device: {name!r} does not exist ({count} CUDA device(s): cuda:0 to cuda:{count - 1})")
    return torch.device(name)


def _dataset_tree(dataset: Dataset) -> Iterator[Dataset]:
    """``dataset`` and every dataset it wraps (ConcatDataset parts, a Subset's or a wrapper's ``base``)."""
    yield dataset
    children = getattr(dataset, "datasets", None)
    if children is None:
        inner = getattr(dataset, "dataset", None) if isinstance(dataset, torch.utils.data.Subset) else None
        inner = inner if inner is not None else getattr(dataset, "base", None)
        children = [inner] if isinstance(inner, Dataset) else []
    for child in children:
        yield from _dataset_tree(child)


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose next epoch can start after ``skip`` of this rank's samples.

    The permutation depends only on (seed, epoch), so skipping the batches a
    checkpoint has already consumed continues the epoch at the same batch.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, drop_last: bool) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def _requires_grad(model: nn.Module, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


def _to_channels_last(batch: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.contiguous(memory_format=torch.channels_last)
        if isinstance(v, Tensor) and v.ndim == 4 and v.is_floating_point()
        else v
        for k, v in batch.items()
    }


class Trainer:
    """Train ``task`` with ``cfg``; ``fit()`` runs (or resumes) the loop, ``export()`` ships the EMA generator."""

    def __init__(
        self, task: Task, cfg: TrainConfig, train_set: Dataset, val_set: Dataset | None = None
    ) -> None:
        cfg.validate()
        self.task = task
        self.cfg = cfg
        self.run_dir = Path(cfg.out)
        dev_type = "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist = dist_utils.init(dev_type)
        self.is_main = self.dist.is_main
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        seed_everything(cfg.seed + self.dist.rank)

        # ---- models -------------------------------------------------------------
        models = task.build_models()
        if "G" not in models or not set(models) <= {"G", "D"}:
            raise ValueError(f"task {task.name!r}: build_models must return 'G' and optionally 'D', got {sorted(models)}")
        self.has_d = "D" in models
        mf = torch.channels_last if cfg.channels_last else torch.preserve_format
        self.models: dict[str, nn.Module] = {k: m.to(self.device, memory_format=mf).train() for k, m in models.items()}
        self.ema = EMA(self.models["G"], cfg.ema_decay, cfg.ema_warmup) if (cfg.ema and self.is_main) else None

        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for name, m in self.models.items():
            if name not in cfg.optim:
                raise ConfigError(f"config optim.{name}: missing (task {task.name!r} builds model {name!r})")
            o = cfg.optim[name]
            cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
            self.optimizers[name] = cls(m.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)

        # forward modules: compiled and/or DDP-wrapped views sharing the same parameters
        fwd = {k: (torch.compile(m) if cfg.compile else m) for k, m in self.models.items()}
        self.d_plain = fwd.get("D")  # D as the G step sees it: no DDP, frozen
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            fwd = {k: DDP(m, device_ids=ids) for k, m in fwd.items()}
        self.fwd = fwd

        # ---- data ---------------------------------------------------------------
        self.train_parts = list(_dataset_tree(train_set))
        for index, part in enumerate(self.train_parts):
            # per-item seeding (seed, epoch, index): crops do not depend on which worker draws them, so a
            # mid-epoch resume with num_workers > 0 continues exactly (worker RNGs restart on resume)
            if hasattr(part, "set_epoch") and getattr(part, "seed", 0) is None:
                part.seed = cfg.seed * 1_000_003 + index
        self.sampler = ResumableSampler(train_set, self.dist.world_size, self.dist.rank, cfg.seed, cfg.drop_last)
        self.loader_gen = torch.Generator()
        pin = self.device.type == "cuda"
        self.loader = DataLoader(
            train_set, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=cfg.num_workers,
            drop_last=cfg.drop_last, pin_memory=pin, generator=self.loader_gen,
        )
        per_rank = self.sampler.num_samples
        self.steps_per_epoch = per_rank // cfg.batch_size if cfg.drop_last else math.ceil(per_rank / cfg.batch_size)
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"config batch_size: {cfg.batch_size} is larger than this rank's share of the training set ({per_rank} images)"
            )
        self.val_loader = None
        if val_set is not None and self.is_main:
            self.val_loader = DataLoader(
                val_set, batch_size=cfg.val_batch_size or cfg.batch_size, shuffle=False,
                num_workers=cfg.num_workers, pin_memory=pin, generator=torch.Generator(),  # never the global RNG
            )
        self.total_steps = cfg.steps if cfg.steps > 0 else cfg.epochs * self.steps_per_epoch
        if self.total_steps <= 0:
            raise ConfigError("config steps/epochs: set steps > 0 or epochs > 0")

        # ---- schedules, AMP -----------------------------------------------------
        self.schedulers = {
            name: build_scheduler(opt, self._lr_factor(name, self.total_steps)[0])
            for name, opt in self.optimizers.items()
        }
        # [(0, length), (resume step, new length), ...]: the run lengths its LR curve was built for
        self.lr_segments: list[tuple[int, int]] = [(0, self.total_steps)]
        for name in self.optimizers:
            o = cfg.optim[name]
            warmup = o.warmup * (self.steps_per_epoch if o.schedule_unit == "epochs" else 1)
            if self.is_main and warmup >= self.total_steps:  # legal, but the LR never reaches optim.<name>.lr
                log.warning("optim.%s.warmup: %d steps of warm-up >= the run's %d steps: the LR never reaches "
                            "its full value %.3g", name, warmup, self.total_steps, o.lr)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        if self.amp_dtype is not None and not torch.amp.autocast_mode.is_autocast_available(self.device.type):
            raise ConfigError(f"config amp: autocast is not available on {self.device.type}")
        self.scalers = {
            name: torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16") for name in self.models
        }
        # the task's random streams (corruption noise, masks, instance noise): this rank's, checkpointed
        self.streams_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.streams = RandomStreams(cfg.seed * 1000 + 17 + self.dist.rank, self.streams_device)

        # ---- run state ----------------------------------------------------------
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        # this rank's samples already drawn from the current epoch: where a resumed epoch continues
        # (counting batches instead would mis-skip after a resume with another --batch-size)
        self.samples_in_epoch = 0
        self.bad_steps = 0
        self.consecutive_bad = 0
        self.rollbacks = 0
        self.d_lr_scale = 1.0
        self.init_from: dict[str, Any] | None = None  # the weights G started from (init_weights), for the card
        self.last_val: dict[str, float] = {}
        self.best_val: dict[str, float] = {}
        self.images_per_s = 0.0
        self.watch = (
            CollapseWatch(
                cfg.collapse_window, cfg.collapse_d_loss, cfg.collapse_gap, cfg.collapse_fraction,
                min_rise=cfg.collapse_min_rise,
            )
            if (cfg.collapse_watch and self.has_d and task.adversarial_term)
            else None
        )
        self.logger = RunLogger(self.run_dir / "tb", enabled=self.is_main)
        self._stop_signal: int | None = None
        self._logged_step = -1  # step of the last scalar flush (the end of training must not log it twice)
        # every invocation of the run (argv, start time, start step), from config.yaml; set by fit()
        self.commands: list[dict[str, Any]] = []
        self._acc: dict[str, list[float]] = {}
        self._perf_t = time.perf_counter()
        self._perf_images = 0

    # ------------------------------------------------------------------ helpers
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def d_noise_std(self, step: int) -> float:
        """Instance-noise std at ``step``: d_noise_std annealed to 0 over d_noise_anneal_steps."""
        return anneal(self.cfg.d_noise_anneal, self.cfg.d_noise_std, 0.0, self.cfg.d_noise_anneal_steps, step)

    def _context(self, training: bool = True, streams: RandomStreams | None = None) -> StepContext:
        return StepContext(
            step=self.step, epoch=self.epoch, device=self.device, streams=streams or self.streams,
            training=training, d_noise_std=self.d_noise_std(self.step) if training else 0.0, config=self.cfg,
        )

    def _epoch_context(self) -> EpochContext:
        return EpochContext(
            epoch=self.epoch, step=self.step, run_dir=self.run_dir, device=self.device,
            G=self.ema.module if self.ema is not None else self.models["G"], is_main=self.is_main,
            logger=self.logger,
        )

    def _prepare(self, raw: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        batch = self.task.prepare_batch(raw, ctx)
        return _to_channels_last(batch) if self.cfg.channels_last else batch

    def _update(self, name: str, loss: Tensor) -> tuple[bool, Tensor]:
        """Backward + guarded optimiser step. Returns (applied, grad_norm)."""
        opt, scaler, o = self.optimizers[name], self.scalers[name], self.cfg.optim[name]
        params = [p for p in self.models[name].parameters() if p.requires_grad]
        opt.zero_grad(set_to_none=True)
        # always run backward (DDP expects it after a forward); a NaN loss just gives NaN grads
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        grads = [p.grad for p in params if p.grad is not None]
        if o.grad_clip > 0:
            gn = torch.nn.utils.clip_grad_norm_(params, o.grad_clip, error_if_nonfinite=False)
        else:
            gn = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        finite_loss = bool(torch.isfinite(loss.detach()))
        # fp16 gradient overflow is the scaler's business (it skips and lowers the scale)
        finite_grad = scaler.is_enabled() or bool(torch.isfinite(gn))
        bad = dist_utils.any_true(not (finite_loss and finite_grad), self.device)
        if bad:
            opt.zero_grad(set_to_none=True)
            if scaler.is_enabled():
                scaler.update()  # found_inf was recorded by unscale_: the scale shrinks
            return False, gn.detach()
        scaler.step(opt)
        scaler.update()
        return True, gn.detach()

    # ------------------------------------------------------------------ one step
    def train_step(self, raw: dict[str, Any]) -> dict[str, float]:
        """One step: D update(s) then G update on one batch; returns host-side scalars."""
        task, cfg = self.task, self.cfg
        ctx = self._context()
        batch = self._prepare(raw, ctx)
        stats: dict[str, Tensor | float] = {}
        with self._autocast():
            out = task.forward(self.fwd["G"], batch, ctx)
        ok = True
        if self.has_d:
            detached = {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in out.items()}
            for _ in range(cfg.d_steps):
                with self._autocast():
                    d_terms = task.discriminator_losses(batch, detached, self.fwd["D"], ctx)
                check_terms(task, "D", d_terms)
                d_loss = sum(d_terms[k].float() for k in task.objective("D"))
                d_ok, d_gn = self._update("D", d_loss)
                ok &= d_ok
            stats.update({f"loss/D/{k}": v.detach().float() for k, v in d_terms.items()})
            stats["loss/D/total"] = d_loss.detach()
            stats["grad_norm/D"] = d_gn
            _requires_grad(self.models["D"], False)
        try:
            with self._autocast():
                g_terms = task.generator_losses(batch, out, self.d_plain, ctx)
            check_terms(task, "G", g_terms)
            g_loss = sum(g_terms[k].float() for k in task.objective("G"))
            g_ok, g_gn = self._update("G", g_loss)
        finally:
            if self.has_d:
                _requires_grad(self.models["D"], True)
        ok &= g_ok
        stats.update({f"loss/G/{k}": v.detach().float() for k, v in g_terms.items()})
        stats["loss/G/total"] = g_loss.detach()
        stats["grad_norm/G"] = g_gn
        if g_ok and self.ema is not None:
            self.ema.update(self.models["G"])
        with warnings.catch_warnings():  # skipped optimiser steps make LambdaLR warn about call order
            warnings.simplefilter("ignore", UserWarning)
            for s in self.schedulers.values():
                s.step()

        keys = list(stats)
        values = torch.stack([torch.as_tensor(stats[k], device=self.device).float().reshape(()) for k in keys]).tolist()
        host = dict(zip(keys, values))
        host.update(ctx.scalars)
        if self.has_d:
            host["D/noise_std"] = ctx.d_noise_std
        if not ok:
            self.bad_steps += 1
            self.consecutive_bad += 1
            bad_terms = ", ".join(f"{k}={v:.4g}" for k, v in host.items() if not math.isfinite(v)) or "gradients"
            log.warning("step %d: non-finite %s; update skipped (%d bad so far)", self.step + 1, bad_terms, self.bad_steps)
            if self.consecutive_bad >= cfg.max_bad_steps:
                raise TrainingDiverged(
                    f"training stopped at step {self.step + 1}: {self.consecutive_bad} consecutive steps had non-finite "
                    f"losses or gradients (last: {bad_terms}); the last checkpoint in {ckpt.checkpoint_dir(self.run_dir)} "
                    "is intact. Lower the learning rate, enable grad_clip, or use --amp bf16/fp32 (max_bad_steps="
                    f"{cfg.max_bad_steps})"
                )
        else:
            self.consecutive_bad = 0
        self.step += 1
        self._last_batch, self._last_out = batch, out
        return host

    # ------------------------------------------------------------------ monitoring
    def _accumulate(self, host: dict[str, float]) -> None:
        for k, v in host.items():
            if math.isfinite(v):
                self._acc.setdefault(k, []).append(v)

    def _log_scalars(self) -> None:
        now = time.perf_counter()
        if self._perf_images:
            self.images_per_s = self._perf_images / max(now - self._perf_t, 1e-9)
        self._perf_t, self._perf_images = now, 0
        self._logged_step = self.step
        if not self.is_main:
            self._acc.clear()
            return
        for k, vs in self._acc.items():
            self.logger.scalar(k, sum(vs) / len(vs), self.step)
        self._acc.clear()
        for name, opt in self.optimizers.items():
            self.logger.scalar(f"lr/{name}", opt.param_groups[0]["lr"], self.step)
            if self.scalers[name].is_enabled():
                self.logger.scalar(f"amp/scale_{name}", self.scalers[name].get_scale(), self.step)
        self.logger.scalar("perf/images_per_s", self.images_per_s, self.step)
        self.logger.scalar("train/bad_steps", self.bad_steps, self.step)
        self.logger.scalar("train/epoch", self.epoch, self.step)
        if self.watch is not None:
            self.logger.scalar("watch/d_saturated_fraction", self.watch.last.saturated_fraction, self.step)
            self.logger.scalar("watch/collapse", 1.0 if self.watch.last.fired else 0.0, self.step)

    def _watch(self, host: dict[str, float]) -> None:
        if self.watch is None:
            return
        term = f"loss/G/{self.task.adversarial_term}"
        if term not in host or "loss/D/total" not in host:
            return
        gap = None
        if "D/real_mean" in host and "D/fake_mean" in host:
            gap = host["D/real_mean"] - host["D/fake_mean"]
        if not self.watch.update(host["loss/D/total"], gap, host[term]):
            return
        msg = (
            f"step {self.step}: discriminator collapse suspected (D saturated on "
            f"{self.watch.last.saturated_fraction:.0%} of the last {self.cfg.collapse_window} steps while "
            f"G's {self.task.adversarial_term} loss kept rising, slope {self.watch.last.g_slope:.3g}/step)"
        )
        self.logger.scalar("watch/collapse", 1.0, self.step)
        if self.cfg.collapse_rollback and self.rollbacks < self.cfg.collapse_max_rollbacks:
            self.rollback(msg)
        else:
            log.warning("%s", msg)
            if self.is_main:
                print(f"WARNING: {msg}", file=sys.stderr)

    def rollback(self, reason: str) -> Path | None:
        """Reload the last healthy checkpoint and multiply D's learning rate by collapse_d_lr_factor."""
        try:
            path, state = ckpt.find_latest(self.run_dir, healthy_only=True)
        except ckpt.CheckpointError as e:
            log.warning("%s; no rollback possible (%s)", reason, e)
            return None
        rollbacks = self.rollbacks + 1
        self.load_state(state)
        self.rollbacks = rollbacks
        f = self.cfg.collapse_d_lr_factor
        self.d_lr_scale *= f
        sched = self.schedulers["D"]
        sched.base_lrs = [lr * f for lr in sched.base_lrs]
        for g in self.optimizers["D"].param_groups:
            g["lr"] *= f
        if self.watch is not None:
            self.watch.reset()
        msg = f"{reason}; rolled back to {path.name} (step {self.step}), D lr x{f} (total x{self.d_lr_scale:.3g})"
        log.warning("%s", msg)
        if self.is_main:
            print(f"WARNING: {msg}", file=sys.stderr)
        self.logger.scalar("watch/rollback", float(self.rollbacks), self.step)
        return path

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR/SSIM of the EMA generator on the held-out loader (rank 0; fixed corruption seed)."""
        if self.val_loader is None:
            return {}

        G = self.ema.module if self.ema is not None else self.models["G"]
        was_training = G.training
        G.eval()
        ctx = self._context(training=False, streams=RandomStreams(self.cfg.seed + 99_991, self.streams_device))
        psnr_sum = ssim_sum = 0.0
        n = 0
        for i, raw in enumerate(self.val_loader):
            if self.cfg.val_batches and i >= self.cfg.val_batches:
                break
            batch = self._prepare(raw, ctx)
            with self._autocast():
                output, target = self.task.validation_step(G, batch, ctx)
            output, target = output.float().contiguous(), target.float().contiguous()
            psnr_sum += float(psnr(output, target).sum())
            ssim_sum += float(ssim(output, target).sum())
            n += output.shape[0]
        G.train(was_training)
        if n == 0:
            return {}
        result = {"val/psnr": psnr_sum / n, "val/ssim": ssim_sum / n}
        self.last_val = result
        if result["val/psnr"] > self.best_val.get("val/psnr", -math.inf):
            self.best_val = dict(result)
        self.logger.scalars(result, self.step)
        return result

    # ------------------------------------------------------------------ checkpoints
    def _lr_factor(self, name: str, total_steps: int) -> tuple[Callable[[int], float], int, int]:
        """(LR factor, warm-up steps, decay start) of optimiser ``name`` for a run of ``total_steps``."""
        o = self.cfg.optim[name]
        unit = self.steps_per_epoch if o.schedule_unit == "epochs" else 1
        decay_start = o.decay_start * unit if o.decay_start >= 0 else total_steps // 2
        if o.schedule == "linear" and not 0 <= decay_start < total_steps:
            raise ConfigError(f"config optim.{name}.decay_start: {o.decay_start} {o.schedule_unit} is not inside the "
                              f"run ({total_steps} steps = {total_steps / self.steps_per_epoch:.4g} epochs); use a "
                              "smaller value, or -1 for half of training")
        try:
            factor = lr_multiplier(
                o.schedule, total_steps, warmup_steps=o.warmup * unit, step_size=o.step_size * unit,
                gamma=o.gamma, decay_start=decay_start, min_factor=o.min_lr_factor,
            )
        except ScheduleError as e:  # name the model's key: the schedule only knows its own arguments
            raise ConfigError(f"config optim.{name}: {e}") from None
        return factor, o.warmup * unit, decay_start

    def _chained_factor(self, name: str, segments: list[tuple[int, int]]) -> Callable[[int], float]:
        """The LR factor of a run whose length changed at resumes: ``segments`` = [(0, first length),
        (resume step, new length), ...]; each change continues the decay (see ``schedule.continued``)."""
        o = self.cfg.optim[name]
        factor, warmup, decay_start = self._lr_factor(name, segments[0][1])
        for step, total in segments[1:]:
            nxt = continued(factor, o.schedule, step, total, o.min_lr_factor, warmup, decay_start)
            factor, warmup, decay_start = (nxt, warmup, decay_start) if nxt is not None else self._lr_factor(name, total)
        return factor

    def _apply_optim_config(self, d_lr_scale: float) -> None:
        """After loading optimiser state: the config's lr, betas, eps and weight decay win over the checkpoint's.

        ``load_state_dict`` restores the hyper-parameters saved with the state, so without this a resume
        with ``--set optim.G.lr=...`` would write the new value into config.yaml and silently train with
        the old one. D keeps the LR cut of earlier collapse rollbacks (``d_lr_scale``).
        """
        for name, opt in self.optimizers.items():
            o = self.cfg.optim[name]
            lr = o.lr * (d_lr_scale if name == "D" else 1.0)
            sched = self.schedulers[name]
            if self.is_main and any(abs(b - lr) > 1e-12 * max(lr, 1e-30) for b in sched.base_lrs):
                log.info("optim.%s.lr: the checkpoint ran at %.3g, the config now says %.3g: using the config",
                         name, sched.base_lrs[0] / (d_lr_scale if name == "D" else 1.0), o.lr)
            sched.base_lrs = [lr for _ in sched.base_lrs]
            for g in opt.param_groups:
                g["initial_lr"] = lr
                g["betas"] = tuple(o.betas)
                g["eps"] = o.eps
                g["weight_decay"] = o.weight_decay

    def _continue_schedules(self, state: dict[str, Any]) -> None:
        """After loading a checkpoint: rebuild the LR curve the run has followed (see ``TrainConfig.resume_schedule``)."""
        old = state.get("config") or {}
        old_total = int(old.get("steps") or 0) or int(old.get("epochs") or 0) * self.steps_per_epoch
        saved = state.get("trainer", {}).get("lr_segments")
        segments = [(int(a), int(b)) for a, b in saved] if saved else [(0, old_total or self.total_steps)]
        step = int(state["step"])
        if self.cfg.resume_schedule == "redraw":
            segments = [(0, self.total_steps)]
        elif segments[-1][1] != self.total_steps:
            segments.append((step, self.total_steps))
        self.lr_segments = segments
        if len(segments) == 1 and segments[0][1] == self.total_steps:
            return  # the curve built in __init__
        for name, sched in self.schedulers.items():
            o = self.cfg.optim[name]
            factor = self._chained_factor(name, segments)
            sched.lr_lambdas[0] = factor
            if not self.is_main or segments[-1][0] != step or o.schedule not in ("cosine", "linear"):
                continue
            log.info("%s: run length %d -> %d steps: %s LR goes from x%.3g at step %d to x%.3g at step %d "
                     "(resume_schedule: redraw re-draws the curve instead)", name, segments[-2][1], self.total_steps,
                     o.schedule, factor(step), step, factor(self.total_steps), self.total_steps)
            if factor(step) < 1e-3:
                log.warning("%s: the run had decayed to LR x%.2g, and continuing keeps it there, so the extra "
                            "steps will barely train; --set resume_schedule=redraw restarts the %s curve for "
                            "the new length", name, factor(step), o.schedule)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain containers (weights_only-loadable)."""
        rngs = dist_utils.all_gather_objects(ckpt.rng_state(self.streams))
        return {
            "format": 1,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "samples_in_epoch": self.samples_in_epoch,
            "world_size": self.dist.world_size,
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "rng": rngs,
            "trainer": {
                "bad_steps": self.bad_steps,
                "rollbacks": self.rollbacks,
                "d_lr_scale": self.d_lr_scale,
                "healthy": self.watch.healthy if self.watch is not None else True,
                "last_val": dict(self.last_val),
                "best_val": dict(self.best_val),
                "lr_segments": [list(seg) for seg in self.lr_segments],
                "init_from": self.init_from,
            },
            "config": self.cfg.to_dict(),
        }

    def save_checkpoint(self) -> Path | None:
        """Rank 0 writes ``step_XXXXXXXX.pt`` atomically and prunes; all ranks meet at barriers."""
        dist_utils.barrier()
        state = self.state_dict()  # collective (RNG gather): every rank calls it
        path = None
        if self.is_main:
            path = ckpt.save_atomic(state, ckpt.checkpoint_path(self.run_dir, self.step))
            ckpt.prune(self.run_dir, self.cfg.keep_last)
        dist_utils.barrier()
        return path

    def load_state(self, state: dict[str, Any]) -> None:
        missing = set(self.models) - set(state["models"])
        if missing:
            raise ckpt.CheckpointError(f"checkpoint has no weights for model(s) {sorted(missing)}")
        for k, m in self.models.items():
            m.load_state_dict(state["models"][k])
        if self.ema is not None:
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])
            else:
                warnings.warn("checkpoint has no EMA weights: the EMA restarts from the current G", RuntimeWarning)
                self.ema = EMA(self.models["G"], self.cfg.ema_decay, self.cfg.ema_warmup)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self._apply_optim_config(float(state.get("trainer", {}).get("d_lr_scale", 1.0)))
        self._continue_schedules(state)
        for s in self.schedulers.values():  # the current LR on the (possibly new) curve, before the next step
            for g, base, factor in zip(s.optimizer.param_groups, s.base_lrs, s.lr_lambdas):
                g["lr"] = base * factor(s.last_epoch)
        for k, s in self.scalers.items():
            if k in state.get("scalers", {}) and state["scalers"][k]:
                s.load_state_dict(state["scalers"][k])
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            ckpt.set_rng_state(rngs[self.dist.rank], self.streams)
        else:
            warnings.warn(
                f"checkpoint was written by {len(rngs)} process(es), this run has {self.dist.world_size}: "
                "random streams are re-seeded (the run continues, but not bit-exactly)", RuntimeWarning,
            )
            seed_everything(self.cfg.seed + 7919 * state["step"] + self.dist.rank)
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.samples_in_epoch = self._resumed_samples(state)
        t = state.get("trainer", {})
        self.bad_steps = int(t.get("bad_steps", 0))
        self.rollbacks = int(t.get("rollbacks", 0))
        self.d_lr_scale = float(t.get("d_lr_scale", 1.0))
        self.last_val = dict(t.get("last_val", {}))
        self.best_val = dict(t.get("best_val", {}))
        self.init_from = t.get("init_from")
        self.consecutive_bad = 0

    def _resumed_samples(self, state: dict[str, Any]) -> int:
        """This rank's samples of the checkpoint's epoch already trained on (where the epoch continues).

        Checkpoints before ``samples_in_epoch`` existed give batches x the batch size they were written
        with; another world size re-splits the samples all ranks consumed.
        """
        old = state.get("config") or {}
        old_bs = int(old.get("batch_size") or self.cfg.batch_size)
        samples = int(state.get("samples_in_epoch", int(state["batch_in_epoch"]) * old_bs))
        old_world = int(state.get("world_size", self.dist.world_size))
        if old_world != self.dist.world_size:
            samples = samples * old_world // self.dist.world_size
        if self.is_main and old_bs != self.cfg.batch_size and samples:
            log.info("batch size %d -> %d: epoch %d continues after the %d sample(s) per rank already trained on",
                     old_bs, self.cfg.batch_size, int(state["epoch"]), samples)
        return samples

    def init_generator(self, source: str) -> None:
        """Load shipped weights into G and restart its EMA from them (a fresh run only).

        The card's architecture must be the one this run builds: a mismatch is a
        config error naming both, never a partial load.
        """
        try:
            model, card = weights.load(source)
        except weights.WeightsError as e:
            raise ConfigError(f"config init_weights: {e}") from e
        g = self.models["G"]
        try:
            g.load_state_dict(model.state_dict(), strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise ConfigError(
                f"config init_weights: {source!r} holds a {card['arch']!r} generator built with {card['config']}, "
                f"which is not the one this run builds ({first}); set the task's model options to match"
            ) from e
        if self.ema is not None:
            self.ema = EMA(g, self.cfg.ema_decay, self.cfg.ema_warmup)
        self.init_from = {"weights": str(source), "sha256": card.get("sha256")}
        if self.is_main:
            log.info("generator initialised from %s (sha256 %s)", source, str(card.get("sha256"))[:12])

    def resume(self) -> Path:
        """Load the newest loadable checkpoint of the run folder (fallback past truncated files)."""
        path, state = ckpt.find_latest(self.run_dir)
        at = int(state["step"])
        if at > self.total_steps:
            # training would do nothing, and config.yaml would be rewritten with the shorter length
            length = (f"--steps {self.cfg.steps}" if self.cfg.steps > 0
                      else f"--epochs {self.cfg.epochs} ({self.total_steps} steps)")
            raise ConfigError(f"{self.run_dir}: run is at step {at}; {length} must be >= {at}")
        self.load_state(state)
        if self.is_main:
            log.info("resumed from %s (step %d, epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)
        return path

    # ------------------------------------------------------------------ the loop
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum
        # a second Ctrl-C / TERM aborts at once, without a checkpoint
        signal.signal(signum, signal.SIG_DFL)

    def _earlier_commands(self) -> list[dict[str, Any]]:
        """The invocations recorded in the run's config.yaml (a resume appends to them, never replaces them)."""
        try:
            info = load_yaml(self.run_dir / "config.yaml").get("run_info") or {}
        except ConfigError:  # no (readable) config.yaml: the history starts here
            return []
        if not isinstance(info, dict):
            return []
        if isinstance(info.get("commands"), list):
            return [c for c in info["commands"] if isinstance(c, dict) and isinstance(c.get("argv"), list)]
        if isinstance(info.get("argv"), list):  # config.yaml written before the history existed
            return [{"argv": info["argv"], "started": info.get("started"), "start_step": None}]
        return []

    def _write_config(self, resumed: bool) -> None:
        if not self.is_main:
            return

        self.run_dir.mkdir(parents=True, exist_ok=True)
        doc = self.cfg.to_dict()
        info = {**run_info(self.dist.world_size, str(self.device)), "task": self.task.name}
        # argv copied: one list in two places would be written as a YAML anchor and alias
        now = {"argv": list(info["argv"]), "started": info["started"], "start_step": self.step, "steps": self.total_steps}
        self.commands = (self._earlier_commands() if resumed else []) + [now]
        info["commands"] = self.commands  # argv / started above: this invocation's (the latest)
        doc["run_info"] = info
        with atomic_output(self.run_dir / "config.yaml") as tmp:
            Path(tmp).write_text(yaml.safe_dump(doc, sort_keys=False))

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``total_steps``; returns a summary. Raises TrainingInterrupted / TrainingDiverged."""
        existing = [] if resume else ckpt.list_checkpoints(self.run_dir)  # every rank checks: all stop together
        if resume:
            self.resume()
        elif existing:
            # a fresh run here would interleave its checkpoints with the old run's (pruning keeps the
            # highest steps, i.e. the old ones) and append to its TensorBoard logs and history
            raise ConfigError(
                f"{self.run_dir} already holds a run (checkpoints up to step {existing[-1][0]}); continue it "
                f"with --resume {self.run_dir}, or give a new --out"
            )
        elif self.cfg.init_weights:
            self.init_generator(self.cfg.init_weights)
        start_step = self.step
        self._write_config(resumed=resume)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                handlers[s] = signal.signal(s, self._on_signal)
        bar = None
        if self.is_main and self.cfg.progress:
            bar = tqdm(total=self.total_steps, initial=self.step, desc=self.task.name, dynamic_ncols=True, mininterval=1.0)
        images_per_step = self.cfg.batch_size * self.dist.world_size
        self._perf_t, self._perf_images = time.perf_counter(), 0
        try:
            while self.step < self.total_steps:
                self.sampler.set_epoch(self.epoch)
                for part in self.train_parts:
                    if hasattr(part, "set_epoch"):
                        part.set_epoch(self.epoch)
                self.sampler.skip = self.samples_in_epoch
                self.loader_gen.manual_seed(self.cfg.seed * 100_003 + self.epoch)  # worker seeds: f(seed, epoch)
                finished_epoch = True
                batches_left = len(self.loader)  # of this epoch, after the skipped samples
                for raw in self.loader:
                    host = self.train_step(raw)
                    self.batch_in_epoch += 1
                    self.samples_in_epoch += self.cfg.batch_size  # a short last batch ends the epoch anyway
                    batches_left -= 1
                    self._perf_images += images_per_step
                    self._accumulate(host)
                    self._watch(host)
                    self._periodic(host, bar)
                    # every rank learns the signal (only one rank may have received it): the same
                    # message and exit status everywhere
                    shared = dist_utils.max_int(self._stop_signal or 0, self.device)
                    if shared:
                        path = self.save_checkpoint()
                        raise TrainingInterrupted(self._stop_signal or shared, path)
                    if self.step >= self.total_steps:
                        finished_epoch = batches_left == 0
                        break
                if finished_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self.samples_in_epoch = 0
                    self.task.on_epoch_end(self._epoch_context())
                    dist_utils.barrier()
            if self.step > start_step:  # a resume of a finished run trains, logs and saves nothing
                self._finish()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            self.logger.flush()
        return self.summary()

    def _periodic(self, host: dict[str, float], bar: Any) -> None:
        cfg, s = self.cfg, self.step
        if cfg.log_every and s % cfg.log_every == 0:
            self._log_scalars()
        if self.is_main and cfg.image_every and s % cfg.image_every == 0:
            self.logger.images(self.task.visuals(self._last_batch, self._last_out), s)
        if cfg.val_every and s % cfg.val_every == 0 and s < self.total_steps:
            self.validate()
            dist_utils.barrier()
        if cfg.ckpt_every and s % cfg.ckpt_every == 0 and s < self.total_steps:
            self.save_checkpoint()
        if bar is not None:
            post = {"G": f"{host.get('loss/G/total', float('nan')):.4g}"}
            if "loss/D/total" in host:
                post["D"] = f"{host['loss/D/total']:.4g}"
            post["img/s"] = f"{self.images_per_s:.0f}"
            if self.bad_steps:
                post["bad"] = self.bad_steps
            bar.set_postfix(post, refresh=False)
            bar.update(1)

    def _finish(self) -> None:
        if self._logged_step != self.step:  # else _periodic has just logged this step's scalars
            self._log_scalars()
        self.validate()
        dist_utils.barrier()
        self.save_checkpoint()
        if self.is_main:
            metrics = {"final/bad_steps": float(self.bad_steps), "final/images_per_s": self.images_per_s}
            for k, v in self.last_val.items():
                metrics["final/" + k.split("/", 1)[1]] = v
            hp = {k: v for k, v in self.cfg.to_dict().items() if k not in ("data", "out")}
            hp["task_name"] = self.task.name
            hp["world_size"] = self.dist.world_size
            self.logger.hparams(hp, metrics, self.step)
            self.logger.flush()

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.step, "epochs": self.epoch, "bad_steps": self.bad_steps, "rollbacks": self.rollbacks,
            "images_per_s": self.images_per_s, **self.last_val,
        }

    # ------------------------------------------------------------------ export
    def command_history(self) -> dict[str, Any]:
        """Card entries of the commands that trained the run: ``train_commands`` (each invocation, with its
        start time and step) and ``train_command``, all of them joined by ``&&``.

        A resume must not replace the original command: it alone has the ``--data``/``--out``/``--set``
        that define the run, and readers (eval/vae.py's ``default_run``) look for ``--out`` in it. The
        joined form is what the shipped cards record for runs trained in several sessions.
        """
        commands = self.commands or [{"argv": list(sys.argv), "started": None, "start_step": self.step}]
        history = [
            {"command": shlex.join(str(a) for a in c["argv"]), "started": c.get("started"),
             "start_step": c.get("start_step")}
            for c in commands
        ]
        return {"train_command": " && ".join(h["command"] for h in history), "train_commands": history}

    def training_settings(self) -> dict[str, Any]:
        """The trainer settings that define the run (card ``training``): per-model optimiser and schedule, seed,
        EMA, AMP and the LR curve's segments (its length changed at these resumes)."""
        cfg = self.cfg
        return {
            "seed": cfg.seed,
            "amp": cfg.amp,
            "batch_size_per_rank": cfg.batch_size,
            "world_size": self.dist.world_size,
            "ema": {"enabled": self.ema is not None, "decay": cfg.ema_decay, "warmup": cfg.ema_warmup},
            "optim": {name: plain(dataclasses.asdict(cfg.optim[name])) for name in self.optimizers},
            "lr_segments": [list(seg) for seg in self.lr_segments],
            "resume_schedule": cfg.resume_schedule,
            "init_from": self.init_from,
            "d_steps": cfg.d_steps if self.has_d else None,
            "d_lr_scale": self.d_lr_scale,
            "rollbacks": self.rollbacks,
        }

    def hardware(self) -> str:
        return device_name(self.device, self.dist.world_size)

    def export(self, stem: str | os.PathLike) -> Path | None:
        """Write the EMA generator (or G without EMA) via `restore.weights.save`; rank 0 only."""
        if not self.is_main:
            return None

        G = self.ema.module if self.ema is not None else self.models["G"]
        G = copy.deepcopy(G).to("cpu", dtype=torch.float32, memory_format=torch.contiguous_format).eval()
        card: dict[str, Any] = {
            "steps": self.step,
            "epochs": self.epoch,
            "hardware": self.hardware(),
            "data": self.cfg.data,
            "ema_decay": self.cfg.ema_decay if self.ema is not None else None,
            "amp": self.cfg.amp,
            "batch_size": self.cfg.batch_size * self.dist.world_size,
            "torch": torch.__version__,
            "metrics": {k.replace("/", "_"): round(v, 4) for k, v in self.last_val.items()},
        }
        card.update(self.command_history())
        card["training"] = self.training_settings()
        card.update(self.task.model_card())
        return weights.save(stem, G, card)
