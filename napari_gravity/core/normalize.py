"""Intensity normalisation of input images."""

from __future__ import annotations

import numpy as np

METHODS = ("minmax", "percentile", "local", "none")

#: Scales (px) of the ``"local"`` normalisation: background removal, local contrast, clip (in
#: local standard deviations).
LOCAL_BACKGROUND_SIGMA = 10.0
LOCAL_CONTRAST_SIGMA = 24.0
LOCAL_CLIP = 8.0


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
    - ``"local"``: local contrast normalisation for small bright or dark lesions: subtract the
      background (Gaussian, σ 10 px), divide by the local RMS of what is left (σ 24 px) and map
      ±8 local standard deviations to [0, 1] (0.5 = background). Nearly invariant to gain,
      offset, bit depth, windowing/gamma and slow trends, and the same on a tile as on the whole
      image (it never sees global statistics), which the paper's min-max is not.
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
    if method == "local":
        return _local_contrast(out)
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


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing for large σ, done on a block-averaged copy (factor ≈ σ/4) and
    upsampled back bilinearly: the result is smooth on that scale, so little is lost. Block
    means and the upsampling run in torch (multi-threaded); block centres sit at (i + 0.5) k − 0.5
    in full-resolution pixels, edges clamp."""
    import torch
    import torch.nn.functional as F
    from scipy import ndimage as ndi

    k = max(1, int(sigma // 4))
    h, w = x.shape[-2:]
    if k == 1 or min(h, w) < 4 * k:
        return ndi.gaussian_filter(x, sigma, mode="reflect")
    hp, wp = -(-h // k) * k, -(-w // k) * k
    xp = np.pad(x, ((0, hp - h), (0, wp - w)), mode="reflect") if (hp, wp) != (h, w) else x
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(xp, dtype=np.float32))[None, None]
        small = F.avg_pool2d(t, k)[0, 0].numpy()
        small = ndi.gaussian_filter(small, sigma / k, mode="reflect")
        up = F.interpolate(
            torch.from_numpy(small)[None, None],
            scale_factor=k,
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=False,
        )
        return up[0, 0, :h, :w].numpy().copy()


def _local_contrast(img: np.ndarray) -> np.ndarray:
    if img.ndim != 2:
        raise ValueError(f"normalize_image: 'local' needs a 2-D image, got shape {img.shape}")
    span = float(img.max() - img.min())
    if not span > 0:
        return np.full_like(img, 0.5)
    x = img / np.float32(span)  # scale-free from here on
    hp = x - _smooth(x, LOCAL_BACKGROUND_SIGMA)
    rms = np.sqrt(np.maximum(_smooth(hp * hp, LOCAL_CONTRAST_SIGMA), 0.0))
    # floor: flat regions (air, burnt-in borders) must not blow noise up to unit contrast
    floor = max(float(np.percentile(rms, 50)) * 0.1, 1e-6)
    out = hp / (np.maximum(rms, floor) * np.float32(2 * LOCAL_CLIP)) + np.float32(0.5)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
