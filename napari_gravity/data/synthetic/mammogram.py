"""Synthetic mammogram patches with microcalcification (MC) clusters (SPEC §4).

Background: power-law noise + Bochud clustered lumpy background + bright curvilinear
structures + a low-order trend, blurred; quantum noise; unlabelled bright single-pixel specks.
Calcifications: LogNormal diameters, irregular projected ellipsoids rendered 4× supersampled,
PSF-blurred, additive contrast ``SNR · s`` where ``s`` is the high-passed background std.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_gravity.types import Sample

from ._common import (
    as_rng,
    clustered_lumpy_background,
    draw_curve,
    highpass_std,
    lobule_network,
    log_uniform,
    place_points,
    power_law_noise,
)

#: Raw-intensity mapping of the synthetic density field (14-bit-like, integer valued).
BASE_LEVEL = 2200.0
GAIN = 350.0
AIR_LEVEL = 120.0
MAX_LEVEL = 16383.0


def render_calcification(
    r: float,
    rng: np.random.Generator,
    *,
    psf_sigma: float = 0.6,
    supersample: int = 4,
    offset: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one irregular projected ellipsoid of largest half-extent ``r`` px.

    Returns ``(patch, offset)``: a small patch whose peak is 1 after the PSF, centred on the
    patch's middle pixel plus ``offset`` (sub-pixel (dy, dx) in [-0.5, 0.5]; random if None).
    """
    off = rng.uniform(-0.5, 0.5, size=2) if offset is None else np.asarray(offset, float)
    half = int(np.ceil(r + 3 * psf_sigma + 2))
    n = 2 * half + 1
    s = supersample
    # sub-sample centres in patch pixel units (pixel i covers [i-0.5, i+0.5))
    g = (np.arange(n * s) + 0.5) / s - 0.5 - half
    yy, xx = np.meshgrid(g - off[0], g - off[1], indexing="ij")
    phi = rng.uniform(0, np.pi)
    u = xx * np.cos(phi) + yy * np.sin(phi)
    v = -xx * np.sin(phi) + yy * np.cos(phi)
    b = r * rng.uniform(0.55, 1.0)
    theta = np.arctan2(v, u)
    # irregular outline: low-order angular harmonics, normalised so the max extent is r
    k = np.arange(2, 6)
    eps = rng.uniform(0.0, 0.18, size=k.size)
    ph = rng.uniform(0, 2 * np.pi, size=k.size)
    tt = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    rho_t = 1 + (eps[:, None] * np.cos(k[:, None] * tt[None] + ph[:, None])).sum(0)
    ex_t = np.hypot(r * np.cos(tt), b * np.sin(tt)) * rho_t
    scale = 1.0 / ex_t.max()
    rho = 1 + (eps[:, None, None] * np.cos(k[:, None, None] * theta[None] + ph[:, None, None])).sum(
        0
    )
    q2 = ((u / (r * scale * rho)) ** 2 + (v / (b * scale * rho)) ** 2).clip(0, None)
    thick = np.sqrt(np.clip(1.0 - q2, 0.0, None))
    # block mean back to the pixel grid, then the PSF
    pix = thick.reshape(n, s, n, s).mean(axis=(1, 3))
    pix = ndi.gaussian_filter(pix, psf_sigma, mode="constant")
    peak = pix.max()
    if peak > 0:
        pix /= peak
    return pix, off


def add_patch(image: np.ndarray, patch: np.ndarray, cy: int, cx: int, amp: float) -> None:
    """Add ``amp * patch`` centred on pixel (cy, cx), clipped at the borders."""
    h, w = image.shape
    half = patch.shape[0] // 2
    y0, x0 = cy - half, cx - half
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + patch.shape[0], h), min(x0 + patch.shape[1], w)
    if ys >= ye or xs >= xe:
        return
    image[ys:ye, xs:xe] += amp * patch[ys - y0 : ye - y0, xs - x0 : xe - x0]


def sample_calcification_layout(
    rng: np.random.Generator,
    allowed: np.ndarray,
    px_mm: float,
    *,
    lesion_free: float = 0.25,
    n_clusters: tuple[int, int] = (1, 2),
    cluster_size: tuple[int, int] = (3, 30),
    cluster_radius_mm: tuple[float, float] = (1.5, 5.0),
    isolated_mean: float = 1.0,
    diameter_mm: tuple[float, float] = (0.30, 0.45),
    diameter_clip_mm: tuple[float, float] = (0.10, 0.95),
    has_lesions: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (y, x) and radii (px) of MCs: clusters within ~1 cm plus a few isolated ones."""
    if has_lesions is None:
        has_lesions = rng.uniform() >= lesion_free
    if not has_lesions or not allowed.any():
        return np.zeros((0, 2)), np.zeros(0)
    mu, sd = np.log(diameter_mm[0]), diameter_mm[1]

    def radii(n: int) -> np.ndarray:
        d = np.clip(rng.lognormal(mu, sd, size=n), *diameter_clip_mm)
        return d / 2.0 / px_mm

    inside = np.argwhere(allowed)
    placed: list[tuple[float, float, float]] = []
    pts, rads = [], []
    for _ in range(rng.integers(n_clusters[0], n_clusters[1] + 1)):
        cy, cx = inside[rng.integers(len(inside))] + rng.uniform(-0.5, 0.5, 2)
        rc = rng.uniform(*cluster_radius_mm) / px_mm
        ax = rng.uniform(0.5, 1.0)  # elongated clusters
        ang = rng.uniform(0, np.pi)
        n = int(rng.integers(cluster_size[0], cluster_size[1] + 1))

        def cand(k: int, cy=cy, cx=cx, rc=rc, ax=ax, ang=ang) -> np.ndarray:
            a = rng.normal(0, rc / 2, size=k)
            b = rng.normal(0, rc * ax / 2, size=k)
            return np.stack(
                [cy + a * np.sin(ang) + b * np.cos(ang), cx + a * np.cos(ang) - b * np.sin(ang)], 1
            )

        p, r = place_points(rng, cand, radii(n), allowed, placed)
        placed += [(y, x, rr) for (y, x), rr in zip(p, r, strict=False)]
        pts.append(p)
        rads.append(r)
    n_iso = rng.poisson(isolated_mean)
    if n_iso:

        def cand_iso(k: int) -> np.ndarray:
            return inside[rng.integers(len(inside), size=k)] + rng.uniform(-0.5, 0.5, (k, 2))

        p, r = place_points(rng, cand_iso, radii(n_iso), allowed, placed)
        pts.append(p)
        rads.append(r)
    if not pts:
        return np.zeros((0, 2)), np.zeros(0)
    return np.concatenate(pts).reshape(-1, 2), np.concatenate(rads)


def insert_calcifications(
    image: np.ndarray,
    points: np.ndarray,
    radii: np.ndarray,
    s: float,
    rng: np.random.Generator,
    *,
    snr: tuple[float, float] = (3.0, 20.0),
    psf_sigma: float = 0.6,
    family: str = "ellipsoid",
) -> tuple[np.ndarray, np.ndarray]:
    """Add rendered MCs (in place) and return their exact centres (y, x) and radii.

    The contrast of each MC is ``SNR · s`` with SNR log-uniform in ``snr``; ``family`` is the
    appearance (:data:`.lesions.MC_FAMILIES`; ``ellipsoid`` is :func:`render_calcification`).
    """
    from .lesions import render_mc

    out_p = np.zeros((len(points), 2))
    for i, ((y, x), r) in enumerate(zip(points, radii, strict=False)):
        cy, cx = round(y), round(x)
        patch, off = render_mc(family, float(r), rng, psf_sigma=psf_sigma, offset=(y - cy, x - cx))
        add_patch(image, patch, cy, cx, float(log_uniform(rng, *snr)) * s)
        out_p[i] = (cy + off[0], cx + off[1])
    return out_p, np.asarray(radii, dtype=np.float64)


def breast_silhouette(
    shape: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A CC-view-like breast region, chest wall on the left. Returns (mask, thickness 0..1)."""
    h, w = shape
    cy = h * rng.uniform(0.45, 0.55)
    ry = h * rng.uniform(0.40, 0.48)
    rx = w * rng.uniform(0.75, 0.92)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # slightly asymmetric outline
    yn = (yy - cy) / ry
    rho = np.sqrt(yn**2 * (1 + 0.15 * np.tanh(yn)) + (xx / rx) ** 2)
    mask = rho < 1.0
    edge = 0.18  # fraction of the radius over which the compressed thickness falls off
    thick = np.clip((1.0 - rho) / edge, 0.0, 1.0) ** 0.6
    return mask, thick


def synth_mammogram(
    shape: tuple[int, int] = (512, 512),
    seed: int | np.random.Generator | None = None,
    snr: tuple[float, float] = (3.0, 20.0),
    *,
    px_mm: float = 0.07,
    lesion_free: float = 0.25,
    has_lesions: bool | None = None,
    n_clusters: tuple[int, int] = (1, 2),
    cluster_size: tuple[int, int] = (3, 30),
    isolated_mean: float = 1.0,
    diameter_mm: tuple[float, float] = (0.30, 0.45),
    specks_mean: float = 3.0,
    curvilinear: tuple[int, int] = (4, 16),
    noise: float = 0.25,
    breast: bool = False,
    image_id: str = "",
    patient_id: str = "",
) -> Sample:
    """A synthetic mammogram patch (or whole breast with ``breast=True``) with MC clusters.

    Deterministic from ``seed``. The image is float32 with integer values in a 14-bit range
    (MONOCHROME2: brighter = denser), so writing it as 16-bit DICOM/TIFF is lossless.
    Points are exact (y, x) MC centres, radii the largest half-extent in px (0.7-6.8 px at the
    default 70 µm). ``snr`` is the difficulty knob (contrast / high-passed background std);
    ``lesion_free`` the probability of a patch without MCs (or force with ``has_lesions``).
    The mask is the tissue region (all True for a patch).
    """
    rng = as_rng(seed)
    h, w = shape
    # --- background density field -----------------------------------------------------
    beta = rng.uniform(2.6, 3.4)
    bg = 0.6 * power_law_noise(shape, beta, 1.0 / 256.0, rng)  # smooth glandular density
    bg += 0.6 * clustered_lumpy_background(shape, px_mm, rng)  # lumpy glandular texture
    # fat lobules outlined by fibrous septa (brighter), fat itself a little darker
    septa = lobule_network(shape, px_mm, rng)
    bg += rng.uniform(0.7, 1.3) * septa
    sd_bg = bg.std()
    # curvilinear structures (ducts, vessels, Cooper's ligaments), roughly towards the nipple
    n_curves = int(rng.integers(curvilinear[0], curvilinear[1] + 1))
    main_dir = rng.uniform(-0.4, 0.4)  # radians around the horizontal
    curves = np.zeros(shape)
    for _ in range(n_curves):
        length = rng.uniform(0.25, 1.0) * max(h, w)
        ang = main_dir + rng.normal(0, 0.6)
        c = rng.uniform([-0.1 * h, -0.1 * w], [1.1 * h, 1.1 * w])
        d = np.array([np.sin(ang), np.cos(ang)]) * length / 2
        bend = rng.normal(0, 0.15 * length, size=2)
        fwhm = rng.uniform(0.8, 3.0)
        amp = rng.uniform(0.15, 0.5) * sd_bg
        curves += draw_curve(shape, c - d, c + bend, c + d, fwhm, amp)
    bg += curves
    # low-order trend
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yn, xn = yy / max(h, w) - 0.5, xx / max(h, w) - 0.5
    coef = rng.normal(0, 0.25, size=5)
    bg += coef[0] * yn + coef[1] * xn + coef[2] * yn * xn + coef[3] * yn**2 + coef[4] * xn**2
    bg = ndi.gaussian_filter(bg, 0.7)

    if breast:
        mask, thick = breast_silhouette(shape, rng)
    else:
        mask, thick = np.ones(shape, dtype=bool), None

    img = BASE_LEVEL + GAIN * bg
    if thick is not None:
        img = AIR_LEVEL + (img - AIR_LEVEL) * thick
    s = highpass_std(img, mask)

    # --- calcifications ---------------------------------------------------------------
    allowed = ndi.binary_erosion(mask, iterations=6) if breast else mask
    pts, rads = sample_calcification_layout(
        rng,
        allowed,
        px_mm,
        lesion_free=lesion_free,
        n_clusters=n_clusters,
        cluster_size=cluster_size,
        isolated_mean=isolated_mean,
        diameter_mm=diameter_mm,
        has_lesions=has_lesions,
    )
    pts, rads = insert_calcifications(img, pts, rads, s, rng, snr=snr)

    # --- unlabelled specks, quantum noise, quantisation ---------------------------------
    n_specks = rng.poisson(specks_mean)
    if n_specks:
        inside = np.argwhere(mask)
        sp = inside[rng.integers(len(inside), size=n_specks)]
        img[sp[:, 0], sp[:, 1]] += rng.uniform(3, 12, size=n_specks) * s
    img += rng.normal(0, noise * s, size=shape)
    if breast:
        img[~mask] = AIR_LEVEL + rng.normal(0, noise * s * 0.5, size=int((~mask).sum()))
    img = np.clip(np.round(img), 0, MAX_LEVEL).astype(np.float32)
    return Sample(
        image=img,
        points=pts,
        radii=rads,
        mask=mask,
        image_id=image_id,
        patient_id=patient_id,
        spacing=(px_mm, px_mm),
    )
