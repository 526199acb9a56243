"""restore: GAN-augmented image restoration (denoising, colorization, inpainting, VAEs) in PyTorch.

    import restore
    model = restore.load("denoise-gaussian")     # or a .safetensors path; device="auto" | "cpu" | "cuda"
    clean = model(noisy)                         # numpy, PIL or torch in, the same type out
    restore.list_weights()                       # the installed weights and their cards' summaries

Importing is cheap: torch and the models load on first use of `load` or
`list_weights`, and one broken optional dependency cannot break the import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "__version__", "list_weights", "load"]

if TYPE_CHECKING:
    from restore.api import Model, list_weights, load


def __getattr__(name: str) -> Any:
    if name in ("Model", "list_weights", "load"):
        from restore import api

        return getattr(api, name)
    raise AttributeError(f"module 'restore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
