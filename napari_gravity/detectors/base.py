"""The detector interface shared by GravityNet and the classical candidate generators."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from napari_gravity.core.geometry import inside_mask, suppress_close
from napari_gravity.core.normalize import normalize_image
from napari_gravity.types import Detections

POLARITIES = ("bright", "dark")

__all__ = [
    "POLARITIES",
    "Detector",
    "crop_to_mask",
    "finish_candidates",
    "keep_in_mask",
    "prepare_image",
    "suppress_close",
]


@runtime_checkable
class Detector(Protocol):
    """Anything that turns a 2-D image into scored lesion centres.

    ``detect(image, mask=None)`` returns :class:`Detections` with (y, x) points in pixels and a
    ranking score in [0, 1] each (higher = more lesion-like); ``mask`` (bool, same shape)
    restricts detections to the tissue / field of view.
    """

    name: str

    def detect(self, image: np.ndarray, mask: np.ndarray | None = None) -> Detections: ...


def prepare_image(
    image: np.ndarray, mask: np.ndarray | None, polarity: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Min-max normalise a 2-D image (statistics inside ``mask``) to float32 in [0, 1] and
    invert it for ``polarity="dark"`` so that lesions are always bright."""
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    m = None
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != img.shape:
            raise ValueError(f"mask shape {m.shape} differs from image shape {img.shape}")
        if not m.any():
            m = None
    out = normalize_image(img, "minmax", m)
    if polarity == "dark":
        out = 1.0 - out
    return out.astype(np.float32, copy=False), m


def keep_in_mask(points: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Bool per (y, x) point: its pixel (``floor(p + 0.5)``) is True in ``mask`` (all True
    without a mask); see :mod:`napari_gravity.core.geometry` for the one pixel rule."""
    return inside_mask(points, mask)


def finish_candidates(
    points: np.ndarray,
    scores: np.ndarray,
    mask: np.ndarray | None,
    min_distance: float,
    max_candidates: int | None,
    offset: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The common ending of a candidate detector: keep candidates inside ``mask``, thin them to
    ``min_distance`` (best first), cut to ``max_candidates`` and shift by the crop ``offset``
    back to full-image coordinates. Returns (points, scores) in descending score order."""
    inside = keep_in_mask(points, mask)
    points, scores = points[inside], scores[inside]
    idx = suppress_close(points, scores, min_distance)
    if max_candidates is not None:
        idx = idx[:max_candidates]
    return points[idx] + np.asarray(offset, dtype=np.float64), scores[idx]


def crop_to_mask(
    img: np.ndarray, mask: np.ndarray | None, margin: int
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """Crop ``img`` (and ``mask``) to the mask's bounding box grown by ``margin`` pixels.

    Returns the crops and the (y, x) offset to add to points found in the crop.
    """
    if mask is None:
        return img, None, (0, 0)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1 = max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, img.shape[0])
    x0, x1 = max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, img.shape[1])
    return img[y0:y1, x0:x1], mask[y0:y1, x0:x1], (int(y0), int(x0))
