"""Lesion appearance families for domain-randomised training and leave-one-family-out tests.

Each renderer draws ONE lesion as a small patch whose extreme value is 1 (bright for
calcifications, the darkening fraction for microaneurysms), centred on the patch's middle pixel
plus a sub-pixel offset, and is designed independently of the others so that a model trained on
some families and tested on another shows whether it learned "a small lesion" or one drawing:

Microcalcifications (bright, radius ``r`` px = largest half-extent):
- ``ellipsoid``: irregular projected ellipsoid (the v1 generator, :func:`.mammogram.render_calcification`);
- ``blob``: anisotropic Gaussian (σ = r/2 along the long axis), no edge at all;
- ``disk``: flat-topped ellipse with a blurred (sigmoid) rim, uniform density;
- ``cast``: linear / branching casting: 1-3 thin rods (width ~ r/3) from a common point;
- ``ring``: lucent-centred ring (egg-shell): a bright rim around a darker centre.

Microaneurysms (dark, radius ``r`` px):
- ``dot``: isotropic Gaussian dot (the v1 generator);
- ``halo``: flat dark disk with a sharp blurred rim surrounded by a faint bright halo
  (rendered as a darkening that goes slightly negative around the lesion);
- ``oval``: elongated dark oval (aspect 1.3-2.2) with a steep edge, randomly oriented.

The MC patches are rendered 4× supersampled and blurred by the PSF; the MA patches are
analytic profiles averaged over the pixel area.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

MC_FAMILIES = ("ellipsoid", "blob", "disk", "cast", "ring")
MA_FAMILIES = ("dot", "halo", "oval")


def _grid(r: float, off: np.ndarray, s: int, extra: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Supersampled coordinates (dy, dx) of a square patch large enough for radius ``r``."""
    half = int(np.ceil(r + extra + 2))
    n = 2 * half + 1
    g = (np.arange(n * s) + 0.5) / s - 0.5 - half
    yy, xx = np.meshgrid(g - off[0], g - off[1], indexing="ij")
    return yy, xx, n


def _finish(fine: np.ndarray, n: int, s: int, psf_sigma: float) -> np.ndarray:
    pix = fine.reshape(n, s, n, s).mean(axis=(1, 3))
    if psf_sigma > 0:
        pix = ndi.gaussian_filter(pix, psf_sigma, mode="constant")
    peak = np.abs(pix).max()
    return pix / peak if peak > 0 else pix


def _rotate(yy: np.ndarray, xx: np.ndarray, phi: float) -> tuple[np.ndarray, np.ndarray]:
    u = xx * np.cos(phi) + yy * np.sin(phi)
    v = -xx * np.sin(phi) + yy * np.cos(phi)
    return u, v


def render_mc(
    family: str,
    r: float,
    rng: np.random.Generator,
    *,
    psf_sigma: float = 0.6,
    offset: tuple[float, float] | None = None,
    supersample: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """One calcification of ``family`` with largest half-extent ``r`` px: ``(patch, offset)``.

    ``patch`` peaks at 1; its centre is the middle pixel plus ``offset`` (dy, dx) ∈ [-0.5, 0.5]²
    (random when None). The point a reader would mark (the centre of the lesion's bounding
    box) is that centre, except for ``cast``, whose centre is the rods' common point.
    """
    off = rng.uniform(-0.5, 0.5, size=2) if offset is None else np.asarray(offset, float)
    if family == "ellipsoid":
        from .mammogram import render_calcification

        return render_calcification(r, rng, psf_sigma=psf_sigma, offset=tuple(off))
    s = supersample
    r = max(float(r), 0.5)
    yy, xx, n = _grid(r, off, s, 3 * psf_sigma + 1)
    phi = rng.uniform(0, np.pi)
    u, v = _rotate(yy, xx, phi)
    if family == "blob":
        b = r * rng.uniform(0.5, 1.0)
        fine = np.exp(-0.5 * ((u / (0.5 * r)) ** 2 + (v / (0.5 * b)) ** 2))
    elif family == "disk":
        b = r * rng.uniform(0.6, 1.0)
        rho = np.sqrt((u / r) ** 2 + (v / b) ** 2)
        edge = rng.uniform(0.05, 0.2)  # rim width as a fraction of the radius
        fine = 1.0 / (1.0 + np.exp((rho - 1.0) / edge))
    elif family == "cast":
        fine = np.zeros_like(u)
        width = max(0.35, r * rng.uniform(0.2, 0.4))
        n_rods = int(rng.integers(1, 4))
        # rods share the centre; the first spans the whole extent (-r..r), branches go outwards
        angles = [phi, *(phi + rng.uniform(0.5, 2.6) * rng.choice([-1, 1]) for _ in range(3))]
        for k in range(n_rods):
            a = angles[k]
            ua, va = _rotate(yy, xx, a)
            t0, t1 = (-r, r) if k == 0 else (0.0, r * rng.uniform(0.6, 1.0))
            along = np.clip(ua, t0, t1)
            d = np.hypot(ua - along, va)
            beads = 1.0 + 0.35 * np.sin(ua * rng.uniform(1.0, 2.5) + rng.uniform(0, 6.3))
            fine = np.maximum(fine, beads * np.exp(-0.5 * (d / (0.5 * width)) ** 2))
    elif family == "ring":
        b = r * rng.uniform(0.75, 1.0)
        rho = np.sqrt((u / r) ** 2 + (v / b) ** 2)
        thick = rng.uniform(0.25, 0.45)  # wall thickness as a fraction of the radius
        centre = rng.uniform(0.15, 0.45)  # density left in the lucent centre
        wall = np.exp(-0.5 * ((rho - (1 - thick / 2)) / (thick / 2)) ** 2)
        fine = np.maximum(wall, centre * (rho < 1 - thick / 2))
    else:
        raise ValueError(f"unknown calcification family {family!r} (use {', '.join(MC_FAMILIES)})")
    return _finish(fine, n, s, psf_sigma), off


def render_ma(
    family: str,
    r: float,
    rng: np.random.Generator,
    *,
    offset: tuple[float, float] | None = None,
    supersample: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """One microaneurysm of ``family`` and radius ``r`` px as a darkening patch (max 1)."""
    off = rng.uniform(-0.5, 0.5, size=2) if offset is None else np.asarray(offset, float)
    s = supersample
    r = max(float(r), 0.4)
    yy, xx, n = _grid(2.2 * r, off, s, 1.0)
    if family == "dot":
        sg = r / 1.5  # the v1 profile: 1/3 of the depth at r
        fine = np.exp(-(yy**2 + xx**2) / (2 * sg * sg))
    elif family == "halo":
        rho = np.hypot(yy, xx) / r
        core = 1.0 / (1.0 + np.exp((rho - 0.85) / 0.12))
        halo = rng.uniform(0.1, 0.3) * np.exp(-0.5 * ((rho - 1.6) / 0.45) ** 2)
        fine = core - halo
    elif family == "oval":
        u, v = _rotate(yy, xx, rng.uniform(0, np.pi))
        aspect = rng.uniform(1.3, 2.2)
        rho = np.sqrt((u / r) ** 2 + (v * aspect / r) ** 2)
        fine = 1.0 / (1.0 + np.exp((rho - 0.9) / 0.08))
    else:
        raise ValueError(f"unknown microaneurysm family {family!r} (use {', '.join(MA_FAMILIES)})")
    pix = fine.reshape(n, s, n, s).mean(axis=(1, 3))
    peak = pix.max()
    return (pix / peak if peak > 0 else pix), off
