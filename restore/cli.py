"""The ``restore`` command (docs/design.md, section 5); ``python -m restore`` runs the same.

Subcommands: ``corrupt`` (degraded copies), ``weights`` (list shipped
weights), ``demo`` (bundled photos through every shipped model) and one
restoring subcommand per task (``denoise``, ``colorize``, ``inpaint``). The
restoring subcommands are thin: the folder driver (`restore.folder`) reads
each file with `restore.io`, `restore.pipeline.Pipeline` restores it (the
same code as the Python API and the app), and `restore.io` writes it back
with the input's alpha and bit depth. A task's flags are generated from its
options dataclass (`restore.options`), so the CLI and the API share names,
defaults and checks.

Exit status: 0 all done (or skipped), 1 some files failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from restore import backends, corrupt, io, signals
from restore import weights as W
from restore.api import resolve_device
from restore.folder import BatchJob, UsageError, is_inside, plan_outputs, process_folder
from restore.options import Options, OptionError, add_arguments
from restore.pipeline import Pipeline, Restorer, match_channels, restorer_class

__all__ = ["DEFAULT_WEIGHTS", "TASK_COMMANDS", "TaskUnavailable", "build_parser", "file_seed", "main"]

#: Restoring subcommands and the shipped weights each uses when ``--weights`` is not given.
DEFAULT_WEIGHTS: dict[str, str] = {"denoise": "denoise-gaussian", "colorize": "colorize-squeezenet", "inpaint": "inpaint"}
TASK_COMMANDS: tuple[str, ...] = tuple(DEFAULT_WEIGHTS)

#: Corruptions shown by ``restore demo`` when no weights ship yet (one per restoring task).
DEMO_SPECS: dict[str, str] = {
    "denoise": "gaussian:sigma=25",
    "colorize": "gray",
    "inpaint": "mask:freeform",
}

#: Photos bundled with scikit-image used by ``restore demo`` (no download needed).
DEMO_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea")


class TaskUnavailable(RuntimeError):
    """The restorer of a subcommand is not installed or fails to import."""


# --------------------------------------------------------------------------- helpers


def _err(command: str, message: object) -> None:
    print(f"restore {command}: error: {message}", file=sys.stderr)


def file_seed(seed: int, rel: Path | str) -> int:
    """Per-file seed from the run seed and the file's relative path.

    Hashing the path (not the file's position in the folder) keeps each
    output identical whatever else the folder holds or how it is ordered.
    """
    # surrogateescape: a file name that is not valid UTF-8 hashes to its own bytes instead of failing
    key = f"{int(seed)}\0{Path(rel).as_posix()}".encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def _rel(src: Path, root: Path) -> Path:
    return Path(src.name) if root.is_file() else src.relative_to(root)


def _card_task(weights: str | None) -> str | None:
    """The ``task`` of a weights card (read from its JSON only), or None if there is no readable card."""
    if not weights:
        return None
    try:
        card = json.loads(W.card_path(weights).read_text(encoding="utf-8"))
    except (W.WeightsError, OSError, ValueError):
        return None  # the real load reports the problem with its full message
    task = card.get("task") if isinstance(card, dict) else None
    return str(task) if task else None


def _restorer_for(command: str, weights: str | None) -> type[Restorer]:
    """The restorer that answers ``restore COMMAND --weights W``: chosen by the card's task.

    A card whose task differs from the subcommand is accepted when that task's
    restorer lists the subcommand in ``commands`` (a "vae" card serves
    ``restore denoise``); otherwise it is a usage error.
    """
    task = _card_task(weights) or command
    try:
        restorer = restorer_class(task)
    except OptionError as e:
        raise TaskUnavailable(str(e)) from None
    except ImportError as e:
        raise TaskUnavailable(f"task {task!r} is not available ({type(e).__name__}: {e})") from e
    if command not in restorer.commands:
        raise W.WeightsError(f"weights {weights!r} are for task {task!r}, not {command!r}")
    return restorer


def _pipeline(command: str, weights: str | None, device: torch.device, backend: str = "torch") -> Pipeline:
    name = weights or DEFAULT_WEIGHTS.get(command)
    if not name:
        raise W.WeightsError(f"{command!r} has no default weights; pass --weights NAME|FILE")
    try:
        model, card = backends.load(name, backend, device)
    except W.WeightsError as e:
        if weights is None:  # the default is missing: say how to get weights, not just that they're unknown
            raise W.WeightsError(f"{e}. The default {name!r} weights are not installed: train them with "
                                 f"train/{command}.py (README.md, Training) and pass --weights FILE") from e
        raise
    task = str(card.get("task") or command)
    if task != command and command not in restorer_class(task).commands:
        raise W.WeightsError(f"weights {name!r} are for task {task!r}, not {command!r}")
    return Pipeline(model, card, task=task, device=device)


# --------------------------------------------------------------------------- corrupt


def _check_mask_paths(inp: Path, out_root: Path, sources: list[Path], outputs: set[Path],
                      mask_path: Callable[[Path], Path]) -> None:
    """``restore corrupt`` writes each mask to OUT/masks/<rel>.png: refuse layouts where that path is an
    output image, an input file, or anywhere in IN's tree other than an OUT nested inside IN."""
    in_abs, out_abs = inp.resolve(), out_root.resolve()
    inputs = {src.resolve() for src in sources}
    for src in sources:
        target = mask_path(src).resolve()
        if target in outputs:
            raise UsageError(
                f"{mask_path(src)}: the mask of {src} would overwrite an output image "
                "(IN has a top-level 'masks' folder); choose another OUT layout"
            )
        if target in inputs or (is_inside(target, in_abs)
                                and not (is_inside(out_abs, in_abs) and is_inside(target, out_abs))):
            raise UsageError(
                f"{mask_path(src)}: the mask of {src} would be written into the input ({inp}); "
                "inputs are never overwritten, choose an OUT outside IN's 'masks' folder"
            )


def cmd_corrupt(args: argparse.Namespace) -> int:
    try:
        corruption = corrupt.parse_spec(args.spec)
    except (corrupt.CorruptionSpecError, ValueError) as e:
        raise UsageError(f"--spec {args.spec!r}: {e}") from e
    inp, out = Path(args.input), Path(args.output)
    pairs = plan_outputs(inp, out)
    single = inp.is_file()
    out_root = pairs[0][1].parent if single else out

    def mask_path(src: Path) -> Path:
        return out_root / "masks" / _rel(src, inp).with_suffix(".png")

    if corruption.uses_masks:
        _check_mask_paths(inp, out_root, [src for src, _ in pairs], {dst.resolve() for _, dst in pairs}, mask_path)

    def job(src: Path, dst: Path) -> None:
        loaded = io.read_image(src)
        generator = corrupt.make_generator(file_seed(args.seed, _rel(src, inp)), "cpu")
        degraded = corruption(loaded.image[None], generator)
        if degraded.mask is not None:  # written first: an existing image implies its mask exists
            io.write_image(mask_path(src), degraded.mask[0].clamp(0, 1).ceil(), bit_depth=8)
        image = match_channels(degraded.input[0], loaded.image.shape[0]).clamp(0, 1)
        io.write_image(dst, image, alpha=loaded.alpha, bit_depth=loaded.bit_depth, icc_profile=loaded.icc_profile)

    summary = process_folder(inp, out, job, overwrite=args.overwrite, desc=f"corrupt {args.spec}")
    return 1 if summary.failed else 0


# --------------------------------------------------------------------------- restoring tasks


def _find_mask(masks: Path, rel: Path) -> Path:
    if masks.is_file():
        return masks
    base = masks / rel.parent
    for ext in [".png"] + sorted(e for e in io.IMAGE_EXTENSIONS if e != ".png"):
        for candidate in (base / (rel.stem + ext), base / (rel.stem + ext.upper())):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no mask {rel.with_suffix('.png')} (any image extension) in {masks}")


def cmd_task(args: argparse.Namespace) -> int:
    command = args.command
    restorer = _restorer_for(command, args.weights)
    opts = restorer.options_type.from_namespace(args)  # bad options: exit 2 before any work
    device = resolve_device("cpu" if args.backend == "onnxruntime" and args.device == "auto" else args.device)
    batch_size = args.batch_size or (4 if device.type == "cuda" else 1)
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    inp = Path(args.input)
    masks = Path(args.masks) if getattr(args, "masks", None) else None
    if masks is not None and not masks.exists():
        raise UsageError(f"--masks {masks}: no such file or folder")
    excluded = [masks] if masks is not None else []  # masks inside IN are not images to restore
    # usage errors (OUT == IN, empty folder...) before loading a model
    planned = {dst.resolve() for _, dst in plan_outputs(inp, args.output, exclude=excluded)}
    pipeline = _pipeline(command, args.weights, device, args.backend)

    def load(src: Path) -> dict[str, Any]:
        # inpaint: the samples as stored, restored in place (a quarter of the float32 image's memory)
        loaded = io.read_image(src, integers=pipeline.keeps_integers)
        item: dict[str, Any] = {"loaded": loaded, "mask": None}
        if masks is not None:
            mask_file = _find_mask(masks, _rel(src, inp))
            mask = io.read_mask(mask_file, torch.bool)  # bool: a quarter of the float mask's memory
            if tuple(mask.shape[-2:]) != tuple(loaded.image.shape[-2:]):
                raise ValueError(
                    f"mask {mask_file} is {mask.shape[-1]}x{mask.shape[-2]}, image is "
                    f"{loaded.image.shape[-1]}x{loaded.image.shape[-2]}"
                )
            if not bool(mask.any()):  # legal (nothing to fill), but often a mask exported the wrong way
                print(f"note: {mask_file} marks no hole; {src} is copied unchanged", file=sys.stderr)
            item["mask"] = mask
        return item

    def key(item: dict[str, Any]) -> tuple:
        return (tuple(item["loaded"].image.shape), item["mask"] is not None)

    def run(items: list[dict[str, Any]]) -> list[tuple[io.LoadedImage, dict[str, torch.Tensor]]]:
        masks_ = [it["mask"] for it in items] if items[0]["mask"] is not None else None
        return pipeline.run_images([it["loaded"] for it in items], masks_, opts)

    def save(item: dict[str, Any], result: tuple[io.LoadedImage, dict[str, torch.Tensor]], dst: Path) -> None:
        image, extras = result
        side = {name: dst.with_name(f"{dst.stem}.{name}.png") for name in extras}
        for name, path in side.items():  # x.png's x.std.png must not be (or be replaced by) input x.std.png's output
            if path.resolve() in planned:
                raise ValueError(f"its {name} map {path} is also the output of another input; rename one of them")
        # side maps first (16-bit PNG, full precision), so an existing output implies its side maps exist
        for name, extra in extras.items():
            io.write_image(side[name], extra, bit_depth=16)
        io.write_image(dst, image.image, alpha=image.alpha, bit_depth=image.bit_depth, icc_profile=image.icc_profile)

    job = BatchJob(load=load, run=run, save=save, key=key, batch_size=batch_size)
    summary = process_folder(inp, args.output, job, overwrite=args.overwrite,
                             desc=f"{command} ({pipeline.card.get('name')})", exclude=excluded)
    return 1 if summary.failed else 0


# --------------------------------------------------------------------------- weights


def _flat_metrics(metrics: Any, prefix: str = "") -> list[str]:
    if not isinstance(metrics, dict):
        return []
    out = []
    for k, v in metrics.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flat_metrics(v, name + ".")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(f"{name}={v:.4g}")
        elif isinstance(v, str):
            out.append(f"{name}={v}")
    return out


def cmd_weights(args: argparse.Namespace) -> int:
    cards = W.available()
    if args.json:
        print(json.dumps(cards, indent=2))
        return 0
    if not cards:
        print(f"no weights ship yet in {W.weights_dir()}")
        return 0
    rows = [("name", "task", "arch", "size", "corruption", "metrics")]
    for c in cards:
        size = c.get("size_bytes")
        metrics = _flat_metrics(c.get("metrics"))
        shown = ", ".join(metrics[:4]) + (", ..." if len(metrics) > 4 else "")
        rows.append(
            (
                str(c.get("name")),
                str(c.get("task", "?")),
                str(c.get("arch", "?")),
                f"{size / 1e6:.1f} MB" if isinstance(size, (int, float)) else "?",
                str(c.get("corruption", "?")),
                shown or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    print(f"({len(cards)} in {W.weights_dir()})")
    return 0


# --------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    """`restore.export.export`; its report (max |torch - export|) on stdout."""
    from restore import export

    try:
        report = export.export(args.weights, args.format, args.output)
    except (export.ExportError, ImportError) as e:
        raise UsageError(f"{e}" + (" (pip install 'restore[onnx]')" if isinstance(e, ImportError) else "")) from e
    print("\n".join(report.lines()))
    return 0


# --------------------------------------------------------------------------- demo


def _demo_photos() -> list[tuple[str, torch.Tensor]]:
    """The bundled scikit-image photos as 1CHW float tensors."""
    from skimage import data  # lazily: scikit-image's data module is slow to import

    photos = []
    for name in DEMO_PHOTOS:
        array = getattr(data, name)()
        t = torch.from_numpy(array.copy()).float().div_(255.0)
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        photos.append((name, t[:3][None].contiguous()))
    return photos


def grid(panels: list[tuple[str, torch.Tensor]], gap: int = 6, bar: int = 26) -> torch.Tensor:
    """Side-by-side 3HW image of labelled panels (1CHW/CHW, 1 or 3 channels, any sizes)."""
    import cv2
    import numpy as np

    if not panels:
        raise ValueError("grid: no panels")
    arrays = []
    for _, t in panels:
        t = t[0] if t.dim() == 4 else t
        t = t.detach().to("cpu", torch.float32).clamp(0, 1)
        t = t.expand(3, -1, -1) if t.shape[0] == 1 else t[:3]
        arrays.append((t.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8))
    height = max(a.shape[0] for a in arrays)
    width = sum(a.shape[1] for a in arrays) + gap * (len(arrays) - 1)
    canvas = np.full((height + bar, width, 3), 255, np.uint8)
    x = 0
    for (label, _), a in zip(panels, arrays):
        canvas[bar : bar + a.shape[0], x : x + a.shape[1]] = a
        cv2.putText(canvas, label, (x + 4, bar - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        x += a.shape[1] + gap
    return torch.from_numpy(canvas).permute(2, 0, 1).float().div_(255.0)


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.output)
    device = resolve_device(args.device)
    photos = _demo_photos()
    cards = W.available()
    if not cards:
        for task_name, spec in DEMO_SPECS.items():
            for i, (name, photo) in enumerate(photos):
                degraded = corrupt.apply(photo, spec, args.seed + i)
                io.write_image(out / "degraded" / f"{name}-{task_name}.png", degraded.input[0])
        print(
            f"no weights ship yet in {W.weights_dir()}: wrote the degraded inputs "
            f"({', '.join(DEMO_SPECS.values())}) to {out / 'degraded'} only"
        )
        return 0

    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: is a file; restore demo writes a folder of images")
    failed = 0
    first: Path | None = None
    for card in cards:
        name = str(card["name"])
        try:
            model, card = W.load(name, device=device)
            pipeline = Pipeline(model, card, device=device)
        except (OptionError, ImportError, W.WeightsError) as e:
            failed += 1
            _err("demo", f"{name}: skipped: {e}")
            continue
        model_failed = failed
        tile = {"tile": args.tile} if "tile" in pipeline.options_type.__dataclass_fields__ else {}
        for i, (photo_name, photo) in enumerate(photos):
            try:
                panels = pipeline.demo(photo, args.seed + i, **tile)
                folder = out / name
                for label, image in panels:
                    if label != "target":
                        io.write_image(folder / f"{photo_name}-{label}.png", image.detach().cpu().clamp(0, 1))
                io.write_image(folder / f"{photo_name}-grid.png", grid(panels))
                if first is None or (name == DEFAULT_WEIGHTS["denoise"] and first.parent.name != name):
                    first = folder / f"{photo_name}-grid.png"  # the flagship denoiser's first grid, else any
            except Exception as e:  # noqa: BLE001 - one model's failure must not hide the others
                failed += 1
                _err("demo", f"{name} on {photo_name}: {type(e).__name__}: {e}")
        if failed == model_failed:
            print(f"{name}: wrote {out / name}")
        else:
            print(f"{name}: {failed - model_failed} of {len(photos)} demo images failed (see above)")
    if first is not None:
        print(f"open {first} first: each *-grid.png shows input | restored | target side by side")
    return 1 if failed else 0


# --------------------------------------------------------------------------- app


def cmd_app(args: argparse.Namespace) -> int:
    """``restore app``: the web app (restore.app, an optional extra) on HOST:PORT until Ctrl-C."""
    import importlib.util
    import os

    if importlib.util.find_spec("gradio") is None:  # not imported here: restore.app.serve sets it up first
        raise UsageError("the app needs gradio, which is not installed; install it with: pip install -e \".[app]\"")
    from restore.app import serve

    if args.weights_dir:
        if not Path(args.weights_dir).is_dir():
            raise UsageError(f"--weights-dir {args.weights_dir}: no such folder")
        os.environ[W._ENV] = str(Path(args.weights_dir).resolve())
    if args.host in ("0.0.0.0", "::"):
        print(f"warning: binding to {args.host}: the app is reachable from the network, by anyone who can reach "
              "this machine (it has no login)", file=sys.stderr)
    serve(host=args.host, port=args.port, device=args.device)
    return 0


# --------------------------------------------------------------------------- parser


def _command_in(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _weights_in(argv: list[str]) -> str | None:
    """The value of ``--weights`` in ``argv`` (before parsing: it picks the task whose flags to add)."""
    for i, a in enumerate(argv):
        if a == "--weights" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--weights="):
            return a.split("=", 1)[1]
    return None


def build_parser(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The argument parser, plus restorer import errors keyed by subcommand.

    Only the restorer of the subcommand named in ``argv`` is imported (for its
    options' flags), so one broken task never breaks the other subcommands or ``--help``.
    """
    from restore import __version__

    parser = argparse.ArgumentParser(
        prog="restore", description="GAN-augmented image restoration: denoise, colorize, inpaint."
    )
    parser.add_argument("--version", action="version", version=f"restore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = _command_in(argv or [])
    task_errors: dict[str, str] = {}

    for name in TASK_COMMANDS:
        p = sub.add_parser(name, help=f"{name} images (IN file or folder -> OUT)")
        p.add_argument("input", metavar="IN", help="image file or folder (walked recursively)")
        p.add_argument("output", metavar="OUT", help="output folder (mirrors IN), or a file when IN is a file")
        p.add_argument("--weights", metavar="NAME|FILE", help=f"shipped weights name or .safetensors/.json path "
                                                              f"(default: {DEFAULT_WEIGHTS[name]})")
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        p.add_argument("--batch-size", type=int, default=0, help="images of equal size per batch (default: 4 on cuda, 1 on cpu)")
        p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
        p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                       help="torch (eager), or onnxruntime (CPU; the model exported to ONNX on the fly, or "
                            "--weights FILE.onnx from `restore export`; needs the onnx extra)")
        if name == "inpaint":
            p.add_argument("--masks", metavar="MASKDIR", required=True, help="masks matched by relative path and stem (nonzero = hole)")
        p.set_defaults(func=cmd_task)
        options_type: type[Options] = Options
        if name == wanted:
            try:
                options_type = _restorer_for(name, _weights_in(argv or [])).options_type
            except (TaskUnavailable, W.WeightsError) as e:
                task_errors[name] = str(e)
        add_arguments(p.add_argument_group(f"{name} options"), options_type)

    p = sub.add_parser("corrupt", help="make degraded copies of images")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--spec", required=True, help="corruption spec, e.g. gaussian:sigma=25 or blur:scale=2+jpeg:quality=30")
    p.add_argument("--seed", type=int, default=0, help="run seed; each file's seed also depends on its relative path")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_corrupt)

    p = sub.add_parser("weights", help="list shipped weights and their model cards")
    p.add_argument("--json", action="store_true", help="print the full cards as JSON")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("export", help="export a photo model to ONNX or TorchScript, checked against PyTorch")
    p.add_argument("weights", metavar="NAME|FILE", help="shipped weights name or .safetensors/.json path")
    p.add_argument("output", metavar="OUT", help="file to write (e.g. denoise.onnx)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="restore bundled sample photos with every shipped model")
    p.add_argument("output", metavar="OUT", nargs="?", default="demo_out")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("app", help="serve the web app (a page per task) on this machine (pip install -e \".[app]\")")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: reachable from the network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--weights-dir", metavar="DIR", help="folder of weights to offer (default: the shipped ones)")
    p.set_defaults(func=cmd_app)
    return parser, task_errors


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``restore`` console script; returns the exit status.

    0 all done (or skipped), 1 some files failed or could not be read, 2 usage
    error, 128 + N after signal N (SIGINT 130, SIGHUP 129, SIGTERM 143: the
    temporary file is removed and the summary printed), 141 when standard
    output is closed early (restore.signals).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, task_errors = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command in task_errors:
        _err(args.command, task_errors[args.command])
        return 2
    try:
        with signals.raising_on_signals():  # SIGTERM, SIGHUP: clean up and report as Ctrl-C does
            status = int(args.func(args))
            sys.stdout.flush()  # a reader that went away (`| head -1`) is found here, not at exit
        return status
    except BrokenPipeError:
        return signals.reader_gone()
    except (UsageError, OptionError, W.WeightsError, TaskUnavailable) as e:
        _err(args.command, e)
        return 2
    except KeyboardInterrupt as e:
        _err(args.command, f"interrupted by {signals.signal_name(e)}")
        return signals.exit_status(e)


if __name__ == "__main__":
    sys.exit(main())
