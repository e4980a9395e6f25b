"""The field of view of a fundus photograph, and the zoom that brings it to a model's scale.

A microaneurysm model learns lesions at the scale of its training images: this project's
fundus data are drawn (or, for E-ophtha, resized) so that the round field of view (FOV) is
about ``FOV_PX`` = 1200 px across (11 µm per pixel for a 45° camera). Cameras write 1,000 to
4,000 px across the same field, and a model shown lesions 2-3× larger than it learned fails
(benchmarks/ma_scale.py). So a model file may name its FOV diameter (metadata
``fov_diameter_px``) and the :class:`~napari_gravity.core.predictor.Predictor` resamples an
image whose mask shows a different one.

:func:`fov_diameter` fits a circle to the FOV mask's rim where it lies inside the image (rows
clipped at the top and bottom, as most cameras write them, do not count). A crop that shows
too little of the rim has no measurable FOV: it is left at its own scale.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

#: Below this many rim pixels (on the ≤ 1024-px working copy) no circle is fitted.
MIN_RIM_PIXELS = 40
#: At least this fraction of the rim must lie on the fitted circle (within 2 % of its radius).
MIN_ON_CIRCLE = 0.6
#: The rim must cover at least this many of 36 ten-degree sectors around the fitted centre.
MIN_SECTORS = 12
#: No resampling when the measured diameter is within this factor of the reference.
ZOOM_TOLERANCE = 1.1
#: Zooms outside this range are treated as a failed measurement.
ZOOM_RANGE = (0.1, 4.0)


def fit_circle(mask: np.ndarray) -> tuple[float, float, float] | None:
    """``(cy, cx, r)`` (px) of the circle whose rim the mask's boundary follows where it lies
    inside the image, or None when that rim is not visible well enough to tell (a crop inside
    the FOV, an arc of a few degrees, a shape that is not a circle). The fit is refined on the
    part of the rim that follows the circle, so a few notches or flat stretches (retina too
    dark to tell from the surround) do not spoil it."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or not m.any() or m.all():
        return None
    step = max(1, math.ceil(max(m.shape) / 1024))
    small = m[::step, ::step]
    rim = small & ~ndi.binary_erosion(small, border_value=1)
    rim[:1, :] = rim[-1:, :] = False  # the image border is not the FOV's rim
    rim[:, :1] = rim[:, -1:] = False
    ys, xs = np.nonzero(rim)
    if len(ys) < MIN_RIM_PIXELS:
        return None
    y, x = ys.astype(np.float64), xs.astype(np.float64)
    use = np.ones(len(x), bool)
    # refit on the rim that follows the circle, in a band that narrows to 2 % of the radius:
    # notches and flat stretches drop out
    for band in (0.16, 0.08, 0.04, 0.02, 0.02, 0.02):
        fit = _circle(x[use], y[use])
        if fit is None:
            return None
        cx, cy, r = fit
        near = np.abs(np.hypot(x - cx, y - cy) - r) <= band * r + 1.5
        if near.sum() < MIN_RIM_PIXELS:
            return None
        use = near
    near = np.abs(np.hypot(x - cx, y - cy) - r) <= 0.02 * r + 1.5
    if near.mean() < MIN_ON_CIRCLE:  # not a circle
        return None
    ang = np.arctan2(y[near] - cy, x[near] - cx)
    sectors = np.unique(((ang + np.pi) / (2 * np.pi) * 36).astype(int) % 36)
    if len(sectors) < MIN_SECTORS:
        return None
    # a pixel (i, j) of the working copy is pixel (i * step, j * step) of the mask
    return cy * step, cx * step, r * step


def _circle(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """Algebraic least-squares circle ``x² + y² + D x + E y + F = 0``: (cx, cy, r)."""
    if len(x) < 3:
        return None
    a = np.column_stack([x, y, np.ones_like(x)])
    (d, e, f), *_ = np.linalg.lstsq(a, -(x * x + y * y), rcond=None)
    cx, cy = -d / 2, -e / 2
    r2 = cx * cx + cy * cy - f
    return (float(cx), float(cy), math.sqrt(r2)) if r2 > 0 else None


def fov_diameter(mask: np.ndarray) -> float | None:
    """Diameter (px) of the circular field of view in a boolean mask (:func:`fit_circle`), or
    None when its rim is not visible well enough to tell."""
    c = fit_circle(mask)
    return None if c is None else 2.0 * c[2]


def fov_zoom(mask: np.ndarray | None, reference: float | None) -> float:
    """Network pixels per image pixel that bring the mask's FOV to ``reference`` px across:
    1.0 without a reference or a measurable FOV, or when within ``ZOOM_TOLERANCE``."""
    if reference is None or mask is None:
        return 1.0
    d = fov_diameter(mask)
    if d is None:
        return 1.0
    z = float(reference) / d
    if not ZOOM_RANGE[0] <= z <= ZOOM_RANGE[1] or abs(math.log(z)) <= math.log(ZOOM_TOLERANCE):
        return 1.0
    return z


def resample(
    image: np.ndarray, mask: np.ndarray | None, zoom: float
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
    """``(image, mask, (zy, zx))`` resampled by ``zoom``: area averaging when shrinking,
    bilinear when enlarging; the mask by nearest neighbour. ``(zy, zx)`` are the exact factors
    of the rounded shape: image point p maps to ``(p + 0.5) * z - 0.5``."""
    h, w = image.shape
    out = (max(1, round(h * zoom)), max(1, round(w * zoom)))
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if zoom < 1:
        r = F.interpolate(t, size=out, mode="area")
    else:
        r = F.interpolate(t, size=out, mode="bilinear", align_corners=False)
    small = r[0, 0].numpy()
    smask = None
    if mask is not None:
        mt = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        smask = F.interpolate(mt, size=out, mode="nearest-exact")[0, 0].numpy() > 0.5
    return small, smask, (out[0] / h, out[1] / w)
