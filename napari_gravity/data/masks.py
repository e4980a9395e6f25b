"""Tissue masks: the breast region of a mammogram and the field of view of a fundus image."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _downsample(image: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    f = max(1, int(np.ceil(max(image.shape) / max_side)))
    if f == 1:
        return np.asarray(image, dtype=np.float32), 1
    h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    small = image[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    return small.astype(np.float32), f


def _upsample(mask: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    if f == 1:
        return mask[: shape[0], : shape[1]]
    big = np.repeat(np.repeat(mask, f, axis=0), f, axis=1)
    out = np.zeros(shape, dtype=bool)
    h, w = min(big.shape[0], shape[0]), min(big.shape[1], shape[1])
    out[:h, :w] = big[:h, :w]
    # edge rows/cols lost to the integer downsampling copy their neighbours
    if h < shape[0]:
        out[h:, :w] = out[h - 1 : h, :w]
    if w < shape[1]:
        out[:, w:] = out[:, w - 1 : w]
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = ndi.sum_labels(mask, lab, np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def _has_surround(small: np.ndarray) -> bool:
    """True when a dark near-constant surround (air / outside the FOV) covers ≥ 5% of the image;
    a crop that is all tissue has a continuous low tail instead."""
    lo, hi = np.percentile(small, [0.5, 99.5])
    if hi - lo <= 0:
        return False
    return float((small < lo + 0.03 * (hi - lo)).mean()) >= 0.05


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values))


def _coarse_mask(
    img: np.ndarray, *, sigma: float, percentile: float, fraction: float, threshold: float | None
) -> tuple[np.ndarray, int, np.ndarray, float] | None:
    """Threshold a smoothed (``sigma``) copy downsampled to ≤ 1024 px: (small, factor, mask,
    threshold), or None when the whole image is tissue (no dark surround, nothing above the
    threshold). The default threshold sits ``fraction`` of the way from the surround level
    (``percentile``) to the Otsu threshold."""
    small, f = _downsample(img, 1024)
    small = ndi.gaussian_filter(small, sigma)
    if threshold is None:
        lo = float(np.percentile(small, percentile))
        if float(small.max()) - lo <= 0 or not _has_surround(small):
            return None
        t = _otsu(small.ravel())
        threshold = lo + fraction * (t - lo)
    m = small > threshold
    if not m.any():
        return None
    return small, f, m, threshold


def breast_mask(image: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
    """Breast region: threshold between air and tissue, largest component, holes filled.

    An image without a dark surround (a patch inside the breast) gets an all-True mask; the
    bright border strip of a scanned film is left out.
    The default threshold sits a fifth of the way from the air level (2nd percentile) to
    the Otsu threshold, so fatty tissue near the skin line stays inside. Computed on a
    downsampled copy (≤ 1024 px) for speed.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"breast_mask: expected a 2-D image, got shape {img.shape}")
    coarse = _coarse_mask(img, sigma=1.5, percentile=2, fraction=0.2, threshold=threshold)
    if coarse is None:
        return np.ones(img.shape, dtype=bool)
    small, f, m, threshold = coarse
    m = ndi.binary_opening(m, iterations=2)
    if not m.any():
        m = small > threshold
    # a scanned film's bright border (a strip a few px wide along its edges) touches the
    # breast at the chest wall: find the breast's body after a strong opening, then keep the
    # lightly opened mask only near it, which drops the strip and keeps the skin line
    body = ndi.binary_opening(m, iterations=6)
    if body.any():
        m &= ndi.binary_dilation(_largest_component(body), iterations=8)
    m = ndi.binary_fill_holes(_largest_component(m))
    return _upsample(m, f, img.shape)


def fundus_mask(image: np.ndarray, *, threshold: float | None = None, erode: int = 2) -> np.ndarray:
    """Field of view of a fundus photograph (the bright disc on the dark surround).

    Threshold a quarter of the way from the surround level to the Otsu threshold, keep the
    largest component, fill holes and erode by ``erode`` px to drop the vignetted rim. A
    surround lifted above the darkest retina (a grey border, a bright JPEG export) is found in
    the four corners instead (:func:`_lifted_surround_mask`).
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img.max(axis=-1)
    if img.ndim != 2:
        raise ValueError(f"fundus_mask: expected a 2-D image, got shape {img.shape}")
    coarse = _coarse_mask(img, sigma=1.0, percentile=1, fraction=0.25, threshold=threshold)
    if coarse is None and threshold is None:
        coarse = _lifted_surround_mask(img)
    if coarse is None:
        return np.ones(img.shape, dtype=bool)
    _, f, m, _ = coarse
    m = ndi.binary_fill_holes(_largest_component(ndi.binary_opening(m, iterations=1) | m))
    out = _upsample(m, f, img.shape)
    if erode > 0:
        out = ndi.binary_erosion(out, iterations=erode, border_value=1)
    return out


def _lifted_surround_mask(img: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, float] | None:
    """``_coarse_mask``'s result for a fundus photograph whose surround is not the darkest
    part of the image: all four corners flat and at one level well below the image's centre
    (a round field of view, whole or clipped at the top and bottom, leaves its corners dark).
    The threshold sits just above that level, and the mask is the convex hull of what lies
    above it. None when the corners do not look like that."""
    small, f = _downsample(img, 1024)
    small = ndi.gaussian_filter(small, 1.0)
    h, w = small.shape
    k = max(3, int(0.05 * min(h, w)))
    lo, hi = np.percentile(small, [0.5, 99.5])
    span = float(hi - lo)
    if span <= 0:
        return None
    corners = [small[:k, :k], small[:k, -k:], small[-k:, :k], small[-k:, -k:]]
    levels = [float(np.median(c)) for c in corners]
    noise = max(float(np.std(c)) for c in corners)
    centre = float(np.median(small[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]))
    level = float(np.median(levels))
    if (
        noise > 0.03 * span
        or max(levels) - min(levels) > 0.05 * span
        or centre - level < 0.2 * span
    ):
        return None
    threshold = level + max(5.0 * noise, 0.1 * (centre - level))
    m = _largest_component(ndi.binary_opening(small > threshold, iterations=2))
    if not 0.2 < m.mean() < 0.97:
        return None
    # the field of view is convex: its hull restores a rim that dark retina cut into
    from skimage.morphology import convex_hull_image

    return small, f, convex_hull_image(m), threshold


#: ``looks_inverted``: how much flatter the bright region must be than the dark one.
INVERTED_RATIO = 5.0


def looks_inverted(image: np.ndarray) -> bool:
    """True for a mammogram whose grey values are inverted (air bright, breast dark: a
    MONOCHROME1 image saved without its tag). The air is the flat side of the image: a
    mammogram's bright region is textured tissue and its dark region flat air; inverted, the
    bright region is the flat one. Below-Otsu and above-Otsu regions are compared by their
    median high-pass magnitude; only a clear inversion (the bright region 5× flatter) counts,
    so a tile without air (ratios 0.5-1.2) never does."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 32 or not np.isfinite(img).all():
        return False
    small, _ = _downsample(img, 1024)
    if not float(small.max()) > float(small.min()):
        return False
    t = _otsu(small.ravel())
    hp = np.abs(small - ndi.gaussian_filter(small, 4.0))
    bright = ndi.binary_erosion(small > t, iterations=6)
    dark = ndi.binary_erosion(small <= t, iterations=6)
    if bright.mean() < 0.1 or dark.mean() < 0.1:
        return False
    flat_bright, flat_dark = float(np.median(hp[bright])), float(np.median(hp[dark]))
    return flat_bright * INVERTED_RATIO < flat_dark


def upright(image: np.ndarray, task: str | None) -> tuple[np.ndarray, str | None]:
    """``(image, note)``: for an MC model's input that :func:`looks_inverted`, the image with its
    grey values inverted back (the range kept) and a note saying so; anything else unchanged,
    note None. The one rule ``gravity predict`` and the plugin apply."""
    if task != "mc" or not looks_inverted(image):
        return image, None
    img = np.asarray(image)
    note = "grey values inverted back (the air was brighter than the breast)"
    return (float(img.max()) + float(img.min())) - img, note


TASK_MASKS = {"mc": "breast", "ma": "fundus"}


def tissue_mask(
    image: np.ndarray, kind: str | None, fov_source: np.ndarray | None = None
) -> np.ndarray | None:
    """The tissue mask of ``kind``: ``"breast"`` / ``"fundus"``, or a model task (``"mc"`` →
    breast, ``"ma"`` → fundus field of view). None for an unknown kind or an empty mask.
    ``fov_source``: a colour photograph's brightest channel (``ImageRecord.fov_source``), where
    the fundus field of view is found instead, when it has the image's shape."""
    kind = TASK_MASKS.get(kind or "", kind)
    if kind not in ("breast", "fundus"):
        return None
    if kind == "breast":
        m = breast_mask(image)
    else:
        ok = fov_source is not None and np.shape(fov_source) == np.shape(image)
        m = fundus_mask(fov_source if ok else image)
    return m if m.any() else None
