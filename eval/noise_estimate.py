"""Error of the noise-level estimators (`restore.noise.estimate_sigma`) on a photo set.

Example::

    python eval/noise_estimate.py --sigmas 0,2,5,15,25,50
    python eval/noise_estimate.py --fit      # maintainers: the calibration table of restore/noise.py

For every photo of ``--set`` (default the held-out photos) and every sigma, the
default-protocol noisy input (clipped, 8-bit, the same cached inputs
``eval/denoise.py`` scores) is given to each estimator. Prints a Markdown table
of the mean estimate, the mean absolute error and the worst error (all on the
0-255 scale) and the mean CPU seconds per photo, and writes it with the per-image
estimates (``estimates.csv``) to ``--out`` (default
``eval/results/noise_estimate/<set>``).

``--fit`` measures the raw (uncalibrated) PCA estimate on the TRAINING photos
(``photos-train``, never the held-out ones) over sigma 0-60 and prints the
table ``restore/noise.py`` maps estimates through (clipping at 0 and 1 lowers
the noise's std; a photo's own fine texture raises a clean photo's estimate),
then the noise floor: the largest calibrated estimate of a clean photo over ALL
the training photos (``--limit`` bounds the table's photos only), which
``restore.noise.NOISE_FLOOR`` records.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval import report, sets  # noqa: E402
from eval.common import eval_parser  # noqa: E402
from restore.noise import NOISE_FLOOR, estimate_sigma  # noqa: E402

#: restore.noise's methods; pca-raw is the PCA estimate before the calibration table
ESTIMATORS = ("pca", "pca-raw", "mad")


def main(argv: list[str] | None = None) -> int:
    p = eval_parser(__doc__, "noise_estimate", seed={"help": "base seed of the noisy inputs (default 0)"},
                    limit={"help": "only the first N photos"},
                    out={"help": "output folder (default eval/results/noise_estimate/<set>)"})
    p.add_argument("--set", default="photos-eval", help="photo set (default photos-eval)")
    p.add_argument("--sigmas", default="0,2,5,15,25,50", help="noise levels, 0-255 scale (default 0,2,5,15,25,50)")
    p.add_argument("--methods", default=",".join(ESTIMATORS),
                   help=f"estimators (default {','.join(ESTIMATORS)}; pca-raw: without the calibration table)")
    p.add_argument("--fit", action="store_true", help="print the calibration table (training photos)")
    args = p.parse_args(argv)
    if args.fit:
        return _fit(args.limit)
    try:
        sigmas = [float(s) for s in args.sigmas.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sigmas {args.sigmas!r}: expected comma-separated numbers")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in ESTIMATORS]
    if bad or not sigmas or min(sigmas) < 0:
        p.error(f"--methods must be among {', '.join(ESTIMATORS)} and --sigmas non-negative numbers")
    try:
        photos = list(sets.iter_photos(args.set, limit=args.limit))
    except sets.SetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = []
    for s in sigmas:
        for ph in photos:
            sample = sets.degrade(ph.name, ph.image, f"gaussian:sigma={s:g}", args.seed, set_name=args.set)
            for m in methods:
                t0 = time.process_time()  # CPU seconds: wall time on a shared machine measures the neighbours
                est = float(estimate_sigma(sample.input[None], method=m.split("-")[0],
                                           calibrated=not m.endswith("-raw"))[0]) * 255.0
                rows.append({"image": ph.name, "sigma": s, "method": m, "estimate": round(est, 4),
                             "cpu_seconds": round(time.process_time() - t0, 4)})
    out = args.out or Path("eval/results/noise_estimate") / args.set
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "estimates.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"Noise-level estimators on {args.set} ({len(photos)} photos, 8-bit noisy inputs, seed {args.seed}); "
             "0-255 scale", "", "| sigma | estimator | mean estimate | mean abs error | max abs error | CPU s/photo |",
             "|---|---|---|---|---|---|"]
    for s in sigmas:
        for m in methods:
            sel = [r for r in rows if r["sigma"] == s and r["method"] == m]
            err = [abs(r["estimate"] - s) for r in sel]
            lines.append(f"| {s:g} | {m} | {sum(r['estimate'] for r in sel) / len(sel):.2f} | "
                         f"{sum(err) / len(err):.2f} | {max(err):.2f} | "
                         f"{sum(r['cpu_seconds'] for r in sel) / len(sel):.3f} |")
    lines += ["", f"Command: `{report.command_line(argv, script=__file__)}`", f"Commit: {report.git_commit()}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _fit(limit: int | None) -> int:
    """Mean raw PCA estimate per true sigma on the training photos: restore.noise's calibration table."""
    sigmas = [0, 1, 2, 3, 5, 7.5, 10, 15, 20, 25, 30, 40, 50, 60]
    photos = list(sets.iter_photos("photos-train", limit=limit))
    pairs = []
    for s in sigmas:
        est = [float(estimate_sigma(sets.degrade(ph.name, ph.image, f"gaussian:sigma={s:g}", 1234, cache=False,
                                                  set_name="photos-train").input[None], calibrated=False)[0]) * 255
               for ph in photos]
        pairs.append((round(sum(est) / len(est), 3), s))
        print(f"sigma {s:g}: mean raw estimate {pairs[-1][0]:.3f} over {len(photos)} photos", file=sys.stderr)
    print("_CALIBRATION: tuple[tuple[float, float], ...] = (  # (raw estimate, true sigma), 0-255 scale")
    print("    " + ", ".join(f"({e}, {s:g})" for e, s in pairs) + ",\n)")
    clean = {ph.name: float(estimate_sigma(sets.degrade(ph.name, ph.image, "gaussian:sigma=0", 1234, cache=False,
                                                        set_name="photos-train").input[None])[0]) * 255
             for ph in sets.iter_photos("photos-train")}
    worst = max(clean, key=clean.__getitem__)
    print(f"clean training photos: calibrated estimates {min(clean.values()):.2f}-{clean[worst]:.2f} "
          f"(largest: {worst}; {len(clean)} photos; with the table restore/noise.py has now)", file=sys.stderr)
    print(f"NOISE_FLOOR = {math.ceil(clean[worst] * 100) / 100:.2f}  # restore/noise.py has {NOISE_FLOOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
