"""Hessian-DoG blob candidates (paper 003, Marasinou et al., "Blob segmentation").

Scale-normalised DoG, ``DoG_n = σ_n / (σ_{n+1} − σ_n) · (L(σ_n) − L(σ_{n+1}))`` (sign chosen so
that bright blobs are positive), on σ_n = σ_min·k^n from 1.18 to 3.1 (k = 1.05, as in the
authors' code). Candidates are 3×3×3 local maxima of the DoG stack above ``threshold`` (0.006
on a min-max normalised image); with ``overlap`` = 1 no blob is pruned. A candidate is kept
when the Hessian of the DoG at its scale passes
``tr(H) < 0 ∧ (det(H) < 0 ∨ det(H)/tr(H)² ≤ h_thr)`` (h_thr 1.4).

Note: for a symmetric 2×2 matrix det/tr² ≤ 1/4, so with h_thr ≥ 0.25 the test reduces to
tr(H) < 0, which a DoG maximum nearly always satisfies; it only removes flat maxima. The
paper uses the test to shape segmentation masks, which a point detector does not need.

Score: ``1 − exp(−response / score_scale)``, monotone in the DoG response, in [0, 1).
The DoG stack is streamed three layers at a time, so a full mammogram needs little memory.
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


def dog_sigmas(sigma_min: float, sigma_max: float, sigma_ratio: float) -> np.ndarray:
    """σ_min·k^n for n = 0..N with N = int(log(σ_max/σ_min)/log k + 1) (N DoG layers)."""
    if not (0 < sigma_min < sigma_max) or sigma_ratio <= 1:
        raise ValueError("need 0 < sigma_min < sigma_max and sigma_ratio > 1")
    n = int(np.log(sigma_max / sigma_min) / np.log(sigma_ratio) + 1)
    return sigma_min * sigma_ratio ** np.arange(n + 1)


def _hessian_at(layer: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Second differences of ``layer`` at integer points (edges replicated)."""
    h, w = layer.shape
    ym, yp = np.clip(y - 1, 0, h - 1), np.clip(y + 1, 0, h - 1)
    xm, xp = np.clip(x - 1, 0, w - 1), np.clip(x + 1, 0, w - 1)
    c = layer[y, x]
    hyy = layer[yp, x] - 2 * c + layer[ym, x]
    hxx = layer[y, xp] - 2 * c + layer[y, xm]
    hxy = (layer[yp, xp] - layer[yp, xm] - layer[ym, xp] + layer[ym, xm]) / 4.0
    return hyy, hxx, hxy


def _blob_overlap_prune(
    pts: np.ndarray, sig: np.ndarray, resp: np.ndarray, overlap: float
) -> np.ndarray:
    """Drop the smaller of two blobs whose overlap fraction exceeds ``overlap`` (skimage rule)."""
    keep = np.ones(len(pts), dtype=bool)
    if overlap >= 1 or len(pts) < 2:
        return keep
    from scipy.spatial import cKDTree

    r = sig * np.sqrt(2)
    tree = cKDTree(pts)
    for i, j in tree.query_pairs(2 * r.max()):
        if not (keep[i] and keep[j]):
            continue
        d = np.hypot(*(pts[i] - pts[j]))
        r1, r2 = r[i], r[j]
        if d >= r1 + r2:
            continue
        rs = min(r1, r2)
        if d <= abs(r1 - r2):
            frac = 1.0
        else:
            a1 = r1**2 * np.arccos(np.clip((d**2 + r1**2 - r2**2) / (2 * d * r1), -1, 1))
            a2 = r2**2 * np.arccos(np.clip((d**2 + r2**2 - r1**2) / (2 * d * r2), -1, 1))
            a3 = 0.5 * np.sqrt(
                max(0.0, (-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))
            )
            frac = (a1 + a2 - a3) / (np.pi * rs**2)
        if frac > overlap:
            small = i if (r1, resp[i]) < (r2, resp[j]) else j
            keep[small] = False
    return keep


@dataclass
class HessianDoG:
    """Hessian-DoG blob candidates (paper 003 parameters by default)."""

    sigma_min: float = 1.18
    sigma_max: float = 3.1
    sigma_ratio: float = 1.05
    threshold: float = 0.006
    overlap: float = 1.0
    h_thr: float = 1.4
    polarity: str = "bright"
    min_distance: float = 0.0
    score_scale: float = 0.1
    max_candidates: int | None = None
    name: str = "hessian-dog"

    def detect(self, image: np.ndarray, mask: np.ndarray | None = None) -> Detections:
        """Blob candidates of ``image`` as (y, x) points with a score in [0, 1]."""
        img, m = prepare_image(image, mask, self.polarity)
        sig = dog_sigmas(self.sigma_min, self.sigma_max, self.sigma_ratio)
        # work on the tissue's bounding box (+ the Gaussian support) only
        img, m, offset = crop_to_mask(img, m, int(np.ceil(4 * sig[-1])) + 2)
        n_layers = len(sig) - 1
        found_pts, found_resp, found_sig = [], [], []

        g_prev = ndi.gaussian_filter(img, sig[0], mode="reflect")
        layers: list[np.ndarray | None] = []
        maxes: list[np.ndarray | None] = []

        def layer(n: int, g0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            g1 = ndi.gaussian_filter(img, sig[n + 1], mode="reflect")
            d = (g0 - g1) * np.float32(sig[n] / (sig[n + 1] - sig[n]))
            return d, g1

        d0, g_prev = layer(0, g_prev)
        layers = [None, d0]
        maxes = [None, ndi.maximum_filter(d0, size=3, mode="nearest")]
        for n in range(n_layers):
            if n + 1 < n_layers:
                d_next, g_prev = layer(n + 1, g_prev)
                layers.append(d_next)
                maxes.append(ndi.maximum_filter(d_next, size=3, mode="nearest"))
            else:
                layers.append(None)
                maxes.append(None)
            cur = layers[1]
            nb = maxes[1]
            if maxes[0] is not None:
                nb = np.maximum(nb, maxes[0])
            if maxes[2] is not None:
                nb = np.maximum(nb, maxes[2])
            peak = (cur >= nb) & (cur > self.threshold)
            if m is not None:
                peak &= m
            y, x = np.nonzero(peak)
            if len(y):
                hyy, hxx, hxy = _hessian_at(cur, y, x)
                tr = hyy + hxx
                det = hyy * hxx - hxy**2
                with np.errstate(divide="ignore", invalid="ignore"):
                    ok = (tr < 0) & ((det < 0) | (det / tr**2 <= self.h_thr))
                y, x = y[ok], x[ok]
                found_pts.append(np.stack([y, x], axis=1))
                found_resp.append(cur[y, x])
                found_sig.append(np.full(len(y), sig[n]))
            layers.pop(0)
            maxes.pop(0)

        if not found_pts:
            return Detections()
        pts = np.concatenate(found_pts).astype(np.float64)
        resp = np.concatenate(found_resp).astype(np.float64)
        sgm = np.concatenate(found_sig)
        # one candidate per pixel (the strongest scale)
        order = np.lexsort((-resp, pts[:, 1], pts[:, 0]))
        pts, resp, sgm = pts[order], resp[order], sgm[order]
        first = np.r_[True, np.any(pts[1:] != pts[:-1], axis=1)]
        pts, resp, sgm = pts[first], resp[first], sgm[first]
        keep = _blob_overlap_prune(pts, sgm, resp, self.overlap)
        pts, resp = pts[keep], resp[keep]
        pts, resp = finish_candidates(pts, resp, m, self.min_distance, self.max_candidates, offset)
        return Detections(pts, 1.0 - np.exp(-resp / self.score_scale))
