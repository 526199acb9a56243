"""The Task interface: everything the trainer must know about one restoration problem.

A task builds its models and says how a batch becomes named loss terms; the
trainer (`restore.engine.trainer`) owns optimisers, AMP, EMA, schedules,
checkpoints, logging and DDP, and never knows which task it trains
(docs/design.md, section 1). Names declared here (pix2pix ``loss_names`` /
``visual_names``) drive logging, so a task lists its terms and images once.

Order of calls in one training step (one batch per step)::

    batch = task.prepare_batch(raw_batch, ctx)          # device + corruption
    out   = task.forward(G, batch, ctx)                 # G's graph kept for the G update
    repeat cfg.d_steps times (only if the task has "D"):
        d_terms = task.discriminator_losses(batch, detached(out), D, ctx)
        -> D update on sum(d_terms[k] for k in task.objective_D)
    g_terms = task.generator_losses(batch, out, D_frozen, ctx)
    -> G update on sum(g_terms[k] for k in task.objective_G)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.data import Dataset

from restore.corrupt import RandomStreams
from restore.engine.logging import RunLogger

LossTerms = dict[str, Tensor]


@dataclass
class StepContext:
    """Services the trainer hands to the task for one step (or one validation pass).

    ``streams`` are the task's random streams (`restore.corrupt.RandomStreams`:
    ``streams.generator`` on ``device`` for corruptions, instance noise, random
    label smoothing; a CPU stream for masks), owned and checkpointed by the
    trainer, so a resumed run draws the same numbers: pass ``ctx.streams`` to a
    corruption, ``ctx.generator`` to anything else that draws. ``d_noise`` adds
    the annealed instance noise to a discriminator input: the task calls it on
    *every* tensor it feeds to D (real and fake, in both D and G losses).
    """

    step: int
    epoch: int
    device: torch.device
    streams: RandomStreams
    training: bool = True
    d_noise_std: float = 0.0
    config: Any = None
    scalars: dict[str, float] = field(default_factory=dict)

    @property
    def generator(self) -> torch.Generator:
        """The device generator of `streams`."""
        return self.streams.generator

    def d_noise(self, x: Tensor) -> Tensor:
        """Instance noise (Sønderby et al. 2016): x + N(0, std^2), std annealed by the trainer."""
        if self.d_noise_std <= 0.0 or not self.training:
            return x
        noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=torch.float32)
        return x + noise.to(x.dtype) * self.d_noise_std

    def log(self, tag: str, value: float | Tensor) -> None:
        """Record a scalar for TensorBoard (e.g. ``"D/real_mean"``, ``"kl/beta"``)."""
        if isinstance(value, Tensor):
            value = float(value.detach().float().mean())
        self.scalars[tag] = float(value)


@dataclass
class EpochContext:
    """What a task may use at the end of an epoch (`Task.on_epoch_end`), built by the trainer.

    The task gets these and nothing else of the trainer, so a task cannot come to
    depend on the trainer's internals (optimisers, checkpoints, DDP wrappers).
    """

    epoch: int  # epochs completed
    step: int
    run_dir: Path
    device: torch.device
    G: nn.Module  # the EMA generator (G itself when the run has no EMA), unwrapped
    is_main: bool  # rank 0: the rank that writes files and logs
    logger: RunLogger  # TensorBoard scalars of rank 0 (a no-op on other ranks)

    def log(self, values: dict[str, float]) -> None:
        """Log scalars at this epoch's last step."""
        self.logger.scalars(values, self.step)


class Task:
    """Base class of the four tasks (and of the tiny test tasks).

    Subclasses set the class attributes and override `build_models`,
    `build_datasets`, `forward` and `generator_losses` (+ `discriminator_losses`
    when they build a ``"D"``).
    """

    #: task name, used in model cards and the run's config.yaml
    name: ClassVar[str] = "task"
    #: every term `generator_losses` returns (logged as ``loss/G/<term>``)
    loss_names_G: ClassVar[tuple[str, ...]] = ()
    #: the subset summed into G's objective; ``None`` means all of them
    objective_G: ClassVar[tuple[str, ...] | None] = None
    #: every term `discriminator_losses` returns (logged as ``loss/D/<term>``)
    loss_names_D: ClassVar[tuple[str, ...]] = ()
    objective_D: ClassVar[tuple[str, ...] | None] = None
    #: G's adversarial term, watched for discriminator collapse (None: no watch)
    adversarial_term: ClassVar[str | None] = None
    #: images logged as grids (``images/<name>``), looked up in ``{**batch, **out}``
    visual_names: ClassVar[tuple[str, ...]] = ("input", "output", "target")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})

    # ---- configuration ------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Task-specific overrides of `TrainConfig` (pix2pix ``modify_commandline_options``).

        A nested dict, e.g. ``{"optim": {"G": {"lr": 2e-4}}, "task": {"l1_weight": 100}}``.
        The ``"task"`` entry lists every task option: a YAML/CLI key not listed
        there is rejected as a typo.
        """
        return {"task": {}}

    # ---- construction -------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        """Return ``{"G": generator}`` or ``{"G": ..., "D": ...}`` (on CPU, fp32)."""
        raise NotImplementedError

    def build_datasets(self, data: str) -> tuple[Dataset, Dataset | None]:
        """Return (train, validation-or-None) datasets read from ``data``."""
        raise NotImplementedError

    # ---- one step -----------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Move the batch to the device and corrupt it there (with ``ctx.generator``).

        The default only moves tensors; tasks that corrupt on the fly override it.
        """
        return {k: (v.to(ctx.device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in batch.items()}

    def forward(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        """Run the generator; must return at least ``"output"`` (+ e.g. ``mu``/``logvar``)."""
        raise NotImplementedError

    def generator_losses(
        self, batch: dict[str, Any], out: dict[str, Tensor], D: nn.Module | None, ctx: StepContext
    ) -> LossTerms:
        """Named, already weighted G loss terms. ``D`` is frozen (no grads) and unwrapped."""
        raise NotImplementedError

    def discriminator_losses(
        self, batch: dict[str, Any], out: dict[str, Tensor], D: nn.Module, ctx: StepContext
    ) -> LossTerms:
        """Named D loss terms; ``out`` is detached. Report ``D/real_mean``/``D/fake_mean`` via ``ctx.log``."""
        raise NotImplementedError(f"task {self.name!r} builds a discriminator but has no discriminator_losses")

    # ---- monitoring, validation, export -------------------------------------------------
    def visuals(self, batch: dict[str, Any], out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Images to log, NCHW in [0, 1] with 1 or 3 channels (override to convert LAB etc.)."""
        merged = {**batch, **out}
        return {name: merged[name] for name in self.visual_names if isinstance(merged.get(name), Tensor)}

    @torch.no_grad()
    def validation_step(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> tuple[Tensor, Tensor]:
        """Return (output, target) in [0, 1] for PSNR/SSIM; ``G`` is the EMA generator in eval mode."""
        out = self.forward(G, batch, ctx)
        return out["output"].float().clamp(0, 1), batch["target"].float()

    def on_epoch_end(self, ctx: EpochContext) -> None:
        """Called on every rank after each completed epoch (``ctx.epoch`` = epochs done).

        For per-epoch bookkeeping the step loop cannot do, e.g. the VAE's
        ``history.csv`` of train/test metrics. The trainer meets all ranks at a
        barrier afterwards. Default: nothing.
        """

    def model_card(self) -> dict[str, Any]:
        """Card fields this task knows (task, corruption spec, input format ...); the trainer adds the run's."""
        return {"task": self.name, "options": dict(self.options)}

    # ---- helpers used by the trainer ------------------------------------------------
    def objective(self, which: str) -> tuple[str, ...]:
        """The terms summed into ``which``'s loss: ``objective_*``, or all of ``loss_names_*``.

        Read from the instance, so a task that declares fewer terms for its
        options (``self.loss_names_G = ...`` in ``__init__``) needs no override.
        """
        names = self.loss_names_G if which == "G" else self.loss_names_D
        chosen = self.objective_G if which == "G" else self.objective_D
        return tuple(names) if chosen is None else tuple(chosen)


def check_terms(task: Task, which: str, terms: LossTerms) -> None:
    """Fail loudly when a task returns terms it did not declare (logging relies on the names)."""
    declared = task.loss_names_G if which == "G" else task.loss_names_D
    got = set(terms)
    if got != set(declared):
        raise ValueError(
            f"task {task.name!r}: {which} losses returned {sorted(got)} but loss_names_{which} declares "
            f"{sorted(declared)}"
        )

