"""Corruption pipelines: pure, seeded, device-agnostic degradations named by spec strings.

Why this module exists: training pairs, evaluation sets, the `restore corrupt`
command and the model cards must all agree on *exactly* which degradation was
applied. So every corruption is a small callable object built from a spec
string, whose canonical spec (``str(c)``) parses back to an equal object and is
what a model card records.

Spec grammar
------------
``STEP[+STEP...]`` where ``STEP`` is ``NAME[:KEY=VALUE[,KEY=VALUE...]]`` (for the
mask generators the name itself holds a colon: ``mask:freeform[,coverage=A-B]``).
A numeric value is either a single number or an ``A-B`` range; a range is
sampled uniformly and independently for every image of the batch ("blind"
training). Names and keys are case-insensitive; whitespace is ignored.

==============  ==========================================================
``gaussian``    ``sigma=S|A-B`` (0-255 scale, >= 0), ``clip=0|1`` (default 1;
                ``clip=0`` keeps the unclipped float noise of the published
                AWGN benchmark protocol). Sets ``Degraded.sigma``.
``saltpepper``  ``amount=P|A-B`` (fraction of pixels replaced, in [0, 1]),
                ``salt=F`` (fraction of replaced pixels set to 1, default 0.5).
                A pixel is replaced across all its channels at once.
``speckle``     ``std=S|A-B``: multiplicative noise ``x + x * n``, n ~ N(0, std^2).
``poisson``     ``peak=P|A-B`` (> 0): ``Poisson(x * peak) / peak``.
``blur``        ``scale=K|A-B`` (>= 1), ``mode=bicubic|bilinear``: area
                downsample by K, upsample back to the original size.
``jpeg``        ``quality=Q|A-B`` (integers 1-100): a real libjpeg round trip
                (OpenCV, on the CPU; the result moves back to the input device).
``gray``        ITU-R BT.601 luma, repeated so the channel count is unchanged.
``mask:freeform``  DeepFill v2 random brush strokes, ``coverage=A-B`` hole fraction.
``mask:box``    random rectangles, ``coverage=A-B`` hole fraction.
==============  ==========================================================

A chain applies left to right on ``input``; ``target`` stays the clean image.
A mask step attaches ``mask`` (N1HW, 1 = hole) and sets the holes of ``input``
to 0; the holes stay 0 through later steps of the chain, and a chain keeps its
first mask (later mask steps are no-ops). ``sigma`` is the Gaussian noise level
actually used per image; two Gaussian steps combine in quadrature.

Randomness
----------
All randomness comes from what the caller passes (`restore.streams`; the
mask drawing itself is `restore.masks`): a :class:`RandomStreams`
(a generator on the device for noise plus a CPU stream for masks, one object
that its owner, e.g. the trainer, saves and restores) or a bare
``torch.Generator`` (see :func:`make_generator`); the same seed gives the same
output. Noise is drawn on the tensor's device. Masks are drawn with OpenCV on
the CPU from the CPU stream, seeded from the seed alone, then moved to the
device: the same seed therefore yields the same masks on CPU and GPU. With a
bare generator a fresh (just seeded) one gives the masks of its seed and a used
one a seed drawn from it, so repeated calls with one generator yield new masks
and a generator that is (re)seeded and unused repeats them; no state is kept
here between calls.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from restore.masks import DEFAULT_COVERAGE, box_mask, coverage_band, draw_boxes, draw_freeform, freeform_mask
from restore.streams import RandomStreams, make_generator, resolve_generator, resolve_streams

__all__ = [
    "CORRUPTIONS",
    "BoxMask",
    "Blur",
    "Chain",
    "Corruption",
    "CorruptionSpecError",
    "Degraded",
    "FreeformMask",
    "GaussianNoise",
    "Gray",
    "Jpeg",
    "PoissonNoise",
    "RandomStreams",
    "SaltPepper",
    "SpeckleNoise",
    "apply",
    "box_mask",
    "freeform_mask",
    "make_generator",
    "parse_spec",
]

_LUMA_601 = (0.299, 0.587, 0.114)


class CorruptionSpecError(ValueError):
    """A corruption spec (or constructor argument) that cannot be understood."""


@dataclass
class Degraded:
    """The result of a corruption: what the model sees and what it should produce."""

    input: Tensor
    target: Tensor
    mask: Tensor | None = None
    sigma: Tensor | None = None


# --------------------------------------------------------------------------- #
# Parameters: one schema drives parsing, validation, canonical specs and errors.
# --------------------------------------------------------------------------- #

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_VALUE_RE = re.compile(rf"^({_NUM})(?:-({_NUM}))?$")
_INT_VALUE_RE = re.compile(r"^(\d+)(?:-(\d+))?$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _fmt(x: float | int) -> str:
    """Shortest exact decimal without exponent, so specs round-trip and never contain 'e-'."""
    if isinstance(x, int):
        return str(x)
    return np.format_float_positional(float(x), trim="-")


def _no_fail(reason: str) -> None:
    raise AssertionError(f"invalid parameter default: {reason}")


@dataclass(frozen=True)
class _Param:
    kind: str  # "float" | "int" | "bool" | "choice"
    default: Any = None  # None: required
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False
    max_open: bool = False
    ranged: bool = True  # accepts an A-B range
    range_only: bool = False  # must be an A-B range (mask coverage)
    choices: tuple[str, ...] = ()

    def bounds(self) -> str:
        """What a valid single value looks like, e.g. 'an integer in [1, 100]'."""
        if self.kind == "bool":
            return "0 or 1"
        if self.kind == "choice":
            return "one of " + "|".join(self.choices)
        what = "an integer" if self.kind == "int" else "a number"
        lo = None if self.minimum is None else _fmt(self.minimum)
        hi = None if self.maximum is None else _fmt(self.maximum)
        if lo is not None and hi is not None:
            return f"{what} in {'(' if self.min_open else '['}{lo}, {hi}{')' if self.max_open else ']'}"
        if lo is not None:
            return f"{what} {'>' if self.min_open else '>='} {lo}"
        return what

    def describe(self) -> str:
        text = self.bounds()
        if self.range_only:
            text += ", as an A-B range"
        elif self.ranged and self.kind in ("float", "int"):
            text += ", value or A-B range"
        if self.default is None:
            text += ", required"
        else:
            text += f", default {self.format(self.normalize(self.default, _no_fail))}"
        return text

    def format(self, value: Any) -> str:
        if self.kind == "bool":
            return "1" if value else "0"
        if self.kind == "choice":
            return str(value)
        a, b = value
        return _fmt(a) if a == b and not self.range_only else f"{_fmt(a)}-{_fmt(b)}"

    def _check_bounds(self, v: float, fail) -> None:
        if self.minimum is not None and (v < self.minimum or (self.min_open and v == self.minimum)):
            fail(f"must be {self.bounds()}")
        if self.maximum is not None and (v > self.maximum or (self.max_open and v == self.maximum)):
            fail(f"must be {self.bounds()}")

    def normalize(self, raw: Any, fail) -> Any:
        """Turn a spec token or a Python value into the canonical stored value (or call fail)."""
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, int) and raw in (0, 1):
                return bool(raw)
            if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
                return raw.strip().lower() in _TRUE
            fail("expected 0 or 1")
        if self.kind == "choice":
            if isinstance(raw, str) and raw.strip().lower() in self.choices:
                return raw.strip().lower()
            fail(f"expected one of {', '.join(self.choices)}")
        # numeric
        if isinstance(raw, str):
            token = re.sub(r"\s+", "", raw)
            m = (_INT_VALUE_RE if self.kind == "int" else _VALUE_RE).match(token)
            if m is None:
                fail(f"expected {self.bounds()}" + (" or an A-B range" if self.ranged or self.range_only else ""))
            conv = int if self.kind == "int" else float
            a = conv(m.group(1))
            b = conv(m.group(2)) if m.group(2) is not None else a
            is_range = m.group(2) is not None
        else:
            if isinstance(raw, (tuple, list)) and len(raw) == 2:
                pair, is_range = tuple(raw), True
            elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
                pair, is_range = (raw, raw), False
            else:
                fail("expected a number or a (low, high) pair")
            if self.kind == "int":
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
                    fail("expected integers")
                a, b = int(pair[0]), int(pair[1])
            else:
                try:
                    a, b = float(pair[0]), float(pair[1])
                except (TypeError, ValueError):
                    fail("expected numbers")
                if not (math.isfinite(a) and math.isfinite(b)):
                    fail("expected finite numbers")
        if is_range and not (self.ranged or self.range_only):
            fail("takes a single value, not a range")
        if self.range_only and not is_range:
            fail("needs an A-B range (the hole fraction the mask must land in)")
        if a > b:
            fail("range must be written low-high")
        self._check_bounds(a, fail)
        self._check_bounds(b, fail)
        return (a, b)


# --------------------------------------------------------------------------- #
# Corruptions.
# --------------------------------------------------------------------------- #


class _Context:
    __slots__ = ("generator", "mask_stream")

    def __init__(self, generator: torch.Generator, mask_stream: torch.Generator | None) -> None:
        self.generator = generator
        self.mask_stream = mask_stream


def _check_image(clean: Any) -> Tensor:
    if not isinstance(clean, Tensor):
        raise TypeError(f"corruption input must be a torch.Tensor, got {type(clean).__name__}")
    if clean.ndim != 4:
        hint = "; add a batch dimension with x.unsqueeze(0)" if clean.ndim == 3 else ""
        raise ValueError(f"corruption input must be NCHW, got shape {tuple(clean.shape)}{hint}")
    if not clean.is_floating_point():
        raise ValueError(f"corruption input must be a float tensor in [0, 1], got dtype {clean.dtype}")
    if min(clean.shape) == 0:
        raise ValueError(f"corruption input is empty: shape {tuple(clean.shape)}")
    return clean


def _sample(value: tuple[float, float], n: int, ctx: _Context, like: Tensor, integer: bool = False) -> Tensor:
    """Per-image parameter: constant for a single value, uniform for an A-B range."""
    a, b = value
    dev = like.device
    if a == b:
        return torch.full((n,), a, device=dev, dtype=torch.int64 if integer else like.dtype)
    if integer:
        return torch.randint(int(a), int(b) + 1, (n,), generator=ctx.generator, device=dev)
    return a + (b - a) * torch.rand(n, generator=ctx.generator, device=dev, dtype=like.dtype)


class Corruption:
    """Base class: a pure, seeded ``(clean, generator) -> Degraded`` callable with a canonical spec.

    Subclasses declare ``name`` and a parameter schema ``params``; keyword
    arguments of the constructor are validated exactly like spec tokens, e.g.
    ``GaussianNoise(sigma=(5, 50))`` equals ``parse_spec("gaussian:sigma=5-50")``.
    """

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, _Param]] = {}
    uses_masks: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        self.values: dict[str, Any] = {}
        for key in kwargs:
            if key not in self.params:
                raise CorruptionSpecError(
                    f"{self.name}: unknown parameter {key!r}; valid parameters: {_param_help(type(self))}"
                )
        for key, param in self.params.items():
            raw = kwargs.get(key, param.default)
            if raw is None:
                raise CorruptionSpecError(
                    f"{self.name}: missing required parameter {key!r}; valid parameters: {_param_help(type(self))}"
                )

            def fail(reason: str, key: str = key, raw: Any = raw) -> None:
                raise CorruptionSpecError(f"{self.name}: bad value {raw!r} for {key!r}: {reason}")

            self.values[key] = param.normalize(raw, fail)

    # -- identity -------------------------------------------------------------
    @property
    def spec(self) -> str:
        """Canonical spec with every parameter spelled out; ``parse_spec(c.spec) == c``."""
        parts = [f"{k}={p.format(self.values[k])}" for k, p in self.params.items()]
        if not parts:
            return self.name
        sep = "," if ":" in self.name else ":"
        return self.name + sep + ",".join(parts)

    def __str__(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"parse_spec({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Corruption) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __add__(self, other: "Corruption") -> "Chain":
        if not isinstance(other, Corruption):
            return NotImplemented
        return Chain([self, other])

    # -- application ----------------------------------------------------------
    def __call__(self, clean: Tensor, generator: torch.Generator | RandomStreams | None = None) -> Degraded:
        clean = _check_image(clean)
        if self.uses_masks:
            streams = resolve_streams(generator, clean.device)
            ctx = _Context(streams.generator, streams.mask_stream())
        else:
            gen = generator.generator if isinstance(generator, RandomStreams) else generator
            ctx = _Context(resolve_generator(gen, clean.device), None)
        work = clean if clean.dtype in (torch.float32, torch.float64) else clean.float()
        with torch.no_grad():
            out = self._run(Degraded(input=work, target=clean), ctx)
        if out.input.dtype != clean.dtype:
            out.input = out.input.to(clean.dtype)
        elif out.input is clean:  # identity steps (gray on 1 channel, blur:scale=1): never alias target
            out.input = clean.clone()
        if out.mask is not None and out.mask.dtype != clean.dtype:
            out.mask = out.mask.to(clean.dtype)
        out.target = clean
        return out

    def _run(self, d: Degraded, ctx: _Context) -> Degraded:
        return self._step(d, ctx)

    def _step(self, d: Degraded, ctx: _Context) -> Degraded:
        raise NotImplementedError(f"{type(self).__name__} must implement _step")


class GaussianNoise(Corruption):
    """Additive white Gaussian noise; sigma on the 0-255 scale, per image for a range."""

    name = "gaussian"
    params = {"sigma": _Param("float", minimum=0.0), "clip": _Param("bool", default=True)}

    def _step(self, d: Degraded, ctx: _Context) -> Degraded:
        x = d.input
        sigma = _sample(self.values["sigma"], x.shape[0], ctx, x)
        noise = torch.randn(x.shape, generator=ctx.generator, device=x.device, dtype=x.dtype)
        y = x + noise * (sigma / 255.0).view(-1, 1, 1, 1)
        if self.values["clip"]:
            y = y.clamp(0.0, 1.0)
        total = sigma if d.sigma is None else torch.sqrt(d.sigma.to(sigma.dtype) ** 2 + sigma**2)
        return replace(d, input=y, sigma=total)


class SaltPepper(Corruption):
    """Impulse noise: a fraction ``amount`` of pixels (all channels at once) set to 1 (salt) or 0."""

    name = "saltpepper"
    params = {
        "amount": _Param("float", minimum=0.0, maximum=1.0),
        "salt": _Param("float", default=0.5, minimum=0.0, maximum=1.0, ranged=False),
    }

    def _step(self, d: Degraded, ctx: _Context) -> Degraded:
        x = d.input
        n, _, h, w = x.shape
        amount = _sample(self.values["amount"], n, ctx, x).view(-1, 1, 1, 1)
        shape = (n, 1, h, w)
        hit = torch.rand(shape, generator=ctx.generator, device=x.device, dtype=x.dtype) < amount
        salt = torch.rand(shape, generator=ctx.generator, device=x.device, dtype=x.dtype) < self.values["salt"][0]
        return replace(d, input=torch.where(hit, salt.to(x.dtype), x))


class SpeckleNoise(Corruption):
    """Multiplicative noise ``x + x * n`` (n ~ N(0, std^2)), clipped to [0, 1]."""

    name = "speckle"
    params = {"std": _Param("float", minimum=0.0)}

    def _step(self, d: Degraded, ctx: _Context) -> Degraded:
        x = d.input
        std = _sample(self.values["std"], x.shape[0], ctx, x).view(-1, 1, 1, 1)
        noise = torch.randn(x.shape, generator=ctx.generator, device=x.device, dtype=x.dtype)
        return replace(d, input=(x + x * noise * std).clamp(0.0, 1.0))


class PoissonNoise(Corruption):
    """Shot noise: photon counts ``Poisson(x * peak) / peak``, so variance = x / peak; clipped."""

    name = "poisson"
    params = {"peak": _Param("float", minimum=0.0, min_open=True)}

    def _step(self, d: Degraded, ctx: _Context) -> Degraded:
        x = d.input
        peak = _sample(self.values["peak"], x.shape[0], ctx, x).view(-1, 1, 1, 1)
        counts = torch.poisson(x.clamp(min=0.0) * peak, generator=ctx.generator)
        return replace(d, input=(counts / peak).clamp(0.0, 1.0))


class Blur(Corruption):
    """Resolution loss: area downsample by ``scale`` then upsample back to the same size."""

    name = "blur"
    params = {
        "scale": _Param("float", minimum=1.0),
        "mode": _Param("choice", default="bicubic", choices=("bicubic", "bilinear")),
    }

    @staticmethod
    def _down_up(x: Tensor, scale: float, mode: str) -> Tensor:
        h, w = x.shape[-2:]
        small = (max(1, int(math.floor(h / scale + 0.5))), max(1, int(math.floor(w / scale + 0.5))))
        if small == (h, w):
            return x
        low = F.interpolate(x, size=small, mode="area")
        return F.interpolate(low, size=(h, w), mode=mode, align_corners=False).clamp(0.0, 1.0)

    def _step(self, d: Degraded, ctx: _Context) -> Degraded:
        x = d.input
        a, b = self.values["scale"]
        mode = self.values["mode"]
        if a == b:
            return replace(d, input=self._down_up(x, a, mode))
        scales = _sample((a, b), x.shape[0], ctx, x).tolist()
        out = torch.cat([self._down_up(x[i : i + 1], s, mode) for i, s in enumerate(scales)])
        return replace(d, input=out)


class Jpeg(Corruption):
    """A real JPEG encode/decode round trip (libjpeg via OpenCV, 4:2:0 chroma) at ``quality``."""

    name = "jpeg"
    params = {"quality": _Param("int", minimum=1, maximum=100)}

    def _step(self, d: Degraded, ctx: _Context) -> Degraded:
        x = d.input
        n, c = x.shape[:2]
        if c not in (1, 3):
            raise ValueError(f"jpeg: needs 1 or 3 channels, got {c}")
        qualities = _sample(self.values["quality"], n, ctx, x, integer=True).tolist()
        arr = x.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()
        out = np.empty_like(arr)
        for i, q in enumerate(qualities):
            img = arr[i, 0] if c == 1 else np.ascontiguousarray(arr[i].transpose(1, 2, 0)[..., ::-1])
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
            if not ok:
                raise RuntimeError(f"jpeg: OpenCV failed to encode a {tuple(img.shape)} image at quality {q}")
            dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            out[i] = dec[None] if c == 1 else dec[..., ::-1].transpose(2, 0, 1)
        y = torch.from_numpy(out).to(device=x.device, dtype=x.dtype) / 255.0
        return replace(d, input=y)


class Gray(Corruption):
    """Colour loss: ITU-R BT.601 luma, repeated over the channels (1-channel input is unchanged)."""

    name = "gray"
    params: ClassVar[dict[str, _Param]] = {}

    def _step(self, d: Degraded, ctx: _Context) -> Degraded:
        x = d.input
        c = x.shape[1]
        if c == 1:
            return d
        if c != 3:
            raise ValueError(f"gray: needs 1 or 3 channels, got {c}")
        weights = torch.tensor(_LUMA_601, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        luma = (x * weights).sum(dim=1, keepdim=True)
        return replace(d, input=luma.expand(-1, 3, -1, -1).contiguous())


class _MaskCorruption(Corruption):
    uses_masks = True
    params = {"coverage": _Param("float", default=DEFAULT_COVERAGE, minimum=0.0, maximum=1.0,
                                 min_open=True, max_open=True, range_only=True)}
    kind: ClassVar[str] = ""

    def _step(self, d: Degraded, ctx: _Context) -> Degraded:
        if d.mask is not None:  # a chain keeps its first mask
            return d
        assert ctx.mask_stream is not None
        x = d.input
        n, _, h, w = x.shape
        lo, hi = coverage_band(h, w, self.values["coverage"], self.name)
        fn = draw_freeform if self.kind == "freeform" else draw_boxes
        masks = np.stack([fn(h, w, lo, hi, ctx.mask_stream) for _ in range(n)])[:, None].astype(np.float32)
        mask = torch.from_numpy(masks).to(device=x.device, dtype=x.dtype)
        return replace(d, input=x.masked_fill(mask.bool(), 0.0), mask=mask)


class FreeformMask(_MaskCorruption):
    """Free-form holes from DeepFill v2 brush strokes (see :func:`freeform_mask`)."""

    name = "mask:freeform"
    kind = "freeform"


class BoxMask(_MaskCorruption):
    """Rectangular holes (see :func:`box_mask`)."""

    name = "mask:box"
    kind = "box"


class Chain(Corruption):
    """Steps applied left to right on ``input``; holes of a mask stay 0 through later steps."""

    name = "chain"

    def __init__(self, steps: list[Corruption] | tuple[Corruption, ...]) -> None:
        flat: list[Corruption] = []
        for s in steps:
            if not isinstance(s, Corruption):
                raise TypeError(f"Chain steps must be Corruption objects, got {type(s).__name__}")
            flat.extend(s.steps if isinstance(s, Chain) else [s])
        if not flat:
            raise CorruptionSpecError("a chain needs at least one step")
        self.steps: tuple[Corruption, ...] = tuple(flat)
        self.values = {}

    @property
    def uses_masks(self) -> bool:  # type: ignore[override]
        return any(s.uses_masks for s in self.steps)

    @property
    def spec(self) -> str:
        return "+".join(s.spec for s in self.steps)

    def _run(self, d: Degraded, ctx: _Context) -> Degraded:
        for step in self.steps:
            d = step._step(d, ctx)
            if d.mask is not None:
                d = replace(d, input=d.input.masked_fill(d.mask.bool(), 0.0))
        return d


CORRUPTIONS: dict[str, type[Corruption]] = {
    cls.name: cls
    for cls in (GaussianNoise, SaltPepper, SpeckleNoise, PoissonNoise, Blur, Jpeg, Gray, FreeformMask, BoxMask)
}


def _param_help(cls: type[Corruption]) -> str:
    if not cls.params:
        return "(none)"
    return "; ".join(f"{k} ({p.describe()})" for k, p in cls.params.items())


def _names_help() -> str:
    return ", ".join(CORRUPTIONS)


# --------------------------------------------------------------------------- #
# Parsing.
# --------------------------------------------------------------------------- #

_SPLIT_STEPS = re.compile(r"(?<![0-9.][eE])\+")


def _parse_step(step: str, spec: str) -> Corruption:
    text = re.sub(r"\s+", "", step)
    if not text:
        raise CorruptionSpecError(f"empty step in spec {spec!r}; valid names: {_names_help()}")
    lowered = text.lower()
    name, rest = None, ""
    for candidate in CORRUPTIONS:
        if ":" in candidate and (lowered == candidate or lowered.startswith(candidate + ",")):
            name, rest = candidate, text[len(candidate) + 1 :]
            break
    if name is None:
        head, sep, rest = text.partition(":")
        name = head.lower()
        if name not in CORRUPTIONS or ":" in name:
            hint = " (a mask needs its kind: mask:freeform or mask:box)" if name == "mask" else ""
            raise CorruptionSpecError(
                f"unknown corruption {head!r} in spec {spec!r}{hint}; valid names: {_names_help()}"
            )
        if sep and not rest:
            raise CorruptionSpecError(f"{name}: nothing after ':' in {step!r}; valid parameters: "
                                      f"{_param_help(CORRUPTIONS[name])}")
    cls = CORRUPTIONS[name]
    kwargs: dict[str, str] = {}
    for token in rest.split(",") if rest else []:
        key, eq, value = token.partition("=")
        key = key.lower()
        if not eq or not key or not value:
            raise CorruptionSpecError(
                f"{name}: malformed parameter {token!r} in {step!r} (expected key=value); "
                f"valid parameters: {_param_help(cls)}"
            )
        if key not in cls.params:
            raise CorruptionSpecError(
                f"{name}: unknown parameter {key!r} in {step!r}; valid parameters: {_param_help(cls)}"
            )
        if key in kwargs:
            raise CorruptionSpecError(f"{name}: parameter {key!r} given twice in {step!r}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except CorruptionSpecError as err:
        where = f"spec {spec!r}" if step.strip() == spec.strip() else f"step {step.strip()!r} of spec {spec!r}"
        raise CorruptionSpecError(f"{err} (in {where})") from None


def parse_spec(spec: str | Corruption) -> Corruption:
    """Build a corruption from a spec such as ``"blur:scale=2+gaussian:sigma=5-50"``.

    Raises CorruptionSpecError naming the offending token and listing the valid
    names or parameters.
    """
    if isinstance(spec, Corruption):
        return spec
    if not isinstance(spec, str):
        raise CorruptionSpecError(f"a corruption spec must be a string, got {type(spec).__name__}")
    if not spec.strip():
        raise CorruptionSpecError(f"empty corruption spec; valid names: {_names_help()}")
    steps = [_parse_step(s, spec) for s in _SPLIT_STEPS.split(spec)]
    return steps[0] if len(steps) == 1 else Chain(steps)


def apply(clean: Tensor, spec: str | Corruption, seed: int) -> Degraded:
    """Parse ``spec`` and apply it with `RandomStreams` seeded by ``seed`` on ``clean``'s device."""
    corruption = parse_spec(spec)
    clean = _check_image(clean)
    return corruption(clean, RandomStreams(seed, clean.device))
