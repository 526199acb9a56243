"""The one evaluation loop: baselines and models go through the same calls, timing and scoring.

A :class:`Method` wraps anything with the baseline signature
``fn(degraded CHW, info) -> restored CHW``; :func:`model_method` adapts shipped
weights to it through ``restore.weights.load`` and the task's restore function.
:func:`evaluate` runs every method on every sample, rounds outputs to 8 bits
(what a written file holds), times each call and scores it with a task scorer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from tqdm import tqdm

from eval import baselines as B
from eval import sets
from eval.common import eval_parser
from eval.report import LpipsScorer, detail_ratio, psnr_ssim
from eval.sets import Sample, quantize8
from restore import weights as W
from restore.io.atomic import atomic_output
from restore.options import OptionError
from restore.pipeline import Pipeline
from restore.tiling import ENSEMBLES

Scorer = Callable[[torch.Tensor, Sample], dict]


class EvalError(Exception):
    """A user-fixable problem with an evaluation run (missing weights, bad options)."""


#: What an eval script reports as ``error: ...`` with exit status 1 (anything else is a bug: traceback).
USER_ERRORS: tuple[type[Exception], ...] = (EvalError, sets.SetError, B.BaselineError)


@dataclass
class Method:
    name: str
    label: str
    fn: Callable[[torch.Tensor, dict], torch.Tensor]
    kind: str = "baseline"  # or "model"


def baseline_methods(names: Sequence[str]) -> list[Method]:
    """Wrap registered baselines (clear error for an unknown name)."""
    out = []
    for n in names:
        try:
            b = B.get(n)
        except B.BaselineError as e:
            raise EvalError(str(e)) from None
        out.append(Method(b.name, b.label, b.fn))
    return out


def model_method(task: str, weights: str, device: str = "cpu", ensemble: str = "none") -> Method:
    """Load shipped weights (name or file) and wrap the task's restore function as a Method.

    ``ensemble`` (other than ``none``) restores through `restore.tiling.self_ensemble`; the method is
    then named ``<model>+<mode>`` so its rows never mix with the plain model's.

    Uses ``restore.weights.load`` (verifies the checksum, builds from the card) and the restore
    pipeline (`restore.pipeline.Pipeline`), as the ``restore`` command does.
    """
    path = Path(weights).expanduser()
    looks_like_file = path.suffix in (".safetensors", ".json") or "/" in weights
    if looks_like_file and not path.exists():
        raise EvalError(f"--weights {weights}: file not found")
    try:
        model, card = W.load(weights, device=device)
    except (W.WeightsError, FileNotFoundError) as e:
        raise EvalError(f"--weights {weights}: {e}") from e
    card_task = card.get("task")
    if card_task and card_task != task:
        raise EvalError(f"--weights {weights}: trained for task {card_task!r}, not {task!r}")
    try:
        pipeline = Pipeline(model, card, task=task, device=device)
        options = pipeline.options(ensemble=ensemble) if ensemble != "none" else pipeline.options()
    except OptionError as e:
        raise EvalError(f"--weights {weights}: {e}") from e
    has_sigma = "sigma" in pipeline.options_type.__dataclass_fields__

    def run(x: torch.Tensor, info: dict) -> torch.Tensor:
        mask = info["mask"].unsqueeze(0) if info.get("mask") is not None else None
        opts = options
        if has_sigma and info.get("sigma") is not None:  # non-blind: the true noise level is given
            opts = options.replace(sigma=str(float(info["sigma"])))
        return pipeline.run(x.unsqueeze(0), mask, opts).image[0]

    name = card.get("name") or Path(weights).stem
    if ensemble != "none":
        return Method(f"{name}+{ensemble}", f"{name} (model, {ensemble} self-ensemble)", run, kind="model")
    return Method(name, f"{name} (model)", run, kind="model")


def evaluate(
    samples: Iterable[Sample],
    methods: Sequence[Method],
    scorer: Scorer,
    *,
    group: str = "",
    total: int | None = None,
    grid_images: int = 3,
    progress: bool = True,
    desc: str = "eval",
    on_image: Callable[[list[dict]], None] | None = None,
) -> tuple[list[dict], list[tuple[str, list[tuple[str, torch.Tensor]]]]]:
    """Run every method on every sample; return per-image rows and the grid rows.

    ``on_image(rows_so_far)`` is called after each image, so long runs (CBM3D on
    a busy CPU takes minutes per photo) can write partial reports as they go.

    Outputs are rounded to 8 bits before scoring (both protocols). A method
    that returns a different shape is an error, not a silent resize.
    """
    rows: list[dict] = []
    grid: list[tuple[str, list[tuple[str, torch.Tensor]]]] = []
    bar = tqdm(total=(total * len(methods)) if total else None, desc=desc, unit="run", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    for i, s in enumerate(samples):
        cols: list[tuple[str, torch.Tensor]] = [("input", s.input.clamp(0, 1))]
        for m in methods:
            bar.set_postfix_str(f"{s.name} / {m.name}")
            t0 = time.perf_counter()
            out = m.fn(s.input, dict(s.info))
            dt = time.perf_counter() - t0
            if not isinstance(out, torch.Tensor) or out.shape != s.target.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise EvalError(f"{m.name} on {s.name}: returned {got}, expected {tuple(s.target.shape)}")
            out = quantize8(out.float())
            row = {"image": s.name, "method": m.name, **scorer(out, s), "runtime_s": dt}
            if group:
                row["group"] = group
            rows.append(row)
            if i < grid_images and m.name != "noisy":  # "noisy" is the input column already
                cols.append((m.name, out))
            bar.update(1)
        if i < grid_images:
            cols.append(("target", s.target))
            grid.append((s.name, cols))
        if on_image is not None:
            on_image(rows)
    bar.close()
    return rows, grid


def image_scorer(lpips: LpipsScorer, extra: Scorer | None = None) -> Scorer:
    """PSNR and SSIM against the clean target, then the task's own metrics (``extra``), then LPIPS if available.

    Every task scores its whole images the same way, so a PSNR in one report
    means what it means in another; ``extra`` adds what only that task
    measures (in-hole PSNR, a/b error ...).
    """
    def score(out: torch.Tensor, s: Sample) -> dict:
        r = psnr_ssim(out, s.target)
        if extra is not None:
            r.update(extra(out, s))
        if lpips.available:
            r["lpips"] = lpips(out, s.target)
        return r

    return score


def denoise_scorer(lpips: LpipsScorer) -> Scorer:
    """PSNR, SSIM, the detail ratio (`eval.report.detail_ratio`) and, when available, LPIPS against the clean
    target."""
    return image_scorer(lpips, lambda out, s: {"detail": detail_ratio(out, s.target)})


def photo_samples(args: argparse.Namespace, spec: str, protocol: str = "default") -> tuple[int, Iterator[Sample]]:
    """(number of images, degraded samples) of the photo set ``args.set`` under ``spec``.

    Honours the shared options (``--limit``, ``--seed``, ``--no-cache``). The
    first photo is read here, so a set that is not built fails with its
    build command before any method runs; the samples are produced lazily.
    """
    n = len(sets.load_manifest(args.set)["images"][: args.limit or None])
    photos = sets.iter_photos(args.set, limit=args.limit)
    first = next(photos)  # iter_photos checks the files on the first next()

    def samples() -> Iterator[Sample]:
        for ph in itertools.chain([first], photos):
            yield sets.degrade(ph.name, ph.image, spec, args.seed, protocol, cache=not args.no_cache,
                               set_name=args.set)

    return n, samples()


def script_parser(doc: str, task: str, default_set: str, default_spec: str) -> argparse.ArgumentParser:
    """The parser of the photo-task scripts ``eval/<task>.py``: the shared eval flags (`eval.common`) and
    what every script on this runner takes (set, spec, baselines, grid, LPIPS, cache, self-ensemble)."""
    p = eval_parser(
        doc, task,
        seed={"help": "base seed; per-image seeds derive from it (default 0)"},
        weights=True,
        out={"help": f"output folder (default eval/results/{task}/<set>-<spec>)"},
        limit={"help": "score only the first N images (smoke runs)"},
        device={"help": "device for the model and LPIPS (default cpu)"},
        quiet={"help": "no progress bar"},
    )
    p.add_argument("--set", default=default_set, help=f"evaluation set (default {default_set})")
    p.add_argument("--spec", default=default_spec, help=f"corruption spec (default {default_spec!r})")
    p.add_argument("--baselines-only", action="store_true", help="score only the classical baselines")
    p.add_argument("--baselines", help="comma-separated baselines (default: the ones suited to the spec)")
    p.add_argument("--grid-images", type=int, default=3, help="images shown in grid.png (default 3)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS even when its weights exist")
    p.add_argument("--no-cache", action="store_true", help="do not read/write eval/data/cache")
    p.add_argument("--ensemble", choices=tuple(ENSEMBLES), default="none",
                   help="score the model with this self-ensemble (restore.tiling.self_ensemble; default none)")
    return p


def check_update_card(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``--update-card`` where its figures would not be the card's: no model, or a self-ensemble
    (a card records how ``restore <task>`` runs by default; ensemble figures stay in the report)."""
    if not getattr(args, "update_card", False):
        return
    if args.baselines_only or not args.weights:
        parser.error("--update-card needs --weights (it writes the models' figures into their cards)")
    if args.ensemble != "none":
        parser.error(f"--update-card records the default restoring mode; drop --ensemble {args.ensemble} "
                     "(its figures are in the report)")


def record_in_card(weights: str, entries: dict[str, dict], command: str) -> Path:
    """Write ``entries`` into ``metrics`` of the shipped card ``weights`` (atomically) and return its path.

    Why one place: a card's figures must be the ones an eval command printed,
    so every script records them the same way, with that command beside them
    (``metrics_command``), instead of someone copying numbers by hand.
    """
    try:
        path = W.card_path(weights)  # raises when the card does not exist
        card = json.loads(path.read_text(encoding="utf-8"))
    except (W.WeightsError, OSError, ValueError) as e:
        raise EvalError(f"--update-card: {e}") from e
    card.setdefault("metrics", {}).update(entries)
    card["metrics_command"] = command
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"updated {path}: metrics[{', '.join(map(repr, entries))}]", file=sys.stderr)
    return path
