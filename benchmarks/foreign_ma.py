"""An outside microaneurysm model, written in stop 21 after ``default_ma`` was fixed: the first
blind check of the MA model on lesions no generator of this project drew (nothing was tuned on it).

What differs from ``fundus.py`` / ``diverse_fundus`` (it shares no code with them; the real
background is ``skimage.data.retina()``, read here directly):

- **region**: windows centred in the bottom third of the retina's field of view, the third the
  training data never uses; 384² at scales 0.8, 1.0 and 1.25 of the photograph
  (``skimage.transform.resize``, anti-aliased);
- **shapes**: spherical saccular aneurysms — the chord length through a sphere (``√(1 - r²/R²)``),
  on a 4× finer grid — diameter log-normal (median 45 µm, 15-125 µm), at 13 mm across the field;
- **colour**: absorption per channel with a haemoglobin-like spectrum (green 1, blue 0.6, red
  0.15): transmission ``exp(-a·k·chord)``, ``a`` set so the green centre darkens 5-35 % before blur
  (log-uniform);
- **layout**: 60 % within 2-10 px of a vessel (a Sato ridge filter on the green channel), the
  rest anywhere in the eroded field off the vessels; 20 % lesion-free windows, else 1 + Poisson(4);
- **distractors**: in 30 % of the windows 1-2 unlabelled blot haemorrhages (150-350 µm, a
  union of 3-5 discs, darkening 20-50 %), which an MA detector should not mark;
- **camera**: vignetting, Gaussian blur σ 0.5-1.4 px, channel gains 0.85-1.15, gamma 0.8-1.25,
  noise, 8 bits, JPEG quality 50-90; the model and the classical detectors see the green channel,
  as ``read_image`` gives it for a colour photograph.

    python benchmarks/foreign_ma.py --out benchmarks/results/foreign_ma.json \\
        --model default_ma=napari_gravity/models/default_ma.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SCALES = (0.8, 1.0, 1.25)
FIELD_MM = 13.0  # assumed width of the photograph's field of view
FINE = 4


def retina_parts() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(RGB 0-1, field mask, vessel mask, µm per pixel) of ``skimage.data.retina()``."""
    from skimage import data
    from skimage.filters import sato

    rgb = data.retina().astype(np.float64) / 255.0
    fov = ndi.binary_fill_holes(rgb[..., 0] > 0.1)
    fov = ndi.binary_erosion(fov, iterations=6)
    green = rgb[..., 1]
    ridge = sato(green, sigmas=(2, 4, 6), black_ridges=True)
    vessels = fov & (ridge > np.percentile(ridge[fov], 88))
    cols = np.flatnonzero(fov.any(axis=0))
    um_per_px = FIELD_MM * 1000.0 / (cols[-1] - cols[0] + 1)
    return rgb, fov, vessels, um_per_px


def sphere_chord(diameter_px: float) -> np.ndarray:
    """Chord length (peak 1) through a sphere of ``diameter_px``, area-averaged to pixels."""
    r = max(diameter_px / 2.0, 0.5)
    half = int(np.ceil(r)) + 1
    n = (2 * half + 1) * FINE
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[0:n, 0:n]
    rho2 = ((yy - c) ** 2 + (xx - c) ** 2) / (r * FINE) ** 2
    fine = np.sqrt(np.clip(1.0 - rho2, 0.0, None))
    t = fine.reshape(2 * half + 1, FINE, 2 * half + 1, FINE).mean(axis=(1, 3))
    return t / max(float(t.max()), 1e-9)


def blot(rng: np.random.Generator, diameter_px: float) -> np.ndarray:
    """An irregular blot haemorrhage: the union of 3-5 overlapping discs (values 0/1)."""
    r = diameter_px / 2.0
    half = int(np.ceil(1.6 * r)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    out = np.zeros(yy.shape)
    for _ in range(int(rng.integers(3, 6))):
        oy, ox = rng.normal(0, 0.35 * r, 2)
        out = np.maximum(out, (np.hypot(yy - oy, xx - ox) <= r * rng.uniform(0.5, 0.9)) * 1.0)
    return ndi.gaussian_filter(out, 0.7)


THIRDS = {"top": 0, "middle": 1, "bottom": 2}


def window(rng, fov: np.ndarray, side: int, region: str = "bottom") -> tuple[int, int]:
    """Top-left of a ``side``² window centred in one third of the field (``region``; the
    bottom one is held out from all training), ≥ 85 % inside it."""
    rows = np.flatnonzero(fov.any(axis=1))
    k = THIRDS[region]
    lo = rows[0] + k * (rows[-1] - rows[0]) // 3
    hi = rows[0] + (k + 1) * (rows[-1] - rows[0]) // 3
    best, best_frac = (lo, 0), -1.0
    for _ in range(200):
        cy = int(rng.integers(lo, hi + 1))
        row_cols = np.flatnonzero(fov[cy])
        cx = int(row_cols[int(rng.integers(len(row_cols)))])
        top = int(np.clip(cy - side // 2, 0, fov.shape[0] - side))
        left = int(np.clip(cx - side // 2, 0, fov.shape[1] - side))
        frac = float(fov[top : top + side, left : left + side].mean())
        if frac >= 0.85:
            return top, left
        if frac > best_frac:
            best, best_frac = (top, left), frac
    return best


def make_tile(rng, parts, scale: float, size: int = 384, region: str = "bottom"):
    from outside_common import centre_and_radius, clip_window, outside_sample, pil_jpeg
    from skimage.transform import resize

    rgb_full, fov_full, ves_full, um_native = parts
    side = round(size / scale)
    top, left = window(rng, fov_full, side, region)
    crop = rgb_full[top : top + side, left : left + side]
    rgb = resize(crop, (size, size, 3), order=1, anti_aliasing=True)
    fov = resize(fov_full[top : top + side, left : left + side], (size, size), order=0) > 0.5
    ves = resize(ves_full[top : top + side, left : left + side], (size, size), order=0) > 0.5
    um = um_native / scale
    allowed = ndi.binary_erosion(fov, iterations=10) & ~ves
    dist = ndi.distance_transform_edt(~ves) if ves.any() else np.full(fov.shape, 1e9)
    near = np.argwhere(allowed & (dist >= 2) & (dist <= 10))
    anywhere = np.argwhere(allowed)
    absorb = np.zeros((size, size))  # green-equivalent optical depth
    pts: list = []
    radii: list = []
    n = 0 if rng.uniform() < 0.2 else 1 + int(rng.poisson(4))
    for _ in range(n):
        pool = near if (len(near) and rng.uniform() < 0.6) else anywhere
        if not len(pool):
            break
        iy, ix = (int(v) for v in pool[int(rng.integers(len(pool)))])
        d_um = float(np.clip(np.exp(rng.normal(np.log(45.0), 0.45)), 15.0, 125.0))
        if any(np.hypot(iy - q[0], ix - q[1]) < d_um / um + 4 for q in pts):
            continue
        t = sphere_chord(d_um / um)
        ys, xs, sub = clip_window(t, iy, ix, size)
        darken = float(np.exp(rng.uniform(np.log(0.05), np.log(0.35))))
        absorb[ys, xs] = np.maximum(absorb[ys, xs], -np.log(1.0 - darken) * sub)
        centre, radius = centre_and_radius(sub, ys, xs, 0.05)
        pts.append(centre)
        radii.append(radius)
    n_blots = int(rng.integers(1, 3)) if rng.uniform() < 0.3 else 0
    for _ in range(n_blots):
        if not len(anywhere):
            break
        iy, ix = (int(v) for v in anywhere[int(rng.integers(len(anywhere)))])
        b = blot(rng, rng.uniform(150.0, 350.0) / um)
        ys, xs, sub = clip_window(b, iy, ix, size)
        darken = rng.uniform(0.2, 0.5)
        absorb[ys, xs] = np.maximum(absorb[ys, xs], -np.log(1.0 - darken) * sub)
    spectrum = np.array([0.15, 1.0, 0.6])
    img = rgb * np.exp(-absorb[..., None] * spectrum)
    # camera: vignetting, blur, gains, gamma, noise, 8 bits, JPEG
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    img = img * (1.0 - rng.uniform(0.0, 0.3) * (yy**2 + xx**2) / 0.5)[..., None]
    sigma = rng.uniform(0.5, 1.4)
    img = np.stack([ndi.gaussian_filter(img[..., c], sigma) for c in range(3)], -1)
    img = np.clip(img * rng.uniform(0.85, 1.15, 3), 0, 1) ** rng.uniform(0.8, 1.25)
    img = img + rng.normal(0, rng.uniform(0.5, 2.5) / 255.0, img.shape)
    u8 = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    q = int(rng.integers(50, 91))
    green = pil_jpeg(u8, q)[..., 1].astype(np.float32)
    s = outside_sample("foreignMA", rng, green, pts, radii, fov, f"{region}{top}-{left}", um / 1000)
    return s, {"scale": scale, "blots": n_blots, "jpeg": q}


def build(n_per_scale: int, seed: int, region: str = "bottom"):
    rng = np.random.default_rng(seed)
    parts = retina_parts()
    samples, info = {}, {}
    for scale in SCALES:
        for _ in range(n_per_scale):
            s, extra = make_tile(rng, parts, scale, region=region)
            samples[s.image_id] = s
            info[s.image_id] = extra
    return samples, info


def extra_subsets(ids: list[str], info: dict) -> dict:
    return {
        **{f"scale {sc}": [i for i in ids if info[i]["scale"] == sc] for sc in SCALES},
        "with blot haemorrhages": [i for i in ids if info[i]["blots"]],
        "without": [i for i in ids if not info[i]["blots"]],
    }


def main() -> int:
    from outside_common import run_outside

    return run_outside(
        __doc__,
        "foreign_ma",
        build,
        (),
        per_spacing=30,
        seed=777,
        extra_subsets=extra_subsets,
        polarity="dark",
    )


if __name__ == "__main__":
    raise SystemExit(main())
