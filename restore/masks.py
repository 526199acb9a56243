"""Free-form (DeepFill v2 strokes) and box inpainting masks with a hole-fraction range, drawn on the CPU.

Masks are 1HW float tensors, 1 = hole. They draw from the mask stream of a
`restore.streams.RandomStreams` (or a plain generator), so they are seeded and
resumable like the noise of the other corruptions.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from restore.streams import RandomStreams, cpu_uniform, resolve_streams

__all__ = ["DEFAULT_COVERAGE", "box_mask", "coverage_band", "draw_boxes", "draw_freeform", "freeform_mask"]

DEFAULT_COVERAGE: tuple[float, float] = (0.1, 0.45)


def coverage_band(height: int, width: int, coverage: Any, who: str) -> tuple[int, int]:
    if isinstance(height, bool) or isinstance(width, bool) or not all(
        isinstance(v, (int, np.integer)) for v in (height, width)
    ):
        raise ValueError(f"{who}: height and width must be integers, got {height!r}, {width!r}")
    if height < 1 or width < 1:
        raise ValueError(f"{who}: height and width must be >= 1, got {height}x{width}")
    try:
        a, b = (float(coverage[0]), float(coverage[1]))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"{who}: coverage must be a (low, high) pair, got {coverage!r}") from None
    if not (0.0 < a <= b < 1.0):
        raise ValueError(f"{who}: coverage must satisfy 0 < low <= high < 1, got {coverage!r}")
    total = int(height) * int(width)
    lo = max(1, math.ceil(a * total - 1e-9))
    hi = min(total - 1, math.floor(b * total + 1e-9))
    if lo > hi:
        raise ValueError(
            f"{who}: a {height}x{width} mask cannot have a hole fraction in [{a}, {b}] "
            f"(no whole number of its {total} pixels fits); use a larger image or a wider range"
        )
    return lo, hi


def _take_ordered(canvas: np.ndarray, y0: int, x0: int, new: np.ndarray, order_key: np.ndarray, k: int) -> None:
    """Add the first ``k`` new pixels of a patch to the canvas, in ``order_key`` order."""
    ys, xs = np.nonzero(new)
    idx = np.argsort(order_key[ys, xs], kind="stable")[:k]
    canvas[ys[idx] + y0, xs[idx] + x0] = True


def _grow_to(canvas: np.ndarray, need: int) -> None:
    """Last-resort fill: add the ``need`` known pixels closest to the holes (keeps shapes compact)."""
    known = (~canvas).astype(np.uint8)
    dist = cv2.distanceTransform(known, cv2.DIST_L2, 3)
    ys, xs = np.nonzero(known)
    idx = np.argsort(dist[ys, xs], kind="stable")[:need]
    canvas[ys[idx], xs[idx]] = True


_MAX_SHAPES = 2000


def draw_freeform(height: int, width: int, lo: int, hi: int, stream: torch.Generator) -> np.ndarray:
    """DeepFill v2 random brush strokes, added until the hole count reaches a target in [lo, hi].

    Recipe (Yu et al., "Free-Form Image Inpainting with Gated Convolution"):
    each stroke has 4-12 vertices joined by segments of random length around
    diag/8, alternating angles about 2*pi/5, a random brush width (12-40 px at
    256 px, scaled with the image), discs at the vertices, and the canvas is
    randomly flipped after each stroke. Coverage control: a target count T is
    drawn uniformly in [lo, hi]; whole strokes are added until the count
    reaches T; a segment that would push the count past hi is drawn only
    partially (its new pixels in order along the segment, as if the brush
    stopped early), so the final count lies in [T, hi].
    """
    canvas = np.zeros((height, width), dtype=bool)
    (u_target,) = cpu_uniform(stream, 1)
    target = min(hi, lo + int(u_target * (hi - lo + 1)))
    count = 0
    avg_radius = math.hypot(height, width) / 8.0
    size_scale = min(height, width) / 256.0
    min_w = max(1.0, 12.0 * size_scale)
    max_w = max(min_w, 40.0 * size_scale)
    mean_angle, angle_range = 2 * math.pi / 5, 2 * math.pi / 15
    max_vertex = 12
    for _ in range(_MAX_SHAPES):
        u = cpu_uniform(stream, 8 + max_vertex)
        normals = torch.randn(max_vertex, generator=stream, dtype=torch.float64).tolist()
        num_vertex = 4 + min(8, int(u[0] * 9))
        a_min = mean_angle - u[1] * angle_range
        a_max = mean_angle + u[2] * angle_range
        brush = max(1, int(min_w + u[3] * (max_w - min_w)))
        x, y = min(width - 1, int(u[4] * width)), min(height - 1, int(u[5] * height))
        vertices = [(x, y)]
        for i in range(num_vertex):
            angle = a_min + u[8 + i] * (a_max - a_min)
            if i % 2 == 0:
                angle = 2 * math.pi - angle
            r = min(max(avg_radius + normals[i] * avg_radius / 2, 0.0), 2 * avg_radius)
            fx = min(max(vertices[-1][0] + r * math.cos(angle), 0.0), width - 1.0)
            fy = min(max(vertices[-1][1] + r * math.sin(angle), 0.0), height - 1.0)
            vertices.append((int(round(fx)), int(round(fy))))
        radius = brush // 2
        done = False
        for j, (p, q) in enumerate(zip(vertices[:-1], vertices[1:])):
            pad = brush + 1
            x0, y0 = max(0, min(p[0], q[0]) - pad), max(0, min(p[1], q[1]) - pad)
            x1, y1 = min(width, max(p[0], q[0]) + pad + 1), min(height, max(p[1], q[1]) + pad + 1)
            layer = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
            pp, qq = (p[0] - x0, p[1] - y0), (q[0] - x0, q[1] - y0)
            cv2.line(layer, pp, qq, 1, thickness=brush, lineType=cv2.LINE_8)
            if j == 0:
                cv2.circle(layer, pp, radius, 1, thickness=-1)
            cv2.circle(layer, qq, radius, 1, thickness=-1)
            new = layer.astype(bool) & ~canvas[y0:y1, x0:x1]
            k = int(new.sum())
            if count + k > hi:
                gy, gx = np.mgrid[0 : y1 - y0, 0 : x1 - x0]
                dx, dy = qq[0] - pp[0], qq[1] - pp[1]
                if dx == 0 and dy == 0:
                    key = (gx - pp[0]) ** 2 + (gy - pp[1]) ** 2
                else:
                    key = (gx - pp[0]) * dx + (gy - pp[1]) * dy
                # The stroke may already have passed the target: then it just stops here.
                _take_ordered(canvas, y0, x0, new, key, max(0, target - count))
                count = max(count, target)
                done = True
                break
            canvas[y0:y1, x0:x1] |= new
            count += k
        if done:
            break
        if u[6] > 0.5:
            canvas = np.ascontiguousarray(canvas[:, ::-1])
        if u[7] > 0.5:
            canvas = np.ascontiguousarray(canvas[::-1, :])
        if count >= target:
            break
    else:
        _grow_to(canvas, target - count)
    return canvas


def draw_boxes(height: int, width: int, lo: int, hi: int, stream: torch.Generator) -> np.ndarray:
    """1-3 random rectangles sharing a target hole count T drawn uniformly in [lo, hi].

    Each box gets an aspect ratio in [1/2, 2] and an area equal to its share of
    what is still missing; overlaps are made up by further boxes until the count
    reaches lo. A box that would push the count past hi is filled row by row and
    stopped at T (a partial last row), so the final count lies in [lo, hi].
    """
    canvas = np.zeros((height, width), dtype=bool)
    u0, u1 = cpu_uniform(stream, 2)
    target = min(hi, lo + int(u0 * (hi - lo + 1)))
    planned = 1 + min(2, int(u1 * 3))
    count = 0
    for n in range(_MAX_SHAPES):
        ua, uy, ux = cpu_uniform(stream, 3)
        share = max(1.0, (target - count) / max(1, planned - n))
        aspect = math.exp((2 * ua - 1) * math.log(2.0))  # width / height
        bh = int(min(height, max(1, round(math.sqrt(share / aspect)))))
        bw = int(min(width, max(1, round(share / bh))))
        y0 = min(height - bh, int(uy * (height - bh + 1)))
        x0 = min(width - bw, int(ux * (width - bw + 1)))
        new = ~canvas[y0 : y0 + bh, x0 : x0 + bw]
        k = int(new.sum())
        if count + k > hi:
            gy, gx = np.mgrid[0:bh, 0:bw]
            _take_ordered(canvas, y0, x0, new, gy * bw + gx, target - count)
            count = target
            break
        canvas[y0 : y0 + bh, x0 : x0 + bw] = True
        count += k
        if count >= target or (n + 1 >= planned and count >= lo):
            break
    else:
        _grow_to(canvas, target - count)
    return canvas


def _public_mask(
    kind: str, height: int, width: int, coverage: Any, generator: torch.Generator | RandomStreams | None
) -> Tensor:
    lo, hi = coverage_band(height, width, coverage, f"{kind}_mask")
    device = generator.device if generator is not None else torch.device("cpu")
    stream = resolve_streams(generator, device).mask_stream()
    fn = draw_freeform if kind == "freeform" else draw_boxes
    # numpy does the bool -> float cast: cheaper than a torch kernel launch on a busy CPU.
    return torch.from_numpy(fn(int(height), int(width), lo, hi, stream).astype(np.float32)).unsqueeze(0)


def freeform_mask(
    height: int,
    width: int,
    coverage: tuple[float, float] = DEFAULT_COVERAGE,
    generator: torch.Generator | RandomStreams | None = None,
) -> Tensor:
    """A 1HW float CPU mask (1 = hole) of DeepFill v2 strokes whose hole fraction lies in ``coverage``.

    Raises ValueError when no whole number of pixels of a ``height x width``
    image falls in the coverage range (e.g. 1x1).
    """
    return _public_mask("freeform", height, width, coverage, generator)


def box_mask(
    height: int,
    width: int,
    coverage: tuple[float, float] = DEFAULT_COVERAGE,
    generator: torch.Generator | RandomStreams | None = None,
) -> Tensor:
    """A 1HW float CPU mask (1 = hole) of 1-3 rectangles whose hole fraction lies in ``coverage``."""
    return _public_mask("box", height, width, coverage, generator)
