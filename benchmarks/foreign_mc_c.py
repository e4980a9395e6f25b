"""A third outside microcalcification model, written in stop 20 after ``default_mc`` v5 and its
test-time augmentation were fixed, and unlike the project's generators, ``foreign_mc.py`` and
``foreign_mc_b.py``: a blind check (nothing was tuned on it).

What differs (it shares only ``foreign_mc.held_out_films``, the film loader):

- **shapes**: random level sets — a smooth Gaussian random field inside a disc, biased towards
  the centre and thresholded on a 4× finer grid, so a calcification may be lobed, crescent-like or
  split into 2-3 specks; a rounded thickness profile (square root of the distance to the edge);
- **image formation**: the film's display value taken as tissue thickness, exposure
  ``exp(-k·v)``; a calcification attenuates it by ``exp(-μ·t)``;
- **a DR detector**: an aperture (sinc) times a heavy-tailed Lorentzian MTF (scintillator
  spread), applied in the frequency domain; **correlated** noise (white noise through the same
  Lorentzian, its std ∝ √exposure);
- **vendor-style presentation processing**: log, then large-kernel unsharp masking (σ 8-25 px,
  gain 0.5-2: halos around dense structures), then a sigmoid LUT, 12-bit output;
- **acquisition**: 55, 70 and 85 µm (``skimage.transform.resize`` with anti-aliasing) on the
  held-out patient ``sfm-malign-0``; 384² tiles;
- **layout**: 1-3 elliptical clusters of 3-20 and 0-2 scattered calcifications, 20 % lesion-free
  tiles; contrast set so that the peak the detector leaves of each shape is 1.5-8 times the
  fluctuation of the detected log signal (texture high-pass and noise), log-uniform.

    python benchmarks/foreign_mc_c.py --out benchmarks/results/foreign_mc_c.json \\
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

SPACINGS = (0.055, 0.07, 0.085)
FINE = 4  # supersampling of the shapes


def level_set_shape(rng: np.random.Generator, diameter_px: float) -> np.ndarray:
    """Thickness map (peak 1) of one calcification on the pixel grid, odd square window."""
    r = max(diameter_px / 2.0, 0.6)
    half = int(np.ceil(r)) + 2
    n = (2 * half + 1) * FINE
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[0:n, 0:n]
    rho = np.hypot(yy - c, xx - c) / (r * FINE)
    field = ndi.gaussian_filter(rng.normal(size=(n, n)), rng.uniform(0.25, 0.6) * r * FINE)
    field /= field.std() + 1e-12
    inside = field - rng.uniform(1.5, 3.5) * rho**2 > rng.uniform(-1.2, 0.2)
    inside &= rho < 1.0
    if not inside.any():
        inside = rho < 0.5
    thick = np.sqrt(ndi.distance_transform_edt(inside))
    thick /= thick.max()
    # area-average back to pixels
    t = thick.reshape(2 * half + 1, FINE, 2 * half + 1, FINE).mean(axis=(1, 3))
    return t / max(float(t.max()), 1e-9)


def lorentz_mtf(shape: tuple[int, int], f0: float, aperture: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    return np.sinc(fy * aperture) * np.sinc(fx * aperture) / (1.0 + (f / f0) ** 2)


def make_tile(rng, film_set: dict, px_mm: float, cache: dict, size: int = 384):
    from outside_common import centre_and_radius, clip_window, film_patch, outside_sample

    view, v, mask = film_patch(rng, film_set, px_mm, cache, size)
    lo, hi = np.percentile(v[mask], [1, 99])
    v = np.clip((v - lo) / max(hi - lo, 1e-9), -0.2, 1.2)  # thickness-like, 0..1 in the breast
    log_e = -rng.uniform(1.5, 3.0) * v  # log exposure
    texture = float((log_e - ndi.gaussian_filter(log_e, 2.0))[mask].std())
    noise_rel = float(np.exp(rng.uniform(np.log(0.3), np.log(2.0))))
    # layout
    allowed = ndi.binary_erosion(mask, iterations=12)
    cand = np.argwhere(allowed)
    centres: list[np.ndarray] = []
    if len(cand) and rng.uniform() >= 0.2:
        for _ in range(int(rng.integers(1, 4))):
            c = cand[int(rng.integers(len(cand)))].astype(float)
            a, b = rng.uniform(1.5, 4.0, 2) / px_mm
            th = rng.uniform(0, np.pi)
            rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
            for _ in range(int(rng.integers(3, 21))):
                u = rng.normal(0, 0.5, 2) * (a, b)
                centres.append(c + rot @ u)
        for _ in range(int(rng.integers(0, 3))):
            centres.append(cand[int(rng.integers(len(cand)))].astype(float))
    # DR detector: aperture + Lorentzian MTF, correlated noise with std ∝ √exposure
    mtf = lorentz_mtf(log_e.shape, rng.uniform(0.12, 0.35), rng.uniform(0.8, 1.0))
    psf = np.fft.fftshift(np.fft.irfft2(mtf, s=log_e.shape))
    cy, cx = log_e.shape[0] // 2, log_e.shape[1] // 2
    psf = psf[cy - 20 : cy + 21, cx - 20 : cx + 21]
    psf /= psf.sum()
    white = np.fft.irfft2(np.fft.rfft2(rng.normal(size=log_e.shape)) * mtf, s=log_e.shape)
    white /= white.std() + 1e-12

    def detect(log_exposure: np.ndarray) -> np.ndarray:
        """The detector's log signal (−log of the blurred, noisy exposure)."""
        e = np.fft.irfft2(np.fft.rfft2(np.exp(log_exposure)) * mtf, s=log_exposure.shape)
        e = np.clip(e, 1e-9, None)
        # relative noise noise_rel · texture at the breast's mean exposure, ∝ 1/√exposure
        e = e * (1.0 + noise_rel * texture * white / np.sqrt(e / e[mask].mean()))
        return -np.log(np.clip(e, 1e-9, None))

    bg = detect(log_e)
    sigma = float((bg - ndi.gaussian_filter(bg, 2.0))[mask].std())  # the fluctuation there
    atten = np.zeros_like(log_e)
    pts, radii = [], []
    for p in centres:
        iy, ix = round(float(p[0])), round(float(p[1]))
        if not (0 <= iy < size and 0 <= ix < size) or not allowed[iy, ix]:
            continue
        d_mm = float(np.clip(np.exp(rng.normal(np.log(0.3), 0.5)), 0.12, 1.0))
        if any(np.hypot(iy - q[0], ix - q[1]) < 0.75 * d_mm / px_mm + 3 for q in pts):
            continue
        t = level_set_shape(rng, d_mm / px_mm)
        ys, xs, sub = clip_window(t, iy, ix, size)
        if sub.sum() <= 0:
            continue
        # contrast after the detector: the peak the MTF leaves of this shape is 1.5-8 σ
        kept = float(ndi.convolve(np.pad(t, 20), psf, mode="constant").max())
        snr = float(np.exp(rng.uniform(np.log(1.5), np.log(8.0))))
        atten[ys, xs] = np.maximum(atten[ys, xs], snr * sigma / max(kept, 1e-3) * sub)
        centre, radius = centre_and_radius(sub, ys, xs, 0.05)
        pts.append(centre)
        radii.append(radius)
    lg = detect(log_e - atten) if pts else bg
    # presentation: large-kernel unsharp masking of the log signal, sigmoid LUT, 12 bit
    lg = lg + rng.uniform(0.5, 2.0) * (lg - ndi.gaussian_filter(lg, rng.uniform(8, 25)))
    c0, w0 = float(np.median(lg[mask])), float(lg[mask].std()) * rng.uniform(0.5, 1.5)
    img = np.round(4095.0 / (1.0 + np.exp(-(lg - c0) / max(w0, 1e-9)))).astype(np.float32)
    return outside_sample("foreignC", rng, img, pts, radii, mask, view, px_mm)


def build(n_per_spacing: int, seed: int, case: str = "sfm-malign-0"):
    from outside_common import build_tiles

    return build_tiles(lambda *a: (make_tile(*a), {}), n_per_spacing, seed, case, SPACINGS)


def main() -> int:
    from outside_common import run_outside

    return run_outside(
        __doc__,
        "foreign_mc_c",
        build,
        SPACINGS,
        per_spacing=27,
        seed=31337,
        add_args=lambda ap: ap.add_argument("--case", default="sfm-malign-0"),
        build_kwargs=lambda a: {"case": a.case},
        extra_summary=lambda a: {"case": a.case},
    )


if __name__ == "__main__":
    raise SystemExit(main())
