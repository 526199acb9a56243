"""Build hook: a built wheel carries the shipped weights (``weights/`` -> ``restore/_weights/``).

Why a hook and not ``package_data``: the weights stay in the repository's top-level ``weights/``
folder (training and eval scripts write there, the docs cite it), which is outside the ``restore``
package. Built installs get a copy inside the package, where `restore.weights` finds it; an editable
install reads ``weights/`` in place (nothing is copied). The sdist carries ``weights/`` (MANIFEST.in),
so a wheel built from it carries them too. Everything else is in setup.cfg.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: Shipped weights and model cards, relative to ``weights/`` (restoring models and the losses' backbones).
PATTERNS = ("*.safetensors", "*.json", "backbones/*.safetensors", "backbones/*.json")


class BuildPyWithWeights(build_py):
    """``build_py`` plus a copy of ``weights/`` into the built package (skipped for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # restore.weights finds the source tree's weights/ folder
        src = Path(__file__).resolve().parent / "weights"
        dst = Path(self.build_lib) / "restore" / "_weights"
        for pattern in PATTERNS:
            for f in sorted(src.glob(pattern)):
                target = dst / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)


setup(cmdclass={"build_py": BuildPyWithWeights})
