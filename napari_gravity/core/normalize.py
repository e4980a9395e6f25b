"""Intensity normalisation of input images."""

from __future__ import annotations

import numpy as np

METHODS = ("minmax", "percentile", "none")


def normalize_image(
    image: np.ndarray,
    method: str = "minmax",
    mask: np.ndarray | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Normalise an image to float32, roughly in [0, 1].

    - ``"minmax"`` (the paper's): ``(x − min) / (max − min)``.
    - ``"percentile"``: robust min-max between the given percentiles, clipped to [0, 1]
      (insensitive to a few hot pixels or burnt-in labels).
    - ``"none"``: only a cast to float32.

    Statistics come from the pixels inside ``mask`` when a mask is given (e.g. the breast or the
    fundus field of view). A constant image (or mask region) gives all zeros. NaN or infinite
    values raise ``ValueError``.
    """
    img = np.asarray(image)
    if img.dtype == bool:
        img = img.astype(np.float32)
    if not np.issubdtype(img.dtype, np.number) or np.iscomplexobj(img):
        raise ValueError(f"normalize_image: expected a real numeric image, got dtype {img.dtype}")
    out = img.astype(np.float32, copy=True)
    if method not in METHODS:
        raise ValueError(f"normalize_image: unknown method {method!r}; choose one of {METHODS}")
    if out.size == 0:
        raise ValueError("normalize_image: empty image")
    if not np.isfinite(out).all():
        n_bad = int((~np.isfinite(out)).sum())
        raise ValueError(
            f"normalize_image: the image holds {n_bad} NaN/infinite pixel(s); "
            "fill or mask them before normalising"
        )
    if method == "none":
        return out
    vals = out
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != out.shape[-m.ndim :]:
            raise ValueError(
                f"normalize_image: mask shape {m.shape} does not match image shape {out.shape}"
            )
        vals = out[..., m]
        if vals.size == 0:
            vals = out  # empty mask: fall back to the whole image
    vals = vals.astype(np.float64)
    if method == "minmax":
        lo, hi = float(vals.min()), float(vals.max())
    else:
        lo, hi = (float(v) for v in np.percentile(vals, percentiles))
    if not hi > lo:
        return np.zeros_like(out)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    if method == "percentile" or mask is not None:
        np.clip(out, 0.0, 1.0, out=out)
    return out
