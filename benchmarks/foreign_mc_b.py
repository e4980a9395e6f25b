"""A second outside microcalcification model, built after ``default_mc`` v4 and unlike both
the project's generators and ``foreign_mc.py``: a check that v4's gain on the first outside
model is not tuned to its physics.

What differs from ``foreign_mc.py`` (it shares only its film loader, nothing of its lesion model
or of ``napari_gravity.data.synthetic``'s drawing):

- **shapes**: flat 2-D fragments — star-convex polygons with 2-5 random harmonics (smooth
  nodules to jagged shards), some elongated, rasterised with ``skimage.draw.polygon`` on a
  10× finer grid and area-averaged; uniform inside (no 3-D thickness profile);
- **image formation in linear intensity**: a calcification multiplies the local *displayed*
  intensity by ``1 + c`` (no exponential attenuation, no film curve); the detector integrates
  over a square aperture (box of 1-2 px) and then a Gaussian MTF; **Poisson** photon noise at
  150-1,500 quanta per pixel on the breast's mean;
- **display**: a linear DICOM-style VOI window (centre / width from the breast's percentiles,
  randomly narrowed), 10- or 14-bit output;
- **acquisition**: 60, 75 and 90 µm by ``skimage.transform.resize`` (bilinear + anti-aliasing);
  on the held-out patient ``sfm-malign-0`` only; 384² tiles;
- **layout**: clusters with a Poisson count and a common orientation for elongated fragments,
  plus scattered single ones; contrast set so the fragment's peak over the local texture and
  noise is 2-10 (log-uniform) before the window.

    python benchmarks/foreign_mc_b.py --out benchmarks/results/foreign_mc_b.json \\
        --model default_mc_v4=napari_gravity/models/default_mc.safetensors --versus default_mc_v3 ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SPACINGS = (0.06, 0.075, 0.09)
SUB = 10  # supersampling of the fragments


def fragment(rng: np.random.Generator, size_px: float, elong: float, angle: float) -> np.ndarray:
    """Coverage (0-1) of a star-convex polygon of equivalent diameter ``size_px`` on a square
    pixel grid centred on the fragment's centroid pixel (area-averaged from a 10× grid)."""
    from skimage.draw import polygon

    k = int(rng.integers(2, 6))
    th = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = np.ones_like(th)
    for h in range(2, 2 + k):
        r += rng.uniform(0.0, 0.5 / h) * np.cos(h * th + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.3, None)
    x, y = r * np.cos(th) * elong, r * np.sin(th) / elong
    x, y = x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    s = (size_px / 2.0) * np.sqrt(np.pi / max(area, 1e-9))  # to the equivalent diameter
    half = int(np.ceil(s * (np.abs(np.r_[x, y]).max()))) + 2
    n = 2 * half + 1
    rr, cc = polygon((y * s + half + 0.5) * SUB, (x * s + half + 0.5) * SUB, (n * SUB, n * SUB))
    fine = np.zeros((n * SUB, n * SUB))
    fine[rr, cc] = 1.0
    return fine.reshape(n, SUB, n, SUB).mean(axis=(1, 3))


def make_tile(
    rng, film_set: dict, px_mm: float, cache: dict, size: int = 384, quanta=(150.0, 1500.0)
):
    from outside_common import centre_and_radius, clip_window, film_patch, outside_sample

    view, lin, mask = film_patch(rng, film_set, px_mm, cache, size)
    # linear intensity, breast mean 1 (the film's display value stands in for it)
    lo = np.percentile(lin[mask], 0.5)
    lin = np.clip(lin - lo, 0, None) + 0.05 * (np.percentile(lin[mask], 99.5) - lo)
    lin /= lin[mask].mean()
    quanta = float(np.exp(rng.uniform(np.log(quanta[0]), np.log(quanta[1]))))
    texture = float((lin - ndi.gaussian_filter(lin, 3.0))[mask].std())
    noise = float(np.sqrt(lin[mask].mean() / quanta))
    sigma = np.hypot(texture, noise)
    # layout: clusters + scattered fragments, apart from each other and inside the breast
    allowed = ndi.binary_erosion(mask, iterations=14)
    cand = np.argwhere(allowed)
    lesions = []
    if len(cand) and rng.uniform() >= 0.2:
        for _ in range(int(rng.integers(1, 3))):
            c = cand[int(rng.integers(len(cand)))]
            spread = rng.uniform(1.5, 5.0) / px_mm
            ang = rng.uniform(0, np.pi)
            for _ in range(1 + int(rng.poisson(rng.uniform(3, 12)))):
                p = c + rng.normal(0, spread / 2, 2)
                lesions.append((p, ang + rng.normal(0, 0.3)))
        for _ in range(int(rng.poisson(1.5))):
            lesions.append(
                (cand[int(rng.integers(len(cand)))].astype(float), rng.uniform(0, np.pi))
            )
    add = np.zeros_like(lin)
    pts, radii, sizes = [], [], []
    for p, ang in lesions:
        iy, ix = round(float(p[0])), round(float(p[1]))
        if not (0 <= iy < size and 0 <= ix < size) or not allowed[iy, ix]:
            continue
        d_mm = float(np.clip(np.exp(rng.normal(np.log(0.32), 0.45)), 0.15, 0.9))
        if any(np.hypot(iy - q[0], ix - q[1]) < (d_mm / px_mm) * 1.5 + 3 for q in pts):
            continue
        elong = float(np.exp(abs(rng.normal(0, 0.45))))
        cov = fragment(rng, d_mm / px_mm, elong, ang)
        ys, xs, sub = clip_window(cov, iy, ix, size)
        if sub.sum() <= 0:
            continue
        snr = float(np.exp(rng.uniform(np.log(2.0), np.log(10.0))))
        c = snr * sigma / max(float(lin[iy, ix]), 1e-6)  # relative contrast: peak = snr·sigma
        add[ys, xs] = np.maximum(add[ys, xs], c * sub)
        centre, radius = centre_and_radius(sub, ys, xs)
        pts.append(centre)
        radii.append(radius)
        sizes.append(d_mm)
    lin = lin * (1.0 + add)
    # detector: square aperture, then a Gaussian MTF; Poisson quanta
    ap = int(rng.integers(1, 3))
    if ap > 1:
        lin = ndi.uniform_filter(lin, ap, mode="reflect")
    lin = ndi.gaussian_filter(lin, rng.uniform(0.3, 0.7))
    lin = rng.poisson(np.clip(lin, 0, None) * quanta) / quanta
    # VOI window and bit depth
    a, b = np.percentile(lin[mask], [rng.uniform(0.5, 5), rng.uniform(95, 99.9)])
    top = 2.0 ** int(rng.choice([10, 14])) - 1
    img = np.round(np.clip((lin - a) / max(b - a, 1e-9), 0, 1) * top).astype(np.float32)
    return outside_sample("foreignB", rng, img, pts, radii, mask, view, px_mm), sizes


def build(n_per_spacing: int, seed: int, case: str = "sfm-malign-0", quanta=(150.0, 1500.0)):
    from outside_common import build_tiles

    def make(rng, film_set, px, cache):
        s, sizes = make_tile(rng, film_set, px, cache, quanta=quanta)
        return s, {"sizes_mm": sizes}

    return build_tiles(make, n_per_spacing, seed, case, SPACINGS)


def main() -> int:
    from outside_common import run_outside

    def add_args(ap) -> None:
        ap.add_argument("--case", default="sfm-malign-0")
        ap.add_argument("--quanta", type=float, nargs=2, default=(150.0, 1500.0), help="per pixel")

    return run_outside(
        __doc__,
        "foreign_mc_b",
        build,
        SPACINGS,
        per_spacing=27,
        seed=4711,
        add_args=add_args,
        build_kwargs=lambda a: {"case": a.case, "quanta": tuple(a.quanta)},
        extra_summary=lambda a: {"case": a.case, "quanta_per_pixel": list(a.quanta)},
    )


if __name__ == "__main__":
    raise SystemExit(main())
