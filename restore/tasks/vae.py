"""The VAE family: denoising VAE (+ SupCon on z_mean) and conditional VAEs (issue 5).

Training side: `VAETask` for `restore.engine.Trainer` (``train/vae.py``).
Input = corrupted image (any `restore.corrupt` spec, applied on the device in
`VAETask.prepare_batch` with ``ctx.generator``), target = clean image. Loss =
reconstruction (BCE from logits, summed over pixels and averaged over the
batch; or the same with squared error) + beta * KL + gamma * SupCon(z_mean).
With ``supcon_clean_view`` the clean image is a second SupCon view of each
sample: the encoder then maps a garment and its noisy copy to the same place,
so the latent space separates classes for clean inputs as well as for the
noisy ones it denoises (the encoder otherwise never sees a clean image).
Beta rises linearly from 0 to ``beta_max`` over ``warmup_epochs`` (per step,
so the ramp has no stairs; logged as ``kl/beta``). After every epoch the task
writes one row of ``runs/NAME/history.csv`` (losses, beta, train and test
MSE/PSNR/SSIM with a fixed corruption seed).

Restoring (``restore denoise --weights vae-fashion``, the API, the app):
`restore.restorers.vae` (z_mean decoding, posterior samples, uncertainty).

Evaluation helpers (`evaluate_denoising`, `encode`, `knn_accuracy`) compute
the figures of the model cards; ``eval/vae_metrics.py`` is their command line.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from restore import corrupt, metrics, models
from restore.data import FASHION_MNIST_CLASSES, MNIST_CLASSES, IdxDataset, IdxError
from restore.engine.config import ConfigError
from restore.engine.task import EpochContext, StepContext, Task
from restore.io.atomic import atomic_output
from restore.losses import SupConLoss, kl_divergence
from restore.tasks.common import is_int, is_number

__all__ = [
    "MNIST_CLASSES",
    "VAEConfigError",
    "VAETask",
    "beta_at",
    "encode",
    "evaluate_denoising",
    "knn_accuracy",
]

#: Columns of ``history.csv``, in order.
HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "step", "beta", "loss_total", "loss_recon", "loss_kl", "loss_supcon",
    "train_mse", "train_psnr", "train_ssim", "test_mse", "test_psnr", "test_ssim",
    "images_per_s", "time_s",
)
_HISTORY_SEED = 20240517  # corruption seed of the per-epoch metrics (same noise every epoch)


class VAEInputError(ValueError):
    """An image the VAE cannot take (size, channels) or a bad restoring option; the message says why."""


class VAEConfigError(ConfigError):
    """A bad task option (a `ConfigError`, so ``train/vae.py`` exits with 2 and one line, not a traceback)."""


# --------------------------------------------------------------------------- schedule


def beta_at(epoch: float, beta_max: float, warmup_epochs: float) -> float:
    """KL weight after ``epoch`` (fractional) epochs: linear 0 -> beta_max over warmup_epochs, then held.

    Starting at 0 lets the encoder spread the classes out before the prior
    pulls them together (the usual cure for posterior collapse).
    """
    if beta_max < 0:
        raise ValueError(f"beta_max must be >= 0, got {beta_max}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if warmup_epochs == 0:
        return float(beta_max)
    return float(beta_max) * min(1.0, max(0.0, float(epoch)) / float(warmup_epochs))


# --------------------------------------------------------------------------- helpers


def _class_names(dataset: str, names: Sequence[str] | None, num_classes: int) -> list[str]:
    if names:
        out = [str(n) for n in names]
    elif dataset == "mnist":
        out = list(MNIST_CLASSES)
    else:
        out = list(FASHION_MNIST_CLASSES)
    if len(out) != num_classes:
        raise VAEConfigError(f"task class_names: {len(out)} names for num_classes={num_classes}")
    return out


def _is_conditional(model: nn.Module) -> bool:
    return getattr(model, "conditioning", None) in ("onehot", "embedding")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _dataset_tensors(ds: Dataset, limit: int | None = None) -> tuple[Tensor, Tensor | None]:
    """(N,1,H,W) float images and (N,) labels of a dataset (fast path for IdxDataset)."""
    n = len(ds) if not limit else min(int(limit), len(ds))
    images = getattr(ds, "images", None)
    labels = getattr(ds, "labels", None)
    if isinstance(images, Tensor) and images.dtype == torch.uint8 and images.dim() == 3:
        x = images[:n].unsqueeze(1).float().div_(255.0)
        y = labels[:n].long() if isinstance(labels, Tensor) else None
        return x, y
    items = [ds[i] for i in range(n)]
    x = torch.stack([it["target"] for it in items]).float()
    y = torch.stack([torch.as_tensor(it["label"]) for it in items]).long() if "label" in items[0] else None
    return x, y


def _run_model(model: nn.Module, x: Tensor, y: Tensor | None, **kw: Any) -> dict[str, Tensor]:
    if _is_conditional(_unwrap(model)):
        if y is None:
            raise ValueError("a conditional VAE needs class labels (batch['label'])")
        return model(x, y, **kw)
    return model(x, **kw)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_denoising(
    model: nn.Module,
    images: Tensor,
    labels: Tensor | None,
    spec: str,
    seed: int = 0,
    *,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
    return_latents: bool = False,
) -> dict[str, Any]:
    """Mean MSE/PSNR/SSIM of the model's z_mean reconstruction and of the noisy input, vs clean.

    The whole set is corrupted at once with ``restore.corrupt.apply(images,
    spec, seed)``, so a (set, spec, seed) triple always gives the same noisy
    inputs. The model runs in eval mode (z = z_mean). Returns floats
    (``mse``, ``psnr``, ``ssim``, ``noisy_mse``, ...) plus ``z_mean`` (N, D)
    and the noisy inputs when ``return_latents``.
    """
    model = _unwrap(model)
    was_training = model.training
    model.eval()
    device = torch.device(device)
    degraded = corrupt.apply(images.float(), spec, seed)
    noisy = degraded.input
    sums = dict.fromkeys(("mse", "psnr", "ssim", "noisy_mse", "noisy_psnr", "noisy_ssim"), 0.0)
    zs = []
    for i in range(0, len(images), batch_size):
        xin = noisy[i : i + batch_size].to(device)
        clean = images[i : i + batch_size].to(device).float()
        y = labels[i : i + batch_size].to(device) if labels is not None else None
        out = _run_model(model, xin, y, sample=False)
        rec = out["recon"].float().clamp(0, 1)
        for prefix, est in (("", rec), ("noisy_", xin)):
            sums[prefix + "mse"] += float(metrics.mse(est, clean).sum())
            sums[prefix + "psnr"] += float(metrics.psnr(est, clean).sum())
            sums[prefix + "ssim"] += float(metrics.ssim(est, clean).sum())
        if return_latents:
            zs.append(out["z_mean"].float().cpu())
    model.train(was_training)
    n = max(1, len(images))
    result: dict[str, Any] = {k: v / n for k, v in sums.items()}
    result["n"] = len(images)
    if return_latents:
        result["z_mean"] = torch.cat(zs) if zs else torch.empty(0)
        result["noisy"] = noisy
    return result


@torch.no_grad()
def encode(
    model: nn.Module, images: Tensor, labels: Tensor | None = None, *, batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> Tensor:
    """z_mean (N, D) of ``images`` (encoder only; conditional models need ``labels``)."""
    model = _unwrap(model)
    device = torch.device(device)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float()
        if _is_conditional(model):
            if labels is None:
                raise ValueError("encode: a conditional VAE needs labels")
            z, _ = model.encode(x, labels[i : i + batch_size].to(device))
        else:
            z, _ = model.encode(x)
        out.append(z.float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def knn_accuracy(
    train_z: Tensor, train_y: Tensor, test_z: Tensor, test_y: Tensor, k: int = 5, chunk: int = 1000
) -> float:
    """Accuracy of a k-nearest-neighbour (Euclidean, majority vote) classifier fit on train_z.

    Ties between classes go to the class of the nearest neighbour among the
    tied ones (what sklearn's uniform-weight vote does in practice is
    order-dependent; this rule is deterministic).
    """
    if k < 1:
        raise ValueError(f"knn_accuracy: k must be >= 1, got {k}")
    if len(train_z) < k:
        raise ValueError(f"knn_accuracy: {len(train_z)} training points for k={k}")
    train_z, test_z = train_z.float(), test_z.float()
    train_y, test_y = train_y.long().reshape(-1), test_y.long().reshape(-1)
    num_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    correct = 0
    for i in range(0, len(test_z), chunk):
        d = torch.cdist(test_z[i : i + chunk], train_z)
        idx = d.topk(k, dim=1, largest=False).indices  # sorted nearest first
        votes = train_y[idx]  # (B, k)
        counts = F.one_hot(votes, num_classes).sum(1).float()  # (B, C)
        # tie-break: a small bonus decreasing with the rank of each class's nearest member
        rank_bonus = torch.zeros_like(counts)
        for r in range(k - 1, -1, -1):
            rank_bonus.scatter_(1, votes[:, r : r + 1], (k - r) / (k + 1.0))
        pred = (counts + rank_bonus / k).argmax(1)
        correct += int((pred == test_y[i : i + chunk]).sum())
    return correct / max(1, len(test_z))


# --------------------------------------------------------------------------- the task


class VAETask(Task):
    """Denoising VAE / conditional VAE on MNIST-style IDX data (``--data DIR`` with train-*/t10k-* files)."""

    name = "vae"
    loss_names_G = ("recon", "kl", "supcon")
    visual_names = ("input", "output", "target")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {
            "epochs": 20,
            "batch_size": 256,
            "val_batch_size": 1000,
            "val_every": 0,  # per-epoch metrics come from on_epoch_end (history.csv)
            "ckpt_every": 2000,
            "image_every": 1000,
            "log_every": 50,
            "num_workers": 0,  # the data is an in-memory tensor; workers only add IPC
            "optim": {"G": {"lr": 1e-3, "betas": [0.9, 0.999]}},
            "ema_decay": 0.998,
            "task": {
                # data / corruption
                "corruption": "gaussian:sigma=114.75",  # x + 0.45 N(0,1), clipped
                "dataset": "fashion-mnist",  # fashion-mnist | mnist | any name (then give class_names)
                "class_names": None,
                "val_limit": 0,  # test images used for validation and history (0 = all)
                "train_eval_limit": 10000,  # train images for the per-epoch train metrics (0 = all)
                # model
                "latent_dim": 16,
                "channels": [32, 64],
                "hidden": 64,
                "conditioning": "none",  # none | onehot | embedding
                "num_classes": 10,
                "embed_dim": None,
                # loss
                "recon": "bce",  # bce | mse
                "beta_max": 1.0,
                "warmup_epochs": 8.0,
                "free_bits": 0.0,
                "gamma": 1.0,  # SupCon weight on z_mean
                "temperature": 0.1,
                "supcon_clean_view": False,  # also encode the clean image: a second SupCon view (unconditional VAE)
                # outputs
                "history": True,
                "snapshot_latents": 0,  # save z_mean of this many test images per epoch (latent GIFs)
            },
        }

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        opts = dict(self.defaults()["task"])
        opts.update(options or {})
        super().__init__(opts)
        o = self.options

        try:
            self.corruption = corrupt.parse_spec(str(o["corruption"]))
        except corrupt.CorruptionSpecError as e:
            raise VAEConfigError(f"task corruption: {e}") from None
        self._check_options()
        self.class_names = _class_names(str(o["dataset"]), o["class_names"], int(o["num_classes"]))

        self.supcon = SupConLoss(temperature=float(o["temperature"]))
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self._images = 0
        self._eval_cache: dict[str, tuple[Tensor, Tensor | None]] = {}
        self._epoch_t0 = time.perf_counter()

    def _check_options(self) -> None:
        """Every option's type and range, so a bad value is one line naming it (not a traceback from the model)."""
        o = self.options

        def bad(key: str, why: str) -> VAEConfigError:
            return VAEConfigError(f"task {key}: {why}, got {o[key]!r}")

        if o["conditioning"] not in ("none", "onehot", "embedding"):
            raise bad("conditioning", "must be none, onehot or embedding")
        if o["recon"] not in ("bce", "mse"):
            raise bad("recon", "must be bce or mse")
        for key in ("latent_dim", "hidden", "num_classes"):
            if not is_int(o[key]) or o[key] < 1:
                raise bad(key, "must be an integer >= 1")
        if self.conditional and o["num_classes"] < 2:
            raise bad("num_classes", "must be >= 2 for a conditional VAE")
        ch = o["channels"]
        # one stride-2 stage per entry: 28x28 allows at most two (28 -> 14 -> 7)
        if not isinstance(ch, (list, tuple)) or not 1 <= len(ch) <= 2 or not all(is_int(c) and c >= 1 for c in ch):
            raise bad("channels", "must be a list of 1 or 2 positive integers (one stride-2 stage each on 28x28)")
        if o["embed_dim"] is not None and (not is_int(o["embed_dim"]) or o["embed_dim"] < 1):
            raise bad("embed_dim", "must be null or an integer >= 1")
        for key in ("val_limit", "train_eval_limit", "snapshot_latents"):
            if not is_int(o[key]) or o[key] < 0:
                raise bad(key, "must be an integer >= 0")
        for key in ("gamma", "free_bits", "beta_max", "warmup_epochs"):
            if not is_number(o[key]) or o[key] < 0:
                raise bad(key, "must be a number >= 0")
        if not is_number(o["temperature"]) or o["temperature"] <= 0:
            raise bad("temperature", "must be a number > 0")
        for key in ("history", "supcon_clean_view"):
            if not isinstance(o[key], bool):
                raise bad(key, "must be true or false")
        if not isinstance(o["dataset"], str):
            raise bad("dataset", "must be a name")
        names = o["class_names"]
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names)):
            raise bad("class_names", "must be null or a list of names")
        if o["supcon_clean_view"] and (o["conditioning"] != "none" or o["gamma"] <= 0):
            raise VAEConfigError("task supcon_clean_view: needs an unconditional VAE (conditioning none) and gamma > 0")

    @property
    def conditional(self) -> bool:
        return self.options["conditioning"] != "none"

    # ---- construction --------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        o = self.options
        common = dict(in_channels=1, image_size=28, latent_dim=int(o["latent_dim"]),
                      channels=[int(c) for c in o["channels"]], hidden=int(o["hidden"]))
        if self.conditional:
            g = models.build("cvae", **common, num_classes=int(o["num_classes"]),
                             conditioning=o["conditioning"], embed_dim=o["embed_dim"])
        else:
            g = models.build("vae", **common)
        return {"G": g}

    def build_datasets(self, data: str) -> tuple[Dataset, Dataset | None]:
        limit = int(self.options["val_limit"]) or None
        try:
            self.train_set = IdxDataset(data, "train")
            self.val_set = IdxDataset(data, "test", limit=limit)
        except IdxError as e:
            raise ConfigError(f"--data {data}: {e}") from e
        for ds in (self.train_set, self.val_set):
            if tuple(ds.images.shape[-2:]) != (28, 28):
                raise ConfigError(f"--data {data}: images are {tuple(ds.images.shape[-2:])}, the VAE takes 28x28")
            top = int(ds.labels.max()) if len(ds.labels) else 0
            if self.conditional and top >= int(self.options["num_classes"]):
                raise ConfigError(f"--data {data}: label {top} >= task num_classes={self.options['num_classes']}")
        return self.train_set, self.val_set

    # ---- one step ------------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        batch = super().prepare_batch(batch, ctx)
        degraded = self.corruption(batch["target"], ctx.streams)
        batch["input"] = degraded.input
        return batch

    def forward(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> dict[str, Tensor]:
        x = batch["input"]
        clean_view = bool(self.options["supcon_clean_view"]) and ctx.training
        if clean_view:
            # one forward over [noisy; clean] (DDP wants one forward per backward); the clean
            # half only contributes its z_mean to SupCon, its decoding is not trained
            x = torch.cat([x, batch["target"].to(x.dtype)], dim=0)
        out = _run_model(G, x, batch.get("label"), generator=ctx.generator)
        n = batch["input"].shape[0]
        res = {"output": out["recon"][:n], "logits": out["logits"][:n], "z_mean": out["z_mean"][:n],
               "z_log_var": out["z_log_var"][:n]}
        if clean_view:
            res["z_mean_clean"] = out["z_mean"][n:]
        return res

    def _steps_per_epoch(self, ctx: StepContext) -> int:
        n = len(self.train_set) if self.train_set is not None else 0
        bs = int(getattr(ctx.config, "batch_size", 0) or 0)
        if n <= 0 or bs <= 0:
            return 0
        world = torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1
        drop_last = bool(getattr(ctx.config, "drop_last", True))
        per_rank = n // world if drop_last else math.ceil(n / world)
        return max(1, per_rank // bs if drop_last else math.ceil(per_rank / bs))

    def beta(self, ctx: StepContext) -> float:
        """KL weight at this step (the warm-up is measured in epochs, advanced per step)."""
        spe = self._steps_per_epoch(ctx)
        epoch = ctx.step / spe if spe else float(ctx.epoch)
        return beta_at(epoch, float(self.options["beta_max"]), float(self.options["warmup_epochs"]))

    def generator_losses(
        self, batch: dict[str, Any], out: dict[str, Tensor], D: nn.Module | None, ctx: StepContext
    ) -> dict[str, Tensor]:
        o = self.options
        target = batch["target"].float()
        logits = out["logits"].float()
        n = target.shape[0]
        if o["recon"] == "bce":
            recon = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / n
        else:
            recon = (torch.sigmoid(logits) - target).pow(2).sum() / n
        kl = kl_divergence(out["z_mean"], out["z_log_var"], free_bits=float(o["free_bits"]))
        gamma = float(o["gamma"])
        if gamma > 0 and "label" in batch:
            z = out["z_mean"].float()
            if "z_mean_clean" in out:
                z = torch.stack([z, out["z_mean_clean"].float()], dim=1)  # (N, 2 views, D)
            supcon = self.supcon(z, batch["label"])
        else:
            supcon = torch.zeros((), device=target.device)
        beta = self.beta(ctx)
        ctx.log("kl/beta", beta)
        ctx.log("vae/kl", kl)
        ctx.log("vae/supcon", supcon)
        ctx.log("vae/recon", recon)
        terms = {"recon": recon, "kl": beta * kl, "supcon": gamma * supcon}
        if ctx.training:
            raw = {"recon": recon, "kl": kl, "supcon": supcon, "total": sum(terms.values())}
            for k, v in raw.items():
                v = v.detach().float()
                self._sums[k] = self._sums[k] + v if k in self._sums else v
            self._count += 1
            self._images += n
            self._beta_last = beta
        return terms

    @torch.no_grad()
    def validation_step(self, G: nn.Module, batch: dict[str, Any], ctx: StepContext) -> tuple[Tensor, Tensor]:
        """Deterministic: decode z_mean (the mean of q(z|x)), not a sample."""
        out = _run_model(G, batch["input"], batch.get("label"), sample=False)
        return out["recon"].float().clamp(0, 1), batch["target"].float()

    # ---- per-epoch history ----------------------------------------------------------
    def _eval_set(self, which: str) -> tuple[Tensor, Tensor | None]:
        if which not in self._eval_cache:
            if which == "test":
                if self.val_set is None:
                    raise RuntimeError("no validation set")
                self._eval_cache[which] = _dataset_tensors(self.val_set)
            else:
                if self.train_set is None:
                    raise RuntimeError("no training set")
                limit = int(self.options["train_eval_limit"]) or None
                self._eval_cache[which] = _dataset_tensors(self.train_set, limit)
        return self._eval_cache[which]

    def epoch_metrics(self, G: nn.Module, device: torch.device) -> dict[str, float]:
        """Train-subset and test MSE/PSNR/SSIM of ``G`` with a fixed corruption seed."""
        spec = str(self.options["corruption"])
        row: dict[str, float] = {}
        for which in ("train", "test"):
            if (which == "train" and self.train_set is None) or (which == "test" and self.val_set is None):
                continue
            x, y = self._eval_set(which)
            r = evaluate_denoising(G, x, y, spec, _HISTORY_SEED, batch_size=1000, device=device)
            row.update({f"{which}_mse": r["mse"], f"{which}_psnr": r["psnr"], f"{which}_ssim": r["ssim"]})
        return row

    def on_epoch_end(self, ctx: EpochContext) -> None:
        """Append this epoch's row to ``history.csv`` and log it as ``epoch/*`` (rank 0)."""
        sums, count, images = self._sums, max(1, self._count), self._images
        self._sums, self._count, self._images = {}, 0, 0
        t0 = self._epoch_t0
        train_s = time.perf_counter() - t0  # before the evaluation below
        try:
            if ctx.is_main and self.options["history"]:
                self._write_epoch(ctx, sums, count, images, t0, train_s)
        finally:
            self._epoch_t0 = time.perf_counter()  # the next epoch's clock starts after the evaluation

    def _write_epoch(self, ctx: EpochContext, sums: dict[str, Tensor], count: int, images: int, t0: float,
                     train_s: float) -> None:
        G = ctx.G
        row: dict[str, Any] = {
            "epoch": int(ctx.epoch),
            "step": int(ctx.step),
            "beta": getattr(self, "_beta_last", float("nan")),
            **{f"loss_{k}": float(v) / count for k, v in sums.items()},
        }
        row.update(self.epoch_metrics(G, ctx.device))
        row["images_per_s"] = images / max(train_s, 1e-9)  # this rank's training throughput
        row["time_s"] = time.perf_counter() - t0
        run_dir = ctx.run_dir
        write_history_row(run_dir / "history.csv", row)
        ctx.log({f"epoch/{k}": float(v) for k, v in row.items() if k not in ("epoch", "step")})
        n_snap = int(self.options["snapshot_latents"])
        if n_snap > 0 and self.val_set is not None:
            x, y = self._eval_set("test")
            r = evaluate_denoising(G, x[:n_snap], y[:n_snap] if y is not None else None, str(self.options["corruption"]),
                                   _HISTORY_SEED, device=ctx.device, return_latents=True)
            k = min(16, len(r["noisy"]))  # images of the reconstruction GIF
            with torch.no_grad():
                recon = _run_model(_unwrap(G), r["noisy"][:k].to(ctx.device),
                                   y[:k].to(ctx.device) if y is not None else None, sample=False)["recon"]
            folder = run_dir / "epochs"
            folder.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(
                folder / f"epoch_{int(ctx.epoch):04d}.npz",
                z_mean=r["z_mean"].numpy(), labels=(y[:n_snap].numpy() if y is not None else np.zeros(0)),
                recon=recon.float().cpu().numpy(), noisy=r["noisy"][:k].numpy(), clean=x[:k].numpy(),
            )

    # ---- export ----------------------------------------------------------------------
    def model_card(self) -> dict[str, Any]:
        o = self.options
        return {
            "task": self.name,
            "corruption": str(o["corruption"]),
            "latent_dim": int(o["latent_dim"]),
            "conditioning": o["conditioning"],
            "dataset": str(o["dataset"]),
            "class_names": list(self.class_names),
            "input": {"channels": 1, "height": 28, "width": 28, "range": [0, 1]},
            "loss": {"recon": o["recon"], "beta_max": float(o["beta_max"]), "warmup_epochs": float(o["warmup_epochs"]),
                     "gamma": float(o["gamma"]), "temperature": float(o["temperature"]),
                     "supcon_clean_view": bool(o["supcon_clean_view"])},
            "options": dict(o),
        }


def write_history_row(path: Path, row: dict[str, Any]) -> None:
    """Add ``row`` to the CSV at ``path``, replacing rows of the same or later epochs (a resumed run).

    Written atomically, so an interrupted run never leaves half a file.
    """
    rows: list[dict[str, str]] = []
    if path.is_file():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit() and int(r["epoch"]) < int(row["epoch"])]
    columns = list(HISTORY_COLUMNS) + [k for k in row if k not in HISTORY_COLUMNS]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.6g}"
        return "" if v is None else str(v)

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(r)
            w.writerow({k: fmt(row.get(k)) for k in columns})
