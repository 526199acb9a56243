"""Evaluation and training photo sets, assembled reproducibly from files that install offline.

Why this exists: a PSNR is only comparable across runs when the images are the
same bytes. The held-out photos come from scikit-image's and scikit-learn's
bundled photographs plus the nature photographs of ONE Debian background package
(``mate-backgrounds``), which training never sees; training photos come from the
other packages (see ``eval/manifests/README.md`` for the split and the reasons).
Each set has a manifest (``eval/manifests/<set>.json``) with the source of every
image, its SHA-256 and size, and the SHA-256 of the pixels of the working copy.

Commands::

    python eval/sets.py build [--set photos-eval|photos-train|photos-train-plus|all]   # write PNG working copies
                                                                     # (all = photos-eval + photos-train)
    python eval/sets.py verify [--set ...]                           # checksums only
    python eval/sets.py list                                         # what each set holds
    python eval/sets.py manifest                                     # maintainers: rewrite manifests from the curated lists

Degraded inputs are made with :func:`restore.corrupt.apply` from a seed derived
from the image name and a base seed, rounded to 8 bits (the default protocol:
what restoring files means) and cached under ``eval/data/cache/<spec-slug>/``.
The ``published`` protocol (unclipped float Gaussian noise, seed 0 per image,
as in DnCNN/DRUNet/SwinIR tables) is made in memory and never cached.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

if __package__ in (None, ""):  # run as `python eval/sets.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.common import eval_parser  # noqa: E402
from restore import corrupt  # noqa: E402
from restore.data import default_idx_root, load_idx_tensors  # noqa: E402
from restore.io.atomic import atomic_output  # noqa: E402

EVAL_DIR = Path(__file__).resolve().parent
MANIFEST_DIR = EVAL_DIR / "manifests"
#: Working copies and caches (gitignored); ``$RESTORE_EVAL_DATA`` moves them elsewhere.
DATA_DIR = Path(os.environ.get("RESTORE_EVAL_DATA", EVAL_DIR / "data")).expanduser()

#: Held-out photos are brought to at most this size (landscape; portrait is transposed).
WORK_SIZE: tuple[int, int] = (768, 512)
#: Training copies are downscaled to this longer side (0 = keep the original size).
TRAIN_MAX_SIDE = 2048

PROTOCOLS = ("default", "published")

_DEB = "/usr/share/backgrounds"


class SetError(Exception):
    """A set is missing, incomplete, or its files do not match the manifest."""


@dataclass(frozen=True)
class Source:
    """One curated photograph: where it comes from and the name it is scored under."""

    name: str
    kind: str  # "skimage" | "sklearn" | "deb"
    file: str  # skimage/sklearn: file name inside the package data folder; deb: absolute path
    package: str = ""  # Debian package (kind == "deb")


def _deb(package: str, folder: str, prefix: str, stems: list[str]) -> list[Source]:
    out = []
    for stem in stems:
        short = re.sub(r"_by_.*$", "", Path(stem).stem)
        out.append(Source(f"{prefix}-{short.lower()}", "deb", f"{folder}/{stem}", package))
    return out


#: Held-out evaluation photographs (real colour photographs only).
EVAL_SOURCES: tuple[Source, ...] = tuple(
    [
        Source("skimage-astronaut", "skimage", "astronaut.png"),
        Source("skimage-chelsea", "skimage", "chelsea.png"),
        Source("skimage-coffee", "skimage", "coffee.png"),
        Source("skimage-rocket", "skimage", "rocket.jpg"),
        Source("skimage-motorcycle", "skimage", "motorcycle_left.png"),
        Source("sklearn-china", "sklearn", "china.jpg"),
        Source("sklearn-flower", "sklearn", "flower.jpg"),
    ]
    + _deb(
        "mate-backgrounds",
        f"{_DEB}/mate/nature",
        "mate",
        [
            "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg",
            "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg",
        ],
    )
)

#: Training photographs: the other background packages (never scored).
TRAIN_SOURCES: tuple[Source, ...] = tuple(
    _deb(
        "lomiri-wallpapers-16.04",
        _DEB,
        "lomiri16",
        [
            "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
            "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
            "analogpattern_by_Peter_Nerlich.jpg", "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
            "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg",
            "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
            "sunset_by_Aitzol_Berasategi.jpg",
        ],
    )
    + _deb("lomiri-wallpapers-20.04", _DEB, "lomiri20", ["Kleiber_by_Lukas_Baubkus.jpg"])
)

#: More training photographs: the real photographs among KDE Plasma's wallpapers (the
#: others are renders). Kept apart from ``photos-train`` so the cards of models trained on
#: those 15 photos stay exact; ``photos-train-plus`` is the union.
KDE_SOURCES: tuple[Source, ...] = tuple(
    Source(
        f"kde-{name.lower()}",
        "deb",
        f"/usr/share/wallpapers/{name}/contents/images/2560x1600.jpg",
        "plasma-workspace-wallpapers",
    )
    for name in (
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
        "Kite", "OneStandsOut", "Path", "summer_1am",
    )
)

PHOTO_SETS: dict[str, tuple[Source, ...]] = {
    "photos-eval": EVAL_SOURCES,
    "photos-train": TRAIN_SOURCES,
    "photos-train-plus": TRAIN_SOURCES + KDE_SOURCES,
}
#: Left out of ``--set all`` because they need a package beyond the others': built only when named.
OPTIONAL_SETS = ("photos-train-plus",)
FASHION_SET = "fashion-mnist-test"
KNOWN_SETS = (*PHOTO_SETS, FASHION_SET)


# --------------------------------------------------------------------------- sources


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pixels_sha256(array: np.ndarray) -> str:
    """SHA-256 of decoded pixels (shape + dtype + bytes): independent of the PNG encoder."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.shape}{a.dtype.str}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def source_path(src: Source) -> Path:
    """Where ``src`` lives on this machine (clear error naming what to install if absent)."""
    if src.kind == "skimage":
        import skimage

        path = Path(skimage.__file__).parent / "data" / src.file
        hint = "it ships with scikit-image (pip install scikit-image)"
    elif src.kind == "sklearn":
        import sklearn

        path = Path(sklearn.__file__).parent / "datasets" / "images" / src.file
        hint = "it ships with scikit-learn (pip install scikit-learn)"
    elif src.kind == "deb":
        path = Path(src.file)
        hint = f"install it with: apt-get install -y {src.package}"
    else:
        raise SetError(f"{src.name}: unknown source kind {src.kind!r}")
    if not path.is_file():
        raise SetError(f"{src.name}: source file {path} not found; {hint}")
    return path


def _deb_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True, check=False
        )
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _describe(src: Source) -> str:
    return {"skimage": "scikit-image skimage/data/", "sklearn": "scikit-learn sklearn/datasets/images/"}.get(
        src.kind, f"Debian package {src.package}: "
    ) + (src.file if src.kind != "deb" else src.file)


def read_source(path: Path) -> np.ndarray:
    """Decode a source photo to HxWx3 uint8 RGB with EXIF orientation applied."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def fit_working_size(rgb: np.ndarray, size: tuple[int, int] = WORK_SIZE) -> np.ndarray:
    """Downscale (Lanczos, antialiased) to cover ``size`` and centre-crop to it; never upscale.

    Upsampling a small photo would make it artificially smooth (and easy), so
    images already within the box keep their native size. Portrait photos use
    the transposed box. Deterministic for a given Pillow version; the manifest's
    pixel checksum tells when a different Pillow resamples differently.
    """
    h, w = rgb.shape[:2]
    bw, bh = (size if w >= h else (size[1], size[0]))
    if w <= bw and h <= bh:
        return rgb
    scale = max(bw / w, bh / h)
    if scale < 1.0:
        nw, nh = max(bw, round(w * scale)), max(bh, round(h * scale))
        rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.LANCZOS))
        h, w = nh, nw
    cw, ch = min(w, bw), min(h, bh)
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(rgb[top : top + ch, left : left + cw])


def fit_max_side(rgb: np.ndarray, max_side: int = TRAIN_MAX_SIDE) -> np.ndarray:
    """Downscale so the longer side is at most ``max_side`` (0 = unchanged); keeps aspect ratio."""
    h, w = rgb.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    nw, nh = round(w * scale), round(h * scale)
    return np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.LANCZOS))


def _prepare(set_name: str, rgb: np.ndarray) -> np.ndarray:
    return fit_working_size(rgb) if set_name == "photos-eval" else fit_max_side(rgb)


def manifest_path(set_name: str) -> Path:
    return MANIFEST_DIR / f"{set_name}.json"


def make_manifest(set_name: str) -> dict:
    """Describe every curated source of ``set_name`` as it is on this machine (maintainers only)."""
    if set_name == FASHION_SET:
        return _fashion_manifest()
    entries = []
    for src in PHOTO_SETS[set_name]:
        path = source_path(src)
        rgb = read_source(path)
        work = _prepare(set_name, rgb)
        entry = {
            "name": src.name,
            "source": _describe(src),
            "kind": src.kind,
            "file": src.file,
            "sha256": sha256_file(path),
            "size": path.stat().st_size,
            "source_hw": list(rgb.shape[:2]),
            "work_hw": list(work.shape[:2]),
            "work_pixels_sha256": pixels_sha256(work),
        }
        if src.kind == "deb":
            entry["package"] = src.package
            entry["package_version"] = _deb_version(src.package)
        entries.append(entry)
    rule = (
        f"downscale (Pillow LANCZOS) to cover {WORK_SIZE[0]}x{WORK_SIZE[1]} (portrait: transposed) and "
        "centre-crop; smaller images keep their native size"
        if set_name == "photos-eval"
        else f"downscale (Pillow LANCZOS) to a longer side of at most {TRAIN_MAX_SIDE}"
    )
    return {"set": set_name, "working_copy": rule, "count": len(entries), "images": entries}


def load_manifest(set_name: str) -> dict:
    """Read ``eval/manifests/<set>.json`` (clear error for an unknown set or missing file)."""
    if set_name not in KNOWN_SETS:
        raise SetError(f"unknown set {set_name!r}; known sets: {', '.join(KNOWN_SETS)}")
    path = manifest_path(set_name)
    if not path.is_file():
        raise SetError(f"{path}: manifest of set {set_name!r} is missing (run: python eval/sets.py manifest)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SetError(f"{path}: not valid JSON ({e})") from e


def _entry_source(entry: dict) -> Source:
    return Source(entry["name"], entry["kind"], entry["file"], entry.get("package", ""))


def verify_sources(manifest: dict) -> list[Path]:
    """Check every source file against the manifest's size and SHA-256; return their paths.

    Raises :class:`SetError` naming each file that is missing or differs, so a
    result is never silently computed on different images.
    """
    paths, problems = [], []
    for entry in manifest["images"]:
        try:
            path = source_path(_entry_source(entry))
        except SetError as e:
            problems.append(str(e))
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            problems.append(f"{entry['name']}: {path} has {size} bytes, manifest says {entry['size']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: {path} SHA-256 differs from the manifest (file modified?)")
        paths.append(path)
    if problems:
        raise SetError(f"set {manifest['set']!r}: {len(problems)} source(s) do not match the manifest:\n  "
                       + "\n  ".join(problems))
    return paths


def set_dir(set_name: str) -> Path:
    return DATA_DIR / set_name


def build(set_name: str, force: bool = False, verbose: bool = True) -> Path:
    """Verify the sources of ``set_name`` and write its PNG working copies under ``eval/data/<set>/``.

    Returns the folder. Existing copies whose pixels already match are kept
    unless ``force``. A resampling drift (another Pillow) is warned about and
    recorded in ``build.json``, because scores would then not be comparable.
    """
    if set_name not in PHOTO_SETS:
        raise SetError(f"cannot build {set_name!r}: buildable sets are {', '.join(PHOTO_SETS)}")
    manifest = load_manifest(set_name)
    paths = verify_sources(manifest)
    out = set_dir(set_name)
    out.mkdir(parents=True, exist_ok=True)
    drift = []
    for entry, path in zip(manifest["images"], paths):
        target = out / f"{entry['name']}.png"
        if target.is_file() and not force:
            if pixels_sha256(read_source(target)) == entry["work_pixels_sha256"]:
                continue
        work = _prepare(set_name, read_source(path))
        if pixels_sha256(work) != entry["work_pixels_sha256"]:
            drift.append(entry["name"])
        _write_png(target, work)
        if verbose:
            print(f"  {set_name}/{target.name}  {work.shape[1]}x{work.shape[0]}", file=sys.stderr)
    if drift:
        warnings.warn(
            f"{set_name}: working copies of {', '.join(drift)} differ from the manifest's pixel checksums "
            "(a different Pillow resamples differently); scores are not comparable with recorded ones",
            stacklevel=2,
        )
    (out / "build.json").write_text(json.dumps({"set": set_name, "pixel_drift": drift}, indent=2) + "\n")
    return out


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_output(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


# --------------------------------------------------------------------------- loading


@dataclass
class Photo:
    """One clean image of a set, CHW float32 in [0, 1]."""

    name: str
    image: torch.Tensor
    meta: dict = field(default_factory=dict)


def iter_photos(set_name: str, limit: int | None = None) -> Iterator[Photo]:
    """Yield the built working copies of a photo set in manifest order.

    Fails with the command to run when the set has not been built.
    """
    manifest = load_manifest(set_name)
    if set_name not in PHOTO_SETS:
        raise SetError(f"{set_name!r} is not a photo set (photo sets: {', '.join(PHOTO_SETS)})")
    folder = set_dir(set_name)
    entries = manifest["images"][: limit if limit else None]
    missing = [e["name"] for e in entries if not (folder / f"{e['name']}.png").is_file()]
    if missing:
        raise SetError(
            f"{folder}: set {set_name!r} is not built ({len(missing)} of {len(entries)} images missing, "
            f"e.g. {missing[0]}.png); run: python eval/sets.py build --set {set_name}"
        )
    for e in entries:
        rgb = read_source(folder / f"{e['name']}.png")
        image = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div_(255.0)
        yield Photo(e["name"], image, e)


def _fashion_manifest() -> dict:
    root = default_idx_root()
    files = []
    for kind in ("images", "labels"):
        found = sorted(root.glob(f"t10k-{kind}[-.]idx*-ubyte*")) if root.is_dir() else []
        if not found:
            raise SetError(f"{root}: Fashion-MNIST test {kind} not found (apt-get install -y dataset-fashion-mnist)")
        p = found[0]
        files.append({"file": p.name, "sha256": sha256_file(p), "size": p.stat().st_size})
    return {"set": FASHION_SET, "source": "Debian package dataset-fashion-mnist (official t10k split)",
            "package_version": _deb_version("dataset-fashion-mnist"), "files": files}


def load_fashion_mnist_test(root: str | os.PathLike | None = None, limit: int | None = None,
                            verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's official test split as ``(N,1,28,28) float [0,1]``, ``(N,) int64`` labels.

    Read through :func:`restore.data.load_idx_tensors`; with ``verify`` the files
    are checked against ``eval/manifests/fashion-mnist-test.json`` first.
    """
    folder = Path(root).expanduser() if root is not None else default_idx_root()
    if verify:
        manifest = load_manifest(FASHION_SET)
        for f in manifest["files"]:
            p = folder / f["file"]
            if not p.is_file():
                raise SetError(f"{p}: missing (apt-get install -y dataset-fashion-mnist, or pass root=)")
            if p.stat().st_size != f["size"] or sha256_file(p) != f["sha256"]:
                raise SetError(f"{p}: differs from {manifest_path(FASHION_SET)} (size or SHA-256)")
    return load_idx_tensors(folder, "test", limit)


# --------------------------------------------------------------------------- degraded inputs


def spec_slug(spec: str) -> str:
    """A folder-safe name for a corruption spec: ``gaussian:sigma=25`` -> ``gaussian-sigma25``."""
    slug = spec.strip().replace("=", "").replace(":", "-").replace(",", "-").replace("+", "__")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", slug)
    return slug or "none"


def image_seed(name: str, base_seed: int) -> int:
    """A 63-bit seed from the image name and a base seed: stable across runs, platforms and set order."""
    digest = hashlib.sha256(f"{base_seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to 8-bit levels, as writing a PNG would."""
    return x.clamp(0.0, 1.0).mul(255.0).round().div(255.0)


def parse_spec_params(spec: str) -> list[tuple[str, dict[str, str]]]:
    """Split a spec into ``[(name, {key: value})]`` (read-only: the corruption itself is restore.corrupt's).

    Baselines need some parameters (speckle std, salt-and-pepper amount) that
    :class:`restore.corrupt.Degraded` does not carry.
    """
    out = []
    for part in spec.split("+"):
        name, _, args = part.strip().partition(":")
        params = {}
        for kv in filter(None, (a.strip() for a in args.split(","))):
            k, eq, v = kv.partition("=")
            params[k.strip()] = v.strip() if eq else ""
        out.append((name.strip(), params))
    return out


@dataclass
class Sample:
    """A degraded image ready for restoration: CHW tensors plus what baselines may know."""

    name: str
    input: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor | None  # 1HW, 1 = hole
    info: dict  # sigma (0-255, float or None), spec, seed, protocol, mask (same tensor)


def published_spec(spec: str) -> str:
    """The spec of the published protocol: Gaussian noise only, unclipped (``clip=0``)."""
    parts = parse_spec_params(spec)
    if len(parts) != 1 or parts[0][0] != "gaussian":
        raise SetError(f"--protocol published is defined for one Gaussian corruption only, got spec {spec!r}")
    params = dict(parts[0][1])
    if "-" in params.get("sigma", ""):
        raise SetError(f"--protocol published needs a fixed sigma, got {spec!r}")
    params["clip"] = "0"
    return "gaussian:" + ",".join(f"{k}={v}" for k, v in params.items())


def degrade(name: str, clean: torch.Tensor, spec: str, base_seed: int = 0, protocol: str = "default",
            cache: bool = True, set_name: str = "photos-eval") -> Sample:
    """Make (or read from cache) the degraded input of one clean CHW image.

    ``default``: seed from (name, base_seed), input clipped and rounded to 8 bits,
    cached as PNG (+ mask PNG + JSON side file that pins the clean pixels).
    ``published``: ``gaussian:...,clip=0`` with seed 0, float input, not cached.
    """
    if protocol not in PROTOCOLS:
        raise SetError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "published":
        pspec = published_spec(spec)
        d = corrupt.apply(clean.unsqueeze(0), pspec, 0)
        sigma = float(d.sigma[0]) if d.sigma is not None else None
        return Sample(name, d.input[0], clean, None,
                      {"sigma": sigma, "spec": pspec, "seed": 0, "protocol": protocol, "mask": None})

    seed = image_seed(name, base_seed)
    folder = DATA_DIR / "cache" / spec_slug(spec) / f"{set_name}-seed{base_seed}"
    img_p, mask_p, meta_p = folder / f"{name}.png", folder / f"{name}.mask.png", folder / f"{name}.json"
    clean_sha = pixels_sha256(clean.mul(255).round().to(torch.uint8).numpy())
    if cache and img_p.is_file() and meta_p.is_file():
        meta = json.loads(meta_p.read_text())
        if meta.get("clean_pixels_sha256") == clean_sha and meta.get("spec") == spec and meta.get("seed") == seed:
            x = _read_png_tensor(img_p, clean.shape[0])
            mask = _read_png_tensor(mask_p, 1).gt(0.5).float() if meta.get("has_mask") else None
            return Sample(name, x, clean, mask, {"sigma": meta.get("sigma"), "spec": spec, "seed": seed,
                                                 "protocol": protocol, "mask": mask})
    d = corrupt.apply(clean.unsqueeze(0), spec, seed)
    x = quantize8(d.input[0])
    mask = d.mask[0].float() if d.mask is not None else None
    if mask is not None:  # holes stay exactly 0 after rounding, as the corruption made them
        x = x * (1 - mask)
    sigma = float(d.sigma[0]) if d.sigma is not None else None
    if cache:
        folder.mkdir(parents=True, exist_ok=True)
        _write_png(img_p, _to_hwc_uint8(x))
        if mask is not None:
            _write_png(mask_p, (mask[0].numpy() * 255).astype(np.uint8))
        meta = {"name": name, "spec": spec, "seed": seed, "base_seed": base_seed, "sigma": sigma,
                "has_mask": mask is not None, "clean_pixels_sha256": clean_sha}
        meta_p.write_text(json.dumps(meta, indent=2) + "\n")
    return Sample(name, x, clean, mask, {"sigma": sigma, "spec": spec, "seed": seed, "protocol": protocol,
                                         "mask": mask})


def _to_hwc_uint8(x: torch.Tensor) -> np.ndarray:
    a = x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return a[:, :, 0] if a.shape[2] == 1 else a


def _read_png_tensor(path: Path, channels: int) -> torch.Tensor:
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a.transpose(2, 0, 1).copy()).float().div_(255.0)


# --------------------------------------------------------------------------- CLI


def _cmd_manifest(args: argparse.Namespace) -> None:
    MANIFEST_DIR.mkdir(parents=True, exist_ok=True)
    for name in _selected(args.set, with_fashion=True):
        m = make_manifest(name)
        manifest_path(name).write_text(json.dumps(m, indent=2) + "\n")
        print(f"wrote {manifest_path(name)}")


def _selected(choice: str, with_fashion: bool = False) -> list[str]:
    if choice == "all":
        return [n for n in PHOTO_SETS if n not in OPTIONAL_SETS] + ([FASHION_SET] if with_fashion else [])
    return [choice]


def main(argv: list[str] | None = None) -> int:
    parser = eval_parser(__doc__, "sets")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd, helptext in (("build", "verify sources and write PNG working copies under eval/data/"),
                          ("verify", "check source files against the manifests"),
                          ("list", "list the images of each set"),
                          ("manifest", "rewrite manifests from the curated source lists (maintainers)")):
        p = sub.add_parser(cmd, help=helptext)
        p.add_argument("--set", default="all", choices=["all", *KNOWN_SETS])
        if cmd == "build":
            p.add_argument("--force", action="store_true", help="rewrite working copies that already exist")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "manifest":
            _cmd_manifest(args)
        elif args.cmd == "build":
            for name in _selected(args.set):
                if name == FASHION_SET:
                    load_fashion_mnist_test(limit=1)
                    print(f"{name}: verified (read in place from the Debian package)")
                    continue
                print(f"{name} -> {build(name, force=args.force)}")
        elif args.cmd == "verify":
            for name in _selected(args.set, with_fashion=True):
                if name == FASHION_SET:
                    load_fashion_mnist_test(limit=1)
                else:
                    verify_sources(load_manifest(name))
                print(f"{name}: all sources match {manifest_path(name)}")
        elif args.cmd == "list":
            for name in _selected(args.set, with_fashion=True):
                m = load_manifest(name)
                print(f"{name}:")
                for e in m.get("images", m.get("files", [])):
                    hw = "x".join(map(str, e.get("work_hw", [])))
                    print(f"  {e.get('name', e.get('file')):28s} {hw:10s} {e.get('source', '')}")
    except SetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
