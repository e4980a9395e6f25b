"""A fourth outside microcalcification model, written in stop 21 after ``default_mc`` v6 was
shipped, and unlike the project's generators and the three earlier outside models: a blind check
(nothing was tuned on it).

What differs (it shares only ``foreign_mc.held_out_films`` and ``outside_common``'s film crop):

- **storage**: the tiles are 8-bit exports, as mammograms often travel outside PACS: windowed to
  the breast's 0.5-99.5 percentiles with a display gamma of 0.7-1.4, quantised to 8 bits, then
  JPEG-compressed at quality 55-90 (Pillow, greyscale) for two tiles in three, or kept
  as lossless 8-bit (PNG-like) for the third;
- **shapes**: flat polygonal crystals — 3-8 random vertices on a 4× finer grid, a uniform
  thickness with a random linear tilt — alone, or 2-4 of them fused into one coarse,
  heterogeneous calcification (one label at the fused centroid);
- **layout**: segmental / ductal — 1-2 random-walk "ducts" of 5-25 calcifications 1-3 mm apart,
  plus 0-3 scattered ones; 20 % lesion-free tiles;
- **contrast**: the calcification's peak response to a Laplacian of Gaussian (σ 1 px) is 2-10
  times the robust (MAD) spread of that response over the breast, log-uniform;
- **backgrounds**: for two tiles in three the held-out patient's films (``sfm-malign-0``); for the
  third a clustered lumpy background (elongated Gaussian lumps in clusters, a standard
  observer-study texture), which no training set of this project contains;
- **acquisition**: 65, 80 and 95 µm (``skimage.transform.resize``); a Gaussian PSF (σ 0.4-1.2
  px) and additive Gaussian noise of 0-50 % of the texture's fine-scale spread, before export.

    python benchmarks/foreign_mc_d.py --out benchmarks/results/foreign_mc_d.json \\
        --model default_mc=napari_gravity/models/default_mc.safetensors \\
        --model default_mc_d8=napari_gravity/models/default_mc.safetensors,tta=d8 --versus default_mc
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SPACINGS = (0.065, 0.08, 0.095)
FINE = 4  # supersampling of the crystal polygons


def polygon_crystal(rng: np.random.Generator, diameter_px: float) -> np.ndarray:
    """Thickness (peak 1) of one flat polygonal crystal on the pixel grid, odd square window."""
    from skimage.draw import polygon

    r = max(diameter_px / 2.0, 0.6)
    half = int(np.ceil(r)) + 2
    n = (2 * half + 1) * FINE
    c = (n - 1) / 2.0
    k = int(rng.integers(3, 9))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = r * FINE * rng.uniform(0.4, 1.0, k)
    stretch = rng.uniform(1.0, 2.5)  # elongated rods as well as chunky grains
    th = rng.uniform(0, np.pi)
    px = rad * np.cos(ang) * stretch / np.sqrt(stretch)
    py = rad * np.sin(ang) / np.sqrt(stretch)
    ry = c + py * np.cos(th) + px * np.sin(th)
    rx = c - py * np.sin(th) + px * np.cos(th)
    fine = np.zeros((n, n))
    rr, cc = polygon(ry, rx, shape=fine.shape)
    if len(rr) == 0:
        rr, cc = np.array([int(c)]), np.array([int(c)])
    yy, xx = np.mgrid[0:n, 0:n]
    tilt = 1.0 + rng.uniform(-0.4, 0.4) * ((yy - c) * np.cos(th) + (xx - c) * np.sin(th)) / (
        r * FINE
    )
    fine[rr, cc] = np.clip(tilt[rr, cc], 0.3, None)
    t = fine.reshape(2 * half + 1, FINE, 2 * half + 1, FINE).mean(axis=(1, 3))
    return t / max(float(t.max()), 1e-9)


def coarse_calcification(rng: np.random.Generator, diameter_px: float) -> np.ndarray:
    """A crystal, or (30 %) 2-4 smaller ones fused into one heterogeneous calcification."""
    if rng.uniform() >= 0.3:
        return polygon_crystal(rng, diameter_px)
    size = int(2 * (np.ceil(diameter_px / 2.0) + 2) + 1)
    out = np.zeros((size, size))
    for _ in range(int(rng.integers(2, 5))):
        part = polygon_crystal(rng, diameter_px * rng.uniform(0.35, 0.6))
        h, H = part.shape[0] // 2, size // 2
        oy, ox = (rng.uniform(-0.3, 0.3, 2) * diameter_px).round().astype(int)
        ys = slice(H + oy - h, H + oy + h + 1)
        xs = slice(H + ox - h, H + ox + h + 1)
        if ys.start < 0 or xs.start < 0 or ys.stop > size or xs.stop > size:
            continue
        out[ys, xs] = np.maximum(out[ys, xs], part * rng.uniform(0.6, 1.0))
    if not out.any():
        return polygon_crystal(rng, diameter_px)
    return out / out.max()


def lumpy_background(rng: np.random.Generator, px_mm: float, size: int) -> np.ndarray:
    """Clustered lumpy background: clusters of elongated Gaussian lumps, one orientation per
    cluster, plus a smooth density trend."""
    pad = 24
    big = np.zeros((size + 2 * pad, size + 2 * pad))
    n_clusters = rng.poisson(0.9 * (size / 384) ** 2 * 150)
    lx, ly = 2.0 / (px_mm / 0.08), 0.7 / (px_mm / 0.08)  # lump half-lengths in px (scale with mm)
    spread = 12.0 * 0.08 / px_mm
    yy, xx = np.mgrid[-pad : pad + 1, -pad : pad + 1]
    kernels = []
    for th in np.linspace(0, np.pi, 12, endpoint=False):
        u = yy * np.cos(th) + xx * np.sin(th)
        v = -yy * np.sin(th) + xx * np.cos(th)
        kernels.append(np.exp(-0.5 * (u / (3 * lx)) ** 2 - 0.5 * (v / (3 * ly)) ** 2))
    impulses = [np.zeros_like(big) for _ in kernels]
    for _ in range(n_clusters):
        cy, cx = rng.uniform(0, big.shape[0], 2)
        k = int(rng.integers(len(kernels)))
        for _ in range(rng.poisson(20)):
            y = int(cy + rng.normal(0, spread))
            x = int(cx + rng.normal(0, spread))
            if 0 <= y < big.shape[0] and 0 <= x < big.shape[1]:
                impulses[k][y, x] += 1.0
    for imp, ker in zip(impulses, kernels, strict=True):
        if imp.any():
            big += ndi.convolve(imp, ker, mode="constant")
    img = big[pad:-pad, pad:-pad]
    img = (img - img.mean()) / (img.std() + 1e-12)
    yy, xx = np.mgrid[0:size, 0:size] / size
    a, b = rng.normal(0, 1.5, 2)
    return img + a * yy + b * xx


def ductal_centres(rng: np.random.Generator, allowed: np.ndarray, px_mm: float) -> list:
    cand = np.argwhere(allowed)
    centres: list[np.ndarray] = []
    if not len(cand) or rng.uniform() < 0.2:
        return centres
    for _ in range(int(rng.integers(1, 3))):
        p = cand[int(rng.integers(len(cand)))].astype(float)
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(5, 26))):
            centres.append(p.copy())
            heading += rng.normal(0, 0.5)
            step = rng.uniform(1.0, 3.0) / px_mm
            p = p + step * np.array([np.sin(heading), np.cos(heading)])
    for _ in range(int(rng.integers(0, 4))):
        centres.append(cand[int(rng.integers(len(cand)))].astype(float))
    return centres


def export_8bit(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> tuple:
    """(decoded 8-bit image as float32, storage name): window, gamma, 8 bits, JPEG or lossless."""
    from outside_common import pil_jpeg

    lo, hi = np.percentile(img[mask], [0.5, 99.5])
    u = np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1) ** rng.uniform(0.7, 1.4)
    u8 = np.round(255 * u).astype(np.uint8)
    if rng.uniform() < 2 / 3:
        q = int(rng.integers(55, 91))
        u8 = pil_jpeg(u8, q)
        return u8.astype(np.float32), f"jpeg{q}"
    return u8.astype(np.float32), "png"


def make_tile(rng, film_set: dict, px_mm: float, cache: dict, size: int = 384):
    from outside_common import centre_and_radius, clip_window, film_patch, outside_sample

    if rng.uniform() < 2 / 3:
        view, v, mask = film_patch(rng, film_set, px_mm, cache, size)
        lo, hi = np.percentile(v[mask], [1, 99])
        v = (v - lo) / max(hi - lo, 1e-9)
        background = "film"
    else:
        view, v, mask = "lumpy", lumpy_background(rng, px_mm, size), np.ones((size, size), bool)
        v = (v - v.min()) / max(np.ptp(v), 1e-9)
        background = "lumpy"
    log = ndi.gaussian_laplace(v, 1.0)
    spread = 1.4826 * float(np.median(np.abs(log[mask] - np.median(log[mask]))))
    allowed = ndi.binary_erosion(mask, iterations=12)
    atten = np.zeros_like(v)
    pts, radii = [], []
    for p in ductal_centres(rng, allowed, px_mm):
        iy, ix = round(float(p[0])), round(float(p[1]))
        if not (0 <= iy < size and 0 <= ix < size) or not allowed[iy, ix]:
            continue
        d_mm = float(np.clip(np.exp(rng.normal(np.log(0.3), 0.55)), 0.1, 1.0))
        if any(np.hypot(iy - q[0], ix - q[1]) < 0.75 * d_mm / px_mm + 3 for q in pts):
            continue
        t = coarse_calcification(rng, d_mm / px_mm)
        ys, xs, sub = clip_window(t, iy, ix, size)
        if sub.sum() <= 0:
            continue
        peak = float(-ndi.gaussian_laplace(np.pad(t, 6), 1.0).min())
        k = float(np.exp(rng.uniform(np.log(2.0), np.log(10.0))))
        atten[ys, xs] = np.maximum(atten[ys, xs], k * spread / max(peak, 1e-6) * sub)
        centre, radius = centre_and_radius(sub, ys, xs, 0.05)
        pts.append(centre)
        radii.append(radius)
    img = ndi.gaussian_filter(v + atten, rng.uniform(0.4, 1.2))
    fine = float((v - ndi.gaussian_filter(v, 2.0))[mask].std())
    img = img + rng.uniform(0.0, 0.5) * fine * rng.normal(size=img.shape)
    img8, storage = export_8bit(rng, img, mask)
    return outside_sample("foreignD", rng, img8, pts, radii, mask, view, px_mm), {
        "background": background,
        "storage": storage,
    }


def build(n_per_spacing: int, seed: int, case: str = "sfm-malign-0"):
    from outside_common import build_tiles

    return build_tiles(make_tile, n_per_spacing, seed, case, SPACINGS)


def extra_subsets(ids: list[str], info: dict) -> dict:
    return {
        "film background": [i for i in ids if info[i]["background"] == "film"],
        "lumpy background": [i for i in ids if info[i]["background"] == "lumpy"],
        "JPEG": [i for i in ids if info[i]["storage"].startswith("jpeg")],
        "lossless 8-bit": [i for i in ids if info[i]["storage"] == "png"],
    }


def main() -> int:
    from outside_common import run_outside

    return run_outside(
        __doc__,
        "foreign_mc_d",
        build,
        SPACINGS,
        per_spacing=30,
        seed=4242,
        add_args=lambda ap: ap.add_argument("--case", default="sfm-malign-0"),
        build_kwargs=lambda a: {"case": a.case},
        extra_subsets=extra_subsets,
        extra_summary=lambda a: {"case": a.case},
    )


if __name__ == "__main__":
    raise SystemExit(main())
