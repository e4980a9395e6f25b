"""Point geometry shared by prediction, evaluation, the detectors and the plugin.

One rule for "which pixel is this point on". Points are (y, x) in pixels, float. Pixel (r, c)
covers the half-open square [r − 0.5, r + 0.5) × [c − 0.5, c + 0.5) (SPEC: pixel centres sit at
integer coordinates), so

    pixel index of a point  =  floor(p + 0.5)     (per axis; 0.5 → 1, 1.5 → 2, −0.5 → 0)

not ``np.rint`` (round half to even: 0.5 → 0, 2.5 → 2), and never clipped to the image: a point
whose pixel lies outside an H×W image is outside, i.e. inside ⇔ −0.5 ≤ y < H − 0.5 and
−0.5 ≤ x < W − 0.5. :func:`inside_image` tests that interval directly (four comparisons, cheap
on 300k candidates) and is exactly "``pixel_index`` falls in [0, H) × [0, W)".
:func:`pixel_index` evaluates the rule as ``floor(p) + (p − floor(p) ≥ 0.5)``, exact in any
float dtype; the literal ``floor(p + 0.5)`` is not (for p = 0.5 − 2⁻⁵⁴ the sum rounds to 1.0).
The half-pixel case matters: the uniform gravity-point layout puts points at .5 coordinates.

NaN points are rejected with a ``ValueError`` (a NaN has no pixel; silently calling it "outside"
hides a diverged model or a broken annotation). ±inf is simply outside.

De-duplication by radius: two points are duplicates when their Euclidean distance is strictly
less than ``radius``. :func:`suppress_close` thins one scored set greedily (the higher score
wins, ties by input order); :func:`near_points` marks points that duplicate any point of another
set (e.g. new model points against points a user already reviewed).

Numpy (and scipy for the radius queries) only: no torch, napari or Qt.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "as_points",
    "inside_image",
    "inside_mask",
    "near_points",
    "pixel_index",
    "suppress_close",
]


def as_points(points, *, name: str = "points") -> np.ndarray:
    """``points`` as an (N, 2) float array (dtype kept when already floating), NaN rejected.

    Accepts anything array-like with a multiple of 2 values, including empty input
    (``[]``, ``np.empty((0, 2))``), which gives shape (0, 2).
    """
    p = np.asarray(points)
    if p.dtype.kind != "f":
        p = p.astype(np.float64)
    if p.size == 0:
        return p.reshape(0, 2)
    if p.ndim != 2 or p.shape[1] != 2:
        if p.ndim == 1 and p.size == 2:
            p = p.reshape(1, 2)
        else:
            raise ValueError(f"{name} must be (N, 2) (y, x) pixels, got shape {p.shape}")
    if np.isnan(p).any():
        bad = int(np.flatnonzero(np.isnan(p).any(axis=1))[0])
        raise ValueError(f"{name} contain NaN (first at row {bad}); a NaN point has no pixel")
    return p


def _shape_hw(shape) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"image shape needs at least 2 dimensions (H, W), got {tuple(shape)}")
    return int(shape[-2]), int(shape[-1])


def _pixel(p: np.ndarray) -> np.ndarray:
    """``floor(p + 0.5)`` of finite float points, exactly, in any float dtype: ``p − floor(p)``
    is exact except for −0.5 < p < 0, where its rounding cannot cross 0.5; the literal
    ``p + 0.5`` rounds up for p just below 0.5 (0.5 − 2⁻⁵⁴ + 0.5 → 1.0)."""
    f = np.floor(p)
    f += (p - f) >= 0.5
    return f.astype(np.intp)


def _inside(p: np.ndarray, h: int, w: int) -> np.ndarray:
    y, x = p[:, 0], p[:, 1]
    return (y >= -0.5) & (y < h - 0.5) & (x >= -0.5) & (x < w - 0.5)


def pixel_index(points) -> np.ndarray:
    """(N, 2) int64 pixel (row, col) of each point: ``floor(p + 0.5)`` per axis (not clipped;
    check :func:`inside_image` before indexing an array). ±inf points raise ``ValueError``."""
    p = as_points(points)
    if not np.isfinite(p).all():
        raise ValueError("points contain ±inf; they have no pixel index")
    return _pixel(p).astype(np.int64, copy=False)


def inside_image(points, image_shape) -> np.ndarray:
    """Bool (N,): the point's pixel lies inside an image of shape (..., H, W)."""
    return _inside(as_points(points), *_shape_hw(image_shape))


def inside_mask(points, mask) -> np.ndarray:
    """Bool (N,): the point's pixel is True in the 2-D ``mask``; False outside the image.
    ``mask=None`` means no restriction (all True)."""
    p = as_points(points)
    if mask is None:
        return np.ones(len(p), dtype=bool)
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    h, w = m.shape
    out = _inside(p, h, w)
    if out.all():
        rc = _pixel(p)
        return m[rc[:, 0], rc[:, 1]]
    idx = np.flatnonzero(out)
    if idx.size:
        rc = _pixel(p[idx])
        out[idx] = m[rc[:, 0], rc[:, 1]]
    return out


def suppress_close(points, scores, radius: float) -> np.ndarray:
    """Greedy de-duplication of one scored set: indices of the kept points, best first, such
    that no two kept points are closer than ``radius`` (strictly; the higher score wins, ties by
    input order). ``radius <= 0`` keeps everything (still sorted by score)."""
    p = as_points(points)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(sc) != len(p):
        raise ValueError(f"{len(p)} points but {len(sc)} scores")
    order = np.argsort(-sc, kind="stable")
    if radius <= 0 or len(p) < 2:
        return order
    from scipy.spatial import cKDTree

    neighbours = cKDTree(p).query_ball_point(p, r=_strict(radius))
    removed = np.zeros(len(p), dtype=bool)
    keep = []
    for i in order.tolist():
        if removed[i]:
            continue
        keep.append(i)
        removed[neighbours[i]] = True
    return np.asarray(keep, dtype=np.int64)


def near_points(points, others, radius: float) -> np.ndarray:
    """Bool (N,): the point lies strictly closer than ``radius`` to some point of ``others``
    (a duplicate of it). Empty ``others`` or ``radius <= 0``: all False."""
    p = as_points(points)
    o = as_points(others, name="others")
    if len(p) == 0 or len(o) == 0 or radius <= 0:
        return np.zeros(len(p), dtype=bool)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(o).query(p, k=1, distance_upper_bound=float(radius))
    return d < float(radius)


def _strict(radius: float) -> float:
    """cKDTree ball queries include the boundary (≤ r); the largest float below r makes them
    strict (< r) without a tolerance that would also drop points a hair beyond r."""
    return float(np.nextafter(float(radius), 0.0))
