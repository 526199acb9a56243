"""Speed and memory benchmark of ``restore``: restoring, classical baselines, tiling, training.

Every figure is something a user of the toolkit gets, measured the same way
each time (issue 4 item 4, issue 6):

* **restore**: images/s of each task's restore pipeline (the code the
  ``restore`` command calls, tiling included, with the command's default
  options) per device, precision (fp32 / bf16 autocast), mode (eager /
  ``torch.compile``), batch size and image size. Each figure is the median of
  ``--repeats`` timed calls after warm-up; wall clock is ``time.perf_counter``
  with ``torch.cuda.synchronize`` on the GPU. Each configuration runs in a
  **fresh subprocess**, so the CPU peak memory is that process's own RSS
  high-water mark (``resource.getrusage``; the RSS after imports and model
  loading is reported beside it) and the GPU peak is
  ``torch.cuda.max_memory_allocated`` over the timed calls.
* **baselines**: CBM3D and OpenCV non-local means (Gaussian noise, sigma 25)
  and OpenCV Telea (inpainting), through ``eval.baselines`` (the evaluation
  code path), on the same 768x512 photo in the same run, so the model/baseline
  ratios survive a noisy, shared machine (issue 6 asks the denoiser for >= 10x
  CBM3D's speed on the same CPU).
* **tiled**: peak RSS of the denoiser restoring a 4096x4096 image with the
  command's default tile, in a fresh subprocess.
* **huge** (``--huge``, or ``huge`` in ``--sections``): a 6000x4000 photo
  (``--huge-size``: one size or a comma list, e.g. 6000x4000,12000x12000)
  written to a PNG and restored end to end by ``restore TASK FILE OUT`` (read,
  restore, write) for each of denoise, colorize and inpaint among ``--tasks``
  (inpaint with a seeded free-form mask covering 25-30% of the photo); peak
  RSS of the process tree (``wait4`` high-water mark and sampled ``/proc``
  sums; issue 6 requires < 3 GB of the denoiser, issue 19 < 3 GB of each task
  at 12000x12000).
* **train**: images/s of one ``restore.engine.Trainer.train_step`` per task on
  in-memory tensors (data loading excluded), fp32 vs bf16 (+ channels_last on
  the GPU).

Models are the shipped weights when present (``restore.weights.load``), else
the task's generator built randomly initialised from the recipe the shipped
weights are trained with (the train config that ``--export``\\s them, found in
``train/``), labelled "random init": speed does not depend on trained values.
A task whose module does not import yet is reported as skipped, not fatal.

Outputs in ``--out`` (default ``eval/results/speed/``): ``speed.md`` (tables),
``speed.csv`` (one row per measurement), ``speed.json`` (rows + machine info).

Examples::

    nice python eval/speed.py --device cpu                       # everything, CPU
    python eval/speed.py --device cuda --batch-sizes 1,8,32      # GPU: fp32/bf16 x eager/compile
    nice python eval/speed.py --sections baselines,restore --tasks denoise --sizes 768x512 --huge
    nice python eval/speed.py --sections huge --tasks denoise,colorize,inpaint --threads 1   # peak RAM only
    nice python eval/speed.py --sections huge --huge-size 6000x4000,12000x12000 --threads 1 --timeout 3000
    python eval/speed.py --quick --out /tmp/speed                # tiny settings (tests)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from eval.common import eval_parser  # noqa: E402
from restore import provenance  # noqa: E402
from restore.tiling import ENSEMBLES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "eval" / "results" / "speed"

SECTIONS = ("baselines", "restore", "tiled", "train")
DTYPES = ("fp32", "bf16")
MODES = ("eager", "compile")
#: sigma (0-255) of the Gaussian noise the denoising baselines are timed on (issue 6 compares at 25)
BASELINE_SIGMA = 25.0
#: baselines timed in the same run; the ratio columns divide a model's images/s by theirs
BASELINES: dict[str, str] = {"cbm3d": "denoise", "nlm": "denoise", "telea": "inpaint"}
#: the Fashion-MNIST VAE restores 28x28 digits only; photo sizes do not apply to it
VAE_SIZE = (28, 28)
HUGE_LIMIT_GB = 3.0  # issue 6: a 6000x4000 photo restores on CPU under 3 GB peak RAM
ISSUE6_SPEEDUP = 10.0  # issue 6: the denoiser restores a 768x512 photo >= 10x faster than CBM3D

#: one row per measurement; speed.csv has exactly these columns, in this order
COLUMNS: tuple[str, ...] = (
    "section", "task", "model", "device", "dtype", "mode", "batch", "size", "tile",
    "images_per_s", "ms_per_image", "runs", "first_call_s", "peak_mem_mb", "base_mem_mb", "mem_kind",
    "x_cbm3d", "x_nlm", "x_telea", "status",
)

_RESULT_TAG = "SPEED-RESULT "


class SpeedError(Exception):
    """A benchmark cannot run as asked (bad option, no CUDA, missing tool); the message says which and why."""


# =========================================================================== small helpers


def parse_size(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 512); ``"768x512"`` -> (768, 512) as (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m:
        raise SpeedError(f"size {text!r}: expected N or WxH, e.g. 512 or 768x512")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) else w
    if w < 8 or h < 8:
        raise SpeedError(f"size {text!r}: width and height must be >= 8 pixels")
    return w, h


def size_text(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]}"


def _csv_list(text: str, what: str, allowed: Iterable[str] | None = None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise SpeedError(f"{what}: empty list")
    if allowed is not None:
        allowed = list(allowed)
        bad = [t for t in items if t not in allowed]
        if bad:
            raise SpeedError(f"{what}: unknown value(s) {', '.join(bad)}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def _int_list(text: str, what: str) -> list[int]:
    out = []
    for t in _csv_list(text, what):
        if not t.isdigit() or int(t) < 1:
            raise SpeedError(f"{what}: {t!r} is not a positive integer")
        out.append(int(t))
    return out


def _maxrss_mb() -> float:
    """This process's RSS high-water mark in MB.

    Linux: VmHWM of this address space. ru_maxrss would also count the RSS the
    forking parent had when this process was exec'd, inflating every figure
    measured in a child of a big process. Elsewhere: ru_maxrss (KiB, or bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024.0


def _rss_mb() -> float:
    """Current RSS in MB (Linux /proc/self/statm); the high-water mark where that is unavailable."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        return _maxrss_mb()


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def resolve_device(choice: str) -> torch.device:
    """``auto`` -> cuda when available; ``cuda`` without a GPU is a `SpeedError`."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SpeedError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if choice not in ("cpu", "cuda"):
        raise SpeedError(f"--device {choice!r}: choose cpu, cuda or auto")
    return torch.device(choice)


# =========================================================================== images


_PHOTO_CACHE: dict[tuple[int, int], np.ndarray] = {}


def photo_u8(width: int, height: int) -> np.ndarray:
    """scikit-image's astronaut (bundled, no download) scaled to cover WxH and centre-cropped: HxWx3 uint8."""
    import cv2
    from skimage import data

    key = (width, height)
    if key not in _PHOTO_CACHE:
        src = data.astronaut()[:, :, :3]
        sh, sw = src.shape[:2]
        scale = max(width / sw, height / sh)
        rw, rh = max(width, round(sw * scale)), max(height, round(sh * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        big = cv2.resize(src, (rw, rh), interpolation=interp)
        y0, x0 = (rh - height) // 2, (rw - width) // 2
        _PHOTO_CACHE[key] = np.ascontiguousarray(big[y0 : y0 + height, x0 : x0 + width])
    return _PHOTO_CACHE[key]


def photo(width: int, height: int) -> torch.Tensor:
    """The benchmark photo as 3xHxW float32 in [0, 1]."""
    return torch.from_numpy(photo_u8(width, height)).permute(2, 0, 1).float().div_(255.0)


def noisy(clean: torch.Tensor, sigma: float = BASELINE_SIGMA, seed: int = 0) -> torch.Tensor:
    """Gaussian noise from ``restore.corrupt`` (seeded), rounded to 8 bits like a file on disk."""
    from restore import corrupt

    x = clean[None] if clean.dim() == 3 else clean
    out = corrupt.apply(x, f"gaussian:sigma={sigma:g}", seed).input
    out = out.clamp(0, 1).mul(255).round().div(255)
    return out[0] if clean.dim() == 3 else out


def hole_mask(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A seeded free-form hole mask (1HW, 1 = hole) covering 10-30% of the image."""
    from restore import corrupt

    return corrupt.freeform_mask(height, width, coverage=(0.1, 0.3), generator=corrupt.make_generator(seed, "cpu"))


def task_batch(task: str, n: int, width: int, height: int) -> dict[str, torch.Tensor]:
    """What the ``restore`` command would hand the pipeline: NCHW on CPU (+ N1HW mask for inpainting)."""
    if task == "vae":
        digits = photo(width, height).mean(0, keepdim=True)
        return {"input": noisy(digits).expand(n, -1, -1, -1).contiguous()}
    clean = photo(width, height)
    if task == "colorize":
        gray = (clean * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
        return {"input": gray.expand(n, -1, -1, -1).contiguous()}
    if task == "inpaint":
        masks = torch.stack([hole_mask(width, height, seed=i) for i in range(n)])
        return {"input": clean.expand(n, -1, -1, -1).masked_fill(masks.bool(), 0.0).contiguous(), "mask": masks}
    return {"input": noisy(clean).expand(n, -1, -1, -1).contiguous()}


# =========================================================================== models


def task_class(module: Any) -> type:
    """The `restore.engine.task.Task` subclass a task module defines (its ``name`` equals the task's)."""
    from restore.engine.task import Task

    name = module.__name__.rsplit(".", 1)[-1]
    found = [
        v for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Task) and v is not Task and v.__module__ == module.__name__
    ]
    named = [c for c in found if getattr(c, "name", None) == name]
    if named or found:
        return (named or found)[0]
    raise SpeedError(f"{module.__name__}: defines no restore.engine.task.Task subclass to build a model from")


def _commands(text: str) -> list[str]:
    """Shell commands in a script docstring or YAML comment, with backslash continuations joined."""
    lines = [re.sub(r"^\s*#", "", ln).rstrip() for ln in text.splitlines()]
    out, cur = [], ""
    for ln in lines:
        if ln.endswith("\\"):
            cur += ln[:-1] + " "
        else:
            out.append(cur + ln)
            cur = ""
    if cur:
        out.append(cur)
    return out


def find_recipe(task: str, weights_name: str | None) -> Path | None:
    """The train config the shipped weights ``weights_name`` are made with, or None (task defaults).

    Looked up in the commands documented in ``train/<task>.py`` and
    ``train/configs/*.yaml`` that ``--export weights/NAME``; else
    ``train/configs/NAME.yaml``.
    """
    if not weights_name:
        return None
    export = re.compile(r"--export\s+(?:\S*/)?weights/" + re.escape(weights_name) + r"(?![\w.-])")
    configs = sorted((REPO / "train" / "configs").glob("*.y*ml"))
    script = REPO / "train" / f"{task}.py"
    sources = ([script] if script.is_file() else []) + configs
    for src in sources:
        try:
            text = src.read_text(encoding="utf-8")
        except OSError:
            continue
        for cmd in _commands(text):
            if not export.search(cmd):
                continue
            m = re.search(r"--config\s+(\S+)", cmd)
            if m:
                path = (REPO / m.group(1)).resolve()
                if path.is_file():
                    return path
            elif src.suffix in (".yaml", ".yml"):
                return src
    named = REPO / "train" / "configs" / f"{weights_name}.yaml"
    return named if named.is_file() else None


def _recipe_config(task_cls: type, recipe: Path | None) -> Any:
    """TrainConfig: TrainConfig defaults < task defaults < recipe YAML (the engine's own precedence)."""
    from restore.engine.config import TrainConfig, apply_dict, load_yaml

    cfg = TrainConfig()
    apply_dict(cfg, task_cls.defaults(), f"{task_cls.__name__}.defaults()")
    if recipe is not None:
        apply_dict(cfg, load_yaml(recipe), str(recipe))
    return cfg


def _arch_name(model: torch.nn.Module) -> str | None:
    from restore.models import ARCHITECTURES, resolve

    for name in ARCHITECTURES:
        try:
            if resolve(name) is type(model):
                return name
        except Exception:  # noqa: BLE001 - another architecture's import problem is not ours
            continue
    return None


def random_init_model(task: str, module: Any) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """The task's generator, randomly initialised with the shipped weights' recipe; (model, card, label)."""
    cls = task_class(module)
    name = default_weights(task)
    recipe = find_recipe(task, name)
    cfg = _recipe_config(cls, recipe)
    t = cls(cfg.task)
    torch.manual_seed(0)
    model = t.build_models()["G"]
    card = dict(t.model_card())
    card.setdefault("name", f"{name or task} (random init)")
    card.setdefault("arch", _arch_name(model))
    card.setdefault("config", dict(getattr(model, "config", {}) or {}))
    where = recipe.relative_to(REPO).as_posix() if recipe is not None else f"{cls.__name__}.defaults()"
    return model, card, f"random init ({where})"


def load_model(task: str, module: Any, weights: str | None, device: torch.device) -> tuple[torch.nn.Module, dict, str]:
    """Shipped/explicit weights when present, else `random_init_model`; on ``device``, eval, no grad."""
    from restore import weights as W

    name = weights or default_weights(task)
    model = None
    if name:
        try:
            W.resolve(name)
        except W.WeightsError:
            if weights:  # asked for explicitly: a missing file is an error, not a silent fallback
                raise
        else:
            model, card = W.load(name, device="cpu")
            label = str(card.get("name") or name)
    if model is None:
        model, card, label = random_init_model(task, module)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, card, label


def default_weights(task: str) -> str | None:
    """The weights ``restore <task>`` uses without ``--weights`` (VAE: the Fashion-MNIST denoising VAE)."""
    from restore import cli

    return cli.DEFAULT_WEIGHTS.get(task, "vae-fashion" if task == "vae" else None)


def default_tile() -> int:
    """The ``--tile`` default of the ``restore`` command and the API (what 'default tile' means for users)."""
    from restore.options import Options

    return int(Options().tile)


# =========================================================================== workers (fresh subprocesses)


def _time_calls(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> tuple[list[float], float]:
    """(timed seconds per call, first call seconds); CUDA peak stats reset after warm-up."""
    first = float("nan")
    for i in range(warmup):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i == 0:
            first = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    if warmup == 0 and times:
        first = times[0]
    return times, first


def _mem_result(device: torch.device, base_mb: float) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20, "base_mem_mb": base_mb,
                "mem_kind": "cuda max_memory_allocated"}
    return {"peak_mem_mb": _maxrss_mb(), "base_mem_mb": base_mb, "mem_kind": "process peak RSS"}


def _setup_worker(cfg: dict[str, Any]) -> torch.device:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = torch.device(cfg["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    return device


def restore_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """One restore configuration: load model, build the batch, warm up, time the restore pipeline."""
    from restore import tasks
    from restore.pipeline import Pipeline

    device = _setup_worker(cfg)
    task = cfg["task"]
    module = tasks.get(task)
    model, card, label = load_model(task, module, cfg.get("weights"), device)
    reference = None
    if cfg.get("backend", "torch") != "torch":  # [deployment, issue 23] the same pipeline on an exported graph
        from restore.backends import ExportedModel

        reference = Pipeline(model, card, task=task, device=device)
        model = ExportedModel.from_model(model, card, threads=cfg.get("threads"))
    if cfg["mode"] == "compile":
        model = torch.compile(model)
    width, height = cfg["size"]
    batch = task_batch(task, int(cfg["batch"]), width, height)
    pipeline = Pipeline(model, card, task=task, device=device)
    fields = pipeline.options_type.__dataclass_fields__
    values: dict[str, Any] = {"tile": int(cfg["tile"])} if "tile" in fields else {}
    ensemble = cfg.get("ensemble", "none")
    if ensemble != "none":
        if "ensemble" not in fields:
            raise RuntimeError(f"restore {task} has no --ensemble option")
        values["ensemble"] = ensemble
    options = pipeline.options(**values)
    base_mb = _rss_mb() if device.type == "cpu" else (
        torch.cuda.memory_allocated(device) / 2**20)

    def call() -> torch.Tensor:
        with torch.no_grad(), _autocast(device, cfg["dtype"]):
            return pipeline.run(batch["input"], batch.get("mask"), options).image

    times, first = _time_calls(call, device, int(cfg["warmup"]), int(cfg["repeats"]))
    n = int(cfg["batch"])
    med = _median(times)
    extra = {}
    if reference is not None:  # outputs compared with PyTorch eager's on the same batch (after timing)
        with torch.no_grad():
            ref = reference.run(batch["input"], batch.get("mask"), options).image
        out = call()
        extra = {"max_abs_diff": float((out - ref).abs().max()),
                 "u8_differ": float(((out * 255).round() != (ref * 255).round()).float().mean())}
    return {"model": label, "images_per_s": n / med, "ms_per_image": 1000.0 * med / n, "runs": len(times),
            "first_call_s": first, **_mem_result(device, base_mb), "status": "ok", **extra}


class _Synthetic(torch.utils.data.Dataset):
    """In-memory training items shaped like the task's own dataset's (data loading excluded from timing)."""

    def __init__(self, channels: int, size: int, n: int = 64) -> None:
        self.channels, self.size, self.n = channels, size, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {"target": torch.rand(self.channels, self.size, self.size, generator=g),
                "label": torch.tensor(i % 10, dtype=torch.int64)}


def train_item_shape(task: str, options: dict[str, Any]) -> tuple[int, int, int]:
    """(channels, item side, side G trains at) of the task's training data, from its options."""
    if task == "vae" or options.get("dataset") == "fashion-mnist":
        return 1, 28, 28
    if task == "inpaint":  # crops of patch x max(scale_range), area-resized to the patch on the device
        patch = int(options["patch_size"])
        return 3, int(math.ceil(patch * float(options.get("scale_range", [1.0, 1.0])[1]))), patch
    if task == "colorize":
        return 3, int(options["crop_size"]), int(options["crop_size"])
    patch = int(options.get("patch_size", 256))
    return 3, patch, patch


def train_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Time ``Trainer.train_step`` for one task / precision with the recipe of its shipped weights."""
    from restore import tasks
    from restore.engine.config import apply_dict
    from restore.engine.trainer import Trainer

    device = _setup_worker(cfg)
    task = cfg["task"]
    module = tasks.get(task)
    cls = task_class(module)
    recipe = find_recipe(task, default_weights(task))
    tcfg = _recipe_config(cls, recipe)
    if cfg.get("size"):
        key = {"colorize": "crop_size"}.get(task, "patch_size")
        if key in cls.defaults().get("task", {}):
            tcfg.task[key] = int(cfg["size"])
    with tempfile.TemporaryDirectory(prefix="restore-speed-train-") as tmp:
        apply_dict(tcfg, {
            "data": "(in-memory tensors)", "out": tmp, "steps": int(cfg["warmup"]) + int(cfg["repeats"]) + 1,
            "batch_size": int(cfg["batch"]), "num_workers": 0, "device": cfg["device"], "amp": cfg["dtype"],
            "channels_last": bool(cfg["channels_last"]), "compile": cfg["mode"] == "compile", "progress": False,
        }, "eval/speed.py")
        t = cls(tcfg.task)
        channels, side, patch = train_item_shape(task, t.options)
        trainer = Trainer(t, tcfg, _Synthetic(channels, side))
        base_mb = _rss_mb() if device.type == "cpu" else torch.cuda.memory_allocated(device) / 2**20
        it = iter(trainer.loader)

        def step() -> None:
            nonlocal it
            try:
                raw = next(it)
            except StopIteration:
                it = iter(trainer.loader)
                raw = next(it)
            trainer.train_step(raw)

        try:
            times, first = _time_calls(step, device, int(cfg["warmup"]), int(cfg["repeats"]))
        finally:
            trainer.logger.close()
    label = f"recipe {recipe.relative_to(REPO).as_posix() if recipe else cls.__name__ + '.defaults()'}"
    n = int(cfg["batch"])
    med = _median(times)
    return {"model": label, "size": [patch, patch], "images_per_s": n / med,
            "ms_per_image": 1000.0 * med / n, "runs": len(times), "first_call_s": first,
            **_mem_result(device, base_mb),
            "status": "ok" if trainer.bad_steps == 0 else f"ok ({trainer.bad_steps} non-finite steps skipped)"}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"restore": restore_worker, "train": train_worker}


def worker_main(payload: str) -> int:
    """Entry of a fresh subprocess: run one configuration, print one tagged JSON line."""
    cfg = json.loads(payload)
    try:
        result = WORKERS[cfg["kind"]](cfg)
    except Exception as e:  # noqa: BLE001 - reported as this configuration's status, the run goes on
        oom = "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"
        result = {"status": ("oom: " if oom else "failed: ") + f"{type(e).__name__}: {e}".splitlines()[0][:300]}
        traceback.print_exc(file=sys.stderr)
    print(_RESULT_TAG + json.dumps(result, default=float), flush=True)
    return 0


def spawn(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one configuration in a fresh Python process (own RSS high-water mark); never raises."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {"status": f"failed: timed out after {timeout:g} s (--timeout)"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": f"failed: worker exited with status {proc.returncode}: {tail[:300]}"}


# =========================================================================== baselines (in this process)


def time_baselines(size: tuple[int, int], repeats: int, names: Sequence[str]) -> list[dict[str, Any]]:
    """Time the classical baselines on the benchmark photo (CPU), after a warm-up on a small crop."""
    rows = []
    try:
        from eval import baselines as B
    except Exception as e:  # noqa: BLE001
        return [_row("baselines", BASELINES[n], model=n, status=f"skipped: eval.baselines does not import ({e})")
                for n in names]
    width, height = size
    clean = photo(width, height)
    inputs = {"denoise": noisy(clean), "inpaint": clean.masked_fill(hole_mask(width, height).bool(), 0.0)}
    info = {"denoise": {"sigma": BASELINE_SIGMA}, "inpaint": {"mask": hole_mask(width, height)}}
    for name in names:
        task = BASELINES[name]
        try:
            b = B.get(name)
            small = inputs[task][:, :32, :32]
            small_info = {**info[task], **({"mask": info[task]["mask"][:, :32, :32]} if "mask" in info[task] else {})}
            b.fn(small, small_info)  # loads libraries, fills caches: not part of the timed runs
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                b.fn(inputs[task], info[task])
                times.append(time.perf_counter() - t0)
            med = _median(times)
            rows.append(_row("baselines", task, model=b.label, device="cpu", dtype="-", mode="-", batch=1,
                             size=size_text(size), images_per_s=1.0 / med, ms_per_image=1000.0 * med,
                             runs=len(times), status="ok", baseline=name))
        except Exception as e:  # noqa: BLE001
            rows.append(_row("baselines", task, model=name, size=size_text(size),
                             status=f"failed: {type(e).__name__}: {e}", baseline=name))
        _progress(rows[-1])
    return rows


# =========================================================================== the huge file through the CLI


def _children(pid: int) -> list[int]:
    out = []
    for task_dir in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task_dir / "children").read_text().split()]
        except OSError:
            continue
    return out


def _tree_rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Sum of ``field`` (VmRSS, or the high-water mark VmHWM) over ``pid`` and its descendants (Linux /proc)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1]) / 1024.0
                    break
        except OSError:
            continue
        todo += _children(p)
    return total


def run_tree(cmd: list[str], timeout: float) -> tuple[int, float, float, str]:
    """Run ``cmd``; return (exit status, wall seconds, peak RSS MB of the process tree, stderr tail).

    The peak is the larger of the summed high-water marks (VmHWM) and the
    largest summed VmRSS over the live tree, sampled every 20 ms, so neither one
    big process nor several concurrent ones are missed. ``wait4``'s ru_maxrss is
    not used: Linux carries the forking parent's RSS into the child's ru_maxrss
    at exec, so a benchmark started from a 1.3 GB pytest process would report
    >= 1.3 GB whatever it used.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=str(REPO))
        peak = 0.0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss_mb(proc.pid), _tree_rss_mb(proc.pid, "VmHWM"))
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        status = None
        deadline = time.monotonic() + timeout
        while status is None:
            pid, st, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(st)
            elif time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                status = -9
            else:
                time.sleep(0.02)
        proc.returncode = status
        done.set()
        sampler.join()
        wall = time.perf_counter() - t0
        err.seek(0)
        tail = " | ".join(err.read().strip().splitlines()[-3:])
    return status, wall, peak, tail


def huge_file(size: tuple[int, int], folder: Path) -> Path:
    """Write the benchmark photo at ``size`` with sigma-25 noise as a PNG (fast compression); return its path."""
    import cv2

    width, height = size
    path = folder / f"huge-{width}x{height}.png"
    rng = np.random.default_rng(0)
    img = photo_u8(width, height).astype(np.int16)
    for y in range(0, height, 512):  # in bands: the int16 noise of 24 MP would be another 144 MB at once
        band = img[y : y + 512]
        band += np.rint(rng.normal(0.0, BASELINE_SIGMA, band.shape)).astype(np.int16)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise SpeedError(f"{path}: could not write the test image")
    return path


def weights_for_cli(task: str, weights: str | None, folder: Path) -> tuple[str, str]:
    """A weights name/file the ``restore`` command can load: shipped, or the random-init model saved to ``folder``."""
    from restore import tasks
    from restore import weights as W

    module = tasks.get(task)
    name = weights or default_weights(task)
    if name:
        try:
            W.resolve(name)
            return name, name
        except W.WeightsError:
            if weights:
                raise
    model, card, label = random_init_model(task, module)
    card = {k: v for k, v in card.items() if k not in ("sha256", "size_bytes", "created", "card_format")}
    card["name"] = f"{task}-speed-random"
    path = W.save(folder / card["name"], model, card)
    return str(path), label


#: tasks the ``huge`` section runs through the CLI (the others restore 28x28 images)
HUGE_TASKS = ("denoise", "colorize", "inpaint")


def huge_mask(src: Path, size: tuple[int, int], folder: Path) -> Path:
    """A seeded free-form mask (25-30% holes) for ``src``, as ``restore inpaint --masks`` finds it; returns the folder."""
    import cv2

    from restore import corrupt

    width, height = size
    mask = corrupt.apply(torch.zeros(1, 1, height, width), "mask:freeform,coverage=0.25-0.3", 0).mask
    masks = folder / "masks"
    masks.mkdir()
    if not cv2.imwrite(str(masks / src.name), (mask[0, 0].numpy() > 0).astype(np.uint8) * 255):
        raise SpeedError(f"{masks / src.name}: could not write the test mask")
    return masks


def time_huge(task: str, size: tuple[int, int], device: torch.device, weights: str | None,
              timeout: float) -> dict[str, Any]:
    """``restore TASK FILE OUT`` on a ``size`` photo: wall time and peak RSS of the process tree."""
    with tempfile.TemporaryDirectory(prefix="restore-speed-huge-") as tmp:
        folder = Path(tmp)
        try:
            src = huge_file(size, folder)
            w, label = weights_for_cli(task, weights, folder)
            extra = ["--masks", str(huge_mask(src, size, folder))] if task == "inpaint" else []
        except Exception as e:  # noqa: BLE001
            return _row("huge", task, size=size_text(size), status=f"failed: {type(e).__name__}: {e}")
        out = folder / "out.png"
        cmd = [sys.executable, "-m", "restore.cli", task, str(src), str(out), "--weights", w,
               "--device", device.type, "--overwrite", *extra]
        status, wall, peak, tail = run_tree(cmd, timeout)
        ok = status == 0 and out.is_file()
        verdict = "ok" if ok else f"failed: exit status {status}: {tail[:300]}"
        if ok:
            verdict += f" ({'<' if peak < HUGE_LIMIT_GB * 1024 else '>='} {HUGE_LIMIT_GB:g} GB)"
        return _row("huge", task, model=label, device=device.type, dtype="fp32", mode="eager", batch=1,
                    size=size_text(size), tile=default_tile(), images_per_s=1.0 / wall if ok else None,
                    ms_per_image=1000.0 * wall if ok else None, runs=1, peak_mem_mb=peak,
                    mem_kind="process-tree peak RSS (restore CLI: read + restore + write)", status=verdict,
                    command=shlex.join(["restore"] + cmd[3:]))


# =========================================================================== rows and reports


def _row(section: str, task: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(section=section, task=task)
    row.update(kw)
    return row


def _progress(row: dict[str, Any], index: int | None = None, total: int | None = None) -> None:
    where = f"[{index}/{total}] " if index is not None else ""
    keys = ("section", "task", "model") if row["section"] == "baselines" else ("section", "task", "device", "dtype", "mode")
    what = " ".join(str(row[k]) for k in keys if row.get(k) not in (None, "-"))
    dims = f"b{row['batch']} {row['size']}" if row.get("batch") else str(row.get("size") or "")
    res = ""
    if row.get("images_per_s") is not None:
        res = f"{row['images_per_s']:.3g} img/s"
        if row.get("peak_mem_mb") is not None:
            res += f", peak {row['peak_mem_mb']:.0f} MB"
    print(f"{where}{what} {dims}: {res or row.get('status')}"
          + (f" [{row['status']}]" if res and row.get("status") not in (None, "ok") else ""), file=sys.stderr, flush=True)


def add_ratios(rows: list[dict[str, Any]], baseline_size: str) -> None:
    """x_<baseline> = a model row's images/s over that baseline's, same image size (same run)."""
    speed = {r.get("baseline"): r["images_per_s"] for r in rows
             if r["section"] == "baselines" and r.get("images_per_s") and r.get("size") == baseline_size}
    for r in rows:
        if r["section"] not in ("restore", "huge") or not r.get("images_per_s") or r.get("size") != baseline_size:
            continue
        for name, task in BASELINES.items():
            if task == r["task"] and speed.get(name):
                r[f"x_{name}"] = r["images_per_s"] / speed[name]


def issue6_lines(rows: list[dict[str, Any]], baseline_size: str) -> list[str]:
    """The two issue-6 checks, stated with the figures they rest on."""
    lines = []
    cand = [r for r in rows if r["section"] == "restore" and r["task"] == "denoise" and r["device"] == "cpu"
            and r["size"] == baseline_size and r["dtype"] == "fp32" and r["mode"] == "eager" and r.get("x_cbm3d")]
    if cand:
        r = min(cand, key=lambda r: r["batch"])
        ok = r["x_cbm3d"] >= ISSUE6_SPEEDUP
        lines.append(f"- Issue 6, speed: the denoiser ({r['model']}) restores a {baseline_size} photo at "
                     f"{r['images_per_s']:.3g} images/s on this CPU (batch {r['batch']}, fp32), "
                     f"**{r['x_cbm3d']:.1f}x CBM3D** (required >= {ISSUE6_SPEEDUP:g}x): {'PASS' if ok else 'FAIL'}.")
    else:
        lines.append(f"- Issue 6, speed: not measured in this run (needs the denoise task on CPU, fp32, eager, at "
                     f"{baseline_size}, and the CBM3D baseline).")
    for r in rows:  # the same check for each self-ensemble timed (restore denoise --ensemble MODE)
        if (r["section"] == "restore" and r["task"] == "denoise" and r["device"] == "cpu"
                and r["size"] == baseline_size and r["dtype"] == "fp32" and r.get("x_cbm3d")
                and str(r["mode"]).startswith("eager, ensemble ")):
            ens = str(r["mode"]).rsplit(" ", 1)[-1]
            lines.append(f"- Issue 6, speed with `--ensemble {ens}` (batch {r['batch']}): {r['images_per_s']:.3g} "
                         f"images/s, **{r['x_cbm3d']:.1f}x CBM3D**: "
                         f"{'PASS' if r['x_cbm3d'] >= ISSUE6_SPEEDUP else 'FAIL'}.")
    huge = [r for r in rows if r["section"] == "huge" and r["task"] == "denoise" and r.get("peak_mem_mb")
            and str(r["status"]).startswith("ok")]
    for r in huge:
        ok = r["peak_mem_mb"] < HUGE_LIMIT_GB * 1024
        lines.append(f"- Issue 6, memory: `restore denoise` on a {r['size']} photo peaked at "
                     f"**{r['peak_mem_mb'] / 1024:.2f} GB** RSS ({r['device']}, {r['ms_per_image'] / 1000:.1f} s end to "
                     f"end; required < {HUGE_LIMIT_GB:g} GB): {'PASS' if ok else 'FAIL'}.")
    return lines


def _fmt(v: Any, key: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        if key.startswith("x_"):
            return f"{v:.2f}x"
        if key in ("peak_mem_mb", "base_mem_mb", "ms_per_image"):
            return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
        return f"{v:.3g}"
    return str(v).replace("|", "/")


_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "baselines": ("Classical baselines (CPU, same photo, same run)",
                  ("task", "model", "size", "images_per_s", "ms_per_image", "runs", "status")),
    "restore": ("Restoring (the restore pipeline, as the `restore` command runs it)",
                ("task", "model", "device", "dtype", "mode", "batch", "size", "tile", "images_per_s", "ms_per_image",
                 "first_call_s", "peak_mem_mb", "base_mem_mb", "x_cbm3d", "x_nlm", "x_telea", "status")),
    "tiled": ("Tiled restoration of a large image (fresh process)",
              ("task", "model", "device", "size", "tile", "ms_per_image", "peak_mem_mb", "base_mem_mb", "status")),
    "huge": ("A huge photo end to end through `restore TASK` (read, restore, write)",
             ("task", "model", "device", "size", "tile", "ms_per_image", "peak_mem_mb", "status")),
    "train": ("Training (`Trainer.train_step`, in-memory data)",
              ("task", "model", "device", "dtype", "mode", "batch", "size", "images_per_s", "ms_per_image",
               "peak_mem_mb", "status")),
}


def backend_lines(rows: list[dict[str, Any]]) -> list[str]:
    """[deployment, issue 23] Megapixels/s of torch eager vs onnxruntime on the same photos, and how far apart."""
    def key(r: dict[str, Any]) -> tuple:
        return r["task"], r["device"], r["dtype"], r["batch"], r["size"], r["tile"]

    ort = {key(r): r for r in rows if r["section"] == "restore" and r.get("mode") == "onnxruntime"
           and r.get("images_per_s")}
    if not ort:
        return []
    out = ["## Backends: torch eager vs onnxruntime (same pipeline, same photos, same run)", "",
           "| task | size | batch | tile | torch MP/s | onnxruntime MP/s | onnxruntime / torch | max abs diff "
           "| 8-bit pixels that differ |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o = ort.get(key(r))
        if r["section"] != "restore" or r.get("mode") != "eager" or not r.get("images_per_s") or o is None:
            continue
        w, h = (int(v) for v in str(r["size"]).split("x"))
        mp_t, mp_o = r["images_per_s"] * w * h / 1e6, o["images_per_s"] * w * h / 1e6
        out.append(f"| {r['task']} | {r['size']} | {r['batch']} | {r['tile']} | {mp_t:.3g} | {mp_o:.3g} | "
                   f"{mp_o / mp_t:.2f}x | {o.get('max_abs_diff', float('nan')):.2g} | "
                   f"{100 * o.get('u8_differ', float('nan')):.3g}% |")
    return out + [""]


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The report: machine, command, issue-6 checks, then one table per section."""
    out = ["# restore speed and memory", ""]
    out.append(f"Command: `{meta['command']}`  ")
    out.append(f"Date: {meta['date']}; git {meta['git']}; torch {meta['torch']}; {meta['cpu']} "
               f"({meta['cpu_count']} logical CPUs, torch threads {meta['torch_threads']}); "
               f"GPU: {meta['gpu'] or 'none'}; load average {meta['load_start']} at start, {meta['load_end']} at end.")
    out.append("")
    out.append(f"Each figure is the median of the timed runs after warm-up (restore: {meta['repeats']} runs, "
               f"{meta['warmup']} warm-up). Memory: `process peak RSS` is the high-water mark of a fresh process "
               "running only that configuration (base = after imports, model and inputs, before the first call); "
               "on CUDA `torch.cuda.max_memory_allocated` over the timed runs (base = allocated before them). "
               "`x_<baseline>` = images/s over that baseline's on the same photo size in this run.")
    out.append("")
    out += issue6_lines(rows, meta["baseline_size"])
    out.append("")
    out += backend_lines(rows)
    for section, (title, cols) in _TABLES.items():
        sec = [r for r in rows if r["section"] == section]
        if not sec:
            continue
        out += [f"## {title}", ""]
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join("---" for _ in cols) + "|")
        for r in sec:
            out.append("| " + " | ".join(_fmt(r.get(c), c) for c in cols) + " |")
        cmds = sorted({r["command"] for r in sec if r.get("command")})
        if cmds:
            out += [""] + [f"`{c}`" for c in cmds]
        out.append("")
    return "\n".join(out)


def write_reports(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> dict[str, Path]:
    """speed.md, speed.csv (COLUMNS), speed.json (meta + rows); written atomically."""
    from restore.io.atomic import atomic_output

    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "speed.md", "csv": out / "speed.csv", "json": out / "speed.json"}
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
    with atomic_output(paths["md"]) as tmp:
        Path(tmp).write_text(markdown(clean, meta) + "\n", encoding="utf-8")
    with atomic_output(paths["csv"]) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
            w.writeheader()
            for r in clean:
                w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    with atomic_output(paths["json"]) as tmp:
        Path(tmp).write_text(json.dumps({"meta": meta, "columns": list(COLUMNS), "rows": clean}, indent=1,
                                        default=str) + "\n", encoding="utf-8")
    return paths


# =========================================================================== driver


QUICK = {"sizes": "64", "batch_sizes": "1", "dtypes": "fp32", "modes": "eager", "repeats": 2, "warmup": 1,
         "baseline_size": "96x64", "baseline_repeats": 1, "tiled_size": "192", "tiled_tile": 64,
         "train_batch": 2, "train_size": 64, "train_repeats": 2, "huge_size": "160x96", "vae_batch_sizes": "1"}


def build_parser() -> argparse.ArgumentParser:
    p = eval_parser(
        "Speed and memory of restore (restoring, baselines, tiling, training); writes speed.md/.csv/.json.\n\n"
        "Run on a quiet machine (or under `nice`) and compare ratios, not absolute figures, across runs.",
        "speed",
        out={"type": str, "default": str(DEFAULT_OUT), "help": "output folder (default eval/results/speed)"},
        device={"default": "auto", "choices": ("auto", "cpu", "cuda"),
                "help": "model device (baselines always run on CPU); auto = cuda when present"},
        weights={"action": "append", "default": [], "metavar": "TASK=NAME|FILE",
                 "help": "use these weights for TASK instead of its shipped default (repeatable)"},
    )
    p.add_argument("--tasks", default=None, help="comma list of tasks (default: all of restore.tasks.TASKS)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma list of {', '.join(SECTIONS)} (default: all) and huge (the 6000x4000 CLI runs, "
                        "also added by --huge)")
    p.add_argument("--sizes", default=None, help="image sizes N or WxH (default 256,512,768x512)")
    p.add_argument("--batch-sizes", default=None, help="restore batch sizes (default 1,4)")
    p.add_argument("--vae-batch-sizes", default=None, help="batch sizes of the 28x28 VAE (default 1,256)")
    p.add_argument("--dtypes", default=None, help="fp32, bf16 (autocast) or both (default fp32,bf16)")
    p.add_argument("--modes", default=None, help="eager, compile (torch.compile) or both (default: eager on CPU, "
                                                  "eager,compile on CUDA)")
    p.add_argument("--backends", default="torch", help="restore section: torch (eager/compile) and/or "
                   "onnxruntime (the model exported to ONNX, CPU), e.g. torch,onnxruntime")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per figure, median reported (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls (default 1; 2 when compiling)")
    p.add_argument("--tile", type=int, default=None, help="restore tile side (default: the restore command's)")
    p.add_argument("--ensembles", default=None,
                   help="restore --ensemble modes to time: none, flip, x8 or a comma list (default none; "
                        "not the VAE)")
    p.add_argument("--baseline-size", default=None, help="photo size of the baseline comparison (default 768x512)")
    p.add_argument("--baseline-repeats", type=int, default=None, help="timed baseline runs (default 3)")
    p.add_argument("--tiled-size", default=None, help="large image of the tiled run (default 4096)")
    p.add_argument("--tiled-tile", type=int, default=None, help="tile of the tiled run (default: the command's)")
    p.add_argument("--huge", action="store_true", help="also time `restore denoise` on a 6000x4000 PNG end to end")
    p.add_argument("--huge-size", default=None, help="size(s) of the --huge photo: WxH or a comma list "
                                                     "(default 6000x4000)")
    p.add_argument("--train-batch", type=int, default=None, help="training batch size (default 4 on CPU, 16 on CUDA)")
    p.add_argument("--train-size", type=int, default=None, help="training patch side (default: the recipe's)")
    p.add_argument("--train-repeats", type=int, default=None, help="timed training steps (default 5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the workers (default: torch's)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration before it is failed")
    p.add_argument("--quick", action="store_true", help="tiny settings (tests, smoke runs): "
                   + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def _settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    quick = QUICK if args.quick else {}

    def pick(name: str, default: Any) -> Any:
        v = getattr(args, name)
        return v if v is not None else quick.get(name, default)

    s: dict[str, Any] = {
        "sizes": [parse_size(t) for t in _csv_list(pick("sizes", "256,512,768x512"), "--sizes")],
        "batch_sizes": _int_list(pick("batch_sizes", "1,4"), "--batch-sizes"),
        "vae_batch_sizes": _int_list(pick("vae_batch_sizes", "1,256"), "--vae-batch-sizes"),
        "dtypes": _csv_list(pick("dtypes", "fp32,bf16"), "--dtypes", DTYPES),
        "modes": _csv_list(pick("modes", "eager" if device.type == "cpu" else "eager,compile"), "--modes", MODES),
        "repeats": pick("repeats", 5),
        "baseline_size": parse_size(pick("baseline_size", "768x512")),
        "baseline_repeats": pick("baseline_repeats", 3),
        "tiled_size": parse_size(pick("tiled_size", "4096")),
        "huge_size": [parse_size(t) for t in _csv_list(pick("huge_size", "6000x4000"), "--huge-size")],
        "train_batch": pick("train_batch", 16 if device.type == "cuda" else 4),
        "train_size": pick("train_size", None),
        "train_repeats": pick("train_repeats", 5),
        "sections": _csv_list(args.sections, "--sections", SECTIONS + ("huge",)),
        "ensembles": _csv_list(pick("ensembles", "none"), "--ensembles", ENSEMBLES),
        "backends": _csv_list(args.backends, "--backends", ("torch", "onnxruntime")),
    }
    if "onnxruntime" in s["backends"] and device.type != "cpu":
        raise SpeedError("--backends onnxruntime: runs on the CPU only (use --device cpu)")
    s["warmup"] = pick("warmup", 2 if "compile" in s["modes"] else 1)
    tile = args.tile if args.tile is not None else default_tile()
    s["tile"] = tile
    s["tiled_tile"] = pick("tiled_tile", tile)
    for key in ("repeats", "baseline_repeats", "train_batch", "train_repeats"):
        if int(s[key]) < 1:
            raise SpeedError(f"--{key.replace('_', '-')}: must be >= 1, got {s[key]}")
    if int(s["warmup"]) < 0 or int(s["tile"]) < 0 or int(s["tiled_tile"]) < 0:
        raise SpeedError("--warmup, --tile and --tiled-tile must be >= 0")
    if s["train_size"] is not None and int(s["train_size"]) < 8:
        raise SpeedError(f"--train-size: must be >= 8 pixels, got {s['train_size']}")
    if "compile" in s["modes"] and device.type == "cuda":
        pass  # inductor ships with torch for CUDA
    return s


def _check_tasks(names: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Import each task's restorer and training module here (cheap) so one that is missing is reported, not fatal."""
    from restore import tasks
    from restore.options import OptionError
    from restore.pipeline import restorer_class

    ok, broken = {}, {}
    for name in names:
        try:
            module = tasks.get(name)  # KeyError names the known tasks
            restorer_class(name)
            ok[name] = module
        except (KeyError, OptionError) as e:
            raise SpeedError(f"--tasks: {e.args[0]}") from None
        except Exception as e:  # noqa: BLE001 - a task being written right now may not import yet
            broken[name] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    return ok, broken


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 done (individual failures are rows), 2 usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    try:
        return _run(args, argv)
    except SpeedError as e:
        print(f"eval/speed.py: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    from restore import tasks as task_registry

    device = resolve_device(args.device)
    s = _settings(args, device)
    weights: dict[str, str] = {}
    for item in args.weights:
        task, sep, w = item.partition("=")
        if not sep or not w:
            raise SpeedError(f"--weights {item!r}: expected TASK=NAME|FILE")
        weights[task.strip()] = w.strip()
    names = _csv_list(args.tasks, "--tasks") if args.tasks else list(task_registry.TASKS)
    modules, broken = _check_tasks(names)
    unknown_w = sorted(set(weights) - set(names))
    if unknown_w:
        raise SpeedError(f"--weights: task(s) {', '.join(unknown_w)} not in --tasks")
    out = Path(args.out)
    meta = provenance.machine_info(device)
    meta["command"] = shlex.join(["python", "eval/speed.py"] + list(sys.argv[1:] if argv is None else argv))
    meta.update(repeats=s["repeats"], warmup=s["warmup"], baseline_size=size_text(s["baseline_size"]),
                device=device.type, sections=s["sections"] + (["huge"] if args.huge and "huge" not in s["sections"] else []))
    common = {"device": device.type, "threads": args.threads or None, "warmup": s["warmup"], "repeats": s["repeats"]}
    rows: list[dict[str, Any]] = []

    for name, why in broken.items():
        rows.append(_row("restore", name, status=f"skipped: task module does not import ({why})"))
        _progress(rows[-1])

    if "baselines" in s["sections"]:
        wanted = [b for b, t in BASELINES.items() if t in names]
        rows += time_baselines(s["baseline_size"], int(s["baseline_repeats"]), wanted)

    jobs: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (worker cfg, row fields)
    if "restore" in s["sections"]:
        for task in modules:
            sizes = [VAE_SIZE] if task == "vae" else s["sizes"]
            batches = s["vae_batch_sizes"] if task == "vae" else s["batch_sizes"]
            for size in sizes:
                for batch in batches:
                    for dtype in s["dtypes"]:
                        for mode in s["modes"]:
                            for ens in (["none"] if task == "vae" else s["ensembles"]):
                                cfg = {**common, "kind": "restore", "task": task, "size": list(size), "batch": batch,
                                       "dtype": dtype, "mode": mode, "tile": s["tile"], "weights": weights.get(task),
                                       "ensemble": ens}
                                jobs.append((cfg, {"section": "restore"}))
    # [deployment, issue 23] each restore configuration once per backend (onnxruntime: eager configurations only)
    jobs = [({**cfg, "backend": b}, f) for cfg, f in jobs for b in s["backends"]
            if b == "torch" or cfg["mode"] == "eager"]
    if "tiled" in s["sections"] and "denoise" in modules:
        cfg = {**common, "kind": "restore", "task": "denoise", "size": list(s["tiled_size"]), "batch": 1,
               "dtype": "fp32", "mode": "eager", "tile": s["tiled_tile"], "weights": weights.get("denoise"),
               "warmup": 0, "repeats": 1}
        jobs.append((cfg, {"section": "tiled"}))
    if "train" in s["sections"]:
        for task in modules:
            for dtype in s["dtypes"]:
                cfg = {**common, "kind": "train", "task": task, "batch": s["train_batch"], "dtype": dtype,
                       "mode": "eager", "channels_last": dtype == "bf16" and device.type == "cuda",
                       "size": s["train_size"], "repeats": s["train_repeats"]}
                jobs.append((cfg, {"section": "train"}))

    total = len(jobs)
    for i, (cfg, fields) in enumerate(jobs, 1):
        result = spawn(cfg, args.timeout)
        size = result.pop("size", cfg.get("size"))
        row = _row(fields["section"], cfg["task"], device=cfg["device"], dtype=cfg["dtype"], mode=cfg["mode"],
                   batch=cfg["batch"], size=size_text(size) if size else None,
                   tile=cfg.get("tile") if cfg["kind"] == "restore" else None)
        if cfg["kind"] == "train" and cfg.get("channels_last"):
            row["mode"] = "eager, channels_last"
        if cfg.get("backend", "torch") != "torch":
            row["mode"] = cfg["backend"]
        if cfg.get("ensemble", "none") != "none":
            row["mode"] = f"{row['mode']}, ensemble {cfg['ensemble']}"
        row.update({k: v for k, v in result.items() if k in COLUMNS or k in ("max_abs_diff", "u8_differ")})
        rows.append(row)
        _progress(row, i, total)

    if args.huge or "huge" in s["sections"]:
        for size, task in ((z, t) for z in s["huge_size"] for t in HUGE_TASKS if t in names):
            if task in modules:
                print(f"huge: restore {task} on a {size_text(size)} PNG ...", file=sys.stderr, flush=True)
                rows.append(time_huge(task, size, device, weights.get(task), args.timeout))
            else:
                rows.append(_row("huge", task, status=f"skipped: the {task} task does not import"))
            _progress(rows[-1])

    add_ratios(rows, size_text(s["baseline_size"]))
    meta["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    paths = write_reports(rows, meta, out)
    for line in issue6_lines(rows, meta["baseline_size"]):
        print(line.replace("**", ""), file=sys.stderr)
    print(f"wrote {paths['md']}, {paths['csv'].name}, {paths['json'].name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
