"""Geometric augmentation with exact point mapping: flips, resizes, random training tiles.

Coordinates are pixel centres: pixel (i, j) covers [i-0.5, i+0.5) × [j-0.5, j+0.5).
A flip maps y → H-1-y; a resize by s = new/old maps y → (y+0.5)·s - 0.5.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from napari_gravity.types import Sample


def flip_sample(sample: Sample, axes: int | tuple[int, ...] | str) -> Sample:
    """Flip image, mask and points along ``axes`` (0 = vertical, 1 = horizontal,
    (0, 1) = both; also "v", "h", "hv")."""
    if isinstance(axes, str):
        axes = tuple({"v": 0, "h": 1}[c] for c in axes.lower())
    axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
    img, mask, pts = sample.image, sample.mask, sample.points.copy()
    h, w = img.shape[:2]
    for ax in axes:
        if ax not in (0, 1):
            raise ValueError(f"flip axis must be 0 or 1, got {ax}")
        img = np.flip(img, axis=ax)
        if mask is not None:
            mask = np.flip(mask, axis=ax)
        pts[:, ax] = (h if ax == 0 else w) - 1 - pts[:, ax]
    return replace(
        sample,
        image=np.ascontiguousarray(img),
        mask=None if mask is None else np.ascontiguousarray(mask),
        points=pts,
        radii=sample.radii.copy(),
    )


def flip_augmentations(sample: Sample) -> list[Sample]:
    """The paper's four versions: original, horizontal, vertical and both flips."""
    return [sample, flip_sample(sample, 1), flip_sample(sample, 0), flip_sample(sample, (0, 1))]


def map_points_resize(points: np.ndarray, old_shape, new_shape) -> np.ndarray:
    """Map (y, x) pixel-centre coordinates from ``old_shape`` to ``new_shape``:
    ``(p + 0.5) · s - 0.5`` with ``s = new / old`` per axis (no truncation)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    s = np.array([new_shape[0] / old_shape[0], new_shape[1] / old_shape[1]])
    return (pts + 0.5) * s - 0.5


def resize_image(image: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resize a 2-D image (anti-aliased when shrinking) keeping its value range, float32."""
    from skimage.transform import resize

    shape = (int(shape[0]), int(shape[1]))
    if tuple(image.shape[:2]) == shape:
        return np.asarray(image, dtype=np.float32)
    shrink = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    out = resize(
        np.asarray(image, dtype=np.float32),
        shape,
        order=order,
        mode="reflect",
        anti_aliasing=shrink and order > 0,
        preserve_range=True,
    )
    return out.astype(np.float32)


def resize_sample(sample: Sample, shape: tuple[int, int], *, scale_radii: str = "mean") -> Sample:
    """Resize image and mask to ``shape`` mapping points exactly; radii scale by the mean
    (``"mean"``), larger (``"max"``) or smaller (``"min"``) axis factor; spacing follows."""
    from skimage.transform import resize

    old = sample.image.shape[:2]
    sy, sx = shape[0] / old[0], shape[1] / old[1]
    rf = {"mean": (sy + sx) / 2, "max": max(sy, sx), "min": min(sy, sx)}[scale_radii]
    mask = None
    if sample.mask is not None:
        mask = resize(sample.mask.astype(np.float32), shape, order=0, preserve_range=True) > 0.5
    spacing = None
    if sample.spacing is not None:
        spacing = (sample.spacing[0] / sy, sample.spacing[1] / sx)
    return replace(
        sample,
        image=resize_image(sample.image, shape),
        mask=mask,
        points=map_points_resize(sample.points, old, shape),
        radii=sample.radii * rf,
        spacing=spacing,
    )


def crop_sample(
    sample: Sample, top: int, left: int, height: int, width: int, *, suffix: str = ""
) -> Sample:
    """The window [top, top+height) × [left, left+width) with the points inside it, shifted.

    The window may extend past the image; the outside is filled with the image minimum and
    masked out.
    """
    h, w = sample.image.shape[:2]
    img = np.full((height, width), float(sample.image.min()), dtype=np.float32)
    mask = np.zeros((height, width), dtype=bool)
    ys, xs = max(top, 0), max(left, 0)
    ye, xe = min(top + height, h), min(left + width, w)
    if ys < ye and xs < xe:
        img[ys - top : ye - top, xs - left : xe - left] = sample.image[ys:ye, xs:xe]
        src = sample.mask[ys:ye, xs:xe] if sample.mask is not None else True
        mask[ys - top : ye - top, xs - left : xe - left] = src
    pts = sample.points - np.array([top, left], dtype=np.float64)
    keep = (
        (pts[:, 0] >= -0.5)
        & (pts[:, 0] < height - 0.5)
        & (pts[:, 1] >= -0.5)
        & (pts[:, 1] < width - 0.5)
    )
    return replace(
        sample,
        image=img,
        mask=mask if (sample.mask is not None or not mask.all()) else None,
        points=pts[keep],
        radii=sample.radii[keep],
        image_id=sample.image_id + suffix,
    )


def random_tiles(
    sample: Sample,
    size: int | tuple[int, int],
    n: int,
    pos_fraction: float = 0.5,
    rng: np.random.Generator | int | None = None,
    *,
    jitter: float | None = None,
    min_tissue: float = 0.5,
) -> list[Sample]:
    """``n`` random training tiles of ``size`` as Samples with shifted points.

    About ``pos_fraction`` of the tiles are lesion-centred (a random lesion, moved by up to
    ``jitter`` px, default size/3, so lesions do not always sit in the middle); the others are
    background tiles whose centre lies inside the tissue mask (when there is one) with at least
    ``min_tissue`` of the tile in tissue when possible. Lesion-free images give background tiles
    only. Tiles of images smaller than ``size`` are padded (outside masked out).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    th, tw = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    h, w = sample.image.shape[:2]
    jit = (min(th, tw) / 3.0) if jitter is None else float(jitter)
    inside = np.argwhere(sample.mask) if sample.mask is not None and sample.mask.any() else None

    def clamp(top: int, left: int) -> tuple[int, int]:
        top = int(np.clip(top, min(0, h - th), max(0, h - th)))
        left = int(np.clip(left, min(0, w - tw), max(0, w - tw)))
        return top, left

    tiles = []
    n_pos = round(n * pos_fraction) if len(sample.points) else 0
    for k in range(n):
        if k < n_pos:
            i = rng.integers(len(sample.points))
            cy, cx = sample.points[i] + rng.uniform(-jit, jit, size=2)
        else:
            cy = cx = None
            for _ in range(10):
                if inside is not None:
                    cy, cx = inside[rng.integers(len(inside))]
                else:
                    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                if sample.mask is None:
                    break
                top, left = clamp(round(cy - th / 2), round(cx - tw / 2))
                if (
                    sample.mask[max(top, 0) : top + th, max(left, 0) : left + tw].mean()
                    >= min_tissue
                ):
                    break
        top, left = clamp(round(cy - th / 2), round(cx - tw / 2))
        tiles.append(crop_sample(sample, top, left, th, tw, suffix=f"@{top},{left}"))
    perm = rng.permutation(len(tiles))
    return [tiles[i] for i in perm]
