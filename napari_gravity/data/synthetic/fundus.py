"""Synthetic fundus photographs with microaneurysms (MAs), and MAs on the real skimage retina.

The synthetic fundus is defined on a virtual full image whose field of view (FOV) is
``fov_px`` pixels across (1200 px ≈ 13 mm, i.e. ~11 µm/px: the scale of E-ophtha-MA resized
to 1216×1408 as in paper 000). ``view="crop"`` renders a ``shape`` window of it (what the
benchmarks use); ``view="full"`` scales the whole FOV into ``shape``.

Content: vignetted orange FOV, choroidal texture, dark macula with an avascular fovea, bright
optic disc with cup, a vessel tree grown from the disc (four arcades of artery/vein pairs,
Murray's-law branching with Murray's optimal angles), dark Gaussian MAs (25-100 µm, depth
log-uniform in [0.2, 0.6], 6-60 px from a vessel), distractors (dot/blot haemorrhages, hard
exudates, dust shadows), blur, exposure change, noise and optional JPEG compression.
"""

from __future__ import annotations

import itertools
from collections import deque
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from napari_gravity.types import Sample

from ._common import (
    as_rng,
    best_window,
    jpeg_roundtrip,
    log_uniform,
    place_points,
    power_law_noise,
    smooth_noise,
    splat,
)

FOV_PX = 1200.0
FOV_MM = 13.2


# --------------------------------------------------------------------------- vessel tree
def grow_vessel_tree(
    rng: np.random.Generator,
    disc: np.ndarray,
    fovea: np.ndarray,
    R: float,
    *,
    max_branches: int = 2500,
) -> np.ndarray:
    """Vessel centre-line samples as rows (y, x, width_px, kind) with kind 0 = artery, 1 = vein.

    Coordinates are relative to the FOV centre, for a FOV of radius ``R`` px.
    """
    scale = R / (FOV_PX / 2)
    step = 2.0 * max(scale, 0.5)
    out: list[np.ndarray] = []
    side = np.sign(fovea[1] - disc[1]) or 1.0  # +1 when the fovea is to the right of the disc
    arc_r = np.linalg.norm(fovea - disc) * rng.uniform(0.5, 0.65)
    faz = 0.09 * R
    stack: deque = deque()
    for kind, w0 in ((0, rng.uniform(8.0, 11.0)), (1, rng.uniform(11.0, 14.5))):
        w0 *= scale
        for up in (-1.0, 1.0):
            # temporal arcade: leaves the disc vertically, then bends round the macula
            ang_t = np.arctan2(up, side * 0.35) + rng.normal(0, 0.12)
            stack.append((disc.copy(), ang_t, w0, kind, "temporal", up, 0))
            # nasal branch: away from the fovea
            ang_n = np.arctan2(up * rng.uniform(0.4, 1.0), -side) + rng.normal(0, 0.15)
            stack.append((disc.copy(), ang_n, w0 * rng.uniform(0.65, 0.85), kind, "nasal", up, 0))
    n_br = 0
    while stack and n_br < max_branches:
        pos, ang, w, kind, role, up, gen = stack.popleft()  # breadth first
        n_br += 1
        pts = []
        next_branch = rng.uniform(25, 70) * scale * (1 + w / (4 * scale))
        travelled = 0.0
        for _ in range(int(4 * R / step)):
            if w < 0.75 * max(scale, 0.6):
                break
            r = np.hypot(*pos)
            if r > R * 1.02 or np.linalg.norm(pos - fovea) < faz:
                break
            past = (pos[1] - fovea[1]) * side > rng.uniform(0.15, 0.35) * R
            if role == "temporal" and gen < 3 and not past:
                # steer along a circle of radius arc_r around the fovea (the arcade)
                v = pos - fovea
                d = np.linalg.norm(v) + 1e-9
                tang = np.array([-v[1], v[0]]) / d
                if np.dot(tang, [np.sin(ang), np.cos(ang)]) < 0:
                    tang = -tang
                radial = v / d * (arc_r - d) / arc_r
                target = tang + 1.5 * radial
                ta = np.arctan2(target[0], target[1])
                da = (ta - ang + np.pi) % (2 * np.pi) - np.pi
                ang += 0.06 * da
            elif role == "toward_fovea":
                v = fovea - pos
                ta = np.arctan2(v[0], v[1])
                da = (ta - ang + np.pi) % (2 * np.pi) - np.pi
                ang += 0.03 * da
            ang += rng.normal(0, 0.035)
            pos = pos + step * np.array([np.sin(ang), np.cos(ang)])
            travelled += step
            pts.append((pos[0], pos[1], w, kind))
            if travelled >= next_branch and np.hypot(*pos) > 1.5 * 0.1 * R:
                travelled = 0.0
                next_branch = rng.uniform(25, 70) * scale * (1 + w / (4 * scale))
                k = rng.uniform(0.45, 0.85)
                w2 = w * k
                w1 = max((w**3 - w2**3), 1e-9) ** (1 / 3)
                # Murray's optimal branching angles
                c1 = np.clip((w**4 + w1**4 - w2**4) / (2 * w**2 * w1**2), -1, 1)
                c2 = np.clip((w**4 + w2**4 - w1**4) / (2 * w**2 * w2**2), -1, 1)
                th1, th2 = np.arccos(c1), np.arccos(c2)
                sgn = rng.choice([-1.0, 1.0])
                child_role = role
                if role == "temporal":
                    # children of the arcade point towards or away from the macula
                    to_f = fovea - pos
                    ta = np.arctan2(to_f[0], to_f[1])
                    left = ((ta - ang + np.pi) % (2 * np.pi) - np.pi) > 0
                    sgn = 1.0 if (left if rng.uniform() < 0.6 else not left) else -1.0
                    child_role = "toward_fovea" if rng.uniform() < 0.6 else "free"
                stack.append((pos.copy(), ang + sgn * th2, w2, kind, child_role, up, gen + 1))
                ang = ang - sgn * th1
                w = w1
            w *= 1 - 0.0008 * step / max(scale, 0.5)  # slow tapering
        if pts:
            out.append(np.asarray(pts))
    if not out:
        return np.zeros((0, 4))
    return np.concatenate(out)


def render_vessels(
    shape: tuple[int, int], samples: np.ndarray, origin: np.ndarray, step: float, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Absorbance images (artery, vein) of the vessel samples in a window at ``origin``.

    Each sample is splatted with a weight giving a Gaussian cross-profile of FWHM = width and
    unit peak; samples are grouped in geometric width bins, one blur per bin. ``scale`` is the
    image scale relative to the virtual fundus (contrast follows the physical calibre).
    """
    h, w = shape
    outs = [np.zeros(shape), np.zeros(shape)]
    if len(samples) == 0:
        return outs[0], outs[1]
    yx = samples[:, :2] - origin
    margin = 3 * samples[:, 2].max()
    ok = (
        (yx[:, 0] > -margin)
        & (yx[:, 0] < h + margin)
        & (yx[:, 1] > -margin)
        & (yx[:, 1] < w + margin)
    )
    yx, wid, kind = yx[ok], samples[ok, 2], samples[ok, 3]
    edges = np.geomspace(0.5, max(20.0, wid.max() + 1), 14)
    for k in (0, 1):
        for lo, hi in itertools.pairwise(edges):
            sel = (kind == k) & (wid >= lo) & (wid < hi)
            if not sel.any():
                continue
            wm = float(np.sqrt(lo * hi))
            sigma = wm / 2.3548
            # contrast rises with calibre (thin vessels are fainter)
            contrast = min(1.0, (wm / scale / 6.0) ** 0.7)
            wts = np.full(int(sel.sum()), step * contrast / (np.sqrt(2 * np.pi) * sigma))
            img = splat(shape, yx[sel], wts)
            outs[k] += ndi.gaussian_filter(img, sigma, truncate=3.5) * (2 * np.pi * sigma**2)
    return outs[0], outs[1]


# --------------------------------------------------------------------------- small blobs
def gaussian_blob_field(shape, points, sigmas, amps, supersample: int = 4) -> np.ndarray:
    """Sum of isotropic Gaussians ``amp · exp(-d²/2σ²)`` averaged over each pixel's area."""
    h, w = shape
    out = np.zeros(shape)
    s = supersample
    for (y, x), sg, a in zip(points, sigmas, amps, strict=True):
        half = int(np.ceil(4 * sg + 2))
        cy, cx = round(y), round(x)
        y0, y1 = max(cy - half, 0), min(cy + half + 1, h)
        x0, x1 = max(cx - half, 0), min(cx + half + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        sub = (np.arange(s) + 0.5) / s - 0.5
        yy = (np.arange(y0, y1)[:, None] + sub[None, :]).ravel()
        xx = (np.arange(x0, x1)[:, None] + sub[None, :]).ravel()
        g = np.exp(-((yy[:, None] - y) ** 2 + (xx[None, :] - x) ** 2) / (2 * sg * sg))
        g = g.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
        out[y0:y1, x0:x1] += a * g
    return out


def irregular_blobs(shape, rng, centres, radii, amps, lobes: int = 3) -> np.ndarray:
    """Irregular blobs (a few overlapping Gaussians each), e.g. haemorrhages or exudates."""
    pts, sig, amp = [], [], []
    for (y, x), r, a in zip(centres, radii, amps, strict=True):
        for _ in range(int(rng.integers(1, lobes + 1))):
            off = rng.normal(0, 0.35 * r, 2)
            pts.append((y + off[0], x + off[1]))
            sig.append(r * rng.uniform(0.35, 0.6))
            amp.append(a * rng.uniform(0.6, 1.0))
    if not pts:
        return np.zeros(shape)
    f = gaussian_blob_field(shape, pts, sig, amp, supersample=1)
    return np.minimum(f, max(amps) if len(amps) else 1.0)


def ma_sigma(radius: np.ndarray) -> np.ndarray:
    """Gaussian σ of an MA of the given radius (the profile is 1/3 of its depth at r)."""
    return np.asarray(radius) / 1.5


# --------------------------------------------------------------------------- fundus
def _place_mas(rng, n, dist_vessel, allowed, px_um, diameter_um, min_dist, max_dist):
    """Positions and radii of ``n`` MAs between ``min_dist`` and ``max_dist`` px of a vessel."""
    cand_mask = allowed & (dist_vessel >= min_dist) & (dist_vessel <= max_dist)
    cand = np.argwhere(cand_mask)
    if n == 0 or len(cand) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    radii = log_uniform(rng, *diameter_um, size=n) / 2.0 / px_um

    def propose(k: int) -> np.ndarray:
        return cand[rng.integers(len(cand), size=k)] + rng.uniform(-0.5, 0.5, (k, 2))

    return place_points(rng, propose, radii, cand_mask, gap=4.0, border=3.0)


def _darken_mas(rng, pts, rad, depth, red, green, blue) -> None:
    """Render MAs (depth log-uniform in ``depth``) and darken the channels in place."""
    dep = log_uniform(rng, *depth, size=len(pts))
    ma = gaussian_blob_field(green.shape, pts, ma_sigma(rad), dep)
    green *= 1 - ma
    red *= 1 - 0.35 * ma
    blue *= 1 - 0.6 * ma


def _fundus_sample(
    rgbf, rng, jpeg, min_quality, pts, rad, mask, px_um, image_id, patient_id, *, rgb
) -> Sample | tuple[Sample, np.ndarray]:
    """Quantise to uint8, JPEG round trip with probability ``jpeg`` (quality ``min_quality``-95)
    and wrap the green channel in a ``Sample`` (with the RGB image when ``rgb``)."""
    rgb8 = np.clip(np.round(rgbf), 0, 255).astype(np.uint8)
    if rng.uniform() < jpeg:
        rgb8 = jpeg_roundtrip(rgb8, int(rng.integers(min_quality, 96)))
    sample = Sample(
        image=rgb8[..., 1].astype(np.float32),
        points=pts,
        radii=rad,
        mask=mask,
        image_id=image_id,
        patient_id=patient_id,
        spacing=(px_um / 1000.0, px_um / 1000.0),
    )
    return (sample, rgb8) if rgb else sample


def synth_fundus(
    shape: tuple[int, int] = (512, 512),
    seed: int | np.random.Generator | None = None,
    *,
    view: str = "crop",
    fov_px: float = FOV_PX,
    lesion_free: float = 0.25,
    has_lesions: bool | None = None,
    ma_per_window: float = 3.0,
    depth: tuple[float, float] = (0.2, 0.6),
    diameter_um: tuple[float, float] = (25.0, 100.0),
    vessel_distance: tuple[float, float] = (6.0, 60.0),
    distractors: float = 1.0,
    jpeg: float = 0.7,
    rgb: bool = False,
    snr: object = None,
    image_id: str = "",
    patient_id: str = "",
) -> Sample | tuple[Sample, np.ndarray]:
    """A synthetic fundus photograph (green channel) with microaneurysms.

    ``view="crop"``: a ``shape`` window of a virtual fundus with a ``fov_px`` FOV (~11 µm/px);
    ``view="full"``: the whole FOV scaled into ``shape``. MAs: 1 + Poisson(``ma_per_window``
    scaled to the window's FOV area) per image with lesions, diameter log-uniform in
    ``diameter_um``, depth log-uniform in ``depth`` (the difficulty knob: relative darkening),
    ``vessel_distance`` px from a vessel (at the virtual scale). ``distractors`` scales the
    number of haemorrhages, exudates and dust shadows. ``jpeg``: probability of a JPEG
    round trip (quality 75-95). ``rgb=True`` returns ``(sample, rgb_uint8)``. ``snr`` is
    accepted for symmetry with :func:`synth_mammogram` and ignored (use ``depth``).
    The image is the green channel (float32, 0-255) and the mask the field of view.
    """
    rng = as_rng(seed)
    h, w = shape
    if view == "full":
        R = 0.47 * min(h, w)
        origin = np.array([-h / 2.0, -w / 2.0])
    elif view == "crop":
        R = fov_px / 2.0
        # window centre inside the FOV so that most of the window is retina
        rr = R * np.sqrt(rng.uniform(0, 0.55**2))
        th = rng.uniform(0, 2 * np.pi)
        origin = np.array([rr * np.sin(th) - h / 2.0, rr * np.cos(th) - w / 2.0])
    else:
        raise ValueError(f"view must be 'crop' or 'full', got {view!r}")
    px_um = FOV_MM * 1000 / (2 * R)
    side = rng.choice([-1.0, 1.0])  # which eye: disc left or right of the fovea
    fovea = np.array([rng.uniform(-0.05, 0.08) * R, side * rng.uniform(0.0, 0.08) * R])
    disc = np.array(
        [fovea[0] + rng.uniform(-0.1, 0.02) * R, fovea[1] - side * rng.uniform(0.58, 0.7) * R]
    )
    disc_r = rng.uniform(0.085, 0.11) * R

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    Y, X = yy + origin[0], xx + origin[1]
    r = np.hypot(Y, X)
    fov = np.clip((R - r) / 2.0, 0.0, 1.0)
    mask = r <= R - 2.0

    # --- colour background ----------------------------------------------------------
    base = np.array([rng.uniform(150, 215), rng.uniform(45, 90), rng.uniform(15, 38)])
    tex = power_law_noise(shape, rng.uniform(2.2, 2.8), 1 / 64, rng)
    chor = power_law_noise(shape, 2.0, 1 / 16, rng)
    vign = 1 - rng.uniform(0.25, 0.5) * (r / R) ** 2.5
    illum = np.exp(0.12 * smooth_noise(shape, max(h, w) / 4, rng))
    G = base[1] * (1 + 0.03 * tex) * vign * illum
    Rc = base[0] * (1 + 0.04 * tex + 0.05 * chor) * vign * illum
    B = base[2] * (1 + 0.05 * tex) * vign * illum
    # macula and fovea
    dm2 = (Y - fovea[0]) ** 2 + (X - fovea[1]) ** 2
    sm = rng.uniform(0.08, 0.12) * R
    mac = rng.uniform(0.2, 0.4) * np.exp(-dm2 / (2 * sm**2)) + 0.1 * np.exp(
        -dm2 / (2 * (0.25 * sm) ** 2)
    )
    G *= 1 - mac
    Rc *= 1 - 0.4 * mac
    B *= 1 - 0.5 * mac
    # optic disc (yellow-white) with its cup
    dd = np.hypot((Y - disc[0]) / 1.1, X - disc[1])
    disc_p = np.clip((disc_r - dd) / (0.35 * disc_r), 0, 1) ** 1.5
    cup_c = disc + rng.normal(0, 0.12 * disc_r, 2)
    cup_p = np.clip((0.45 * disc_r - np.hypot(Y - cup_c[0], X - cup_c[1])) / (0.25 * disc_r), 0, 1)
    dgain = rng.uniform(0.8, 1.2)
    G += dgain * (55 * disc_p + 45 * cup_p)
    Rc += dgain * (35 * disc_p + 15 * cup_p)
    B += dgain * (20 * disc_p + 30 * cup_p)

    # --- vessels --------------------------------------------------------------------
    tree = grow_vessel_tree(rng, disc, fovea, R)
    step = 2.0 * max(R / (FOV_PX / 2), 0.5)
    art, vein = render_vessels(shape, tree, origin, step, R / (FOV_PX / 2))
    ca, cv = rng.uniform(0.3, 0.45), rng.uniform(0.45, 0.65)
    G *= np.exp(-(ca * art + cv * vein))
    Rc *= np.exp(-(0.06 * art + 0.15 * vein))
    B *= np.exp(-(0.15 * art + 0.3 * vein))
    vessel_mask = (art + vein) > 0.15

    # --- microaneurysms ---------------------------------------------------------------
    if has_lesions is None:
        has_lesions = rng.uniform() >= lesion_free
    allowed = ndi.binary_erosion(mask, iterations=8) & (dd > disc_r * 1.3)
    if has_lesions:
        area_frac = mask.mean() * h * w / (512.0 * 512.0)
        n = 1 + rng.poisson(ma_per_window * area_frac)
    else:
        n = 0
    scale = R / (FOV_PX / 2)
    dist = ndi.distance_transform_edt(~vessel_mask) if vessel_mask.any() else np.full(shape, 1e9)
    pts, rad = _place_mas(
        rng,
        n,
        dist,
        allowed & ~vessel_mask,
        px_um,
        diameter_um,
        vessel_distance[0] * scale,
        vessel_distance[1] * scale,
    )
    _darken_mas(rng, pts, rad, depth, Rc, G, B)

    # --- distractors (unlabelled) -----------------------------------------------------
    inside = np.argwhere(allowed)
    win_frac = mask.mean() * h * w / (512.0 * 512.0)
    if len(inside):

        def pick(k):
            return inside[rng.integers(len(inside), size=k)].astype(float) + rng.uniform(
                -0.5, 0.5, (k, 2)
            )

        # dot/blot haemorrhages (larger than MAs: radius >= 5 px at the virtual scale)
        k = rng.poisson(0.6 * distractors * win_frac)
        if k:
            hb = irregular_blobs(
                shape, rng, pick(k), rng.uniform(5, 14, k) * scale, rng.uniform(0.25, 0.6, k)
            )
            G *= 1 - hb
            Rc *= 1 - 0.5 * hb
            B *= 1 - 0.6 * hb
        # hard exudates: small bright yellow clusters
        k = rng.poisson(0.4 * distractors * win_frac)
        for c in pick(k) if k else []:
            m = int(rng.integers(3, 15))
            cen = c + rng.normal(0, 12 * scale, (m, 2))
            ex = irregular_blobs(
                shape, rng, cen, rng.uniform(1.5, 5, m) * scale, rng.uniform(0.3, 0.8, m), 2
            )
            G += 90 * ex
            Rc += 40 * ex
            B += 10 * ex
        # dust shadows on the optics: faint dark soft disks
        k = rng.poisson(0.5 * distractors * win_frac)
        if k:
            dust = gaussian_blob_field(
                shape,
                pick(k),
                rng.uniform(8, 20, k) * scale,
                rng.uniform(0.04, 0.12, k),
                supersample=1,
            )
            G *= 1 - dust
            Rc *= 1 - dust
            B *= 1 - dust
        # single bright/dark noise specks
        k = rng.poisson(2 * distractors * win_frac)
        if k:
            sp = pick(k).round().astype(int)
            sp = np.clip(sp, 0, [h - 1, w - 1])
            G[sp[:, 0], sp[:, 1]] *= rng.uniform(0.75, 1.25, k)

    # --- optics, exposure, noise, FOV -------------------------------------------------
    rgbf = np.stack([Rc, G, B], axis=-1)
    rgbf = ndi.gaussian_filter(rgbf, (rng.uniform(0.5, 0.9),) * 2 + (0,))
    gain, gamma = rng.uniform(0.8, 1.2), rng.uniform(0.85, 1.15)
    rgbf = 255.0 * (np.clip(rgbf * gain, 0, None) / 255.0) ** gamma
    rgbf += rng.normal(0, rng.uniform(1.0, 2.5), rgbf.shape)
    rgbf *= fov[..., None]
    rgbf += rng.uniform(0, 3)  # dark surround level
    return _fundus_sample(rgbf, rng, jpeg, 75, pts, rad, mask, px_um, image_id, patient_id, rgb=rgb)


# --------------------------------------------------------------------------- semi-real
@lru_cache(maxsize=2)
def real_retina(fov_px: float = FOV_PX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``skimage.data.retina()`` resized so its FOV is ``fov_px`` across: (rgb float, FOV mask,
    vessel mask)."""
    from skimage import data
    from skimage.morphology import black_tophat, disk
    from skimage.transform import resize

    from ..masks import fundus_mask

    rgb = data.retina().astype(np.float32)
    m0 = fundus_mask(rgb[..., 0], erode=0)
    rows = np.flatnonzero(m0.any(axis=1))
    diam = rows[-1] - rows[0] + 1
    f = fov_px / diam
    shape = (round(rgb.shape[0] * f), round(rgb.shape[1] * f))
    rgb = resize(rgb, (*shape, 3), order=1, anti_aliasing=True, preserve_range=True).astype(
        np.float32
    )
    mask = fundus_mask(rgb[..., 0], erode=3)
    g = rgb[..., 1]
    small = g[::2, ::2]
    bth = black_tophat(small, disk(6))
    bth = np.repeat(np.repeat(bth, 2, 0), 2, 1)[: g.shape[0], : g.shape[1]]
    thr = np.percentile(bth[mask], 88)
    vessels = ndi.binary_opening(bth > thr) & mask
    lab, n = ndi.label(vessels)
    if n:
        sizes = ndi.sum_labels(vessels, lab, np.arange(1, n + 1))
        vessels = np.isin(lab, 1 + np.flatnonzero(sizes >= 150))
    return rgb, mask, vessels


def semireal_fundus(
    shape: tuple[int, int] = (512, 512),
    seed: int | np.random.Generator | None = None,
    *,
    region: str | None = None,
    lesion_free: float = 0.25,
    has_lesions: bool | None = None,
    ma_per_window: float = 3.0,
    depth: tuple[float, float] = (0.2, 0.6),
    diameter_um: tuple[float, float] = (25.0, 100.0),
    vessel_distance: tuple[float, float] = (6.0, 60.0),
    jpeg: float = 0.5,
    rgb: bool = False,
    snr: object = None,
    image_id: str = "",
    patient_id: str = "",
) -> Sample | tuple[Sample, np.ndarray]:
    """Microaneurysms inserted into a window of the real (healthy, CC0) skimage retina.

    ``region``: ``"top"`` | ``"middle"`` | ``"bottom"`` restricts the window centre to a third
    of the FOV (the benchmarks use a different third for train / val / test); None = anywhere.
    """
    rng = as_rng(seed)
    full, fmask, vessels = real_retina()
    h, w = shape
    rows = np.flatnonzero(fmask.any(axis=1))
    r0, r1 = rows[0], rows[-1]
    if region is not None:
        k = {"top": 0, "middle": 1, "bottom": 2}[region]
        r0, r1 = r0 + k * (r1 - r0) // 3, r0 + (k + 1) * (r1 - r0) // 3
    cand = np.argwhere(fmask[r0 : r1 + 1]) + np.array([r0, 0])  # (row, col) in the full image
    top, left = best_window(rng, cand, fmask, shape, tries=40, good=0.9)
    img = full[top : top + h, left : left + w].astype(np.float64).copy()
    mask = fmask[top : top + h, left : left + w].copy()
    ves = vessels[top : top + h, left : left + w]
    if has_lesions is None:
        has_lesions = rng.uniform() >= lesion_free
    n = 1 + rng.poisson(ma_per_window * mask.mean() * h * w / 512.0**2) if has_lesions else 0
    px_um = FOV_MM * 1000 / FOV_PX
    dist = ndi.distance_transform_edt(~ves) if ves.any() else np.full(shape, 1e9)
    allowed = ndi.binary_erosion(mask, iterations=8) & ~ves
    pts, rad = _place_mas(rng, n, dist, allowed, px_um, diameter_um, *vessel_distance)
    _darken_mas(rng, pts, rad, depth, img[..., 0], img[..., 1], img[..., 2])
    return _fundus_sample(
        img,
        rng,
        jpeg,
        80,
        pts,
        rad,
        mask,
        px_um,
        image_id,
        patient_id or f"skimage-retina-{region or 'any'}",
        rgb=rgb,
    )
