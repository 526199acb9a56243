"""Shared command line of the ``train/<task>.py`` scripts.

A task script is a few lines::

    from restore.engine.cli import main
    from restore.tasks.denoise import DenoiseTask
    raise SystemExit(main(DenoiseTask))

Precedence: TrainConfig defaults < ``Task.defaults()`` < ``--config`` YAML (or,
with ``--resume`` and no ``--config``, the run's own config.yaml) < flags <
``--set key=value``. Exit status: 0 done, 1 training failed (diverged, no
checkpoint to resume), 2 usage/config error, 128+signal after SIGINT (130) /
SIGTERM (143) once the checkpoint is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from restore.engine import checkpoint as ckpt
from restore.engine import distributed as dist_utils
from restore.engine.config import ConfigError, TrainConfig, apply_dict, check_task_keys, load_yaml, parse_set
from restore.engine.task import Task
from restore.engine.trainer import Trainer, TrainingDiverged, TrainingInterrupted
from restore.models.blocks import ModelConfigError


def build_parser(task_cls: type[Task]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"train/{task_cls.name}.py",
        description=f"Train the {task_cls.name!r} task (see docs/internals.md, restore.engine).",
    )
    p.add_argument("--data", help="training data folder (task-specific layout)")
    p.add_argument("--out", help="run folder, e.g. runs/NAME (tb/, checkpoints/, config.yaml)")
    p.add_argument("--config", help="YAML file of config keys (overrides the task defaults)")
    p.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
        help="continue from the newest loadable checkpoint of the run folder (default: --out)",
    )
    p.add_argument("--export", metavar="STEM", help="after training, write the EMA generator to STEM.safetensors + STEM.json")
    p.add_argument("--init-weights", metavar="NAME|FILE", dest="init_weights",
                   help="start the generator of a new run from these weights (shipped name or .safetensors "
                        "file with its card): fine-tuning, or a GAN stage after a pixel-loss one")
    p.add_argument("--steps", type=int, help="total optimisation steps (overrides epochs)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--workers", type=int, dest="num_workers")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--seed", type=int)
    p.add_argument("--channels-last", action="store_true", default=None, dest="channels_last")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the models")
    p.add_argument("--no-progress", action="store_false", default=None, dest="progress")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override any config key, dotted (optim.G.lr=1e-4, task.sigma=25); repeatable",
    )
    return p


def resolve_config(task_cls: type[Task], args: argparse.Namespace) -> TrainConfig:
    """Merge defaults, task defaults, YAML and flags into one validated TrainConfig."""
    cfg = TrainConfig()
    defaults = task_cls.defaults()
    apply_dict(cfg, defaults, f"{task_cls.__name__}.defaults()")
    if args.resume not in (False, True) and not args.out:
        args.out = args.resume
    yaml_path = args.config
    saved = None
    if args.resume is not False and args.out:
        if not Path(args.out).is_dir():  # else the first complaint would be a missing --data
            raise ConfigError(f"--resume {args.out}: no such run folder")
        saved = Path(args.out) / "config.yaml"
        if yaml_path is None and saved.is_file():
            yaml_path = str(saved)
    from_yaml = load_yaml(yaml_path) if yaml_path else {}
    apply_dict(cfg, from_yaml, str(yaml_path))
    flags = {
        k: getattr(args, k)
        for k in ("data", "out", "steps", "epochs", "batch_size", "num_workers", "device", "amp", "seed",
                  "channels_last", "compile", "progress", "init_weights")
        if getattr(args, k) is not None
    }
    if args.epochs is not None and args.steps is None:
        flags["steps"] = 0  # --epochs on the command line beats a YAML `steps:`
    apply_dict(cfg, flags, "command line")
    from_set = parse_set(args.overrides)
    apply_dict(cfg, from_set, "--set")
    check_task_keys(cfg, defaults.get("task", {}), task_cls.name)
    if not cfg.data:
        if saved is not None and not saved.is_file() and args.config is None:
            raise ConfigError(f"--resume {args.out}: {saved} does not exist (not a run folder?); "
                              "give --config (or --data and the other settings) to resume from its checkpoints")
        raise ConfigError("--data is required (or `data:` in the YAML config)")
    if args.out is None and "out" not in from_yaml and "out" not in from_set:
        # a shared default folder would mix unrelated runs' checkpoints and TensorBoard logs
        raise ConfigError("--out is required (the run folder, e.g. runs/NAME)")
    cfg.validate()
    return cfg


def _setup_logging(is_main: bool) -> None:
    logger = logging.getLogger("restore.engine")
    if not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
    logger.setLevel(logging.INFO if is_main else logging.WARNING)


def main(task_cls: type[Task], argv: list[str] | None = None) -> int:
    """Run one training command; returns the process exit status."""
    parser = build_parser(task_cls)
    args = parser.parse_args(argv)
    is_main = dist_utils.env_info().is_main
    _setup_logging(is_main)
    try:
        cfg = resolve_config(task_cls, args)
        task = task_cls(cfg.task)
        train_set, val_set = task.build_datasets(cfg.data)
        trainer = Trainer(task, cfg, train_set, val_set)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModelConfigError as e:  # a task option the model's constructor refuses (task.generator.depth=0)
        print(f"error: task model options: {e}", file=sys.stderr)
        return 2
    log = logging.getLogger("restore.engine")
    code = 0
    try:
        try:
            summary = trainer.fit(resume=args.resume is not False)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if args.export:
            path = trainer.export(args.export)
            if path is not None:
                log.info("exported EMA generator to %s", path)
        if is_main:
            log.info("done: %s", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        code = e.exit_code
    except (TrainingDiverged, ckpt.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    finally:
        trainer.logger.close()
        dist_utils.cleanup()
    return code


def run_script(task_cls: type[Task]) -> Any:
    """``if __name__ == "__main__": run_script(MyTask)`` -- exits with main's status."""
    raise SystemExit(main(task_cls))
