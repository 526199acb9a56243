"""Training configuration: dataclasses that round-trip through YAML.

Precedence (lowest first): `TrainConfig` defaults < the task's
`Task.defaults()` < ``--config`` YAML < command-line flags and ``--set k=v``.
``task`` options merge at every depth, so ``--set task.unet.base_channels=16``
changes that one argument and keeps the rest of the YAML's ``task.unet``.
Unknown keys are errors naming the key and its source, so a typo never
silently trains with a default.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad configuration key or value (the message names the key and where it came from)."""


#: the models a task can build (`Task.build_models`), hence the only legal keys under ``optim``
MODEL_NAMES = ("G", "D")
#: LR schedule kinds (``optim.<model>.schedule``) and anneal kinds, implemented by `restore.engine.schedule`,
#: which imports them from here (the dependency goes one way: schedule -> config)
SCHEDULES = ("constant", "step", "cosine", "linear")
ANNEALS = ("linear", "cosine", "constant")
#: ``device`` values the trainer can run on
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class YAMLLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``5e-3`` / ``1e-4`` / ``1.0e38`` as floats (YAML 1.2).

    PyYAML implements YAML 1.1, whose floats need a dot (``5.0e-3``): ``lambda_adv:
    5e-3`` would otherwise arrive as the string '5e-3' and be rejected (or kept
    as a string) wherever the value is not coerced by a dataclass field.
    """


YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (`YAMLLoader`)."""
    return yaml.load(text, Loader=YAMLLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class OptimConfig:
    """Optimiser + schedule + clipping of one model (``optim.G``, ``optim.D``)."""

    name: str = "adam"                 # adam | adamw
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"         # constant | step | cosine | linear
    schedule_unit: str = "steps"       # steps | epochs (for step_size / warmup / decay_start)
    warmup: int = 0
    step_size: int = 0                 # 'step': multiply by gamma every step_size units
    gamma: float = 0.1                 # 0.1 = "/10"
    decay_start: int = -1              # 'linear': start of the decay (-1 = half of training)
    min_lr_factor: float = 0.0         # 'cosine'/'linear' end value, as a factor of lr
    grad_clip: float = 0.0             # max global grad norm (0 = off)


@dataclass
class TrainConfig:
    data: str = ""
    out: str = "runs/default"
    task: dict[str, Any] = field(default_factory=dict)
    # length: steps wins when > 0, else epochs
    steps: int = 0
    epochs: int = 0
    batch_size: int = 16
    val_batch_size: int = 0            # 0 = batch_size
    num_workers: int = 2
    drop_last: bool = True
    seed: int = 0
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    amp: str = "fp32"                  # fp32 | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    optim: dict[str, OptimConfig] = field(default_factory=lambda: {"G": OptimConfig(), "D": OptimConfig()})
    # GAN
    d_steps: int = 1                   # D updates per G update
    d_noise_std: float = 0.0           # instance noise std at step 0 (image scale)
    d_noise_anneal_steps: int = 0      # std -> 0 over this many steps (0 = constant)
    d_noise_anneal: str = "linear"     # linear | cosine
    # EMA
    ema: bool = True
    ema_decay: float = 0.999
    ema_warmup: bool = True
    # NaN guard
    max_bad_steps: int = 20            # consecutive non-finite steps before stopping
    # collapse watch
    collapse_watch: bool = True
    collapse_window: int = 500
    collapse_d_loss: float = 0.05
    collapse_gap: float = 0.9
    collapse_fraction: float = 0.9     # share of the window D must be saturated
    collapse_min_rise: float = 0.1     # G adv loss: 2nd-half mean - 1st-half mean > this x |1st-half mean|
    collapse_rollback: bool = False
    collapse_d_lr_factor: float = 0.5
    collapse_max_rollbacks: int = 3
    # validation / logging / checkpoints
    val_every: int = 1000
    val_batches: int = 0               # 0 = the whole validation set
    log_every: int = 50
    image_every: int = 500
    ckpt_every: int = 1000
    keep_last: int = 3
    progress: bool = True
    # a run resumed with another length (more epochs/steps): 'continue' decays from the LR
    # reached to the schedule's end value over the new remaining steps; 'redraw' re-draws
    # the whole cosine/linear curve for the new length (the LR jumps back up: a warm restart)
    resume_schedule: str = "continue"  # continue | redraw
    # a fresh run starts its generator (and EMA) from these weights: a shipped name or a .safetensors
    # file (fine-tuning on one's own photos, or a GAN stage after a pixel-loss pre-training, as ESRGAN
    # does); a resume takes the weights from its checkpoint instead
    init_weights: str = ""

    # ---- conversion ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe nested dict (tuples become lists)."""
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "TrainConfig":
        cfg = cls()
        apply_dict(cfg, d, source)
        cfg.validate()
        return cfg

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"config {key}: {why}")

        if self.amp not in ("fp32", "bf16", "fp16"):
            raise bad("amp", f"must be fp32, bf16 or fp16, got {self.amp!r}")
        if self.resume_schedule not in ("continue", "redraw"):
            raise bad("resume_schedule", f"must be continue or redraw, got {self.resume_schedule!r}")
        if self.steps < 0 or self.epochs < 0:
            raise bad("steps/epochs", "must be >= 0")
        if self.batch_size < 1:
            raise bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.d_steps < 1:
            raise bad("d_steps", f"must be >= 1, got {self.d_steps}")
        if not (math.isfinite(self.d_noise_std) and self.d_noise_std >= 0):
            raise bad("d_noise_std", f"must be a finite number >= 0, got {self.d_noise_std}")
        if self.d_noise_anneal not in ("linear", "cosine"):
            raise bad("d_noise_anneal", f"must be linear or cosine, got {self.d_noise_anneal!r}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise bad("ema_decay", f"must be in [0, 1], got {self.ema_decay}")
        if self.max_bad_steps < 1:
            raise bad("max_bad_steps", f"must be >= 1, got {self.max_bad_steps}")
        if not 0.0 < self.collapse_d_lr_factor <= 1.0:
            raise bad("collapse_d_lr_factor", f"must be in (0, 1], got {self.collapse_d_lr_factor}")
        if self.collapse_window < 4:  # CollapseWatch fits a slope to each half of the window
            raise bad("collapse_window", f"must be >= 4 steps, got {self.collapse_window}")
        if not DEVICE_RE.match(self.device):
            raise bad("device", f"{self.device!r} is not supported; use auto, cpu, cuda or cuda:N")
        # 0 = off (never periodically; the end of training still validates, logs and checkpoints)
        for key in ("log_every", "ckpt_every", "image_every", "val_every", "val_batches", "num_workers",
                    "val_batch_size", "d_noise_anneal_steps"):
            if getattr(self, key) < 0:
                raise bad(key, f"must be >= 0, got {getattr(self, key)}")
        for name, o in self.optim.items():
            k = f"optim.{name}"
            if name not in MODEL_NAMES:
                raise bad(k, f"unknown model {name!r}; the models a task builds are {', '.join(MODEL_NAMES)}")
            if o.name not in ("adam", "adamw"):
                raise bad(f"{k}.name", f"must be adam or adamw, got {o.name!r}")
            if not (math.isfinite(o.lr) and o.lr > 0):
                raise bad(f"{k}.lr", f"must be a finite number > 0, got {o.lr}")
            if not all(0.0 <= b < 1.0 for b in o.betas):
                raise bad(f"{k}.betas", f"each must be in [0, 1), got {list(o.betas)}")
            if not (math.isfinite(o.eps) and o.eps > 0):
                raise bad(f"{k}.eps", f"must be a finite number > 0, got {o.eps}")
            if not (math.isfinite(o.weight_decay) and o.weight_decay >= 0):
                raise bad(f"{k}.weight_decay", f"must be a finite number >= 0, got {o.weight_decay}")
            if o.schedule not in SCHEDULES:
                raise bad(f"{k}.schedule", f"must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}")
            if o.schedule_unit not in ("steps", "epochs"):
                raise bad(f"{k}.schedule_unit", f"must be steps or epochs, got {o.schedule_unit!r}")
            if o.warmup < 0:
                raise bad(f"{k}.warmup", f"must be >= 0, got {o.warmup}")
            if o.step_size < 0 or (o.schedule == "step" and o.step_size == 0):
                raise bad(f"{k}.step_size", f"must be > 0 with schedule 'step', got {o.step_size}")
            if not (math.isfinite(o.gamma) and o.gamma > 0):
                raise bad(f"{k}.gamma", f"must be a finite number > 0, got {o.gamma}")
            if o.decay_start < -1:
                raise bad(f"{k}.decay_start", f"must be >= 0, or -1 for half of training, got {o.decay_start}")
            if not 0.0 <= o.min_lr_factor <= 1.0:
                raise bad(f"{k}.min_lr_factor", f"must be in [0, 1], got {o.min_lr_factor}")
            if not (math.isfinite(o.grad_clip) and o.grad_clip >= 0):
                raise bad(f"{k}.grad_clip", f"must be a finite number >= 0 (0 = off), got {o.grad_clip}")


def plain(obj: Any) -> Any:
    """Recursively turn tuples into lists and str subclasses into str (for yaml.safe_dump)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, str):
        return str(obj)
    return obj


def _coerce(value: Any, current: Any, key: str, source: str) -> Any:
    """Convert a YAML/CLI value to the type of the field's current value."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true/false, got {value!r}")
    if isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(current):
            raise ConfigError(f"{source}: {key} must be a list of {len(current)} numbers, got {value!r}")
        return tuple(_coerce(v, c, key, source) for v, c in zip(value, current))
    if isinstance(current, str):
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
    return value


def apply_dict(cfg: TrainConfig, d: dict[str, Any], source: str) -> None:
    """Merge the nested dict ``d`` into ``cfg`` (in place)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in d.items():
        if key == "run_info":  # written by the trainer into config.yaml; informational
            continue
        if key not in names:
            raise ConfigError(f"{source}: unknown key {key!r}")
        if key == "task":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: task must be a mapping of task options")
            merge_nested(cfg.task, value)
        elif key == "optim":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: optim must be a mapping model -> options")
            for model, opts in value.items():
                target = cfg.optim.setdefault(str(model), OptimConfig())
                if not isinstance(opts, dict):
                    raise ConfigError(f"{source}: optim.{model} must be a mapping")
                _apply_optim(target, opts, f"optim.{model}", source)
        else:
            setattr(cfg, key, _coerce(value, getattr(cfg, key), key, source))


def merge_nested(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Merge ``new`` into ``base`` in place: mappings key by key at every depth, anything else replaced.

    Replacing a nested mapping whole would make ``--set task.unet.base_channels=16``
    silently drop every other ``task.unet`` key of the YAML (back to the task's
    defaults). Lists are values, not mappings: they are replaced. ``new`` is
    deep-copied, so later merges never alias the caller's data.
    """
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_nested(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _apply_optim(target: OptimConfig, opts: dict[str, Any], prefix: str, source: str) -> None:
    names = {f.name for f in dataclasses.fields(OptimConfig)}
    for k, v in opts.items():
        if k not in names:
            raise ConfigError(f"{source}: unknown key {prefix}.{k}")
        setattr(target, k, _coerce(v, getattr(target, k), f"{prefix}.{k}", source))


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["optim.G.lr=1e-3", "task.sigma=25"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key component")
        try:
            value = yaml_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: cannot parse value ({e})") from None
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p} is set both as a value and as a mapping")
        node[parts[-1]] = value
    return out


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config ({e.strerror or e})") from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def check_task_keys(cfg: TrainConfig, allowed: dict[str, Any], task_name: str) -> None:
    unknown = sorted(set(cfg.task) - set(allowed))
    if unknown:
        raise ConfigError(
            f"task {task_name!r}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed)) or '(none)'}"
        )
