"""Shared building blocks of the generators: noise fields, curves, lesion placement."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi
from scipy.fft import next_fast_len


def as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy Generator from a seed (int / None) or an existing Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` (uint8, grey or RGB) encoded as a JPEG of ``quality`` and decoded again."""
    import io

    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(buf, img, extension=".jpg", quality=int(quality))
    return iio.imread(buf.getvalue(), extension=".jpg")


def log_uniform(rng: np.random.Generator, lo: float, hi: float, size=None) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size=size))


def power_law_noise(
    shape: tuple[int, int], beta: float, f0: float, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian noise with power spectrum ~ (f² + f0²)^(-β/2), zero mean, unit std.

    Generated on a domain padded by 50% so the periodic FFT wrap-around does not show.
    """
    h, w = shape
    ph, pw = next_fast_len(int(h * 1.5) + 1, True), next_fast_len(int(w * 1.5) + 1, True)

    def amplitude(fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
        amp = (fy**2 + fx**2 + f0**2) ** (-beta / 4.0)
        amp[0, 0] = 0.0
        return amp

    return _filtered_white_noise(shape, (ph, pw), amplitude, rng)


def _filtered_white_noise(shape, domain, transfer, rng: np.random.Generator) -> np.ndarray:
    """White noise on ``domain`` filtered in the Fourier domain by ``transfer(fy, fx)`` (rfft
    layout), cropped to ``shape``, zero mean and unit std."""
    fy = np.fft.fftfreq(domain[0])[:, None]
    fx = np.fft.rfftfreq(domain[1])[None, :]
    tf = transfer(fy, fx)
    spec = np.fft.rfft2(rng.standard_normal(domain)) * tf
    out = np.fft.irfft2(spec, s=domain)[: shape[0], : shape[1]]
    out -= out.mean()
    sd = out.std()
    return out / sd if sd > 0 else out


def clustered_lumpy_background(
    shape: tuple[int, int],
    px_mm: float,
    rng: np.random.Generator,
    *,
    clusters_per_cm2: float = 10.0,
    blobs_per_cluster: float = 20.0,
    alpha: float = 2.1,
    beta: float = 0.5,
    lx_mm: float = 1.5,
    ly_mm: float = 0.6,
    cluster_sigma_mm: float = 3.6,
    n_orient: int = 8,
) -> np.ndarray:
    """Bochud et al. (1999) clustered lumpy background, zero mean and unit std.

    Poisson clusters of anisotropic blobs ``exp(-α (r / L(θ))^β)`` whose long axis takes a
    random orientation per blob; blobs are binned into ``n_orient`` orientations and each bin
    is convolved once in the Fourier domain (vectorised, no per-blob loop).
    """
    h, w = shape
    lx, ly = lx_mm / px_mm, ly_mm / px_mm
    krad = int(np.ceil(4 * lx))
    margin = krad + int(3 * cluster_sigma_mm / px_mm)
    ph, pw = h + 2 * krad, w + 2 * krad
    # clusters over the image plus a margin so blobs near the edges are not missing
    area_cm2 = (h + 2 * margin) * (w + 2 * margin) * (px_mm / 10.0) ** 2
    n_c = rng.poisson(clusters_per_cm2 * area_cm2)
    centres = rng.uniform([-margin, -margin], [h + margin, w + margin], size=(n_c, 2))
    n_b = rng.poisson(blobs_per_cluster, size=n_c)
    pos = np.repeat(centres, n_b, axis=0) + rng.normal(
        0.0, cluster_sigma_mm / px_mm, size=(int(n_b.sum()), 2)
    )
    orient = rng.integers(0, n_orient, size=len(pos))
    iy = np.round(pos[:, 0]).astype(int) + krad
    ix = np.round(pos[:, 1]).astype(int) + krad
    ok = (iy >= 0) & (iy < ph) & (ix >= 0) & (ix < pw)
    iy, ix, orient = iy[ok], ix[ok], orient[ok]

    # linear (non-circular) convolution size, rounded up to a fast FFT length
    fh, fw = next_fast_len(ph + 2 * krad, True), next_fast_len(pw + 2 * krad, True)
    kfts = _lumpy_kernel_ffts(fh, fw, krad, lx, ly, alpha, beta, n_orient)
    acc = np.zeros((fh, fw // 2 + 1), dtype=np.complex64)
    for k in range(n_orient):
        sel = orient == k
        if not sel.any():
            continue
        delta = np.zeros((fh, fw), dtype=np.float32)
        np.add.at(delta, (iy[sel], ix[sel]), 1.0)
        acc += sfft.rfft2(delta) * kfts[k]
    full = sfft.irfft2(acc, s=(fh, fw)).astype(np.float64)
    out = full[2 * krad : 2 * krad + h, 2 * krad : 2 * krad + w]
    out = out - out.mean()
    sd = out.std()
    return out / sd if sd > 0 else out


@lru_cache(maxsize=8)
def _lumpy_kernel_ffts(fh, fw, krad, lx, ly, alpha, beta, n_orient) -> tuple[np.ndarray, ...]:
    """FFTs of the anisotropic blob kernel at ``n_orient`` fixed orientations (cached)."""
    yy, xx = np.mgrid[-krad : krad + 1, -krad : krad + 1].astype(np.float64)
    out = []
    for k in range(n_orient):
        th = np.pi * (k + 0.5) / n_orient
        u = xx * np.cos(th) + yy * np.sin(th)
        v = -xx * np.sin(th) + yy * np.cos(th)
        kern = np.exp(-alpha * np.sqrt((u / lx) ** 2 + (v / ly) ** 2) ** beta)
        kpad = np.zeros((fh, fw), dtype=np.float32)
        kpad[: 2 * krad + 1, : 2 * krad + 1] = kern
        out.append(sfft.rfft2(kpad))
    return tuple(out)


def bezier_points(p0, p1, p2, step: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Samples of a quadratic Bézier curve about ``step`` px apart, and t in [0, 1]."""
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    length = np.linalg.norm(p1 - p0) + np.linalg.norm(p2 - p1)
    n = max(int(length / step), 2)
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    return pts, t[:, 0]


def splat(shape: tuple[int, int], pts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bilinear splatting of weighted points (y, x) into an image."""
    h, w = shape
    out = np.zeros((h + 2, w + 2))
    y, x = pts[:, 0], pts[:, 1]
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    for dy, dx, wt in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + dy + 1, x0 + dx + 1
        ok = (yy >= 0) & (yy < h + 2) & (xx >= 0) & (xx < w + 2)
        np.add.at(out, (yy[ok], xx[ok]), (weights * wt)[ok])
    return out[1:-1, 1:-1]


def draw_curve(
    shape: tuple[int, int],
    p0,
    p1,
    p2,
    fwhm: float,
    amplitude: float | np.ndarray,
    *,
    taper: bool = True,
) -> np.ndarray:
    """A quadratic Bézier line with a Gaussian cross-profile of the given FWHM and peak."""
    pts, t = bezier_points(p0, p1, p2, step=0.5)
    sigma = max(fwhm / 2.3548, 0.3)
    amp = np.broadcast_to(np.asarray(amplitude, dtype=np.float64), t.shape)
    if taper:
        amp = amp * np.sin(np.pi * t) ** 0.5
    wts = amp * 0.5 * np.sqrt(2 * np.pi) * sigma
    img = splat(shape, pts, wts)
    return ndi.gaussian_filter(img, sigma, truncate=3.0)


def place_points(
    rng: np.random.Generator,
    candidates_fn,
    radii: np.ndarray,
    allowed: np.ndarray,
    existing: list[tuple[float, float, float]] | None = None,
    gap: float = 1.5,
    border: float = 2.0,
    tries: int = 60,
) -> tuple[np.ndarray, np.ndarray]:
    """Place lesions of the given radii by rejection sampling.

    ``candidates_fn(n)`` proposes ``n`` (y, x) positions; a position is accepted when it lies
    inside ``allowed`` (bool mask), at least ``radius + border`` px from the image edge and at
    least ``r1 + r2 + gap`` px from every lesion already placed. Lesions that cannot be placed
    after ``tries`` proposals are dropped.
    """
    h, w = allowed.shape
    placed = list(existing or [])
    out_p, out_r = [], []
    for r in radii:
        cand = candidates_fn(tries)
        for y, x in cand:
            m = r + border
            if not (m <= y <= h - 1 - m and m <= x <= w - 1 - m):
                continue
            if not allowed[round(y), round(x)]:
                continue
            if placed:
                arr = np.asarray(placed)
                d = np.hypot(arr[:, 0] - y, arr[:, 1] - x)
                if np.any(d < arr[:, 2] + r + gap):
                    continue
            placed.append((y, x, r))
            out_p.append((y, x))
            out_r.append(r)
            break
    return np.asarray(out_p, dtype=np.float64).reshape(-1, 2), np.asarray(out_r, dtype=np.float64)


def best_window(
    rng: np.random.Generator,
    centres,
    mask: np.ndarray,
    shape: tuple[int, int],
    tries: int,
    good: float,
) -> tuple[int, int]:
    """(top, left) of a ``shape`` window of ``mask`` around one of ``centres`` (drawn at random,
    up to ``tries`` times): the window with the largest mask fraction, stopping early at one
    above ``good``. The window is clipped to lie inside ``mask``."""
    h, w = shape
    H, W = mask.shape[:2]
    best = None
    for _ in range(tries):
        cy, cx = centres[rng.integers(len(centres))]
        top = int(np.clip(cy - h // 2, 0, H - h))
        left = int(np.clip(cx - w // 2, 0, W - w))
        frac = mask[top : top + h, left : left + w].mean()
        if best is None or frac > best[0]:
            best = (frac, top, left)
        if frac > good:
            break
    return best[1], best[2]


def highpass_std(image: np.ndarray, mask: np.ndarray | None = None, sigma: float = 4.0) -> float:
    """Std of the image minus its Gaussian-smoothed version (the local texture scale)."""
    hp = image - ndi.gaussian_filter(image, sigma)
    if mask is not None and mask.any():
        inner = ndi.binary_erosion(mask, iterations=int(2 * sigma))
        if inner.sum() > 100:
            return float(hp[inner].std())
        return float(hp[mask].std())
    return float(hp.std())


def smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit std (a smooth random field).

    Filtered in the Fourier domain (periodic), so the cost does not grow with ``sigma``.
    """
    return _filtered_white_noise(
        shape, shape, lambda fy, fx: np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2)), rng
    )


def lobule_network(
    shape: tuple[int, int],
    px_mm: float,
    rng: np.random.Generator,
    *,
    lobule_mm: tuple[float, float] = (3.0, 9.0),
    width_px: tuple[float, float] = (0.8, 2.2),
) -> np.ndarray:
    """Fibrous septa around fat lobules: the edges of a warped Voronoi tessellation.

    Returns a field in [0, 1] (1 on a septum), with the septa's strength modulated by a
    smooth random field so that some fade out.
    """
    from scipy.spatial import cKDTree

    h, w = shape
    size = rng.uniform(*lobule_mm) / px_mm
    n = max(int(1.2 * h * w / (np.pi * (size / 2) ** 2)), 4)
    seeds = rng.uniform([-0.1 * h, -0.1 * w], [1.1 * h, 1.1 * w], size=(n, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    warp = 0.2 * size
    yw = yy + warp * smooth_noise(shape, size / 3, rng)
    xw = xx + warp * smooth_noise(shape, size / 3, rng)
    d, _ = cKDTree(seeds).query(np.stack([yw.ravel(), xw.ravel()], 1), k=2)
    gap = (d[:, 1] - d[:, 0]).reshape(shape)
    wpx = rng.uniform(*width_px)
    edge = np.exp(-0.5 * (gap / wpx) ** 2)
    strength = np.clip(0.5 + 0.6 * smooth_noise(shape, size / 2, rng), 0.0, 1.0)
    return edge * strength
