"""A tiny GAN task for the engine tests, also runnable as a training script.

Imported by tests/test_engine.py and run as a subprocess (plain python for the
SIGTERM test, torchrun for the DDP test): ``python tests/test_engine_tinytask.py
--data synthetic --out DIR ...`` behaves like any ``train/<task>.py``.
With ``TINY_DUMP_DIR`` set, each rank also saves its final parameters there so
the DDP test can compare ranks.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from restore.engine.task import StepContext, Task  # noqa: E402
from restore.losses import AdversarialLoss  # noqa: E402


class TinyG(nn.Module):
    """Residual 2-layer conv generator (config dict so restore.weights can rebuild it)."""

    def __init__(self, channels: int = 1, width: int = 4) -> None:
        super().__init__()
        self.config = {"channels": channels, "width": width}
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class TinyD(nn.Module):
    def __init__(self, channels: int = 1, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class RandomImages(Dataset):
    """``n`` fixed random 1x12x12 images (a function of ``seed`` only)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.data = torch.rand(n, 1, 12, 12, generator=g)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"target": self.data[i], "index": torch.tensor(i)}


def _adversarial(smoothing: Any) -> nn.Module:
    return AdversarialLoss("vanilla", smoothing=smoothing)


class TinyGAN(Task):
    name = "tiny"
    loss_names_G = ("adv", "l1")
    loss_names_D = ("real", "fake")
    adversarial_term = "adv"
    visual_names = ("input", "output", "target")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {
            "task": {
                "noise": 0.2, "smoothing": [0.8, 1.0], "adv_weight": 0.1, "gan": True,
                "n_train": 24, "n_val": 8, "nan_steps": [], "sleep": 0.0, "marker": "", "marker_step": 2,
            },
            "steps": 4, "batch_size": 4, "num_workers": 0, "device": "cpu", "progress": False,
            "log_every": 1, "image_every": 2, "val_every": 2, "ckpt_every": 2, "keep_last": 3,
            "d_noise_std": 0.1, "d_noise_anneal_steps": 6, "ema_decay": 0.9,
            "optim": {"G": {"lr": 1e-2, "schedule": "step", "step_size": 3, "gamma": 0.5}, "D": {"lr": 1e-2}},
        }

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        opts = {**self.defaults()["task"], **(options or {})}
        super().__init__(opts)
        sm = opts["smoothing"]
        self.adv = _adversarial(tuple(sm) if isinstance(sm, list) else sm)

    def build_models(self) -> dict[str, nn.Module]:
        models: dict[str, nn.Module] = {"G": TinyG()}
        if self.options["gan"]:
            models["D"] = TinyD()
        return models

    def build_datasets(self, data: str) -> tuple[Dataset, Dataset]:
        return RandomImages(self.options["n_train"], 1), RandomImages(self.options["n_val"], 2)

    def prepare_batch(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        batch = super().prepare_batch(batch, ctx)
        t = batch["target"]
        noise = torch.randn(t.shape, generator=ctx.generator, device=t.device)
        batch["input"] = t + self.options["noise"] * noise
        if self.options["sleep"] and ctx.training:
            time.sleep(self.options["sleep"])
        if self.options["marker"] and ctx.training and ctx.step >= self.options["marker_step"]:
            Path(self.options["marker"]).touch()
        return batch

    def forward(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        return {"output": G(batch["input"])}

    def _bce(self, pred: torch.Tensor, real: bool, for_d: bool, ctx: StepContext) -> torch.Tensor:
        if self.adv is not None:
            return self.adv(pred, real, for_discriminator=for_d, generator=ctx.generator)
        target = torch.full_like(pred, 0.9 if (real and for_d) else float(real))
        return F.binary_cross_entropy_with_logits(pred, target)

    def generator_losses(self, batch, out, D, ctx):  # type: ignore[override]
        l1 = (out["output"] - batch["target"]).abs().mean()
        if ctx.step in self.options["nan_steps"]:
            l1 = l1 * float("nan")
        adv = self._bce(D(ctx.d_noise(out["output"])), True, False, ctx) if D is not None else l1 * 0
        return {"adv": self.options["adv_weight"] * adv, "l1": l1}

    def discriminator_losses(self, batch, out, D, ctx):  # type: ignore[override]
        real = D(ctx.d_noise(batch["target"]))
        fake = D(ctx.d_noise(out["output"]))
        ctx.log("D/real_mean", torch.sigmoid(real).mean())
        ctx.log("D/fake_mean", torch.sigmoid(fake).mean())
        return {"real": 0.5 * self._bce(real, True, True, ctx), "fake": 0.5 * self._bce(fake, False, True, ctx)}

    def model_card(self) -> dict[str, Any]:
        return {"task": "tiny", "corruption": f"gaussian:sigma={self.options['noise'] * 255:g}"}


def _run_and_dump(argv: list[str], dump_dir: Path) -> int:
    from restore.engine import distributed
    from restore.engine.cli import build_parser, resolve_config
    from restore.engine.trainer import Trainer

    cfg = resolve_config(TinyGAN, build_parser(TinyGAN).parse_args(argv))
    task = TinyGAN(cfg.task)
    trainer = Trainer(task, cfg, *task.build_datasets(cfg.data))
    seen: list[int] = []
    original = task.prepare_batch

    def recording(batch: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        if ctx.training:
            seen.extend(batch["index"].tolist())
        return original(batch, ctx)

    task.prepare_batch = recording  # type: ignore[method-assign]
    trainer.fit()
    state = {f"{k}.{n}": p.detach().clone() for k, m in trainer.models.items() for n, p in m.named_parameters()}
    state["seen"] = torch.tensor(seen)
    torch.save(state, dump_dir / f"rank{trainer.dist.rank}.pt")
    trainer.logger.close()
    distributed.cleanup()
    return 0


if __name__ == "__main__":
    dump = os.environ.get("TINY_DUMP_DIR")
    if dump:
        raise SystemExit(_run_and_dump(sys.argv[1:], Path(dump)))
    from restore.engine.cli import main

    raise SystemExit(main(TinyGAN))
