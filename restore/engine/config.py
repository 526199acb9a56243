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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad configuration key or value (the message names the key and where it came from)."""


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
        if self.d_noise_std < 0:
            raise bad("d_noise_std", f"must be >= 0, got {self.d_noise_std}")
        if self.d_noise_anneal not in ("linear", "cosine"):
            raise bad("d_noise_anneal", f"must be linear or cosine, got {self.d_noise_anneal!r}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise bad("ema_decay", f"must be in [0, 1], got {self.ema_decay}")
        if self.max_bad_steps < 1:
            raise bad("max_bad_steps", f"must be >= 1, got {self.max_bad_steps}")
        if not 0.0 < self.collapse_d_lr_factor <= 1.0:
            raise bad("collapse_d_lr_factor", f"must be in (0, 1], got {self.collapse_d_lr_factor}")
        for name, o in self.optim.items():
            if o.name not in ("adam", "adamw"):
                raise bad(f"optim.{name}.name", f"must be adam or adamw, got {o.name!r}")
            if o.lr <= 0:
                raise bad(f"optim.{name}.lr", f"must be > 0, got {o.lr}")
            if o.schedule_unit not in ("steps", "epochs"):
                raise bad(f"optim.{name}.schedule_unit", f"must be steps or epochs, got {o.schedule_unit!r}")
            if o.grad_clip < 0:
                raise bad(f"optim.{name}.grad_clip", f"must be >= 0, got {o.grad_clip}")


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
            value = yaml.safe_load(raw)
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
        data = yaml.safe_load(text)
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
