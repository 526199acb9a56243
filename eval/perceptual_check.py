"""Does the SqueezeNet feature distance rank distortions sensibly? And the feature-loss layer weights.

``restore.metrics.perceptual_distance`` is LPIPS's ``lin=False`` computation on
the offline ImageNet SqueezeNet (not LPIPS: no human calibration). Before it is
reported beside PSNR/SSIM it must at least order distortions of one kind by
strength, as anyone looking at the images would: each photo of the set is
blurred (``restore.corrupt`` ``blur``: area down / bicubic up by 2, 3, 4, 6),
noised (``gaussian`` sigma 5, 15, 30, 50) and JPEG-compressed (quality 80, 40,
20, 5), and the check passes when, for every family, the mean distance grows
strictly with strength and each photo's distances are in that order too
(``ranked`` = fraction of photos with a strictly increasing sequence; ``pairs``
the same per step). Integer blur scales: a first run with 1.5, 2, 3, 4 had the
1.5 < 2 step out of order on some photos (non-integer area resampling aliases).

``--weights`` prints the per-layer weights of ``restore.losses``'s SqueezeNet
perceptual / style losses instead: the reciprocal of each layer's mean L1
feature (and Gram-matrix) distance between the first 6 photos of
``photos-train`` by name (resized to 256 x 384) and their Gaussian-blurred (13 taps, sigma 2)
copies, so every layer contributes about 1 for that distortion.

Result on the 19 photos of photos-eval (mean distance, weak -> strong; every photo in order, pass):
blur 0.709 < 1.341 < 1.787 < 2.465, noise 1.169 < 3.785 < 5.906 < 7.420, JPEG 0.428 < 1.439 < 2.908 < 5.898.

Commands::

    OMP_NUM_THREADS=1 python eval/perceptual_check.py                 # photos-eval, writes eval/results/perceptual_check/
    OMP_NUM_THREADS=1 python eval/perceptual_check.py --weights
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402

from eval import report, sets  # noqa: E402
from eval.common import eval_parser  # noqa: E402
from restore import corrupt  # noqa: E402
from restore.losses import SQUEEZE_PERCEPTUAL_LAYERS, SqueezeFeatures, gram_matrix  # noqa: E402
from restore.metrics import perceptual_distance  # noqa: E402

#: family -> corruption specs of increasing strength
FAMILIES: dict[str, list[str]] = {
    "blur": ["blur:scale=2", "blur:scale=3", "blur:scale=4", "blur:scale=6"],
    "noise": ["gaussian:sigma=5", "gaussian:sigma=15", "gaussian:sigma=30", "gaussian:sigma=50"],
    "jpeg": ["jpeg:quality=80", "jpeg:quality=40", "jpeg:quality=20", "jpeg:quality=5"],
}


def rank_check(set_name: str, limit: int | None) -> dict:
    """Mean distance per spec and the fraction of photos ranked in order, per family."""
    dist: dict[str, list[float]] = {spec: [] for specs in FAMILIES.values() for spec in specs}
    names = []
    for photo in sets.iter_photos(set_name, limit):
        names.append(photo.name)
        clean = photo.image[None]
        for spec in dist:
            x = sets.quantize8(corrupt.apply(clean, spec, sets.image_seed(photo.name, 0)).input)
            dist[spec].append(float(perceptual_distance(x, clean)[0]))
    out = {"set": set_name, "images": len(names), "families": {}}
    for family, specs in FAMILIES.items():
        means = [sum(dist[s]) / len(dist[s]) for s in specs]
        ranked = sum(all(dist[a][i] < dist[b][i] for a, b in zip(specs, specs[1:])) for i in range(len(names)))
        out["families"][family] = {
            "specs": specs, "mean_distance": [round(m, 4) for m in means],
            "means_increase": all(a < b for a, b in zip(means, means[1:])),
            "ranked_fraction": ranked / len(names),
            "pairs_ordered_fraction": {f"{a} < {b}": sum(dist[a][i] < dist[b][i] for i in range(len(names))) / len(names)
                                       for a, b in zip(specs, specs[1:])},
        }
    out["pass"] = all(f["means_increase"] and f["ranked_fraction"] == 1.0 for f in out["families"].values())
    return out


def layer_weights() -> dict:
    """Reciprocal mean L1 feature / Gram distances per layer for blur sigma 2 (see the module docstring)."""
    feats = SqueezeFeatures(list(SQUEEZE_PERCEPTUAL_LAYERS))
    photos = sorted(sets.iter_photos("photos-train"), key=lambda p: p.name)[:6]
    feat = {k: 0.0 for k in SQUEEZE_PERCEPTUAL_LAYERS}
    gram = dict(feat)
    for p in photos:
        x = F.interpolate(p.image[None], size=(256, 384), mode="bilinear", antialias=True, align_corners=False)
        y = TF.gaussian_blur(x, 13, 2.0)
        with torch.no_grad():
            a, b = feats(x), feats(y)
        for k in feat:
            feat[k] += float((a[k] - b[k]).abs().mean()) / len(photos)
            gram[k] += float((gram_matrix(a[k]) - gram_matrix(b[k])).abs().mean()) / len(photos)
    return {"perceptual": {k: 1.0 / v for k, v in feat.items()}, "style": {k: 1.0 / v for k, v in gram.items()}}


def main(argv: list[str] | None = None) -> int:
    p = eval_parser(__doc__, "perceptual_check", limit={"help": "first N photos only"},
                    out={"default": Path("eval/results/perceptual_check")})
    p.add_argument("--set", default="photos-eval", choices=list(sets.PHOTO_SETS))
    p.add_argument("--weights", action="store_true", help="print the feature-loss layer weights instead")
    args = p.parse_args(argv)
    try:
        if args.weights:
            print(json.dumps(layer_weights(), indent=2))
            return 0
        result = rank_check(args.set, args.limit)
    except sets.SetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result["command"] = report.command_line(argv, script=__file__)
    result["commit"] = report.git_commit()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# SqueezeNet feature distance vs distortion strength ({result['set']}, {result['images']} photos)", "",
             "| family | specs (weak -> strong) | mean distance | means increase | photos ranked in order |",
             "|---|---|---|---|---:|"]
    for fam, f in result["families"].items():
        lines.append(f"| {fam} | {', '.join(f['specs'])} | {' < '.join(f'{m:.3f}' for m in f['mean_distance'])} "
                     f"| {f['means_increase']} | {f['ranked_fraction']:.0%} |")
    lines += ["", f"pass: {result['pass']}", "", f"command: `{result['command']}`", f"commit: {result['commit']}"]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
