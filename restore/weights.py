"""Shipped-weights registry: ``NAME`` -> ``NAME.safetensors`` + ``NAME.json`` card.

Why this shape (docs/design.md, section 6):

* Tensors live in safetensors, the card in plain JSON, so loading never
  unpickles anything: a downloaded weights file cannot run code.
* The card records the architecture name and constructor arguments, so
  ``load`` rebuilds the model without the training code, and the SHA-256 and
  size of the tensor file, so a truncated download or an edited file is a loud
  error instead of a silently different model.
* ``save`` refuses a card that would not rebuild the model it came from, so a
  model whose ``self.config`` is incomplete is caught at export time, not by
  the first user.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save_file

from restore import cards, models
from restore.io.atomic import atomic_output

__all__ = [
    "WEIGHTS_DIR",
    "WeightsError",
    "available",
    "card_path",
    "load",
    "resolve",
    "save",
    "search_path",
    "verify",
    "weights_dir",
]

#: Bumped when the card layout changes incompatibly.
CARD_FORMAT = 1
#: Keys every card needs to be loadable.
_LOAD_KEYS = ("arch", "config", "sha256", "size_bytes")
#: Keys a caller must provide to ``save`` (the rest is derived or optional).
_SAVE_KEYS = ("task", "corruption")
#: Documented card keys that ``save`` records as null when the caller does not know them.
_OPTIONAL_KEYS = ("data", "steps", "hardware", "metrics_command")

# Where shipped weights are looked for, in order (see `search_path`)
#: A built wheel's copy of ``weights/`` (setup.py puts it there; absent in a source tree).
_PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "_weights"
#: The repository's ``weights/`` folder (a source tree or an editable install).
_REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
_ENV = "RESTORE_WEIGHTS_DIR"

#: Folder of shipped weights: ``$RESTORE_WEIGHTS_DIR`` at import time, else the installed package's
#: weights, else the repository's ``weights/`` folder. ``weights_dir()`` re-reads the variable.
WEIGHTS_DIR: Path = (Path(os.environ[_ENV]) if os.environ.get(_ENV)
                     else _PACKAGE_WEIGHTS if _PACKAGE_WEIGHTS.is_dir() else _REPO_WEIGHTS)


class WeightsError(Exception):
    """A weights file or model card is missing, unknown, tampered with or inconsistent."""


def weights_dir() -> Path:
    """The folder searched for shipped names (env var read at call time, so tests and users can switch it)."""
    env = os.environ.get(_ENV)
    return Path(env) if env else Path(WEIGHTS_DIR)


def search_path() -> list[tuple[str, Path]]:
    """Where shipped names are looked for, as ``(why, folder)``, in order; the first that exists is used.

    ``$RESTORE_WEIGHTS_DIR`` when set (and then only it), else the installed wheel's package data,
    else the source tree's ``weights/``: so errors can name every place that was tried.
    """
    env = os.environ.get(_ENV)
    if env:
        return [(f"${_ENV}", Path(env))]
    places = [("installed package data", _PACKAGE_WEIGHTS), ("source tree", _REPO_WEIGHTS)]
    if Path(WEIGHTS_DIR) not in (_PACKAGE_WEIGHTS, _REPO_WEIGHTS):
        places.insert(0, ("restore.weights.WEIGHTS_DIR", Path(WEIGHTS_DIR)))
    return places


def _looked_in() -> str:
    """``search_path()`` for an error message: each folder, whether it exists, and which one was used."""
    used = weights_dir()
    parts = []
    for why, folder in search_path():
        state = "used" if folder == used else ("exists" if folder.is_dir() else "absent")
        parts.append(f"{folder} ({why}: {state})")
    if os.environ.get(_ENV) is None:
        parts.insert(0, f"${_ENV} (unset)")
    return "; ".join(parts)


# --------------------------------------------------------------------------- helpers


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _arch_of(model: nn.Module) -> str | None:
    """The ``ARCHITECTURES`` key whose target is ``type(model)``, if any."""
    cls = type(model)
    wanted = f"{cls.__module__}:{cls.__qualname__}"
    for name, target in models.ARCHITECTURES.items():
        if target == wanted:
            return name
    return None


def _stem(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def _state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor; "
                "safetensors can only hold tensors"
            )
        # clone: tied/shared storages are rejected by safetensors; contiguous: required by it.
        out[key] = value.detach().to("cpu").contiguous().clone()
    return out


def _check_rebuild(arch: str, config: dict, state: dict[str, torch.Tensor]) -> None:
    """Refuse to save weights that ``load`` could not put back into a freshly built model."""
    try:
        expected = _card_shapes(arch, config)
    except Exception as e:  # noqa: BLE001 - any constructor failure means the card is unusable
        raise WeightsError(
            f"card arch={arch!r} config={config!r} does not build a model ({type(e).__name__}: {e})"
        ) from e
    got = {k: tuple(v.shape) for k, v in state.items()}
    _compare_state(expected, got, where=f"arch {arch!r} with config {config!r}")


def _card_shapes(arch: str, config: dict) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes ``build(arch, **config)`` creates, built on the meta device: no memory is allocated.

    So a card whose sizes are inflated (a width of 10**5 asks for terabytes) is compared with the
    weights file before anything is allocated for it.
    """
    with torch.device("meta"):
        model = models.build(arch, **config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def _header_shapes(st_path: Path, data: bytes) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header (8-byte little-endian length, then JSON), without reading tensors."""
    bad = f"{st_path}: not a valid safetensors file"
    if len(data) < 8:
        raise WeightsError(f"{bad} (shorter than its 8-byte header length)")
    length = int.from_bytes(data[:8], "little")
    if length > len(data) - 8:
        raise WeightsError(f"{bad} (header of {length} bytes in a {len(data)}-byte file)")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, ValueError) as e:
        raise WeightsError(f"{bad} (header is not JSON: {e})") from e
    if not isinstance(header, dict):
        raise WeightsError(f"{bad} (header is not a JSON object)")
    shapes = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise WeightsError(f"{bad} (tensor {key!r} has no valid shape)")
        shapes[key] = tuple(shape)
    return shapes


def _compare_state(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]], where: str) -> None:
    """Raise WeightsError naming the missing, unexpected and mis-shaped tensors (shapes given as tuples)."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [
        f"{k}: file {got[k]} vs model {expected[k]}"
        for k in sorted(set(expected) & set(got))
        if expected[k] != got[k]
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_abbrev(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_abbrev(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_abbrev(shapes)}")
        raise WeightsError(f"weights do not fit {where}: " + "; ".join(parts))


def _abbrev(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)})"


# --------------------------------------------------------------------------- save


def save(stem: str | os.PathLike[str], model: nn.Module, card: dict[str, Any]) -> Path:
    """Write ``stem.safetensors`` and ``stem.json``; return the safetensors path.

    ``card`` must give ``task`` and ``corruption``; ``arch`` and ``config``
    default to the model's registered architecture and ``model.config``;
    ``name`` defaults to the stem's file name. ``sha256``, ``size_bytes`` and
    ``created`` are always computed here (never trusted from the caller).
    """
    stem = _stem(stem)
    if not isinstance(card, dict):
        raise WeightsError(f"{stem}: card must be a dict, got {type(card).__name__}")
    missing = [k for k in _SAVE_KEYS if k not in card]
    if missing:
        raise WeightsError(f"{stem}: card is missing required keys {missing}")
    card = dict(card)
    card.setdefault("name", stem.name)
    if "arch" not in card:
        arch = _arch_of(model)
        if arch is None:
            raise WeightsError(
                f"{stem}: {type(model).__qualname__} is not registered in restore.models.ARCHITECTURES; "
                "register it or pass card['arch']"
            )
        card["arch"] = arch
    if "config" not in card:
        config = getattr(model, "config", None)
        if not isinstance(config, dict):
            raise WeightsError(
                f"{stem}: model {type(model).__qualname__} has no dict `config` of constructor kwargs; "
                "pass card['config']"
            )
        card["config"] = dict(config)
    for key in _OPTIONAL_KEYS:
        card.setdefault(key, None)
    card.setdefault("metrics", {})
    if not isinstance(card["metrics"], dict):
        raise WeightsError(f"{stem}: card['metrics'] must be a dict, got {type(card['metrics']).__name__}")
    try:
        json.dumps(card, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{stem}: card is not JSON-serialisable ({e})") from e
    derived = {"sha256": "", "size_bytes": 0, "created": "", "card_format": CARD_FORMAT}  # computed below
    problems = cards.check({**derived, **card}, allow_unknown=True)
    if problems:
        raise WeightsError(f"{stem}: the card breaks the schema of restore/cards.py: {'; '.join(problems)}")
    unknown = cards.unknown_keys(card)
    if unknown:
        warnings.warn(f"{stem}: card keys {unknown} are not in restore/cards.py CARD_KEYS; add them there "
                      "with their meaning (the shipped-card test requires it)", stacklevel=2)

    state = _state_dict_for_saving(model)
    _check_rebuild(card["arch"], card["config"], state)

    stem.parent.mkdir(parents=True, exist_ok=True)
    st_path = stem.with_name(stem.name + ".safetensors")
    json_path = stem.with_name(stem.name + ".json")
    metadata = {"format": "pt", "name": str(card["name"]), "arch": str(card["arch"])}
    with atomic_output(st_path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
        card["sha256"] = _sha256_file(tmp)
        card["size_bytes"] = tmp.stat().st_size
    card["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    card["card_format"] = CARD_FORMAT
    with atomic_output(json_path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return st_path


# --------------------------------------------------------------------------- lookup


def resolve(name_or_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Return ``(card.json, weights.safetensors)`` paths for a shipped name or a path.

    A ``Path``, or a string with a separator or a ``.json``/``.safetensors``
    suffix, is a path. A bare word is a shipped name in ``weights_dir()``,
    falling back to a stem in the current folder when no such name ships.
    """
    text = os.fspath(name_or_path)
    if not text:
        raise WeightsError("empty weights name")
    p = Path(text)
    explicit_path = (
        isinstance(name_or_path, os.PathLike)
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or p.suffix in (".json", ".safetensors")
    )
    shipped = weights_dir() / f"{text}.json"
    if explicit_path or (not shipped.is_file() and p.with_name(p.name + ".json").is_file()):
        stem = _stem(p)
        json_path = stem.with_name(stem.name + ".json")
        if not json_path.is_file():
            raise WeightsError(f"{json_path}: model card not found (expected next to the weights file)")
    else:
        stem = weights_dir() / text
        json_path = shipped
        if not json_path.is_file():
            names = [str(c["name"]) for c in available()]
            listed = ", ".join(names) if names else "none ship yet"
            raise WeightsError(f"unknown weights {text!r}; available: {listed}. Looked in: {_looked_in()}")
    return json_path, stem.with_name(stem.name + ".safetensors")


def card_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Path of the model card for a name or path."""
    return resolve(name_or_path)[0]


def _read_card(json_path: Path) -> dict[str, Any]:
    try:
        card = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{json_path}: unreadable model card ({e})") from e
    if not isinstance(card, dict):
        raise WeightsError(f"{json_path}: model card must be a JSON object")
    missing = [k for k in _LOAD_KEYS if k not in card]
    if missing:
        raise WeightsError(f"{json_path}: model card is missing {missing}")
    if not isinstance(card["config"], dict):
        raise WeightsError(f"{json_path}: card 'config' must be an object of constructor kwargs")
    card.setdefault("name", json_path.stem)
    return card


def available() -> list[dict[str, Any]]:
    """Cards of the weights in ``weights_dir()``, sorted by name.

    A JSON file there that is not a model card is skipped with a warning
    naming it (listing must not die on one bad file).
    """
    folder = weights_dir()
    if not folder.is_dir():
        return []
    cards = []
    for json_path in sorted(folder.glob("*.json")):
        try:
            cards.append(_read_card(json_path))
        except WeightsError as e:
            warnings.warn(str(e), stacklevel=2)
    return sorted(cards, key=lambda c: str(c["name"]))


def _read_verified(json_path: Path, st_path: Path) -> tuple[dict[str, Any], bytes]:
    card = _read_card(json_path)
    if not st_path.is_file():
        raise WeightsError(f"{st_path}: weights file missing (card {json_path.name} refers to it)")
    data = st_path.read_bytes()
    expected_size = int(card["size_bytes"])
    if len(data) != expected_size:
        what = "truncated" if len(data) < expected_size else "larger than recorded"
        raise WeightsError(
            f"{st_path}: {what}: {len(data)} bytes, card records {expected_size}; re-download or re-export it"
        )
    digest = _sha256_bytes(data)
    if digest != str(card["sha256"]).lower():
        raise WeightsError(
            f"{st_path}: SHA-256 mismatch (file {digest[:16]}..., card {str(card['sha256'])[:16]}...): "
            "the file was modified or corrupted; refusing to load it"
        )
    return card, data


def verify(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check size and SHA-256 of a weights file against its card; return the card."""
    json_path, st_path = resolve(name_or_path)
    card, _ = _read_verified(json_path, st_path)
    return card


def load(name_or_path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model described by a card and load its verified tensors.

    The bytes that were hashed are the bytes that get loaded (no re-read), and
    only safetensors is parsed: nothing is unpickled. The card's model is
    first built on the meta device and its shapes compared with the file's
    header, so a card with inflated sizes fails before anything is allocated
    for it. ``eval()`` is left to the caller (construction, loading and
    mode are separate steps).
    """
    json_path, st_path = resolve(name_or_path)
    card, data = _read_verified(json_path, st_path)
    arch = card["arch"]
    try:
        expected = _card_shapes(arch, card["config"])
    except KeyError as e:
        raise WeightsError(f"{json_path}: {e.args[0] if e.args else e}") from e
    except Exception as e:  # noqa: BLE001 - constructor errors become one clear error type
        raise WeightsError(
            f"{json_path}: cannot build arch {arch!r} with config {card['config']!r} ({type(e).__name__}: {e})"
        ) from e
    _compare_state(expected, _header_shapes(st_path, data), where=f"{json_path.name} (arch {arch!r})")
    try:
        state = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{st_path}: not a valid safetensors file ({e})") from e
    model = models.build(arch, **card["config"])  # the meta build above succeeded and matches the file
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{st_path}: load_state_dict failed: {e}") from e
    return model.to(device), card
