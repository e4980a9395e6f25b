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

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

FILM_PX_MM = 0.045
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
    from skimage.transform import resize

    from napari_gravity.data.masks import breast_mask
    from napari_gravity.types import Sample

    view = sorted(film_set)[int(rng.integers(len(film_set)))]
    if (view, px_mm) not in cache:
        f = film_set[view]
        shape = (round(f.shape[0] * FILM_PX_MM / px_mm), round(f.shape[1] * FILM_PX_MM / px_mm))
        img = resize(f.astype(np.float64), shape, order=1, anti_aliasing=True, preserve_range=True)
        m = breast_mask(img.astype(np.float32))
        cache[(view, px_mm)] = (img, m, ndi.binary_erosion(m, iterations=10))
    full, fmask, inner = cache[(view, px_mm)]
    for _ in range(200):
        y = int(rng.integers(0, full.shape[0] - size))
        x = int(rng.integers(0, full.shape[1] - size))
        if inner[y : y + size, x : x + size].mean() > 0.9:
            break
    lin = full[y : y + size, x : x + size].copy()
    mask = fmask[y : y + size, x : x + size].copy()
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
        h = cov.shape[0] // 2
        ys, xs = (
            slice(max(iy - h, 0), min(iy + h + 1, size)),
            slice(max(ix - h, 0), min(ix + h + 1, size)),
        )
        sub = cov[
            ys.start - (iy - h) : ys.stop - (iy - h), xs.start - (ix - h) : xs.stop - (ix - h)
        ]
        if sub.sum() <= 0:
            continue
        snr = float(np.exp(rng.uniform(np.log(2.0), np.log(10.0))))
        c = snr * sigma / max(float(lin[iy, ix]), 1e-6)  # relative contrast: peak = snr·sigma
        add[ys, xs] = np.maximum(add[ys, xs], c * sub)
        wy, wx = np.nonzero(sub > 0)
        w = sub[wy, wx]
        pts.append((ys.start + (wy * w).sum() / w.sum(), xs.start + (wx * w).sum() / w.sum()))
        radii.append(max(1.0, 0.5 * max(np.ptp(wy) + 1, np.ptp(wx) + 1)))
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
    sample = Sample(
        image=img,
        points=np.asarray(pts, float).reshape(-1, 2),
        radii=np.asarray(radii, float),
        mask=mask,
        image_id=f"foreignB-{view}-{round(px_mm * 1000)}um-{int(rng.integers(1e9))}",
        spacing=(px_mm, px_mm),
    )
    return sample, sizes


def build(n_per_spacing: int, seed: int, case: str = "sfm-malign-0", quanta=(150.0, 1500.0)):
    rng = np.random.default_rng(seed)
    from foreign_mc import held_out_films  # the film loader only, none of its lesion model

    film_set = held_out_films(case)
    samples, info = {}, {}
    for px in SPACINGS:
        cache: dict = {}
        for _ in range(n_per_spacing):
            s, sizes = make_tile(rng, film_set, px, cache, quanta=quanta)
            samples[s.image_id] = s
            info[s.image_id] = {"px_mm": px, "sizes_mm": sizes}
    return samples, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH[,tta=MODE]")
    ap.add_argument("--versus", default=None, help="a --model NAME: paired Δ of the others vs it")
    ap.add_argument("--per-spacing", type=int, default=27, help="tiles per pixel spacing")
    ap.add_argument("--seed", type=int, default=4711)
    ap.add_argument("--case", default="sfm-malign-0")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--quanta", type=float, nargs=2, default=(150.0, 1500.0), help="per pixel")
    args = ap.parse_args()

    import torch
    from robustness import evaluate, print_subsets, run_methods

    torch.set_num_threads(2)
    t0 = time.time()
    samples, info = build(args.per_spacing, args.seed, args.case, tuple(args.quanta))
    t_build = time.time() - t0
    ids = list(samples)
    subsets = {"all": ids}
    for px in SPACINGS:
        subsets[f"spacing {round(px * 1000)} µm"] = [i for i in ids if info[i]["px_mm"] == px]
    methods = run_methods(samples, ids, "bright", args.model)
    results = evaluate(subsets, samples, methods, args.bootstrap, args.versus)
    summary = {
        "benchmark": "foreign_mc_b",
        "what": __doc__.split("\n\n")[0],
        "case": args.case,
        "tiles": len(ids),
        "lesions": int(sum(len(s.points) for s in samples.values())),
        "lesion_free_tiles": int(sum(not len(s.points) for s in samples.values())),
        "spacings_mm": list(SPACINGS),
        "seed": args.seed,
        "quanta_per_pixel": list(args.quanta),
        "models": {s.partition("=")[0]: s.partition("=")[2] for s in args.model},
        "build_s": round(t_build, 1),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, 2 threads",
        "subsets": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print_subsets(results, list(methods), width=16)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
