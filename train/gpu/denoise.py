"""One command: train the noise-conditioned photo denoiser on one GPU, within a wall-clock budget.

Example::

    python eval/sets.py build --set photos-train-plus
    python train/gpu/denoise.py runs/gpu-dgc                 # one H100: bf16 + channels_last, < 8 minutes
    python train/gpu/denoise.py runs/gpu-smoke --smoke       # a few CPU steps, what the test runs

Runs ``train/denoise.py`` with ``train/configs/denoise-gaussian-cond-gpu.yaml``
into ``OUT/run`` (TensorBoard logs, checkpoints), the whole log in
``OUT/train.log``. Training stops at its step count or at ``--minutes``
(SIGTERM: the trainer writes a checkpoint), and the EMA generator of the last
checkpoint is exported to ``OUT/denoise-gaussian-cond-gpu.safetensors`` + card,
so a slower GPU still ends with weights inside the budget. Extra arguments go
to ``train/denoise.py`` (e.g. ``--set task.ffdnet.block=naf``).
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "train/configs/denoise-gaussian-cond-gpu.yaml"
NAME = "denoise-gaussian-cond-gpu"
#: what --smoke overrides: a tiny network, a few steps, on CPU
SMOKE = ["--device", "cpu", "--amp", "fp32", "--steps", "3", "--batch-size", "2", "--workers", "0",
         "--set", "task.patch_size=32", "--set", "task.val_patch_size=32", "--set", "task.val_patches_per_image=1",
         "--set", "task.ffdnet.width=8", "--set", "task.ffdnet.depth=3", "--set", "val_every=2",
         "--set", "ckpt_every=2", "--set", "image_every=0", "--set", "log_every=1"]


def _tee(cmd: list[str], log, deadline: float | None) -> int:
    """Run ``cmd``, copying its output to ``log`` and stdout; SIGTERM it at ``deadline`` (time.monotonic)."""
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    import threading

    def stop() -> None:
        if proc.poll() is None:
            log.write(f"[train/gpu/denoise.py] time budget reached: SIGTERM (a checkpoint is written)\n")
            proc.send_signal(signal.SIGTERM)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), stop) if deadline else None
    if timer:
        timer.start()
    for line in proc.stdout:
        sys.stdout.write(line)
        log.write(line)
    rc = proc.wait()
    if timer:
        timer.cancel()
    log.flush()
    return rc


def train_command(data: str, run: Path, smoke: bool, extra: list[str]) -> list[str]:
    """The training command: bf16 autocast and channels_last on CUDA; ``smoke``: the tiny CPU variant."""
    cmd = [sys.executable, str(ROOT / "train/denoise.py"), "--no-progress", "--config", str(CONFIG),
           "--data", str(data), "--out", str(run)]
    return cmd + (SMOKE if smoke else ["--device", "cuda", "--amp", "bf16", "--channels-last"]) + extra


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python train/gpu/denoise.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder (weights, card, train.log, run/)")
    p.add_argument("--data", default=str(ROOT / "eval/data/photos-train-plus"), help="training photos folder")
    p.add_argument("--minutes", type=float, default=7.0,
                   help="wall-clock budget of the training phase; the export follows (default 7)")
    p.add_argument("--smoke", action="store_true", help="a few steps of a tiny network on CPU (tests)")
    args, extra = p.parse_known_args(argv)
    if not Path(args.data).is_dir():
        print(f"error: --data {args.data}: not a folder (python eval/sets.py build --set photos-train-plus)",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    run, stem = args.out / "run", args.out / NAME
    train = [sys.executable, str(ROOT / "train/denoise.py"), "--no-progress"]
    cmd = train_command(args.data, run, args.smoke, extra)
    t0 = time.monotonic()
    with open(args.out / "train.log", "a", encoding="utf-8") as log:
        rc = _tee(cmd, log, t0 + args.minutes * 60)
        steps = sorted(int(m.group(1)) for f in (run / "checkpoints").glob("step_*.pt")
                       if (m := re.match(r"step_(\d+)\.pt$", f.name)))
        # stopped by the budget: 143 from the trainer's handler, -15 if it came before the handler was set
        if rc not in (0, 128 + signal.SIGTERM, -signal.SIGTERM) or not steps:
            log.write(f"[train/gpu/denoise.py] training failed (exit {rc}); nothing exported\n")
            print(f"error: training exited with {rc}; see {args.out / 'train.log'}", file=sys.stderr)
            return 1
        device = ["--device", "cpu"] if args.smoke else ["--device", "cuda"]
        rc = _tee(train + ["--resume", str(run), "--steps", str(steps[-1]), "--workers", "0", *device,
                           "--export", str(stem)], log, None)
        log.write(f"[train/gpu/denoise.py] {steps[-1]} steps, {time.monotonic() - t0:.0f} s in all, exit {rc}\n")
    if rc == 0:
        print(f"wrote {stem}.safetensors, {stem}.json and {args.out / 'train.log'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
