"""The built package carries its weights (issue 23): sdist -> wheel -> fresh venv -> ``restore denoise``.

Before, ``pip wheel .`` made a wheel with no ``.safetensors`` inside and ``restore denoise`` from it
failed with "available: none ship yet". Here the sdist is built from a copy of the source tree, the
wheel from that sdist (so MANIFEST.in and setup.py's weights hook are both exercised), installed with
``--no-deps`` into a new venv that borrows torch & co. from this interpreter's site-packages (nothing
is downloaded), and run from a folder outside any source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
#: What a source distribution is built from (a fresh clone has these; build outputs and runs are left out).
SOURCES = ("restore", "weights", "requirements", "setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
                             f"stderr:\n{result.stderr[-3000:]}")
    return result


def _copy_sources(dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "_weights")
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore)
        else:
            shutil.copy2(src, dst / name)


@pytest.mark.slow
def test_wheel_from_sdist_carries_weights_and_restores_outside_the_tree(tmp_path: Path) -> None:
    src, dist, work = tmp_path / "src", tmp_path / "dist", tmp_path / "work"
    for d in (src, dist, work):
        d.mkdir()
    _copy_sources(src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RESTORE_WEIGHTS_DIR")}
    env["OMP_NUM_THREADS"] = "1"

    # sdist (setuptools' PEP 517 hook, no `build` package needed), then the wheel from the sdist
    sdist = _run([sys.executable, "-c", f"import setuptools.build_meta as b; print(b.build_sdist({str(dist)!r}))"],
                 cwd=src, env=env).stdout.strip().splitlines()[-1]
    shipped = sorted(p.relative_to(REPO / "weights").as_posix()
                     for p in (REPO / "weights").rglob("*") if p.suffix in (".json", ".safetensors"))
    assert "denoise-gaussian.safetensors" in shipped and "backbones/squeezenet1_1-imagenet.safetensors" in shipped
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(dist), str(dist / sdist)], cwd=work, env=env)
    wheel = next(dist.glob("restore-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in shipped if f"restore/_weights/{f}" not in names]
    assert not missing, f"the wheel lacks {missing}"

    # a fresh venv that sees this interpreter's packages (torch...) after its own, but not the editable restore
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work, env=env)
    vpy = venv / "bin" / "python"
    vsite = Path(_run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                      cwd=work, env=env).stdout.strip())
    (vsite / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "--no-deps", "--no-index", str(wheel)],
         cwd=work, env=env)
    where = _run([str(vpy), "-c", "import restore.weights as W; print(W.__file__); print(W.weights_dir())"],
                 cwd=work, env=env).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == str(Path(where[0]).parent / "_weights")

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(work / "sample.png")
    restore_cmd = str(venv / "bin" / "restore")
    _run([restore_cmd, "denoise", "sample.png", "out/"], cwd=work, env=env)
    out = np.asarray(Image.open(work / "out" / "sample.png"))
    assert out.shape == pixels.shape and out.dtype == np.uint8

    # the same pixels as the source tree's pipeline gives
    import restore

    expected = restore.load("denoise-gaussian", device="cpu")(pixels)
    assert np.array_equal(out, expected)

    listed = _run([restore_cmd, "weights"], cwd=work, env=env).stdout
    assert "denoise-gaussian" in listed and str(venv) in listed
    bad = _run([restore_cmd, "denoise", "sample.png", "out2/", "--weights", "nope"], cwd=work, env=env, check=False)
    assert bad.returncode == 2
    assert "unknown weights 'nope'" in bad.stderr and "installed package data: used" in bad.stderr, bad.stderr
