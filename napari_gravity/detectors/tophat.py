"""Grayscale-morphology top-hat candidates (paper 002, Cortina Uribe et al., "GM" detector).

1. min-max normalise (inverted for dark lesions);
2. top-hat by reconstruction: ``t = image − R(image ∘ disk)``, where ``image ∘ disk`` is the
   grayscale opening with a disk of diameter 14 px and R the reconstruction by dilation
   (3×3 geodesic steps) under the image;
3. two global quantile thresholds: keep ``t`` above its 0.95 quantile over the non-zero (tissue)
   pixels, then above the 0.80 quantile of what remains;
4. 4-connected components; keep those with area ≤ ``max_area`` (14 px; the authors' code uses
   the contour area, we use the pixel count, a little stricter) and radius ≤ ``max_radius``
   (10 px, max distance of a pixel centre from the centroid + 0.5);
5. keep candidates at least ``min_distance`` (6 px) apart, the higher score winning.

Point = top-hat-weighted centroid of the component; score = its maximum top-hat value, which
is in [0, 1] on the normalised image and ranks the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_gravity.detectors.base import (
    crop_to_mask,
    finish_candidates,
    prepare_image,
)
from napari_gravity.types import Detections


def disk_footprint(diameter: int) -> np.ndarray:
    """Bool disk inscribed in a ``diameter``×``diameter`` square (like an OpenCV ellipse SE)."""
    d = int(diameter)
    if d < 1:
        raise ValueError(f"disk diameter must be >= 1, got {diameter}")
    c = (d - 1) / 2.0
    yy, xx = np.mgrid[0:d, 0:d]
    r = d / 2.0
    return (yy - c) ** 2 + (xx - c) ** 2 <= r**2


def tophat_by_reconstruction(img: np.ndarray, diameter: int = 14) -> np.ndarray:
    """``img − reconstruction_by_dilation(opening(img, disk), img)`` (float32, ≥ 0)."""
    from skimage.morphology import reconstruction

    se = disk_footprint(diameter)
    opened = ndi.grey_opening(img, footprint=se, mode="reflect")
    opened = np.minimum(opened, img)  # guard against rounding: the seed must be <= the mask
    rec = reconstruction(opened, img, method="dilation", footprint=np.ones((3, 3), bool))
    return np.maximum(img - rec.astype(np.float32), 0.0).astype(np.float32)


@dataclass
class TopHat:
    """Grayscale-morphology candidates (paper 002 parameters by default)."""

    disk_diameter: int = 14
    quantile1: float = 0.95
    quantile2: float = 0.80
    max_area: int = 14
    max_radius: float = 10.0
    min_distance: float = 6.0
    polarity: str = "bright"
    max_candidates: int | None = None
    name: str = "top-hat"

    def detect(self, image: np.ndarray, mask: np.ndarray | None = None) -> Detections:
        """Top-hat candidates of ``image`` as (y, x) points with a score in [0, 1]."""
        img, m = prepare_image(image, mask, self.polarity)
        img, m, offset = crop_to_mask(img, m, self.disk_diameter + 2)
        th = tophat_by_reconstruction(img, self.disk_diameter)
        if m is not None:
            th[~m] = 0.0
        vals = th[th > 0]
        if len(vals) == 0:
            return Detections()
        q1 = np.quantile(vals, self.quantile1)
        keep = th > q1
        if not keep.any():
            return Detections()
        q2 = np.quantile(th[keep], self.quantile2)
        keep &= th > q2
        if not keep.any():
            return Detections()
        lab, n = ndi.label(keep)  # 4-connectivity
        ys, xs = np.nonzero(lab)
        ls = lab[ys, xs] - 1
        w = th[ys, xs].astype(np.float64)
        area = np.bincount(ls, minlength=n)
        wsum = np.bincount(ls, weights=w, minlength=n)
        cy = np.bincount(ls, weights=w * ys, minlength=n) / wsum
        cx = np.bincount(ls, weights=w * xs, minlength=n) / wsum
        my = np.bincount(ls, weights=ys, minlength=n) / area
        mx = np.bincount(ls, weights=xs, minlength=n) / area
        dist = np.hypot(ys - my[ls], xs - mx[ls])
        radius = np.zeros(n)
        np.maximum.at(radius, ls, dist)
        radius += 0.5
        score = np.zeros(n)
        np.maximum.at(score, ls, w)
        ok = (area <= self.max_area) & (radius <= self.max_radius)
        pts = np.stack([cy, cx], axis=1)[ok]
        score = score[ok]
        pts, score = finish_candidates(
            pts, score, m, self.min_distance, self.max_candidates, offset
        )
        return Detections(pts, np.clip(score, 0.0, 1.0))
