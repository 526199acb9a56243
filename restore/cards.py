"""The model-card schema: every key a card in ``weights/`` may hold, its type and what it means.

One checked schema keeps cards comparable (the results tables are generated
from them) and catches typos (``metric`` for ``metrics``) that a reader would
silently skip. `check` lists the problems of a card; `restore.weights.save`
refuses a card with a missing or mistyped key and warns about an unknown one,
and a test holds every shipped card to the schema, so a new key is added here,
with its meaning, before a card uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CARD_KEYS", "REQUIRED", "check", "unknown_keys"]

_NUM = (int, float)
_NONE = type(None)

#: key -> (allowed types, meaning)
CARD_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    # identity and loading
    "name": ((str,), "weights name (the file stem)"),
    "card_format": ((int,), "card layout version (restore.weights.CARD_FORMAT)"),
    "arch": ((str,), "architecture name in restore.models.ARCHITECTURES"),
    "config": ((dict,), "constructor arguments of the architecture"),
    "sha256": ((str,), "SHA-256 of the .safetensors file, checked at every load"),
    "size_bytes": ((int,), "size of the .safetensors file"),
    "task": ((str,), "task whose restorer runs the weights (denoise, colorize, inpaint, vae, backbone)"),
    "created": ((str,), "export time, ISO 8601 UTC"),
    "torch": ((str,), "torch version that exported the weights"),
    "description": ((str,), "one-line summary for listings"),
    # what the model restores
    "corruption": ((str,), "corruption spec it was trained for (restore.corrupt)"),
    "dataset": ((str,), "training dataset kind (photos, fashion-mnist, mnist)"),
    "input": ((dict, str), "input size / format the model takes"),
    "input_quantized_8bit": ((bool,), "training inputs were rounded to 8 bits as files are"),
    "class_names": ((list,), "class names of a conditional model, by index"),
    "conditioning": ((str, _NONE), "label conditioning of a VAE (onehot, embedding, none)"),
    "latent_dim": ((int,), "VAE latent size"),
    "color": ((dict,), "colour normalisation of a colorizer (l_center, l_scale, ab_scale)"),
    "work_size": ((int,), "shorter side the model restores at by default"),
    "max_work_side": ((int,), "longest side at the working resolution"),
    "masks": ((list,), "mask specs drawn in training (inpainting)"),
    "mask_probs": ((list,), "probability of each mask spec"),
    "scale_range": ((list,), "random downscaling of training crops"),
    "patch_size": ((int,), "training crop side"),
    "noise_conditioned": ((bool,), "the model takes the noise level as an input"),
    "sigma_range": ((list,), "noise levels (0-255) drawn in training"),
    "denoise_strength": ((dict,), "strength gate of a noise-conditioned denoiser: gain g per sigma (0-255) of its "
                                  "change, y = x + g(sigma)(f(x, sigma) - x), measured on training photos"),
    "preprocessing": ((dict,), "input preprocessing of a backbone"),
    # how it was trained
    "data": ((str, _NONE), "training data folder or name"),
    "data_split": ((dict,), "training / validation split of the data"),
    "steps": ((int, _NONE), "optimiser steps"),
    "epochs": ((int, float, _NONE), "epochs"),
    "batch_size": ((int,), "batch size"),
    "amp": ((str, _NONE), "mixed precision mode"),
    "ema_decay": ((float, int, _NONE), "EMA decay of the exported generator"),
    "hardware": ((str, _NONE), "device the weights were trained on"),
    "wall_time_min": ((float, int), "training wall time in minutes"),
    "options": ((dict,), "the task options of the run"),
    "loss": ((dict,), "loss settings (VAE)"),
    "losses": ((dict,), "loss weights"),
    "discriminator": ((dict,), "discriminator settings"),
    "training": ((dict,), "trainer settings, commands and provenance (init_from)"),
    "train_command": ((str,), "the command that trained the weights (full chain)"),
    "train_commands": ((list,), "every command of the chain, in order"),
    "gpu_train_command": ((str,), "the GPU recipe's command"),
    "gpu_recipe_command": ((str,), "the GPU recipe's command"),
    "bn_recalibration": ((dict,), "BatchNorm statistics re-estimated after training"),
    "training_notes": ((str, list), "what to know about the run"),
    "notes": ((list, str), "notes for users"),
    "command": ((str,), "the command that produced the file (converted weights)"),
    "conversion": ((str,), "how converted weights were made"),
    "source": ((dict,), "where converted weights come from (package, file, SHA-256)"),
    "license": ((str,), "licence of the weights when not the project's"),
    "license_text": ((str,), "licence text, where the licence requires it"),
    # what it scores
    "metrics": ((dict,), "measured figures: SET/SPEC -> {psnr, ssim, baselines, command, commit}"),
    "metrics_command": ((str, _NONE), "the command that measured the metrics"),
    "calibration": ((dict,), "recorded score on a fixed sample, reproduced by tests/test_calibration.py"),
}

#: Keys every card needs (a card without them cannot be loaded, listed or compared).
REQUIRED: tuple[str, ...] = ("name", "card_format", "arch", "config", "sha256", "size_bytes", "task", "created",
                             "metrics")


def unknown_keys(card: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in card if k not in CARD_KEYS)


def check(card: Mapping[str, Any], *, allow_unknown: bool = False) -> list[str]:
    """The card's problems (empty when it follows the schema): missing, mistyped and (unless allowed) unknown keys."""
    problems = [f"missing key {k!r} ({CARD_KEYS[k][1]})" for k in REQUIRED if k not in card]
    for key, value in card.items():
        if key not in CARD_KEYS:
            if not allow_unknown:
                problems.append(f"unknown key {key!r}: add it to restore/cards.py CARD_KEYS with its meaning")
            continue
        types, meaning = CARD_KEYS[key]
        if isinstance(value, bool) and bool not in types:
            problems.append(f"{key!r} is a boolean; expected {'/'.join(t.__name__ for t in types)} ({meaning})")
        elif not isinstance(value, types):
            problems.append(f"{key!r} is {type(value).__name__}; expected {'/'.join(t.__name__ for t in types)} "
                            f"({meaning})")
    return problems
