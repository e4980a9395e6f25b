"""Microcalcifications drawn by a lesion model the training data never used: an outside check.

Every MC model here was trained on ``mc-diverse`` / ``mc-bench``, whose calcifications are
additive intensity bumps (Gaussian-blurred, PSF σ in pixels) with contrast set in the displayed
image. This script draws calcifications the way an X-ray would make them, independently of
``napari_gravity.data.synthetic`` (it takes only the film paths from it, none of its drawing):

- **shapes in millimetres, as 3-D objects**: punctate spheres, pleomorphic clumps (unions of 2-5
  spheres) and fine linear / branching casts (tubes along a random polyline), their projected
  thickness rendered 8× supersampled and area-averaged to the pixel grid;
- **physics, not additive bumps**: the film tile is taken as optical density; the calcification
  attenuates the exposure (``E·exp(-μ·t)``), the detector blurs with an exponential
  (Lorentzian-like) kernel, quantum noise scales with √E and is grain-correlated, and a
  sigmoid characteristic curve maps back to the display — so the same calcification is faint in
  dense (bright) tissue and in fatty (dark) tissue, not uniformly visible;
- **acquisition**: pixel spacings 50, 70, 85 and 100 µm (resampled with a cubic spline and
  anti-aliasing, not the training data's linear zoom), 12-bit integer output, random flips;
- **backgrounds**: the held-out patient only (``sfm-malign-0``, never a training background);
- **layout**: clusters whose members share a morphology (linear casts lie along a duct-like
  curve), a few isolated calcifications, 20 % lesion-free tiles.

Tested on 384² tiles like the issue's independent set: AUFROC_10 with 1,000 case-bootstrap CIs
for the shipped model (and earlier versions from git, ``--model NAME=PATH``), top-hat and
Hessian-DoG, paired Δ against the best classical detector, and FPpI / sensitivity at each
model's stored threshold; per spacing and per morphology as well.

    python benchmarks/foreign_mc.py --out benchmarks/results/foreign_mc.json \\
        --model default_mc_v3=napari_gravity/models/default_mc.safetensors
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from outside_common import FILM_PX_MM  # noqa: E402  (the one home of the films' spacing)

SPACINGS = (0.05, 0.07, 0.085, 0.10)
MORPHS = ("punctate", "pleomorphic", "linear")
SS = 8  # supersampling of the thickness maps


# --------------------------------------------------------------------------- backgrounds
def held_out_films(case: str = "sfm-malign-0") -> dict[str, np.ndarray]:
    """One patient's four films as float arrays (default: the held-out patient)."""
    from napari_gravity.data.readers import read_image
    from napari_gravity.data.synthetic.semireal import mammogram_paths

    out = {
        key.partition("/")[2]: read_image(path).image.astype(np.float32)
        for key, path in mammogram_paths().items()
        if key.startswith(f"{case}/")
    }
    if len(out) != 4:
        raise RuntimeError(f"expected the 4 {case} films, found {sorted(out)}")
    return out


def resample(film: np.ndarray, px_mm: float) -> np.ndarray:
    """Cubic-spline resampling to ``px_mm`` with an anti-aliasing pre-filter."""
    from skimage.transform import rescale

    f = FILM_PX_MM / px_mm
    return rescale(film.astype(np.float64), f, order=3, anti_aliasing=True, preserve_range=True)


# --------------------------------------------------------------------------- lesion shapes
def _sphere_chords(yy, xx, centres, radii) -> np.ndarray:
    t = np.zeros_like(yy)
    for (cy, cx), r in zip(centres, radii, strict=True):
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        t = np.maximum(t, 2.0 * np.sqrt(np.clip(r * r - d2, 0.0, None)))
    return t


def _tube(yy, xx, poly: np.ndarray, r: float) -> np.ndarray:
    """Projected thickness of a tube of radius ``r`` along the polyline ``poly`` (mm)."""
    best = np.full(yy.shape, np.inf)
    for a, b in itertools.pairwise(poly):
        ab = b - a
        L2 = float(ab @ ab) or 1e-12
        u = np.clip(((yy - a[0]) * ab[0] + (xx - a[1]) * ab[1]) / L2, 0.0, 1.0)
        d2 = (yy - a[0] - u * ab[0]) ** 2 + (xx - a[1] - u * ab[1]) ** 2
        best = np.minimum(best, d2)
    return 2.0 * np.sqrt(np.clip(r * r - best, 0.0, None))


def thickness_map(rng: np.random.Generator, morph: str, size_mm: float, direction: float):
    """A calcification's projected thickness: ``(f, half_extent_mm)``, where ``f(yy, xx)`` gives
    the thickness (mm) at offsets in mm from its centre (:func:`render` samples it)."""
    r = size_mm / 2.0
    if morph == "punctate":
        cen, rad = [(0.0, 0.0)], [r]
        return (lambda yy, xx: _sphere_chords(yy, xx, cen, rad)), r
    if morph == "pleomorphic":
        k = int(rng.integers(2, 6))
        rad = list(r * rng.uniform(0.35, 0.8, k))
        ang = rng.uniform(0, 2 * np.pi, k)
        dist = r * rng.uniform(0.0, 0.7, k)
        cen = [(d * np.sin(a), d * np.cos(a)) for a, d in zip(ang, dist, strict=True)]
        ext = max(d + q for d, q in zip(dist, rad, strict=True))
        return (lambda yy, xx: _sphere_chords(yy, xx, cen, rad)), ext
    # linear / branching cast: width 0.08-0.3 mm, length = size_mm, along ``direction``
    w = float(np.clip(r * rng.uniform(0.25, 0.5), 0.04, 0.15))
    n = int(rng.integers(2, 5))
    steps = size_mm / n
    pts = [np.zeros(2)]
    ang = direction
    for _ in range(n):
        ang += rng.normal(0, 0.35)
        pts.append(pts[-1] + steps * np.array([np.sin(ang), np.cos(ang)]))
    poly = np.array(pts)
    poly -= poly.mean(0)
    if rng.uniform() < 0.4:  # a short side branch
        j = int(rng.integers(1, len(poly)))
        side = ang + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
        tip = poly[j] + 0.5 * steps * np.array([np.sin(side), np.cos(side)])
        branch = np.stack([poly[j], tip])

        def both(yy, xx):
            return np.maximum(_tube(yy, xx, poly, w), _tube(yy, xx, branch, w * 0.8))

        return both, float(np.abs(np.vstack([poly, tip])).max() + w)
    ext = float(np.abs(poly).max() + w)
    return (lambda yy, xx: _tube(yy, xx, poly, w)), ext


def render(f, ext_mm: float, cy: float, cx: float, px_mm: float) -> tuple:
    """Area-averaged thickness on the pixel grid around (cy, cx) px: ``(t, y0, x0)``."""
    half = int(np.ceil(ext_mm / px_mm)) + 2
    y0, x0 = int(np.floor(cy)) - half, int(np.floor(cx)) - half
    n = 2 * half + 1
    sub = (np.arange(n * SS) + 0.5) / SS  # sub-pixel centres, in pixels from (y0, x0)
    yy = (y0 + sub[:, None] - cy) * px_mm
    xx = (x0 + sub[None, :] - cx) * px_mm
    t = f(yy, xx).reshape(n, SS, n, SS).mean(axis=(1, 3))
    return t, y0, x0


# --------------------------------------------------------------------------- layout
def draw_size(rng, longest: float = 0.8) -> float:
    """Size in mm: log-normal around 0.3 mm, clipped to 0.1-``longest`` mm."""
    return float(np.clip(np.exp(rng.normal(np.log(0.3), 0.4)), 0.1, longest))


def layout(rng, allowed: np.ndarray, px_mm: float, lesion_free: bool):
    """``[(cy, cx, morph, size_mm, direction)]``: clusters sharing a morphology + isolated."""
    if lesion_free:
        return []
    cand = np.argwhere(allowed)
    if not len(cand):
        return []
    out = []
    for _ in range(int(rng.integers(1, 3))):
        morph = MORPHS[int(rng.integers(3))]
        c = cand[int(rng.integers(len(cand)))].astype(float)
        R = rng.uniform(2.0, 6.0) / px_mm
        k = int(rng.integers(4, 16))
        if morph == "linear":  # along a duct-like curve through the centre
            a0 = rng.uniform(0, 2 * np.pi)
            s = rng.uniform(-1, 1, k) * R
            bend = rng.normal(0, 0.3)
            pos = (
                c
                + np.stack([s * np.sin(a0 + bend * s / R), s * np.cos(a0 + bend * s / R)], 1)
                + rng.normal(0, 0.08 * R, (k, 2))
            )
            dirs = a0 + bend * s / R + rng.normal(0, 0.2, k)
        else:
            pos = c + rng.normal(0, R / 2.0, (k, 2))
            dirs = rng.uniform(0, 2 * np.pi, k)
        for p, d in zip(pos, dirs, strict=True):
            longest = 1.5 if morph == "linear" else 0.8  # clustered casts: lengths to 1.5 mm
            out.append((p[0], p[1], morph, draw_size(rng, longest), d))
    for _ in range(int(rng.poisson(1.0))):  # isolated ones
        p = cand[int(rng.integers(len(cand)))].astype(float)
        morph = MORPHS[int(rng.integers(3))]
        out.append((p[0], p[1], morph, draw_size(rng), rng.uniform(0, 2 * np.pi)))
    # keep those inside the allowed region and apart from each other (distinct lesions)
    keep = []
    for les in out:
        y, x = int(np.round(les[0])), int(np.round(les[1]))
        if not (0 <= y < allowed.shape[0] and 0 <= x < allowed.shape[1]) or not allowed[y, x]:
            continue
        if any(
            np.hypot(les[0] - k[0], les[1] - k[1]) < 1.6 / px_mm * max(les[3], k[3]) + 3
            for k in keep
        ):
            continue
        keep.append(les)
    return keep


# --------------------------------------------------------------------------- one tile
def make_tile(rng, films: dict, px_mm: float, cache: dict, size: int = 384):
    from outside_common import outside_sample

    from napari_gravity.data.masks import breast_mask

    view = sorted(films)[int(rng.integers(4))]
    key = (view, px_mm)
    if key not in cache:
        img = resample(films[view], px_mm)
        fmask = breast_mask(img.astype(np.float32))
        cache[key] = (img, fmask, ndi.binary_erosion(fmask, iterations=8))
    full, fmask, inner = cache[key]
    H, W = full.shape
    for _ in range(200):
        y, x = int(rng.integers(0, H - size)), int(rng.integers(0, W - size))
        if inner[y : y + size, x : x + size].mean() > 0.9:
            break
    d = full[y : y + size, x : x + size].copy()
    mask = fmask[y : y + size, x : x + size].copy()
    if rng.uniform() < 0.5:
        d, mask = d[:, ::-1], mask[:, ::-1]
    if rng.uniform() < 0.5:
        d, mask = d[::-1], mask[::-1]
    d, mask = np.ascontiguousarray(d), np.ascontiguousarray(mask)
    # density domain: robust 0-1 over the breast
    lo, hi = np.percentile(d[mask], [1, 99.5])
    v = np.clip((d - lo) / max(hi - lo, 1e-6), -0.2, 1.5)
    hp = v - ndi.gaussian_filter(v, 4.0)
    s = float(hp[mask].std())
    a = 3.0  # exposure falls with density
    E = np.exp(-a * v)
    allowed = ndi.binary_erosion(mask, iterations=12)
    lesions = layout(rng, allowed, px_mm, lesion_free=rng.uniform() < 0.2)
    att = np.zeros_like(v)
    pts, radii, morphs, snrs = [], [], [], []
    for cy, cx, morph, size_mm, direction in lesions:
        f, ext = thickness_map(rng, morph, size_mm, direction)
        t, y0, x0 = render(f, ext, cy, cx, px_mm)
        if t.max() <= 0:
            continue
        snr = float(np.exp(rng.uniform(np.log(2.0), np.log(12.0))))
        mu = a * snr * s / t.max()  # peak added density = SNR · s before the display curve
        ys, xs = (
            slice(max(y0, 0), min(y0 + t.shape[0], size)),
            slice(max(x0, 0), min(x0 + t.shape[1], size)),
        )
        tt = t[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        att[ys, xs] += mu * tt
        wy, wx = np.nonzero(tt > 0)
        wts = tt[wy, wx]
        pts.append(  # the thickness-weighted centre, in pixel-index coordinates
            (ys.start + (wy * wts).sum() / wts.sum(), xs.start + (wx * wts).sum() / wts.sum())
        )
        radii.append(max(1.0, 0.5 * max(np.ptp(wy) + 1, np.ptp(wx) + 1)))
        morphs.append(morph)
        snrs.append(snr)
    E = E * np.exp(-att)
    # detector: exponential (Lorentzian-like) blur kernel, then grain-correlated quantum noise
    ell = rng.uniform(0.3, 0.7)
    r = np.arange(-4, 5)
    k = np.exp(-np.hypot(r[:, None], r[None, :]) / ell)
    E = ndi.convolve(E, k / k.sum(), mode="reflect")
    grain = ndi.gaussian_filter(rng.standard_normal(E.shape), rng.uniform(0.5, 1.0))
    grain /= grain.std()
    # σ_E = n·s·a·√(E·Ē): density noise n·s where E = Ē, more in dense tissue (fewer quanta)
    n_rel = rng.uniform(0.15, 0.35)
    E = np.clip(E + n_rel * s * a * np.sqrt(E * E.mean()) * grain, 1e-4, None)
    dd = -np.log(E) / a
    # characteristic curve: a sigmoid around the breast median, random latitude
    c = float(np.median(dd[mask]))
    w = rng.uniform(0.12, 0.3)
    disp = 1.0 / (1.0 + np.exp(-(dd - c) / w))
    img = np.round(disp * 4095.0).astype(np.float32)  # 12-bit
    return outside_sample("foreign", rng, img, pts, radii, mask, view, px_mm), morphs, snrs


def build(
    n_per_spacing: int,
    seed: int,
    case: str = "sfm-malign-0",
    spacings: tuple[float, ...] | None = None,
):
    from outside_common import build_tiles

    def make(rng, films, px, cache):
        smp, morphs, snrs = make_tile(rng, films, px, cache)
        return smp, {"morphs": morphs, "snr": snrs}

    return build_tiles(make, n_per_spacing, seed, case, tuple(spacings or SPACINGS))


def main() -> int:
    from outside_common import run_outside

    def morph_subsets(ids: list[str], info: dict) -> dict:
        # per morphology: images whose lesions all share it (clusters share one; isolated may not)
        return {
            f"only {m}": [i for i in ids if info[i]["morphs"] and set(info[i]["morphs"]) == {m}]
            for m in MORPHS
        }

    def add_args(ap) -> None:
        ap.add_argument("--save-tiles", default=None, help="folder for the tiles as TIFF + CSV")
        ap.add_argument("--case", default="sfm-malign-0", help="whose films (sfm-benign-0: dev)")
        ap.add_argument(
            "--spacings",
            type=lambda v: tuple(float(x) for x in v.split(",")),
            default=None,
            help="pixel spacings in mm, e.g. 0.03,0.04,0.13 (default 0.05,0.07,0.085,0.1)",
        )

    def save_tiles(args, samples: dict) -> None:
        if not args.save_tiles:
            return
        import tifffile

        from napari_gravity.data.annotations import write_points_csv

        d = Path(args.save_tiles)
        d.mkdir(parents=True, exist_ok=True)
        for i, s in samples.items():
            tifffile.imwrite(d / f"{i}.tif", s.image.astype(np.uint16))
            write_points_csv(d / f"{i}.csv", s.points, s.radii)

    return run_outside(
        __doc__,
        "foreign_mc",
        build,
        SPACINGS,
        per_spacing=20,
        seed=2026,
        add_args=add_args,
        build_kwargs=lambda a: {"case": a.case, "spacings": a.spacings},
        extra_subsets=morph_subsets,
        after_build=save_tiles,
        extra_summary=lambda a: {"case": a.case},
        width=26,
    )


if __name__ == "__main__":
    raise SystemExit(main())
